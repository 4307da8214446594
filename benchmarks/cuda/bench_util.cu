// See bench_util.cuh.
#include <cmath>
#include <stdexcept>

#include "benchmarks/cuda/bench_util.cuh"
#include "benchmarks/peak.h"

namespace lt::bench {
namespace {

__device__ __forceinline__ uint64_t mix64(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void randn_bf16_kernel(lt::cuda::bf16* p, int64_t n, uint64_t seed) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint64_t h1 = mix64(seed ^ (2 * (uint64_t)i)), h2 = mix64(seed ^ (2 * (uint64_t)i + 1));
    const double u1 = ((h1 >> 11) + 0.5) * 0x1.0p-53, u2 = (h2 >> 11) * 0x1.0p-53;
    p[i] = __float2bfloat16_rn((float)(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2)));
  }
}

}  // namespace

void fill_randn(lt::cuda::bf16* p, int64_t n, uint64_t seed, cudaStream_t stream) {
  randn_bf16_kernel<<<1024, 256, 0, stream>>>(p, n, seed);
  CUDA_CHECK_LAST();
}

std::vector<float> download_bf16(const void* d, size_t n) {
  std::vector<lt::cuda::bf16> tmp(n);
  CUDA_CHECK(cudaMemcpy(tmp.data(), d, n * sizeof(lt::cuda::bf16), cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = __bfloat162float(tmp[i]);
  return out;
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& ref, size_t stride, size_t lo, size_t len) {
  if (stride == 0) stride = len = ref.size(), lo = 0;
  double e = 0, r = 0;
  for (size_t row = 0; row * stride < ref.size(); ++row)
    for (size_t i = row * stride + lo; i < row * stride + lo + len && i < ref.size(); ++i) {
      if (!std::isfinite(got[i])) return INFINITY;
      e += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
      r += (double)ref[i] * ref[i];
    }
  return r > 0 ? std::sqrt(e / r) : std::sqrt(e);
}

Timing time_runs(const std::function<void()>& run, void* flush, size_t flush_bytes, int warmup, int iters,
                 cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) run();
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int i = 0; i < std::max(1, iters); ++i) {
    if (flush) CUDA_CHECK(cudaMemsetAsync(flush, i & 0xff, flush_bytes, stream));
    CUDA_CHECK(cudaEventRecord(start, stream));
    run();
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  return {n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]), ms.front(), ms.back()};
}

DevicePeak current_device_peak(const std::string& who) {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    (void)cudaGetLastError();
    throw std::runtime_error(who + ": no CUDA device");
  }
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  int clock_khz = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev));
  DevicePeak p;
  p.device = prop.name;
  p.sm_count = prop.multiProcessorCount;
  p.clock_mhz = clock_khz / 1000;
  p.flops_per_clk_sm = tensor_bf16_flops_per_clk_sm(prop.major, prop.minor);
  p.peak_tflops = peak_tflops(p.sm_count, p.flops_per_clk_sm, clock_khz / 1000.0);
  p.l2_bytes = prop.l2CacheSize;
  return p;
}

}  // namespace lt::bench
