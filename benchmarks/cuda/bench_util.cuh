// What every GPU benchmark needs, once: device buffers, random bf16 data generated on the
// device, downloads, relative errors, CUDA-event timing with the L2 flushed before each run,
// and the current device's peak (benchmarks/peak.h). Used by bench_gemm.cu, bench_attention.cu
// and device_info.cu.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "benchmarks/peak.h"
#include "kernels/cuda/common.cuh"

namespace lt::bench {

struct DeviceMem {
  void* p = nullptr;
  explicit DeviceMem(size_t bytes) { CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
  ~DeviceMem() { cudaFree(p); }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// N(0,1) bf16 values from a counter-based hash (Box-Muller): random, reproducible from `seed`,
// no host round trip.
void fill_randn(lt::cuda::bf16* p, int64_t n, uint64_t seed, cudaStream_t stream);

std::vector<float> download_bf16(const void* d, size_t n);

// ||got - ref|| / ||ref|| (infinite if `got` has a non-finite value). With stride > 0, only
// elements [lo, lo + len) of every `stride`-long row count.
double rel_l2(const std::vector<float>& got, const std::vector<float>& ref, size_t stride = 0, size_t lo = 0,
              size_t len = 0);

struct Timing {
  double median_ms, min_ms, max_ms;
};
// `warmup` untimed runs, then `iters` runs each timed with CUDA events on `stream`; before each
// timed run `flush` (flush_bytes, at least twice the L2; nullptr: no flush) is overwritten.
Timing time_runs(const std::function<void()>& run, void* flush, size_t flush_bytes, int warmup, int iters,
                 cudaStream_t stream);

// The current device and its dense bf16 peak at the maximum SM clock (cudaDevAttrClockRate).
// std::runtime_error "<who>: no CUDA device" without one.
DevicePeak current_device_peak(const std::string& who);

}  // namespace lt::bench
