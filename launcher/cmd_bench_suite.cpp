// `leasetrain bench suite | compare | accept` and `leasetrain report`: the benchmark suite, its
// results side by side, lease acceptance, and plots of a training run (benchmarks/suite.h,
// benchmarks/compare.h). JSON files are written whole (a temporary file renamed into place).
#include <cstdio>
#include <filesystem>
#include <memory>

#include "benchmarks/compare.h"
#include "benchmarks/suite.h"
#include "launcher/cli_checks.h"
#include "launcher/commands.h"
#include "lease/storage.h"
#include "runtime/error.h"

namespace lt::cli {

using json = nlohmann::json;

void write_json_output(const std::string& path, const json& j) {
  if (path == "-") {
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  try {
    lt::lease::write_file_atomic(path, j.dump(2) + "\n");
  } catch (const std::exception& e) {
    throw UserError(path + ": cannot write (" + e.what() + ")");
  }
}

void add_bench_suite_commands(CLI::App* bench) {
  struct SuiteCli {
    bool quick = false;
    std::string json_out, device = "auto";
    int ranks = 2;
  };
  auto s = std::make_shared<SuiteCli>();
  CLI::App* su = bench->add_subcommand("suite", "Every benchmark in one run, one JSON file for `bench compare`");
  su->footer(
      "Runs GEMM (hand-written and the baseline: cuBLAS on a GPU, OpenBLAS on the CPU; square and GPT-2 124M/350M "
      "layer shapes), causal attention forward and backward, memory bandwidth, the all-reduce sweep (mpirun on this "
      "host; one rank per GPU) and the training step (tokens/s, MFU). Every kernel is checked before it is timed; "
      "warm-up first, caches flushed between runs, random data, median with min, max and spread. The JSON records the "
      "machine (GPU, SMs, SM clock read during the run, memory, driver, CUDA, cuBLAS, NCCL) and the peak with how it "
      "was computed (SMs x FLOP/clk/SM x clock). Rows that need a GPU say `skipped` and why. Schema: "
      "benchmarks/suite.schema.json.");
  su->add_flag("--quick", s->quick, "Small sizes and few runs (about a minute on a 2-core CPU)");
  su->add_option("--json", s->json_out, "Write the results here ('-' for stdout)")->required();
  su->add_option("--device", s->device, "auto (cuda when a GPU is present), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))->capture_default_str();
  su->add_option("--ranks", s->ranks, "All-reduce ranks on a CPU machine")->check(in_range(2, 64))->capture_default_str();
  su->callback([s] {
    const bool to_stdout = s->json_out == "-";
    if (!to_stdout) {  // refuse an unwritable destination before minutes of measuring
      const std::filesystem::path parent = std::filesystem::absolute(s->json_out).parent_path();
      if (!std::filesystem::is_directory(parent)) throw UserError("--json: " + parent.string() + ": no such directory");
    }
    bench::SuiteOptions o;
    o.quick = s->quick;
    o.device = s->device;
    o.ranks = s->ranks;
    o.exe = self_exe();
    std::FILE* log = to_stdout ? stderr : stdout;
    o.progress = [log](const std::string& line) {
      std::fprintf(log, "suite: %s\n", line.c_str());
      std::fflush(log);
    };
    std::fprintf(log, "bench suite%s: measuring (one line per row)\n", s->quick ? " --quick" : "");
    json r = bench::run_suite(o);
    write_json_output(s->json_out, r);
    const json& sum = r["summary"];
    std::fprintf(log, "bench suite: %d ok, %d skipped, %d failed in %.0f s on %s; peak %.4g TFLOP/s (%s)%s%s\n",
                 sum["ok"].get<int>(), sum["skipped"].get<int>(), sum["failed"].get<int>(), sum["seconds"].get<double>(),
                 r["machine"]["label"].get<std::string>().c_str(), r["machine"]["peak"]["tflops"].get<double>(),
                 r["machine"]["peak"]["formula"].get<std::string>().c_str(), to_stdout ? "" : "; results in ",
                 to_stdout ? "" : s->json_out.c_str());
    if (sum["failed"].get<int>() > 0)
      throw CommandFailed("bench suite: " + std::to_string(sum["failed"].get<int>()) + " row(s) failed their check");
  });

  struct CompareCli {
    std::vector<std::string> files;
    std::vector<double> prices;
    std::string plots, json_out;
  };
  auto c = std::make_shared<CompareCli>();
  CLI::App* cmp = bench->add_subcommand("compare", "Suite results side by side: each metric, each machine, the ratio");
  cmp->footer("Reads `bench suite --json` files (checked against the schema), prints one line per measured row with "
              "each machine's value and its ratio to the first file's, and with --plots writes PNG and SVG plots "
              "(throughput per shape, % of peak, memory and all-reduce bandwidth, tokens/s, and tokens per dollar "
              "with --price) through matplotlib (Debian's python3-matplotlib).");
  cmp->add_option("files", c->files, "Two or more suite results; the first is the reference")->required()
      ->check(CLI::ExistingFile);
  cmp->add_option("--price", c->prices, "$ per GPU-hour of each file's machine, in file order (adds tokens per $)")
      ->check(in_range(0.0, 1e9));
  cmp->add_option("--plots", c->plots, "Write the plots into this directory");
  cmp->add_option("--json", c->json_out, "Write the comparison as JSON ('-' for stdout)");
  cmp->callback([c] {
    if (c->files.size() < 2) throw UserError("bench compare: expected two or more result files, got " +
                                             std::to_string(c->files.size()));
    if (!c->prices.empty() && c->prices.size() != c->files.size())
      throw UserError("--price: expected one price per file (" + std::to_string(c->files.size()) + "), got " +
                      std::to_string(c->prices.size()));
    for (double p : c->prices)
      if (!(p >= 0)) throw UserError("--price: expected $ per GPU-hour >= 0");
    std::vector<json> results;
    for (const std::string& f : c->files) results.push_back(bench::load_suite_result(f));
    json cmp = bench::compare_results(results, c->files, c->prices);
    if (c->json_out != "-") bench::print_compare(cmp, stdout);
    if (!c->json_out.empty()) write_json_output(c->json_out, cmp);
    if (!c->plots.empty()) {
      std::filesystem::create_directories(c->plots);
      const std::string data = (std::filesystem::path(c->plots) / "compare.json").string();
      write_json_output(data, cmp);
      try {
        for (const std::string& f : bench::run_plot("compare", data, c->plots)) std::printf("wrote %s\n", f.c_str());
      } catch (const std::runtime_error& e) {
        throw CommandFailed(e.what());
      }
    }
  });

  struct AcceptCli {
    std::string results, thresholds, json_out, suite_json;
    int ranks = 2;
  };
  auto a = std::make_shared<AcceptCli>();
  CLI::App* ac = bench->add_subcommand("accept", "Lease acceptance: a short check of every GPU against what it should reach");
  ac->footer("Measures each GPU's GEMM rate (best of hand-written and cuBLAS, 8192^3 bf16), device-copy bandwidth, "
             "a bitwise-repeat check (the same GEMM twice gives the same bits) and, with 2 or more GPUs, the NCCL "
             "all-reduce busbw; then scores them against the thresholds file (TOML: an entry per GPU model, matched "
             "by name, else fractions of the peak computed from the device). On a machine without a GPU the same "
             "checks run on the CPU. Exit status 0: accept; 1: a check failed; 2: bad input. --results scores a "
             "`bench suite`/`bench accept --suite-json` result instead of measuring. Run it on every leased node "
             "inside a lease with `leasetrain launch --manifest M --lease L --np 1 -- bench accept`.");
  ac->add_option("--results", a->results, "Score this suite result instead of measuring")->check(CLI::ExistingFile);
  ac->add_option("--thresholds", a->thresholds, "Thresholds file (default: benchmarks/accept.toml)");
  ac->add_option("--json", a->json_out, "Write the scorecard as JSON ('-' for stdout)");
  ac->add_option("--suite-json", a->suite_json, "Also keep the raw measurements (suite schema)");
  ac->add_option("--ranks", a->ranks, "All-reduce ranks on a CPU machine")->check(in_range(2, 64))->capture_default_str();
  ac->callback([a] {
    const std::string th = a->thresholds.empty() ? bench::source_file("benchmarks/accept.toml") : a->thresholds;
    if (!std::filesystem::is_regular_file(th)) throw UserError("--thresholds: " + th + ": no such file");
    json result;
    if (!a->results.empty()) {
      result = bench::load_suite_result(a->results);
    } else {
      bench::SuiteOptions o;
      o.accept = true;
      o.ranks = a->ranks;
      o.exe = self_exe();
      o.progress = [](const std::string& line) {
        std::printf("accept: %s\n", line.c_str());
        std::fflush(stdout);
      };
      result = bench::run_suite(o);
      if (!a->suite_json.empty()) write_json_output(a->suite_json, result);
    }
    json card = bench::score_acceptance(result, th);
    if (a->json_out != "-") bench::print_scorecard(card, stdout);
    if (!a->json_out.empty()) write_json_output(a->json_out, card);
    if (card["verdict"] != "pass") throw CommandFailed("", 1);
  });
}

void add_report_commands(CLI::App& app) {
  struct ReportCli {
    std::string run, out, against;
    bool json = false;
  };
  auto r = std::make_shared<ReportCli>();
  CLI::App* rep = app.add_subcommand("report", "Plot a training run: loss (train and validation) and throughput");
  rep->footer("Reads RUN_DIR/metrics.jsonl (what `train --out RUN_DIR` writes), prints a summary and writes "
              "training.png and training.svg (matplotlib, Debian's python3-matplotlib) and summary.json into --out "
              "(default RUN_DIR/report).");
  rep->add_option("run_dir", r->run, "A training run's output directory")->required();
  rep->add_option("--out", r->out, "Where to write the plots and summary.json");
  rep->add_option("--against", r->against,
                  "Another run of the same job (e.g. uninterrupted, against one restarted after a failure): "
                  "its losses are drawn on the same plot and the summary gets the largest loss difference over "
                  "the steps both recorded");
  rep->add_flag("--json", r->json, "Print the summary as JSON instead of text");
  rep->callback([r] {
    json s = bench::summarize_run(r->run);
    if (!r->against.empty()) s["against"] = bench::compare_runs(r->run, r->against);
    const std::string out = r->out.empty() ? (std::filesystem::path(r->run) / "report").string() : r->out;
    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    if (ec) throw UserError("--out: " + out + ": cannot create (" + ec.message() + ")");
    std::vector<std::string> files;
    try {
      std::vector<std::string> extra = {std::filesystem::path(r->run).filename().string()};
      if (!r->against.empty()) {
        extra.push_back((std::filesystem::path(r->against) / "metrics.jsonl").string());
        extra.push_back(std::filesystem::path(r->against).lexically_normal().filename().string());
      }
      files = bench::run_plot("report", (std::filesystem::path(r->run) / "metrics.jsonl").string(), out, extra);
    } catch (const std::runtime_error& e) {
      throw CommandFailed(e.what());
    }
    s["plots"] = files;
    write_json_output((std::filesystem::path(out) / "summary.json").string(), s);
    if (r->json) {
      std::printf("%s\n", s.dump(2).c_str());
      return;
    }
    auto num = [&](const char* k) { return s[k].is_null() ? std::string("-") : std::to_string(s[k].get<double>()); };
    std::printf("run %s: %lld steps (last step %lld), loss %.4f -> %.4f, validation loss %s (best %s at step %s), "
                "median %.0f tokens/s, %.1f s training\n",
                r->run.c_str(), (long long)s["steps"].get<int64_t>(), (long long)s["last_step"].get<int64_t>(),
                s["first_loss"].get<double>(), s["last_loss"].get<double>(), num("last_val_loss").c_str(),
                num("best_val_loss").c_str(), s["best_val_step"].is_null() ? "-" : s["best_val_step"].dump().c_str(),
                s["median_tokens_per_s"].get<double>(), s["train_seconds"].get<double>());
    if (s.contains("against")) {
      const json& c = s["against"];
      std::printf("against %s: %lld common steps, largest loss difference %.3g (%.3g relative, step %lld)",
                  r->against.c_str(), (long long)c["common_steps"].get<int64_t>(), c["max_abs_loss_diff"].get<double>(),
                  c["max_rel_loss_diff"].get<double>(), (long long)c["worst_step"].get<int64_t>());
      if (!c["max_abs_val_loss_diff"].is_null())
        std::printf(", validation %.3g over %lld evaluations", c["max_abs_val_loss_diff"].get<double>(),
                    (long long)c["common_val_steps"].get<int64_t>());
      std::printf("\n");
    }
    for (const std::string& f : files) std::printf("wrote %s\n", f.c_str());
    std::printf("wrote %s\n", (std::filesystem::path(out) / "summary.json").string().c_str());
  });
}

}  // namespace lt::cli
