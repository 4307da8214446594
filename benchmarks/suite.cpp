// `bench suite` (see suite.h).
#include "benchmarks/suite.h"

#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>

#include "benchmarks/bench_step.h"
#include "benchmarks/compare.h"
#include "benchmarks/machine.h"
#include "runtime/backend.h"
#include "runtime/dist_env.h"
#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/model.h"
#include "runtime/optim.h"
#include "runtime/rng.h"

#ifdef LEASETRAIN_HAVE_CUDA
#include "benchmarks/cuda/bench_attention.h"
#include "benchmarks/cuda/bench_gemm.h"
#include "benchmarks/cuda/device_info.h"
#endif

namespace lt::bench {

using json = nlohmann::json;

json make_row(const std::string& suite, const std::string& impl, const std::string& device, const json& params,
              const std::string& primary) {
  std::string id = suite + "/" + device + "/" + impl;
  for (const auto& [k, v] : params.items()) id += "/" + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  return json{{"id", id},         {"suite", suite},   {"impl", impl},      {"device", device},
              {"params", params}, {"status", "ok"},   {"reason", ""},      {"primary", primary},
              {"metrics", json::object()}};
}

void put_stats(json& row, double median_ms, double min_ms, double max_ms, int runs) {
  json& m = row["metrics"];
  m["median_ms"] = median_ms;
  m["min_ms"] = min_ms;
  m["max_ms"] = max_ms;
  m["spread"] = median_ms > 0 ? (max_ms - min_ms) / median_ms : 0.0;
  m["runs"] = runs;
}

void put_timing(json& row, std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  put_stats(row, n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]), ms.front(), ms.back(), (int)n);
}

namespace {

json skipped(json row, const std::string& why) {
  row["status"] = "skipped";
  row["reason"] = why;
  return row;
}

json failed(json row, const std::string& why) {
  row["status"] = "failed";
  row["reason"] = why;
  return row;
}

// Evicts the CPU caches between timed runs: writes a buffer of twice the last-level cache.
struct CacheFlusher {
  std::vector<char> buf;
  CacheFlusher() {
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0) llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
    buf.resize(std::max<long>(2 * llc, 8l << 20));
  }
  void flush() {
    static char v = 0;
    v++;
    char* p = buf.data();
    const int64_t n = (int64_t)buf.size();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += 64) p[i] = v;
  }
};

using Clock = std::chrono::steady_clock;

template <class F>
std::vector<double> time_cpu(F&& fn, int warmup, int runs, CacheFlusher& flusher) {
  for (int i = 0; i < warmup; i++) fn();
  std::vector<double> ms;
  for (int i = 0; i < runs; i++) {
    flusher.flush();
    const auto t0 = Clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return ms;
}

void fill_randn(const Tensor& t, uint64_t seed) {
  Rng rng(seed);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); i++) p[i] = (float)rng.normal();
}

double rel_err(const float* x, const float* ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    num += ((double)x[i] - ref[i]) * ((double)x[i] - ref[i]);
    den += (double)ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct Shape {
  std::string name;  // "square", "124m.qkv", ...
  int M, N, K;       // C[M,N] = A[M,K] B[N,K]^T (a linear layer's forward: M tokens, N out, K in)
};

// The GPT-2 linear layers' forward GEMMs at `tokens` rows.
std::vector<Shape> model_shapes(const std::string& model, int C, int tokens, bool with_head) {
  std::vector<Shape> s = {{model + ".qkv", tokens, 3 * C, C},
                          {model + ".attn_proj", tokens, C, C},
                          {model + ".fc", tokens, 4 * C, C},
                          {model + ".fc_proj", tokens, C, 4 * C}};
  if (with_head) s.push_back({model + ".lm_head", tokens, 50304, C});
  return s;
}

struct Ctx {
  const SuiteOptions& opt;
  json rows = json::array();
  void add(json row) {
    if (opt.progress) {
      const json& m = row["metrics"];
      const std::string p = row["primary"].get<std::string>();
      char line[512];
      if (row["status"] == "ok" && m.contains(p))
        std::snprintf(line, sizeof line, "%-7s %-9s %-40s %s = %.4g", row["status"].get<std::string>().c_str(),
                      row["suite"].get<std::string>().c_str(), row_label(row).c_str(), p.c_str(), m[p].get<double>());
      else
        std::snprintf(line, sizeof line, "%-7s %-9s %-40s %s", row["status"].get<std::string>().c_str(),
                      row["suite"].get<std::string>().c_str(), row_label(row).c_str(),
                      row["reason"].get<std::string>().c_str());
      opt.progress(line);
    }
    rows.push_back(std::move(row));
  }
};

// TFLOP/s at the median; % of peak (and MFU) are derived from it once the run's peak is known
// (put_peak_shares).
void put_flops(json& row, double flops) {
  json& m = row["metrics"];
  m["tflops"] = flops / (m["median_ms"].get<double>() * 1e-3) / 1e12;
}

// Every timed kernel's % of peak and the training step's MFU, against the peak of the machine
// description the file records (on a GPU: at the SM clock read after the GEMMs ran, not the
// idle clock before them).
void put_peak_shares(json& rows, double peak) {
  for (json& row : rows) {
    json& m = row["metrics"];
    if (!m.contains("tflops")) continue;
    const double share = peak > 0 ? m["tflops"].get<double>() / peak : 0.0;
    if (row["suite"] == "step") m["mfu"] = share;
    else m["pct_peak"] = 100 * share;
  }
}

// ---- CPU rows ------------------------------------------------------------------------------

std::vector<Shape> cpu_gemm_shapes(const SuiteOptions& opt) {
  if (opt.accept) return {{"square", 1024, 1024, 1024}};
  std::vector<Shape> shapes = {{"square", 512, 512, 512}};
  for (const Shape& s : model_shapes("tiny", 128, 256, false)) shapes.push_back(s);
  for (const Shape& s : model_shapes("124m", 768, 256, !opt.quick)) shapes.push_back(s);
  if (!opt.quick) {
    shapes.push_back({"square", 1024, 1024, 1024});
    shapes.push_back({"square", 2048, 2048, 2048});
    for (const Shape& s : model_shapes("350m", 1024, 256, false)) shapes.push_back(s);
  } else {
    shapes.erase(std::remove_if(shapes.begin(), shapes.end(),
                                [](const Shape& s) { return s.name == "124m.attn_proj" || s.name == "tiny.attn_proj"; }),
                 shapes.end());
  }
  return shapes;
}

void cpu_gemm(Ctx& c, Backend& be, CacheFlusher& fl, const std::vector<Shape>& shapes) {
  const int warmup = 2, runs = c.opt.quick ? 5 : 15;
  for (const Shape& s : shapes) {
    Tensor a = Tensor::empty(Device::CPU, DType::F32, {s.M, s.K}), w = Tensor::empty(Device::CPU, DType::F32, {s.N, s.K});
    Tensor out = Tensor::empty(Device::CPU, DType::F32, {s.M, s.N}), ref = Tensor::empty(Device::CPU, DType::F32, {s.M, s.N});
    fill_randn(a, 1 + s.M + s.K);
    fill_randn(w, 2 + s.N);
    const json params{{"shape", s.name}, {"layout", "NT"}, {"M", s.M}, {"N", s.N}, {"K", s.K}, {"dtype", "fp32"}};
    const double flops = 2.0 * s.M * s.N * s.K;
    auto blas = [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.M, s.N, s.K, 1.f, a.f32(), s.K, w.f32(), s.K, 0.f,
                  ref.f32(), s.N);
    };
    auto ours = [&] { be.matmul_forward(out, a, w, Tensor{}); };
    blas();
    ours();
    json base = make_row("gemm", "openblas", "cpu", params, "tflops");
    put_timing(base, time_cpu(blas, warmup, runs, fl));
    put_flops(base, flops);
    base["metrics"]["vs_baseline"] = 1.0;
    base["baseline"] = "openblas";
    json row = make_row("gemm", "leasetrain", "cpu", params, "tflops");
    row["baseline"] = "openblas";
    const double err = rel_err(out.f32(), ref.f32(), out.numel());
    row["metrics"]["rel_err"] = err;
    if (!(err <= 1e-5)) {
      c.add(failed(row, "result differs from OpenBLAS: relative error " + std::to_string(err) + " > 1e-5"));
    } else {
      put_timing(row, time_cpu(ours, warmup, runs, fl));
      put_flops(row, flops);
      row["metrics"]["vs_baseline"] = base["metrics"]["median_ms"].get<double>() / row["metrics"]["median_ms"].get<double>();
      c.add(row);
    }
    c.add(base);
  }
}

void cpu_attention(Ctx& c, Backend& be, CacheFlusher& fl) {
  struct Cfg { int B, NH, hs, T; };
  std::vector<Cfg> cfgs = c.opt.quick ? std::vector<Cfg>{{4, 4, 32, 64}, {4, 12, 64, 128}}
                                      : std::vector<Cfg>{{4, 4, 32, 64}, {4, 12, 64, 64}, {4, 12, 64, 128},
                                                         {4, 12, 64, 256}, {4, 8, 128, 128}, {4, 8, 128, 256}};
  const int runs = c.opt.quick ? 5 : 15;
  for (const Cfg& g : cfgs) {
    const int C = g.NH * g.hs;
    Tensor qkv = Tensor::empty(Device::CPU, DType::F32, {g.B, g.T, 3 * C}), out = Tensor::empty(Device::CPU, DType::F32, {g.B, g.T, C});
    Tensor att = Tensor::empty(Device::CPU, DType::F32, {g.B, g.NH, g.T, g.T}), dout = Tensor::empty(Device::CPU, DType::F32, {g.B, g.T, C});
    Tensor dqkv = Tensor::empty(Device::CPU, DType::F32, {g.B, g.T, 3 * C});
    fill_randn(qkv, 3 + g.T);
    fill_randn(dout, 4 + g.T);
    for (bool bwd : {false, true}) {
      const json params{{"pass", bwd ? "bwd" : "fwd"}, {"causal", true}, {"B", g.B}, {"heads", g.NH},
                        {"head_dim", g.hs}, {"T", g.T}, {"dtype", "fp32"}};
      json row = make_row("attention", "leasetrain", "cpu", params, "tflops");
      be.attention_forward(out, att, qkv, g.NH);
      // Check before timing: softmax rows of the causal mask sum to one, nothing above the diagonal.
      double worst = 0;
      for (int64_t r = 0; r < (int64_t)g.B * g.NH * g.T; r++) {
        const float* p = att.f32() + r * g.T;
        const int t = (int)(r % g.T);
        double sum = 0;
        for (int u = 0; u < g.T; u++) {
          if (u > t) worst = std::max(worst, (double)std::fabs(p[u]));
          else sum += p[u];
        }
        worst = std::max(worst, std::fabs(sum - 1));
      }
      row["metrics"]["check_error"] = worst;
      if (!(worst < 1e-4)) {
        c.add(failed(row, "attention probabilities do not form a causal softmax (error " + std::to_string(worst) + ")"));
        continue;
      }
      auto run = [&] {
        if (bwd) be.attention_backward(dqkv, dout, qkv, att, g.NH);
        else be.attention_forward(out, att, qkv, g.NH);
      };
      put_timing(row, time_cpu(run, 2, runs, fl));
      put_flops(row, attention_flops(g.B, g.T, g.NH, g.hs, bwd));
      c.add(row);
    }
  }
}

void cpu_memory(Ctx& c, CacheFlusher& fl) {
  const size_t bytes = (c.opt.quick ? 64ull : 256ull) << 20;
  std::vector<char> src(bytes), dst(bytes);
  for (size_t i = 0; i < bytes; i++) src[i] = (char)(i * 131 + 7);
  std::memset(dst.data(), 0, bytes);
  auto copy = [&] {
#pragma omp parallel
    {
      const int n = omp_get_num_threads(), t = omp_get_thread_num();
      const size_t chunk = (bytes / n + 63) / 64 * 64, lo = std::min(bytes, t * chunk), hi = std::min(bytes, lo + chunk);
      std::memcpy(dst.data() + lo, src.data() + lo, hi - lo);
    }
  };
  json row = make_row("memory", "memcpy", "cpu", json{{"bytes", (int64_t)bytes}, {"threads", omp_get_max_threads()}}, "gbps");
  copy();
  if (std::memcmp(src.data(), dst.data(), bytes) != 0) return c.add(failed(row, "the copy differs from its source"));
  put_timing(row, time_cpu(copy, 2, c.opt.quick ? 5 : 20, fl));
  row["metrics"]["gbps"] = 2.0 * bytes / (row["metrics"]["median_ms"].get<double>() * 1e-3) / 1e9;
  c.add(row);
}

void step_rows(Ctx& c, const std::string& device) {
  struct Run { std::string model; int B, T, warmup, steps; };
  std::vector<Run> runs;
  if (device == "cpu") {
    runs = {{"tiny", 4, 64, 3, c.opt.quick ? 5 : 20}};
    if (!c.opt.quick) runs.push_back({"124m", 4, 64, 1, 3});
  } else {  // llm.c's GPT-2 settings: 1024-token sequences
    runs = {{"124m", c.opt.quick ? 8 : 16, 1024, 2, c.opt.quick ? 5 : 20}};
    if (!c.opt.quick) runs.push_back({"350m", 8, 1024, 2, 10});
  }
  for (const Run& x : runs) {
    const json params{{"model", x.model}, {"batch", x.B}, {"seq", x.T}, {"precision", device == "cpu" ? "fp32" : "bf16"}};
    json row = make_row("step", "leasetrain", device, params, "tokens_per_s");
    BackendOptions be;
    be.device = device == "cpu" ? Device::CPU : Device::CUDA;
    StepBenchResult r = bench_step(x.model, named_model(x.model), x.B, x.T, x.warmup, x.steps, be);
    put_timing(row, r.ms);
    json& m = row["metrics"];
    m["tokens_per_s"] = r.tokens_per_s;
    m["tflops"] = r.gflops / 1e3;
    m["params"] = (double)r.params;
    c.add(row);
  }
}

// ---- all-reduce through mpirun --------------------------------------------------------------

void allreduce_rows(Ctx& c, const std::string& backend, int ranks, const std::string& device) {
  const std::string max = c.opt.accept ? (backend == "nccl" ? "256M" : "1M")
                          : c.opt.quick  ? "256K"
                          : backend == "nccl" ? "1G"
                                              : "32M";
  json probe = make_row("allreduce", backend, device, json{{"ranks", ranks}, {"bytes", "8.." + max}}, "busbw_gbps");
#ifndef LEASETRAIN_HAVE_MPI
  return c.add(skipped(probe, "this build has no MPI (install libopenmpi-dev and reconfigure)"));
#endif
  if (c.opt.exe.empty()) return c.add(skipped(probe, "no program to start under mpirun"));
  if (read_dist_env().source != "none") return c.add(skipped(probe, "the suite runs under mpirun itself: run it from a shell"));
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) return c.add(skipped(probe, "mpirun is not on PATH"));
  const std::filesystem::path out = std::filesystem::temp_directory_path() /
                                    ("leasetrain-suite-allreduce-" + std::to_string(::getpid()) + ".json");
  std::vector<std::string> argv = local_mpirun_argv(ranks);
  for (const std::string& x : {c.opt.exe, std::string("bench"), std::string("allreduce"), std::string("-b"),
                               std::string("8"), std::string("-e"), max, std::string("-f"), std::string("4"),
                               std::string("-n"), std::string(c.opt.quick ? "10" : "20"), std::string("-w"),
                               std::string("3"), std::string("--backend"), backend, std::string("--json"),
                               out.string()})
    argv.push_back(x);
  const std::string cmd = shell_join(argv) + " >/dev/null 2>&1";
  const int st = std::system(cmd.c_str());
  json rows;
  try {
    rows = read_json_file(out.string(), "all-reduce result");
  } catch (const UserError&) {
    rows = json(json::value_t::discarded);  // reported below with the command's exit status
  }
  std::error_code ec;
  std::filesystem::remove(out, ec);
  if (st != 0 || rows.is_discarded() || !rows.is_array())
    return c.add(failed(probe, "mpirun -np " + std::to_string(ranks) + " bench allreduce failed (exit status " +
                                   std::to_string(st) + "): " + shell_join(argv)));
  for (const json& r : rows) {
    json row = make_row("allreduce", backend, device, json{{"ranks", ranks}, {"bytes", r["size"]}, {"op", r["redop"]}},
                        "busbw_gbps");
    json& m = row["metrics"];
    m["time_us"] = r["time_us"];
    m["algbw_gbps"] = r["algbw_gbps"];
    m["busbw_gbps"] = r["busbw_gbps"];
    m["wrong"] = r["wrong"];
    if (r["wrong"].get<int64_t>() != 0) row = failed(row, "wrong elements in the reduced result");
    c.add(row);
  }
}

// ---- bitwise repeat (acceptance) --------------------------------------------------------------

// One training step of the tiny model from the same seed, twice: the parameters after each must
// be the same bits (a node whose arithmetic is not repeatable makes resumes and debugging lie).
void cpu_repeat(Ctx& c) {
  json row = make_row("repeat", "step", "cpu", json{{"model", "tiny"}, {"batch", 4}, {"seq", 64}}, "identical");
  const GPTConfig cfg = named_model("tiny");
  auto be = make_cpu_backend();
  std::vector<std::vector<float>> after;
  for (int k = 0; k < 2; k++) {
    GPT model(cfg, *be);
    model.init_weights(1);
    AdamW optim(AdamWConfig{}, model);
    Rng rng(5);
    std::vector<int32_t> in(4 * 64), tgt(4 * 64);
    for (size_t j = 0; j < in.size(); j++) {
      in[j] = (int32_t)rng.below(cfg.vocab_size);
      tgt[j] = (int32_t)rng.below(cfg.vocab_size);
    }
    const auto t0 = Clock::now();
    model.forward(in.data(), tgt.data(), 4, 64);
    model.backward();
    optim.step(1e-3f);
    be->synchronize();
    if (k == 0) put_timing(row, {std::chrono::duration<double, std::milli>(Clock::now() - t0).count()});
    const float* p = model.params().f32();
    after.emplace_back(p, p + model.params().numel());
  }
  const bool same = std::memcmp(after[0].data(), after[1].data(), after[0].size() * sizeof(float)) == 0;
  row["metrics"]["identical"] = same ? 1.0 : 0.0;
  c.add(same ? row : failed(row, "one training step twice from the same seed gave different parameters"));
}

// ---- GPU rows -------------------------------------------------------------------------------

std::vector<Shape> gpu_gemm_shapes(const SuiteOptions& opt) {
  if (opt.accept) return {{"square", 8192, 8192, 8192}};
  std::vector<Shape> s = {{"square", 4096, 4096, 4096}};
  const int tokens = 8192;  // batch 8 x 1024
  for (const Shape& x : model_shapes("124m", 768, tokens, !opt.quick)) s.push_back(x);
  if (!opt.quick) {
    s.insert(s.begin(), {"square", 2048, 2048, 2048});
    s.push_back({"square", 8192, 8192, 8192});
    for (const Shape& x : model_shapes("350m", 1024, tokens, true)) s.push_back(x);
  }
  return s;
}

size_t gpu_copy_bytes(const SuiteOptions& opt) { return (opt.quick ? 256ull : 1024ull) << 20; }

json gemm_params(const Shape& s, const std::string& dtype, int gpu, bool accept) {
  json p{{"shape", s.name}, {"layout", "NT"}, {"M", s.M}, {"N", s.N}, {"K", s.K}, {"dtype", dtype}};
  if (accept) p["gpu"] = gpu;
  return p;
}

// GEMM (hand-written and cuBLAS), device copy and, for acceptance, the bitwise repeat on GPU
// `gpu`; returns the SM clock read right after the GEMMs. Without a GPU: the same rows, skipped.
double gpu_rows(Ctx& c, int gpu, bool have_gpu, const std::string& why) {
  double clock = 0;
  const std::vector<Shape> shapes = gpu_gemm_shapes(c.opt);
  json mem_params{{"bytes", (int64_t)gpu_copy_bytes(c.opt)}};
  if (c.opt.accept) mem_params["gpu"] = gpu;
#ifdef LEASETRAIN_HAVE_CUDA
  if (have_gpu) {
    use_device(gpu);
    std::vector<GemmBenchConfig> cfgs;
    const int iters = c.opt.quick || c.opt.accept ? 20 : 50;
    for (const Shape& s : shapes) {
      GemmBenchConfig g;
      g.M = s.M;
      g.N = s.N;
      g.K = s.K;
      g.iters = iters;
      cfgs.push_back(g);
    }
    GemmBenchReport rep = bench_gemm(cfgs);
    clock = read_sm_clock_mhz(gpu);
    for (const GemmBenchRow& r : rep.rows) {
      Shape shape{"square", r.M, r.N, r.K};
      for (const Shape& s : shapes)
        if (s.M == r.M && s.N == r.N && s.K == r.K) shape = s;
      json row = make_row("gemm", r.kernel, "cuda", gemm_params(shape, "bf16", gpu, c.opt.accept), "tflops");
      row["baseline"] = "cublas";
      put_stats(row, r.median_ms, r.min_ms, r.max_ms, iters);
      json& m = row["metrics"];
      m["rel_err"] = r.rel_err;
      m["vs_baseline"] = r.vs_cublas;
      put_flops(row, 2.0 * r.M * r.N * r.K);
      if (!r.correct) row = failed(row, "result differs from cuBLAS beyond the bf16 tolerance");
      c.add(row);
    }
    const int copies = c.opt.quick || c.opt.accept ? 10 : 30;
    CopyBench cb = bench_device_copy(gpu, gpu_copy_bytes(c.opt), 3, copies);
    json row = make_row("memory", "cudaMemcpy D2D", "cuda", mem_params, "gbps");
    put_stats(row, cb.median_ms, cb.min_ms, cb.max_ms, copies);
    json& m = row["metrics"];
    m["gbps"] = cb.gbps;
    if (!cb.correct) row = failed(row, "the copy differs from its source");
    c.add(row);
    if (c.opt.accept) {
      std::string what;
      const auto t0 = Clock::now();
      const bool same = gemm_repeats_bitwise(gpu, 4096, &what);
      json rr = make_row("repeat", "gemm", "cuda", json{{"n", 4096}, {"gpu", gpu}}, "identical");
      put_timing(rr, {std::chrono::duration<double, std::milli>(Clock::now() - t0).count()});
      rr["metrics"]["identical"] = same ? 1.0 : 0.0;
      c.add(same ? rr : failed(rr, what + " gave different bits"));
    }
    return clock;
  }
#endif
  for (const Shape& s : shapes)
    for (const char* k : {"mma.sync", "cublas"})
      c.add(skipped(make_row("gemm", k, "cuda", gemm_params(s, "bf16", gpu, c.opt.accept), "tflops"), why));
  c.add(skipped(make_row("memory", "cudaMemcpy D2D", "cuda", mem_params, "gbps"), why));
  return clock;
}

void gpu_attention_rows(Ctx& c, bool have_gpu, const std::string& why) {
  // FlashAttention-2's grid: hidden 2048 (32 heads of 64, 16 of 128), 16384 tokens per batch.
  const std::vector<int> lengths = c.opt.quick ? std::vector<int>{1024} : std::vector<int>{512, 1024, 2048, 4096};
  auto params = [](const char* pass, int B, int T, int NH, int D) {
    return json{{"pass", pass}, {"causal", true}, {"B", B}, {"heads", NH}, {"head_dim", D}, {"T", T}, {"dtype", "bf16"}};
  };
#ifdef LEASETRAIN_HAVE_CUDA
  if (have_gpu) {
    std::vector<AttentionBenchConfig> cfgs;
    for (const AttentionBenchConfig& g : attention_bench_configs({64, 128}, lengths.back()))
      if (std::find(lengths.begin(), lengths.end(), g.T) != lengths.end()) {
        cfgs.push_back(g);
        cfgs.back().iters = c.opt.quick ? 10 : 20;
      }
    AttentionBenchReport rep = bench_attention(cfgs);
    for (const AttentionBenchRow& r : rep.rows) {
      // impl "flash": the mma.sync kernels; "flash-wgmma": the Hopper kernels (where they run).
      json row = make_row("attention", r.kernel == "wgmma" ? "flash-wgmma" : "flash", "cuda",
                          params(r.pass.c_str(), r.B, r.T, r.NH, r.D), "tflops");
      put_stats(row, r.median_ms, r.min_ms, r.max_ms, c.opt.quick ? 10 : 20);
      json& m = row["metrics"];
      m["rel_err"] = r.rel_err;
      put_flops(row, attention_flops(r.B, r.T, r.NH, r.D, r.pass == "bwd"));
      if (!r.correct) row = failed(row, "differs from the reference attention beyond the bf16 tolerance");
      c.add(row);
    }
    return;
  }
#endif
  for (int hd : {64, 128})
    for (int T : lengths)
      for (const char* pass : {"fwd", "bwd"}) c.add(skipped(make_row("attention", "flash", "cuda",
                                                                     params(pass, 16384 / T, T, 2048 / hd, hd), "tflops"),
                                                            why));
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

json run_suite(const SuiteOptions& opt) {
  const auto t0 = Clock::now();
  bool have_gpu = false;
  std::string why = "this build has no CUDA (configure with the CUDA toolkit)";
  int gpus = 0;
#ifdef LEASETRAIN_HAVE_CUDA
  {
    GpuInfo g = query_gpu(0);
    have_gpu = g.count > 0;
    gpus = g.count;
    if (!have_gpu) why = g.why;
  }
#endif
  std::string device = opt.device == "auto" ? (have_gpu ? "cuda" : "cpu") : opt.device;
  if (device == "cuda" && !have_gpu) throw UserError("--device cuda: " + why);
  if (device == "cpu" && have_gpu) why = "--device cpu";

  Ctx c{opt};
  CacheFlusher flusher;
  double clock = 0;
  const std::string one_gpu = "one GPU: nothing to all-reduce across (the sweep needs 2 or more)";
  if (device == "cpu") {
    auto be = make_cpu_backend();
    cpu_gemm(c, *be, flusher, cpu_gemm_shapes(opt));
    if (opt.accept) {
      cpu_memory(c, flusher);
      cpu_repeat(c);
      allreduce_rows(c, "mpi", opt.ranks, "cpu");
    } else {
      gpu_rows(c, 0, false, why);
      cpu_attention(c, *be, flusher);
      gpu_attention_rows(c, false, why);
      cpu_memory(c, flusher);
      allreduce_rows(c, "mpi", opt.ranks, "cpu");
      c.add(skipped(make_row("allreduce", "nccl", "cuda", json{{"ranks", 2}, {"bytes", "8..1G"}}, "busbw_gbps"), why));
      step_rows(c, "cpu");
    }
  } else {
    for (int g = 0; g < (opt.accept ? gpus : 1); g++) {
      const double k = gpu_rows(c, g, true, "");
      if (g == 0) clock = k;
    }
    if (!opt.accept) gpu_attention_rows(c, true, "");
    if (gpus >= 2) allreduce_rows(c, "nccl", gpus, "cuda");
    else c.add(skipped(make_row("allreduce", "nccl", "cuda", json{{"ranks", gpus}, {"bytes", "8..1G"}}, "busbw_gbps"), one_gpu));
    if (!opt.accept) step_rows(c, "cuda");
  }

  json out;
  out["schema"] = "leasetrain.bench.suite/1";
  out["created_utc"] = utc_now();
  out["quick"] = opt.quick;
  out["device"] = device;
  out["leasetrain"] = json{{"version", LEASETRAIN_VERSION}, {"build_type", LEASETRAIN_BUILD_TYPE}};
  out["machine"] = describe_machine(device, clock);
  out["method"] = json{
      {"timing", device == "cpu" ? "steady_clock around each call, after warm-up"
                                 : "CUDA events on the kernel's stream, after warm-up"},
      {"statistic", "median of the timed runs, with min, max and spread = (max - min) / median"},
      {"data", "random: N(0,1) inputs, random tokens for the step"},
      {"cache", device == "cpu" ? "a buffer of twice the last-level cache written before every timed run"
                                : "L2 flushed (a buffer of twice its size written) before every timed run"},
      {"correctness", "GEMM checked against the baseline (OpenBLAS / cuBLAS), attention's causal softmax checked, "
                      "copies compared, all-reduce results checked exactly; all before timing"}};
  int ok = 0, sk = 0, fa = 0;
  for (const json& r : c.rows) (r["status"] == "ok" ? ok : r["status"] == "skipped" ? sk : fa)++;
  put_peak_shares(c.rows, out["machine"]["peak"]["tflops"].get<double>());
  out["results"] = c.rows;
  out["summary"] = json{{"ok", ok}, {"skipped", sk}, {"failed", fa},
                        {"seconds", std::chrono::duration<double>(Clock::now() - t0).count()}};
  return out;
}

}  // namespace lt::bench
