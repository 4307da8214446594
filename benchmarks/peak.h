// Peaks computed from the device, never looked up by name, so an H200 or a new GPU gets a right
// peak instead of a bogus MFU (llm.c printed -100% on H200; nanoGPT 104% on H100). Header-only:
// the CUDA benchmarks (benchmarks/cuda) and the suite's machine description share it.
#pragma once
#include <cstddef>
#include <string>

namespace lt::bench {

// Dense bf16 tensor-core FLOP per clock per SM for compute capability major.minor; 0 when not
// known (the caller then reports no peak and no MFU, with the reason).
//   sm_80 (A100, A30): 1024 bf16 FMA/clk/SM = 2048 FLOP    108 x 2048 x 1410 MHz = 312 TFLOP/s
//   sm_86, sm_87, sm_89 (A10, A40, L4, L40S, RTX A/Ada workstation): 1024 FLOP (GeForce parts
//     run fp32 accumulation at half that rate: the figure is the pro/datacenter rate)
//   sm_90 (H100, H200, GH200): 4096 FLOP                   132 x 4096 x 1830 MHz = 989 TFLOP/s
//   sm_100 (B200, GB200): 8192 FLOP
inline int tensor_bf16_flops_per_clk_sm(int major, int minor) {
  if (major == 8) return minor == 0 ? 2048 : 1024;
  if (major == 9) return 4096;
  if (major == 10) return 8192;
  return 0;
}

// units x flops_per_clk x clock, in TFLOP/s.
inline double peak_tflops(int units, int flops_per_clk_per_unit, double clock_mhz) {
  return units * (double)flops_per_clk_per_unit * clock_mhz * 1e6 / 1e12;
}

// DRAM peak in GB/s: 2 transfers per memory clock (DDR/HBM) x bus width in bytes.
inline double peak_mem_gbps(double mem_clock_mhz, int bus_width_bits) {
  return 2.0 * mem_clock_mhz * 1e6 * (bus_width_bits / 8.0) / 1e9;
}

// fp32 FLOP per clock per core from the CPU's vector ISA: two FMA pipes of 8 floats (AVX2+FMA)
// = 32, of 16 (AVX-512F) = 64, SSE only: 8.
inline int cpu_fp32_flops_per_clk_core(bool avx512f, bool avx2_fma) { return avx512f ? 64 : avx2_fma ? 32 : 8; }

// Causal attention FLOPs in FlashAttention-2's convention: forward 4 B T^2 H D (the two
// matmuls), halved for the causal mask; backward 2.5x the forward.
inline double attention_flops(int B, int T, int heads, int head_dim, bool backward) {
  const double fwd = 4.0 * B * (double)T * T * heads * head_dim / 2;
  return backward ? 2.5 * fwd : fwd;
}

// A GPU and its dense bf16 peak at the maximum SM clock: what the kernel benchmarks report
// beside every row (benchmarks/cuda/bench_util.cuh fills it for the current device).
struct DevicePeak {
  std::string device;
  int sm_count = 0;
  int clock_mhz = 0;         // cudaDevAttrClockRate (max boost)
  int flops_per_clk_sm = 0;  // 0: not known for this arch (no % of peak)
  double peak_tflops = 0;
  size_t l2_bytes = 0;
};

}  // namespace lt::bench
