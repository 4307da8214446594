// The training-step benchmark: random tokens, warm-up, then every step timed; the median is
// reported with llm.c's FLOP count (GPT::flops_per_step) for achieved GFLOP/s.
#include "benchmarks/bench_step.h"

#include <algorithm>
#include <chrono>

#include "runtime/error.h"
#include "runtime/memory.h"
#include "runtime/optim.h"
#include "runtime/rng.h"

namespace lt::bench {

GPTConfig named_model(const std::string& name) {
  if (name == "tiny") return GPTConfig{4, 4, 128, 128, 256};
  if (name == "124m") return GPTConfig{12, 12, 768, 1024, 50257};
  if (name == "350m") return GPTConfig{24, 16, 1024, 1024, 50257};
  throw UserError("--model: expected tiny, 124m or 350m, got '" + name + "'");
}

StepBenchResult bench_step(const std::string& name, const GPTConfig& cfg, int B, int T, int warmup, int steps,
                           const BackendOptions& opt) {
  if (T > cfg.block_size) throw UserError("--seq: expected at most the context " + std::to_string(cfg.block_size));
  MemoryPlan plan;
  plan.batch = B;
  plan.seq = T;
  plan.training = true;
  plan.device = opt.device;
  plan.compute = opt.device == Device::CPU ? DType::F32 : opt.precision;
  plan.extra_host_bytes = (uint64_t)B * (uint64_t)T * 8;
  check_model_memory(cfg, plan, "bench step " + name, opt.device_index);
  auto backend = make_backend(opt);
  GPT model(cfg, *backend);
  model.init_weights(1);
  AdamW optim(AdamWConfig{}, model);
  Rng rng(2);
  std::vector<int32_t> in((size_t)B * T), tgt((size_t)B * T);
  StepBenchResult r;
  r.model = name;
  r.config = cfg;
  r.B = B;
  r.T = T;
  r.params = model.num_params() - (int64_t)(cfg.padded_vocab() - cfg.vocab_size) * cfg.n_embd;
  for (int i = 0; i < warmup + steps; i++) {
    for (size_t j = 0; j < in.size(); j++) {
      in[j] = (int32_t)rng.below(cfg.vocab_size);
      tgt[j] = (int32_t)rng.below(cfg.vocab_size);
    }
    const auto t0 = std::chrono::steady_clock::now();
    model.forward_async(in.data(), tgt.data(), B, T);  // the loss stays on the device: no wait mid-step
    model.backward();
    optim.step(1e-4f);
    model.take_losses();  // what the trainer reads every step: one wait, at the end
    backend->synchronize();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i >= warmup) r.ms.push_back(ms);
  }
  std::vector<double> sorted = r.ms;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  r.median_ms = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  r.min_ms = sorted.front();
  r.max_ms = sorted.back();
  r.tokens_per_s = (double)B * T / (r.median_ms / 1e3);
  r.gflops = model.flops_per_step(B, T) / (r.median_ms / 1e3) / 1e9;
  return r;
}

}  // namespace lt::bench
