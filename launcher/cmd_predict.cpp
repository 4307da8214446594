// `leasetrain plan --predict`: what a training config would do on 1, 2, 4, ... nodes of each
// GPU model measured by a suite result, from the step-time model (benchmarks/predict.h).
#include "launcher/cmd_predict.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "benchmarks/compare.h"
#include "benchmarks/predict.h"
#include "launcher/cli_checks.h"
#include "launcher/commands.h"
#include "runtime/config.h"
#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/ddp.h"
#include "runtime/model.h"

namespace lt::cli {

using json = nlohmann::json;
namespace pr = lt::predict;

void add_predict_options(CLI::App* cmd, PredictArgs& a) {
  const char* g = "Prediction (--predict)";
  cmd->add_flag("--predict", a.predict,
                "Predict step time, tokens/s, MFU, exposed communication and cost of a training config over node "
                "counts, from suite results (see docs/benchmarks.md, 'The step-time model')")
      ->group(g);
  cmd->add_option("--config", a.config, "With --predict: the training config (TOML) to predict")->group(g);
  cmd->add_option("--suite", a.suites,
                  "With --predict: a `bench suite --json` result, one per GPU model (repeat to compare them)")
      ->group(g);
  cmd->add_option("--price", a.prices, "With --predict: $ per GPU-hour, one for all suites or one per --suite")
      ->group(g);
  cmd->add_option("--tokens", a.tokens,
                  "With --predict: the token budget (10e9, 10B, 300M) for the time and cost columns")
      ->group(g);
  cmd->add_option("--gpus-per-node", a.gpus_per_node,
                  "With --predict: ranks per node (default: the lease's, else the suite machine's GPUs, or its "
                  "all-reduce ranks on a CPU)")
      ->check(in_range(1, 1024))->group(g);
  cmd->add_option("--max-nodes", a.max_nodes, "With --predict: rows for 1, 2, 4, ... up to this (default: the lease's "
                  "nodes with --manifest, else 16)")
      ->check(in_range(1, 1 << 16))->group(g);
  cmd->add_option("--nic-gbps", a.nic_gbps,
                  "With --predict: each node's NIC line rate in total, Gbit/s (8 x 400 = 3200); needed past one node "
                  "unless --inter-allreduce is given")
      ->group(g);
  cmd->add_option("--nic-efficiency", a.nic_efficiency,
                  "With --predict: the share of the line rate NCCL's bus bandwidth reaches across nodes")
      ->capture_default_str()->group(g);
  cmd->add_option("--inter-latency-us", a.inter_latency_us, "With --predict: per-hop latency across nodes, us")
      ->capture_default_str()->group(g);
  cmd->add_option("--inter-allreduce", a.inter_allreduce,
                  "With --predict: a `bench allreduce --json` sweep measured with one rank on each of --inter-nodes "
                  "nodes; fitted instead of --nic-gbps")
      ->group(g);
  cmd->add_option("--inter-nodes", a.inter_nodes, "With --inter-allreduce: the nodes it ran across")
      ->check(in_range(2, 1 << 16))->capture_default_str()->group(g);
  cmd->add_option("--intra-allreduce", a.intra_allreduce,
                  "With --predict: a `bench allreduce --json` sweep on --intra-ranks ranks of one node, fitted instead "
                  "of the suites' own sweeps")
      ->group(g);
  cmd->add_option("--intra-ranks", a.intra_ranks, "With --intra-allreduce: the ranks it ran on")
      ->check(in_range(2, 1 << 16))->capture_default_str()->group(g);
  cmd->add_option("--algo", a.algo, "With --predict: all-reduce algorithm, ring or tree")
      ->check(CLI::IsMember({"ring", "tree"}))->capture_default_str()->group(g);
  cmd->add_option("--global-batch", a.global_batch,
                  "With --predict: hold this many sequences per step over node counts, split as the trainer does "
                  "(default: hold the config's per-GPU batch, so the global batch grows with the GPUs)")
      ->check(in_range<int64_t>(1, int64_t(1) << 40))->group(g);
  cmd->add_option("--knee", a.knee,
                  "With --predict: the knee is the node count past which an added node adds less than this share "
                  "of one node's tokens/s")
      ->capture_default_str()->group(g);
  cmd->add_option("--gemm-impl", a.gemm_impl,
                  "With --predict: take the GEMM rates of this kernel's rows (cublas, openblas) instead of the "
                  "trainer's own (wgmma on Hopper, mma.sync on other GPUs, leasetrain on a CPU): a what-if")
      ->group(g);
  cmd->add_option("--compute-scale", a.compute_scale,
                  "With --predict: what if every measured kernel rate and the memory bandwidth were this many times "
                  "what the suite measured (0.5: ranks sharing a CPU core two to one)")
      ->capture_default_str()->group(g);
  cmd->add_option("--plot", a.plot_dir, "With --predict: write predict.png and predict.svg (matplotlib) here")
      ->group(g);
}

namespace {

double parse_count(const std::string& s, const std::string& what) {
  // 10e9, 10B, 300M, 2.5T: a number with an optional K/M/B(G)/T suffix.
  std::size_t used = 0;
  double v = -1;
  try {
    v = std::stod(s, &used);
  } catch (...) {
    used = 0;
  }
  std::string rest = s.substr(used);
  double mult = 1;
  if (rest == "K" || rest == "k") mult = 1e3;
  else if (rest == "M") mult = 1e6;
  else if (rest == "B" || rest == "G") mult = 1e9;
  else if (rest == "T") mult = 1e12;
  else if (!rest.empty()) used = 0;
  if (used == 0 || !(v > 0) || !std::isfinite(v * mult))
    throw UserError(what + ": expected a positive count such as 10e9, 10B or 300M, got '" + s + "'");
  return v * mult;
}

void check_positive(double v, const std::string& what, bool allow_zero = false) {
  if (!std::isfinite(v) || v < 0 || (!allow_zero && v == 0))
    throw UserError(what + ": expected a number " + (allow_zero ? ">= 0" : "> 0") + ", got " + std::to_string(v));
}

// A `bench allreduce --json` file: [{size, time_us, ...}, ...].
std::vector<pr::CurvePoint> read_sweep(const std::string& path) {
  const json rows = read_json_file(path, "all-reduce sweep");
  if (!rows.is_array() || rows.empty())
    throw UserError(path + ": expected a non-empty array of rows as `bench allreduce --json` writes");
  std::vector<pr::CurvePoint> pts;
  for (size_t i = 0; i < rows.size(); i++) {
    const json& r = rows[i];
    if (!r.is_object() || !r.contains("size") || !r["size"].is_number() || !r.contains("time_us") ||
        !r["time_us"].is_number() || !(r["size"].get<double>() > 0) || !(r["time_us"].get<double>() > 0))
      throw UserError(path + ": row " + std::to_string(i) + ": expected numeric size > 0 and time_us > 0");
    pts.push_back({r["size"].get<double>(), r["time_us"].get<double>() * 1e-6});
  }
  return pts;
}

std::string fmt(const char* f, double v) {
  char b[64];
  // A fixed-point form longer than the buffer (1e100 tokens' hours) would be cut to its first
  // digits, a wrong number: exponent form instead.
  const int n = std::snprintf(b, sizeof b, f, v);
  if (n < 0 || n >= (int)sizeof b) {
    const std::string spec(f);
    const size_t at = spec.find('%'), end = spec.find_first_of("fgeE", at);
    std::snprintf(b, sizeof b, (spec.substr(0, at) + "%.4g" + spec.substr(end + 1)).c_str(), v);
  }
  return b;
}

// "SOURCE: alpha 1.0 us, busbw 475 GB/s (14 sizes, max fit error 0%)": a fitted link, as printed.
std::string describe_fit(const std::string& source, const pr::LinkFit& f) {
  return source + ": alpha " + fmt("%.1f us", f.link.alpha_s * 1e6) + ", busbw " +
         fmt("%.3g GB/s", f.link.busbw_Bps / 1e9) + " (" + std::to_string(f.points_used) + " sizes, max fit error " +
         fmt("%.0f%%", 100 * f.max_rel_err) + ")";
}

}  // namespace

void run_predict(const PredictArgs& a, const LeaseTopology* lease) {
  if (a.config.empty()) throw UserError("plan --predict: --config: expected the training config (TOML) to predict");
  if (a.suites.empty()) throw UserError("plan --predict: --suite: expected at least one `bench suite --json` result");
  if (!a.prices.empty() && a.prices.size() != 1 && a.prices.size() != a.suites.size())
    throw UserError("plan --predict: --price: expected one price or one per --suite (" +
                    std::to_string(a.suites.size()) + "), got " + std::to_string(a.prices.size()));
  for (double p : a.prices) check_positive(p, "plan --predict: --price", true);
  if (!(a.knee > 0 && a.knee <= 1)) throw UserError("plan --predict: --knee: expected a share in (0, 1], got " + std::to_string(a.knee));
  check_positive(a.nic_efficiency, "plan --predict: --nic-efficiency");
  if (a.nic_efficiency > 1) throw UserError("plan --predict: --nic-efficiency: expected a share in (0, 1], got " + std::to_string(a.nic_efficiency));
  check_positive(a.inter_latency_us, "plan --predict: --inter-latency-us", true);
  check_positive(a.compute_scale, "plan --predict: --compute-scale");
  const double tokens = a.tokens.empty() ? 0.0 : parse_count(a.tokens, "plan --predict: --tokens");

  const TrainConfig cfg = load_train_config(a.config);
  const std::vector<ParamInfo> layout = gpt_param_layout(cfg.model);
  const double n_params = (double)(layout.back().offset + layout.back().numel);  // with the vocabulary padding
  const int max_nodes = a.max_nodes > 0 ? a.max_nodes : lease ? lease->nodes : 16;
  std::vector<int> counts;
  for (int n = 1; n < max_nodes; n *= 2) counts.push_back(n);
  counts.push_back(max_nodes);

  // Measured sweeps are fitted over the sizes the job sends: from a quarter of its smallest
  // gradient bucket up (predict.h, fit_alpha_beta), in bf16 on a GPU and fp32 on a CPU.
  int64_t min_bucket = INT64_MAX;
  for (const Bucket& b : plan_buckets(layout, cfg.dist.first_bucket_mb, cfg.dist.bucket_mb, 1))
    min_bucket = std::min<int64_t>(min_bucket, b.numel());
  if (a.inter_allreduce.empty() && !(a.nic_gbps > 0) && max_nodes > 1)
    throw UserError("plan --predict: --nic-gbps: expected each node's NIC line rate (Gbit/s) to predict past one node "
                    "(or --inter-allreduce, or --max-nodes 1)");
  if (a.inter_allreduce.empty() && a.nic_gbps != 0) check_positive(a.nic_gbps, "plan --predict: --nic-gbps");
  const std::vector<pr::CurvePoint> inter_sweep =
      a.inter_allreduce.empty() ? std::vector<pr::CurvePoint>{} : read_sweep(a.inter_allreduce);
  json out{{"schema", "leasetrain.predict/1"},
           {"config", a.config},
           {"model", {{"n_layer", cfg.model.n_layer}, {"n_head", cfg.model.n_head}, {"n_embd", cfg.model.n_embd},
                      {"vocab_size", cfg.model.vocab_size}, {"block_size", cfg.model.block_size}}},
           {"params", n_params},
           {"seq_len", cfg.seq_len},
           {"zero", cfg.dist.zero},
           {"algo", a.algo},
           {"token_budget", tokens},
           {"knee_fraction", a.knee},
           {"machines", json::array()}};
  if (lease) out["lease"] = {{"id", lease->id}, {"nodes", lease->nodes}, {"gpus_per_node", lease->gpus_per_node},
                             {"hours_left", lease->hours_left}, {"gpu_hours_left", lease->gpu_hours_left}};
  std::string text;
  text += "plan --predict: " + a.config + "\n  " + fmt("%.1fM", n_params / 1e6) + " parameters, " +
          std::to_string(cfg.seq_len) + "-token sequences, " +
          (a.global_batch > 0 ? "global batch " + std::to_string(a.global_batch) + " sequences held"
                              : "per GPU " + std::to_string(cfg.micro_batch) + " x " + std::to_string(cfg.grad_accum) +
                                    " sequences held") +
          (cfg.dist.zero ? ", ZeRO-1" : "") + ", " + a.algo + " all-reduce\n";
  if (lease)
    text += "lease " + lease->id + ": " + std::to_string(lease->nodes) + " nodes x " +
            std::to_string(lease->gpus_per_node) + " slots, " + fmt("%.1f", lease->hours_left) +
            " h left in its window, " + fmt("%.0f", lease->gpu_hours_left) + " GPU-hours left\n";

  for (size_t i = 0; i < a.suites.size(); i++) {
    const std::string& file = a.suites[i];
    const json suite = bench::load_suite_result(file);
    pr::SuiteInputs in = pr::suite_inputs(suite, file, cfg.model, cfg.seq_len, a.gemm_impl);
    for (pr::GemmRate& r : in.rates.gemm) r.tflops *= a.compute_scale;
    in.rates.attention_fwd_tflops *= a.compute_scale;
    in.rates.attention_bwd_tflops *= a.compute_scale;
    in.rates.memory_gbps *= a.compute_scale;
    const int g = a.gpus_per_node > 0 ? a.gpus_per_node
                  : lease                ? lease->gpus_per_node
                  : in.device == "cuda"  ? in.gpus
                                         : std::max(1, in.allreduce_ranks);
    pr::Network net;
    net.algo = a.algo == "tree" ? pr::Algo::Tree : pr::Algo::Ring;
    std::string intra_text = "not needed (1 rank per node)";
    double intra_err = -1;
    if (g > 1 && !a.intra_allreduce.empty()) {
      in.allreduce = read_sweep(a.intra_allreduce);
      in.allreduce_ranks = a.intra_ranks;
      in.allreduce_backend = a.intra_allreduce;
    }
    const double fit_from = (double)min_bucket * in.act_bytes / 4;
    if (g > 1) {
      if (in.allreduce.size() < 2)
        throw UserError(file + ": results: no all-reduce sweep to fit the link between a node's " + std::to_string(g) +
                        " ranks (the suite measures it on a machine with 2 or more GPUs, or CPU ranks)");
      const pr::LinkFit f = pr::fit_alpha_beta(in.allreduce, in.allreduce_ranks, 1, net.algo, fit_from);
      net.intra = f.link;
      intra_err = f.max_rel_err;
      intra_text = describe_fit(in.allreduce_backend + " sweep on " + std::to_string(in.allreduce_ranks) + " ranks", f);
    }
    pr::Link inter;
    std::string inter_text;
    double inter_fit_err = -1;
    if (!inter_sweep.empty()) {
      const pr::LinkFit f = pr::fit_alpha_beta(inter_sweep, 1, a.inter_nodes, net.algo, fit_from);
      inter = f.link;
      inter_fit_err = f.max_rel_err;
      inter_text = describe_fit(a.inter_allreduce + " on " + std::to_string(a.inter_nodes) + " nodes", f);
    } else if (a.nic_gbps > 0) {
      inter.busbw_Bps = a.nic_gbps * 1e9 / 8 * a.nic_efficiency;
      inter.alpha_s = a.inter_latency_us * 1e-6;
      inter_text = "NIC " + fmt("%g", a.nic_gbps) + " Gbit/s x " + fmt("%g", a.nic_efficiency) + " (datasheet)";
    }
    net.inter = inter;
    pr::PlanSetup setup;
    setup.job.model = cfg.model;
    setup.job.micro_batch = cfg.micro_batch;
    setup.job.seq_len = cfg.seq_len;
    setup.job.grad_accum = cfg.grad_accum;
    setup.job.ranks_per_node = g;
    setup.job.dist = cfg.dist;
    setup.job.act_bytes = in.act_bytes;
    setup.job.async_progress = !(in.device == "cpu" && cfg.dist.progress == "poll");
    setup.global_batch = a.global_batch;
    setup.node_counts = counts;
    setup.price_per_gpu_hour = a.prices.empty() ? 0 : a.prices.size() == 1 ? a.prices[0] : a.prices[i];
    setup.token_budget = tokens;
    setup.knee_fraction = a.knee;
    const pr::PlanTable t = pr::plan_table(setup, in.rates, net);

    json m{{"file", file},
           {"label", in.label},
           {"device", in.device},
           {"gpus_per_node", g},
           {"price_per_gpu_hour", setup.price_per_gpu_hour},
           {"inputs", {{"peak_tflops", in.rates.peak_tflops}, {"gemm_impl", in.gemm_impl},
                       {"gemm_shapes", in.rates.gemm.size()}, {"attention_fwd_tflops", in.rates.attention_fwd_tflops},
                       {"attention_bwd_tflops", in.rates.attention_bwd_tflops}, {"memory_gbps", in.rates.memory_gbps},
                       {"act_bytes", in.act_bytes}, {"compute_scale", a.compute_scale}}},
           {"network", {{"intra_alpha_us", g > 1 ? net.intra.alpha_s * 1e6 : 0.0},
                        {"intra_busbw_gbps", g > 1 ? net.intra.busbw_Bps / 1e9 : 0.0},
                        {"intra_fit_max_rel_err", intra_err},
                        {"inter_alpha_us", inter.alpha_s * 1e6},
                        {"inter_busbw_gbps", inter.busbw_Bps / 1e9},
                        {"inter_fit_max_rel_err", inter_fit_err}}},
           {"knee_nodes", t.knee_nodes},
           {"rows", json::array()}};
    text += "\n" + in.label + ": " + file + "\n  rates: peak " + fmt("%.4g", in.rates.peak_tflops) + " TFLOP/s, GEMM " +
            in.gemm_impl + " (" + std::to_string(in.rates.gemm.size()) + " shapes), attention " +
            fmt("%.3g", in.rates.attention_fwd_tflops) + "/" + fmt("%.3g", in.rates.attention_bwd_tflops) +
            " TFLOP/s fwd/bwd, memory " + fmt("%.4g", in.rates.memory_gbps) + " GB/s\n";
    text += "  within a node: " + intra_text + "\n";
    if (max_nodes > 1) text += "  across nodes: " + inter_text + "\n";
    const bool cost = setup.price_per_gpu_hour > 0 && tokens > 0;
    char line[512];
    std::snprintf(line, sizeof line, "  %5s %5s %7s %9s %11s %6s %9s %6s", "nodes", "GPUs", "mb x acc", "step ms",
                  "tokens/s", "MFU", "exposed", "eff");
    text += line;
    if (tokens > 0) text += "     hours";
    if (cost) text += "      cost $";
    text += "\n";
    for (const pr::PlanRow& r : t.rows) {
      json jr{{"nodes", r.nodes}, {"gpus", r.gpus}, {"feasible", r.feasible}};
      if (!r.feasible) {
        jr["note"] = r.note;
        m["rows"].push_back(jr);
        std::snprintf(line, sizeof line, "  %5d %5d  %s\n", r.nodes, r.gpus, r.note.c_str());
        text += line;
        continue;
      }
      const pr::Prediction& p = r.p;
      jr.update({{"micro_batch", r.micro_batch}, {"grad_accum", r.grad_accum}, {"step_s", p.step_s},
                 {"forward_s", p.forward_s}, {"backward_s", p.backward_s}, {"optimizer_s", p.optimizer_s},
                 {"grad_comm_s", p.grad_comm_s}, {"allgather_s", p.allgather_s}, {"exposed_comm_s", p.exposed_comm_s},
                 {"exposed_fraction", p.exposed_comm_s / p.step_s}, {"tokens_per_s", p.tokens_per_s},
                 {"mfu", p.mfu}, {"scaling_efficiency", p.scaling_efficiency}, {"buckets", p.buckets.size()}});
      if (tokens > 0) jr["hours"] = r.hours;
      if (cost) jr["cost"] = r.cost;
      std::snprintf(line, sizeof line, "  %5d %5d %3d x %-3d %9s %11.4g %5s%% %8.1f%% %5.1f%%", r.nodes, r.gpus,
                    r.micro_batch, r.grad_accum, fmt("%.2f", 1e3 * p.step_s).c_str(), p.tokens_per_s,
                    fmt("%.1f", 100 * p.mfu).c_str(), 100 * p.exposed_comm_s / p.step_s, 100 * p.scaling_efficiency);
      text += line;
      if (tokens > 0) text += fmt("  %8.2f", r.hours);
      if (cost) text += fmt("  %10.2f", r.cost);
      if (lease && tokens > 0 && r.hours > lease->hours_left) text += "  past the lease's window";
      if (lease && tokens > 0 && r.hours * r.gpus > lease->gpu_hours_left) text += "  past the lease's GPU-hours";
      if (lease && tokens > 0) {
        jr["within_window"] = r.hours <= lease->hours_left;
        jr["within_gpu_hours"] = r.hours * r.gpus <= lease->gpu_hours_left;
      }
      m["rows"].push_back(jr);
      text += "\n";
    }
    int last_feasible = 0;
    for (const pr::PlanRow& r : t.rows)
      if (r.feasible) last_feasible = r.nodes;
    if (t.knee_nodes > 0 && t.knee_nodes == last_feasible && t.rows.size() > 1)
      text += "  no knee up to " + std::to_string(last_feasible) + " nodes: every added node adds at least " +
              fmt("%.0f%%", 100 * a.knee) + " of one node's tokens/s\n";
    else if (t.knee_nodes > 0 && t.rows.size() > 1)
      text += "  knee: " + std::to_string(t.knee_nodes) + " node" + (t.knee_nodes == 1 ? "" : "s") +
              " (past it, an added node adds less than " + fmt("%.0f%%", 100 * a.knee) + " of one node's tokens/s)\n";
    out["machines"].push_back(m);
  }
  text += "\nexposed: the share of the step that is communication only; eff: one GPU's step for the same per-GPU\n"
          "work / this step; MFU: llm.c's FLOP count (6N + 6LCT per token) / the suite's peak\n";
  if (a.json) std::cout << out.dump(2) << "\n";
  else std::cout << text;
  std::cout.flush();
  if (!a.plot_dir.empty()) {
    const std::filesystem::path data = std::filesystem::path(a.plot_dir) / "predict.json";
    std::filesystem::create_directories(a.plot_dir);
    write_json_output(data.string(), out);
    for (const std::string& f : bench::run_plot("predict", data.string(), a.plot_dir))
      std::fprintf(stderr, "wrote %s\n", f.c_str());
  }
}

}  // namespace lt::cli
