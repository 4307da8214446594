// Hardening of checkpoints and of everything a training run writes (issue 12): sealed
// trainer.json, NaN/Inf refused at load, restart after a run killed in its first save, start-up
// checks before any write, checked writes (a real full disk), and one resolver that keeps every
// write beneath --out and the lease's storage roots.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <random>

#include "runtime/checkpoint.h"
#include "runtime/error.h"
#include "runtime/safe_path.h"
#include "runtime/safetensors.h"
#include "runtime/sha256.h"
#include "tests/corpus.h"
#include "tests/util.h"

namespace lt::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;


// ---------------------------------------------------------------------------------------------
// In-process checkpoints

const GPTConfig kTiny{2, 2, 32, 16, 70};

struct TinyRun {
  std::unique_ptr<Backend> be = make_cpu_backend();
  GPT model;
  AdamW opt;
  explicit TinyRun(uint64_t seed = 1) : model(kTiny, *be), opt(AdamWConfig{}, model) { model.init_weights(seed); }
  void train_step(uint32_t data_seed) {
    const int B = 2, T = 8;
    std::mt19937 rng(data_seed);
    std::vector<int32_t> tok(B * T), tgt(B * T);
    for (auto& t : tok) t = (int32_t)(rng() % 70);
    for (auto& t : tgt) t = (int32_t)(rng() % 70);
    model.forward(tok.data(), tgt.data(), B, T);
    model.backward();
    opt.step(1e-3f);
  }
};

// Rewrites a checkpoint's trainer.json and seals it again, as a careful forger (or a buggy tool)
// would: the seal then matches and only the field checks stand between it and a resume.
void reseal(const std::string& ckpt, const std::string& trainer_text) {
  write_file(ckpt + "/trainer.json", trainer_text);
  write_file(ckpt + "/trainer.json.sha256", sha256_hex(trainer_text) + "  trainer.json\n");
}

TEST(HardenCkpt, TrainerJsonStepMustMatchDirectoryAndHaveItsType) {
  TempDir dir;
  TinyRun a;
  a.train_step(1);
  const std::string ckpt = save_checkpoint(dir.path.string(), a.model, a.opt, {{"step", 3}});
  EXPECT_TRUE(fs::is_regular_file(ckpt + "/trainer.json.sha256"));
  const json good = json::parse(read_file(ckpt + "/trainer.json"));
  TinyRun b;

  // Another step than the directory's: training would rewind or skip.
  json t = good;
  t["step"] = 2;
  reseal(ckpt, t.dump());
  std::string msg = user_error([&] { load_training_state(ckpt, b.opt); });
  EXPECT_HAS(msg, ckpt + "/trainer.json");
  EXPECT_HAS(msg, "'step' is 2 but the directory is step-00000003");
  EXPECT_EQ(latest_checkpoint(dir.path.string()), "") << "a checkpoint that does not verify is never chosen";

  t["step"] = -3;
  reseal(ckpt, t.dump());
  EXPECT_HAS(user_error([&] { load_training_state(ckpt, b.opt); }), "field 'step' must be an integer in [0, ");
  t["step"] = "3";  // used to abort with an uncaught nlohmann::json::type_error
  reseal(ckpt, t.dump());
  EXPECT_HAS(user_error([&] { load_training_state(ckpt, b.opt); }), "field 'step' must be an integer");
  t = good;
  t["files"]["model.safetensors"] = 7;
  reseal(ckpt, t.dump());
  EXPECT_HAS(user_error([&] { load_model_weights(ckpt, b.model); }), "field 'files.model.safetensors' must be a string");
  // Second review: every field has its type, even those kept only for people, and the files
  // vouched for are exactly the checkpoint's own.
  t = good;
  t["files"]["../../../etc/passwd"] = std::string(64, 'a');
  reseal(ckpt, t.dump());
  EXPECT_HAS(user_error([&] { load_training_state(ckpt, b.opt); }), "field 'files.../../../etc/passwd' must be absent");
  t = good;
  t["total_steps"] = "4";
  reseal(ckpt, t.dump());
  EXPECT_HAS(user_error([&] { load_training_state(ckpt, b.opt); }), "field 'total_steps' must be an integer");
  t = good;
  t["seed"] = json(18446744073709551615ull);
  reseal(ckpt, t.dump());
  EXPECT_HAS(user_error([&] { load_training_state(ckpt, b.opt); }), "field 'seed' must be an integer");
  t = good;
  reseal(ckpt, json::array({t}).dump());
  EXPECT_HAS(user_error([&] { load_training_state(ckpt, b.opt); }), "expected a JSON object");

  reseal(ckpt, good.dump());
  EXPECT_EQ(load_training_state(ckpt, b.opt)["step"], 3);
  // A FIFO in place of a checked file is refused, not read (which would block forever).
  fs::rename(ckpt + "/optimizer.safetensors", dir / "opt");
  ASSERT_EQ(::mkfifo((ckpt + "/optimizer.safetensors").c_str(), 0600), 0);
  EXPECT_HAS(user_error([&] { load_training_state(ckpt, b.opt); }), "must be a regular file, this is a FIFO");
}

TEST(HardenCkpt, TrainerJsonIsCoveredByTheSeal) {
  TempDir dir;
  TinyRun a;
  const std::string two = save_checkpoint(dir.path.string(), a.model, a.opt, {{"step", 2}, {"note", "x"}});
  const std::string four = save_checkpoint(dir.path.string(), a.model, a.opt, {{"step", 4}, {"note", "x"}});
  EXPECT_EQ(read_file(four + "/trainer.json.sha256"),
            sha256_file(four + "/trainer.json") + "  trainer.json\n");
  // An edit of trainer.json alone (the other files' checksums still match): not trusted.
  std::string text = read_file(four + "/trainer.json");
  text.replace(text.find("\"x\""), 3, "\"y\"");
  write_file(four + "/trainer.json", text);
  TinyRun b;
  std::string msg = user_error([&] { load_training_state(four, b.opt); });
  EXPECT_HAS(msg, four + "/trainer.json: checksum mismatch");
  // The newest one that verifies is chosen, and the search says why it skipped the other.
  CheckpointSearch s = find_checkpoint(dir.path.string());
  EXPECT_EQ(s.path, two);
  ASSERT_EQ(s.skipped.size(), 1u);
  EXPECT_HAS(s.skipped[0], "checksum mismatch");

  // Written before seals existed (no trainer.json.sha256): refused, saying how to accept it.
  fs::remove(two + "/trainer.json.sha256");
  s = find_checkpoint(dir.path.string());
  EXPECT_EQ(s.path, "");
  EXPECT_EQ(s.legacy, two);
  msg = user_error([&] { verify_checkpoint(two); });
  EXPECT_HAS(msg, "trainer.json.sha256: missing");
  EXPECT_HAS(msg, "sha256sum trainer.json > trainer.json.sha256");
  EXPECT_HAS(user_error([&] { load_model_weights(two, b.model); }), "trainer.json.sha256: missing");
}

TEST(HardenCkpt, NonFiniteWeightsAndMomentsAreRefusedAtLoad) {
  TempDir dir;
  TinyRun a;
  a.train_step(1);
  const ParamInfo& p = a.model.param_info()[3];
  static_cast<float*>(a.model.params().raw())[p.offset + 1] = NAN;
  const std::string nan_ckpt = save_checkpoint(dir.path.string(), a.model, a.opt, {{"step", 1}});
  TinyRun b;
  std::string msg = user_error([&] { load_model_weights(nan_ckpt, b.model); });
  EXPECT_HAS(msg, nan_ckpt + "/model.safetensors");
  EXPECT_HAS(msg, "tensor '" + p.name + "' holds NaN");

  TinyRun c;
  c.train_step(1);
  static_cast<float*>(c.opt.m().raw())[5] = INFINITY;
  const std::string inf_ckpt = save_checkpoint(dir.path.string(), c.model, c.opt, {{"step", 2}});
  load_model_weights(inf_ckpt, b.model);  // the weights are fine
  msg = user_error([&] { load_training_state(inf_ckpt, b.opt); });
  EXPECT_HAS(msg, inf_ckpt + "/optimizer.safetensors");
  EXPECT_HAS(msg, "tensor 'adamw.m' holds Inf");

  TinyRun d;
  d.train_step(1);
  static_cast<float*>(d.opt.v().raw())[0] = -1.f;
  const std::string neg = save_checkpoint(dir.path.string(), d.model, d.opt, {{"step", 3}});
  EXPECT_HAS(user_error([&] { load_training_state(neg, b.opt); }), "'adamw.v' holds a negative value");
}

// ---------------------------------------------------------------------------------------------
// The write-path resolver, on both of its paths (openat2, and the walk kernels without it use)

class ResolverModes : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { safe_path_force_component_walk(GetParam()); }
  void TearDown() override { safe_path_force_component_walk(false); }
};

TEST_P(ResolverModes, NoWriteLeavesTheRoot) {
  TempDir dir;
  fs::create_directories(dir / "root/sub");
  fs::create_directories(dir / "elsewhere");
  fs::create_directory_symlink(dir / "elsewhere", dir / "root/link");
  fs::create_directory_symlink(dir / "root/sub", dir / "root/inner");  // even one that stays inside
  fs::create_symlink(dir / "elsewhere/x", dir / "root/file");
  WriteRoot root(dir / "root");

  // Creating nested directories and files works.
  Fd f = root.open_file("sub/a.txt", O_WRONLY | O_CREAT | O_TRUNC);
  write_all_or_throw(f.get(), "hi", 2, "a", true);
  f.close_checked("a");
  EXPECT_EQ(read_file(dir / "root/sub/a.txt"), "hi");
  root.open_dir("x/y/z", true);
  EXPECT_TRUE(fs::is_directory(dir / "root/x/y/z"));
  write_file_atomic(root, "x/y/z/j.json", "{}\n");
  EXPECT_EQ(read_file(dir / "root/x/y/z/j.json"), "{}\n");

  std::string msg = user_error([&] { root.open_file("link/a.txt", O_WRONLY | O_CREAT); });
  EXPECT_HAS(msg, (dir / "root/link") + ": is a symbolic link");
  EXPECT_HAS(user_error([&] { root.open_dir("link/deeper", true); }), "root/link: is a symbolic link");
  EXPECT_HAS(user_error([&] { root.open_file("file", O_WRONLY | O_CREAT | O_APPEND); }), "root/file: is a symbolic link");
  EXPECT_HAS(user_error([&] { root.open_file("inner/b", O_WRONLY | O_CREAT); }), "root/inner: is a symbolic link");
  EXPECT_HAS(user_error([&] { root.open_file("sub/../../escape", O_WRONLY | O_CREAT); }), "'..'");
  EXPECT_HAS(user_error([&] { root.open_file("/etc/passwd", O_WRONLY); }), "relative");
  EXPECT_HAS(user_error([&] { write_file_atomic(root, "link/c.json", "{}"); }), "symbolic link");
  EXPECT_TRUE(fs::is_empty(dir / "elsewhere")) << "nothing was written through a link";

  // Removing never follows a link: the link goes, its target stays.
  write_file(dir / "elsewhere/keep", "k");
  fs::create_directories(dir / "root/tree/a");
  fs::create_directory_symlink(dir / "elsewhere", dir / "root/tree/a/l");
  EXPECT_TRUE(root.remove_all("tree"));
  EXPECT_FALSE(fs::exists(dir / "root/tree"));
  EXPECT_EQ(read_file(dir / "elsewhere/keep"), "k");
}

INSTANTIATE_TEST_SUITE_P(OpenAt2AndWalk, ResolverModes, ::testing::Values(false, true));

// ---------------------------------------------------------------------------------------------
// Whole runs through the CLI

struct Job {
  TempDir dir;
  std::string config;
  explicit Job(int steps = 20, int checkpoint_interval = 10, int eval_batches = 4) {
    write_corpus_shards(dir.path.string());
    config = dir / "job.toml";
    write_file(config, "[model]\nn_layer = 2\nn_head = 2\nn_embd = 32\nblock_size = 32\nvocab_size = 256\n"
                       "[data]\ntrain = \"" + (dir / "d_train_*.bin") + "\"\nval = \"" + (dir / "d_val_*.bin") +
                       "\"\n[optim]\nlr = 1e-2\nwarmup_steps = 5\n"
                       "[train]\nmicro_batch = 8\nseq_len = 32\nsteps = " + std::to_string(steps) +
                       "\neval_interval = 10\neval_batches = " + std::to_string(eval_batches) +
                       "\ncheckpoint_interval = " + std::to_string(checkpoint_interval) + "\nlog_interval = 5\n");
  }
  RunResult train(const std::string& out, const std::string& flags = "", const EnvVars& env = {}) const {
    return run_cli("train --config " + config + " --out " + out + " " + flags, "", env);
  }
};

TEST(HardenCkpt, RunKilledDuringItsFirstCheckpointCanBeRestarted) {
  Job job(20);
  const std::string run = job.dir / "run";
  // What a run killed while writing its first checkpoint leaves: metrics and a temporary dir.
  fs::create_directories(run + "/checkpoints/.tmp-step-00000010-4242");
  write_file(run + "/checkpoints/.tmp-step-00000010-4242/model.safetensors", "partial");
  fs::create_directories(run + "/checkpoints/.old-step-00000010-4242");
  std::string stale;
  for (int i = 1; i <= 12; i++) stale += "{\"step\": " + std::to_string(i) + ", \"loss\": 9}\n";
  write_file(run + "/metrics.jsonl", stale + "{\"step\": 13, \"lo");

  // Without --resume: one line saying exactly what to do, and nothing touched.
  const std::string before = read_file(run + "/metrics.jsonl");
  RunResult r = job.train(run);
  expect_error(r, 2, {run, "before completing any checkpoint", "pass --resume to start it again from step 0"});
  EXPECT_EQ(read_file(run + "/metrics.jsonl"), before);

  r = job.train(run, "--resume");
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_HAS(r.out, "resume: no complete checkpoint under " + run + ", starting from step 0");
  EXPECT_FALSE(fs::exists(run + "/checkpoints/.tmp-step-00000010-4242")) << "leftovers are removed";
  EXPECT_FALSE(fs::exists(run + "/checkpoints/.old-step-00000010-4242"));
  std::vector<json> m = read_metrics(run);
  ASSERT_EQ(m.size(), 20u) << "stale metrics dropped";
  for (int i = 0; i < 20; i++) EXPECT_EQ(m[i]["step"], i + 1);
  EXPECT_NE(m[0]["loss"], 9);
  verify_checkpoint(run + "/checkpoints/step-00000020");
}

TEST(HardenCkpt, ResumeDropsATornMetricsLineAndSaysWhyItSkips) {
  Job job(20);
  const std::string run = job.dir / "run";
  ASSERT_EQ(job.train(run, "--steps 10").code, 0);
  // The disk filled mid-record after the checkpoint; and a newer checkpoint was tampered with.
  write_file(run + "/metrics.jsonl", read_file(run + "/metrics.jsonl") + "{\"step\": 11, \"loss\": 2.");
  fs::copy(run + "/checkpoints/step-00000010", run + "/checkpoints/step-00000015", fs::copy_options::recursive);
  RunResult r = job.train(run, "--resume");
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_HAS(r.out, "resume: skipping " + run + "/checkpoints/step-00000015/trainer.json: field 'step' is 10 but "
                    "the directory is step-00000015");
  EXPECT_HAS(r.out, "resume: " + run + "/checkpoints/step-00000010 (step 10)");
  std::vector<json> m = read_metrics(run);  // every line parses
  ASSERT_EQ(m.size(), 20u);
  for (int i = 0; i < 20; i++) EXPECT_EQ(m[i]["step"], i + 1);
}

TEST(HardenCkpt, ResumeRefusesBadTrainerJsonFieldsWithOneLine) {
  Job job(20);
  const std::string run = job.dir / "run";
  ASSERT_EQ(job.train(run, "--steps 10").code, 0);
  const std::string ckpt = run + "/checkpoints/step-00000010";
  const json good = json::parse(read_file(ckpt + "/trainer.json"));
  struct Case {
    const char* pointer;
    json value;
    std::string fragment;
  } cases[] = {
      {"/data/position", "12", "field 'data.position' must be an integer"},
      {"/data/shards/0/tokens", -5, "field 'data.shards[0].tokens' must be an integer"},
      {"/data", json::array(), "field 'data' must be an object"},
      {"/init", 5, "field 'init' must be a string"},
      {"/world", "two", "field 'world' must be an integer"},
      {"/step", "10", "field 'step' must be an integer"},
  };
  for (const Case& c : cases) {
    json t = good;
    t[json::json_pointer(c.pointer)] = c.value;
    reseal(ckpt, t.dump());
    const auto metrics = read_file(run + "/metrics.jsonl");
    expect_error(job.train(run, "--resume"), 2, {ckpt + "/trainer.json", c.fragment});
    EXPECT_EQ(read_file(run + "/metrics.jsonl"), metrics) << c.pointer;
  }
}

TEST(HardenCkpt, UnsealedCheckpointsAreRefusedSayingHowToAcceptThem) {
  Job job(20);
  const std::string run = job.dir / "run", ckpt = run + "/checkpoints/step-00000010";
  ASSERT_EQ(job.train(run, "--steps 10").code, 0);
  fs::remove(ckpt + "/trainer.json.sha256");  // as a leasetrain before seals wrote it
  const std::string metrics = read_file(run + "/metrics.jsonl");
  const std::string how = "sha256sum trainer.json > trainer.json.sha256";
  expect_error(job.train(run, "--resume"), 2, {ckpt + "/trainer.json.sha256: missing", how});
  EXPECT_EQ(read_file(run + "/metrics.jsonl"), metrics) << "not restarted from step 0";
  expect_error(run_cli("eval --checkpoint " + run + " --data '" + (job.dir / "d_val_*.bin") + "'"), 2, {how});
  expect_error(job.train(job.dir / "other", "--init " + run), 2, {how});
  // Sealed by hand (after checking it), it resumes.
  ASSERT_EQ(run_sh("cd " + ckpt + " && sha256sum trainer.json > trainer.json.sha256").code, 0);
  RunResult r = job.train(run, "--resume");
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_EQ(read_metrics(run).size(), 20u);
}

TEST(HardenCkpt, ValidationShardTooSmallIsRefusedBeforeAnyWrite) {
  Job job(20, 10, 40);  // 8000 val tokens hold 31 batches of 8 x 33
  const std::string run = job.dir / "run";
  expect_error(job.train(run), 2, {job.dir / "d_val_000000.bin", "31 batches", "train.eval_batches = 40"});
  EXPECT_FALSE(fs::exists(run)) << "nothing is written before start-up checks pass";
}

TEST(HardenCkpt, SymlinksInsideTheRunDirectoryAreRefused) {
  Job job(20);
  const std::string run = job.dir / "run", elsewhere = job.dir / "elsewhere";
  fs::create_directories(run);
  fs::create_directories(elsewhere);
  fs::create_directory_symlink(elsewhere, run + "/checkpoints");
  expect_error(job.train(run), 2, {run + "/checkpoints: is a symbolic link"});
  EXPECT_TRUE(fs::is_empty(elsewhere));
  EXPECT_FALSE(fs::exists(run + "/metrics.jsonl"));

  fs::remove(run + "/checkpoints");
  fs::create_symlink(elsewhere + "/x", run + "/metrics.jsonl");
  expect_error(job.train(run, "--resume"), 2, {run + "/metrics.jsonl: is a symbolic link"});
  EXPECT_FALSE(fs::exists(elsewhere + "/x"));
  EXPECT_TRUE(fs::is_empty(elsewhere));
}

TEST(HardenCkpt, OutMustResolveBeneathTheWriteRoots) {
  Job job(10);
  const fs::path roots = job.dir.path / "roots", outside = job.dir.path / "outside";
  fs::create_directories(roots / "a");
  fs::create_directories(roots / "b");
  fs::create_directories(outside);
  const EnvVars env = {{"LEASETRAIN_WRITE_ROOTS", (roots / "a").string() + ":" + (roots / "b").string()}};

  expect_error(job.train((outside / "run").string(), "", env), 2, {"outside the storage roots", "LEASETRAIN_WRITE_ROOTS"});
  EXPECT_TRUE(fs::is_empty(outside));
  // A path that names a root lexically but leads out of it through a link.
  fs::create_directory_symlink(outside, roots / "b/escape");
  expect_error(job.train((roots / "b/escape/run").string(), "", env), 2, {"escape: is a symbolic link"});
  EXPECT_TRUE(fs::is_empty(outside));
  expect_error(job.train((roots / "a/../../outside/run").string(), "", env), 2, {"outside the storage roots"});
  EXPECT_TRUE(fs::is_empty(outside));

  // A run beneath a root works as always.
  RunResult r = job.train((roots / "b/jobs/run").string(), "", env);
  ASSERT_EQ(r.code, 0) << r.both();
  verify_checkpoint((roots / "b/jobs/run/checkpoints/step-00000010").string());
  EXPECT_EQ(read_metrics((roots / "b/jobs/run").string()).size(), 10u);
}

// A private tmpfs of `size` bytes at `dir`, unmounted when the object goes; !ok() where this
// process may not mount (not root, or no CAP_SYS_ADMIN in its namespace).
struct SmallDisk {
  std::string dir;
  bool mounted = false;
  SmallDisk(const std::string& d, size_t size) : dir(d) {
    fs::create_directories(dir);
    mounted = ::geteuid() == 0 && ::mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
                                          ("size=" + std::to_string(size)).c_str()) == 0;
  }
  ~SmallDisk() {
    if (mounted) ::umount2(dir.c_str(), MNT_DETACH);
  }
};

TEST(HardenCkpt, DiskFullStopsTheRunAndKeepsTheLastCheckpoint) {
  Job job(200, 10);
  SmallDisk disk(job.dir / "disk", 1 << 20);
  if (!disk.mounted) GTEST_SKIP() << "needs root and permission to mount a tmpfs";
  // A checkpoint of this model is about 0.4 MB: the third one does not fit beside two.
  const std::string run = disk.dir + "/run";
  RunResult r = job.train(run);
  expect_error(r, 1, {run + "/checkpoints/.tmp-step-", "No space left on device"});
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(run + "/checkpoints")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  ASSERT_FALSE(names.empty());
  EXPECT_TRUE(names.back().starts_with("step-")) << "the failed save's temporary directory is gone";
  const std::string last = run + "/checkpoints/" + names.back();
  verify_checkpoint(last);
  EXPECT_EQ(latest_checkpoint(run), last);
}

TEST(HardenCkpt, DiskFullWhileWritingMetricsStopsTheRunWithoutAHalfRecord) {
  Job job(400, 0);  // one checkpoint, at the end: metrics.jsonl fills the disk first
  SmallDisk disk(job.dir / "disk", 1 << 20);
  if (!disk.mounted) GTEST_SKIP() << "needs root and permission to mount a tmpfs";
  const std::string run = disk.dir + "/run";
  write_file(disk.dir + "/filler", std::string((1 << 20) - (12 << 10), 'x'));
  RunResult r = job.train(run);
  expect_error(r, 1, {run + "/metrics.jsonl: write failed (No space left on device)"});
  const std::string text = read_file(run + "/metrics.jsonl");
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  EXPECT_GT(read_metrics(run).size(), 10u);  // every line parses
}

// The same without root: a file size limit (RLIMIT_FSIZE; the trainer ignores SIGXFSZ so write(2)
// fails with EFBIG; prlimit counts bytes where each shell's ulimit has its own unit) that the
// model file fits under and the optimizer file (twice its size) does not.
TEST(HardenCkpt, FileSizeLimitStopsTheRunAtItsFirstCheckpoint) {
  Job job(20, 10);
  const std::string run = job.dir / "run";
  RunResult r = run_sh("exec prlimit --fsize=204800 -- " + std::string(LT_CLI) + " train --config " + job.config +
                       " --out " + run);
  expect_error(r, 1, {"optimizer.safetensors: write failed (File too large)"});
  EXPECT_TRUE(fs::is_empty(run + "/checkpoints")) << "no step directory, no temporary one";
  const std::string text = read_file(run + "/metrics.jsonl");
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(read_metrics(run).size(), 10u);
  // Nothing was trusted, so --resume starts again from step 0, and with room it completes.
  r = job.train(run, "--resume");
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_HAS(r.out, "starting from step 0");
  EXPECT_EQ(read_metrics(run).size(), 20u);
}

}  // namespace
}  // namespace lt::test
