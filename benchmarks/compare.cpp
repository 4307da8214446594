// Suite results read back: compare, acceptance, run reports and plots (see compare.h).
#include "benchmarks/compare.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <toml++/toml.h>

#include "benchmarks/json_schema.h"
#include "runtime/dist_env.h"
#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/safe_path.h"

namespace lt::bench {

using json = nlohmann::json;

std::string source_file(const std::string& rel) {
  if (const char* home = std::getenv("LEASETRAIN_HOME")) return std::string(home) + "/" + rel;
  return std::string(LEASETRAIN_SOURCE_DIR) + "/" + rel;
}

json load_suite_result(const std::string& path) {
  const json doc = read_json_file(path, "suite result");
  if (std::string e = check_schema(doc, suite_schema()); !e.empty())
    throw UserError(path + ": " + e + " (schema leasetrain.bench.suite/1)");
  return doc;
}

std::string row_label(const json& row) {
  const json& p = row["params"];
  auto s = [&](const char* k) { return p.contains(k) ? (p[k].is_string() ? p[k].get<std::string>() : p[k].dump()) : ""; };
  const std::string suite = row["suite"], impl = row["impl"];
  const std::string gpu = p.contains("gpu") ? " gpu" + s("gpu") : "";
  if (suite == "gemm") return s("shape") + " " + s("M") + "x" + s("N") + "x" + s("K") + " " + impl + gpu;
  if (suite == "attention") return s("pass") + " hd" + s("head_dim") + " T" + s("T") + " " + impl;
  if (suite == "allreduce") return impl + " " + s("bytes") + " B x" + s("ranks");
  if (suite == "step") return s("model") + " " + s("batch") + "x" + s("seq") + " " + row["device"].get<std::string>();
  if (suite == "memory") return impl + " " + row["device"].get<std::string>() + gpu;
  return impl + " " + row["device"].get<std::string>() + gpu;
}

namespace {

const char* unit_of(const std::string& metric) {
  static const std::map<std::string, const char*> units = {
      {"tflops", "TFLOP/s"}, {"pct_peak", "% peak"},        {"gbps", "GB/s"},         {"busbw_gbps", "GB/s bus"},
      {"tokens_per_s", "tok/s"}, {"mfu", "MFU"},            {"tokens_per_dollar", "tok/$"}, {"identical", "same bits"}};
  auto it = units.find(metric);
  return it == units.end() ? "" : it->second;
}

std::string fmt(double v) {
  char b[32];
  if (v != 0 && (std::fabs(v) >= 1e6 || std::fabs(v) < 1e-3)) std::snprintf(b, sizeof b, "%.3e", v);
  else std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

}  // namespace

json compare_results(const std::vector<json>& results, const std::vector<std::string>& files,
                     const std::vector<double>& prices) {
  json cmp{{"machines", json::array()}, {"rows", json::array()}};
  for (size_t i = 0; i < results.size(); i++) {
    const json& m = results[i]["machine"];
    cmp["machines"].push_back(json{{"file", files[i]},
                                   {"label", m["label"]},
                                   {"device", results[i]["device"]},
                                   {"peak_tflops", m["peak"]["tflops"]},
                                   {"price_per_gpu_hour", i < prices.size() ? prices[i] : 0.0}});
  }
  // Row ids in first-seen order, with each file's row for that id.
  std::vector<std::string> ids;
  std::map<std::string, std::vector<const json*>> by_id;
  for (size_t i = 0; i < results.size(); i++)
    for (const json& r : results[i]["results"]) {
      const std::string id = r["id"];
      if (!by_id.count(id)) {
        ids.push_back(id);
        by_id[id] = std::vector<const json*>(results.size(), nullptr);
      }
      by_id[id][i] = &r;
    }
  for (const std::string& id : ids) {
    const std::vector<const json*>& per = by_id[id];
    const json* any = nullptr;
    for (const json* r : per)
      if (r && r->at("status") == "ok") any = any ? any : r;
    if (!any) continue;  // skipped everywhere
    std::vector<std::string> metrics = {(*any)["primary"].get<std::string>()};
    if ((*any)["suite"] == "gemm" || (*any)["suite"] == "attention") metrics.push_back("pct_peak");
    if ((*any)["suite"] == "step") {
      metrics.push_back("mfu");
      bool priced = false;
      for (double p : prices) priced = priced || p > 0;
      if (priced) metrics.push_back("tokens_per_dollar");
    }
    for (const std::string& metric : metrics) {
      json values = json::array();
      for (size_t i = 0; i < per.size(); i++) {
        const json* r = per[i];
        if (!r || r->at("status") != "ok") {
          values.push_back(nullptr);
          continue;
        }
        const json& m = r->at("metrics");
        if (metric == "tokens_per_dollar") {
          const double price = i < prices.size() ? prices[i] : 0.0;
          // tokens/s on one GPU x 3600 s per hour / $ per GPU-hour
          values.push_back(price > 0 && m.contains("tokens_per_s") ? json(m["tokens_per_s"].get<double>() * 3600.0 / price)
                                                                   : json(nullptr));
        } else {
          values.push_back(m.contains(metric) ? m[metric] : json(nullptr));
        }
      }
      json ratios = json::array();
      for (const json& v : values)
        ratios.push_back(!v.is_null() && !values[0].is_null() && values[0].get<double>() != 0
                             ? json(v.get<double>() / values[0].get<double>())
                             : json(nullptr));
      cmp["rows"].push_back(json{{"id", id},
                                 {"label", row_label(*any)},
                                 {"suite", (*any)["suite"]},
                                 {"metric", metric},
                                 {"unit", unit_of(metric)},
                                 {"values", values},
                                 {"ratios", ratios}});
    }
  }
  return cmp;
}

void print_compare(const json& cmp, std::FILE* out) {
  const json& ms = cmp["machines"];
  for (size_t i = 0; i < ms.size(); i++)
    std::fprintf(out, "[%c] %s: %s, %s, peak %s TFLOP/s%s\n", char('A' + i), ms[i]["file"].get<std::string>().c_str(),
                 ms[i]["label"].get<std::string>().c_str(), ms[i]["device"].get<std::string>().c_str(),
                 fmt(ms[i]["peak_tflops"].get<double>()).c_str(),
                 ms[i]["price_per_gpu_hour"].get<double>() > 0
                     ? (", $" + fmt(ms[i]["price_per_gpu_hour"].get<double>()) + "/GPU-hour").c_str()
                     : "");
  std::fprintf(out, "%-10s %-42s %-9s", "suite", "row", "metric");
  for (size_t i = 0; i < ms.size(); i++) std::fprintf(out, " %11c", char('A' + i));
  for (size_t i = 1; i < ms.size(); i++) std::fprintf(out, " %7c/A", char('A' + i));
  std::fprintf(out, "\n");
  for (const json& r : cmp["rows"]) {
    std::fprintf(out, "%-10s %-42s %-9s", r["suite"].get<std::string>().c_str(),
                 r["label"].get<std::string>().substr(0, 42).c_str(), r["unit"].get<std::string>().c_str());
    for (const json& v : r["values"]) std::fprintf(out, " %11s", v.is_null() ? "-" : fmt(v.get<double>()).c_str());
    for (size_t i = 1; i < r["ratios"].size(); i++) {
      const json& x = r["ratios"][i];
      char b[32];
      std::snprintf(b, sizeof b, "%.3fx", x.is_null() ? 0.0 : x.get<double>());
      std::fprintf(out, " %9s", x.is_null() ? "-" : b);
    }
    std::fprintf(out, "\n");
  }
}

// ---- acceptance -----------------------------------------------------------------------------

namespace {

struct Floors {
  double gemm_tflops = -1, memory_gbps = -1, allreduce_busbw_gbps = -1;  // -1: not set
};

struct Thresholds {
  double gemm_of_peak = 0.5, memory_of_peak = 0.7, allreduce_busbw_gbps = 0;
  bool repeat_bitwise = true;
  Floors cpu;
  std::vector<std::pair<std::string, Floors>> gpus;  // (match, floors) in file order
};

double number_field(const toml::table& t, const std::string& key, const std::string& where, const std::string& file) {
  const toml::node* n = t.get(key);
  if (!n) return -1;
  if (auto v = n->value<double>(); v && *v >= 0) return *v;
  throw UserError(file + ": " + where + key + ": expected a number >= 0");
}

void only_keys(const toml::table& t, std::initializer_list<const char*> keys, const std::string& where,
               const std::string& file) {
  for (const auto& [k, v] : t) {
    bool known = false;
    for (const char* x : keys) known = known || k.str() == x;
    if (!known) throw UserError(file + ": " + where + std::string(k.str()) + ": not a known field");
  }
}

Floors read_floors(const toml::table& t, const std::string& where, const std::string& file) {
  Floors f;
  f.gemm_tflops = number_field(t, "gemm_tflops", where, file);
  f.memory_gbps = number_field(t, "memory_gbps", where, file);
  f.allreduce_busbw_gbps = number_field(t, "allreduce_busbw_gbps", where, file);
  return f;
}

Thresholds read_thresholds(const std::string& file) {
  const toml::table root = parse_toml_file(file, "thresholds");
  only_keys(root, {"default", "cpu", "gpu"}, "", file);
  Thresholds t;
  if (const toml::node* d = root.get("default")) {
    if (!d->is_table()) throw UserError(file + ": default: expected a table");
    const toml::table& dt = *d->as_table();
    only_keys(dt, {"gemm_of_peak", "memory_of_peak", "allreduce_busbw_gbps", "repeat_bitwise"}, "default.", file);
    for (auto [key, dst] : {std::pair{"gemm_of_peak", &t.gemm_of_peak}, std::pair{"memory_of_peak", &t.memory_of_peak}}) {
      const double v = number_field(dt, key, "default.", file);
      if (v > 1) throw UserError(file + ": default." + key + ": expected a fraction between 0 and 1");
      if (v >= 0) *dst = v;
    }
    if (double v = number_field(dt, "allreduce_busbw_gbps", "default.", file); v >= 0) t.allreduce_busbw_gbps = v;
    if (const toml::node* r = dt.get("repeat_bitwise")) {
      if (!r->is_boolean()) throw UserError(file + ": default.repeat_bitwise: expected true or false");
      t.repeat_bitwise = r->value<bool>().value();
    }
  }
  if (const toml::node* c = root.get("cpu")) {
    if (!c->is_table()) throw UserError(file + ": cpu: expected a table");
    only_keys(*c->as_table(), {"gemm_tflops", "memory_gbps", "allreduce_busbw_gbps"}, "cpu.", file);
    t.cpu = read_floors(*c->as_table(), "cpu.", file);
  }
  if (const toml::node* g = root.get("gpu")) {
    const toml::array* arr = g->as_array();
    if (!arr) throw UserError(file + ": gpu: expected an array of tables ([[gpu]])");
    for (size_t i = 0; i < arr->size(); i++) {
      const std::string where = "gpu[" + std::to_string(i) + "].";
      const toml::table* e = arr->get(i)->as_table();
      if (!e) throw UserError(file + ": " + where + ": expected a table");
      only_keys(*e, {"match", "gemm_tflops", "memory_gbps", "allreduce_busbw_gbps", "note"}, where, file);
      auto match = e->get("match") ? e->get("match")->value<std::string>() : std::nullopt;
      if (!match || match->empty()) throw UserError(file + ": " + where + "match: expected a non-empty string");
      t.gpus.push_back({*match, read_floors(*e, where, file)});
    }
  }
  return t;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return (char)std::tolower(c); });
  return s;
}

}  // namespace

json score_acceptance(const json& result, const std::string& thresholds_path) {
  const Thresholds th = read_thresholds(thresholds_path);
  const json& m = result["machine"];
  const std::string device = result["device"];
  Floors floors;
  std::string entry = "default";
  if (device == "cpu") {
    floors = th.cpu;
    entry = "cpu";
  } else if (!m["gpu"].is_null()) {
    const std::string name = lower(m["gpu"]["name"].get<std::string>());
    for (const auto& [match, f] : th.gpus)
      if (name.find(lower(match)) != std::string::npos) {
        floors = f;
        entry = "gpu \"" + match + "\"";
        break;
      }
  }
  const double peak = m["peak"]["tflops"].get<double>();
  const double mem_peak = device == "cuda" && !m["gpu"].is_null() ? m["gpu"]["memory_peak_gbps"].get<double>() : 0;

  // The GPUs the result covers (rows carry params.gpu in acceptance runs; plain suites test GPU 0).
  std::vector<int> gpus;
  for (const json& r : result["results"]) {
    const int g = r["params"].contains("gpu") ? r["params"]["gpu"].get<int>() : 0;
    if (std::find(gpus.begin(), gpus.end(), g) == gpus.end()) gpus.push_back(g);
  }
  if (gpus.empty()) gpus.push_back(0);
  std::sort(gpus.begin(), gpus.end());

  json checks = json::array();
  bool pass = true;
  auto add = [&](const std::string& check, int gpu, const json& measured, double floor, const std::string& unit,
                 const std::string& verdict, const std::string& detail) {
    checks.push_back(json{{"check", check}, {"gpu", gpu}, {"measured", measured}, {"expected_min", floor},
                          {"unit", unit}, {"verdict", verdict}, {"detail", detail}});
    if (verdict == "fail") pass = false;
  };
  // The best ok value of `metric` over rows of `suite` on this device (and GPU), -1 if none;
  // `why` collects the reasons of rows that did not run.
  auto best = [&](const std::string& suite, const std::string& metric, int gpu, bool square_only, std::string* why) {
    double v = -1;
    for (const json& r : result["results"]) {
      if (r["suite"] != suite || r["device"] != device) continue;
      if (suite != "allreduce" && (r["params"].contains("gpu") ? r["params"]["gpu"].get<int>() : 0) != gpu) continue;
      if (square_only && r["params"].value("shape", "") != "square") continue;
      if (r["status"] != "ok") {
        if (why && why->empty()) *why = r["reason"].get<std::string>();
        continue;
      }
      if (r["metrics"].contains(metric)) v = std::max(v, r["metrics"][metric].get<double>());
    }
    return v;
  };
  for (int g : gpus) {
    std::string why;
    const double gemm = best("gemm", "tflops", g, true, &why);
    const double gemm_floor = floors.gemm_tflops >= 0 ? floors.gemm_tflops : th.gemm_of_peak * peak;
    const std::string gemm_src = floors.gemm_tflops >= 0 ? entry : "default.gemm_of_peak x peak " + fmt(peak);
    if (gemm < 0) add("gemm", g, nullptr, gemm_floor, "TFLOP/s", "fail", "not measured" + (why.empty() ? "" : ": " + why));
    else add("gemm", g, gemm, gemm_floor, "TFLOP/s", gemm >= gemm_floor ? "pass" : "fail",
             "best square GEMM (hand-written or baseline) vs " + gemm_src);
    why.clear();
    const double mem = best("memory", "gbps", g, false, &why);
    const double mem_floor = floors.memory_gbps >= 0 ? floors.memory_gbps : th.memory_of_peak * mem_peak;
    const std::string mem_src = floors.memory_gbps >= 0 ? entry : "default.memory_of_peak x DRAM peak " + fmt(mem_peak);
    if (mem < 0) add("memory", g, nullptr, mem_floor, "GB/s", "fail", "not measured" + (why.empty() ? "" : ": " + why));
    else add("memory", g, mem, mem_floor, "GB/s", mem >= mem_floor ? "pass" : "fail", "device copy vs " + mem_src);
    why.clear();
    const double same = best("repeat", "identical", g, false, &why);
    bool repeat_failed = false;
    for (const json& r : result["results"])
      if (r["suite"] == "repeat" && r["status"] == "failed" &&
          (r["params"].contains("gpu") ? r["params"]["gpu"].get<int>() : 0) == g)
        repeat_failed = true;
    if (!th.repeat_bitwise) add("repeat", g, nullptr, 1, "same bits", "skip", "default.repeat_bitwise = false");
    else if (repeat_failed || same == 0) add("repeat", g, 0, 1, "same bits", "fail", "the same computation twice gave different bits");
    else if (same < 0) add("repeat", g, nullptr, 1, "same bits", "skip", "not measured (run `bench accept`)" + (why.empty() ? "" : ": " + why));
    else add("repeat", g, 1, 1, "same bits", "pass", "the same computation twice gave the same bits");
  }
  {
    std::string why;
    const double bus = best("allreduce", "busbw_gbps", 0, false, &why);
    const double floor = floors.allreduce_busbw_gbps >= 0 ? floors.allreduce_busbw_gbps : th.allreduce_busbw_gbps;
    if (bus < 0) add("allreduce", -1, nullptr, floor, "GB/s", "skip", why.empty() ? "not measured" : why);
    else add("allreduce", -1, bus, floor, "GB/s", bus >= floor ? "pass" : "fail", "largest busbw of the sweep vs " + entry);
  }
  return json{{"schema", "leasetrain.accept/1"},
              {"machine", m["label"]},
              {"device", device},
              {"created_utc", result["created_utc"]},
              {"thresholds", thresholds_path},
              {"entry", entry},
              {"checks", checks},
              {"verdict", pass ? "pass" : "fail"}};
}

void print_scorecard(const json& card, std::FILE* out) {
  std::fprintf(out, "lease acceptance: %s (%s), thresholds %s [%s]\n", card["machine"].get<std::string>().c_str(),
               card["device"].get<std::string>().c_str(), card["thresholds"].get<std::string>().c_str(),
               card["entry"].get<std::string>().c_str());
  std::fprintf(out, "%-10s %4s %12s %12s %-9s %-7s %s\n", "check", "gpu", "measured", "minimum", "unit", "verdict", "detail");
  for (const json& c : card["checks"]) {
    const int g = c["gpu"].get<int>();
    std::fprintf(out, "%-10s %4s %12s %12s %-9s %-7s %s\n", c["check"].get<std::string>().c_str(),
                 g < 0 ? "all" : std::to_string(g).c_str(),
                 c["measured"].is_null() ? "-" : fmt(c["measured"].get<double>()).c_str(),
                 fmt(c["expected_min"].get<double>()).c_str(), c["unit"].get<std::string>().c_str(),
                 c["verdict"] == "pass" ? "PASS" : c["verdict"] == "fail" ? "FAIL" : "skip",
                 c["detail"].get<std::string>().c_str());
  }
  std::fprintf(out, "verdict: %s\n", card["verdict"] == "pass" ? "ACCEPT" : "REJECT (a check failed)");
}

// ---- run reports ----------------------------------------------------------------------------

namespace {

struct MetricsLine {
  int64_t step = 0;
  double loss = 0, ms = 0, tokens_per_s = -1, val_loss = NAN;
};

// Every record of RUN_DIR/metrics.jsonl, each field read through the validated reader.
std::vector<MetricsLine> read_run_metrics(const std::string& run_dir) {
  const std::string path = (std::filesystem::path(run_dir) / "metrics.jsonl").string();
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(path, ec)))
    throw UserError(path + ": cannot read (expected a training run directory, as `train --out` writes)");
  // A long run's metrics can outgrow the default text bound: one line per step.
  const std::string text = read_regular_file(path, "metrics file", uint64_t(4) << 30);
  std::vector<MetricsLine> out;
  int64_t lineno = 0;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    lineno++;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(lineno);
    const json j = parse_json(line, where);
    const JsonFields f(j, where);
    MetricsLine m;
    m.step = f.integer("step", 0);
    m.loss = f.number("loss");
    m.ms = f.opt_number("ms", 0).value_or(0);
    m.tokens_per_s = f.opt_number("tokens_per_s", 0).value_or(-1);
    m.val_loss = f.opt_number("val_loss").value_or(NAN);
    out.push_back(m);
  }
  if (out.empty()) throw UserError(path + ": no steps recorded yet");
  return out;
}

}  // namespace

json summarize_run(const std::string& run_dir) {
  const std::vector<MetricsLine> lines = read_run_metrics(run_dir);
  double total_ms = 0, best_val = INFINITY, last_val = NAN;
  int64_t best_val_step = 0;
  std::vector<double> tps;
  for (const MetricsLine& m : lines) {
    total_ms += m.ms;
    if (m.tokens_per_s >= 0) tps.push_back(m.tokens_per_s);
    if (!std::isnan(m.val_loss)) {
      last_val = m.val_loss;
      if (last_val < best_val) {
        best_val = last_val;
        best_val_step = m.step;
      }
    }
  }
  std::sort(tps.begin(), tps.end());
  const double med = tps.empty() ? 0 : tps.size() % 2 ? tps[tps.size() / 2] : 0.5 * (tps[tps.size() / 2 - 1] + tps[tps.size() / 2]);
  json s{{"run", run_dir},
         {"steps", (int64_t)lines.size()},
         {"last_step", lines.back().step},
         {"first_loss", lines.front().loss},
         {"last_loss", lines.back().loss},
         {"median_tokens_per_s", med},
         {"train_seconds", total_ms / 1e3}};
  s["last_val_loss"] = std::isnan(last_val) ? json(nullptr) : json(last_val);
  s["best_val_loss"] = std::isinf(best_val) ? json(nullptr) : json(best_val);
  s["best_val_step"] = std::isinf(best_val) ? json(nullptr) : json(best_val_step);
  return s;
}

json compare_runs(const std::string& run_dir, const std::string& against_dir) {
  const std::vector<MetricsLine> a = read_run_metrics(run_dir), b = read_run_metrics(against_dir);
  std::map<int64_t, const MetricsLine*> by_step;
  for (const MetricsLine& m : b) by_step[m.step] = &m;  // the last record of a step wins
  std::map<int64_t, const MetricsLine*> mine;
  for (const MetricsLine& m : a) mine[m.step] = &m;
  int64_t common = 0, common_val = 0, worst_step = -1;
  double max_abs = 0, max_rel = 0, max_val = 0;
  for (const auto& [step, m] : mine) {
    auto it = by_step.find(step);
    if (it == by_step.end()) continue;
    common++;
    const double d = std::fabs(m->loss - it->second->loss);
    if (worst_step < 0 || d > max_abs) {
      worst_step = step;
      max_abs = d;
    }
    max_rel = std::max(max_rel, d / std::max(std::fabs(it->second->loss), 1e-30));
    if (!std::isnan(m->val_loss) && !std::isnan(it->second->val_loss)) {
      common_val++;
      max_val = std::max(max_val, std::fabs(m->val_loss - it->second->val_loss));
    }
  }
  if (common == 0)
    throw UserError(against_dir + "/metrics.jsonl: no step in common with " + run_dir + "/metrics.jsonl");
  json r{{"run", run_dir},
         {"against", against_dir},
         {"common_steps", common},
         {"max_abs_loss_diff", max_abs},
         {"max_rel_loss_diff", max_rel},
         {"worst_step", worst_step},
         {"common_val_steps", common_val}};
  r["max_abs_val_loss_diff"] = common_val ? json(max_val) : json(nullptr);
  return r;
}

int run_python(const std::string& script, const std::vector<std::string>& args, std::string* out) {
  std::vector<std::string> argv = {"/usr/bin/python3", source_file(script)};
  argv.insert(argv.end(), args.begin(), args.end());
  std::FILE* p = popen((shell_join(argv) + " 2>&1").c_str(), "r");
  if (!p) return -1;
  out->clear();
  std::array<char, 4096> buf;
  while (size_t k = std::fread(buf.data(), 1, buf.size(), p)) out->append(buf.data(), k);
  const int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

std::vector<std::string> run_plot(const std::string& mode, const std::string& input, const std::string& outdir,
                                  const std::vector<std::string>& extra) {
  // matplotlib writes through a link left at outdir/NAME.png, to wherever it points: the script
  // writes into a fresh directory beneath outdir, and each file is renamed into place through the
  // one path resolver (a link there is replaced).
  std::filesystem::create_directories(outdir);
  const WriteRoot root(outdir);
  std::string tmpl = (std::filesystem::path(outdir) / ".plots-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw UserError(outdir + ": cannot create a directory for the plots: " + std::strerror(errno));
  const std::string tmp_name = std::filesystem::path(tmpl).filename().string();
  struct Cleanup {
    const WriteRoot& root;
    std::string name;
    ~Cleanup() { root.remove_all(name); }
  } cleanup{root, tmp_name};
  std::vector<std::string> args = {mode, input, tmpl};
  args.insert(args.end(), extra.begin(), extra.end());
  std::string out;
  const int rc = run_python("scripts/plot.py", args, &out);
  if (rc < 0) throw std::runtime_error("plots: cannot start python3");
  if (rc != 0) {
    std::string last = out;
    while (!last.empty() && last.back() == '\n') last.pop_back();
    if (last.rfind('\n') != std::string::npos) last = last.substr(last.rfind('\n') + 1);
    throw std::runtime_error("plots failed (scripts/plot.py needs Debian's python3-matplotlib; scripts/setup.sh "
                             "installs it): " + last);
  }
  std::vector<std::string> files;
  std::istringstream ss(out);
  for (std::string l; std::getline(ss, l);)
    if (!l.empty()) {
      const std::string name = std::filesystem::path(l).filename().string();
      root.rename(tmp_name + "/" + name, name);
      files.push_back((std::filesystem::path(outdir) / name).string());
    }
  return files;
}

}  // namespace lt::bench
