// Elastic jobs from the outside, under mpirun: a checkpoint of 4 ranks resumed on 3, 2 and 4
// ranks trains on with the losses of the uninterrupted run (the global batch is kept), a global
// batch the new rank count cannot split is refused, and SIGUSR1 to mpirun (which forwards it to
// every rank) stops every rank at the same step with a checkpoint and exit status 75.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/mpi/dp_job.h"

extern char** environ;

namespace lt::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string train_cmd(const std::string& config, const std::string& out, const std::string& extra = "") {
  return std::string(LT_CLI) + " train --config " + config + " --out " + out + extra;
}

void copy_checkpoint(const std::string& from_run, const std::string& to_run, const std::string& step_dir) {
  fs::create_directories(to_run + "/checkpoints");
  fs::copy(from_run + "/checkpoints/" + step_dir, to_run + "/checkpoints/" + step_dir, fs::copy_options::recursive);
}

TEST(ElasticCli, ResumeOnFewerRanksKeepsTheGlobalBatchAndTheLosses) {
  TempDir dir;
  write_corpus_shards(dir.path.string());
  // Global batch 12 = 3 x 4 ranks x 1: on 3 ranks 4 each (micro_batch 2 x 2, the config's 3
  // does not divide 4), on 2 ranks 6 each (3 x 2).
  const std::string config = dp_write_config(
      dir.path.string(), "job",
      DpJobSpec{.micro_batch = 3, .steps = 12, .checkpoint_interval = 6, .eval_interval = 6, .dist = "zero = 1\n"});
  const std::string straight = dir / "straight";
  Timed s = mpirun(4, train_cmd(config, straight));
  ASSERT_EQ(s.r.code, 0) << s.r.out << s.r.err;
  const std::vector<json> want = read_metrics(straight);
  ASSERT_EQ(want.size(), 12u);
  EXPECT_EQ(json::parse(read_file(straight + "/checkpoints/step-00000006/trainer.json"))["global_batch"], 12);

  struct Case {
    int np;
    std::string line;
  };
  for (const Case& c : {Case{3, "resume: global batch 12 kept on 3 ranks: micro_batch 2 x grad_accum 2 (was 3 x 1 on 4)"},
                        Case{2, "resume: global batch 12 kept on 2 ranks: micro_batch 3 x grad_accum 2 (was 3 x 1 on 4)"},
                        Case{4, ""}}) {
    const std::string run = dir / ("on" + std::to_string(c.np));
    copy_checkpoint(straight, run, "step-00000006");
    Timed r = mpirun(c.np, train_cmd(config, run, " --resume"));
    ASSERT_EQ(r.r.code, 0) << r.r.out << r.r.err;
    if (!c.line.empty()) EXPECT_NE(r.r.out.find(c.line + "\n"), std::string::npos) << r.r.out;
    else EXPECT_EQ(r.r.out.find("kept on"), std::string::npos) << "nothing to re-split on the same ranks:\n" << r.r.out;
    const std::vector<json> got = read_metrics(run);
    ASSERT_EQ(got.size(), 6u) << "steps 7-12 (the copied checkpoint brought no metrics)";
    for (size_t i = 0; i < got.size(); i++) {
      const double a = got[i]["loss"], b = want[i + 6]["loss"];
      EXPECT_EQ(got[i]["step"], (int)i + 7);
      if (c.np == 4) EXPECT_EQ(a, b) << "same rank count: bit-exact at step " << i + 7;
      else EXPECT_LE(std::fabs(a - b), 1e-5 * std::fabs(b)) << c.np << " ranks, step " << i + 7;
    }
    const double va = got.back()["val_loss"], vb = want.back()["val_loss"];
    if (c.np == 4) EXPECT_EQ(va, vb);
    else EXPECT_LE(std::fabs(va - vb), 1e-5 * std::fabs(vb)) << c.np << " ranks: val_loss over the same rows";
    const json saved = json::parse(read_file(run + "/checkpoints/step-00000012/trainer.json"));
    EXPECT_EQ(saved["global_batch"], 12);
    EXPECT_EQ(saved["eval_rows"], 12);
  }
}

TEST(ElasticCli, AGlobalBatchTheRanksCannotSplitIsRefused) {
  TempDir dir;
  write_corpus_shards(dir.path.string());
  const std::string config =
      dp_write_config(dir.path.string(), "job", DpJobSpec{.micro_batch = 4, .steps = 4, .checkpoint_interval = 2});
  const std::string run = dir / "run";
  ASSERT_EQ(run_sh(train_cmd(config, run, " --steps 2")).code, 0);  // global batch 4, one rank
  Timed r = mpirun(3, train_cmd(config, run, " --resume"));
  EXPECT_EQ(r.r.code, 2) << r.r.out << r.r.err;
  EXPECT_NE(r.r.err.find("trainer.json: global_batch: 4 sequences per step cannot be split evenly over 3 ranks; "
                         "resume on a rank count that divides 4"),
            std::string::npos)
      << r.r.err;
  EXPECT_FALSE(fs::exists(run + "/checkpoints/step-00000004"));
}

// Starts `command` through /bin/sh -c "exec ...", so the pid is the command's (mpirun's).
pid_t spawn(const std::string& command) {
  pid_t pid = -1;
  const std::string line = "exec " + command;
  const char* argv[] = {"/bin/sh", "-c", line.c_str(), nullptr};
  if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) != 0) return -1;
  return pid;
}

// The exit status of `pid` (128 + signal when killed), SIGKILLing it after `limit_s`.
int wait_bounded(pid_t pid, double limit_s) {
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > limit_s) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Waits until `run`/metrics.jsonl holds `lines` lines (the job is training), at most `limit_s`.
bool wait_for_steps(const std::string& run, int lines, double limit_s) {
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < limit_s) {
    if (count_lines(read_file(run + "/metrics.jsonl")) >= lines) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

TEST(ElasticCli, Sigusr1ToMpirunStopsEveryRankAtOneStepWithACheckpoint) {
  TempDir dir;
  write_corpus_shards(dir.path.string());
  const std::string config = dp_write_config(dir.path.string(), "job", DpJobSpec{.micro_batch = 2, .steps = 1000000});
  const std::string run = dir / "run";
  std::vector<std::string> argv = local_mpirun_argv(2);
  const std::string cmd = shell_join(argv) + " " + train_cmd(config, run) + " >" + (dir / "out") + " 2>" +
                          (dir / "err") + " </dev/null";
  const pid_t pid = spawn(cmd);
  ASSERT_GT(pid, 0);
  if (!wait_for_steps(run, 3, 60)) {
    ::kill(pid, SIGKILL);
    wait_bounded(pid, 10);
    FAIL() << "the job did not start: " << read_file(dir / "err");
  }
  ::kill(pid, SIGUSR1);
  const int code = wait_bounded(pid, 60);
  const std::string out = read_file(dir / "out"), err = read_file(dir / "err");
  EXPECT_EQ(code, 75) << out << err;
  const std::vector<json> m = read_metrics(run);
  ASSERT_FALSE(m.empty());
  const int64_t n = m.back()["step"];
  char ckpt[32];
  std::snprintf(ckpt, sizeof ckpt, "step-%08lld", (long long)n);
  const std::string line = "preempted by SIGUSR1 at step " + std::to_string(n) + ": checkpointed step " +
                           std::to_string(n) + " (";
  EXPECT_NE(out.find(line), std::string::npos) << out;
  EXPECT_NE(out.find("exit 75, resume with --resume\n"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(run + "/checkpoints/" + ckpt + "/trainer.json.sha256")) << "a complete checkpoint at the stop";
  // Both ranks took part in the save (ZeRO-free: rank 0 writes, the others agree on the step):
  // the job ended cleanly, with no abort and no watchdog.
  EXPECT_EQ(err.find("watchdog"), std::string::npos) << err;
  EXPECT_EQ(err.find("MPI_ABORT"), std::string::npos) << err;
}


// A notice reaches rank 0 while rank 1 has stopped answering inside step 20 (it sleeps there, as
// on a hung GPU, or as a rank killed under srun looks to its peers): rank 0 cannot reach a step
// boundary with it, and waits only for the bound (train.preempt_grace = 3 s here, below the
// 10 s floor of 5 steps), not for the watchdog's 300 s or a scheduler's SIGKILL. It exits as the
// watchdog would (3, not 75: a rank failed, and launch must leave it out), saying why.
TEST(ElasticCli, ANoticeWithAPeerStalledEndsAfterTheBoundNotTheWatchdog) {
  TempDir dir;
  write_corpus_shards(dir.path.string());
  const std::string config = dp_write_config(
      dir.path.string(), "job",
      DpJobSpec{.micro_batch = 2, .steps = 1000000, .train = "preempt_grace = 3\n", .dist = "watchdog_timeout = 300\n"});
  const std::string run = dir / "run";
  std::vector<std::string> argv = local_mpirun_argv(2);
  for (const std::string& e : std::vector<std::string>{"LEASETRAIN_TEST_FAULT=stall:1:20", "LT_TEST_JOB=" + dir.path.string()})
    argv.insert(argv.end(), {"-x", e});
  const pid_t pid = spawn(shell_join(argv) + " " + train_cmd(config, run) + " >" + (dir / "out") + " 2>" +
                          (dir / "err") + " </dev/null");
  ASSERT_GT(pid, 0);
  const pid_t rank0 = wait_for_steps(run, 19, 60) ? find_process({"OMPI_COMM_WORLD_RANK=0", "LT_TEST_JOB=" + dir.path.string()}) : 0;
  if (!rank0) {
    ::kill(pid, SIGKILL);
    wait_bounded(pid, 10);
    FAIL() << "the job did not reach step 19: " << read_file(dir / "err");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // rank 1 is inside step 20 for good
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(rank0, SIGUSR1);
  const int code = wait_bounded(pid, 60);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string err = read_file(dir / "err");
  EXPECT_EQ(code, 3) << read_file(dir / "out") << err;
  EXPECT_GT(secs, 2.5) << err;
  EXPECT_LT(secs, 15.0) << err;
  EXPECT_NE(err.find("preempted by SIGUSR1, but "), std::string::npos) << err;
  EXPECT_NE(err.find("for the other ranks: a rank is gone or stalled; stopping without a checkpoint (exit 3)"),
            std::string::npos) << err;
  EXPECT_EQ(err.find("watchdog:"), std::string::npos) << err;
}

}  // namespace
}  // namespace lt::test
