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
#include "benchmarks/cuda/bench_util.cuh"
#include "kernels/cuda/common.cuh"

namespace lt::bench {
namespace {

using lt::cuda::bf16;

// The flash kernels against the fallback on a B x T x NH problem; returns the worst relative L2
// error of the mma.sync forward's output (fwd), of dq, dk, dv (bwd) and, when `hopper_err` and
// `hopper_bwd_err` are not null, the same for the Hopper kernels.
void check_against_naive(int B, int T, int NH, int D, uint64_t seed, cudaStream_t s, double* fwd_err,
                         double* bwd_err, double* hopper_err, double* hopper_bwd_err) {
  const int C = NH * D;
  const size_t n_qkv = (size_t)B * T * 3 * C, n_out = (size_t)B * T * C;
  DeviceMem qkv(n_qkv * 2), out(n_out * 2), ref_out(n_out * 2), dout(n_out * 2), dqkv(n_qkv * 2),
      ref_dqkv(n_qkv * 2), lse((size_t)B * NH * T * 4), att((size_t)B * NH * T * T * 4),
      scratch(std::max(lt::cuda::attention_backward_scratch_bytes(B, T, NH),
                       lt::cuda::attention_naive_backward_scratch_bytes(B, T, NH)));
  fill_randn(qkv.as<bf16>(), (int64_t)n_qkv, seed, s);
  fill_randn(dout.as<bf16>(), (int64_t)n_out, seed + 7, s);
  CUDA_CHECK(cudaMemsetAsync(out.p, 0xFF, n_out * 2, s));  // poison: NaN
  CUDA_CHECK(cudaMemsetAsync(dqkv.p, 0xFF, n_qkv * 2, s));
  lt::cuda::attention_naive_forward<bf16>(ref_out.as<bf16>(), att.as<float>(), qkv.as<bf16>(), B, T, C, NH, s);
  lt::cuda::attention_naive_backward<bf16>(ref_dqkv.as<bf16>(), scratch.p, dout.as<bf16>(), qkv.as<bf16>(),
                                           att.as<float>(), B, T, C, NH, s);
  lt::cuda::attention_forward_mma_sync(out.as<bf16>(), lse.as<float>(), qkv.as<bf16>(), B, T, C, NH, s);
  lt::cuda::attention_backward_mma_sync(dqkv.as<bf16>(), scratch.p, dout.as<bf16>(), out.as<bf16>(),
                                        lse.as<float>(), qkv.as<bf16>(), B, T, C, NH, s);
  CUDA_CHECK(cudaStreamSynchronize(s));
  const auto o = download_bf16(out.p, n_out), ro = download_bf16(ref_out.p, n_out);
  const auto g = download_bf16(dqkv.p, n_qkv), rg = download_bf16(ref_dqkv.p, n_qkv);
  *fwd_err = rel_l2(o, ro, C, 0, C);
  *bwd_err = 0;
  for (int part = 0; part < 3; ++part) *bwd_err = std::max(*bwd_err, rel_l2(g, rg, 3 * (size_t)C, part * (size_t)C, C));
  if (hopper_err) {
    CUDA_CHECK(cudaMemsetAsync(out.p, 0xFF, n_out * 2, s));
    lt::cuda::attention_forward_hopper(out.as<bf16>(), lse.as<float>(), qkv.as<bf16>(), B, T, C, NH, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    *hopper_err = rel_l2(download_bf16(out.p, n_out), ro, C, 0, C);
  }
  if (hopper_bwd_err) {
    CUDA_CHECK(cudaMemsetAsync(dqkv.p, 0xFF, n_qkv * 2, s));
    lt::cuda::attention_backward_hopper(dqkv.as<bf16>(), scratch.p, dout.as<bf16>(), out.as<bf16>(),
                                        lse.as<float>(), qkv.as<bf16>(), B, T, C, NH, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    const auto h = download_bf16(dqkv.p, n_qkv);
    *hopper_bwd_err = 0;
    for (int part = 0; part < 3; ++part)
      *hopper_bwd_err = std::max(*hopper_bwd_err, rel_l2(h, rg, 3 * (size_t)C, part * (size_t)C, C));
  }
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
  const DevicePeak dp = current_device_peak("bench attention");
  for (const AttentionBenchConfig& c : configs)
    if (!lt::cuda::attention_supported(c.head_dim))
      throw std::runtime_error("bench attention: no flash kernel for head dim " + std::to_string(c.head_dim) +
                               " (64 and 128)");
  AttentionBenchReport rep;
  static_cast<DevicePeak&>(rep) = dp;
  const bool hopper = lt::cuda::attention_hopper_available();

  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  const size_t flush_bytes = std::max<size_t>(2 * dp.l2_bytes, 1 << 20);
  DeviceMem flush(flush_bytes);
  const uint64_t seed = (uint64_t)std::chrono::steady_clock::now().time_since_epoch().count();

  for (const AttentionBenchConfig& cfg : configs) {
    const int B = cfg.B, T = cfg.T, NH = cfg.NH, D = cfg.head_dim, C = NH * D;
    // The check keeps the fallback's T x T probabilities within ~128 MB: two sequences (the
    // batch stride is exercised), up to 4 heads, up to 2048 positions.
    const int check_B = std::min(B, 2), check_T = std::min(T, 2048), check_NH = std::min(NH, 4);
    double fwd_err = 0, bwd_err = 0, hopper_err = 0, hopper_bwd_err = 0;
    check_against_naive(check_B, check_T, check_NH, D, seed + T * 131 + D, stream, &fwd_err, &bwd_err,
                        hopper ? &hopper_err : nullptr, hopper ? &hopper_bwd_err : nullptr);

    const size_t n_qkv = (size_t)B * T * 3 * C, n_out = (size_t)B * T * C;
    DeviceMem qkv(n_qkv * 2), out(n_out * 2), dout(n_out * 2), dqkv(n_qkv * 2), lse((size_t)B * NH * T * 4),
        scratch(lt::cuda::attention_backward_scratch_bytes(B, T, NH));
    fill_randn(qkv.as<bf16>(), (int64_t)n_qkv, seed + 1, stream);
    fill_randn(dout.as<bf16>(), (int64_t)n_out, seed + 2, stream);
    struct Variant {
      const char* pass;
      const char* kernel;
      double rel_err;
      std::function<void()> run;
    };
    // The mma.sync forward by name, the Hopper forward beside it where it runs, then the backward
    // (which reads the forward's out and lse: attention_forward's, the kernel the trainer runs).
    std::vector<Variant> variants;
    variants.push_back({"fwd", "mma.sync", fwd_err, [&] {
                          lt::cuda::attention_forward_mma_sync(out.as<bf16>(), lse.as<float>(), qkv.as<bf16>(), B, T,
                                                               C, NH, stream);
                        }});
    if (hopper)
      variants.push_back({"fwd", "wgmma", hopper_err, [&] {
                            lt::cuda::attention_forward_hopper(out.as<bf16>(), lse.as<float>(), qkv.as<bf16>(), B,
                                                               T, C, NH, stream);
                          }});
    if (cfg.backward)
      variants.push_back({"bwd", "mma.sync", bwd_err, [&] {
                            lt::cuda::attention_backward_mma_sync(dqkv.as<bf16>(), scratch.p, dout.as<bf16>(),
                                                                  out.as<bf16>(), lse.as<float>(), qkv.as<bf16>(), B,
                                                                  T, C, NH, stream);
                          }});
    if (cfg.backward && hopper)
      variants.push_back({"bwd", "wgmma", hopper_bwd_err, [&] {
                            lt::cuda::attention_backward_hopper(dqkv.as<bf16>(), scratch.p, dout.as<bf16>(),
                                                                out.as<bf16>(), lse.as<float>(), qkv.as<bf16>(), B, T,
                                                                C, NH, stream);
                          }});
    const size_t first = rep.rows.size();
    for (const Variant& v : variants) {
      AttentionBenchRow row;
      row.pass = v.pass;
      row.kernel = v.kernel;
      row.B = B, row.T = T, row.NH = NH, row.D = D;
      row.check_B = check_B, row.check_T = check_T, row.check_NH = check_NH;
      row.rel_err = v.rel_err;
      row.correct = row.rel_err <= 2e-2;
      const bool bwd = row.pass == "bwd";
      if (bwd) {
        lt::cuda::attention_forward(out.as<bf16>(), lse.as<float>(), qkv.as<bf16>(), B, T, C, NH, stream);
        CUDA_CHECK(cudaStreamSynchronize(stream));
      }
      const Timing t = time_runs(v.run, cfg.flush_l2 ? flush.p : nullptr, flush_bytes, cfg.warmup, cfg.iters, stream);
      row.median_ms = t.median_ms, row.min_ms = t.min_ms, row.max_ms = t.max_ms;
      const double flop = attention_flops(B, T, NH, D, bwd);
      row.tflops = flop / (t.median_ms * 1e-3) / 1e12;
      row.pct_peak = rep.peak_tflops > 0 ? 100.0 * row.tflops / rep.peak_tflops : 0;
      rep.rows.push_back(row);
    }
    for (size_t i = first; i < rep.rows.size(); ++i)
      for (size_t k = first; k < rep.rows.size(); ++k)
        if (rep.rows[k].pass == rep.rows[i].pass && rep.rows[k].kernel == "mma.sync")
          rep.rows[i].vs_mma = rep.rows[k].median_ms / rep.rows[i].median_ms;
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
  return rep;
}

void print_attention_bench(const AttentionBenchReport& r, std::FILE* out) {
  std::fprintf(out, "# %s: %d SMs, clock %d MHz, dense bf16 peak %.1f TFLOP/s (%d FLOP/clk/SM%s)\n", r.device.c_str(),
               r.sm_count, r.clock_mhz, r.peak_tflops, r.flops_per_clk_sm,
               r.flops_per_clk_sm ? "" : ": unknown arch, no % of peak");
  std::fprintf(out, "# causal flash attention; FLOPs as FlashAttention-2: fwd 4*B*T^2*NH*D/2, bwd 2.5x fwd\n");
  std::fprintf(out, "%-4s %-8s %4s %6s %4s %4s %10s %9s %7s %6s %9s %s\n", "pass", "kernel", "B", "T", "NH", "D",
               "median_ms", "TFLOP/s", "%peak", "x_mma", "rel_err", "ok");
  for (const AttentionBenchRow& x : r.rows)
    std::fprintf(out, "%-4s %-8s %4d %6d %4d %4d %10.4f %9.1f %7.1f %6.2f %9.2e %s\n", x.pass.c_str(),
                 x.kernel.c_str(), x.B, x.T, x.NH, x.D, x.median_ms, x.tflops, x.pct_peak, x.vs_mma, x.rel_err,
                 x.correct ? "yes" : "NO");
}

}  // namespace lt::bench
