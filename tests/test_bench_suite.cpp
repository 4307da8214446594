// The benchmark suite (issue: bench suite, compare, accept, report): peaks from SMs and clock,
// the result schema, compare's ratios on recorded files with known numbers, the plots, the
// acceptance scorecard flagging a slow GPU, and the CPU-mode suite end to end.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "benchmarks/compare.h"
#include "benchmarks/json_schema.h"
#include "benchmarks/machine.h"
#include "tests/util.h"

namespace lt {
namespace {

using json = nlohmann::json;
using test::read_file;
using test::run_cli;
using test::TempDir;
using test::write_file;

const std::string kFix = std::string(LT_SOURCE_DIR) + "/tests/fixtures/bench/";

json load(const std::string& path) { return json::parse(read_file(path)); }

// The row of `cmp` (bench compare --json) with this suite, label prefix and metric.
const json& cmp_row(const json& cmp, const std::string& suite, const std::string& label, const std::string& metric) {
  for (const json& r : cmp["rows"])
    if (r["suite"] == suite && r["label"].get<std::string>().rfind(label, 0) == 0 && r["metric"] == metric) return r;
  ADD_FAILURE() << "no row " << suite << " " << label << " " << metric << " in " << cmp.dump();
  static const json none;
  return none;
}

TEST(BenchPeak, ComputedFromSmsAndClockMatchesDatasheets) {
  // bf16 dense: A100 SXM 312, H100 SXM 989, H100 PCIe 756 TFLOP/s (NVIDIA datasheets).
  EXPECT_NEAR(bench::peak_tflops(108, bench::tensor_bf16_flops_per_clk_sm(8, 0), 1410), 312, 0.5);
  EXPECT_NEAR(bench::peak_tflops(132, bench::tensor_bf16_flops_per_clk_sm(9, 0), 1830), 989, 0.5);
  EXPECT_NEAR(bench::peak_tflops(114, bench::tensor_bf16_flops_per_clk_sm(9, 0), 1620), 756, 0.5);
  // An architecture with no known rate gets no peak (so no MFU), not a wrong one.
  EXPECT_EQ(bench::tensor_bf16_flops_per_clk_sm(7, 0), 0);
  // H100 SXM HBM3: 2619 MHz x 5120-bit bus = 3.35 TB/s.
  EXPECT_NEAR(bench::peak_mem_gbps(2619, 5120), 3352, 1);
  EXPECT_EQ(bench::cpu_fp32_flops_per_clk_core(false, true), 32);
}

TEST(BenchSchema, RecordedResultsMatchAndTheFirstBadFieldIsNamed) {
  json doc = load(kFix + "a100.json");
  EXPECT_EQ(bench::check_schema(doc, bench::suite_schema()), "");
  json bad = doc;
  bad["machine"]["gpu"]["sm_count"] = "108";
  EXPECT_EQ(bench::check_schema(bad, bench::suite_schema()), "machine.gpu.sm_count: expected integer, got string");
  bad = doc;
  bad["results"][1].erase("metrics");
  EXPECT_EQ(bench::check_schema(bad, bench::suite_schema()), "results[1].metrics: missing");
  bad = doc;
  bad["results"][0]["status"] = "maybe";
  EXPECT_NE(bench::check_schema(bad, bench::suite_schema()).find("results[0].status: expected one of"),
            std::string::npos);
  bad = doc;
  bad["results"][0]["metrics"]["tflops"] = "fast";
  EXPECT_EQ(bench::check_schema(bad, bench::suite_schema()), "results[0].metrics.tflops: expected number, got string");
  bad = doc;
  bad["machine"]["peak"].erase("formula");
  EXPECT_EQ(bench::check_schema(bad, bench::suite_schema()), "machine.peak.formula: missing");
}

TEST(BenchCompare, RatiosOfRecordedFilesAreExact) {
  TempDir d;
  auto r = run_cli("bench compare " + kFix + "a100.json " + kFix + "h100.json --price 1.5 3.0 --json " + d / "cmp.json");
  ASSERT_EQ(r.code, 0) << r.both();
  const json cmp = load(d / "cmp.json");
  ASSERT_EQ(cmp["machines"].size(), 2u);
  EXPECT_EQ(cmp["machines"][1]["label"], "NVIDIA H100 80GB HBM3");
  const json& cublas = cmp_row(cmp, "gemm", "square 8192x8192x8192 cublas", "tflops");
  EXPECT_EQ(cublas["values"], json({250, 700}));
  EXPECT_DOUBLE_EQ(cublas["ratios"][1].get<double>(), 700.0 / 250.0);
  EXPECT_DOUBLE_EQ(cmp_row(cmp, "gemm", "square 8192x8192x8192 mma.sync", "tflops")["ratios"][1].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(cmp_row(cmp, "memory", "cudaMemcpy D2D", "gbps")["ratios"][1].get<double>(), 1.75);
  EXPECT_DOUBLE_EQ(cmp_row(cmp, "step", "124m", "tokens_per_s")["ratios"][1].get<double>(), 2.5);
  // tokens per dollar: tokens/s x 3600 / $ per GPU-hour = 100000 x 3600 / 1.5 and 250000 x 3600 / 3.
  const json& tpd = cmp_row(cmp, "step", "124m", "tokens_per_dollar");
  EXPECT_DOUBLE_EQ(tpd["values"][0].get<double>(), 2.4e8);
  EXPECT_DOUBLE_EQ(tpd["values"][1].get<double>(), 3e8);
  EXPECT_DOUBLE_EQ(tpd["ratios"][1].get<double>(), 1.25);
  // % of peak against each machine's own computed peak: 700 / 989.4.
  EXPECT_NEAR(cmp_row(cmp, "gemm", "square 8192x8192x8192 cublas", "pct_peak")["values"][1].get<double>(),
              100 * 700 / 989.4, 0.01);
  // Rows skipped everywhere (the one-GPU all-reduce) are left out.
  for (const json& row : cmp["rows"]) EXPECT_NE(row["suite"], "allreduce");
  // The table for people says the same.
  EXPECT_NE(r.out.find("2.800x"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1.250x"), std::string::npos) << r.out;
}

TEST(BenchCompare, WritesPngAndSvgPlots) {
  TempDir d;
  auto r = run_cli("bench compare " + kFix + "a100.json " + kFix + "h100.json --price 1.5 3.0 --plots " + d / "plots");
  ASSERT_EQ(r.code, 0) << r.both();
  for (const char* name : {"gemm_tflops", "pct_peak", "memory_gbps", "tokens_per_s", "tokens_per_dollar"}) {
    const std::string png = read_file(d / "plots/" + std::string(name) + ".png");
    ASSERT_GT(png.size(), 1000u) << name;
    EXPECT_EQ(png.substr(1, 3), "PNG") << name;
    EXPECT_NE(read_file(d / "plots/" + std::string(name) + ".svg").find("<svg"), std::string::npos) << name;
  }
}

TEST(BenchCompare, BadInputIsOneLineNamingFileAndFieldAndDamagesNothing) {
  TempDir d;
  json bad = load(kFix + "h100.json");
  bad["results"][2]["metrics"]["gbps"] = "2800";
  write_file(d / "bad.json", bad.dump());
  write_file(d / "cmp.json", "previous\n");
  auto r = run_cli("bench compare " + kFix + "a100.json " + d / "bad.json --json " + d / "cmp.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "leasetrain: error: " + d / "bad.json" + ": results[2].metrics.gbps: expected number, got string "
                   "(schema leasetrain.bench.suite/1)\n");
  EXPECT_EQ(read_file(d / "cmp.json"), "previous\n");
  write_file(d / "notjson.json", "{");
  r = run_cli("bench compare " + kFix + "a100.json " + d / "notjson.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find(d / "notjson.json" + ": not valid JSON"), std::string::npos) << r.err;
  r = run_cli("bench compare " + kFix + "a100.json " + kFix + "h100.json --price 1.5");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--price: expected one price per file (2), got 1"), std::string::npos) << r.err;
}

TEST(BenchAccept, FlagsADeliberatelySlowGpu) {
  TempDir d;
  auto r = run_cli("bench accept --results " + kFix + "h100_slow.json --json " + d / "card.json");
  EXPECT_EQ(r.code, 1) << r.both();
  EXPECT_NE(r.out.find("REJECT"), std::string::npos) << r.out;
  const json card = load(d / "card.json");
  EXPECT_EQ(card["verdict"], "fail");
  EXPECT_EQ(card["entry"], "gpu \"H100\"");
  for (const json& c : card["checks"]) {
    if (c["check"] == "gemm") {
      EXPECT_EQ(c["verdict"], "fail");
      EXPECT_EQ(c["measured"], 300);
      EXPECT_EQ(c["expected_min"], 620);
    } else if (c["check"] == "memory" || c["check"] == "repeat") {
      EXPECT_EQ(c["verdict"], "pass") << c.dump();
    } else {
      EXPECT_EQ(c["check"], "allreduce");
      EXPECT_EQ(c["verdict"], "skip");  // one GPU
    }
  }
}

TEST(BenchAccept, HealthyGpusPass) {
  for (const char* f : {"h100.json", "a100.json"}) {
    auto r = run_cli("bench accept --results " + kFix + f + " --json -");
    EXPECT_EQ(r.code, 0) << f << r.both();
    const json card = json::parse(r.out);
    EXPECT_EQ(card["verdict"], "pass") << card.dump(1);
  }
  const json card = json::parse(run_cli("bench accept --results " + kFix + "a100.json --json -").out);
  EXPECT_EQ(card["entry"], "gpu \"A100-SXM4-80GB\"");
}

TEST(BenchAccept, UnknownGpuIsJudgedAgainstItsComputedPeak) {
  TempDir d;
  json doc = load(kFix + "h100.json");
  doc["machine"]["gpu"]["name"] = "NVIDIA Future GPU";
  write_file(d / "future.json", doc.dump());
  write_file(d / "th.toml", "[default]\ngemm_of_peak = 0.75\n");
  auto r = run_cli("bench accept --results " + d / "future.json --thresholds " + d / "th.toml --json -");
  const json card = json::parse(r.out);
  EXPECT_EQ(card["entry"], "default");
  for (const json& c : card["checks"])
    if (c["check"] == "gemm") {
      // 0.75 x 132 SMs x 4096 x 1830 MHz = 742 > 700 measured: fails.
      EXPECT_NEAR(c["expected_min"].get<double>(), 0.75 * 989.36, 0.1);
      EXPECT_EQ(c["verdict"], "fail");
    }
  EXPECT_EQ(r.code, 1);
}

TEST(BenchAccept, BadThresholdsFileNamesTheField) {
  TempDir d;
  write_file(d / "th.toml", "[[gpu]]\nmatch = \"H100\"\ngemm_tflops = \"fast\"\n");
  auto r = run_cli("bench accept --results " + kFix + "h100.json --thresholds " + d / "th.toml");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "leasetrain: error: " + d / "th.toml" + ": gpu[0].gemm_tflops: expected a number >= 0\n");
  write_file(d / "th.toml", "[default]\ngemm_fraction = 0.5\n");
  r = run_cli("bench accept --results " + kFix + "h100.json --thresholds " + d / "th.toml");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("default.gemm_fraction: not a known field"), std::string::npos) << r.err;
}

// The whole suite in CPU mode: every section runs or says why not, and the file it writes
// passes its own schema and compares against itself with ratios of one.
TEST(BenchSuite, CpuModeEndToEnd) {
  TempDir d;
  auto r = run_cli("bench suite --quick --device cpu --json " + d / "cpu.json");
  ASSERT_EQ(r.code, 0) << r.both();
  const json doc = load(d / "cpu.json");
  EXPECT_EQ(bench::check_schema(doc, bench::suite_schema()), "");
  EXPECT_EQ(doc["device"], "cpu");
  EXPECT_GT(doc["machine"]["peak"]["tflops"].get<double>(), 0);
  EXPECT_EQ(doc["machine"]["peak"]["unit"], "core");
  std::map<std::string, int> ok;
  for (const json& row : doc["results"]) {
    if (row["status"] == "ok") {
      ok[row["suite"]]++;
      EXPECT_EQ(row["device"], "cpu");
      EXPECT_GT(row["metrics"][row["primary"].get<std::string>()].get<double>(), 0) << row.dump();
      const char* time_key = row["suite"] == "allreduce" ? "time_us" : "median_ms";  // nccl-tests report the mean
      ASSERT_TRUE(row["metrics"].contains(time_key)) << row.dump();
      EXPECT_GT(row["metrics"][time_key].get<double>(), 0) << row.dump();
    } else {
      EXPECT_EQ(row["status"], "skipped") << row.dump();
      EXPECT_FALSE(row["reason"].get<std::string>().empty()) << row.dump();
    }
  }
  EXPECT_GE(ok["gemm"], 4);
  EXPECT_GE(ok["attention"], 2);
  EXPECT_EQ(ok["memory"], 1);
  EXPECT_EQ(ok["step"], 1);
#ifdef LEASETRAIN_HAVE_MPI
  EXPECT_GE(ok["allreduce"], 3);
#endif
  // The hand-written CPU GEMM is checked against OpenBLAS and reports the ratio.
  for (const json& row : doc["results"])
    if (row["suite"] == "gemm" && row["impl"] == "leasetrain" && row["status"] == "ok") {
      EXPECT_LE(row["metrics"]["rel_err"].get<double>(), 1e-5);
      EXPECT_GT(row["metrics"]["vs_baseline"].get<double>(), 0);
    }
  r = run_cli("bench compare " + d / "cpu.json " + d / "cpu.json --json -");
  ASSERT_EQ(r.code, 0) << r.both();
  const json compared = json::parse(r.out);  // alive for the loop: a range-for keeps only the outer temporary
  for (const json& row : compared["rows"]) EXPECT_DOUBLE_EQ(row["ratios"][1].get<double>(), 1.0) << row.dump();
}

TEST(BenchSuite, UnwritableDestinationIsRefusedBeforeMeasuring) {
  auto r = run_cli("bench suite --quick --json /nonexistent-dir/x.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "leasetrain: error: --json: /nonexistent-dir: no such directory\n");
  EXPECT_EQ(r.out, "");
}

TEST(BenchAccept, CpuNodeEndToEnd) {
  TempDir d;
  auto r = run_cli("bench accept --json " + d / "card.json --suite-json " + d / "raw.json");
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.out.find("ACCEPT"), std::string::npos);
  const json card = load(d / "card.json");
  EXPECT_EQ(card["entry"], "cpu");
  std::set<std::string> passed;
  for (const json& c : card["checks"])
    if (c["verdict"] == "pass") passed.insert(c["check"]);
  EXPECT_TRUE(passed.count("gemm") && passed.count("memory") && passed.count("repeat")) << card.dump(1);
  EXPECT_EQ(bench::check_schema(load(d / "raw.json"), bench::suite_schema()), "");
}

TEST(Report, PlotsLossAndThroughputOfARun) {
  TempDir d;
  std::string lines;
  for (int s = 1; s <= 40; s++) {
    json j{{"step", s}, {"loss", 5.0 - 0.05 * s}, {"lr", 1e-3}, {"grad_norm", 1.0}, {"tokens_per_s", 1000.0 + s},
           {"ms", 100.0}};
    if (s % 20 == 0) j["val_loss"] = 4.0 - 0.01 * s;
    lines += j.dump() + "\n";
  }
  std::filesystem::create_directories(d / "run");
  write_file(d / "run/metrics.jsonl", lines);
  auto r = run_cli("report " + d / "run");
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_EQ(read_file(d / "run/report/training.png").substr(1, 3), "PNG");
  EXPECT_NE(read_file(d / "run/report/training.svg").find("<svg"), std::string::npos);
  const json s = load(d / "run/report/summary.json");
  EXPECT_EQ(s["steps"], 40);
  EXPECT_DOUBLE_EQ(s["first_loss"].get<double>(), 4.95);
  EXPECT_DOUBLE_EQ(s["last_loss"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(s["best_val_loss"].get<double>(), 3.6);
  EXPECT_EQ(s["best_val_step"], 40);
  EXPECT_DOUBLE_EQ(s["median_tokens_per_s"].get<double>(), 1020.5);
  EXPECT_DOUBLE_EQ(s["train_seconds"].get<double>(), 4.0);

  write_file(d / "run/metrics.jsonl", lines + "{\"step\": \"x\"}\n");
  r = run_cli("report " + d / "run");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "leasetrain: error: " + d / "run/metrics.jsonl" +
                       ":41: field 'step' must be an integer in [0, 9223372036854775807], got \"x\"\n");
  r = run_cli("report " + d / "nowhere");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("nowhere/metrics.jsonl: cannot read"), std::string::npos) << r.err;
}

}  // namespace

// An interrupted run (steps 1..12, a restart re-running 9..12 after its checkpoint at 8, then
// 13..20 on fewer ranks) against an uninterrupted one: one plot with both, and the largest loss
// difference over the steps both recorded, each step taken once (the last record of a step).
TEST(Report, DrawsARunAgainstAnotherAndNamesTheLargestLossDifference) {
  TempDir d;
  auto line = [](int s, double loss, bool val) {
    json j{{"step", s}, {"loss", loss}, {"lr", 1e-3}, {"grad_norm", 1.0}, {"tokens_per_s", 1000.0}, {"ms", 10.0}};
    if (val) j["val_loss"] = loss + 0.5;
    return j.dump() + "\n";
  };
  std::string straight, restarted;
  for (int s = 1; s <= 20; s++) straight += line(s, 5.0 - 0.1 * s, s % 10 == 0);
  for (int s = 1; s <= 12; s++) restarted += line(s, 5.0 - 0.1 * s + (s > 8 ? 0.3 : 0.0), false);  // lost steps
  for (int s = 9; s <= 20; s++) restarted += line(s, 5.0 - 0.1 * s + (s == 17 ? 2e-6 : 0.0), s % 10 == 0);
  std::filesystem::create_directories(d / "a");
  std::filesystem::create_directories(d / "b");
  write_file(d / "a/metrics.jsonl", restarted);
  write_file(d / "b/metrics.jsonl", straight);
  auto r = run_cli("report " + d / "a" + " --against " + d / "b" + " --json");
  ASSERT_EQ(r.code, 0) << r.both();
  const json s = json::parse(r.out)["against"];
  EXPECT_EQ(s["common_steps"], 20);
  EXPECT_NEAR(s["max_abs_loss_diff"].get<double>(), 2e-6, 1e-9);
  EXPECT_EQ(s["worst_step"], 17);
  EXPECT_EQ(s["common_val_steps"], 2);
  EXPECT_NEAR(s["max_abs_val_loss_diff"].get<double>(), 0.0, 1e-12);
  EXPECT_EQ(read_file(d / "a/report/training.png").substr(1, 3), "PNG");
  EXPECT_NE(read_file(d / "a/report/training.svg").find("b: train loss"), std::string::npos);

  write_file(d / "b/metrics.jsonl", line(99, 1.0, false));
  r = run_cli("report " + d / "a" + " --against " + d / "b");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("b/metrics.jsonl: no step in common with"), std::string::npos) << r.err;
}

}  // namespace lt
