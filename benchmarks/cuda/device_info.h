// What the suite records about a GPU, and the device-side pieces of the suite and of lease
// acceptance that are not GEMM or attention: device-to-device copy bandwidth and the
// bitwise-repeat check. Host code over the CUDA runtime; NVML (clocks, driver) is opened at run
// time with dlopen, so a binary built here starts on machines without a driver.
#pragma once
#include <string>
#include <vector>

namespace lt::bench {

struct GpuInfo {
  int count = 0;        // CUDA devices visible; 0 with `why` set when none can be used
  std::string why;      // why there is no usable device (no driver, no device, ...)
  int device = 0;       // the device described below
  std::string name, uuid, pci_bus_id;
  int cc_major = 0, cc_minor = 0, sm_count = 0;
  double max_sm_clock_mhz = 0;  // cudaDevAttrClockRate (the maximum boost clock)
  double mem_clock_mhz = 0;     // cudaDevAttrMemoryClockRate
  int mem_bus_width_bits = 0;
  double mem_gib = 0, l2_mib = 0;
  int driver_api = 0, runtime_api = 0, cublas = 0;  // e.g. 13000, 13000, 130100
  std::string driver;  // NVML's driver version string ("" without NVML)
};

// Describes `device`; count 0 and `why` when the runtime has no usable device.
GpuInfo query_gpu(int device = 0);

// cudaSetDevice, for the benchmarks that run on the current device.
void use_device(int device);

// The SM clock now (NVML), MHz; 0 when NVML is not available.
double read_sm_clock_mhz(int device);

struct CopyBench {
  double bytes = 0;        // per copy
  double median_ms = 0, min_ms = 0, max_ms = 0;
  double gbps = 0;         // 2 x bytes / median (read + write counted, as nvbandwidth does)
  bool correct = false;    // the copy's destination equals its source (checked once first)
  double sm_clock_mhz = 0; // sampled after the timed runs
};
// cudaMemcpyAsync device-to-device of `bytes`, CUDA events on one stream, median of `iters`.
CopyBench bench_device_copy(int device, size_t bytes, int warmup, int iters);

// The same bf16 GEMM (hand-written gemm(), M=N=K=n, random inputs) run twice: true when both
// outputs are the same bits. `what` names the computation for the scorecard.
bool gemm_repeats_bitwise(int device, int n, std::string* what);

}  // namespace lt::bench
