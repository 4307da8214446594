// Elastic training on one rank, through the CLI: the global-batch split rule, preemption notices
// (exit 75 with a checkpoint at the stop step, a resume with the uninterrupted run's losses, a
// grace too short for a save, a second SIGINT, a repeated SIGTERM), checkpoint_interval = "auto", the job-dir files
// a supervisor reads, the test faults' ATTEMPT field and a rank killed mid-save, and the new
// config keys' errors.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "lease/tenancy.h"
#include "runtime/trainer.h"
#include "tests/corpus.h"
#include "tests/util.h"

extern char** environ;

namespace lt::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct Job {
  TempDir dir;
  std::string config;
  explicit Job(int steps = 20, const std::string& extra_train = "checkpoint_interval = 10\n", int n_embd = 32,
               int micro_batch = 8) {
    write_corpus_shards(dir.path.string());
    config = dir / "job.toml";
    write_file(config, "[model]\nn_layer = 2\nn_head = 2\nn_embd = " + std::to_string(n_embd) +
                           "\nblock_size = 32\nvocab_size = 256\n"
                           "[data]\ntrain = \"" + (dir / "d_train_*.bin") + "\"\nval = \"" + (dir / "d_val_*.bin") +
                           "\"\n[optim]\nlr = 1e-2\nwarmup_steps = 5\n"
                           "[train]\nmicro_batch = " + std::to_string(micro_batch) +
                           "\nseq_len = 32\nsteps = " + std::to_string(steps) +
                           "\neval_interval = 10\neval_batches = 2\nlog_interval = 5\n" + extra_train);
  }
  std::string train(const std::string& out, const std::string& extra = "") const {
    return "train --config " + config + " --out " + (dir / out) + extra;
  }
};

std::vector<double> losses(const std::string& run) {
  std::vector<double> v;
  for (const json& m : read_metrics(run)) v.push_back(m["loss"]);
  return v;
}

std::vector<int64_t> checkpoint_steps(const std::string& run) {
  std::vector<int64_t> v;
  for (const auto& e : fs::directory_iterator(run + "/checkpoints"))
    if (e.path().filename().string().starts_with("step-")) v.push_back(std::stoll(e.path().filename().string().substr(5)));
  std::sort(v.begin(), v.end());
  return v;
}

TEST(GlobalBatch, SplitKeepsTheLargestMicroBatchThatFits) {
  struct Case {
    int64_t global;
    int world, max_micro, micro, accum;
  };
  for (const Case& c : {Case{12, 4, 3, 3, 1}, Case{12, 3, 3, 2, 2}, Case{12, 2, 3, 3, 2}, Case{12, 1, 3, 3, 4},
                        Case{12, 12, 8, 1, 1}, Case{64, 2, 8, 8, 4}, Case{14, 2, 8, 7, 1}, Case{14, 2, 6, 1, 7}}) {
    const std::optional<BatchSplit> s = split_global_batch(c.global, c.world, c.max_micro);
    ASSERT_TRUE(s) << c.global << " on " << c.world;
    EXPECT_EQ(s->micro_batch, c.micro) << c.global << " on " << c.world << " (micro <= " << c.max_micro << ")";
    EXPECT_EQ(s->grad_accum, c.accum) << c.global << " on " << c.world;
    EXPECT_EQ((int64_t)s->micro_batch * c.world * s->grad_accum, c.global);
  }
  EXPECT_FALSE(split_global_batch(4, 3, 4)) << "3 ranks cannot share 4 sequences equally";
  EXPECT_FALSE(split_global_batch(12, 5, 16));
}

TEST(Preemption, SigtermCheckpointsTheStopStepExits75AndResumesWithTheSameLosses) {
  Job job(20);
  ASSERT_EQ(run_cli(job.train("straight")).code, 0);
  const std::string run = job.dir / "run", jobdir = job.dir / "jobdir";
  fs::create_directories(jobdir);
  // A real SIGTERM, sent by the rank to itself at the start of step 7 (deterministic timing).
  RunResult r = run_cli(job.train("run"), "", {{"LEASETRAIN_TEST_FAULT", "sigterm:0:7"}, {"LEASETRAIN_JOB_DIR", jobdir}});
  EXPECT_EQ(r.code, 75) << r.out << r.err;
  const std::regex line(R"(preempted by SIGTERM at step 7: checkpointed step 7 \([0-9.]+ s\); exit 75, resume with --resume\n)");
  EXPECT_TRUE(std::regex_search(r.out, line)) << r.out;
  EXPECT_EQ(checkpoint_steps(run), std::vector<int64_t>{7});
  EXPECT_EQ(read_metrics(run).size(), 7u);
  const json p = json::parse(read_file(jobdir + "/progress.json"));
  EXPECT_EQ(p["step"], 7);
  EXPECT_EQ(p["start_step"], 0);
  EXPECT_EQ(p["checkpoint_step"], 7);
  EXPECT_GT(p["checkpoint_seconds"].get<double>(), 0);
  EXPECT_EQ(p["global_batch"], 8);
  EXPECT_EQ(p["world"], 1);
  EXPECT_TRUE(std::regex_match(p["time"].get<std::string>(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));

  RunResult resumed = run_cli(job.train("run", " --resume"), "", {{"LEASETRAIN_JOB_DIR", jobdir}});
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_EQ(losses(run), losses(job.dir / "straight")) << "bit-identical to the uninterrupted run";
  const json q = json::parse(read_file(jobdir + "/progress.json"));
  EXPECT_EQ(q["step"], 20);
  EXPECT_EQ(q["start_step"], 7);
  EXPECT_EQ(q["checkpoint_step"], 20);
}

TEST(Preemption, NoCheckpointWhenTheSaveDoesNotFitTheGrace) {
  Job job(20, "checkpoint_interval = 5\npreempt_grace = 0\n");
  RunResult r = run_cli(job.train("run"), "", {{"LEASETRAIN_TEST_FAULT", "sigusr1:0:7"}});
  EXPECT_EQ(r.code, 75) << r.out << r.err;
  EXPECT_NE(r.out.find("preempted by SIGUSR1 at step 7: no checkpoint (a save takes about "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("train.preempt_grace = 0 s); exit 75, resume with --resume from step 5\n"), std::string::npos)
      << r.out;
  EXPECT_EQ(checkpoint_steps(job.dir / "run"), std::vector<int64_t>{5});
}

// Runs a long training job, sends it `sig` twice 20 ms apart once its first step is done (a
// step long enough, hundreds of ms, for both to land inside it), and returns its wait status
// (0 after a kill at 30 s: the test then fails) with what it printed in `out`.
int signal_twice(const Job& job, int sig, std::string* out) {
  const std::string run = job.dir / "run";
  pid_t pid = -1;
  const std::string cmd = "exec " + std::string(LT_CLI) + " " + job.train("run") + " >" + (job.dir / "out") + " 2>&1";
  const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
  if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) != 0) return 0;
  for (int i = 0; i < 3000 && count_lines(read_file(run + "/metrics.jsonl")) < 1; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ::kill(pid, sig);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::kill(pid, sig);
  int status = 0;
  for (int i = 0; i < 3000 && ::waitpid(pid, &status, WNOHANG) == 0; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!WIFSIGNALED(status) && !WIFEXITED(status)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    status = 0;
    ADD_FAILURE() << "still running 30 s after the second signal";
  }
  *out = read_file(job.dir / "out");
  return status;
}

TEST(Preemption, ASecondSigintEndsTheRunAtOnce) {
  Job job(1000000, "", 256, 16);
  std::string out;
  const int status = signal_twice(job, SIGINT, &out);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exited " << WEXITSTATUS(status) << ": " << out;
  EXPECT_EQ(WTERMSIG(status), SIGINT);
  EXPECT_EQ(out.find("preempted"), std::string::npos);
}

// A scheduler may send SIGTERM twice for one stop (Slurm cancelling a job signals each task from
// its step daemon and again through srun): the second is one more notice, not the end.
TEST(Preemption, ARepeatedSigtermIsOneMoreNotice) {
  Job job(1000000, "", 256, 16);
  std::string out;
  const int status = signal_twice(job, SIGTERM, &out);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << ": " << out;
  EXPECT_EQ(WEXITSTATUS(status), 75) << out;
  const std::regex line(R"(preempted by SIGTERM at step (\d+): checkpointed step \1 )");
  EXPECT_TRUE(std::regex_search(out, line)) << out;
}


// A notice that arrives while the run is still setting up (MPI, the config, the checkpoint
// and the data being loaded: seconds at scale, when a scheduler drains nodes as a job starts)
// is a notice too, not a kill: the run stops at its first step boundary with a checkpoint and
// exit 75, for every kind of notice.
TEST(ElasticReview, ANoticeDuringSetUpStopsAtTheFirstStepWithExit75) {
  Job job(20);
  for (const std::string kind : {"sigterm", "sigusr1", "sigint"}) {
    const std::string run = job.dir / ("run-" + kind);
    RunResult r = run_cli(job.train("run-" + kind), "", {{"LEASETRAIN_TEST_FAULT", kind + ":0:0"}});
    EXPECT_EQ(r.code, 75) << kind << ": " << r.out << r.err;
    EXPECT_NE(r.out.find("at step 1: checkpointed step 1 ("), std::string::npos) << kind << ": " << r.out;
    if (fs::exists(run + "/checkpoints")) EXPECT_EQ(checkpoint_steps(run), std::vector<int64_t>{1}) << kind;
    else ADD_FAILURE() << kind << ": no checkpoint";
  }
}

TEST(AutoInterval, ATinyMtbfCheckpointsEveryStepOnceStepsAreTimed) {
  Job job(8, "checkpoint_interval = \"auto\"\nmtbf_hours = 1e-9\n");
  RunResult r = run_cli(job.train("run"));
  ASSERT_EQ(r.code, 0) << r.err;
  // Three timed steps after the first (which warms up): the interval is chosen at step 4.
  const std::regex line(R"(checkpoint: every 1 step \(auto: sqrt\(2 x [0-9.e+-]+ s save \(estimated: [0-9.e+-]+ MB at 200 MB/s\) x 1e-09 h MTBF \(train\.mtbf_hours\)\) = [0-9.e+-]+ s at [0-9.e+-]+ s/step\)\n)");
  EXPECT_TRUE(std::regex_search(r.out, line)) << r.out;
  EXPECT_EQ(checkpoint_steps(job.dir / "run"), (std::vector<int64_t>{4, 5, 6, 7, 8}));
}

TEST(AutoInterval, TheNodeFigureIsDividedByTheNodesAndTheSpacingFollowsTheChoice) {
  Job job(40, "checkpoint_interval = \"auto\"\nnode_mtbf_hours = 4e-5\n");
  RunResult r = run_cli(job.train("run"), "", {{"LEASETRAIN_NODES", "4"}});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::regex line(R"(checkpoint: every ([0-9]+) steps? \(auto: sqrt\(2 x [^)]+\) x 1e-05 h MTBF \(train\.node_mtbf_hours 4e-05 / 4 nodes\)\) = [0-9.e+-]+ s at [0-9.e+-]+ s/step\)\n)");
  ASSERT_TRUE(std::regex_search(r.out, line)) << r.out;
  // Walk the log: each save comes the interval in force after the previous one, which is the
  // last one printed or (recomputed after every save, printed only when it moves by more than
  // 20%) within 20% of it; the final step's save is the run's end, not the interval's.
  const std::regex event(R"(checkpoint: every ([0-9]+) steps?|checkpoint: .*/step-0*([0-9]+)\n)");
  int64_t printed = 0, previous = 0;
  int saves = 0;
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), event); it != std::sregex_iterator(); ++it) {
    if ((*it)[1].matched) {
      printed = std::stoll((*it)[1]);
      continue;
    }
    const int64_t step = std::stoll((*it)[2]);
    ASSERT_GT(printed, 0) << "a save before the interval was chosen: " << r.out;
    if (step == 40) break;
    EXPECT_GE(step, 4) << "nothing is saved before the step time is measured";
    if (saves == 0) EXPECT_EQ(step, std::max<int64_t>(4, printed)) << r.out;
    else EXPECT_LE(std::llabs(step - previous - printed), printed / 5 + 1) << r.out;
    previous = step;
    saves++;
  }
  EXPECT_GE(saves, 1) << r.out;
}

TEST(TestFaults, AnAttemptFieldFiresOnlyOnThatAttempt) {
  Job job(10);
  RunResult other = run_cli(job.train("a"), "", {{"LEASETRAIN_TEST_FAULT", "sigterm:0:3:2"}, {"LEASETRAIN_ATTEMPT", "1"}});
  EXPECT_EQ(other.code, 0) << other.out << other.err;
  RunResult same = run_cli(job.train("b"), "", {{"LEASETRAIN_TEST_FAULT", "sigterm:0:3:2"}, {"LEASETRAIN_ATTEMPT", "2"}});
  EXPECT_EQ(same.code, 75) << same.out << same.err;
}

TEST(TestFaults, ARankKilledMidSaveLeavesThePreviousCheckpointForTheResume) {
  Job job(20, "checkpoint_interval = 5\n");
  ASSERT_EQ(run_cli(job.train("straight")).code, 0);
  const std::string run = job.dir / "run";
  RunResult killed = run_cli(job.train("run"), "", {{"LEASETRAIN_TEST_FAULT", "kill-in-save:0:10"}});
  EXPECT_EQ(killed.code, 128 + SIGKILL) << "the shell's status for a SIGKILLed command: " << killed.out << killed.err;
  EXPECT_EQ(checkpoint_steps(run), std::vector<int64_t>{5});
  bool tmp = false;
  for (const auto& e : fs::directory_iterator(run + "/checkpoints")) tmp |= e.path().filename().string().starts_with(".tmp-step-00000010");
  EXPECT_TRUE(tmp) << "killed while writing step 10";
  RunResult resumed = run_cli(job.train("run", " --resume"));
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("(step 5)"), std::string::npos) << resumed.out;
  EXPECT_NE(resumed.out.find("cleanup: removed unfinished checkpoint"), std::string::npos) << resumed.out;
  EXPECT_EQ(losses(run), losses(job.dir / "straight"));
}

TEST(JobDir, AFailingRankLeavesItsLastWords) {
  Job job(10);
  const std::string jobdir = job.dir / "jobdir";
  fs::create_directories(jobdir);
  RunResult r = run_cli(job.train("run"), "", {{"LEASETRAIN_TEST_FAULT", "throw:0:3"}, {"LEASETRAIN_JOB_DIR", jobdir}});
  EXPECT_EQ(r.code, 2) << r.err;
  const json e = json::parse(read_file(jobdir + "/rank-0.exit.json"));
  EXPECT_EQ(e["rank"], 0);
  EXPECT_EQ(e["exit_code"], 2);
  EXPECT_FALSE(e["host"].get<std::string>().empty());
  EXPECT_EQ(e["error"], "LEASETRAIN_TEST_FAULT: injected failure at step 3");
  const json p = json::parse(read_file(jobdir + "/progress.json"));
  EXPECT_EQ(p["step"], 1) << "written after the attempt's first step";
}

// Reports to the job dir are best effort: one line on stderr, nothing thrown (a run would
// otherwise end with another status than its own).
TEST(JobDir, AFailedReportIsAWarningNotAnError) {
  TempDir dir;
  write_file(dir / "not-a-dir", "");
  const lease::LeaseGuard g = lease::LeaseGuard::from_vars({{"LEASETRAIN_JOB_DIR", dir / "not-a-dir"}}, "host");
  ::testing::internal::CaptureStderr();
  EXPECT_NO_THROW(g.record_progress(RunProgress{}));
  EXPECT_NO_THROW(g.record_exit(1, 3, "watchdog: all_reduce not done"));
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("leasetrain: warning: job dir: progress.json (not written: "), std::string::npos) << err;
  EXPECT_NE(err.find("leasetrain: warning: job dir: rank-1.exit.json (not written: "), std::string::npos) << err;
  EXPECT_EQ(count_lines(err), 2) << err;

  const lease::LeaseGuard ok = lease::LeaseGuard::from_vars({{"LEASETRAIN_JOB_DIR", dir.path.string()}}, "host");
  ok.record_exit(1, 3, "first line\nsecond line");
  const json e = json::parse(read_file(dir / "rank-1.exit.json"));
  EXPECT_EQ(e["exit_code"], 3);
  EXPECT_EQ(e["error"], "first line");
}

TEST(ElasticConfig, NewKeysAreCheckedWithFileAndKey) {
  struct Case {
    std::string lines, want;
  };
  for (const Case& c : {Case{"checkpoint_interval = \"often\"\n", "train.checkpoint_interval: expected a step count or \"auto\", got \"often\""},
                        Case{"checkpoint_interval = 2.5\n", "train.checkpoint_interval: expected a step count or \"auto\", got a float"},
                        Case{"checkpoint_interval = -1\n", "train.checkpoint_interval: expected an integer in [0, "},
                        Case{"mtbf_hours = 10\n", "train.mtbf_hours: only used with train.checkpoint_interval = \"auto\""},
                        Case{"checkpoint_interval = \"auto\"\nmtbf_hours = 0\n", "train.mtbf_hours: expected a number in [1e-09, 1e+09], got 0"},
                        Case{"checkpoint_interval = \"auto\"\nnode_mtbf_hours = \"x\"\n", "train.node_mtbf_hours: expected a number, got a string"},
                        Case{"preempt_grace = -1\n", "train.preempt_grace: expected a number in [0, 86400], got -1"},
                        Case{"preempt_grace = true\n", "train.preempt_grace: expected a number, got a boolean"}}) {
    Job job(5, c.lines);
    RunResult r = run_cli(job.train("run"));
    EXPECT_EQ(r.code, 2) << c.lines;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(job.config + ": " + c.want), std::string::npos) << c.lines << r.err;
  }
  Job bad_nodes(5, "checkpoint_interval = \"auto\"\n");
  RunResult r = run_cli(bad_nodes.train("run"), "", {{"LEASETRAIN_NODES", "two"}});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("LEASETRAIN_NODES: expected a node count, got 'two'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lt::test
