// `bench step`: the whole training step (forward, backward, AdamW) timed on one backend.
#pragma once
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/model.h"

namespace lt::bench {

struct StepBenchResult {
  std::string model;  // "tiny", "124m"
  GPTConfig config;
  int B = 0, T = 0;
  int64_t params = 0;
  std::vector<double> ms;  // every timed step
  double median_ms = 0, min_ms = 0, max_ms = 0;
  double tokens_per_s = 0, gflops = 0;  // at the median
};

GPTConfig named_model(const std::string& name);  // "tiny" or "124m"; UserError otherwise

// Times `steps` training steps after `warmup` untimed ones on random tokens, on the backend
// `backend` asks for (the CPU by default; CUDA: bf16 mixed precision unless it says fp32).
StepBenchResult bench_step(const std::string& name, const GPTConfig& cfg, int B, int T, int warmup, int steps,
                           const BackendOptions& backend = {});

}  // namespace lt::bench
