// `leasetrain bench ...`: the benchmarks in benchmarks/, with tables for people and JSON for
// scripts.
#include <omp.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "benchmarks/bench_step.h"
#include "launcher/commands.h"
#include "runtime/error.h"

namespace lt::cli {

namespace {

using json = nlohmann::json;

// Runs the PyTorch peer (benchmarks/torch_step.py under Debian's python3-torch); null on failure.
json run_torch_peer(const std::string& model, int B, int T, int warmup, int steps) {
  std::string script = std::string(LEASETRAIN_SOURCE_DIR) + "/benchmarks/torch_step.py";
  if (const char* home = std::getenv("LEASETRAIN_HOME")) script = std::string(home) + "/benchmarks/torch_step.py";
  const std::string cmd = "/usr/bin/python3 '" + script + "' --model " + model + " --batch " + std::to_string(B) +
                          " --seq " + std::to_string(T) + " --warmup " + std::to_string(warmup) + " --steps " +
                          std::to_string(steps) + " 2>&1";
  std::FILE* p = popen(cmd.c_str(), "r");
  if (!p) return nullptr;
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int rc = pclose(p);
  json j = json::parse(out.substr(out.rfind('{') == std::string::npos ? 0 : out.rfind('{')), nullptr, false);
  if (rc != 0 || j.is_discarded()) {
    std::fprintf(stderr, "bench: the PyTorch peer failed (is python3-torch installed?): %s\n", out.c_str());
    return nullptr;
  }
  return j;
}

}  // namespace

void add_bench_commands(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks: training step, kernels, collectives");
  bench->require_subcommand(1);

  struct StepArgs {
    std::string device = "cpu", model = "all", json_out;
    int batch = 4, seq = 64, warmup = 2, steps = 5;
    bool torch = false;
  };
  auto a = std::make_shared<StepArgs>();
  CLI::App* s = bench->add_subcommand("step", "Time the whole training step (forward, backward, AdamW)");
  s->footer("Reports the median over --steps timed steps after --warmup: ms/step, tokens/s and achieved GFLOP/s "
            "(llm.c's count: 6 FLOPs per parameter per token plus 6*L*C*T for attention). --torch runs the same "
            "step in PyTorch CPU eager (benchmarks/torch_step.py, Debian's python3-torch) in the same run and "
            "prints the speedup.");
  s->add_option("--device", a->device, "Backend")->check(CLI::IsMember({"cpu"}))->capture_default_str();
  s->add_option("--model", a->model, "tiny, 124m, 350m or all (tiny and 124m)")->capture_default_str();
  s->add_option("--batch", a->batch, "Sequences per step")->check(CLI::PositiveNumber)->capture_default_str();
  s->add_option("--seq", a->seq, "Tokens per sequence")->check(CLI::PositiveNumber)->capture_default_str();
  s->add_option("--warmup", a->warmup, "Untimed steps first")->check(CLI::NonNegativeNumber)->capture_default_str();
  s->add_option("--steps", a->steps, "Timed steps")->check(CLI::PositiveNumber)->capture_default_str();
  s->add_flag("--torch", a->torch, "Also time the PyTorch CPU eager peer and print the ratio");
  s->add_option("--json", a->json_out, "Write the results as JSON to this file ('-' for stdout)");
  s->callback([a] {
    std::vector<std::string> names = a->model == "all" ? std::vector<std::string>{"tiny", "124m"}
                                                       : std::vector<std::string>{a->model};
    json results = json::array();
    std::printf("bench step: device %s, %d threads, batch %d x %d tokens, median of %d steps after %d warm-up\n",
                a->device.c_str(), omp_get_max_threads(), a->batch, a->seq, a->steps, a->warmup);
    std::printf("%-6s %9s %10s %10s %10s %9s %12s %9s\n", "model", "params", "ms/step", "min ms", "tokens/s",
                "GFLOP/s", "torch ms", "speedup");
    for (const std::string& name : names) {
      bench::StepBenchResult r =
          bench::bench_step(name, bench::named_model(name), a->batch, a->seq, a->warmup, a->steps);
      json j{{"model", name},          {"device", a->device},   {"threads", omp_get_max_threads()},
             {"batch", r.B},           {"seq", r.T},            {"params", r.params},
             {"ms", r.ms},             {"median_ms", r.median_ms}, {"min_ms", r.min_ms},
             {"max_ms", r.max_ms},     {"tokens_per_s", r.tokens_per_s}, {"gflops", r.gflops},
             {"flops_formula", "6*N + 6*L*C*T per token (llm.c)"}};
      std::printf("%-6s %8.2fM %10.2f %10.2f %10.0f %9.1f", name.c_str(), r.params / 1e6, r.median_ms, r.min_ms,
                  r.tokens_per_s, r.gflops);
      if (a->torch) {
        json peer = run_torch_peer(name, a->batch, a->seq, a->warmup, a->steps);
        if (!peer.is_null()) {
          const double tms = peer["median_ms"].get<double>();
          j["torch"] = peer;
          j["speedup_vs_torch"] = tms / r.median_ms;
          std::printf(" %12.2f %8.2fx", tms, tms / r.median_ms);
        }
      }
      std::printf("\n");
      std::fflush(stdout);
      results.push_back(j);
    }
    if (a->json_out == "-") {
      std::printf("%s\n", results.dump(2).c_str());
    } else if (!a->json_out.empty()) {
      std::ofstream f(a->json_out);
      f << results.dump(2) << "\n";
      if (!f) throw UserError(a->json_out + ": cannot write");
    }
  });
}

}  // namespace lt::cli
