// The CLI's device choice in a build with CUDA. DeviceCli (label `cpu`) runs where no CUDA
// device is usable: `--device auto` falls back to the CPU with exactly one line, `--device cuda`
// fails with one line, and the GPU benchmarks exit 1 with one line. DeviceCliGpu (label `gpu`,
// SKIPPED without a device) trains on the GPU through the CLI, checkpoints, resumes, and
// evaluates the checkpoint on the GPU and on the CPU.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "tests/corpus.h"
#include "tests/util.h"

namespace lt::test {
namespace {

using json = nlohmann::json;

struct Job {
  TempDir dir;
  std::string config;
  explicit Job(int steps) {
    write_corpus_shards(dir.path.string());
    config = dir / "job.toml";
    // n_embd 128 with 2 heads: head dim 64, the flash attention kernels on a GPU.
    write_file(config, "[model]\nn_layer = 2\nn_head = 2\nn_embd = 128\nblock_size = 64\nvocab_size = 256\n"
                       "[data]\ntrain = \"" + (dir / "d_train_*.bin") + "\"\nval = \"" + (dir / "d_val_*.bin") +
                       "\"\n[optim]\nlr = 3e-3\nwarmup_steps = 5\n"
                       "[train]\nmicro_batch = 8\nseq_len = 64\nsteps = " + std::to_string(steps) +
                       "\neval_interval = 0\neval_batches = 4\ncheckpoint_interval = 0\nlog_interval = 5\n");
  }
};

class DeviceCli : public testing::Test {
 protected:
  void SetUp() override {
    if (cuda_available()) GTEST_SKIP() << "a CUDA device is present: the fallback is not taken here";
  }
};

TEST_F(DeviceCli, AutoFallsBackToTheCpuWithOneLine) {
  Job job(3);
  const RunResult r = run_cli("train --config " + job.config + " --out " + (job.dir / "run"),
                              "", {{"OMP_NUM_THREADS", "1"}});
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_EQ(r.out.rfind("device: ", 0), 0u) << "the first line says why the CPU was chosen:\n" << r.out;
  EXPECT_EQ(count(r.out, "device:"), 1u) << r.out;
  EXPECT_NE(r.out.find("runs on the CPU"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(read_metrics(job.dir / "run").size(), 3u);
  // --device cpu: the same run, without the line.
  const RunResult q = run_cli("train --config " + job.config + " --out " + (job.dir / "run2") + " --device cpu",
                              "", {{"OMP_NUM_THREADS", "1"}});
  ASSERT_EQ(q.code, 0) << q.both();
  EXPECT_EQ(q.out.find("device:"), std::string::npos) << q.out;
}

TEST_F(DeviceCli, RequiredCudaFailsInOneLine) {
  Job job(3);
  const RunResult r = run_cli("train --config " + job.config + " --out " + (job.dir / "run") + " --device cuda");
  EXPECT_EQ(r.code, 2) << r.both();
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("--device cuda: "), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(job.dir / "run/metrics.jsonl"));
  const RunResult p = run_cli("train --config " + job.config + " --out " + (job.dir / "run") +
                              " --device cpu --precision bf16");
  EXPECT_EQ(p.code, 2) << p.both();
  EXPECT_NE(p.err.find("fp32"), std::string::npos) << p.err;
  // The CUDA kernel choices are refused on the CPU, each in one line naming the option.
  for (const char* opt : {"--gemm mma.sync", "--attention wgmma"}) {
    const RunResult o = run_cli("train --config " + job.config + " --out " + (job.dir / "run") + " --device cpu " + opt);
    EXPECT_EQ(o.code, 2) << o.both();
    EXPECT_EQ(count_lines(o.err), 1) << o.err;
    EXPECT_NE(o.err.find(std::string(opt).substr(0, std::string(opt).find(' ')) + ": only for --device cuda"),
              std::string::npos)
        << o.err;
  }
  EXPECT_FALSE(std::filesystem::exists(job.dir / "run/metrics.jsonl"));
}

TEST_F(DeviceCli, GpuBenchmarksExitOneWithOneLine) {
  const std::string help = run_cli("bench --help").out;  // lists the subcommands bench has
  for (const char* what : {"gemm", "attention"}) {
    if (help.find(std::string("\n  ") + what + " ") == std::string::npos)
      GTEST_SKIP() << "bench " << what << " is not registered (launcher/cmd_bench.cpp: add_gpu_bench_commands)";
    const RunResult r = run_cli(std::string("bench ") + what);
    EXPECT_EQ(r.code, 1) << r.both();
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("no CUDA device"), std::string::npos) << r.err;
  }
}

class DeviceCliGpu : public testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(DeviceCliGpu, TrainsCheckpointsAndResumesOnTheGpu) {
  Job job(60);
  const std::string run = job.dir / "run";
  RunResult r = run_cli("train --config " + job.config + " --out " + run + " --steps 40");
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.out.find("device: cuda:"), std::string::npos) << r.out;
  r = run_cli("train --config " + job.config + " --out " + run + " --resume");
  ASSERT_EQ(r.code, 0) << r.both();
  const std::vector<json> m = read_metrics(run);
  ASSERT_EQ(m.size(), 60u);
  EXPECT_EQ(m.back()["step"], 60);
  const double first = m.front()["loss"].get<double>(), last = m.back()["loss"].get<double>();
  EXPECT_LT(last, first - 1.0) << "the loss did not fall: " << first << " -> " << last;
  // The checkpoint (fp32) evaluates alike on the GPU (bf16) and the CPU.
  const std::string eval = "eval --checkpoint " + run + " --data '" + (job.dir / "d_val_*.bin") +
                           "' --batch 4 --seq 64 --batches 4 --device ";
  const RunResult g = run_cli(eval + "cuda"), c = run_cli(eval + "cpu", "", {{"OMP_NUM_THREADS", "1"}});
  ASSERT_EQ(g.code, 0) << g.both();
  ASSERT_EQ(c.code, 0) << c.both();
  const double lg = json::parse(g.out)["loss"].get<double>(), lc = json::parse(c.out)["loss"].get<double>();
  EXPECT_NEAR(lg, lc, 2e-2 * lc) << "eval loss on the GPU " << lg << ", on the CPU " << lc;
  // fp32 mode and the cuBLAS GEMM run through the CLI too.
  const std::pair<const char*, const char*> variants[] = {{"run-fp32", "--precision fp32"},
                                                          {"run-cublas", "--gemm cublas"}};
  for (const auto& [dir, flags] : variants) {
    const RunResult f =
        run_cli("train --config " + job.config + " --out " + (job.dir / dir) + " --steps 5 --device cuda " + flags);
    EXPECT_EQ(f.code, 0) << flags << ": " << f.both();
  }
}

}  // namespace
}  // namespace lt::test
