// `leasetrain plan --predict` (launcher/cmd_predict.cpp): suite results read into the model's
// inputs, the table over node counts as text, JSON and a plot, and bad input refused in one line
// naming the file or option (exit 2). Inputs: the datasheet-derived suites of benchmarks/paper/
// (every rate known exactly) and the recorded suite fixtures.
#include <gtest/gtest.h>
#include <pwd.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "benchmarks/compare.h"
#include "benchmarks/predict.h"
#include "runtime/error.h"
#include "runtime/trainer.h"
#include "tests/lease_fixtures.h"
#include "tests/util.h"

namespace lt {
namespace {

using json = nlohmann::json;
using test::read_file;
using test::run_cli;
using test::TempDir;
using test::write_file;

const std::string kPaper = std::string(LT_SOURCE_DIR) + "/benchmarks/paper/";
const std::string kA100 = kPaper + "a100-sxm-80gb-x8.json", kH100 = kPaper + "h100-sxm-x8.json";
const std::string kConfig = kPaper + "gpt2-124m-llmc.toml";

GPTConfig gpt2() { return GPTConfig{12, 12, 768, 1024, 50257}; }

TEST(PlanPredict, SuiteInputsAreTheTrainersKernelRows) {
  const json s = bench::load_suite_result(kH100);
  const predict::SuiteInputs in = predict::suite_inputs(s, kH100, gpt2(), 1024, "cublas");
  EXPECT_EQ(in.device, "cuda");
  EXPECT_EQ(in.act_bytes, 2);
  EXPECT_EQ(in.gpus, 8);
  ASSERT_EQ(in.rates.gemm.size(), 5u);
  for (const predict::GemmRate& g : in.rates.gemm) EXPECT_DOUBLE_EQ(g.tflops, 794.0);
  EXPECT_DOUBLE_EQ(in.rates.attention_fwd_tflops, 335.0);
  EXPECT_DOUBLE_EQ(in.rates.memory_gbps, 0.9 * 3350.0);
  EXPECT_NEAR(in.rates.peak_tflops, 989.43, 0.01);
  EXPECT_EQ(in.allreduce_ranks, 8);
  EXPECT_EQ(in.allreduce.size(), 14u);  // 8 B .. 512 MiB by 4
  // The fit recovers the link the rows were made from (475 GB/s bus bandwidth, 1 us per hop).
  const predict::LinkFit f = predict::fit_alpha_beta(in.allreduce, 8, 1, predict::Algo::Ring);
  EXPECT_NEAR(f.link.busbw_Bps / 475e9, 1.0, 1e-6);
  EXPECT_NEAR(f.link.alpha_s, 1e-6, 1e-9);
  // Without --gemm-impl the trainer's own kernel (mma.sync) is read, and these files have none.
  try {
    predict::suite_inputs(s, kH100, gpt2(), 1024);
    ADD_FAILURE() << "no mma.sync rows, yet no error";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()), kH100 + ": results: no measured gemm row of the kernel asked for (suite gemm, "
                                             "impl mma.sync, device cuda, status ok)");
  }
}

// On Hopper the trainer's GEMM is the wgmma kernel (gemm()'s Auto): where a suite measured
// wgmma rows they are the ones read, not the mma.sync rows beside them.
TEST(PlanPredict, HopperSuiteReadsTheWgmmaRows) {
  json s = bench::load_suite_result(kH100);
  json extra = json::array();
  for (const json& r : s["results"])
    if (r.value("suite", "") == "gemm" && r.value("impl", "") == "cublas")
      for (const auto& [impl, tflops] : {std::pair{"mma.sync", 500.0}, std::pair{"wgmma", 700.0}}) {
        json x = r;
        x["impl"] = impl;
        x["id"] = r.value("id", "") + "-" + impl;
        x["metrics"]["tflops"] = tflops;
        extra.push_back(x);
      }
  for (json& x : extra) s["results"].push_back(x);
  const predict::SuiteInputs in = predict::suite_inputs(s, kH100, gpt2(), 1024);
  EXPECT_EQ(in.gemm_impl, "wgmma");
  ASSERT_EQ(in.rates.gemm.size(), 5u);
  for (const predict::GemmRate& g : in.rates.gemm) EXPECT_DOUBLE_EQ(g.tflops, 700.0);
  // Without wgmma rows (another GPU), the mma.sync rows.
  json a = s;
  json kept = json::array();
  for (const json& r : a["results"])
    if (r.value("impl", "") != "wgmma") kept.push_back(r);
  a["results"] = kept;
  const predict::SuiteInputs b = predict::suite_inputs(a, kH100, gpt2(), 1024);
  EXPECT_EQ(b.gemm_impl, "mma.sync");
  for (const predict::GemmRate& g : b.rates.gemm) EXPECT_DOUBLE_EQ(g.tflops, 500.0);
}

TEST(PlanPredict, TableOverNodeCountsAsTextAndJson) {
  const std::string args = "plan --predict --config " + kConfig + " --suite " + kA100 + " --suite " + kH100 +
                           " --gemm-impl cublas --max-nodes 8 --nic-gbps 3200 --tokens 10B --price 1.8 --price 3";
  auto r = run_cli(args);
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.out.find("NVIDIA A100-SXM4-80GB (datasheet)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("across nodes: NIC 3200 Gbit/s x 0.9 (datasheet)"), std::string::npos) << r.out;
  // The per-GPU batch held: every added node pays in full across 3200 Gbit/s.
  EXPECT_NE(r.out.find("no knee up to 8 nodes: every added node adds at least 50% of one node's tokens/s"),
            std::string::npos) << r.out;
  // 512 sequences held: at 8 nodes each GPU runs 8, and communication no longer hides.
  auto k = run_cli(args + " --global-batch 512");
  ASSERT_EQ(k.code, 0) << k.both();
  EXPECT_NE(k.out.find("knee: 4 nodes (past it, an added node adds less than 50% of one node's tokens/s)"),
            std::string::npos) << k.out;
  r = run_cli(args + " --json");
  ASSERT_EQ(r.code, 0) << r.both();
  const json j = json::parse(r.out);
  EXPECT_EQ(j["schema"], "leasetrain.predict/1");
  ASSERT_EQ(j["machines"].size(), 2u);
  for (const json& m : j["machines"]) {
    ASSERT_EQ(m["rows"].size(), 4u);  // 1, 2, 4, 8 nodes
    EXPECT_EQ(m["gpus_per_node"], 8);
    for (size_t i = 0; i < 4; i++) {
      const json& row = m["rows"][i];
      EXPECT_EQ(row["nodes"], 1 << i);
      EXPECT_EQ(row["gpus"], 8 << i);
      const double tps = row["tokens_per_s"];
      EXPECT_NEAR(tps * row["step_s"].get<double>(), (8 << i) * 64 * 1024.0, 1e-3);  // 64 x 1024 per GPU per step
      EXPECT_NEAR(row["hours"].get<double>(), 10e9 / tps / 3600, 1e-9);
      EXPECT_NEAR(row["cost"].get<double>(), row["hours"].get<double>() * (8 << i) * m["price_per_gpu_hour"].get<double>(), 1e-6);
      EXPECT_GT(row["scaling_efficiency"].get<double>(), 0.0);
      EXPECT_LE(row["scaling_efficiency"].get<double>(), 1.0 + 1e-12);
    }
    // One node's step is the model's step on that node, computed here from the same inputs.
    const predict::SuiteInputs in = predict::suite_inputs(bench::load_suite_result(m["file"]), m["file"], gpt2(), 1024, "cublas");
    predict::Job job;
    job.model = gpt2();
    job.micro_batch = 64;
    job.seq_len = 1024;
    job.ranks_per_node = 8;
    job.dist.zero = 1;
    job.act_bytes = 2;
    predict::Network net;
    net.intra = predict::fit_alpha_beta(in.allreduce, 8, 1, predict::Algo::Ring).link;
    EXPECT_NEAR(m["rows"][0]["step_s"].get<double>(), predict::predict_step(job, in.rates, net).step_s, 1e-12);
  }
  // The H100 node is faster than the A100 node on the same job.
  EXPECT_GT(j["machines"][1]["rows"][0]["tokens_per_s"].get<double>(), j["machines"][0]["rows"][0]["tokens_per_s"].get<double>());
}

TEST(PlanPredict, TopologyFromTheLeaseAndAGlobalBatchHeld) {
  // shared-cluster.toml's acme lease: GPUs 0-1 of node01 and node02, with this test's user
  // among the tenant's users; the window is checked as of --at.
  TempDir d;
  const passwd* pw = ::getpwuid(::getuid());
  ASSERT_NE(pw, nullptr);
  write_file(d / "m.toml", test::replace_once(test::base(), "users = [\"alice\"]",
                                                       "users = [\"alice\", \"" + std::string(pw->pw_name) + "\"]"));
  auto r = run_cli("plan --manifest " + d / "m.toml" + " --lease acme-2024 --sysfs-root " + test::kSysfs +
                   " --at 2025-06-01T12:00:00Z --predict --config " + kConfig + " --suite " + kH100 +
                   " --gemm-impl cublas --nic-gbps 400 --global-batch 64 --tokens 1B --json");
  ASSERT_EQ(r.code, 0) << r.both();
  const json j = json::parse(r.out);
  ASSERT_TRUE(j.contains("lease"));
  const int nodes = j["lease"]["nodes"], g = j["lease"]["gpus_per_node"];
  const json& rows = j["machines"][0]["rows"];
  EXPECT_EQ(nodes, 2);
  EXPECT_EQ(g, 2);
  EXPECT_EQ(rows.back()["nodes"], nodes);
  EXPECT_EQ(j["machines"][0]["gpus_per_node"], g);
  for (const json& row : rows) {
    if (row["feasible"]) {
      EXPECT_EQ(row["micro_batch"].get<int>() * row["grad_accum"].get<int>() * row["gpus"].get<int>(), 64);
    }
  }
}

// The largest --global-batch accepted (2^40) needs more accumulation steps than an int holds on
// few GPUs: those rows are not feasible (as the trainer refuses them), never a wrapped count.
TEST(PlanPredict, HugeGlobalBatchIsNotFeasibleRatherThanWrapped) {
  auto r = run_cli("plan --predict --config " + kConfig + " --suite " + kH100 +
                   " --gemm-impl cublas --nic-gbps 3200 --max-nodes 4 --global-batch 1099511627776 --json");
  ASSERT_EQ(r.code, 0) << r.both();
  const json j = json::parse(r.out);
  for (const json& row : j["machines"][0]["rows"]) {
    EXPECT_FALSE(row["feasible"].get<bool>()) << row;
    EXPECT_EQ(row["note"], "the global batch (1099511627776) needs more than 1048576 accumulation steps on " +
                               std::to_string(row["gpus"].get<int>()) + " GPUs") << row;
  }
  EXPECT_FALSE(split_global_batch(int64_t(1) << 40, 8, 64));
  EXPECT_EQ(split_global_batch(int64_t(1) << 26, 1, 64)->grad_accum, 1 << 20);
}

// Numbers too long for fixed point (a budget of 1e100 tokens, rates scaled far down) are printed
// whole or in exponent form, never cut to their first digits.
TEST(PlanPredict, HugeNumbersArePrintedWhole) {
  for (const std::string extra : {"--tokens 1e100 --price 2", "--tokens 1B --price 2 --compute-scale 1e-290"}) {
    const std::string args = "plan --predict --config " + kConfig + " --suite " + kH100 +
                             " --gemm-impl cublas --nic-gbps 3200 --max-nodes 1 " + extra;
    auto t = run_cli(args), j = run_cli(args + " --json");
    ASSERT_EQ(t.code, 0) << t.both();
    ASSERT_EQ(j.code, 0) << j.both();
    const json row = json::parse(j.out)["machines"][0]["rows"][0];
    const size_t at = t.out.find("\n      1     8 ");
    ASSERT_NE(at, std::string::npos) << t.out;
    std::istringstream line(t.out.substr(at + 1, t.out.find('\n', at + 1) - at - 1));
    std::vector<std::string> cols;
    for (std::string c; line >> c;) cols.push_back(c);
    ASSERT_EQ(cols.size(), 12u) << t.out;
    EXPECT_NEAR(std::stod(cols[5]) / (1e3 * row["step_s"].get<double>()), 1.0, 1e-3) << cols[5];
    EXPECT_NEAR(std::stod(cols[10]) / row["hours"].get<double>(), 1.0, 1e-3) << cols[10];
    EXPECT_NEAR(std::stod(cols[11]) / row["cost"].get<double>(), 1.0, 1e-3) << cols[11];
  }
}

TEST(PlanPredict, PlotsTokensPerSecondAndCost) {
  TempDir d;
  auto r = run_cli("plan --predict --config " + kConfig + " --suite " + kA100 + " --suite " + kH100 +
                   " --gemm-impl cublas --max-nodes 4 --nic-gbps 3200 --tokens 10B --price 1.8 --price 3 --plot " +
                   d / "plots");
  ASSERT_EQ(r.code, 0) << r.both();
  const std::string png = read_file(d / "plots/predict.png");
  ASSERT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  EXPECT_NE(read_file(d / "plots/predict.svg").find("cost to the token budget"), std::string::npos);
  // A link left where a plot goes is replaced, never written through.
  write_file(d / "victim", "precious");
  std::filesystem::remove(d / "plots/predict.png");
  std::filesystem::create_symlink(d / "victim", d / "plots/predict.png");
  r = run_cli("plan --predict --config " + kConfig + " --suite " + kH100 +
              " --gemm-impl cublas --max-nodes 2 --nic-gbps 3200 --plot " + d / "plots");
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_EQ(read_file(d / "victim"), "precious");
  EXPECT_FALSE(std::filesystem::is_symlink(d / "plots/predict.png"));
  EXPECT_EQ(read_file(d / "plots/predict.png").substr(1, 3), "PNG");
  EXPECT_NE(r.err.find("wrote " + d / "plots/predict.png"), std::string::npos) << r.err;
}

// On Hopper the suite holds the Hopper attention kernels' rows (impl flash-wgmma) beside the
// mma.sync kernels' (impl flash); the trainer runs the Hopper ones there, so their rates are read,
// per pass.
TEST(PlanPredict, HopperAttentionRowsAreReadPerPassWhereMeasured) {
  json s = bench::load_suite_result(kH100);
  json extra = json::array();
  for (const json& r : s["results"])
    if (r["suite"] == "attention" && r["params"]["pass"] == "fwd") {
      json w = r;
      w["impl"] = "flash-wgmma";
      w["id"] = r["id"].get<std::string>() + "/wgmma";
      w["metrics"]["tflops"] = 500.0;
      extra.push_back(w);
    }
  ASSERT_FALSE(extra.empty());
  for (const json& w : extra) s["results"].push_back(w);
  const predict::SuiteInputs in = predict::suite_inputs(s, kH100, gpt2(), 1024, "cublas");
  EXPECT_DOUBLE_EQ(in.rates.attention_fwd_tflops, 500.0);
  EXPECT_DOUBLE_EQ(in.rates.attention_bwd_tflops, 335.0);  // no Hopper backward rows: the flash rows
  // With the Hopper backward's rows too, each pass reads its own Hopper rows.
  const json plain = bench::load_suite_result(kH100);
  for (const json& r : plain["results"])
    if (r["suite"] == "attention" && r["params"]["pass"] == "bwd") {
      json w = r;
      w["impl"] = "flash-wgmma";
      w["id"] = r["id"].get<std::string>() + "/wgmma";
      w["metrics"]["tflops"] = 300.0;
      s["results"].push_back(w);
    }
  const predict::SuiteInputs both = predict::suite_inputs(s, kH100, gpt2(), 1024, "cublas");
  EXPECT_DOUBLE_EQ(both.rates.attention_fwd_tflops, 500.0);
  EXPECT_DOUBLE_EQ(both.rates.attention_bwd_tflops, 300.0);
}

TEST(PlanPredict, BadInputIsOneLineNamingTheFieldExit2) {
  TempDir d;
  const std::string base = "plan --predict --config " + kConfig + " --gemm-impl cublas --max-nodes 1 ";
  struct Case {
    std::string args, expect;
  } cases[] = {
      {"plan --predict --suite " + kH100, "--config: expected the training config"},
      {"plan --predict --config " + kConfig, "--suite: expected at least one"},
      {base + "--suite " + kH100 + " --suite " + kA100 + " --price 1 --price 2 --price 3",
       "--price: expected one price or one per --suite (2), got 3"},
      {base + "--suite " + kH100 + " --tokens ten", "--tokens: expected a positive count such as 10e9, 10B or 300M, got 'ten'"},
      {base + "--suite " + kH100 + " --tokens 5Q", "got '5Q'"},
      {base + "--suite " + kH100 + " --knee 1.5", "--knee: expected a share in (0, 1]"},
      {base + "--suite " + kH100 + " --price -2", "--price: expected a number >= 0"},
      {"plan --predict --config " + kConfig + " --gemm-impl cublas --suite " + kH100 + " --max-nodes 4",
       "--nic-gbps: expected each node's NIC line rate"},
      {base + "--suite " + std::string(LT_SOURCE_DIR) + "/tests/fixtures/bench/h100.json",
       "tests/fixtures/bench/h100.json: results: no measured attention fwd row"},
      {base + "--suite " + kConfig, "not valid JSON"},
      {base + "--suite " + d / "missing.json", "missing.json"},
      {"plan --predict --config " + d / "none.toml" + " --suite " + kH100, "none.toml"},
  };
  for (const Case& c : cases) {
    auto r = run_cli(c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.both();
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(test::count_lines(r.err), 1) << c.args << "\n" << r.err;
    EXPECT_EQ(r.out, "") << c.args;
  }
  // A GPU count past an int was wrapped to one GPU a node without a word.
  json big = bench::load_suite_result(kH100);
  big["machine"]["gpu"]["count"] = int64_t(1) << 31;
  write_file(d / "big.json", big.dump());
  auto b = run_cli(base + "--suite " + d / "big.json");
  EXPECT_EQ(b.code, 2) << b.both();
  EXPECT_EQ(b.err, "leasetrain: error: " + d / "big.json" + ": machine.gpu.count: expected 1 .. 65536 GPUs, got 2147483648\n");
  // A sweep file for --intra-allreduce that is not one names the row.
  write_file(d / "sweep.json", R"([{"size": 8, "time_us": 10}, {"size": "big", "time_us": 20}])");
  auto r = run_cli(base + "--suite " + kH100 + " --gpus-per-node 2 --intra-allreduce " + d / "sweep.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find(d / "sweep.json" + ": row 1: expected numeric size > 0 and time_us > 0"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lt
