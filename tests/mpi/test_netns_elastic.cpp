// A whole node lost under a leased training job: 4 CPU ranks, 2 on each of tests/mpi/netns.h's
// two namespace nodes, under `launch --restarts 1`. Once the job's first checkpoint is written,
// node 1 is lost whole: every process in its namespace (its two ranks and OpenMPI's daemon) is
// killed with SIGKILL and its links are taken down, so that nothing can reach it again (the
// cluster's ssh goes over the links, as a real one would). launch names the failure, the probe
// of node 1 fails and the node is left out, and the job resumes from its checkpoint on node 0's
// 2 ranks, keeping the global batch, to the end.
//
// Needs root, `ip netns`, unshare and mpirun; skips with the reason otherwise.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/mpi/dp_job.h"
#include "tests/mpi/netns.h"

namespace lt::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kSteps = 60, kCheckpoint = 10;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A JSON file another process replaces atomically, or nothing while it is absent or unreadable.
std::optional<json> read_json(const std::string& path) {
  const std::string text = read_file(path);
  json j = json::parse(text, nullptr, false);
  if (text.empty() || j.is_discarded()) return std::nullopt;
  return j;
}

// The hosts of a usage record's or plan's ranks, in rank order.
std::vector<std::string> rank_hosts(const json& ranks) {
  std::vector<std::string> v;
  for (const json& r : ranks) v.push_back(r["host"].get<std::string>());
  return v;
}

class NetnsElastic : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = netns_why_not_runnable(); !why.empty()) GTEST_SKIP() << why;
    nodes_ = std::make_unique<TwoNodes>();
    if (!nodes_->error.empty()) GTEST_SKIP() << nodes_->error;
    path_ = write_netns_ssh(dir_ / "bin", dir_ / "ssh.log");
    root_ = dir_ / "tenant";
    fs::create_directories(root_);
    write_corpus_shards(root_);
    // micro_batch 2 x 4 ranks: a global batch of 8, which node 0's 2 ranks keep with
    // grad_accum 2. The watchdog bounds a rank that would wait on a lost peer.
    config_ = dp_write_config(root_, "job", DpJobSpec{.micro_batch = 2, .steps = kSteps,
                                                      .checkpoint_interval = kCheckpoint,
                                                      .dist = "watchdog_timeout = 20\n"});
    manifest_ = dir_ / "manifest.toml";
    write_file(manifest_, netns_manifest(*nodes_, {{.id = "lease-e", .tenant = "e", .root = root_, .cpu_ranks = 2}}));
    job_dir_ = root_ + "/jobs/" + kJob;
    run_ = root_ + "/run";
  }

  void TearDown() override {
    if (launch_.joinable()) launch_.join();
  }

  // Starts `launch ... -- train` on node 0 (where mpirun runs), in the background.
  void start(const std::string& flags) {
    const std::string cmd = "timeout -k 5 150 " + std::string(LT_CLI) + " launch --manifest " + manifest_ +
                            " --lease lease-e --job-id " + kJob + " --np 4 " + flags + " -- train --config " +
                            config_ + " --out " + run_;
    launch_ = std::thread([this, cmd] { result_ = run_sh(nodes_->on_node(0, cmd), "", {{"PATH", path_}}); });
  }
  RunResult finish() {
    launch_.join();
    return result_;
  }

  // Waits (at most `limit` s) for `done`, polled every 20 ms.
  template <class F>
  bool wait_for(F done, double limit) {
    const auto t0 = Clock::now();
    while (seconds_since(t0) < limit) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // progress.json of the attempt running now, once it has completed a step after resuming.
  bool resumed_and_stepped() {
    std::optional<json> p = read_json(job_dir_ + "/progress.json");
    return p && (*p)["start_step"].get<int64_t>() > 0 && (*p)["step"].get<int64_t>() > (*p)["start_step"].get<int64_t>();
  }

  // Node 1 lost whole: every process in its namespace killed, then its links down.
  void lose_node1() {
    for (int i = 0; i < 2; ++i) run_sh("ip netns pids " + nodes_->ns[1] + " | xargs -r kill -9");
    RunResult r = nodes_->set_links(1, false);
    ASSERT_EQ(r.code, 0) << r.err;
  }

  // The last file a checkpoint's save writes.
  std::string checkpoint(int step) const {
    char name[64];
    std::snprintf(name, sizeof name, "/checkpoints/step-%08d/trainer.json", step);
    return run_ + name;
  }

  std::vector<json> usage() const {
    std::vector<json> v;
    std::ifstream in(root_ + "/usage.jsonl");
    for (std::string line; std::getline(in, line);) v.push_back(json::parse(line));
    return v;
  }

  // The run's metrics: one line per step, 1..kSteps, whatever the attempts.
  void expect_continuous_metrics() {
    const std::vector<json> m = read_metrics(run_);
    ASSERT_EQ(m.size(), size_t(kSteps));
    for (size_t i = 0; i < m.size(); ++i) EXPECT_EQ(m[i]["step"], int64_t(i + 1));
  }

  void expect_audit_verifies() {
    RunResult v = run_cli("audit verify " + shell_quote(root_ + "/usage.jsonl"));
    EXPECT_EQ(v.code, 0) << v.both();
  }

  static constexpr const char* kJob = "elastic1";
  TempDir dir_;
  std::unique_ptr<TwoNodes> nodes_;
  std::string path_, root_, config_, manifest_, job_dir_, run_;
  std::thread launch_;
  RunResult result_;
};

TEST_F(NetnsElastic, ALostNodeIsLeftOutAndTheJobFinishesOnTheOther) {
  const std::string n0 = nodes_->ns[0], n1 = nodes_->ns[1];
  start("--restarts 1 --probe-timeout 5");
  const bool checkpointed = wait_for([&] { return fs::exists(checkpoint(kCheckpoint)); }, 90);
  if (checkpointed) lose_node1();
  const auto lost = Clock::now();
  double to_first_step = -1;
  if (checkpointed && wait_for([&] { return resumed_and_stepped(); }, 60)) to_first_step = seconds_since(lost);
  RunResult r = finish();
  ASSERT_TRUE(checkpointed) << "no checkpoint at step " << kCheckpoint << "\n" << r.both();
  ASSERT_EQ(r.code, 0) << r.both();
  for (size_t b = 0, e; (e = r.err.find('\n', b)) != std::string::npos; b = e + 1)  // what the user saw
    if (r.err.compare(b, 19, "leasetrain: launch:") == 0) std::printf("%s\n", r.err.substr(b, e - b).c_str());
  std::printf("node 1 lost after the step-%d checkpoint; first step of the restarted job %.2f s later\n", kCheckpoint,
              to_first_step);
  EXPECT_GT(to_first_step, 0) << "the restarted job's first step was not seen";

  // The failure is named by node, no rank (the node's ranks went with it): from OpenMPI's report
  // of its lost daemon, or, when mpirun only saw the daemon's ssh end ("ORTE was unable to
  // reliably start one or more daemons"), from node 0's ranks' report of their peers on node 1
  // hanging up. Node 1's probe fails at once (ssh cannot reach it), not by running out its 5 s;
  // node 0 passes.
  const size_t failed = r.err.find("launch: attempt 1 failed (exit ");
  ASSERT_NE(failed, std::string::npos) << r.err;
  const std::string failed_line = r.err.substr(failed, r.err.find('\n', failed) - failed);
  EXPECT_NE(failed_line.find("): mpirun exited with "), std::string::npos) << failed_line;
  EXPECT_TRUE(failed_line.find(": lost communication with its daemon on node " + n1) != std::string::npos ||
              failed_line.find(": an MPI process on node " + n1 + " hung up on its peers") != std::string::npos)
      << failed_line << "\nmpirun said:\n" << read_file(job_dir_ + "/attempt-1.log");
  EXPECT_NE(r.err.find("launch: probe of " + n1 + " failed ("), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("no answer within"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(n1 + " failed (mpirun exited with"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("; leaving it out"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("launch: probe of " + n0 + ": "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("launch: attempt 2 of at most 2: 2 ranks on " + n0 + " (2), resuming"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("launch: completed on attempt 2"), std::string::npos) << r.err;

  // The trainer: 4 ranks, then 2 from the checkpoint with the same global batch, to the end.
  EXPECT_EQ(count(r.out, "dist: 4 ranks"), 1u) << r.out;
  EXPECT_EQ(count(r.out, "dist: 2 ranks"), 1u) << r.out;
  EXPECT_NE(r.out.find("resume: global batch 8 kept on 2 ranks: micro_batch 2 x grad_accum 2 (was 2 x 1 on 4)"),
            std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(checkpoint(kSteps)));
  expect_continuous_metrics();

  // Attempt 2 ran on node 0 only: its plan, the attempts list and its usage record agree.
  const json plan = json::parse(read_file(job_dir_ + "/plan.json"));
  EXPECT_EQ(plan["np"], 2);
  ASSERT_EQ(plan["nodes"].size(), 1u);
  EXPECT_EQ(plan["nodes"][0]["host"], n0);
  EXPECT_EQ(rank_hosts(plan["ranks"]), std::vector<std::string>({n0, n0}));
  const json a = json::parse(read_file(job_dir_ + "/attempts.json"));
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0]["ranks"], 4);
  EXPECT_EQ(a[0]["hosts"], json({n0, n1}));
  EXPECT_EQ(a[0]["outcome"], "failed");
  EXPECT_EQ(a[0]["failed_host"], n1);
  EXPECT_FALSE(a[0].contains("failed_rank")) << a[0];
  EXPECT_EQ(a[1]["ranks"], 2);
  EXPECT_EQ(a[1]["hosts"], json({n0}));
  EXPECT_EQ(a[1]["resumed"], true);
  EXPECT_EQ(a[1]["outcome"], "completed");
  EXPECT_EQ(a[1]["progress"]["start_step"], kCheckpoint);
  const std::vector<json> rec = usage();
  ASSERT_EQ(rec.size(), 2u);
  EXPECT_EQ(rank_hosts(rec[0]["ranks"]), std::vector<std::string>({n0, n0, n1, n1}));
  EXPECT_EQ(rank_hosts(rec[1]["ranks"]), std::vector<std::string>({n0, n0}));
  EXPECT_EQ(rec[1]["attempt"], 2);
  EXPECT_EQ(rec[1]["prev"], rec[0]["hash"]);
  expect_audit_verifies();
}

}  // namespace
}  // namespace lt::test
