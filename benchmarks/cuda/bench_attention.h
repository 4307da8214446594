// Attention benchmark: the hand-written causal flash attention (kernels/cuda/attention.h,
// the symbols the trainer calls), forward and backward: the mma.sync kernels by name, and on a
// GPU where they run (compute capability 9.0, sm_90a code) also the Hopper kernels (wgmma +
// TMA), which are what attention_forward/backward run there. defines: AttentionBenchConfig,
// AttentionBenchRow, AttentionBenchReport, attention_bench_configs, bench_attention,
// print_attention_bench. The CLI (`leasetrain bench attention`) calls bench_attention.
//
// FLOPs follow FlashAttention-2's convention: forward 4*B*T^2*NH*D (the two matmuls), halved
// for the causal mask; backward 2.5x the forward. % of peak is against the dense bf16 tensor
// peak from the SM count and the maximum clock (cudaDevAttrClockRate).
#pragma once
#include <cstdio>
#include <string>
#include <vector>

#include "benchmarks/peak.h"

namespace lt::bench {

struct AttentionBenchConfig {
  int B = 8, T = 2048, NH = 32, head_dim = 64;
  int warmup = 3;
  int iters = 20;         // timed runs per pass; the median is reported
  bool flush_l2 = true;   // overwrite a buffer of 2x the L2 size before every timed run
  bool backward = true;   // also time the backward pass
};

// FlashAttention-2's benchmark grid: hidden size NH*D = 2048, B*T = 16384 tokens, T from 512
// to max_T (head dims 64 and 128).
std::vector<AttentionBenchConfig> attention_bench_configs(const std::vector<int>& head_dims, int max_T);

struct AttentionBenchRow {
  std::string pass;                // "fwd" or "bwd"
  std::string kernel = "mma.sync";  // "mma.sync" or (on Hopper) "wgmma"
  int B = 0, T = 0, NH = 0, D = 0;
  double median_ms = 0, min_ms = 0, max_ms = 0;
  double tflops = 0;    // FA2 FLOPs (causal) / median
  double pct_peak = 0;  // of the dense bf16 peak (0 when unknown)
  double vs_mma = 1;    // the same pass's mma.sync row's median / this median
  // Checked before timing against the fallback kernels (attention_naive.h, fp32 arithmetic on
  // the same bf16 inputs) on min(B, 2) sequences of min(NH, 4) heads at min(T, 2048): the same kernel
  // instantiation. rel_err is the worst relative L2 error over the outputs (out; dq, dk, dv).
  int check_B = 0, check_T = 0, check_NH = 0;
  double rel_err = 0;
  bool correct = false;  // rel_err within the bf16 tolerance (2e-2)
};

struct AttentionBenchReport : DevicePeak {  // the device and its peak (peak.h), then one row per measurement
  std::vector<AttentionBenchRow> rows;
};

// Runs every config on the current device (random N(0,1) bf16 inputs, CUDA events on one
// stream). Throws std::runtime_error when there is no device or a head dim has no kernel.
AttentionBenchReport bench_attention(const std::vector<AttentionBenchConfig>& configs);

// One line per row: pass kernel B T NH D median_ms TFLOP/s %peak x_mma rel_err ok.
void print_attention_bench(const AttentionBenchReport& report, std::FILE* out);

}  // namespace lt::bench
