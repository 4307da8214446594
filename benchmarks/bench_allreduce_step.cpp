// `bench step --ranks`: the data-parallel training step and how much of its gradient
// reduction hides behind backward (see bench_allreduce.h).
#include <algorithm>
#include <chrono>

#include "benchmarks/bench_allreduce.h"
#include "runtime/ddp.h"
#include "runtime/error.h"
#include "runtime/optim.h"
#include "runtime/rng.h"

namespace lt::bench {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

double DpStepResult::hidden() const {
  if (alone_ms <= 0) return 0;
  return std::clamp(1.0 - exposed_ms / alone_ms, 0.0, 1.0);
}

DpStepResult bench_dp_step(Communicator& comm, const GPTConfig& cfg, const DistConfig& dist, int B, int T, int warmup,
                           int steps) {
  if (T > cfg.block_size) throw UserError("--seq: expected at most the context " + std::to_string(cfg.block_size));
  auto backend = make_cpu_backend();
  GPT model(cfg, *backend);
  model.init_weights(1);
  DataParallel dp(model, comm, dist);
  std::unique_ptr<AdamW> optim = dp.make_optimizer(AdamWConfig{});
  dp.broadcast_parameters(0);
  DpStepResult r;
  r.world = comm.world();
  r.B = B;
  r.T = T;
  r.buckets = comm.world() > 1 ? dp.describe_buckets() : "none";
  std::vector<double> alone;
  for (int i = 0; i < 5 && comm.world() > 1; i++) alone.push_back(dp.time_reduction_alone_ms());
  Rng rng(2 + (uint64_t)comm.rank());  // each rank its own data, as in training
  std::vector<int32_t> in((size_t)B * T), tgt((size_t)B * T);
  std::vector<double> ms, exposed, comm_ms;
  for (int i = 0; i < warmup + steps; i++) {
    for (size_t j = 0; j < in.size(); j++) {
      in[j] = (int32_t)rng.below(cfg.vocab_size);
      tgt[j] = (int32_t)rng.below(cfg.vocab_size);
    }
    comm.set_step(i + 1);
    const auto t0 = std::chrono::steady_clock::now();
    dp.begin_micro_step(true);
    model.forward(in.data(), tgt.data(), B, T);
    model.backward();
    dp.finish_gradients();
    dp.step(*optim, 1e-4f);
    backend->synchronize();
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i < warmup) continue;
    ms.push_back(t);
    exposed.push_back(dp.last_stats().exposed_ms + dp.last_stats().step_comm_ms);
    comm_ms.push_back(dp.last_stats().comm_ms);
    r.launched_during_backward = dp.last_stats().launched_during_backward;
  }
  // The slowest rank's medians.
  std::vector<float> mine = {(float)median(ms), (float)*std::min_element(ms.begin(), ms.end()),
                             (float)median(exposed), (float)median(comm_ms), (float)median(alone)};
  if (comm.world() > 1) {
    Tensor t = Tensor::empty(Device::CPU, DType::F32, {(int64_t)mine.size()});
    std::copy(mine.begin(), mine.end(), t.f32());
    comm.set_tag("bench results");
    comm.all_reduce(t, ReduceOp::Max)->wait();
    std::copy(t.f32(), t.f32() + mine.size(), mine.begin());
  }
  r.median_ms = mine[0];
  r.min_ms = mine[1];
  r.exposed_ms = mine[2];
  r.in_step_comm_ms = mine[3];
  r.alone_ms = mine[4];
  return r;
}

}  // namespace lt::bench
