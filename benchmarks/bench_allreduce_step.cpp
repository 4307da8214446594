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

DpStepResult bench_dp_step(Communicator& comm, const GPTConfig& cfg, const DistConfig& dist, int B, int T, int warmup,
                           int steps, bool independent) {
  if (T > cfg.block_size) throw UserError("--seq: expected at most the context " + std::to_string(cfg.block_size));
  std::unique_ptr<Communicator> self = independent ? make_self_comm() : nullptr;
  Communicator& train_comm = independent ? *self : comm;
  auto backend = make_cpu_backend();
  GPT model(cfg, *backend);
  model.init_weights(1);
  DataParallel dp(model, train_comm, dist);
  std::unique_ptr<AdamW> optim = dp.make_optimizer(AdamWConfig{});
  dp.broadcast_parameters(0);
  DpStepResult r;
  r.world = comm.world();
  r.B = B;
  r.T = T;
  r.buckets = train_comm.world() > 1 ? dp.describe_buckets() : "none";
  std::vector<double> alone;
  for (int i = 0; i < 5 && train_comm.world() > 1; i++) alone.push_back(dp.time_reduction_alone_ms());
  Rng rng(2 + (uint64_t)comm.rank());  // each rank its own data, as in training
  std::vector<int32_t> in((size_t)B * T), tgt((size_t)B * T);
  std::vector<double> ms, wait, comm_ms;
  double hidden = 0, total = 0;
  for (int i = 0; i < warmup + steps; i++) {
    for (size_t j = 0; j < in.size(); j++) {
      in[j] = (int32_t)rng.below(cfg.vocab_size);
      tgt[j] = (int32_t)rng.below(cfg.vocab_size);
    }
    train_comm.set_step(i + 1);
    const auto t0 = std::chrono::steady_clock::now();
    dp.begin_micro_step(true);
    model.forward(in.data(), tgt.data(), B, T);
    model.backward();
    dp.finish_gradients();
    dp.step(*optim, 1e-4f);
    backend->synchronize();
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i < warmup) continue;
    const ReduceStats& st = dp.last_stats();
    ms.push_back(t);
    wait.push_back(st.exposed_ms + st.step_comm_ms);
    comm_ms.push_back(st.comm_ms);
    hidden += st.hidden_ms;
    total += st.comm_ms;
    r.launched_during_backward = st.launched_during_backward;
  }
  // The slowest rank's medians, the ranks' mean hidden share.
  std::vector<float> worst = {(float)median(ms), (float)*std::min_element(ms.begin(), ms.end()), (float)median(wait),
                              (float)median(comm_ms), (float)median(alone)};
  std::vector<float> mean = {(float)(total > 0 ? hidden / total : 0)};
  if (comm.world() > 1) {
    comm.set_tag("bench results");
    Tensor t = Tensor::empty(Device::CPU, DType::F32, {(int64_t)worst.size()});
    std::copy(worst.begin(), worst.end(), t.f32());
    comm.all_reduce(t, ReduceOp::Max)->wait();
    std::copy(t.f32(), t.f32() + worst.size(), worst.begin());
    Tensor h = Tensor::empty(Device::CPU, DType::F32, {1});
    h.f32()[0] = mean[0];
    comm.all_reduce(h, ReduceOp::Avg)->wait();
    mean[0] = h.f32()[0];
  }
  r.median_ms = worst[0];
  r.min_ms = worst[1];
  r.wait_ms = worst[2];
  r.comm_ms = worst[3];
  r.alone_ms = worst[4];
  r.hidden = mean[0];
  return r;
}

}  // namespace lt::bench
