// `leasetrain bench suite`: every benchmark in one run, one JSON file (benchmarks/suite.schema.json):
// GEMM (hand-written and the baseline: cuBLAS on a GPU, OpenBLAS on the CPU; square shapes and
// the GPT-2 124M/350M layer shapes), attention forward and backward, memory bandwidth, the
// all-reduce sweep (mpirun on this host) and the training step (tokens/s, MFU). Method: each
// kernel is checked against its baseline before it is timed, warm-up runs first, caches are
// flushed between timed runs, inputs are random, and every row reports the median, minimum,
// maximum and spread of its runs. Rows that need a GPU say `skipped` and why on a machine
// without one, so the suite itself runs (and is tested) on CPU-only machines.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace lt::bench {

struct SuiteOptions {
  bool quick = false;        // small sizes and few runs: a minute on a 2-core CPU
  // Lease acceptance (`bench accept`): per GPU, the square GEMM, device copy and bitwise-repeat
  // rows only, plus the all-reduce across the node's GPUs; on a CPU the same checks on the CPU.
  bool accept = false;
  std::string device = "auto";  // auto (cuda when a device is present), cpu or cuda
  int ranks = 2;             // all-reduce ranks on a CPU machine (GPUs: one rank per GPU)
  std::string exe;           // this program, for the all-reduce mpirun ("" skips it)
  std::function<void(const std::string&)> progress;  // one line per finished row
};

nlohmann::json run_suite(const SuiteOptions& opt);

// A row as the schema wants it; `status` "ok" unless `reason` is given for skipped/failed.
nlohmann::json make_row(const std::string& suite, const std::string& impl, const std::string& device,
                        const nlohmann::json& params, const std::string& primary);

// Median, min, max, runs and spread ((max - min) / median) into row["metrics"]: from every
// run's time, or from a benchmark that reports them itself.
void put_timing(nlohmann::json& row, std::vector<double> ms);
void put_stats(nlohmann::json& row, double median_ms, double min_ms, double max_ms, int runs);

}  // namespace lt::bench
