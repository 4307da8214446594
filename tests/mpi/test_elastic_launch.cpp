// launch --restarts: one usage record per attempt, chained; a failed rank's slot left out; no
// restart on bad input; giving up after N restarts or on a crash loop; a node whose probe fails
// left out; a real 4-rank training job that loses a rank to kill -9 and finishes on 3 from its
// newest checkpoint; srun's report of a lost task (a stand-in srun). Jobs are CPU ranks on this
// host through mpirun (skipped without it).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <tuple>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lease/audit.h"
#include "lease/lease_plan.h"
#include "lease/manifest.h"
#include "lease/supervise.h"
#include "runtime/error.h"
#include "tests/lease_fixtures.h"
#include "tests/mpi/dp_job.h"
#include "tests/util.h"

namespace fs = std::filesystem;
using namespace lt::lease;
using namespace lt::test;
using nlohmann::json;

namespace {

bool have_mpirun() { return run_sh("command -v mpirun").code == 0; }

// `leasetrain launch` of the embedded local lease with --np 4 CPU ranks, a usage log and a job
// directory in `dir`, then ARGS.
RunResult launch(const TempDir& dir, const std::string& args, int limit_s = 90) {
  return run_sh("timeout -k 5 " + std::to_string(limit_s) + " " + std::string(LT_CLI) +
                    " launch --launcher mpirun --usage-log " + lt::test::shell_quote(dir / "usage.jsonl") + " --job-dir " +
                    lt::test::shell_quote(dir / "job") + " " + args,
                dir.path.string());
}

std::vector<json> records(const TempDir& dir) {
  std::vector<json> v;
  std::ifstream in(dir / "usage.jsonl");
  std::string line;
  while (std::getline(in, line)) v.push_back(json::parse(line));
  return v;
}

json attempts(const TempDir& dir) { return json::parse(read_file(dir / "job/attempts.json")); }

// make_plan around what a restart left out: a device of node01 and the whole of node02 of the
// fixture cluster's acme lease (two GPUs on each node).
TEST(ElasticPlan, LeftOutDevicesAndNodesAreNotPlanned) {
  PlanRequest req;
  req.caller = Identity{1000, "alice", {1000}, {"alice"}};
  req.now = lt::lease::parse_time("2025-06-01T00:00:00Z");
  req.sysfs_root = kSysfs;
  req.check_usage = false;
  req.attempt = 3;
  req.exclude["node01"].devices.insert("GPU-11111111-0000-4000-8000-000000000000");
  req.exclude["node02"].whole_node = true;
  const Manifest m = load_manifest(kManifest);
  Plan p = make_plan(m, "acme-2024", req);
  ASSERT_EQ(p.np, 1);
  ASSERT_EQ(p.nodes.size(), 1u);
  EXPECT_EQ(p.ranks[0].env.at("CUDA_VISIBLE_DEVICES"), "GPU-11111111-0000-4000-8000-000000000001");
  EXPECT_EQ(p.ranks[0].env.at("LEASETRAIN_ATTEMPT"), "3");
  EXPECT_EQ(p.ranks[0].env.at("LEASETRAIN_NODES"), "1");
  req.np = 2;
  try {
    make_plan(m, "acme-2024", req);
    ADD_FAILURE() << "--np 2 on one slot left was planned";
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("once the left-out slots are taken away"), std::string::npos) << e.what();
  }
}

// The attempt fields of a usage record are typed like the others.
TEST(ElasticPlan, AttemptFieldsOfAUsageRecordAreChecked) {
  TempDir dir;
  const char* old = std::getenv(kAnchorFileEnv);
  const std::string kept = old ? old : "";
  ::setenv(kAnchorFileEnv, (dir / "anchors.log").c_str(), 1);
  const json good = {{"kind", "job"}, {"lease", "l1"}, {"gpu_seconds", 0.0}, {"attempt", 2},
                     {"outcome", "preempted"}, {"reason", "the job was preempted"}};
  append_record(dir / "usage.jsonl", good);
  for (const auto& [key, value, expected] :
       std::vector<std::tuple<std::string, json, std::string>>{{"attempt", 0, "field 'attempt'"},
                                                                {"outcome", "exploded", "field 'outcome'"},
                                                                {"reason", "two\nlines", "field 'reason'"}}) {
    json bad = good;
    bad[key] = value;
    try {
      append_record(dir / "usage.jsonl", bad);
      ADD_FAILURE() << key << " = " << value.dump() << " was appended";
    } catch (const lt::UserError& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(verify_log(dir / "usage.jsonl").records, 1u);
  if (old) ::setenv(kAnchorFileEnv, kept.c_str(), 1);
  else ::unsetenv(kAnchorFileEnv);
}

TEST(ElasticLaunch, NoRestartsIsOneAttempt) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  RunResult r = launch(dir, "--np 2 -- sh -c 'exit 5'");
  EXPECT_EQ(r.code, 5) << r.both();
  ASSERT_EQ(records(dir).size(), 1u);
  EXPECT_EQ(records(dir)[0]["attempt"], 1);
  EXPECT_EQ(records(dir)[0]["outcome"], "failed");
  EXPECT_EQ(count(r.err, "launch: attempt "), 1u) << "no restart line: " << r.err;
  EXPECT_EQ(r.err.find("probe"), std::string::npos) << r.err;
}

TEST(ElasticLaunch, FailsOnceThenSucceedsOnTheSlotsLeft) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  // Attempt 1: rank 2 exits 7 after saying why in its exit record; attempt 2 succeeds.
  const std::string rank =
      "if [ $LEASETRAIN_ATTEMPT = 1 ] && [ $OMPI_COMM_WORLD_RANK = 2 ]; then "
      "echo \"{\\\"rank\\\": 2, \\\"host\\\": \\\"$LEASETRAIN_NODE\\\", \\\"exit_code\\\": 7, \\\"error\\\": \\\"disk on fire\\\"}\" "
      "> $LEASETRAIN_JOB_DIR/rank-2.exit.json; exit 7; fi; sleep 1; "
      "echo $OMPI_COMM_WORLD_SIZE $LEASETRAIN_NODES > $LEASETRAIN_JOB_DIR/seen-$LEASETRAIN_ATTEMPT-$OMPI_COMM_WORLD_RANK";
  RunResult r = launch(dir, "--np 4 --restarts 2 -- sh -c " + lt::test::shell_quote(rank));
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.err.find("launch: attempt 1 failed (exit 7): rank 2 on " + local_hostname() + " exited with 7: disk on fire"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("launch: attempt 2 of at most 3: 3 ranks on"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("launch: completed on attempt 2"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(dir / "job/seen-2-0"), "3 1\n");
  EXPECT_FALSE(fs::exists(dir / "job/seen-2-3"));
  // The first attempt's last words moved aside; each attempt its own launcher log.
  EXPECT_TRUE(fs::exists(dir / "job/attempt-1/rank-2.exit.json"));
  EXPECT_FALSE(fs::exists(dir / "job/rank-2.exit.json"));
  EXPECT_NE(read_file(dir / "job/attempt-1.log").find("exit code"), std::string::npos);  // mpirun's own report
  // Two chained records, one per attempt; the chain verifies.
  std::vector<json> rec = records(dir);
  ASSERT_EQ(rec.size(), 2u);
  EXPECT_EQ(rec[0]["attempt"], 1);
  EXPECT_EQ(rec[0]["outcome"], "failed");
  EXPECT_EQ(rec[0]["exit_status"], 7);
  EXPECT_EQ(rec[0]["ranks"].size(), 4u);
  EXPECT_EQ(rec[1]["attempt"], 2);
  EXPECT_EQ(rec[1]["outcome"], "completed");
  EXPECT_EQ(rec[1]["ranks"].size(), 3u);
  EXPECT_EQ(rec[1]["prev"], rec[0]["hash"]);
  RunResult v = run_cli("audit verify " + lt::test::shell_quote(dir / "usage.jsonl"));
  EXPECT_EQ(v.code, 0) << v.both();
  json a = attempts(dir);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0]["failed_rank"], 2);
  EXPECT_EQ(a[0]["ranks"], 4);
  EXPECT_EQ(a[1]["ranks"], 3);
}

TEST(ElasticLaunch, ARankKilledBySignalIsNamedAndLeftOut) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  // No last words: the launcher's own report names the rank.
  const std::string rank =
      "if [ $LEASETRAIN_ATTEMPT = 1 ] && [ $OMPI_COMM_WORLD_RANK = 1 ]; then sleep 1; kill -9 $$; fi; sleep 3";
  RunResult r = launch(dir, "--np 4 --restarts 1 -- sh -c " + lt::test::shell_quote(rank));
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.err.find("rank 1 on " + local_hostname() + " was killed by signal 9"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("leaving out rank 1's slot"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("launch: probe of " + local_hostname() + ": "), std::string::npos) << r.err;
  json a = attempts(dir);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[1]["ranks"], 3);
}

// srun's own report names the rank: what Slurm 22.05's srun printed for a task killed with
// SIGKILL (the first line; the tasks it then terminated follow), for a segfault and for an exit
// code, replayed by a stand-in srun on PATH (attempt 1 fails, attempt 2 and the probe run).
TEST(ElasticLaunch, SrunsReportNamesTheRank) {
  const std::string host = local_hostname();
  struct Case {
    std::string report, named;
    int status;
  };
  for (const Case& c : {Case{"task 2: Killed\nsrun: launch/slurm: _step_signal: Terminating StepId=10.0\n"
                             "slurmstepd-" + host + ": error: *** STEP 10.0 ON " + host + " CANCELLED AT 2026-12-02T17:34:41 ***\n"
                             "srun: Job step aborted: Waiting up to 7 seconds for job step to finish.\n"
                             "srun: error: " + host + ": tasks 0-1,3: Killed",
                             "rank 2 on " + host + " was killed by signal 9 (Killed)", 137},
                        Case{"task 1: Segmentation fault (core dumped)\nsrun: error: " + host + ": tasks 0,2-3: Terminated",
                             "rank 1 on " + host + " was killed by signal 11 (Segmentation fault)", 139},
                        Case{"task 3: Exited with exit code 7\nsrun: error: " + host + ": tasks 0-2: Terminated",
                             "rank 3 on " + host + " exited with 7", 143}}) {
    TempDir dir;
    fs::create_directories(dir / "bin");
    write_file(dir / "report", "srun: error: " + host + ": " + c.report + "\n");
    write_file(dir / "bin/srun",
               "#!/bin/sh\ncase \" $* \" in\n"
               "*\" --multi-prog \"*) for a; do conf=$a; done\n"
               "  if grep -q 'LEASETRAIN_ATTEMPT=1 ' \"$conf\"; then cat " + lt::test::shell_quote(dir / "report") +
               " >&2; exit " + std::to_string(c.status) + "; fi; exit 0;;\n"
               "*) while [ \"$1\" != --export=NONE ]; do shift; done; shift; exec \"$@\";;\nesac\n");
    fs::permissions(dir / "bin/srun", fs::perms::owner_all);
    RunResult r = run_sh("PATH=" + lt::test::shell_quote(dir / "bin") + ":$PATH timeout -k 5 60 " + std::string(LT_CLI) +
                             " launch --launcher srun --usage-log " + lt::test::shell_quote(dir / "usage.jsonl") +
                             " --job-dir " + lt::test::shell_quote(dir / "job") + " --np 4 --restarts 1 -- true",
                         dir.path.string());
    ASSERT_EQ(r.code, 0) << r.both();
    EXPECT_NE(r.err.find("attempt 1 failed (exit " + std::to_string(c.status) + "): " + c.named + "\n"), std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("launch: probe of " + host + ": "), std::string::npos) << r.err;
    json a = attempts(dir);
    ASSERT_EQ(a.size(), 2u);
    EXPECT_EQ(a[1]["ranks"], 3) << "the named rank's slot is left out";
  }
}

TEST(ElasticLaunch, BadInputIsNotRestarted) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  RunResult r = launch(dir, "--np 2 --restarts 3 -- sh -c 'exit 2'");
  EXPECT_EQ(r.code, 2) << r.both();
  EXPECT_NE(r.err.find("giving up after attempt 1: bad input (exit 2)"), std::string::npos) << r.err;
  EXPECT_EQ(records(dir).size(), 1u);
  EXPECT_EQ(records(dir)[0]["outcome"], "bad-input");
}

TEST(ElasticLaunch, ACrashLoopGivesUp) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  RunResult r = launch(dir, "--np 2 --restarts 5 -- sh -c 'exit 1'");
  EXPECT_EQ(r.code, 1) << r.both();
  EXPECT_NE(r.err.find("giving up after attempt 2: crash loop: attempts 1 and 2 both ended before completing their "
                       "first step"),
            std::string::npos) << r.err;
  EXPECT_EQ(records(dir).size(), 2u);
  EXPECT_TRUE(verify_log(dir / "usage.jsonl").ok);
}

TEST(ElasticLaunch, GivesUpAfterNRestartsWhenEachAttemptProgresses) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  // Each attempt completes steps (progress.json, as the trainer writes it), then rank 0 fails.
  const std::string rank =
      "if [ $OMPI_COMM_WORLD_RANK = 0 ]; then echo '{\"step\": 5, \"start_step\": 0, \"checkpoint_step\": 0, "
      "\"checkpoint_seconds\": 0, \"global_batch\": 4, \"world\": 2, \"time\": \"2026-01-01T00:00:00Z\"}' "
      "> $LEASETRAIN_JOB_DIR/progress.json; echo '{\"rank\": 0, \"host\": \"h\", \"exit_code\": 1, "
      "\"error\": \"injected\"}' > $LEASETRAIN_JOB_DIR/rank-0.exit.json; exit 1; fi; sleep 2";
  RunResult r = launch(dir, "--np 4 --restarts 2 -- sh -c " + lt::test::shell_quote(rank));
  EXPECT_EQ(r.code, 1) << r.both();
  EXPECT_NE(r.err.find("giving up after attempt 3: 2 restarts used"), std::string::npos) << r.err;
  // The host is the plan's for rank 0, not the "h" its (tenant-written) record claims.
  EXPECT_NE(r.err.find("attempt 1 failed (exit 1): rank 0 on " + local_hostname() + " exited with 1: injected"),
            std::string::npos) << r.err;
  EXPECT_EQ(records(dir).size(), 3u);
  EXPECT_TRUE(fs::exists(dir / "job/attempt-1/progress.json"));
  EXPECT_TRUE(fs::exists(dir / "job/attempt-2/progress.json"));
  EXPECT_TRUE(verify_log(dir / "usage.jsonl").ok);
  // 4 ranks, then 3 slots left but a global batch of 4: 2 ranks keep it; then 2 of the 2 left.
  json a = attempts(dir);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0]["progress"]["step"], 5);
  EXPECT_EQ(a[0]["ranks"], 4);
  EXPECT_EQ(a[1]["ranks"], 2);
  EXPECT_EQ(a[2]["ranks"], 2);
}

TEST(ElasticLaunch, GrowTakesBackASlotAtItsNextProbeNotAtTheRestart) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  // Rank 1 of attempt 1 dies; every rank takes SIGUSR1 as a trainer does (exit 75).
  const std::string rank = "trap 'exit 75' USR1; if [ $LEASETRAIN_ATTEMPT = 1 ] && [ $OMPI_COMM_WORLD_RANK = 1 ]; "
                           "then sleep 1; kill -9 $$; fi; sleep 4 & wait";
  RunResult r = launch(dir, "--np 4 --restarts 1 --grow --grow-interval 1 -- sh -c " + lt::test::shell_quote(rank));
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.err.find("leaving out rank 1's slot"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("; admitted again"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("asking the job to checkpoint and stop, to restart it larger"), std::string::npos) << r.err;
  json a = attempts(dir);
  ASSERT_EQ(a.size(), 3u) << r.err;
  EXPECT_EQ(a[1]["ranks"], 3);  // the restart after the failure keeps the slot out
  EXPECT_EQ(a[1]["reason"], "preempted to restart on more slots");
  EXPECT_EQ(a[2]["ranks"], 4);  // taken back by the probe a second later
  EXPECT_EQ(a[2]["outcome"], "completed");
}

// SIGTERM to launch: the ranks get SIGUSR1 (they checkpoint and exit 75), the attempt is
// recorded as preempted, launch exits 75 and does not restart.
TEST(ElasticLaunch, SigtermToLaunchPreemptsWithoutRestarting) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  const std::string rank = "trap 'exit 75' USR1; sleep 30 & wait";
  RunResult r = run_sh(std::string(LT_CLI) + " launch --launcher mpirun --np 2 --restarts 3 --usage-log " +
                           lt::test::shell_quote(dir / "usage.jsonl") + " --job-dir " +
                           lt::test::shell_quote(dir / "job") + " -- sh -c " + lt::test::shell_quote(rank) +
                           " & pid=$!; sleep 2; kill -TERM $pid; wait $pid",
                       dir.path.string());
  EXPECT_EQ(r.code, 75) << r.both();
  EXPECT_NE(r.err.find("launch: stopped by a signal: attempt 1 recorded as preempted"), std::string::npos) << r.err;
  std::vector<json> rec = records(dir);
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec[0]["outcome"], "preempted");
  EXPECT_EQ(rec[0]["exit_status"], 75);
}

// What the ranks print passes through the launcher's stderr, which launch reads to name the
// failed rank: an endless line (here 300 kB, a match std::regex would recurse into once per
// character) must not crash launch, and the usage record of the attempt must be appended.
TEST(ElasticReview, AnEndlessLineOnARanksStderrCannotCrashLaunchOrCostTheRecord) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  const std::string rank =
      "if [ $OMPI_COMM_WORLD_RANK = 1 ]; then "
      "head -c 300000 /dev/zero | tr '\\0' x | sed 's/^/process rank 0 with PID 1 on node /' >&2; "
      "printf 'Process name: [[1,1],0]' >&2; head -c 300000 /dev/zero | tr '\\0' ' ' >&2; fi; exit 1";
  RunResult r = launch(dir, "--np 2 -- sh -c " + lt::test::shell_quote(rank));
  EXPECT_EQ(r.code, 1) << r.err.substr(r.err.size() > 2000 ? r.err.size() - 2000 : 0);
  std::vector<json> rec = records(dir);
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec[0]["outcome"], "failed");
  EXPECT_TRUE(verify_log(dir / "usage.jsonl").ok);
}

// A rank that prints a line shaped like the launcher's report before it dies does not get
// another rank blamed (and left out): the launcher's own report comes last.
TEST(ElasticReview, AForgedLauncherReportDoesNotNameTheFailedRank) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  const std::string rank =
      "if [ $LEASETRAIN_ATTEMPT = 1 ] && [ $OMPI_COMM_WORLD_RANK = 1 ]; then "
      "echo 'mpirun noticed that process rank 0 with PID 1 on node elsewhere exited on signal 9 (Killed).' >&2; "
      "sleep 1; kill -9 $$; fi; sleep 3";
  RunResult r = launch(dir, "--np 2 --restarts 1 -- sh -c " + lt::test::shell_quote(rank));
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.err.find("attempt 1 failed (exit 137): rank 1 on " + local_hostname() + " was killed by signal 9"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("leaving out rank 1's slot"), std::string::npos) << r.err;
  json a = attempts(dir);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0]["failed_rank"], 1);
  EXPECT_EQ(a[0]["failed_host"], local_hostname());
}

// SIGTERM to launch while it probes the nodes (a scheduler's grace period is short; with many
// nodes the probes take up to --probe-timeout each): the probe under way is ended, no other
// starts, no node is left out for not answering, and launch exits 75 at once.
TEST(ElasticReview, SigtermDuringAProbeEndsItAtOnce) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  // An mpirun whose probes hang (a node that does not answer), and say when they start.
  write_file(dir / "mpirun-slow-probe",
             "#!/bin/sh\ncase \"$*\" in *\" probe\"*) touch " + (dir / "probing") + "; sleep 100;; esac\nexec mpirun \"$@\"\n");
  fs::permissions(dir / "mpirun-slow-probe", fs::perms::owner_all);
  const auto t0 = std::chrono::steady_clock::now();
  RunResult r = run_sh("timeout -k 5 90 " + std::string(LT_CLI) + " launch --launcher mpirun --mpirun " +
                           lt::test::shell_quote(dir / "mpirun-slow-probe") + " --np 2 --restarts 2 --probe-timeout 60 "
                           "--usage-log " + lt::test::shell_quote(dir / "usage.jsonl") + " --job-dir " +
                           lt::test::shell_quote(dir / "job") + " -- sh -c 'exit 1' & pid=$!; "
                           "while [ ! -e probing ]; do sleep 0.1; done; kill -TERM $pid; wait $pid",
                       dir.path.string());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.code, 75) << r.both();
  EXPECT_LT(secs, 20) << "launch waited for the probe: " << r.err;
  EXPECT_EQ(r.err.find("failed (no answer"), std::string::npos) << "a node left out for a probe launch ended:\n" << r.err;
  EXPECT_NE(r.err.find("launch: stopped by a signal before attempt 2"), std::string::npos) << r.err;
  EXPECT_EQ(records(dir).size(), 1u);
}

// A job dir used again by a later launch (`run the same launch again to resume`): the earlier
// launch's progress.json must not count as this launch's first attempt's progress (the crash
// loop is found at attempt 2, not 3), its last words must not name this attempt's failed rank,
// and its logs and attempts.json are kept, not overwritten.
TEST(ElasticReview, AJobDirUsedAgainDoesNotJudgeTheNewLaunchByTheOldOne) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  fs::create_directories(dir / "job");
  write_file(dir / "job/progress.json",
             "{\"step\": 50, \"start_step\": 40, \"checkpoint_step\": 50, \"checkpoint_seconds\": 1, "
             "\"global_batch\": 4, \"world\": 4, \"time\": \"2026-01-01T00:00:00Z\"}\n");
  write_file(dir / "job/rank-1.exit.json", "{\"rank\": 1, \"host\": \"h\", \"exit_code\": 1, \"error\": \"old news\"}\n");
  write_file(dir / "job/attempt-1.log", "the earlier launch's log\n");
  write_file(dir / "job/attempts.json", "[]\n");
  RunResult r = launch(dir, "--np 2 --restarts 5 -- sh -c 'sleep 0.5; exit 1'");
  EXPECT_EQ(r.code, 1) << r.both();
  EXPECT_NE(r.err.find("giving up after attempt 2: crash loop"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("old news"), std::string::npos) << r.err;
  json a = attempts(dir);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_FALSE(a[0].contains("progress")) << a.dump();
  EXPECT_EQ(read_file(dir / "job/earlier-1/attempt-1.log"), "the earlier launch's log\n");
  EXPECT_TRUE(fs::exists(dir / "job/earlier-1/progress.json"));
}

// A rank's last words are cut to 300 bytes for the reason; cut inside a UTF-8 character they
// must not end launch with an internal error when attempts.json is written (the restart lost).
TEST(ElasticReview, LastWordsCutInsideAUtf8CharacterDoNotEndLaunch) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  const std::string error = std::string(299, 'a') + "\xc3\xa9";  // an e-acute across byte 300
  const std::string rank =
      "if [ $LEASETRAIN_ATTEMPT = 1 ] && [ $OMPI_COMM_WORLD_RANK = 0 ]; then echo '{\"rank\": 0, \"host\": \"h\", "
      "\"exit_code\": 1, \"error\": \"" + error + "\"}' > $LEASETRAIN_JOB_DIR/rank-0.exit.json; exit 1; fi; sleep 1";
  RunResult r = launch(dir, "--np 2 --restarts 1 -- sh -c " + lt::test::shell_quote(rank));
  EXPECT_EQ(r.code, 0) << r.both();
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
  EXPECT_EQ(attempts(dir).size(), 2u);
  EXPECT_EQ(records(dir).size(), 2u);
}

// A manifest of this host and one that does not resolve, two CPU ranks each, joined (as far as
// the manifest knows) by loopback.
std::string two_node_manifest(const std::string& root) {
  const std::string host = local_hostname();
  const std::string nic = "  [[node.nic]]\n  netdev = \"lo\"\n  ip = \"127.0.0.1/8\"\n";
  return "[operator]\nid = \"test\"\n[[node]]\nhostname = \"" + host + "\"\n" + nic +
         "[[node]]\nhostname = \"unreachable-node.invalid\"\n" + nic + "[[tenant]]\nid = \"t\"\n[[lease]]\nid = \"l1\"\n"
         "tenant = \"t\"\nnot_before = 2020-01-01T00:00:00Z\nnot_after = 2200-01-01T00:00:00Z\n"
         "grace_seconds = 60\nstorage_roots = [\"" + root +
         "\"]\n[lease.quota]\nmax_ranks = 4\ngpu_hours = 1\nstorage_bytes = \"1GiB\"\n"
         "[lease.policy]\ndevice_probe = \"warn\"\n"
         "[[lease.alloc]]\nnode = \"" + host + "\"\ncpu_ranks = 2\nnics = [\"lo\"]\n"
         "[[lease.alloc]]\nnode = \"unreachable-node.invalid\"\ncpu_ranks = 2\nnics = [\"lo\"]\n";
}

TEST(ElasticLaunch, ANodeThatFailsItsProbeIsLeftOut) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  write_file(dir / "m.toml", two_node_manifest(dir.path.string()));
  RunResult r = run_sh("timeout -k 5 90 " + std::string(LT_CLI) +
                           " launch --launcher mpirun --manifest m.toml --lease l1 --job-id probe1 --restarts 1 "
                           "--probe-timeout 20 -- sh -c 'echo $OMPI_COMM_WORLD_SIZE > $LEASETRAIN_JOB_DIR/size'",
                       dir.path.string());
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.err.find("launch: probe of unreachable-node.invalid failed ("), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("; leaving it out"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("launch: attempt 2 of at most 2: 2 ranks on " + local_hostname() + " (2)"), std::string::npos)
      << r.err;
  EXPECT_EQ(read_file(dir / "jobs/probe1/size"), "2\n");
  std::vector<json> rec;
  std::ifstream in(dir / "usage.jsonl");
  for (std::string line; std::getline(in, line);) rec.push_back(json::parse(line));
  ASSERT_EQ(rec.size(), 2u);
  EXPECT_EQ(rec[1]["ranks"].size(), 2u);
  EXPECT_TRUE(verify_log(dir / "usage.jsonl").ok);
}

TEST(ElasticLaunch, ProbeReportsCpusAndDeviceNodes) {
  RunResult r = run_cli("probe --minor 0 --minor 3");
  ASSERT_EQ(r.code, 0) << r.both();
  json j = json::parse(r.out);
  EXPECT_GE(j["cpus"].get<int>(), 1);
  EXPECT_EQ(j["host"], local_hostname());
  EXPECT_EQ(j["devices"].size(), 2u);
  // A device node is a character device: a leftover regular file is no device.
  TempDir dev;
  fs::create_symlink("/dev/null", dev / "nvidia0");
  write_file(dev / "nvidia3", "");
  json k = probe_this_node({0, 3, 5}, dev.path.string());
  EXPECT_EQ(k["devices"], json({{"0", true}, {"3", false}, {"5", false}}));
}

int64_t last_step(const std::string& metrics) {
  size_t b = metrics.rfind('{');
  if (b == std::string::npos) return 0;
  try {
    return json::parse(metrics.substr(b))["step"].get<int64_t>();
  } catch (...) {
    return 0;
  }
}

// A real 4-rank training job: once its step-10 checkpoint is written, rank 2's process is
// killed with SIGKILL from here; launch names it, leaves its slot out and resumes the run on 3
// ranks from that checkpoint to the end.
TEST(ElasticLaunchTrain, KilledRankResumesOnThreeRanksFromTheNewestCheckpoint) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  write_corpus_shards(dir.path.string());
  // micro_batch 3 x 4 ranks: a global batch of 12, which 3 ranks divide.
  const std::string config =
      dp_write_config(dir.path.string(), "job", DpJobSpec{.micro_batch = 3, .steps = 60, .checkpoint_interval = 10});
  const std::string job_dir = dir / "job", run = dir / "run";
  const std::string cmd = "timeout -k 5 150 " + std::string(LT_CLI) + " launch --launcher mpirun --np 4 --restarts 1 "
                          "--usage-log " + lt::test::shell_quote(dir / "usage.jsonl") + " --job-dir " + lt::test::shell_quote(job_dir) +
                          " -- train --config " + lt::test::shell_quote(config) + " --out " + lt::test::shell_quote(run);
  RunResult r;
  std::thread t([&] { r = run_sh(cmd, dir.path.string()); });
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  pid_t victim = 0;
  while (clock::now() - t0 < std::chrono::seconds(90) && !victim) {
    if (fs::exists(run + "/checkpoints/step-00000010/trainer.json"))
      victim = find_process({"LEASETRAIN_JOB_DIR=" + job_dir, "OMPI_COMM_WORLD_RANK=2", "LEASETRAIN_ATTEMPT=1"});
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const int64_t step_at_kill = last_step(read_file(run + "/metrics.jsonl"));
  if (victim) ::kill(victim, SIGKILL);
  const auto killed = clock::now();
  // The restarted job's first step: metrics.jsonl, cut back to the checkpoint, grows past it.
  double to_first_step = -1;
  std::error_code ec;
  while (victim && clock::now() - killed < std::chrono::seconds(90)) {
    const auto started = fs::last_write_time(job_dir + "/attempt-2.log", ec);
    if (!ec && fs::last_write_time(run + "/metrics.jsonl", ec) >= started && !ec) {
      if (last_step(read_file(run + "/metrics.jsonl")) > 10) {
        to_first_step = std::chrono::duration<double>(clock::now() - killed).count();
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  t.join();
  ASSERT_NE(victim, 0) << "no rank 2 process found after the first checkpoint\n" << r.both();
  ASSERT_EQ(r.code, 0) << r.both();
  std::printf("kill -9 of rank 2 at step %lld; first step of the restarted job %.2f s after the kill\n",
              (long long)step_at_kill, to_first_step);
  for (size_t b = 0, e; (e = r.err.find('\n', b)) != std::string::npos; b = e + 1)  // what the user saw
    if (r.err.compare(b, 19, "leasetrain: launch:") == 0) std::printf("%s\n", r.err.substr(b, e - b).c_str());
  EXPECT_NE(r.err.find("rank 2 on " + local_hostname() + " was killed by signal 9"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("launch: attempt 2 of at most 2: 3 ranks on " + local_hostname() + " (3), resuming"),
            std::string::npos) << r.err;
  EXPECT_EQ(count(r.out, "dist: 4 ranks"), 1u) << r.out;
  EXPECT_EQ(count(r.out, "dist: 3 ranks"), 1u) << r.out;
  EXPECT_NE(r.out.find("step 60/60"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(run + "/checkpoints/step-00000060/trainer.json"));
  std::vector<json> m = read_metrics(run);
  ASSERT_EQ(m.size(), 60u);
  for (size_t i = 0; i < m.size(); ++i) EXPECT_EQ(m[i]["step"], int64_t(i + 1));
  std::vector<json> rec = records(dir);
  ASSERT_EQ(rec.size(), 2u);
  EXPECT_EQ(rec[0]["ranks"].size(), 4u);
  EXPECT_EQ(rec[1]["ranks"].size(), 3u);
  EXPECT_TRUE(verify_log(dir / "usage.jsonl").ok);
  EXPECT_GT(to_first_step, 0) << "the restarted job's first step was not seen";

  // The same job uninterrupted on 4 ranks. The restarted run keeps the global batch of 12 on 3
  // ranks (micro_batch 2 x grad_accum 2), so its losses are the uninterrupted run's step for
  // step: bit-exact up to the checkpoint it resumed from (the same 4 ranks), then equal up to
  // the order in which 3 ranks instead of 4 sum the fp32 gradient.
  const std::string straight = dir / "straight";
  const Timed u = mpirun(4, std::string(LT_CLI) + " train --config " + lt::test::shell_quote(config) + " --out " +
                                lt::test::shell_quote(straight));
  ASSERT_EQ(u.r.code, 0) << u.r.both();
  EXPECT_NE(r.out.find("resume: global batch 12 kept on 3 ranks: micro_batch 2 x grad_accum 2 (was 3 x 1 on 4)"),
            std::string::npos) << r.out;
  const std::vector<json> s = read_metrics(straight);
  ASSERT_EQ(s.size(), 60u);
  double worst = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const double a = m[i]["loss"].get<double>(), b = s[i]["loss"].get<double>();
    if (i < 10) EXPECT_EQ(a, b) << "step " << i + 1;
    else EXPECT_NEAR(a, b, 2e-5 * std::fabs(b)) << "step " << i + 1;
    worst = std::max(worst, std::fabs(a - b) / std::fabs(b));
  }
  std::printf("losses against the uninterrupted run: largest relative difference %.2g over 60 steps\n", worst);
}


// A training job whose ranks fault inside (LEASETRAIN_TEST_FAULT, on attempt 1 only), started
// through `env` so the fault reaches the ranks: launch passes no LEASETRAIN_* variable of its
// caller. The command is not `train` itself, so it carries its own --resume (from step 0 on
// attempt 1: nothing to resume yet).
RunResult launch_faulty_train(const TempDir& dir, int np, const std::string& fault, const DpJobSpec& spec) {
  write_corpus_shards(dir.path.string());
  const std::string config = dp_write_config(dir.path.string(), "job", spec);
  return launch(dir, "--np " + std::to_string(np) + " --restarts 1 -- env LEASETRAIN_TEST_FAULT=" + fault + " " +
                         std::string(LT_CLI) + " train --resume --config " + lt::test::shell_quote(config) + " --out " +
                         lt::test::shell_quote(dir / "run"),
                150);
}

void expect_steps_one_to(const TempDir& dir, size_t n) {
  const std::vector<json> m = read_metrics(dir / "run");
  ASSERT_EQ(m.size(), n);
  for (size_t i = 0; i < m.size(); ++i) EXPECT_EQ(m[i]["step"], int64_t(i + 1));
}

// Rank 1 stops answering at step 15 (it sleeps inside the step); the other two ranks' watchdogs
// fire 3 s later and take the job down with exit 3, each leaving its last words. The one rank
// that left none is the one that stalled: its slot is left out, and the run resumes from its
// step-10 checkpoint on the 2 slots left (a global batch of 6 splits over 2).
TEST(ElasticLaunchTrain, AStalledRankIsNamedFromItsPeersWatchdogs) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  const RunResult r = launch_faulty_train(
      dir, 3, "stall:1:15:1", DpJobSpec{.micro_batch = 2, .steps = 25, .checkpoint_interval = 10, .dist = "watchdog_timeout = 3\n"});
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.err.find("attempt 1 failed (exit 3): rank 1 on " + local_hostname() +
                       " failed: stopped answering: every other rank's watchdog fired"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("launch: leaving out rank 1's slot"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("launch: attempt 2 of at most 2: 2 ranks on"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("step-00000010 (step 10, written by 3 ranks, resumed on 2)"), std::string::npos) << r.out;
  expect_steps_one_to(dir, 25);
  const json a = attempts(dir);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0]["outcome"], "watchdog");
  EXPECT_EQ(a[0]["failed_rank"], 1);
  EXPECT_EQ(a[1]["ranks"], 2);
  EXPECT_TRUE(fs::exists(dir / "job/attempt-1/rank-0.exit.json"));
  EXPECT_TRUE(fs::exists(dir / "job/attempt-1/rank-2.exit.json"));
  EXPECT_FALSE(fs::exists(dir / "job/attempt-1/rank-1.exit.json"));
  EXPECT_TRUE(verify_log(dir / "usage.jsonl").ok);
}

// Rank 0 is killed while it writes the step-10 checkpoint (every file written but the seal):
// the restart passes over the unfinished save and resumes from step 5, the newest complete
// checkpoint, removing the leftover.
TEST(ElasticLaunchTrain, ARankKilledDuringACheckpointResumesFromThePreviousOne) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  const RunResult r = launch_faulty_train(dir, 2, "kill-in-save:0:10:1",
                                          DpJobSpec{.micro_batch = 2, .steps = 15, .checkpoint_interval = 5});
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.err.find("attempt 1 failed (exit 137): rank 0 on " + local_hostname() + " was killed by signal 9"),
            std::string::npos) << r.err;
  EXPECT_NE(r.out.find("checkpoints/step-00000005 (step 5"), std::string::npos) << r.out;
  expect_steps_one_to(dir, 15);
  for (const auto& e : fs::directory_iterator(dir / "run/checkpoints"))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp-", 0), std::string::npos) << e.path();
  EXPECT_TRUE(fs::exists(dir / "run/checkpoints/step-00000015/trainer.json.sha256"));
  EXPECT_EQ(records(dir).size(), 2u);
}


// A restart is planned again from the manifest like the first attempt: once the lease is inside
// its grace period (here 2 s after the start) the plan refuses, and launch gives up with the
// lease's own line instead of restarting. (An exhausted GPU-hour quota is the same refusal of
// make_plan; it needs GPUs this machine does not have for the probe to pass first.)
TEST(ElasticLaunch, NoRestartPastTheLeasesWindow) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  const std::string host = local_hostname();
  const auto now = std::chrono::system_clock::now();
  auto utc = [](std::chrono::system_clock::time_point t) {
    const std::time_t tt = std::chrono::system_clock::to_time_t(t);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&tt));
    return std::string(buf);
  };
  write_file(dir / "m.toml", "[operator]\nid = \"test\"\n[[node]]\nhostname = \"" + host +
                                 "\"\n[[tenant]]\nid = \"t\"\n[[lease]]\nid = \"l1\"\ntenant = \"t\"\n"
                                 "not_before = " + utc(now - std::chrono::hours(1)) + "\nnot_after = " +
                                 utc(now + std::chrono::seconds(32)) + "\ngrace_seconds = 30\nstorage_roots = [\"" +
                                 dir.path.string() + "\"]\n[lease.quota]\nmax_ranks = 2\ngpu_hours = 1\nstorage_bytes = \"1GiB\"\n"
                                 "[lease.policy]\ndevice_probe = \"warn\"\n"
                                 "[[lease.alloc]]\nnode = \"" + host + "\"\ncpu_ranks = 2\n");
  const RunResult r = run_sh("timeout -k 5 60 " + std::string(LT_CLI) + " launch --manifest m.toml --lease l1 --np 2 " +
                                 "--restarts 3 --job-dir " + lt::test::shell_quote(dir / "job") +
                                 " -- sh -c 'sleep 4; exit 1'",
                             dir.path.string());
  EXPECT_EQ(r.code, 1) << r.both();
  EXPECT_NE(r.err.find("launch: giving up after attempt 1: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("lease l1"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("attempt 2 of"), std::string::npos) << r.err;
  const std::vector<json> rec = [&] {
    std::vector<json> v;
    std::ifstream in(dir / "usage.jsonl");
    for (std::string line; std::getline(in, line);) v.push_back(json::parse(line));
    return v;
  }();
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec[0]["outcome"], "failed");
  EXPECT_TRUE(verify_log(dir / "usage.jsonl").ok);
}


// --grow: attempt 1 loses rank 2 (killed at step 5), attempt 2 runs on the 3 slots left. A
// SIGHUP to launch probes the left-out slot's node again; it passes, so launch asks the job to
// checkpoint and stop (SIGUSR1: exit 75, "preempted to restart on more slots", not counted
// against --restarts) and attempt 3 runs on all 4 slots again from that checkpoint. Attempt 2's
// ranks are held with SIGSTOP from its first step until launch has sent its notice, so a job
// this small cannot finish before the SIGHUP is handled.
TEST(ElasticLaunchTrain, GrowTakesTheSlotBackOnSighupAndRestartsLarger) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  write_corpus_shards(dir.path.string());
  // A checkpoint before the kill at step 5: the run's global batch (12) is then the checkpoint's
  // on every attempt (a run restarted before its first checkpoint starts over on the new world).
  const std::string config =
      dp_write_config(dir.path.string(), "job", DpJobSpec{.micro_batch = 3, .steps = 60, .checkpoint_interval = 4});
  const std::string job = dir / "job", err_file = dir / "launch.err";
  const std::string cmd = "timeout -k 5 150 " + std::string(LT_CLI) + " launch --launcher mpirun --np 4 --restarts 1 " +
                          "--grow --grow-interval 0 --usage-log " + lt::test::shell_quote(dir / "usage.jsonl") + " --job-dir " +
                          lt::test::shell_quote(job) + " -- env LEASETRAIN_TEST_FAULT=kill:2:5:1 " + std::string(LT_CLI) +
                          " train --resume --config " + lt::test::shell_quote(config) + " --out " +
                          lt::test::shell_quote(dir / "run") + " 2>" + lt::test::shell_quote(err_file);
  RunResult r;
  std::thread t([&] { r = run_sh(cmd, dir.path.string()); });
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  std::vector<pid_t> held;
  while (clock::now() - t0 < std::chrono::seconds(90) && held.empty()) {
    if (fs::exists(job + "/attempt-2.log") && fs::exists(job + "/progress.json"))
      held = find_processes({"LEASETRAIN_JOB_DIR=" + job, "LEASETRAIN_ATTEMPT=2"});
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (pid_t p : held) ::kill(p, SIGSTOP);
  std::vector<pid_t> launch = find_processes({"launch", "--grow", job}, "cmdline");
  std::erase_if(launch, [](pid_t p) {  // timeout's own command line names them too
    return read_file("/proc/" + std::to_string(p) + "/comm") != "leasetrain\n";
  });
  if (!held.empty() && launch.size() == 1) ::kill(launch[0], SIGHUP);
  bool noticed = false;
  while (clock::now() - t0 < std::chrono::seconds(90) && !held.empty() && !noticed) {
    noticed = read_file(err_file).find("asking the job to checkpoint and stop") != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (pid_t p : held) ::kill(p, SIGCONT);
  t.join();
  const std::string err = read_file(err_file);
  ASSERT_EQ(held.size(), 3u) << err;
  ASSERT_EQ(launch.size(), 1u);
  ASSERT_TRUE(noticed) << err;
  EXPECT_EQ(r.code, 0) << err;
  EXPECT_NE(err.find("launch: probing the left-out nodes and slots (--grow)"), std::string::npos) << err;
  // Taken back on SIGHUP, not by the restart that followed the failure.
  EXPECT_NE(err.find("launch: attempt 2 of at most 2: 3 ranks on"), std::string::npos) << err;
  EXPECT_NE(err.find("; admitted again"), std::string::npos) << err;
  EXPECT_NE(err.find("launch: attempt 3 of at most 3: 4 ranks on"), std::string::npos) << err;
  const json a = attempts(dir);
  ASSERT_EQ(a.size(), 3u) << err;
  EXPECT_EQ(a[0]["ranks"], 4);
  EXPECT_EQ(a[1]["ranks"], 3);
  EXPECT_EQ(a[1]["outcome"], "preempted");
  EXPECT_EQ(a[1]["reason"], "preempted to restart on more slots");
  EXPECT_EQ(a[2]["ranks"], 4);
  EXPECT_EQ(a[2]["outcome"], "completed");
  expect_steps_one_to(dir, 60);
  EXPECT_TRUE(verify_log(dir / "usage.jsonl").ok);
}

}  // namespace
