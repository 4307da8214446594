// The training loop: config -> model, data, optimizer; progress lines, metrics.jsonl,
// periodic evaluation and checkpoints, bit-identical resume. Also eval and sampling.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "runtime/model.h"
#include "runtime/run_policy.h"

namespace lt {

class Communicator;
class DataParallel;

struct TrainOptions {
  std::string config_path;
  std::string out_dir = "runs/default";
  std::optional<int64_t> steps;     // overrides train.steps
  std::optional<uint64_t> seed;     // overrides train.seed
  bool resume = false;              // continue from the newest complete checkpoint in out_dir
  std::string init_dir;             // start from this checkpoint's weights (e.g. real GPT-2)
  // Checkpoints' weights above this many bytes are written as shards with an index, as
  // transformers' save_pretrained(max_shard_size=...) does (checkpoint.h).
  uint64_t max_shard_bytes = kDefaultMaxShardBytes;
  bool quiet = false;               // no progress lines (tests)
  // Where to train (CPU by default; the CLI resolves --device auto). A CUDA job of one rank
  // runs on a one-process CUDA communicator; several ranks need NCCL (bootstrapped over MPI).
  BackendOptions backend;
  // Data parallelism: null means "from the launcher's environment" (SelfComm for one rank,
  // MpiComm under mpirun/srun), and then a failing rank prints its error with its rank and
  // aborts the job. A communicator given here (tests) is borrowed and errors are rethrown.
  Communicator* comm = nullptr;
  // Paths, storage quota and deadline of a leased job (lease/tenancy.h); null: no limits.
  const RunPolicy* policy = nullptr;
  // Called on every rank after every optimizer step (tests: cross-rank parameter checks).
  std::function<void(int64_t step, const GPT& model)> on_step;
};

struct TrainResult {
  int64_t steps_done = 0;
  std::vector<float> losses;        // train loss of each step run in this invocation
  float last_val_loss = -1.f;
  std::string last_checkpoint;
  bool stopped_for_deadline = false;  // checkpointed and stopped early: the lease ends soon
  // Stopped early for a preemption notice (the signal: SIGTERM, SIGUSR1 or SIGINT; 0: none);
  // `leasetrain train` then exits with kExitPreempted (runtime/error.h).
  int preempted_by = 0;
};

// The global batch (sequences per optimizer step) is a property of the run, kept in its
// checkpoints. On `world` ranks it is split as micro_batch x world x grad_accum with the
// largest micro_batch <= max_micro_batch (the memory bound) that divides its share; nullopt
// when `world` does not divide it or a rank would need more than kMaxGradAccum steps.
struct BatchSplit {
  int micro_batch = 0, grad_accum = 0;
};
inline constexpr int64_t kMaxGradAccum = 1 << 20;  // as [train] grad_accum is bounded; nullopt beyond
std::optional<BatchSplit> split_global_batch(int64_t global_batch, int world, int max_micro_batch);

TrainResult run_train(const TrainOptions& opt);

// Mean loss over `batches` sequential windows of the first shard of `data` (llm.c's convention);
// `batches` 0 means every whole batch the shard holds, and more than it holds is a UserError
// naming the shard and both counts.
// Each batch is `rows` windows (0: B x world); with `dp` (world W) rank r evaluates its even
// share of them, in forward passes of at most B rows (the memory bound), and the mean is taken
// over all rows, so the result does not depend on W beyond fp32 rounding.
struct EvalResult {
  double loss = 0;
  int batches = 0;
  int64_t tokens = 0;
};
EvalResult evaluate(GPT& model, const std::string& data_glob, int B, int T, int batches, DataParallel* dp = nullptr,
                    int rows = 0);

// Autoregressive sampling with temperature and top-k (0: off), seeded.
std::vector<int32_t> generate(GPT& model, std::vector<int32_t> prompt, int n_tokens, float temperature, int top_k,
                              uint64_t seed);

}  // namespace lt
