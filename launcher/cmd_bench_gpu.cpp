// `leasetrain bench gemm` and `bench attention` (see cmd_bench_gpu.h).
#include "launcher/cmd_bench_gpu.h"

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "launcher/cli_checks.h"
#include "launcher/commands.h"
#include "lease/manifest.h"
#include "runtime/backend.h"
#include "runtime/error.h"

#ifdef LEASETRAIN_HAVE_CUDA
#include "benchmarks/cuda/bench_attention.h"
#include "benchmarks/cuda/bench_gemm.h"
#endif

namespace lt::cli {

namespace {

using json = nlohmann::json;

// One line and exit status 1 when this run cannot time anything on a GPU.
void require_gpu(const char* what) {
  std::string why;
  if (cuda_available(&why)) return;
  std::fflush(stdout);
#ifdef LEASETRAIN_HAVE_CUDA
  std::fprintf(stderr, "leasetrain: bench %s: no CUDA device (%s); nothing to time\n", what, why.c_str());
#else
  std::fprintf(stderr, "leasetrain: bench %s: this build has no CUDA (the CUDA toolkit was not found when it was "
               "configured)\n", what);
#endif
  std::exit(1);
}

int parse_positive(const std::string& flag, const std::string& v) {
  size_t used = 0;
  long x = 0;
  try {
    x = std::stol(v, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != v.size() || x < 1 || x > 65536)
    throw UserError(flag + ": expected an integer from 1 to 65536, got '" + v + "'");
  return (int)x;
}

struct GemmCli {
  std::vector<std::string> shapes = {"4096x4096x4096", "8192x2304x768", "8192x3072x768", "8192x768x3072",
                                     "8192x50304x768"};
  std::string layouts = "NT,NN,TN", json_out;
  int warmup = 5, iters = 50;
  bool simt = false, tiles = false, no_flush = false;
};

struct AttnCli {
  std::string head_dims = "64,128", json_out;
  int max_seq = 8192, warmup = 3, iters = 20;
  bool no_backward = false, no_flush = false;
};

}  // namespace

void add_gpu_bench_commands(CLI::App* bench) {
  auto g = std::make_shared<GemmCli>();
  CLI::App* gc = bench->add_subcommand("gemm", "Time the hand-written CUDA GEMM against cuBLAS (bf16, fp32 accumulation)");
  gc->footer(
      "Each shape MxNxK in each layout (NT: forward C = A B^T, NN: input gradient, TN: weight gradient; see "
      "kernels/cuda/gemm.h) on random N(0,1) bf16 data: the mma.sync kernel, on an H100/H200 also the wgmma/TMA kernel "
      "(and with --simt the SIMT fallback), is "
      "checked against cuBLAS first (relative L2 error <= 1e-2), then timed with CUDA events on one stream, the L2 "
      "cache flushed before every run; rows report the median. TFLOP/s = 2MNK / median; % of the dense bf16 peak "
      "from the SM count and maximum clock; x_cublas = cuBLAS median / this median, x_mma = the mma.sync row's median / "
      "this median. The default shapes are the "
      "4096^3 target and GPT-2 124M's training GEMMs at 8192 tokens. Exit status 1 without a CUDA device.");
  gc->add_option("--shape", g->shapes, "MxNxK, repeatable")->capture_default_str();
  gc->add_option("--layouts", g->layouts, "Comma-separated subset of NT,NN,TN")->capture_default_str();
  gc->add_option("--warmup", g->warmup, "Untimed runs first")->check(in_range(0, 1000000))->capture_default_str();
  gc->add_option("--iters", g->iters, "Timed runs (median reported)")->check(in_range(1, 1000000))->capture_default_str();
  gc->add_flag("--simt", g->simt, "Also time the SIMT fallback (slow)");
  gc->add_flag("--tiles", g->tiles,
               "Also time the mma.sync kernel forced to each CTA tile (rows mma.sync/<tile>); the plain mma.sync row "
               "is the tile gemm() picks, which the trainer runs");
  gc->add_flag("--no-flush", g->no_flush, "Keep the L2 cache warm between timed runs");
  gc->add_option("--json", g->json_out, "Also write the results as JSON to this file ('-' for stdout)");
  gc->callback([g] {
    struct Shape {
      int M, N, K;
    };
    std::vector<Shape> shapes;
    for (const std::string& s : g->shapes) {
      const std::vector<std::string> d = lease::split(s, 'x');
      if (d.size() != 3) throw UserError("--shape: expected MxNxK such as 4096x4096x4096, got '" + s + "'");
      const Shape sh{parse_positive("--shape", d[0]), parse_positive("--shape", d[1]), parse_positive("--shape", d[2])};
      // Each operand (M x K, N x K, M x N) must be indexable by int in the kernels.
      for (int64_t n : {(int64_t)sh.M * sh.K, (int64_t)sh.N * sh.K, (int64_t)sh.M * sh.N})
        if (n > std::numeric_limits<int32_t>::max())
          throw UserError("--shape: " + s + ": an operand of " + std::to_string(n) + " elements exceeds 2^31-1");
      shapes.push_back(sh);
    }
    const std::vector<std::string> layouts = lease::split(g->layouts, ',');
    for (const std::string& l : layouts)
      if (l != "NT" && l != "NN" && l != "TN") throw UserError("--layouts: expected NT, NN or TN, got '" + l + "'");
    if (layouts.empty()) throw UserError("--layouts: expected at least one of NT, NN, TN");
    require_gpu("gemm");
#ifdef LEASETRAIN_HAVE_CUDA
    std::vector<bench::GemmBenchConfig> cfgs;
    for (const Shape& s : shapes)
      for (const std::string& l : layouts) {
        bench::GemmBenchConfig c;
        c.M = s.M, c.N = s.N, c.K = s.K;
        c.layout = l == "NT" ? cuda::Layout::NT : l == "NN" ? cuda::Layout::NN : cuda::Layout::TN;
        c.warmup = g->warmup;
        c.iters = g->iters;
        c.flush_l2 = !g->no_flush;
        c.include_simt = g->simt;
        c.all_tiles = g->tiles;
        cfgs.push_back(c);
      }
    const bench::GemmBenchReport r = bench::bench_gemm(cfgs);
    bench::print_gemm_bench(r, stdout);
    std::fflush(stdout);
    json rows = json::array();
    bool all_ok = true;
    for (const bench::GemmBenchRow& x : r.rows) {
      all_ok = all_ok && x.correct;
      rows.push_back({{"kernel", x.kernel}, {"tile", x.tile},
                      {"layout", x.layout == cuda::Layout::NT ? "NT" : x.layout == cuda::Layout::NN ? "NN" : "TN"},
                      {"M", x.M}, {"N", x.N}, {"K", x.K}, {"median_ms", x.median_ms}, {"min_ms", x.min_ms},
                      {"max_ms", x.max_ms}, {"tflops", x.tflops}, {"pct_peak", x.pct_peak},
                      {"vs_cublas", x.vs_cublas}, {"vs_mma", x.vs_mma}, {"rel_err", x.rel_err},
                      {"correct", x.correct}});
    }
    if (!g->json_out.empty())
      write_json_output(g->json_out, json{{"bench", "gemm"}, {"device", r.device}, {"sm_count", r.sm_count},
                                 {"clock_mhz", r.clock_mhz}, {"flops_per_clk_sm", r.flops_per_clk_sm},
                                 {"peak_tflops", r.peak_tflops}, {"dtype", "bf16"}, {"warmup", g->warmup},
                                 {"iters", g->iters}, {"l2_flushed", !g->no_flush}, {"rows", rows}});
    if (!all_ok) {
      std::fprintf(stderr, "leasetrain: bench gemm: a kernel disagrees with cuBLAS (see the ok column)\n");
      std::exit(1);
    }
#endif
  });

  auto a = std::make_shared<AttnCli>();
  CLI::App* ac = bench->add_subcommand("attention", "Time the hand-written causal flash attention (bf16), forward and backward");
  ac->footer(
      "FlashAttention-2's grid: hidden size NH*D = 2048 and B*T = 16384 tokens, T from 512 to --max-seq, for each "
      "head dim. Each shape is first checked against the fallback kernels (fp32 arithmetic on the same bf16 inputs, "
      "up to 2 sequences of 4 heads, T up to 2048), then timed with CUDA events on one stream, the L2 cache flushed before "
      "every run; rows report the median. FLOPs as FlashAttention-2: forward 4*B*T^2*NH*D halved for the causal "
      "mask, backward 2.5x the forward; % of the dense bf16 peak from the SM count and maximum clock. Rows per pass: "
      "the mma.sync kernels and, on a compute capability 9.0 GPU with sm_90a code, the Hopper kernels (wgmma + "
      "TMA, what the trainer runs there); x_mma = the mma.sync row's median / this median. Exit status 1 without a "
      "CUDA device.");
  ac->add_option("--head-dim", a->head_dims, "Comma-separated head dims (64, 128)")->capture_default_str();
  ac->add_option("--max-seq", a->max_seq, "Longest sequence (powers of two from 512)")
      ->check(in_range(512, 65536))->capture_default_str();
  ac->add_option("--warmup", a->warmup, "Untimed runs first")->check(in_range(0, 1000000))->capture_default_str();
  ac->add_option("--iters", a->iters, "Timed runs (median reported)")->check(in_range(1, 1000000))->capture_default_str();
  ac->add_flag("--no-backward", a->no_backward, "Forward only");
  ac->add_flag("--no-flush", a->no_flush, "Keep the L2 cache warm between timed runs");
  ac->add_option("--json", a->json_out, "Also write the results as JSON to this file ('-' for stdout)");
  ac->callback([a] {
    std::vector<int> dims;
    for (const std::string& d : lease::split(a->head_dims, ',')) {
      const int v = parse_positive("--head-dim", d);
      if (v != 64 && v != 128) throw UserError("--head-dim: the flash kernels take 64 or 128, got " + d);
      dims.push_back(v);
    }
    if (dims.empty()) throw UserError("--head-dim: expected 64, 128 or both");
    require_gpu("attention");
#ifdef LEASETRAIN_HAVE_CUDA
    std::vector<bench::AttentionBenchConfig> cfgs = bench::attention_bench_configs(dims, a->max_seq);
    for (auto& c : cfgs) {
      c.warmup = a->warmup;
      c.iters = a->iters;
      c.backward = !a->no_backward;
      c.flush_l2 = !a->no_flush;
    }
    const bench::AttentionBenchReport r = bench::bench_attention(cfgs);
    bench::print_attention_bench(r, stdout);
    std::fflush(stdout);
    json rows = json::array();
    bool all_ok = true;
    for (const bench::AttentionBenchRow& x : r.rows) {
      all_ok = all_ok && x.correct;
      rows.push_back({{"pass", x.pass}, {"kernel", x.kernel}, {"vs_mma", x.vs_mma}, {"B", x.B}, {"T", x.T}, {"NH", x.NH}, {"D", x.D}, {"causal", true},
                      {"median_ms", x.median_ms}, {"min_ms", x.min_ms}, {"max_ms", x.max_ms}, {"tflops", x.tflops},
                      {"pct_peak", x.pct_peak}, {"rel_err", x.rel_err}, {"check_B", x.check_B}, {"check_T", x.check_T},
                      {"check_NH", x.check_NH}, {"correct", x.correct}});
    }
    if (!a->json_out.empty())
      write_json_output(a->json_out, json{{"bench", "attention"}, {"device", r.device}, {"sm_count", r.sm_count}, {"clock_mhz", r.clock_mhz},
                    {"flops_per_clk_sm", r.flops_per_clk_sm}, {"peak_tflops", r.peak_tflops},
                    {"flops_convention", "FlashAttention-2: fwd 4*B*T^2*NH*D / 2 (causal), bwd 2.5x fwd"},
                    {"warmup", a->warmup}, {"iters", a->iters}, {"l2_flushed", !a->no_flush}, {"rows", rows}});
    if (!all_ok) {
      std::fprintf(stderr, "leasetrain: bench attention: a kernel disagrees with the reference (see the ok column)\n");
      std::exit(1);
    }
#endif
  });
}

}  // namespace lt::cli
