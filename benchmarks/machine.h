// The machine a benchmark ran on, and its peak: every suite result records both, so a number can
// be read against the hardware it came from. Peaks are computed from the device (units x FLOP per
// clock per unit x clock), never looked up by name, so an H200 or a new GPU gets a right peak
// instead of a bogus MFU (llm.c printed -100% on H200; nanoGPT 104% on H100).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace lt::bench {

// Dense bf16 tensor-core FLOP per clock per SM for compute capability major.minor; 0 when not
// known (the caller then reports no peak and no MFU, with the reason).
//   sm_80 (A100, A30): 1024 bf16 FMA/clk/SM = 2048 FLOP    108 x 2048 x 1410 MHz = 312 TFLOP/s
//   sm_86, sm_87, sm_89 (A10, A40, L4, L40S, RTX A/Ada workstation): 1024 FLOP (GeForce parts
//     run fp32 accumulation at half that rate: the figure is the pro/datacenter rate)
//   sm_90 (H100, H200, GH200): 4096 FLOP                   132 x 4096 x 1830 MHz = 989 TFLOP/s
//   sm_100 (B200, GB200): 8192 FLOP
int tensor_bf16_flops_per_clk_sm(int major, int minor);

// units x flops_per_clk x clock, in TFLOP/s.
double peak_tflops(int units, int flops_per_clk_per_unit, double clock_mhz);

// DRAM peak in GB/s: 2 transfers per memory clock (DDR/HBM) x bus width in bytes.
double peak_mem_gbps(double mem_clock_mhz, int bus_width_bits);

// fp32 FLOP per clock per core from the CPU's vector ISA: two FMA pipes of 8 floats (AVX2+FMA)
// = 32, of 16 (AVX-512F) = 64, SSE only: 8.
int cpu_fp32_flops_per_clk_core(bool avx512f, bool avx2_fma);

// {"cpu": {...}, "gpu": {...} | null, "gpu_status": why there is no GPU entry,
//  "peak": {"tflops", "dtype", "units", "unit", "flops_per_clk_per_unit", "clock_mhz",
//           "clock_source", "formula"}, "label"}
// The peak is the GPU's dense bf16 tensor peak when `device` is "cuda", else the CPU's fp32
// FMA peak over the cores OpenMP uses. `sm_clock_mhz` (> 0) is the SM clock read while the
// suite ran; 0 uses the device's maximum.
nlohmann::json describe_machine(const std::string& device, double sm_clock_mhz = 0);

// "model = tokens/s x (6 x params + 6 x layers x width x seq) / peak" as printed beside every MFU.
extern const char* const kMfuFormula;

}  // namespace lt::bench
