// `leasetrain bench ...`: the benchmarks in benchmarks/, with tables for people and JSON for
// scripts.
#include <omp.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "benchmarks/bench_allreduce.h"
#include "benchmarks/bench_step.h"
#include "benchmarks/compare.h"
#include "launcher/cli_checks.h"
#include "launcher/cmd_bench_gpu.h"
#include "launcher/commands.h"
#include "runtime/dist_env.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/input.h"

namespace lt::cli {

namespace {

using json = nlohmann::json;

// Runs the PyTorch peer (benchmarks/torch_step.py under Debian's python3-torch); null on failure.
json run_torch_peer(const std::string& model, int B, int T, int warmup, int steps, int threads) {
  std::string out;
  const int rc = bench::run_python("benchmarks/torch_step.py",
                                   {"--model", model, "--batch", std::to_string(B), "--seq", std::to_string(T),
                                    "--warmup", std::to_string(warmup), "--steps", std::to_string(steps),
                                    "--threads", std::to_string(threads)},
                                   &out);
  json j(json::value_t::discarded);
  try {
    j = parse_json(out.substr(out.rfind('{') == std::string::npos ? 0 : out.rfind('{')), "the PyTorch peer's output");
    if (!j.contains("median_ms") || !j["median_ms"].is_number()) j = json(json::value_t::discarded);
  } catch (const UserError&) {
  }
  if (rc != 0 || j.is_discarded()) {
    std::fprintf(stderr, "bench: the PyTorch peer failed (is python3-torch installed?): %s\n", out.c_str());
    return nullptr;
  }
  return j;
}

// nccl-tests' sizes: a number with an optional K, M or G (powers of 1024).
int64_t parse_size(const std::string& flag, const std::string& v) {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (...) {
    used = 0;
  }
  std::string unit = v.substr(used);
  const double mult = unit.empty() ? 1 : unit == "K" || unit == "k" ? 1024.0 : unit == "M" || unit == "m" ? 1048576.0
                      : unit == "G" || unit == "g" ? 1073741824.0 : -1;
  // Finite and at most 1 TiB, so the cast below neither overflows nor takes a NaN.
  if (used == 0 || mult < 0 || !(x * mult >= 1 && x * mult <= 1099511627776.0))
    throw UserError(flag + ": expected a byte count from 1 to 1T such as 8, 64K, 32M or 1G, got '" + v + "'");
  return (int64_t)(x * mult);
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

// Runs a shell command; its exit status (non-zero for a signal).
int run_shell(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

// A job started from a shell (not itself a rank) may start mpirun; a rank may not.
void require_not_a_rank(const char* flag) {
  if (read_dist_env().source != "none")
    throw UserError(std::string(flag) + ": starts its own mpirun; run it from a shell, not under mpirun or srun");
}

json dp_row_json(const bench::DpStepResult& r, const std::string& progress, bool overlap, double bucket_mb,
                bool independent) {
  return json{{"ranks", r.world}, {"batch_per_rank", r.B}, {"seq", r.T}, {"buckets", r.buckets},
              {"bucket_mb", bucket_mb}, {"overlap", overlap}, {"progress", progress}, {"independent", independent},
              {"median_ms", r.median_ms}, {"min_ms", r.min_ms}, {"wait_after_backward_ms", r.wait_ms},
              {"comm_in_step_ms", r.comm_ms}, {"comm_alone_ms", r.alone_ms}, {"hidden", r.hidden},
              {"launched_during_backward", r.launched_during_backward}};
}

}  // namespace

void add_bench_commands(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks: training step, kernels, collectives");
  bench->require_subcommand(1);
  add_bench_suite_commands(bench);
  add_gpu_bench_commands(bench);

  struct StepArgs {
    std::string device = "cpu", model = "all", json_out;
    int batch = 4, seq = 64, warmup = 2, steps = 5;
    bool torch = false;
    // data parallel (--ranks)
    int ranks = 0, threads_per_rank = 1, zero = 0, repeat = 1;
    std::string bucket_mb = "0.25,1,25", progress = "poll", dp_worker;  // poll: as make train
    double first_bucket_mb = 1.0, worker_bucket_mb = 25;
    bool worker_overlap = true, worker_independent = false;
  };
  auto a = std::make_shared<StepArgs>();
  CLI::App* s = bench->add_subcommand("step", "Time the whole training step (forward, backward, AdamW)");
  s->footer("Reports the median over --steps timed steps after --warmup: ms/step, tokens/s and achieved GFLOP/s "
            "(llm.c's count: 6 FLOPs per parameter per token plus 6*L*C*T for attention). --torch runs the same "
            "step in PyTorch CPU eager (benchmarks/torch_step.py, Debian's python3-torch) in the same run, at this "
            "run's thread count and on one thread (often PyTorch's faster setting for small models), and "
            "prints the speedup against each.");
  s->add_option("--device", a->device, "Backend: cpu or cuda (bf16 mixed precision)")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  s->add_option("--model", a->model, "tiny, 124m, 350m or all (tiny and 124m)")->capture_default_str();
  s->add_option("--batch", a->batch, "Sequences per step")->check(in_range(1, 1 << 20))->capture_default_str();
  s->add_option("--seq", a->seq, "Tokens per sequence")->check(in_range(1, kMaxBlockSize))->capture_default_str();
  s->add_option("--warmup", a->warmup, "Untimed steps first")->check(in_range(0, 1000000))->capture_default_str();
  s->add_option("--steps", a->steps, "Timed steps")->check(in_range(1, 1000000))->capture_default_str();
  s->add_flag("--torch", a->torch, "Also time the PyTorch CPU eager peer (at this thread count and on one thread) and print the ratios");
  s->add_option("--json", a->json_out, "Write the results as JSON to this file ('-' for stdout)");
  s->add_option("--ranks", a->ranks,
                "Data parallel: time N ranks (mpirun on this host, one process each) against 1 rank at the same "
                "per-rank --batch: weak-scaling efficiency and the share of gradient reduction hidden by overlap")
      ->check(in_range(2, 1024));
  s->add_option("--bucket-mb", a->bucket_mb, "With --ranks: bucket caps to compare, MB, comma-separated")
      ->capture_default_str();
  s->add_option("--first-bucket-mb", a->first_bucket_mb, "With --ranks: the first bucket's cap, MB")
      ->check(in_range(1e-3, 1e6))->capture_default_str();
  s->add_option("--progress", a->progress, "With --ranks: MPI progress, thread or poll (see runtime/comm.h; poll, as configs/tiny.toml, suits ranks that fill the cores)")
      ->check(CLI::IsMember({"thread", "poll"}))->capture_default_str();
  s->add_option("--threads-per-rank", a->threads_per_rank, "With --ranks: OpenMP threads per rank")
      ->check(in_range(1, 1024))->capture_default_str();
  s->add_option("--zero", a->zero, "With --ranks: 1 for ZeRO-1")->check(in_range(0, 1))->capture_default_str();
  s->add_option("--repeat", a->repeat, "With --ranks: rounds of every configuration, interleaved; rows show the "
                "median over rounds")->check(in_range(1, 1000))->capture_default_str();
  // Internal: one configuration on the ranks of an mpirun that --ranks started.
  s->add_option("--dp-worker", a->dp_worker)->group("");
  s->add_option("--dp-bucket-mb", a->worker_bucket_mb)->group("")->check(in_range(1e-3, 1e6));
  s->add_option("--dp-overlap", a->worker_overlap)->group("");
  s->add_option("--dp-independent", a->worker_independent)->group("");
  s->callback([a] {
    if (!a->dp_worker.empty()) {  // a rank of one --ranks configuration
      DistConfig dist;
      dist.bucket_mb = a->worker_bucket_mb;
      dist.first_bucket_mb = std::min(a->first_bucket_mb, a->worker_bucket_mb);
      dist.overlap = a->worker_overlap;
      dist.progress = a->progress;
      dist.zero = a->zero;
      std::unique_ptr<Communicator> comm = make_cpu_communicator(read_dist_env(), dist);
      const std::string name = a->model == "all" ? "tiny" : a->model;
      bench::DpStepResult r = bench::bench_dp_step(*comm, bench::named_model(name), dist, a->batch, a->seq, a->warmup,
                                                   a->steps, a->worker_independent);
      if (comm->rank() == 0) {
        std::ofstream f(a->dp_worker);
        f << dp_row_json(r, a->progress, dist.overlap, dist.bucket_mb, a->worker_independent).dump() << "\n";
        if (!f) throw UserError(a->dp_worker + ": cannot write");
      }
      return;
    }
    if (a->ranks > 0) {
      require_not_a_rank("--ranks");
      const std::string name = a->model == "all" ? "tiny" : a->model;
      bench::named_model(name);  // validate before starting anything
      (void)local_mpirun_argv(a->ranks, a->threads_per_rank);  // ranks x threads within the cores
      std::vector<double> caps;
      std::stringstream ss(a->bucket_mb);
      for (std::string item; std::getline(ss, item, ',');) {
        double v = 0;
        try {
          v = std::stod(item);
        } catch (...) {
          v = -1;
        }
        if (!(v > 0)) throw UserError("--bucket-mb: expected positive numbers separated by commas, got '" + a->bucket_mb + "'");
        caps.push_back(v);
      }
      const std::filesystem::path tmp = std::filesystem::temp_directory_path() /
                                        ("leasetrain-bench-" + std::to_string(::getpid()));
      std::filesystem::create_directories(tmp);
      const std::string exe = self_exe();
      auto common = [&](const std::string& out) {
        return std::vector<std::string>{exe, "bench", "step", "--model", name, "--batch", std::to_string(a->batch),
                                        "--seq", std::to_string(a->seq), "--warmup", std::to_string(a->warmup),
                                        "--steps", std::to_string(a->steps), "--progress", a->progress,
                                        "--first-bucket-mb", std::to_string(a->first_bucket_mb), "--zero",
                                        std::to_string(a->zero), "--dp-worker", out};
      };
      auto run_config = [&](int np, double cap, bool overlap, int k, bool independent = false) {
        const std::string out = (tmp / ("row" + std::to_string(k) + ".json")).string();
        std::vector<std::string> argv = common(out);
        for (const std::string& x : {std::string("--dp-bucket-mb"), std::to_string(cap), std::string("--dp-overlap"),
                                     std::string(overlap ? "true" : "false"), std::string("--dp-independent"),
                                     std::string(independent ? "true" : "false")})
          argv.push_back(x);
        std::string cmd;
        const std::string t = std::to_string(a->threads_per_rank);
        if (np == 1)  // the baseline: one plain process, the same threads as each rank
          cmd = "OMP_NUM_THREADS=" + t + " OPENBLAS_NUM_THREADS=" + t + " " + shell_join(argv);
        else
          cmd = shell_join(local_mpirun_argv(np, a->threads_per_rank)) + " " + shell_join(argv);
        if (run_shell(cmd) != 0) throw UserError("bench step --ranks: the run failed: " + cmd);
        json j;
        try {
          j = read_json_file(out, "bench step result");
        } catch (const UserError& e) {
          throw UserError(std::string(e.what()) + ": no result from: " + cmd);
        }
        return j;
      };
      std::printf("bench step --ranks %d: model %s, batch %d x %d per rank, %d thread%s per rank, median of %d steps "
                  "after %d warm-up, %d round%s, MPI progress %s%s | load average %s\n",
                  a->ranks, name.c_str(), a->batch, a->seq, a->threads_per_rank, a->threads_per_rank == 1 ? "" : "s",
                  a->steps, a->warmup, a->repeat, a->repeat == 1 ? "" : "s", a->progress.c_str(),
                  a->zero ? ", ZeRO-1" : "", load_average().c_str());
      std::fflush(stdout);
      std::printf("%5s %-36s %7s %8s %8s %10s %10s %7s %10s\n", "ranks", "buckets", "overlap", "ms/step", "weak eff",
                  "comm alone", "in-step", "hidden", "wait");
      // Every configuration once per round, rounds interleaved, so a change in the machine's load
      // (it is shared) hits all rows alike; each row reports the median over rounds.
      struct Config {
        int np;
        double cap;
        bool overlap, independent;
        std::string label;
      };
      std::vector<Config> configs = {{1, caps.front(), true, false, "-"},
                                     {a->ranks, caps.front(), true, true, "independent (no communication)"}};
      for (double c : caps) configs.push_back({a->ranks, c, true, false, ""});
      configs.push_back({a->ranks, caps.back(), false, false, ""});  // no overlap: every bucket after backward
      std::vector<std::vector<json>> runs(configs.size());
      int k = 0;
      for (int round = 0; round < a->repeat; round++)
        for (size_t c = 0; c < configs.size(); c++)
          runs[c].push_back(run_config(configs[c].np, configs[c].cap, configs[c].overlap, k++, configs[c].independent));
      auto median_of = [](std::vector<json>& v, const char* key) {
        std::vector<double> x;
        for (const json& j : v) x.push_back(j[key].get<double>());
        std::sort(x.begin(), x.end());
        return x.size() % 2 ? x[x.size() / 2] : 0.5 * (x[x.size() / 2 - 1] + x[x.size() / 2]);
      };
      json rows = json::array();
      const double t1 = median_of(runs[0], "median_ms");
      for (size_t c = 0; c < configs.size(); c++) {
        json j = runs[c].back();
        for (const char* key : {"median_ms", "min_ms", "wait_after_backward_ms", "comm_in_step_ms", "comm_alone_ms",
                                "hidden"})
          j[key] = median_of(runs[c], key);
        j["rounds"] = runs[c];
        const double tn = j["median_ms"].get<double>();
        j["weak_scaling_efficiency"] = t1 / tn;
        if (configs[c].np == 1 || configs[c].independent) {
          std::printf("%5d %-36s %7s %8.2f %7.1f%% %10s %10s %7s %10s\n", configs[c].np, configs[c].label.c_str(), "-",
                      tn, 100 * t1 / tn, "-", "-", "-", "-");
        } else {
          std::printf("%5d %-36s %7s %8.2f %7.1f%% %7.2f ms %7.2f ms %6.0f%% %7.2f ms\n", configs[c].np,
                      j["buckets"].get<std::string>().substr(0, 36).c_str(), configs[c].overlap ? "yes" : "no", tn,
                      100 * t1 / tn, j["comm_alone_ms"].get<double>(), j["comm_in_step_ms"].get<double>(),
                      100 * j["hidden"].get<double>(), j["wait_after_backward_ms"].get<double>());
        }
        rows.push_back(j);
      }
      std::printf("load average after: %s\n", load_average().c_str());
      std::printf("weak eff = 1-rank ms / N-rank ms at the same per-rank batch (medians); comm alone = every bucket "
                  "reduced with nothing else running; in-step = time the collectives ran with every rank present; "
                  "hidden = share of in-step before this rank's backward ended; wait = after backward, for "
                  "reductions and slower ranks\n");
      std::error_code ec;
      std::filesystem::remove_all(tmp, ec);
      if (!a->json_out.empty()) write_json_output(a->json_out, rows);
      return;
    }
    std::vector<std::string> names = a->model == "all" ? std::vector<std::string>{"tiny", "124m"}
                                                       : std::vector<std::string>{a->model};
    json results = json::array();
    std::printf("bench step: device %s, %d threads, batch %d x %d tokens, median of %d steps after %d warm-up\n",
                a->device.c_str(), omp_get_max_threads(), a->batch, a->seq, a->steps, a->warmup);
    std::printf("%-6s %9s %10s %10s %10s %9s", "model", "params", "ms/step", "min ms", "tokens/s", "GFLOP/s");
    if (a->torch) {
      std::printf(" %12s %9s", ("torch " + std::to_string(omp_get_max_threads()) + "t ms").c_str(), "speedup");
      if (omp_get_max_threads() > 1) std::printf(" %12s %9s", "torch 1t ms", "speedup");
    }
    std::printf("\n");
    for (const std::string& name : names) {
      BackendOptions be;
      be.device = a->device == "cuda" ? Device::CUDA : Device::CPU;
      bench::StepBenchResult r =
          bench::bench_step(name, bench::named_model(name), a->batch, a->seq, a->warmup, a->steps, be);
      json j{{"model", name},          {"device", a->device},   {"threads", omp_get_max_threads()},
             {"batch", r.B},           {"seq", r.T},            {"params", r.params},
             {"ms", r.ms},             {"median_ms", r.median_ms}, {"min_ms", r.min_ms},
             {"max_ms", r.max_ms},     {"tokens_per_s", r.tokens_per_s}, {"gflops", r.gflops},
             {"flops_formula", "6*N + 6*L*C*T per token (llm.c)"}};
      std::printf("%-6s %8.2fM %10.2f %10.2f %10.0f %9.1f", name.c_str(), r.params / 1e6, r.median_ms, r.min_ms,
                  r.tokens_per_s, r.gflops);
      if (a->torch) {
        // PyTorch at our thread count (as a PyTorch user runs it) and, when that is more than
        // one, on one thread too: on small models its intra-op pool can cost more than it
        // gains, and the ratio that counts is against its faster configuration.
        const int threads = omp_get_max_threads();
        double best = 0;  // the faster configuration's median
        for (int th : threads > 1 ? std::vector<int>{threads, 1} : std::vector<int>{threads}) {
          const json peer = run_torch_peer(name, a->batch, a->seq, a->warmup, a->steps, th);
          if (peer.is_null()) continue;
          const double ms = peer["median_ms"].get<double>();
          const std::string key = th == threads ? "" : "_1thread";
          j["torch" + key] = peer;
          j["speedup_vs_torch" + key] = ms / r.median_ms;
          std::printf(" %12.2f %8.2fx", ms, ms / r.median_ms);
          if (best == 0 || ms < best) best = ms;
        }
        if (best > 0) j["speedup_vs_torch_best"] = best / r.median_ms;
      }
      std::printf("\n");
      std::fflush(stdout);
      results.push_back(j);
    }
    if (!a->json_out.empty()) write_json_output(a->json_out, results);
  });

  struct AllReduceCli {
    std::string b = "8", e = "32M", backend = "mpi", progress = "thread", json_out;
    double f = 2;
    int n = 20, w = 5, c = 1, ranks = 0;
    std::string op = "sum";
  };
  auto ar = std::make_shared<AllReduceCli>();
  CLI::App* r = bench->add_subcommand("allreduce", "All-reduce bandwidth on the communicators (nccl-tests' all_reduce_perf)");
  r->footer("Run it under mpirun (e.g. mpirun -np 2 leasetrain bench allreduce -b 8 -e 32M -f 2), or give --ranks N to "
            "start mpirun on this host. Columns as nccl-tests: size count type redop time algbw busbw #wrong, with "
            "busbw = algbw x 2(n-1)/n; inputs are small integers, so every result is checked exactly (-c).");
  r->add_option("-b,--minbytes", ar->b, "Smallest message (bytes; K, M, G suffixes)")->capture_default_str();
  r->add_option("-e,--maxbytes", ar->e, "Largest message")->capture_default_str();
  r->add_option("-f,--stepfactor", ar->f, "Size multiplier between rows")->check(in_range(1.0, 1e6))
      ->capture_default_str();
  r->add_option("-n,--iters", ar->n, "Timed iterations per size")->check(in_range(1, 1000000))->capture_default_str();
  r->add_option("-w,--warmup_iters", ar->w, "Untimed iterations first")->check(in_range(0, 1000000))
      ->capture_default_str();
  r->add_option("-c,--check", ar->c, "Checked iterations per size (0: no check)")->check(in_range(0, 1000000))
      ->capture_default_str();
  r->add_option("-o,--op", ar->op, "sum, avg, max or min")->capture_default_str();
  r->add_option("--backend", ar->backend, "mpi (host buffers) or nccl (GPU)")->check(CLI::IsMember({"mpi", "nccl"}))
      ->capture_default_str();
  r->add_option("--progress", ar->progress, "MPI progress: thread or poll")->check(CLI::IsMember({"thread", "poll"}))
      ->capture_default_str();
  r->add_option("--ranks", ar->ranks, "Start mpirun -np N on this host")->check(in_range(1, 1024));
  r->add_option("--json", ar->json_out, "Also write the rows as JSON to this file ('-' for stdout)");
  r->callback([ar] {
    bench::AllReduceArgs a;
    a.min_bytes = parse_size("-b", ar->b);
    a.max_bytes = parse_size("-e", ar->e);
    a.factor = ar->f;
    a.iters = ar->n;
    a.warmup = ar->w;
    a.check = ar->c;
    a.op = ar->op;
    bench::parse_redop(a.op);
    bench::allreduce_sizes(a);  // flag errors before anything starts
    if (ar->ranks > 0) {
      require_not_a_rank("--ranks");
      std::vector<std::string> argv = local_mpirun_argv(ar->ranks);
      for (const std::string& x : {self_exe(), std::string("bench"), std::string("allreduce"), std::string("-b"), ar->b,
                                   std::string("-e"), ar->e, std::string("-f"), std::to_string(ar->f),
                                   std::string("-n"), std::to_string(ar->n), std::string("-w"), std::to_string(ar->w),
                                   std::string("-c"), std::to_string(ar->c), std::string("-o"), ar->op,
                                   std::string("--backend"), ar->backend, std::string("--progress"), ar->progress})
        argv.push_back(x);
      if (!ar->json_out.empty()) {
        argv.push_back("--json");
        argv.push_back(ar->json_out);
      }
      const int rc = run_shell(shell_join(argv));
      if (rc != 0) throw UserError("bench allreduce --ranks: mpirun failed (exit " + std::to_string(rc) + ")");
      return;
    }
    const DistEnv env = read_dist_env();
    DistConfig dist;
    dist.progress = ar->progress;
    std::unique_ptr<Communicator> host = make_cpu_communicator(env, dist);
    std::vector<bench::AllReduceRow> rows;
    std::string backend = ar->backend == "mpi" ? host->backend() : "nccl";
    if (ar->backend == "mpi") {
      if (host->rank() == 0) bench::print_allreduce_header(host->backend() + (host->backend() == "mpi" ? " (progress " + ar->progress + ")" : ""), host->world());
      rows = bench::bench_allreduce(*host, a);
    } else {
#ifdef LEASETRAIN_HAVE_NCCL
      if (host->rank() == 0) bench::print_allreduce_header("nccl", host->world());
      rows = bench::bench_allreduce_nccl(host->world() > 1 ? host.get() : nullptr, host->rank(), host->world(),
                                         env.local_rank, a);
#else
      throw UserError("--backend nccl: this build has no NCCL (needs the CUDA toolkit and NCCL at configure time)");
#endif
    }
    if (host->rank() != 0) return;
    json out = json::array();
    int64_t wrong = 0;
    for (const auto& row : rows) {
      bench::print_allreduce_row(row);
      wrong += row.wrong;
      out.push_back({{"size", row.bytes}, {"count", row.count}, {"type", row.type}, {"redop", row.redop},
                     {"time_us", row.time_us}, {"algbw_gbps", row.algbw}, {"busbw_gbps", row.busbw},
                     {"wrong", row.wrong}, {"ranks", host->world()}, {"backend", backend}});
    }
    std::printf("# out of bounds values : %lld %s\n", (long long)wrong, wrong ? "FAILED" : "OK");
    if (!ar->json_out.empty()) write_json_output(ar->json_out, out);
    if (wrong) throw UserError("bench allreduce: " + std::to_string(wrong) + " wrong elements");
  });
}

}  // namespace lt::cli
