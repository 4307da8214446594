// GEMM benchmark (see bench_gemm.h): hand-written gemm() paths vs cuBLAS, timed with CUDA
// events on one stream, L2 flushed between timed runs, median of many, correctness first.
#include <cublas_v2.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "benchmarks/cuda/bench_gemm.h"
#include "kernels/cuda/common.cuh"

namespace lt::bench {
namespace {

using lt::cuda::bf16;
using lt::cuda::DataType;
using lt::cuda::GemmArgs;
using lt::cuda::GemmPath;
using lt::cuda::Layout;

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// N(0,1) by Box-Muller on a counter-based hash: random data without a host round trip.
__global__ void fill_randn_kernel(bf16* p, int64_t n, uint64_t seed) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint64_t h1 = splitmix64(seed ^ (2 * (uint64_t)i)), h2 = splitmix64(seed ^ (2 * (uint64_t)i + 1));
    const double u1 = ((h1 >> 11) + 0.5) * 0x1.0p-53, u2 = (h2 >> 11) * 0x1.0p-53;
    p[i] = __float2bfloat16_rn((float)(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2)));
  }
}

void fill_randn(bf16* p, int64_t n, uint64_t seed, cudaStream_t stream) {
  fill_randn_kernel<<<1024, 256, 0, stream>>>(p, n, seed);
  CUDA_CHECK_LAST();
}

struct DeviceMem {
  void* p = nullptr;
  explicit DeviceMem(size_t bytes) { CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
  ~DeviceMem() { cudaFree(p); }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
};

std::vector<float> download_bf16(const void* d, size_t n) {
  std::vector<bf16> tmp(n);
  CUDA_CHECK(cudaMemcpy(tmp.data(), d, n * sizeof(bf16), cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = __bfloat162float(tmp[i]);
  return out;
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& ref) {
  double e = 0, r = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    e += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
    r += (double)ref[i] * ref[i];
  }
  return r > 0 ? std::sqrt(e / r) : std::sqrt(e);
}

// Dense bf16 tensor FLOP per clock per SM, by compute capability (ANCHORS.md); 0 when unknown.
int bf16_flops_per_clock_per_sm(int major, int minor) {
  if (major == 8 && minor == 0) return 2048;  // A100: 108 x 2048 x 1.41 GHz = 312 TFLOP/s
  if (major == 9 && minor == 0) return 4096;  // H100/H200: 132 x 4096 x 1.83 GHz = 989 TFLOP/s
  return 0;
}

struct Timing {
  double median_ms, min_ms, max_ms;
};

Timing time_runs(const std::function<void()>& run, void* flush, size_t flush_bytes, int warmup, int iters,
                 cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) run();
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
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
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

const char* layout_name(Layout l) { return l == Layout::NT ? "NT" : l == Layout::NN ? "NN" : "TN"; }

}  // namespace

GemmBenchReport bench_gemm(const std::vector<GemmBenchConfig>& configs) {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    (void)cudaGetLastError();
    throw std::runtime_error("bench gemm: no CUDA device");
  }
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  int clock_khz = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev));

  GemmBenchReport rep;
  rep.device = prop.name;
  rep.sm_count = prop.multiProcessorCount;
  rep.clock_mhz = clock_khz / 1000;
  rep.flops_per_clk_sm = bf16_flops_per_clock_per_sm(prop.major, prop.minor);
  rep.peak_tflops = (double)rep.sm_count * rep.flops_per_clk_sm * clock_khz * 1e3 / 1e12;

  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("bench gemm: cublasCreate failed");
  const size_t flush_bytes = std::max<size_t>(2 * (size_t)prop.l2CacheSize, 1 << 20);
  DeviceMem flush(flush_bytes);
  const uint64_t seed = (uint64_t)std::chrono::steady_clock::now().time_since_epoch().count();

  for (const GemmBenchConfig& cfg : configs) {
    const size_t nA = (size_t)cfg.M * cfg.K, nB = (size_t)cfg.N * cfg.K, nC = (size_t)cfg.M * cfg.N;
    DeviceMem A(nA * sizeof(bf16)), B(nB * sizeof(bf16)), C(nC * sizeof(bf16)), Cref(nC * sizeof(bf16));
    fill_randn(static_cast<bf16*>(A.p), nA, seed + 1, stream);
    fill_randn(static_cast<bf16*>(B.p), nB, seed + 2, stream);
    GemmArgs args;
    args.layout = cfg.layout;
    args.M = cfg.M, args.N = cfg.N, args.K = cfg.K;
    args.A = A.p, args.B = B.p;
    args.in_type = DataType::BF16, args.out_type = DataType::BF16;

    GemmArgs ref_args = args;
    ref_args.C = Cref.p;
    lt::cuda::gemm_cublas(ref_args, handle, nullptr, 0, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<float> ref = download_bf16(Cref.p, nC);

    struct Variant {
      std::string name;
      std::function<void()> run;
    };
    std::vector<Variant> variants;
    args.C = C.p;
    GemmArgs mma = args;
    mma.path = GemmPath::MmaSync;
    variants.push_back({"mma.sync", [mma, stream] {
                          if (lt::cuda::gemm(mma, stream) != GemmPath::MmaSync)
                            throw std::runtime_error("bench gemm: mma.sync path not taken");
                        }});
    if (cfg.include_simt) {
      GemmArgs simt = args;
      simt.path = GemmPath::Simt;
      variants.push_back({"simt", [simt, stream] { lt::cuda::gemm(simt, stream); }});
    }
    variants.push_back({"cublas", [args, handle, stream] { lt::cuda::gemm_cublas(args, handle, nullptr, 0, stream); }});

    const double flop = 2.0 * cfg.M * cfg.N * cfg.K;
    const size_t first = rep.rows.size();
    double cublas_ms = 0;
    for (const Variant& v : variants) {
      GemmBenchRow row;
      row.kernel = v.name;
      row.layout = cfg.layout;
      row.M = cfg.M, row.N = cfg.N, row.K = cfg.K;
      CUDA_CHECK(cudaMemsetAsync(C.p, 0xFF, nC * sizeof(bf16), stream));  // poison: NaN
      v.run();
      CUDA_CHECK(cudaStreamSynchronize(stream));
      row.rel_err = rel_l2(download_bf16(C.p, nC), ref);
      row.correct = row.rel_err <= 1e-2;
      const Timing t = time_runs(v.run, cfg.flush_l2 ? flush.p : nullptr, flush_bytes, cfg.warmup, cfg.iters, stream);
      row.median_ms = t.median_ms, row.min_ms = t.min_ms, row.max_ms = t.max_ms;
      row.tflops = flop / (t.median_ms * 1e-3) / 1e12;
      row.pct_peak = rep.peak_tflops > 0 ? 100.0 * row.tflops / rep.peak_tflops : 0;
      if (v.name == "cublas") cublas_ms = t.median_ms;
      rep.rows.push_back(row);
    }
    for (size_t i = first; i < rep.rows.size(); ++i) rep.rows[i].vs_cublas = cublas_ms / rep.rows[i].median_ms;
  }
  cublasDestroy(handle);
  CUDA_CHECK(cudaStreamDestroy(stream));
  return rep;
}

void print_gemm_bench(const GemmBenchReport& r, std::FILE* out) {
  std::fprintf(out, "# %s: %d SMs, clock %d MHz, dense bf16 peak %.1f TFLOP/s (%d FLOP/clk/SM%s)\n",
               r.device.c_str(), r.sm_count, r.clock_mhz, r.peak_tflops, r.flops_per_clk_sm,
               r.flops_per_clk_sm ? "" : ": unknown arch, no % of peak");
  std::fprintf(out, "%-9s %-3s %6s %6s %6s %10s %9s %7s %9s %9s %s\n", "kernel", "lay", "M", "N", "K", "median_ms",
               "TFLOP/s", "%peak", "x_cublas", "rel_err", "ok");
  for (const GemmBenchRow& x : r.rows)
    std::fprintf(out, "%-9s %-3s %6d %6d %6d %10.4f %9.1f %7.1f %9.3f %9.2e %s\n", x.kernel.c_str(),
                 layout_name(x.layout), x.M, x.N, x.K, x.median_ms, x.tflops, x.pct_peak, x.vs_cublas, x.rel_err,
                 x.correct ? "yes" : "NO");
}

}  // namespace lt::bench
