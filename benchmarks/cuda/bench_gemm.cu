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
#include "benchmarks/cuda/bench_util.cuh"
#include "kernels/cuda/common.cuh"

namespace lt::bench {
namespace {

using lt::cuda::bf16;
using lt::cuda::DataType;
using lt::cuda::GemmArgs;
using lt::cuda::GemmPath;
using lt::cuda::Layout;

const char* layout_name(Layout l) { return l == Layout::NT ? "NT" : l == Layout::NN ? "NN" : "TN"; }

}  // namespace

GemmBenchReport bench_gemm(const std::vector<GemmBenchConfig>& configs) {
  const DevicePeak dp = current_device_peak("bench gemm");
  GemmBenchReport rep;
  static_cast<DevicePeak&>(rep) = dp;

  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("bench gemm: cublasCreate failed");
  const size_t flush_bytes = std::max<size_t>(2 * dp.l2_bytes, 1 << 20);
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
      std::string name, tile;
      std::function<void()> run;
    };
    std::vector<Variant> variants;
    args.C = C.p;
    auto add_mma = [&](lt::cuda::GemmTile tile) {
      GemmArgs mma = args;
      mma.path = GemmPath::MmaSync;
      mma.tile = tile;
      const std::string name = tile == lt::cuda::GemmTile::Auto ? "mma.sync" : std::string("mma.sync/") + to_string(tile);
      variants.push_back({name, to_string(lt::cuda::gemm_tile(mma)), [mma, stream] {
                            if (lt::cuda::gemm(mma, stream) != GemmPath::MmaSync)
                              throw std::runtime_error("bench gemm: mma.sync path not taken");
                          }});
    };
    if (lt::cuda::gemm_wgmma_available()) {  // Hopper: what the trainer runs there
      GemmArgs wg = args;
      wg.path = GemmPath::Wgmma;
      variants.push_back({"wgmma", "128x256x64", [wg, stream] {
                            if (lt::cuda::gemm(wg, stream) != GemmPath::Wgmma)
                              throw std::runtime_error("bench gemm: wgmma path not taken");
                          }});
    }
    add_mma(lt::cuda::GemmTile::Auto);  // what the trainer runs elsewhere
    if (cfg.all_tiles)
      for (lt::cuda::GemmTile t : lt::cuda::kGemmTiles) add_mma(t);
    if (cfg.include_simt) {
      GemmArgs simt = args;
      simt.path = GemmPath::Simt;
      variants.push_back({"simt", "", [simt, stream] { lt::cuda::gemm(simt, stream); }});
    }
    variants.push_back(
        {"cublas", "", [args, handle, stream] { lt::cuda::gemm_cublas(args, handle, nullptr, 0, stream); }});

    const double flop = 2.0 * cfg.M * cfg.N * cfg.K;
    const size_t first = rep.rows.size();
    double cublas_ms = 0, mma_ms = 0;
    for (const Variant& v : variants) {
      GemmBenchRow row;
      row.kernel = v.name;
      row.tile = v.tile;
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
      if (v.name == "mma.sync") mma_ms = t.median_ms;
      rep.rows.push_back(row);
    }
    for (size_t i = first; i < rep.rows.size(); ++i) {
      rep.rows[i].vs_cublas = cublas_ms / rep.rows[i].median_ms;
      rep.rows[i].vs_mma = mma_ms / rep.rows[i].median_ms;
    }
  }
  cublasDestroy(handle);
  CUDA_CHECK(cudaStreamDestroy(stream));
  return rep;
}

void print_gemm_bench(const GemmBenchReport& r, std::FILE* out) {
  std::fprintf(out, "# %s: %d SMs, clock %d MHz, dense bf16 peak %.1f TFLOP/s (%d FLOP/clk/SM%s)\n",
               r.device.c_str(), r.sm_count, r.clock_mhz, r.peak_tflops, r.flops_per_clk_sm,
               r.flops_per_clk_sm ? "" : ": unknown arch, no % of peak");
  std::fprintf(out, "%-19s %-10s %-3s %6s %6s %6s %10s %9s %7s %9s %7s %9s %s\n", "kernel", "tile", "lay", "M", "N",
               "K", "median_ms", "TFLOP/s", "%peak", "x_cublas", "x_mma", "rel_err", "ok");
  for (const GemmBenchRow& x : r.rows)
    std::fprintf(out, "%-19s %-10s %-3s %6d %6d %6d %10.4f %9.1f %7.1f %9.3f %7.3f %9.2e %s\n", x.kernel.c_str(),
                 x.tile.empty() ? "-" : x.tile.c_str(), layout_name(x.layout), x.M, x.N, x.K, x.median_ms, x.tflops,
                 x.pct_peak, x.vs_cublas, x.vs_mma, x.rel_err, x.correct ? "yes" : "NO");
}

}  // namespace lt::bench
