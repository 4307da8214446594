// The step-time model behind capacity planning: one optimizer step of a data-parallel job on
// N GPUs, predicted from measured parts (the suite's GEMM, attention, memory and all-reduce
// rows) and the runtime's own parameter layout and bucket schedule (runtime/ddp.h).
//
// It lives beside the suite because its inputs are the suite's measurements and its users are
// the planning commands; the runtime only lends it gpt_param_layout and plan_buckets, so the
// buckets predicted are the buckets trained with. Every formula is in predict.cpp with its source.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/config.h"
#include "runtime/model.h"

namespace lt::predict {

// One measured GEMM: C[M,N] = A[M,K] B[N,K]^T at `tflops` (the suite's gemm rows).
struct GemmRate {
  int64_t M = 0, N = 0, K = 0;
  double tflops = 0;
};

// Measured kernel rates of one GPU (or one CPU rank).
struct Rates {
  std::vector<GemmRate> gemm;       // looked up at the nearest shape (log-space distance)
  double attention_fwd_tflops = 0;  // causal, FLOPs as benchmarks/peak.h attention_flops counts them
  double attention_bwd_tflops = 0;
  double memory_gbps = 0;           // bytes read + written per second / 1e9 (the suite's memory row)
  double peak_tflops = 0;           // the MFU denominator (the suite's machine.peak)
};

// A network level: per-hop latency and the bandwidth of the bandwidth-bound term.
// busbw_Bps is nccl-tests' bus bandwidth in bytes/s: what one rank's link carries, so the
// ring formulas below give the measured time. Inter-node, it is the node's NIC bandwidth
// in total (a ring per NIC; see collective_seconds).
struct Link {
  double alpha_s = 0;
  double busbw_Bps = 0;
};

enum class Algo { Ring, Tree };

struct Network {
  Link intra;  // between ranks of one node (NVLink, shared memory)
  Link inter;  // between nodes (only read when nodes > 1)
  Algo algo = Algo::Ring;  // all-reduce; reduce-scatter and all-gather are always rings (as NCCL's)
};

struct Job {
  GPTConfig model;
  int micro_batch = 1, seq_len = 1, grad_accum = 1;
  int ranks_per_node = 1, nodes = 1;
  DistConfig dist;
  int act_bytes = 4;   // bytes per activation and gradient element: 4 (fp32, CPU) or 2 (bf16, CUDA)
  // Collectives advance while backward runs (NCCL's own stream; MPI's progress thread). false:
  // MPI's poll progress (runtime/comm.h), where a collective advances only when its rank polls
  // between ops: modelled as reducing every bucket after backward, as without overlap.
  bool async_progress = true;
  int ranks() const { return ranks_per_node * nodes; }
};

// One op kind's time in one micro-step, summed over the layers it occurs in.
struct OpTime {
  std::string kind;  // "qkv", "attention", "layernorm", "lm_head", ...
  double forward_s = 0, backward_s = 0;
};

// A bucket's collective on the step's timeline (seconds from the start of the optimizer step).
struct BucketTime {
  int index = 0;
  int64_t bytes = 0;
  double ready_s = 0;  // backward has produced its last gradient (or ended, without overlap)
  double start_s = 0;  // ready, and the previous bucket's collective done
  double end_s = 0;
};

struct Prediction {
  std::vector<OpTime> ops;
  double forward_s = 0, backward_s = 0;  // one micro-step
  double optimizer_s = 0;                // AdamW on this rank's parameters (all of them, or its ZeRO-1 share)
  std::vector<BucketTime> buckets;       // empty on one rank
  double backward_end_s = 0;             // the last micro-step's backward ends
  double grad_comm_s = 0;                // the buckets' collectives, summed
  double allgather_s = 0;                // ZeRO-1's parameter all-gather
  double small_comm_s = 0;               // per-step scalar all-reduces (loss; ZeRO-1 norm)
  double exposed_comm_s = 0;             // the part of the step that is communication only
  double step_s = 0;
  double tokens_per_s = 0;  // all ranks
  double mfu = 0;           // per GPU, llm.c's FLOP count (gpt_flops_per_step) over rates.peak_tflops
  double one_gpu_step_s = 0;       // the same per-rank work on one GPU: no communication, full AdamW
  double scaling_efficiency = 0;   // one_gpu_step_s / step_s (weak scaling: tokens/s per GPU vs one GPU)
};

// UserError naming the field when an input is out of range.
Prediction predict_step(const Job& job, const Rates& rates, const Network& net);

enum class Collective { AllReduce, ReduceScatter, AllGather };
// Seconds for one collective over `bytes` (the whole buffer) on ranks_per_node x nodes ranks.
double collective_seconds(Collective c, double bytes, int ranks_per_node, int nodes, const Network& net);

// Seconds for one GEMM of that shape at the nearest measured shape's rate.
double gemm_seconds(const Rates& rates, int64_t M, int64_t N, int64_t K);

// A measured all-reduce curve point (bench allreduce / the suite's allreduce rows).
struct CurvePoint {
  double bytes = 0, seconds = 0;
};
struct LinkFit {
  Link link;
  double max_rel_err = 0;  // worst |model - measured| / measured over the points fitted
  int points_used = 0;
};
// Fits alpha and busbw to all-reduce times measured on ranks_per_node x nodes ranks with
// `algo` (least squares on t = a + b x bytes, weighted by 1/t^2, inverted through
// collective_seconds: see predict.cpp). Fit one level at a time: one node's ranks for
// Network::intra, one rank per node for Network::inter.
// Only points of at least `min_bytes` are fitted when two or more are (the sizes a job sends: a
// real curve bends where protocols switch, and a line through all of it fits none of it well).
LinkFit fit_alpha_beta(const std::vector<CurvePoint>& points, int ranks_per_node, int nodes, Algo algo,
                       double min_bytes = 0);

// ---- Inputs from a suite result (`bench suite --json`, benchmarks/suite.schema.json) ----------

// What one suite result says about its machine, as the model's inputs: the rates of the kernels
// the trainer runs (the CPU GEMM on a CPU; on a GPU the hand-written GEMM, not the cuBLAS
// baseline), the attention rows nearest the model's head dim and sequence length, the memory
// row, the peak, and the all-reduce sweep across the machine's ranks (one node).
struct SuiteInputs {
  std::string file, label, device;  // label: the GPU's name (or the CPU's), device: cpu or cuda
  Rates rates;
  int act_bytes = 4;                  // 2 on a GPU (bf16 activations and gradients), 4 on a CPU
  int gpus = 1;                       // machine.gpu.count (1 on a CPU)
  std::vector<CurvePoint> allreduce;  // the sweep, one point per size (empty: not measured)
  int allreduce_ranks = 0;
  std::string allreduce_backend;      // nccl or mpi
  std::string gemm_impl;              // which rows gave the GEMM rates
};
// UserError naming the file and what is missing (no GEMM row of the trainer's kernel, no
// attention, memory or peak): a suite run where those rows were skipped or failed cannot
// predict anything.
// `gemm_impl` "" reads the GEMM rows of the trainer's own kernel; another impl ("cublas") asks
// what the job would do at that kernel's rates.
SuiteInputs suite_inputs(const nlohmann::json& suite, const std::string& file, const GPTConfig& model, int seq_len,
                         const std::string& gemm_impl = "");

// ---- A table over node counts (`leasetrain plan --predict`) ------------------------------------

struct PlanSetup {
  Job job;                    // the model, micro_batch and grad_accum per rank, dist; nodes is set per row
  int64_t global_batch = 0;   // > 0: held over node counts (split as the trainer does); 0: per-rank batch held
  std::vector<int> node_counts;
  double price_per_gpu_hour = 0;  // 0: no cost columns
  double token_budget = 0;        // 0: no time/cost to budget
  double knee_fraction = 0.5;     // an added node must add this share of one node's tokens/s
};
struct PlanRow {
  int nodes = 0, gpus = 0, micro_batch = 0, grad_accum = 0;
  bool feasible = true;
  std::string note;           // why a row is not feasible (the global batch does not divide)
  Prediction p;
  double hours = 0, cost = 0; // to the token budget
};
struct PlanTable {
  std::vector<PlanRow> rows;
  int knee_nodes = 0;  // the last node count whose step up still paid the knee fraction (0: none computed)
};
PlanTable plan_table(const PlanSetup& setup, const Rates& rates, const Network& net);

}  // namespace lt::predict
