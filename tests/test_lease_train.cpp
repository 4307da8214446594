// A leased training job end to end: `leasetrain launch` starts 2 ranks under mpirun, the job
// checkpoints and stops cleanly before the lease's deadline, and storage outside the tenant's
// root is refused before anything is written.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <nlohmann/json.hpp>
#include <vector>

#include "runtime/data.h"
#include "tests/util.h"

namespace lt::test {
namespace {

namespace fs = std::filesystem;

std::string hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string utc(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&tt));
  return buf;
}

// A lease on this host for 2 CPU ranks whose window closes `seconds` from now.
struct LeasedJob {
  TempDir dir;
  std::string root = dir.path.string();
  std::chrono::system_clock::time_point deadline;  // not_after - grace
  LeasedJob(int seconds, int grace) {
    const std::string host = hostname();
    const auto now = std::chrono::system_clock::now();
    deadline = now + std::chrono::seconds(seconds - grace);
    write_file(dir / "m.toml", "[operator]\nid = \"test\"\n[[node]]\nhostname = \"" + host +
                                   "\"\n[[tenant]]\nid = \"t\"\n[[lease]]\nid = \"l1\"\ntenant = \"t\"\n"
                                   "not_before = " + utc(now - std::chrono::hours(1)) + "\nnot_after = " +
                                   utc(now + std::chrono::seconds(seconds)) + "\ngrace_seconds = " +
                                   std::to_string(grace) + "\nstorage_roots = [\"" + root +
                                   "\"]\n[lease.quota]\nmax_ranks = 2\ngpu_hours = 1\nstorage_bytes = \"1GiB\"\n"
                                   "[lease.policy]\ndevice_probe = \"warn\"\n"
                                   "[[lease.alloc]]\nnode = \"" + host + "\"\ncpu_ranks = 2\n");
    std::string text;
    for (int i = 0; i < 4000; i++) text += "Leases end; checkpoints keep the work. ";
    std::vector<uint16_t> toks(text.begin(), text.end());
    write_shard(dir / "d_train_000000.bin", toks.data(), toks.size());
    write_file(dir / "job.toml", "[model]\nn_layer = 2\nn_head = 2\nn_embd = 32\nblock_size = 32\nvocab_size = 256\n"
                                 "[data]\ntrain = \"" + (dir / "d_train_*.bin") + "\"\n"
                                 "[train]\nmicro_batch = 4\nseq_len = 32\nsteps = 10000000\nlog_interval = 1000\n");
  }
  RunResult launch(const std::string& out, int np = 2) {
    return run_sh("timeout 120 " + std::string(LT_CLI) + " launch --manifest m.toml --lease l1 --np " +
                      std::to_string(np) + " -- train --config " + (dir / "job.toml") + " --out " + out,
                  root);
  }
};

TEST(LeasedTraining, CheckpointsAndStopsBeforeTheDeadline) {
  if (run_sh("command -v mpirun").code != 0) GTEST_SKIP() << "mpirun not installed";
  LeasedJob job(/*seconds=*/40, /*grace=*/30);  // must stop within ~10 s
  const auto t0 = std::chrono::steady_clock::now();
  RunResult r = job.launch(job.dir / "run");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_LT(secs, 40.0) << "the job ran into the lease's end";
  EXPECT_NE(r.out.find("lease: "), std::string::npos) << r.both();
  EXPECT_NE(r.out.find("checkpointed step"), std::string::npos) << r.both();
  // The checkpoint is the last step run: nothing is lost.
  std::vector<std::string> ckpts;
  for (const auto& e : fs::directory_iterator(job.dir / "run/checkpoints")) ckpts.push_back(e.path().filename());
  ASSERT_EQ(ckpts.size(), 1u);
  const int64_t step = read_metrics(job.dir / "run").back()["step"];
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", (long long)step);
  EXPECT_EQ(ckpts[0], name);
  EXPECT_GT(step, 0);
  EXPECT_LT(step, 10000000);
  // Inside the grace period no job may start.
  std::this_thread::sleep_until(job.deadline + std::chrono::seconds(2));
  RunResult again = job.launch(job.dir / "run2");
  EXPECT_EQ(again.code, 2) << again.both();
  EXPECT_FALSE(fs::exists(job.dir / "run2"));
}

TEST(LeasedTraining, StorageOutsideTheTenantsRootIsRefused) {
  if (run_sh("command -v mpirun").code != 0) GTEST_SKIP() << "mpirun not installed";
  LeasedJob job(/*seconds=*/3600, /*grace=*/60);
  TempDir elsewhere;
  RunResult r = job.launch(elsewhere / "run", 1);
  EXPECT_NE(r.code, 0) << r.both();
  EXPECT_NE(r.both().find(elsewhere.path.string()), std::string::npos) << r.both();
  EXPECT_FALSE(fs::exists(elsewhere / "run"));
  // `..` out of the root is the same escape.
  RunResult dots = job.launch(job.dir / "../escaped-run", 1);
  EXPECT_NE(dots.code, 0) << dots.both();
  EXPECT_FALSE(fs::exists(job.dir.path.parent_path() / "escaped-run"));
}

}  // namespace
}  // namespace lt::test
