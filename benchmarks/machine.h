// The machine a benchmark ran on, and its peak: every suite result records both, so a number can
// be read against the hardware it came from. Peaks are computed from the device (peak.h).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "benchmarks/peak.h"

namespace lt::bench {

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
