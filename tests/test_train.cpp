// End to end through the CLI: training learns, metrics are complete, resume is bit-identical,
// and every kind of bad input ends in one line naming the file and field, exit code 2, with
// nothing that existed damaged.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <vector>

#include "tests/corpus.h"
#include "tests/util.h"

namespace lt::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct Job {
  TempDir dir;
  std::string config;
  Job(int steps = 20, const std::string& extra_train = "", int n_embd = 32) {
    write_corpus_shards(dir.path.string());
    config = dir / "job.toml";
    write_file(config, "[model]\nn_layer = 2\nn_head = 2\nn_embd = " + std::to_string(n_embd) +
                           "\nblock_size = 32\nvocab_size = 256\n"
                           "[data]\ntrain = \"" + (dir / "d_train_*.bin") + "\"\nval = \"" + (dir / "d_val_*.bin") +
                           "\"\n[optim]\nlr = 1e-2\nwarmup_steps = 5\n"
                           "[train]\nmicro_batch = 8\nseq_len = 32\nsteps = " + std::to_string(steps) +
                           "\neval_interval = 10\neval_batches = 4\ncheckpoint_interval = 10\nlog_interval = 5\n" +
                           extra_train);
  }
};

// One line on stderr, exit code 2, and every expected fragment in it.
void expect_user_error(const RunResult& r, std::initializer_list<std::string> fragments) {
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  for (const auto& f : fragments) EXPECT_NE(r.err.find(f), std::string::npos) << "missing '" << f << "' in: " << r.err;
}

// Every file under dir with its bytes, to prove a failed run changed nothing.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) m[e.path().string()] = read_file(e.path().string());
  return m;
}

TEST(Train, LossFallsAndMetricsAreComplete) {
  Job job(300);  // a 2-layer model leaves the unigram plateau after ~100 steps
  const std::string run = job.dir / "run";
  RunResult r = run_cli("train --config " + job.config + " --out " + run);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("ETA"), std::string::npos);
  std::vector<json> m = read_metrics(run);
  ASSERT_EQ(m.size(), 300u);
  for (size_t i = 0; i < m.size(); i++) {
    EXPECT_EQ(m[i]["step"], (int)i + 1);
    for (const char* k : {"loss", "lr", "grad_norm", "tokens_per_s", "ms"}) EXPECT_TRUE(m[i].contains(k)) << k;
    EXPECT_EQ(m[i].contains("val_loss"), (i + 1) % 10 == 0) << i;
  }
  const double first = m.front()["loss"], last_val = m.back()["val_loss"];
  EXPECT_NEAR(first, std::log(256.0), 0.3);  // an untrained model is uniform over bytes
  EXPECT_LT(last_val, 2.5) << "the text is five sentences; the model must have learned something";
  EXPECT_TRUE(fs::exists(run + "/checkpoints/step-00000300/model.safetensors"));

  RunResult e = run_cli("eval --checkpoint " + run + " --data '" + (job.dir / "d_val_*.bin") +
                        "' --batch 4 --seq 32 --batches 3");
  ASSERT_EQ(e.code, 0) << e.err;
  json ej = json::parse(e.out);
  EXPECT_LT(ej["loss"].get<double>(), 2.5);
  EXPECT_EQ(ej["batches"], 3);

  RunResult s = run_cli("sample --checkpoint " + run + " --prompt 'The quick' --tokens 40 --temperature 0");
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_EQ(s.out.rfind("The quick", 0), 0u) << s.out;
  EXPECT_GE(s.out.size(), 49u);
}

TEST(Train, ResumeIsBitIdentical) {
  Job job(20);
  const std::string a = job.dir / "straight", b = job.dir / "resumed";
  ASSERT_EQ(run_cli("train --config " + job.config + " --out " + a).code, 0);
  // The interrupted run: the same job that stopped after its step-10 checkpoint.
  fs::create_directories(b + "/checkpoints");
  fs::copy(a + "/checkpoints/step-00000010", b + "/checkpoints/step-00000010", fs::copy_options::recursive);
  std::vector<json> ma = read_metrics(a);
  {
    std::ofstream f(b + "/metrics.jsonl");
    for (int i = 0; i < 13; i++) f << ma[i].dump() << "\n";  // 3 lines the dead run wrote after its checkpoint
  }
  RunResult r = run_cli("train --config " + job.config + " --out " + b + " --resume");
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<json> mb = read_metrics(b);
  ASSERT_EQ(mb.size(), 20u);
  for (int i = 0; i < 20; i++) {
    EXPECT_EQ(mb[i]["step"], i + 1);
    EXPECT_EQ(mb[i]["loss"].get<double>(), ma[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(mb[i]["grad_norm"].get<double>(), ma[i]["grad_norm"].get<double>()) << "step " << i + 1;
  }
  EXPECT_EQ(read_file(a + "/checkpoints/step-00000020/model.safetensors"),
            read_file(b + "/checkpoints/step-00000020/model.safetensors"));
  EXPECT_EQ(read_file(a + "/checkpoints/step-00000020/optimizer.safetensors"),
            read_file(b + "/checkpoints/step-00000020/optimizer.safetensors"));
}

TEST(BadInput, ConfigErrorsNameFileAndKey) {
  Job job;
  const std::string text = read_file(job.config), run = job.dir / "r";
  auto replaced = [&](const char* from, const char* to) { return std::regex_replace(text, std::regex(from), to); };
  struct Case {
    std::string config, fragment;
  } cases[] = {
      {text + "micro_bach = 4\n", "train.micro_bach: unknown key"},
      {text + "[optimizer]\n", "optimizer: unknown section"},
      {replaced("lr = 1e-2", "lr = \"fast\""), "optim.lr: expected a number, got a string"},
      {replaced("n_head = 2", "n_head = 3"), "model.n_embd: expected a multiple of model.n_head"},
      {replaced("seq_len = 32", "seq_len = 64"), "train.seq_len: expected at most model.block_size"},
      {text + "steps = [1\n", "TOML syntax error"},
  };
  for (const Case& c : cases) {
    write_file(job.config, c.config);
    expect_user_error(run_cli("train --config " + job.config + " --out " + run), {job.config, c.fragment});
  }
  EXPECT_FALSE(fs::exists(run));
}

TEST(BadInput, ShardErrorsNameFileAndField) {
  Job job;
  const std::string shard = job.dir / "d_train_000000.bin", cmd = "train --config " + job.config + " --out " + (job.dir / "r");
  const std::string good = read_file(shard);
  // wrong magic
  std::string bad = good;
  bad[0] ^= 0x5a;
  write_file(shard, bad);
  expect_user_error(run_cli(cmd), {shard, "magic"});
  // short body: the header promises more tokens than the file holds
  write_file(shard, good.substr(0, good.size() - 100));
  expect_user_error(run_cli(cmd), {shard, "token count"});
  // short header
  write_file(shard, good.substr(0, 100));
  expect_user_error(run_cli(cmd), {shard});
  // missing shards
  fs::remove(shard);
  expect_user_error(run_cli(cmd), {"d_train_*.bin", "no files match"});
  // a token outside the vocabulary: the config says 100, the bytes go up to 'y'
  write_file(shard, good);
  write_file(job.config, std::regex_replace(read_file(job.config), std::regex("vocab_size = 256"), "vocab_size = 100"));
  expect_user_error(run_cli(cmd), {shard, "outside the vocabulary (100)"});
}

TEST(BadInput, CheckpointErrorsLeaveTheRunIntact) {
  Job job(10);
  const std::string run = job.dir / "run";
  ASSERT_EQ(run_cli("train --config " + job.config + " --out " + run).code, 0);
  const auto before = snapshot(run);

  // the run dir is in use: no --resume, no overwrite
  expect_user_error(run_cli("train --config " + job.config + " --out " + run), {run, "--resume"});
  EXPECT_EQ(snapshot(run), before);

  // a different model than the checkpoint being resumed
  Job other(20, "", 64);
  expect_user_error(run_cli("train --config " + other.config + " --out " + run + " --resume"), {"[model]", "differs"});
  EXPECT_EQ(snapshot(run), before);

  // a corrupted checkpoint: one flipped byte
  const std::string model = run + "/checkpoints/step-00000010/model.safetensors";
  std::string bytes = read_file(model);
  bytes[bytes.size() / 2] ^= 1;
  write_file(model, bytes);
  auto corrupted = snapshot(run);
  expect_user_error(run_cli("train --config " + job.config + " --out " + run + " --steps 20 --resume"),
                    {"model.safetensors", "checksum"});
  expect_user_error(run_cli("eval --checkpoint " + run + " --data '" + (job.dir / "d_val_*.bin") + "'"),
                    {"model.safetensors", "checksum"});
  EXPECT_EQ(snapshot(run), corrupted);
}

TEST(BadInput, InvalidFlagsAreOneLine) {
  expect_user_error(run_cli("bench step --bogus"), {"--bogus"});
  expect_user_error(run_cli("train --config /nonexistent.toml"), {"/nonexistent.toml"});
  expect_user_error(run_cli("bench step --model 7b --steps 1"), {"--model", "7b"});
  RunResult h = run_cli("train --help");
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.out.find("--resume"), std::string::npos);
}

}  // namespace
}  // namespace lt::test
