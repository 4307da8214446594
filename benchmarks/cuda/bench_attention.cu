// Attention benchmark (see bench_attention.h): causal flash attention forward and backward,
// checked against the fallback kernels first, then timed with CUDA events on one stream, L2
// flushed between timed runs, median of many.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "benchmarks/cuda/bench_attention.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_naive.h"
#include "kernels/cuda/common.cuh"

namespace lt::bench {
namespace {

using lt::cuda::bf16;

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// N(0,1) by Box-Muller on a counter-based hash: random data without a host round trip.
__global__ void randn_bf16_kernel(bf16* p, int64_t n, uint64_t seed) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint64_t h1 = mix64(seed ^ (2 * (uint64_t)i)), h2 = mix64(seed ^ (2 * (uint64_t)i + 1));
    const double u1 = ((h1 >> 11) + 0.5) * 0x1.0p-53, u2 = (h2 >> 11) * 0x1.0p-53;
    p[i] = __float2bfloat16_rn((float)(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2)));
  }
}

void randn(bf16* p, int64_t n, uint64_t seed, cudaStream_t s) {
  randn_bf16_kernel<<<1024, 256, 0, s>>>(p, n, seed);
  CUDA_CHECK_LAST();
}

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

std::vector<float> download_bf16(const void* d, size_t n) {
  std::vector<bf16> tmp(n);
  CUDA_CHECK(cudaMemcpy(tmp.data(), d, n * sizeof(bf16), cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = __bfloat162float(tmp[i]);
  return out;
}

// ||got - ref|| / ||ref|| over elements [lo, lo + len) of every `stride`-long row.
double rel_l2(const std::vector<float>& got, const std::vector<float>& ref, size_t stride, size_t lo, size_t len) {
  double e = 0, r = 0;
  for (size_t row = 0; row * stride < ref.size(); ++row)
    for (size_t i = row * stride + lo; i < row * stride + lo + len; ++i) {
      if (!std::isfinite(got[i])) return INFINITY;
      e += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
      r += (double)ref[i] * ref[i];
    }
  return r > 0 ? std::sqrt(e / r) : std::sqrt(e);
}

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
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

// The flash kernels against the fallback on one (B=1) problem; returns the worst relative L2
// error of the forward output (fwd) and of dq, dk, dv (bwd).
void check_against_naive(int T, int NH, int D, uint64_t seed, cudaStream_t s, double* fwd_err, double* bwd_err) {
  const int C = NH * D;
  const size_t n_qkv = (size_t)T * 3 * C, n_out = (size_t)T * C;
  DeviceMem qkv(n_qkv * 2), out(n_out * 2), ref_out(n_out * 2), dout(n_out * 2), dqkv(n_qkv * 2),
      ref_dqkv(n_qkv * 2), lse((size_t)NH * T * 4), att((size_t)NH * T * T * 4),
      scratch(std::max(lt::cuda::attention_backward_scratch_bytes(1, T, NH),
                       lt::cuda::attention_naive_backward_scratch_bytes(1, T, NH)));
  randn(qkv.as<bf16>(), (int64_t)n_qkv, seed, s);
  randn(dout.as<bf16>(), (int64_t)n_out, seed + 7, s);
  CUDA_CHECK(cudaMemsetAsync(out.p, 0xFF, n_out * 2, s));  // poison: NaN
  CUDA_CHECK(cudaMemsetAsync(dqkv.p, 0xFF, n_qkv * 2, s));
  lt::cuda::attention_naive_forward<bf16>(ref_out.as<bf16>(), att.as<float>(), qkv.as<bf16>(), 1, T, C, NH, s);
  lt::cuda::attention_naive_backward<bf16>(ref_dqkv.as<bf16>(), scratch.p, dout.as<bf16>(), qkv.as<bf16>(),
                                           att.as<float>(), 1, T, C, NH, s);
  lt::cuda::attention_forward(out.as<bf16>(), lse.as<float>(), qkv.as<bf16>(), 1, T, C, NH, s);
  lt::cuda::attention_backward(dqkv.as<bf16>(), scratch.p, dout.as<bf16>(), out.as<bf16>(), lse.as<float>(),
                               qkv.as<bf16>(), 1, T, C, NH, s);
  CUDA_CHECK(cudaStreamSynchronize(s));
  const auto o = download_bf16(out.p, n_out), ro = download_bf16(ref_out.p, n_out);
  const auto g = download_bf16(dqkv.p, n_qkv), rg = download_bf16(ref_dqkv.p, n_qkv);
  *fwd_err = rel_l2(o, ro, C, 0, C);
  *bwd_err = 0;
  for (int part = 0; part < 3; ++part) *bwd_err = std::max(*bwd_err, rel_l2(g, rg, 3 * (size_t)C, part * (size_t)C, C));
}

}  // namespace

std::vector<AttentionBenchConfig> attention_bench_configs(const std::vector<int>& head_dims, int max_T) {
  std::vector<AttentionBenchConfig> out;
  for (int D : head_dims)
    for (int T = 512; T <= max_T; T *= 2) {
      AttentionBenchConfig c;
      c.head_dim = D;
      c.NH = 2048 / D;
      c.T = T;
      c.B = std::max(1, 16384 / T);
      out.push_back(c);
    }
  return out;
}

AttentionBenchReport bench_attention(const std::vector<AttentionBenchConfig>& configs) {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    (void)cudaGetLastError();
    throw std::runtime_error("bench attention: no CUDA device");
  }
  for (const AttentionBenchConfig& c : configs)
    if (!lt::cuda::attention_supported(c.head_dim))
      throw std::runtime_error("bench attention: no flash kernel for head dim " + std::to_string(c.head_dim) +
                               " (64 and 128)");
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  int clock_khz = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev));

  AttentionBenchReport rep;
  rep.device = prop.name;
  rep.sm_count = prop.multiProcessorCount;
  rep.clock_mhz = clock_khz / 1000;
  rep.flops_per_clk_sm = bf16_flops_per_clock_per_sm(prop.major, prop.minor);
  rep.peak_tflops = (double)rep.sm_count * rep.flops_per_clk_sm * clock_khz * 1e3 / 1e12;

  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  const size_t flush_bytes = std::max<size_t>(2 * (size_t)prop.l2CacheSize, 1 << 20);
  DeviceMem flush(flush_bytes);
  const uint64_t seed = (uint64_t)std::chrono::steady_clock::now().time_since_epoch().count();

  for (const AttentionBenchConfig& cfg : configs) {
    const int B = cfg.B, T = cfg.T, NH = cfg.NH, D = cfg.head_dim, C = NH * D;
    const int check_T = std::min(T, 2048), check_NH = std::min(NH, 4);
    double fwd_err = 0, bwd_err = 0;
    check_against_naive(check_T, check_NH, D, seed + T * 131 + D, stream, &fwd_err, &bwd_err);

    const size_t n_qkv = (size_t)B * T * 3 * C, n_out = (size_t)B * T * C;
    DeviceMem qkv(n_qkv * 2), out(n_out * 2), dout(n_out * 2), dqkv(n_qkv * 2), lse((size_t)B * NH * T * 4),
        scratch(lt::cuda::attention_backward_scratch_bytes(B, T, NH));
    randn(qkv.as<bf16>(), (int64_t)n_qkv, seed + 1, stream);
    randn(dout.as<bf16>(), (int64_t)n_out, seed + 2, stream);
    auto fwd = [&] {
      lt::cuda::attention_forward(out.as<bf16>(), lse.as<float>(), qkv.as<bf16>(), B, T, C, NH, stream);
    };
    auto bwd = [&] {
      lt::cuda::attention_backward(dqkv.as<bf16>(), scratch.p, dout.as<bf16>(), out.as<bf16>(), lse.as<float>(),
                                   qkv.as<bf16>(), B, T, C, NH, stream);
    };
    const double fwd_flop = 4.0 * B * (double)T * T * NH * D / 2;  // causal: half the scores
    for (int pass = 0; pass < (cfg.backward ? 2 : 1); ++pass) {
      AttentionBenchRow row;
      row.pass = pass == 0 ? "fwd" : "bwd";
      row.B = B, row.T = T, row.NH = NH, row.D = D;
      row.check_T = check_T, row.check_NH = check_NH;
      row.rel_err = pass == 0 ? fwd_err : bwd_err;
      row.correct = row.rel_err <= 2e-2;
      if (pass == 1) {  // the backward reads the forward's out and lse
        fwd();
        CUDA_CHECK(cudaStreamSynchronize(stream));
      }
      const Timing t = time_runs(pass == 0 ? std::function<void()>(fwd) : std::function<void()>(bwd),
                                 cfg.flush_l2 ? flush.p : nullptr, flush_bytes, cfg.warmup, cfg.iters, stream);
      row.median_ms = t.median_ms, row.min_ms = t.min_ms, row.max_ms = t.max_ms;
      const double flop = pass == 0 ? fwd_flop : 2.5 * fwd_flop;
      row.tflops = flop / (t.median_ms * 1e-3) / 1e12;
      row.pct_peak = rep.peak_tflops > 0 ? 100.0 * row.tflops / rep.peak_tflops : 0;
      rep.rows.push_back(row);
    }
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
  return rep;
}

void print_attention_bench(const AttentionBenchReport& r, std::FILE* out) {
  std::fprintf(out, "# %s: %d SMs, clock %d MHz, dense bf16 peak %.1f TFLOP/s (%d FLOP/clk/SM%s)\n", r.device.c_str(),
               r.sm_count, r.clock_mhz, r.peak_tflops, r.flops_per_clk_sm,
               r.flops_per_clk_sm ? "" : ": unknown arch, no % of peak");
  std::fprintf(out, "# causal flash attention; FLOPs as FlashAttention-2: fwd 4*B*T^2*NH*D/2, bwd 2.5x fwd\n");
  std::fprintf(out, "%-4s %4s %6s %4s %4s %10s %9s %7s %9s %s\n", "pass", "B", "T", "NH", "D", "median_ms", "TFLOP/s",
               "%peak", "rel_err", "ok");
  for (const AttentionBenchRow& x : r.rows)
    std::fprintf(out, "%-4s %4d %6d %4d %4d %10.4f %9.1f %7.1f %9.2e %s\n", x.pass.c_str(), x.B, x.T, x.NH, x.D,
                 x.median_ms, x.tflops, x.pct_peak, x.rel_err, x.correct ? "yes" : "NO");
}

}  // namespace lt::bench
