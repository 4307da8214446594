// `bench allreduce`: nccl-tests' all_reduce_perf on our communicators. Same flags (-b -e -f
// -n -w -c), same columns (size count type redop time algbw busbw #wrong), busbw = algbw x
// 2(n-1)/n, inputs of small integers so every sum is exact and checked.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/comm.h"
#include "runtime/config.h"
#include "runtime/model.h"

namespace lt::bench {

struct AllReduceArgs {
  int64_t min_bytes = 8, max_bytes = 32 << 20;
  double factor = 2;
  int iters = 20, warmup = 5;
  int check = 1;           // iterations checked (0: none)
  std::string op = "sum";  // sum, avg, max, min
};

struct AllReduceRow {
  int64_t bytes = 0, count = 0;
  std::string type = "float", redop;
  double time_us = 0;  // mean over iters, like nccl-tests
  double algbw = 0, busbw = 0;  // GB/s
  int64_t wrong = 0;  // elements off the exact result, summed over ranks
};

ReduceOp parse_redop(const std::string& name);  // UserError naming -o otherwise
// The sizes -b, -e, -f ask for, rounded down to whole floats (at least one).
std::vector<int64_t> allreduce_sizes(const AllReduceArgs& a);
// Runs on every rank of `comm` (a host communicator); rows are the same on every rank.
std::vector<AllReduceRow> bench_allreduce(Communicator& comm, const AllReduceArgs& a);
// The nccl-tests header and one line per row.
void print_allreduce_header(const std::string& backend, int world);
void print_allreduce_row(const AllReduceRow& r);

// `bench step --ranks N`: one data-parallel training step (forward, backward with bucketed
// all-reduce, AdamW) on every rank of `comm`, random tokens, the same per-rank batch whatever
// the world size. Times are the slowest rank's; the hidden share is the ranks' mean.
// independent: every rank trains alone (SelfComm) and `comm` only gathers the results: the
// machine's ceiling for N processes side by side, with no communication at all.
struct DpStepResult {
  int world = 1, B = 0, T = 0;
  std::string buckets;  // DataParallel::describe_buckets()
  double median_ms = 0, min_ms = 0;
  double wait_ms = 0;   // median wait after backward: reductions still running, and slower ranks (skew)
  double comm_ms = 0;   // median time per step the bucket collectives ran with every rank present
  double alone_ms = 0;  // median time to reduce every bucket with nothing else running
  double hidden = 0;    // share of comm_ms before this rank's backward ended (mean over ranks)
  int launched_during_backward = 0;
};
DpStepResult bench_dp_step(Communicator& comm, const GPTConfig& cfg, const DistConfig& dist, int B, int T, int warmup,
                           int steps, bool independent = false);

#ifdef LEASETRAIN_HAVE_NCCL
// The same sweep with NCCL on this rank's GPU (device = local rank), timed with CUDA events on
// NCCL's stream; `bootstrap` (MpiComm, or nullptr for one rank) carries the ncclUniqueId.
// Compiled without a GPU here; not run yet.
std::vector<AllReduceRow> bench_allreduce_nccl(Communicator* bootstrap, int rank, int world, int local_rank,
                                               const AllReduceArgs& a);
#endif

}  // namespace lt::bench
