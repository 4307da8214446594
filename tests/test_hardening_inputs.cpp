// Issue #12, training-side inputs: every untrusted file goes through runtime/input.h (regular files
// only, FIFOs never block, nesting bounded, fields typed and named), sizes are estimated before
// anything is allocated, numbers are range-checked where they are parsed, a non-finite result is
// not reported as success, and --out is checked before the run starts.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>

#include "runtime/backend.h"
#include "runtime/config.h"
#include "runtime/data.h"
#include "runtime/dist_env.h"
#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/memory.h"
#include "runtime/model.h"
#include "runtime/safetensors.h"
#include "tests/corpus.h"
#include "tests/util.h"

namespace lt::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The CLI under a watchdog: a hang shows as exit 124, not as a stuck test.
RunResult run_cli_bounded(const std::string& args, const std::string& cwd = "") {
  return run_sh("timeout 30 " + std::string(LT_CLI) + " " + args, cwd);
}

// One line on stderr, exit code 2, and every expected fragment in it.
void expect_user_error(const RunResult& r, std::initializer_list<std::string> fragments) {
  EXPECT_EQ(r.code, 2) << r.out << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  for (const auto& f : fragments) EXPECT_NE(r.err.find(f), std::string::npos) << "missing '" << f << "' in: " << r.err;
}


std::string nested(const std::string& open, const std::string& close, size_t depth) {
  std::string s;
  s.reserve(depth * (open.size() + close.size()));
  for (size_t i = 0; i < depth; i++) s += open;
  for (size_t i = 0; i < depth; i++) s += close;
  return s;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

std::string fifo_in(const TempDir& dir, const std::string& name) {
  const std::string p = dir / name;
  EXPECT_EQ(::mkfifo(p.c_str(), 0600), 0);
  return p;
}

// ---- runtime/input.h --------------------------------------------------------------------------

TEST(InputReader, RefusesWhatIsNotARegularFileWithoutBlocking) {
  TempDir dir;
  const std::string fifo = fifo_in(dir, "fifo");
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_NE(user_error([&] { read_regular_file(fifo, "config"); }).find("is a FIFO"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_NE(user_error([&] { read_regular_file("/dev/null", "config"); }).find("character device"), std::string::npos);
  EXPECT_NE(user_error([&] { read_regular_file(dir.path.string(), "config"); }).find("directory"), std::string::npos);
  EXPECT_NE(user_error([&] { read_regular_file(dir / "missing", "config"); }).find("cannot open config"),
            std::string::npos);
  write_file(dir / "big", std::string(100, 'x'));
  EXPECT_NE(user_error([&] { read_regular_file(dir / "big", "config", 10); }).find("more than the 10"),
            std::string::npos);
  EXPECT_EQ(read_regular_file(dir / "big", "config"), std::string(100, 'x'));
}

TEST(InputReader, JsonNestingIsBoundedAndFieldsAreTyped) {
  EXPECT_NE(user_error([] { parse_json("{\"n_layer\": " + nested("[", "]", 1000000) + "}", "c.json"); })
                .find("nested deeper"),
            std::string::npos);
  const json j = parse_json(R"({"step": "7", "n": -1, "ok": 3})", "t.json");
  const JsonFields f(j, "t.json");
  EXPECT_EQ(user_error([&] { f.integer("step", 0); }), "t.json: field 'step' must be an integer in [0, " +
                                                              std::to_string(INT64_MAX) + "], got \"7\"");
  EXPECT_NE(user_error([&] { f.integer("n", 0, 10); }).find("field 'n'"), std::string::npos);
  EXPECT_NE(user_error([&] { f.integer("missing", 0, 10); }).find("field 'missing'"), std::string::npos);
  EXPECT_EQ(f.integer("ok", 0, 10), 3);
  // A number past double's range is the file's fault, said without the library's tag.
  const std::string big = user_error([] { parse_json(R"({"n_layer": 1e400})", "c.json"); });
  EXPECT_EQ(big.rfind("c.json: not valid JSON (number overflow", 0), 0u) << big;
}

TEST(InputReader, TomlDottedKeysAreBounded) {
  TempDir dir;
  struct Case {
    std::string text;
    bool ok;
  } cases[] = {
      // toml++ recursed on these and overflowed the stack (10^5 parts: a segfault)
      {"a" + nested(".a", "", 100000) + " = 1\n", false},
      {"[a" + nested(".a", "", 100000) + "]\nx = 1\n", false},
      {"x = {a" + nested(".a", "", 100000) + " = 1}\n", false},
      // toml++ bounds nested values itself
      {"a = " + nested("[", "]", 100000) + "\n", false},
      // dots in strings, comments, values and multi-line arrays are not key parts
      {"s = \"" + nested(".", "", 500) + "\" # " + nested(".", "", 500) + "\nf = [\n" + [] {
         std::string v;
         for (int i = 0; i < 200; i++) v += "1.5, ";
         return v;
       }() + "]\n[t.u]\n'q.r' = 'x.y'\nm = \"\"\"a.b\n" + nested(".", "", 300) + "\"\"\"\n",
       true},
  };
  for (const Case& c : cases) {
    const std::string p = dir / "c.toml";
    write_file(p, c.text);
    if (c.ok) {
      EXPECT_NO_THROW(parse_toml_file(p, "config"));
    } else {
      const std::string e = user_error([&] { parse_toml_file(p, "config"); });
      EXPECT_NE(e.find(p + ":"), std::string::npos) << e;
    }
  }
}

TEST(InputReader, OutputDirectoryMustBeCreatable) {
  TempDir dir;
  write_file(dir / "file", "x");
  EXPECT_NE(user_error([&] { check_output_directory(dir / "file", "--out"); }).find("must be a directory"),
            std::string::npos);
  EXPECT_NE(user_error([&] { check_output_directory(dir / "file/sub", "--out"); }).find("--out"), std::string::npos);
  EXPECT_NE(user_error([&] { check_output_directory("/proc/leasetrain-run", "--out"); }).find("/proc"),
            std::string::npos);
  EXPECT_NE(user_error([&] { check_output_directory("/sys/kernel/x/y", "--out"); }).find("sysfs"), std::string::npos);
  EXPECT_NO_THROW(check_output_directory(dir.path.string(), "--out"));
  EXPECT_NO_THROW(check_output_directory(dir / "a/b/c", "--out"));
  EXPECT_FALSE(fs::exists(dir / "a"));  // checking creates nothing
}

TEST(InputReader, SafetensorsFifoAndDeepHeaderAreRefused) {
  TempDir dir;
  const std::string fifo = fifo_in(dir, "model.safetensors");
  EXPECT_NE(user_error([&] { SafetensorsReader r(fifo); }).find("is a FIFO"), std::string::npos);
  const std::string header = "{\"a\": " + nested("[", "]", 200000) + "}";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; i++) bytes[i] = (char)((uint64_t)header.size() >> (8 * i));
  write_file(dir / "deep.safetensors", bytes + header);
  EXPECT_NE(user_error([&] { SafetensorsReader r(dir / "deep.safetensors"); }).find("nested deeper"),
            std::string::npos);
}

// ---- memory estimate --------------------------------------------------------------------------

TEST(MemoryEstimate, CountsWhatTheModelAllocates) {
  const GPTConfig c{3, 4, 64, 48, 300};
  auto be = make_backend(BackendOptions{});
  GPT model(c, *be);
  MemoryPlan p;
  p.batch = 2;
  p.seq = 16;
  p.training = true;
  const MemoryEstimate e = estimate_memory(c, p);
  EXPECT_EQ(e.params, (uint64_t)model.num_params());
  EXPECT_EQ(e.weights, 4 * e.params);
  EXPECT_EQ(e.grads, 4 * e.params);
  EXPECT_EQ(e.optimizer, 8 * e.params);
  // Activations are at least the logits and the CPU's attention probabilities.
  const uint64_t logits = 2ull * 16 * c.padded_vocab() * 4, att = 3ull * 2 * 4 * 16 * 16 * 4;
  EXPECT_GT(e.activations, logits + att);
  EXPECT_EQ(e.host, e.weights + e.grads + e.optimizer + e.activations + e.staging);
  p.host_ranks = 2;  // two ranks on one host share its memory
  EXPECT_EQ(estimate_memory(c, p).host, 2 * e.host);
}

TEST(MemoryEstimate, SaturatesAndRefusesInsteadOfOverflowing) {
  const GPTConfig huge{kMaxLayers, kMaxHeads, kMaxEmbd, kMaxBlockSize, kMaxVocab};
  MemoryPlan p;
  p.batch = INT64_MAX;
  p.seq = INT64_MAX;
  p.training = true;
  const MemoryEstimate e = estimate_memory(huge, p);
  EXPECT_EQ(e.host, std::numeric_limits<uint64_t>::max());
  const std::string err = user_error([&] { check_model_memory(huge, p, "train"); });
  EXPECT_NE(err.find("train needs about more than 16 EiB of host memory"), std::string::npos) << err;
  // The model's own constructor refuses before its parameter table or buffers are built.
  auto be = make_backend(BackendOptions{});
  const GPTConfig big{1000000000, 4, 128, 128, 256};
  EXPECT_NE(user_error([&] { GPT m(big, *be); }).find("needs about"), std::string::npos);
}

// ---- end to end -------------------------------------------------------------------------------

// A tiny trained checkpoint (one step), shared by the CLI tests below.
class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    write_corpus_shards(dir_->path.string());
    write_file(*dir_ / "job.toml", config_text());
    const RunResult r = run_cli_bounded("train --device cpu --config " + (*dir_ / "job.toml") + " --out " +
                                        (*dir_ / "run") + " --steps 1");
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    ckpt_ = new std::string(*dir_ / "run/checkpoints/step-00000001");
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete ckpt_;
  }
  static std::string config_text() {
    return "[model]\nn_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 32\nvocab_size = 256\n"
           "[data]\ntrain = \"" + (*dir_ / "d_train_*.bin") + "\"\nval = \"" + (*dir_ / "d_val_*.bin") +
           "\"\n[optim]\nlr = 1e-2\nwarmup_steps = 5\n"
           "[train]\nmicro_batch = 2\nseq_len = 32\nsteps = 1\neval_interval = 0\neval_batches = 1\n";
  }
  // A copy of the checkpoint's config.json and model.safetensors (no trainer.json, so edits are
  // not caught by a checksum) under a fresh name, with `edit` applied to config.json's text.
  std::string checkpoint_copy(const std::string& name, const std::function<std::string(std::string)>& edit) {
    const std::string d = tmp_ / name;
    fs::create_directories(d);
    fs::copy_file(*ckpt_ + "/model.safetensors", d + "/model.safetensors");
    write_file(d + "/config.json", edit(read_file(*ckpt_ + "/config.json")));
    return d;
  }
  static std::string set_n_layer(std::string text, const std::string& value) {
    return std::regex_replace(text, std::regex("\"n_layer\": *[0-9]+"), "\"n_layer\": " + value);
  }
  std::string val() const { return "'" + (*dir_ / "d_val_*.bin") + "'"; }
  std::string eval_args(const std::string& ckpt) const {
    return "eval --device cpu --checkpoint " + ckpt + " --data " + val() + " --batch 1 --seq 32 --batches 1";
  }
  static TempDir* dir_;
  static std::string* ckpt_;
  TempDir tmp_;
};
TempDir* Cli::dir_ = nullptr;
std::string* Cli::ckpt_ = nullptr;

TEST_F(Cli, DeeplyNestedCheckpointConfigIsOneLineNotASegfault) {
  const std::string c = checkpoint_copy("deep", [](std::string t) { return set_n_layer(t, nested("[", "]", 1000000)); });
  expect_user_error(run_cli_bounded(eval_args(c)), {c + "/config.json", "nested deeper"});
}

TEST_F(Cli, CheckpointConfigFieldOfTheWrongTypeNamesFileAndField) {
  const std::string c = checkpoint_copy("str", [](std::string t) { return set_n_layer(t, "\"4\""); });
  expect_user_error(run_cli_bounded(eval_args(c)), {c + "/config.json", "field 'n_layer'", "\"4\""});
  const std::string neg = checkpoint_copy("neg", [](std::string t) { return set_n_layer(t, "-3"); });
  expect_user_error(run_cli_bounded(eval_args(neg)), {neg + "/config.json", "field 'n_layer'"});
}

TEST_F(Cli, HugeCheckpointModelIsRefusedWithTheEstimate) {
  const std::string c = checkpoint_copy("huge", [](std::string t) { return set_n_layer(t, "1000000000"); });
  for (const std::string& args :
       {eval_args(c), "sample --device cpu --checkpoint " + c + " --tokens 2",
        "train --device cpu --config " + (*dir_ / "job.toml") + " --init " + c + " --out " + (tmp_ / "r")}) {
    expect_user_error(run_cli_bounded(args), {"needs about", "of host memory", "n_layer 1000000000", "available"});
  }
  EXPECT_FALSE(fs::exists(tmp_ / "r"));
}

TEST_F(Cli, MicroBatchAtItsMaximumIsRefusedWithTheEstimate) {
  const std::string cfg = tmp_ / "big.toml";
  write_file(cfg, replace_all(config_text(), "micro_batch = 2", "micro_batch = 1048576"));
  expect_user_error(run_cli_bounded("train --device cpu --config " + cfg + " --out " + (tmp_ / "r")),
                    {"train (" + cfg, "needs about", "batch 1048576 x 32", "available"});
  EXPECT_FALSE(fs::exists(tmp_ / "r"));
}

TEST_F(Cli, FifosAreRefusedQuickly) {
  const std::string fifo = fifo_in(tmp_, "f");
  expect_user_error(run_cli_bounded("train --device cpu --config " + fifo + " --out " + (tmp_ / "r")), {fifo, "FIFO"});
  // a FIFO matched by the training shards' glob
  const std::string fifo_shard = fifo_in(tmp_, "x_train_000001.bin");
  fs::copy_file(*dir_ / "d_train_000000.bin", tmp_ / "x_train_000000.bin");
  const std::string cfg = tmp_ / "fifo.toml";
  write_file(cfg, replace_all(config_text(), *dir_ / "d_train_*.bin", tmp_ / "x_train_*.bin"));
  expect_user_error(run_cli_bounded("train --device cpu --config " + cfg + " --out " + (tmp_ / "r")),
                    {fifo_shard, "FIFO"});
  expect_user_error(run_cli_bounded("eval --device cpu --checkpoint " + *ckpt_ + " --seq 32 --data " + fifo), {fifo, "FIFO"});
  // a checkpoint whose config.json is a FIFO
  const std::string c = checkpoint_copy("fifo", [](std::string t) { return t; });
  fs::remove(c + "/config.json");
  ASSERT_EQ(::mkfifo((c + "/config.json").c_str(), 0600), 0);
  expect_user_error(run_cli_bounded(eval_args(c)), {c + "/config.json", "FIFO"});
  // inputs of data prepare, bench compare and report
  expect_user_error(run_cli_bounded("data prepare --input " + fifo + " --output " + (tmp_ / "p/x")), {fifo, "FIFO"});
  EXPECT_FALSE(fs::exists(tmp_ / "p"));
  expect_user_error(run_cli_bounded("bench compare " + fifo + " " + fifo), {fifo, "FIFO"});
  fs::create_directories(tmp_ / "run");
  ASSERT_EQ(::mkfifo((tmp_ / "run/metrics.jsonl").c_str(), 0600), 0);
  expect_user_error(run_cli_bounded("report " + (tmp_ / "run") + " --out " + (tmp_ / "rep")), {"metrics.jsonl", "FIFO"});
}

TEST_F(Cli, ConfigNestingAndDottedKeysAreOneLine) {
  const std::string cfg = tmp_ / "deep.toml";
  write_file(cfg, "a = " + nested("[", "]", 100000) + "\n");
  expect_user_error(run_cli_bounded("train --device cpu --config " + cfg + " --out " + (tmp_ / "r")), {cfg});
  write_file(cfg, "a" + nested(".a", "", 100000) + " = 1\n");
  expect_user_error(run_cli_bounded("train --device cpu --config " + cfg + " --out " + (tmp_ / "r")),
                    {cfg + ":1:", "dotted key"});
}

TEST_F(Cli, ConfigNumbersOutOfTheirTypeAreRefused) {
  const std::string cfg = tmp_ / "c.toml";
  struct Case {
    std::vector<std::pair<std::string, std::string>> edits;
    std::string fragment;
  } cases[] = {
      // 2^32 was stored into an int: the schedule silently became a 0-step warm-up
      {{{"warmup_steps = 5", "warmup_steps = 4294967296"}}, "optim.warmup_steps: expected an integer in [0, 2147483647]"},
      {{{"steps = 1\n", "steps = 1\nseed = -1\n"}}, "train.seed"},
      {{{"steps = 1\n", "steps = 1\nseed = 9223372036854775808\n"}}, "9223372036854775808"},
      {{{"lr = 1e-2", "lr = nan"}}, "optim.lr"},
      {{{"lr = 1e-2", "lr = inf"}}, "optim.lr"},
      {{{"block_size = 32", "block_size = 1048576"}, {"seq_len = 32", "seq_len = 1048576"},
        {"micro_batch = 2", "micro_batch = 4096"}},
       "train.micro_batch: expected micro_batch x seq_len"},
  };
  for (const Case& c : cases) {
    std::string text = config_text();
    for (const auto& [from, to] : c.edits) text = replace_all(text, from, to);
    write_file(cfg, text);
    expect_user_error(run_cli_bounded("train --device cpu --config " + cfg + " --out " + (tmp_ / "r")),
                      {cfg, c.fragment});
  }
  EXPECT_FALSE(fs::exists(tmp_ / "r"));
}

TEST_F(Cli, NumericOptionsAreRangeChecked) {
  const std::string ck = " --checkpoint " + *ckpt_, train = "train --device cpu --config " + (*dir_ / "job.toml") +
                                                             " --out " + (tmp_ / "r");
  struct Case {
    std::string args, flag;
  } cases[] = {
      {"sample" + ck + " --temperature nan", "--temperature"},
      {"sample" + ck + " --temperature inf", "--temperature"},
      {"sample" + ck + " --temperature -1", "--temperature"},
      {"sample" + ck + " --tokens -5", "--tokens"},
      {"sample" + ck + " --tokens 0", "--tokens"},
      {"sample" + ck + " --top-k -1", "--top-k"},
      {"sample" + ck + " --seed -1", "--seed"},
      {"sample" + ck + " --seed 18446744073709551615", "--seed"},
      {"eval" + ck + " --data " + val() + " --batch 0", "--batch"},
      {"eval" + ck + " --data " + val() + " --batch 3000000000", "--batch"},
      {"eval" + ck + " --data " + val() + " --seq 1e3", "--seq"},
      {"eval" + ck + " --data " + val() + " --batches -1", "--batches"},
      {train + " --steps 0", "--steps"},
      {train + " --steps 99999999999999999999", "--steps"},
      {train + " --seed 9223372036854775808", "--seed"},
      {"data prepare --input x --output y --shard-tokens -1", "--shard-tokens"},
      {"data prepare --input x --output y --val-fraction nan", "--val-fraction"},
      {"bench step --batch -1", "--batch"},
      {"bench step --ranks 2 --first-bucket-mb nan", "--first-bucket-mb"},
      {"bench allreduce -f nan", "--stepfactor"},
      {"bench allreduce -e inf", "-e"},
      {"bench allreduce -e 1e300", "-e"},
      {"bench compare " + *ckpt_ + "/config.json " + *ckpt_ + "/config.json --price inf", "--price"},
      {"bench gemm --shape 1073741824x1073741824x2", "--shape"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.args);
    expect_user_error(run_cli_bounded(c.args), {c.flag});
  }
  EXPECT_FALSE(fs::exists(tmp_ / "r"));
}

TEST_F(Cli, NonFiniteEvaluationIsNotSuccess) {
  // Finite weights (so any checkpoint loader accepts them) whose activations overflow: every
  // wte entry 3e38 makes the logits infinite and the loss NaN.
  const std::string c = checkpoint_copy("overflow", [](std::string t) { return t; });
  {
    const std::string path = c + "/model.safetensors";
    std::vector<StEntry> entries;
    std::vector<std::vector<unsigned char>> data;
    {
      SafetensorsReader r(path);
      data.reserve(r.tensors().size());
      for (const StTensorInfo& t : r.tensors()) {
        data.emplace_back(t.end - t.begin);
        r.read_raw(t, data.back().data());
        if (t.name == "wte.weight") {
          ASSERT_EQ(t.dtype, StDType::F32);
          std::vector<float> big(data.back().size() / 4, 3e38f);
          std::memcpy(data.back().data(), big.data(), data.back().size());
        }
        entries.push_back({t.name, t.dtype, t.shape, data.back().data()});
      }
    }
    write_safetensors(path, entries);
  }
  const RunResult e = run_cli_bounded(eval_args(c));
  EXPECT_EQ(e.code, 1) << e.out << e.err;
  EXPECT_EQ(e.out, "");  // no JSON that could be read as a result
  EXPECT_NE(e.err.find("NaN"), std::string::npos) << e.err;
  EXPECT_EQ(count_lines(e.err), 1) << e.err;
  const RunResult s = run_cli_bounded("sample --device cpu --checkpoint " + c + " --tokens 3");
  EXPECT_EQ(s.code, 1) << s.out << s.err;
  EXPECT_EQ(s.out, "");
  EXPECT_NE(s.err.find("non-finite logits"), std::string::npos) << s.err;
  // The healthy checkpoint still evaluates.
  const RunResult ok = run_cli_bounded(eval_args(*ckpt_));
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_TRUE(json::parse(ok.out)["loss"].is_number_float());
}

TEST_F(Cli, OutThatCannotHoldARunIsRefusedUpFront) {
  write_file(tmp_ / "file", "keep");
  const std::string train = "train --device cpu --config " + (*dir_ / "job.toml") + " --out ";
  expect_user_error(run_cli_bounded(train + (tmp_ / "file")), {tmp_ / "file", "must be a directory"});
  EXPECT_EQ(read_file(tmp_ / "file"), "keep");
  expect_user_error(run_cli_bounded(train + (tmp_ / "file/run")), {tmp_ / "file/run"});
  expect_user_error(run_cli_bounded(train + "/proc/leasetrain-run"), {"/proc/leasetrain-run", "procfs"});
  expect_user_error(run_cli_bounded(train + "/sys/leasetrain-run"), {"/sys/leasetrain-run", "sysfs"});
}

TEST_F(Cli, ReportChecksEveryMetricsLine) {
  fs::create_directories(tmp_ / "run");
  const std::string m = tmp_ / "run/metrics.jsonl";
  struct Case {
    std::string line, fragment;
  } cases[] = {
      {"{\"step\": 1, \"loss\": " + nested("[", "]", 1000000) + "}", "nested deeper"},
      {"{\"step\": \"1\", \"loss\": 2.0}", "field 'step'"},
      {"{\"step\": 1, \"loss\": 2.0, \"ms\": \"fast\"}", "field 'ms'"},
      {"[1, 2]", "expected a JSON object"},
  };
  for (const Case& c : cases) {
    write_file(m, "{\"step\": 0, \"loss\": 3.0}\n" + c.line + "\n");
    expect_user_error(run_cli_bounded("report " + (tmp_ / "run") + " --json --out " + (tmp_ / "rep")),
                      {m + ":2", c.fragment});
  }
}

TEST_F(Cli, CompareInputsAreBoundedAndTyped) {
  const std::string f = tmp_ / "r.json";
  write_file(f, "{\"schema\": " + nested("[", "]", 1000000) + "}");
  expect_user_error(run_cli_bounded("bench compare " + f + " " + f), {f, "nested deeper"});
}

}  // namespace
}  // namespace lt::test

namespace lt::test {
namespace {

// Second review: a shard longer than its header's count was read on the count alone, and a
// local job of ranks x threads far past the cores exhausted the machine before reporting.
TEST(SecondReview, ShardBytesMustMatchTheHeaderCount) {
  TempDir dir;
  const std::vector<uint16_t> tokens(100, 7);
  lt::write_shard(dir / "s.bin", tokens.data(), tokens.size());
  {
    std::ofstream f(dir / "s.bin", std::ios::binary | std::ios::app);
    f.put('x');  // one byte past the declared count
  }
  RunResult r = run_cli_bounded("data inspect " + (dir / "s.bin"));
  expect_user_error(r, {dir / "s.bin", "header says 100 tokens", "201 bytes after the header"});
}

TEST(SecondReview, LocalJobsAreBoundedByTheCores) {
  EXPECT_NE(user_error([] { lt::local_mpirun_argv(1024, 1024); }).find("threads on this host"), std::string::npos);
  EXPECT_NO_THROW(lt::local_mpirun_argv(2, 1));
  RunResult r = run_cli_bounded("bench step --model tiny --ranks 1024 --threads-per-rank 1024");
  expect_user_error(r, {"--threads-per-rank 1024", "per core"});
}

}  // namespace
}  // namespace lt::test
