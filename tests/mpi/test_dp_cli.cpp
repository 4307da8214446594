// Whole jobs under mpirun, from the outside: a 2-rank run logs once, a stalled rank trips the
// watchdog, a SIGKILLed rank or a rank that throws ends the job non-zero with a message, and
// the MPI test main (tests/mpi/mpi_main.cpp) agrees on failures and skips across ranks.
// Faults come from LEASETRAIN_TEST_FAULT (runtime/trainer.cpp) and LT_MPI_TEST_INJECT.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/dist_env.h"
#include "tests/mpi/dp_job.h"

namespace lt::test {
namespace {

struct Job {
  TempDir dir;
  std::string config;
  explicit Job(const std::string& dist = "", int steps = 30) {
    write_corpus_shards(dir.path.string());
    config = dp_write_config(dir.path.string(), "job",
                             DpJobSpec{.micro_batch = 4, .steps = steps, .eval_interval = 10, .dist = dist});
  }
  std::string train(const std::string& out) const {
    return std::string(LT_CLI) + " train --config " + config + " --out " + (dir / out);
  }
};

TEST(DpJob, TwoRanksTrainAndLogFromRankZeroOnly) {
  Job job;
  Timed t = mpirun(2, job.train("run"));
  ASSERT_EQ(t.r.code, 0) << t.r.out << t.r.err;
  EXPECT_EQ(count(t.r.out, "model:"), 1u) << t.r.out;
  EXPECT_EQ(count(t.r.out, "dist: 2 ranks"), 1u) << t.r.out;
  EXPECT_EQ(count(t.r.out, "step 30/30"), 1u) << t.r.out;
  const std::string metrics = read_file(job.dir / "run/metrics.jsonl");
  EXPECT_EQ(count_lines(metrics), 30) << "one line per step, from rank 0 only";
  EXPECT_TRUE(std::filesystem::exists(job.dir / "run/checkpoints/step-00000030/trainer.json"));
  nlohmann::json last = nlohmann::json::parse(metrics.substr(metrics.rfind('{')));
  EXPECT_LT(last["val_loss"].get<double>(), 4.0);
}

TEST(DpJob, WatchdogAbortsAStalledCollective) {
  Job job("watchdog_timeout = 2\n");
  Timed t = mpirun(2, job.train("run"), {"LEASETRAIN_TEST_FAULT=stall:1:3"});
  EXPECT_NE(t.r.code, 0);
  EXPECT_LT(t.seconds, 60) << "the job must end, not hang";
  const std::string err = t.r.err;
  for (const char* want : {"rank 0/2: watchdog:", "all_reduce", "step 3", "dist.watchdog_timeout", "aborting"})
    EXPECT_NE(err.find(want), std::string::npos) << "missing '" << want << "' in:\n" << err;
}

TEST(DpJob, KilledRankEndsTheJob) {
  Job job("", 200);
  Timed t = mpirun(2, job.train("run"), {"LEASETRAIN_TEST_FAULT=kill:1:3"});
  EXPECT_NE(t.r.code, 0);
  EXPECT_LT(t.seconds, 60);
  const std::string all = t.r.out + t.r.err;
  EXPECT_NE(all.find("signal 9"), std::string::npos) << all;
}

TEST(DpJob, FailingRankPrintsItsRankAndEndsTheJob) {
  Job job("", 200);
  Timed t = mpirun(2, job.train("run"), {"LEASETRAIN_TEST_FAULT=throw:1:2"});
  EXPECT_NE(t.r.code, 0);
  EXPECT_LT(t.seconds, 60);
  EXPECT_NE(t.r.err.find("leasetrain: rank 1/2: error: LEASETRAIN_TEST_FAULT: injected failure at step 2"),
            std::string::npos)
      << t.r.err;
}

// One rank failing while it sets up its device (NCCL on a GPU), after MPI is up: its peer is
// already waiting in the start-up barrier. The job ends at once with that rank's error, not
// when the (here 300 s) watchdog fires.
TEST(DpJob, RankFailingAtSetUpEndsTheJob) {
  Job job("watchdog_timeout = 300\n");
  Timed t = mpirun(2, job.train("run"), {"LEASETRAIN_TEST_FAULT=throw:1:0"}, 90);
  EXPECT_NE(t.r.code, 0);
  EXPECT_LT(t.seconds, 60) << "the job must end, not wait for the watchdog";
  EXPECT_NE(t.r.err.find("leasetrain: rank 1/2: error: LEASETRAIN_TEST_FAULT: injected set-up failure"),
            std::string::npos)
      << t.r.err;
}

// The MPI test main: a failure on one rank fails every rank; a skip must be agreed.
TEST(MpiTestMain, AgreesOnFailuresAndSkipsAcrossRanks) {
  const std::string bin = std::string(LT_MPI_TEST_BIN) + " --gtest_filter=*MpiMainInject*";
  Timed ok = mpirun(2, bin, {"LT_MPI_TEST_INJECT=none"});
  EXPECT_EQ(ok.r.code, 0) << ok.r.out << ok.r.err;

  Timed fail = mpirun(2, bin, {"LT_MPI_TEST_INJECT=fail:1"});
  EXPECT_NE(fail.r.code, 0);
  EXPECT_NE(fail.r.out.find("failed on rank(s) 1"), std::string::npos) << "rank 0 must report rank 1's failure:\n"
                                                                         << fail.r.out;
  for (const char* who : {"[rank 0/2] FAILED: failures on rank(s) 0, 1", "[rank 1/2] FAILED: failures on rank(s) 0, 1"})
    EXPECT_NE(fail.r.err.find(who), std::string::npos) << "every rank exits 1; missing '" << who << "':\n"
                                                       << fail.r.err;

  Timed lone_skip = mpirun(2, bin, {"LT_MPI_TEST_INJECT=skip:1"});
  EXPECT_NE(lone_skip.r.code, 0) << "a skip on one rank only is an error";
  EXPECT_NE((lone_skip.r.out + lone_skip.r.err).find("ranks disagree"), std::string::npos)
      << lone_skip.r.out << lone_skip.r.err;

  Timed agreed = mpirun(2, bin, {"LT_MPI_TEST_INJECT=agreed-skip:1"});
  EXPECT_EQ(agreed.r.code, 0) << agreed.r.out << agreed.r.err;
  EXPECT_NE(agreed.r.out.find("[  SKIPPED ]"), std::string::npos) << agreed.r.out;
}

}  // namespace
}  // namespace lt::test
