// `leasetrain plan --predict` (cmd_predict.cpp): the step-time model of benchmarks/predict.h over
// node counts, for each GPU model a suite result measured.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace lt::cli {

struct PredictArgs {
  bool predict = false, json = false;
  std::string config, gemm_impl, tokens, inter_allreduce, intra_allreduce, plot_dir, algo = "ring";
  std::vector<std::string> suites;
  std::vector<double> prices;
  int gpus_per_node = 0, max_nodes = 0, inter_nodes = 2, intra_ranks = 2;
  double nic_gbps = 0, nic_efficiency = 0.9, inter_latency_us = 5, knee = 0.5, compute_scale = 1;
  int64_t global_batch = 0;
};

// The topology a lease gives (`plan --predict --manifest M --lease L`).
struct LeaseTopology {
  std::string id;
  int nodes = 0, gpus_per_node = 0;
  double hours_left = 0, gpu_hours_left = 0;
};

void add_predict_options(CLI::App* plan, PredictArgs& a);
// Prints the table (or JSON with a.json); UserError for bad input (file, field, what was expected).
void run_predict(const PredictArgs& a, const LeaseTopology* lease);

}  // namespace lt::cli
