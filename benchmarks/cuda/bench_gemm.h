// GEMM benchmark: the hand-written kernels (gemm() with each GemmPath) against cuBLAS, on the
// same symbols the trainer calls. defines: GemmBenchConfig, GemmBenchRow, GemmBenchReport,
// bench_gemm, print_gemm_bench. The CLI (`leasetrain bench gemm`) calls bench_gemm.
#pragma once
#include <cstdio>
#include <string>
#include <vector>

#include "benchmarks/peak.h"

#include "kernels/cuda/gemm.h"

namespace lt::bench {

struct GemmBenchConfig {
  int M = 4096, N = 4096, K = 4096;
  lt::cuda::Layout layout = lt::cuda::Layout::NT;
  int warmup = 5;
  int iters = 50;         // timed runs; the median is reported
  bool flush_l2 = true;   // overwrite a buffer of 2x the L2 size before every timed run
  bool include_simt = false;  // the SIMT fallback is ~10-20x slower; off for big shapes
  bool all_tiles = false;     // also time the mma.sync kernel forced to each CTA tile (GemmTile)
};

struct GemmBenchRow {
  // "wgmma" (Hopper only), "mma.sync" (the tile gemm() picks), "mma.sync/<tile>" (forced), "simt", "cublas"
  std::string kernel;
  std::string tile;    // the hand-written rows' CTA tile, e.g. "128x128x32"; "" otherwise
  lt::cuda::Layout layout;
  int M, N, K;
  double median_ms = 0, min_ms = 0, max_ms = 0;
  double tflops = 0;       // 2*M*N*K / median
  double pct_peak = 0;     // of the device's dense bf16 tensor peak (0 when unknown)
  double vs_cublas = 0;    // cuBLAS median / this median (1.0 for cuBLAS itself)
  double vs_mma = 0;       // our mma.sync row's median / this median
  double rel_err = 0;      // ||C - C_cublas|| / ||C_cublas||, checked before timing
  bool correct = false;    // rel_err within the bf16 tolerance (1e-2)
};

struct GemmBenchReport : DevicePeak {  // the device and its peak (peak.h), then one row per measurement
  std::vector<GemmBenchRow> rows;
};

// Runs every config on the current device: random N(0,1) bf16 inputs, bf16 output, each kernel
// checked against cuBLAS first, then warm-up, then `iters` timed runs (CUDA events on one
// stream, L2 flushed before each). Throws std::runtime_error when there is no device.
GemmBenchReport bench_gemm(const std::vector<GemmBenchConfig>& configs);

// One line per row: kernel tile layout M N K median_ms TFLOP/s %peak x_cublas x_mma rel_err.
void print_gemm_bench(const GemmBenchReport& report, std::FILE* out);

}  // namespace lt::bench
