// Sharded safetensors checkpoints (issue 17): transformers' layout written above a size and read
// back, every way an index and its shards can disagree refused in one line, weights in formats we
// do not read (pytorch_model.bin) refused saying how to convert them, and the refusals around
// `train --init` (a [model] that disagrees, GPT2Config keys we do not compute) and `eval --batches`.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <random>

#include "runtime/checkpoint.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"
#include "runtime/sha256.h"
#include "tests/corpus.h"
#include "tests/util.h"

namespace lt::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;


const GPTConfig kTiny{2, 2, 32, 16, 70};
// Tensor bytes of kTiny: wte 8960, wpe 2048, per layer 12 tensors of 128..16384; 20 KB makes 4-5 shards.
constexpr uint64_t kShard = 20'000;

struct TinyModel {
  std::unique_ptr<Backend> be = make_cpu_backend();
  GPT model;
  AdamW opt;
  explicit TinyModel(uint64_t seed = 1) : model(kTiny, *be), opt(AdamWConfig{}, model) { model.init_weights(seed); }
  std::vector<float> params() const {
    std::vector<float> v((size_t)model.num_params());
    be->to_host(v.data(), model.params());
    return v;
  }
};

std::string mkdir(const std::string& dir) {
  fs::create_directories(dir);
  return dir;
}

std::vector<std::string> shard_files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().starts_with("model-")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// A bare export of a sharded checkpoint (config.json, the index and its shards; no trainer.json),
// as save_pretrained leaves it: edits to it are not caught by a seal, so the index checks must.
std::string sharded_export(const TempDir& tmp, const std::string& name = "export") {
  TinyModel m;
  const std::string ckpt = save_checkpoint(mkdir(tmp / ("run-" + name)), m.model, m.opt, json{{"step", 1}}, kShard);
  const std::string out = tmp / name;
  fs::create_directories(out);
  for (const std::string& f : shard_files(ckpt)) fs::copy_file(ckpt + "/" + f, out + "/" + f);
  fs::copy_file(ckpt + "/model.safetensors.index.json", out + "/model.safetensors.index.json");
  fs::copy_file(ckpt + "/config.json", out + "/config.json");
  return out;
}

json read_index(const std::string& dir) { return json::parse(read_file(dir + "/model.safetensors.index.json")); }
void write_index(const std::string& dir, const json& j) { write_file(dir + "/model.safetensors.index.json", j.dump(2)); }

// Rewrites a shard with `edit` applied to its tensors (name -> raw bytes, dtype F32, shape).
struct RawTensor {
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};
using Tensors = std::map<std::string, RawTensor>;
Tensors read_shard(const std::string& path) {
  SafetensorsReader r(path);
  Tensors out;
  for (const StTensorInfo& t : r.tensors()) {
    RawTensor& rt = out[t.name];
    rt.shape = t.shape;
    rt.bytes.resize(t.end - t.begin);
    r.read_raw(t, rt.bytes.data());
  }
  return out;
}
void write_shard(const std::string& path, const Tensors& tensors) {
  std::vector<StEntry> entries;
  for (const auto& [name, t] : tensors) entries.push_back({name, StDType::F32, t.shape, t.bytes.data()});
  write_safetensors(path, entries, {{"format", "pt"}});
}

std::string load_error(const std::string& dir) {
  auto be = make_cpu_backend();
  GPT model(kTiny, *be);
  return user_error([&] { load_model_weights(dir, model); });
}

// ---------------------------------------------------------------------------------------------
// Writing and reading shards

TEST(HfShards, ShardedRoundTripIsBitExactAndSplitsAsTransformersDoes) {
  TempDir tmp;
  TinyModel m(7);
  const std::string ckpt = save_checkpoint(mkdir(tmp / "run"), m.model, m.opt, json{{"step", 3}}, kShard);
  EXPECT_FALSE(fs::exists(ckpt + "/model.safetensors")) << "sharded checkpoints have no single file";
  const std::vector<std::string> shards = shard_files(ckpt);
  ASSERT_GE(shards.size(), 3u);
  const json index = read_index(ckpt);
  uint64_t total = 0;
  uint64_t prev_bytes = 0;  // the tensor bytes of the previous shard
  for (size_t i = 0; i < shards.size(); ++i) {
    char want[64];
    std::snprintf(want, sizeof want, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    EXPECT_EQ(shards[i], want);
    // The tensors in the file order of the model (HF's state_dict order), and the shard's bytes.
    SafetensorsReader r(ckpt + "/" + shards[i]);
    uint64_t bytes = 0;
    for (const StTensorInfo& t : r.tensors()) {
      bytes += t.end - t.begin;
      EXPECT_EQ(index["weight_map"][t.name], shards[i]) << t.name;
    }
    total += bytes;
    EXPECT_TRUE(bytes <= kShard || r.tensors().size() == 1) << shards[i] << " holds " << bytes << " bytes";
    // HF's rule: a new shard only when the next tensor would pass the limit. The model's first
    // tensor of this shard (params are in HF order) did not fit beside the previous shard's.
    if (i > 0) {
      uint64_t first = UINT64_MAX;
      for (const ParamInfo& p : m.model.param_info())
        if (r.find(p.name)) {
          first = (uint64_t)r.find(p.name)->numel() * 4;
          break;
        }
      EXPECT_GT(prev_bytes + first, kShard) << shards[i] << " could have been merged into the previous shard";
    }
    prev_bytes = bytes;
  }
  EXPECT_EQ(index["metadata"]["total_size"], total);
  EXPECT_EQ(index["metadata"]["total_parameters"], total / 4);
  EXPECT_EQ(index["weight_map"].size(), m.model.param_info().size());

  // Sealed: every shard and the index are in trainer.json's "files".
  const json trainer = json::parse(read_file(ckpt + "/trainer.json"));
  for (const std::string& s : shards) EXPECT_EQ(trainer["files"][s], sha256_file(ckpt + "/" + s));
  EXPECT_EQ(trainer["files"]["model.safetensors.index.json"], sha256_file(ckpt + "/model.safetensors.index.json"));
  EXPECT_FALSE(trainer["files"].contains("model.safetensors"));
  verify_checkpoint(ckpt);

  TinyModel back(99);
  load_model_weights(ckpt, back.model);
  EXPECT_EQ(back.params(), m.params()) << "a sharded checkpoint loads bit-exactly";
  TinyModel bare(98);
  load_model_weights(sharded_export(tmp), bare.model);
  EXPECT_EQ(bare.params(), TinyModel(1).params()) << "a bare export (no trainer.json) loads too";

  // Under the default limit the same model is one model.safetensors, as before.
  const std::string single = save_checkpoint(mkdir(tmp / "run1"), m.model, m.opt, json{{"step", 3}});
  EXPECT_TRUE(fs::exists(single + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(single + "/model.safetensors.index.json"));
  EXPECT_TRUE(shard_files(single).empty());
  // A limit below every tensor puts each in a shard of its own.
  const std::string tiny = save_checkpoint(mkdir(tmp / "run2"), m.model, m.opt, json{{"step", 3}}, 1);
  EXPECT_EQ(shard_files(tiny).size(), m.model.param_info().size());
  TinyModel again(5);
  load_model_weights(tiny, again.model);
  EXPECT_EQ(again.params(), m.params());
}

TEST(HfShards, ReadsTheIndexAsSavePretrainedWritesIt) {
  // save_pretrained names tensors "transformer.*", writes metadata.total_parameters beside
  // total_size, and dumps the index with sorted keys; shards are split at other points than ours.
  TempDir tmp;
  const std::string d = sharded_export(tmp, "hf");
  for (const std::string& f : shard_files(d)) fs::remove(d + "/" + f);
  TinyModel m(1);
  const Tensors all = [&] {
    Tensors t;
    const std::string single = save_checkpoint(mkdir(tmp / "one"), m.model, m.opt, json{{"step", 1}});
    for (auto& [name, raw] : read_shard(single + "/model.safetensors")) t["transformer." + name] = raw;
    return t;
  }();
  json index = {{"metadata", {{"total_parameters", 0}, {"total_size", 0}}}, {"weight_map", json::object()}};
  uint64_t total = 0, params = 0;
  Tensors part[2];
  int i = 0;
  for (const auto& [name, raw] : all) {  // alternate tensors between two shards, by name
    const std::string shard = i % 2 ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
    part[i++ % 2][name] = raw;
    index["weight_map"][name] = shard;
    total += raw.bytes.size();
    params += raw.bytes.size() / 4;
  }
  write_shard(d + "/model-00001-of-00002.safetensors", part[0]);
  write_shard(d + "/model-00002-of-00002.safetensors", part[1]);
  index["metadata"] = {{"total_parameters", params}, {"total_size", total}};
  write_index(d, index);
  TinyModel back(3);
  load_model_weights(d, back.model);
  EXPECT_EQ(back.params(), m.params());
}

TEST(HfShards, TensorMissingDuplicatedOrInTheWrongShardIsRefused) {
  TempDir tmp;
  {  // The index names a tensor its shard does not hold.
    const std::string d = sharded_export(tmp, "a");
    json j = read_index(d);
    j["weight_map"]["h.7.attn.c_attn.weight"] = "model-00001-of-" + shard_files(d)[0].substr(15);
    write_index(d, j);
    const std::string msg = load_error(d);
    EXPECT_HAS(msg, d + "/model-00001-of-");
    EXPECT_HAS(msg, "missing tensor 'h.7.attn.c_attn.weight'");
    EXPECT_HAS(msg, "weight_map.h.7.attn.c_attn.weight");
  }
  {  // A tensor gone from its shard and from the index: the model lacks it.
    const std::string d = sharded_export(tmp, "b");
    json j = read_index(d);
    const std::string shard = j["weight_map"]["h.1.ln_2.bias"];
    Tensors t = read_shard(d + "/" + shard);
    t.erase("h.1.ln_2.bias");
    write_shard(d + "/" + shard, t);
    j["weight_map"].erase("h.1.ln_2.bias");
    j["metadata"].erase("total_size");
    write_index(d, j);
    const std::string msg = load_error(d);
    EXPECT_HAS(msg, "model.safetensors.index.json's shards: missing tensor 'h.1.ln_2.bias' (expected shape [32])");
  }
  {  // A tensor in two shards.
    const std::string d = sharded_export(tmp, "c");
    const std::vector<std::string> shards = shard_files(d);
    const std::string home = read_index(d)["weight_map"]["wpe.weight"];
    const std::string other = shards.back();
    ASSERT_NE(home, other);
    Tensors t = read_shard(d + "/" + other);
    t["wpe.weight"] = read_shard(d + "/" + home)["wpe.weight"];
    write_shard(d + "/" + other, t);
    const std::string msg = load_error(d);
    EXPECT_HAS(msg, d + "/" + other + ": tensor 'wpe.weight' is also in " + home);
    EXPECT_HAS(msg, "exactly one shard");
  }
  {  // The index assigns a tensor to another shard than the one holding it.
    const std::string d = sharded_export(tmp, "d");
    json j = read_index(d);
    const std::string home = j["weight_map"]["ln_f.weight"];
    const std::string other = shard_files(d).front();
    ASSERT_NE(home, other);
    j["weight_map"]["ln_f.weight"] = other;
    write_index(d, j);
    const std::string msg = load_error(d);
    EXPECT_HAS(msg, d + "/" + home + ": tensor 'ln_f.weight' is assigned to " + other);
    EXPECT_HAS(msg, "field 'weight_map.ln_f.weight'");
  }
  {  // A shard holds a tensor the index does not mention.
    const std::string d = sharded_export(tmp, "e");
    json j = read_index(d);
    const std::string home = j["weight_map"]["wte.weight"];
    j["weight_map"].erase("wte.weight");
    write_index(d, j);
    EXPECT_HAS(load_error(d), d + "/" + home + ": tensor 'wte.weight' is not in " + d + "/model.safetensors.index.json");
  }
  {  // A shard the index names is not there.
    const std::string d = sharded_export(tmp, "f");
    const std::string gone = shard_files(d)[1];
    fs::remove(d + "/" + gone);
    EXPECT_HAS(load_error(d), d + "/" + gone + ": missing (model.safetensors.index.json names it)");
  }
}

TEST(HfShards, IndexTotalSizeAndShardNamesAreChecked) {
  TempDir tmp;
  {
    const std::string d = sharded_export(tmp, "size");
    json j = read_index(d);
    const uint64_t total = j["metadata"]["total_size"];
    j["metadata"]["total_size"] = total + 4;
    write_index(d, j);
    EXPECT_HAS(load_error(d), d + "/model.safetensors.index.json: field 'metadata.total_size' is " +
                                  std::to_string(total + 4) + ", expected " + std::to_string(total));
    j["metadata"]["total_size"] = "many";
    write_index(d, j);
    EXPECT_HAS(load_error(d), "metadata.total_size");
    // transformers' loader needs no metadata, and neither do we.
    j.erase("metadata");
    write_index(d, j);
    TinyModel m;
    load_model_weights(d, m.model);
  }
  const std::string d = sharded_export(tmp, "names");
  const json good = read_index(d);
  for (const auto& [bad, why] : std::vector<std::pair<std::string, std::string>>{
           {"../escape.safetensors", "without '/'"},
           {"/etc/passwd.safetensors", "without '/'"},
           {"sub/model-00001-of-00002.safetensors", "without '/'"},
           {"..", "without '..'"},
           {"a..b.safetensors", "without '..'"},
           {"config.json", "the name of a .safetensors file"},
           {"optimizer.safetensors", "expected a shard"}}) {
    json j = good;
    j["weight_map"]["wpe.weight"] = bad;
    write_index(d, j);
    const std::string msg = load_error(d);
    EXPECT_HAS(msg, d + "/model.safetensors.index.json: field 'weight_map.wpe.weight'");
    EXPECT_HAS(msg, why);
  }
  json j = good;
  j["weight_map"] = json::object();
  write_index(d, j);
  EXPECT_HAS(load_error(d), "field 'weight_map'");
  write_index(d, good);
  // Both layouts at once is ambiguous.
  write_file(d + "/model.safetensors", "x");
  EXPECT_HAS(load_error(d), "holds both model.safetensors and model.safetensors.index.json");
}

// A Hugging Face cache snapshot is a folder of links into its blobs: links to regular files
// load, a dangling link is missing, and a link to anything but a regular file is refused.
TEST(HfShards, LinkedWeightsLoadAsFromAHuggingFaceCache) {
  TempDir tmp;
  const std::string d = sharded_export(tmp, "link");
  auto loads = [](const std::string& dir) {
    auto be = make_cpu_backend();
    GPT model(kTiny, *be);
    load_model_weights(dir, model);
  };
  ASSERT_NO_THROW(loads(d));
  const std::string shard = shard_files(d)[0];
  fs::rename(d + "/" + shard, tmp / "blob-1");
  fs::create_symlink(tmp / "blob-1", d + "/" + shard);
  EXPECT_NO_THROW(loads(d));
  fs::remove(tmp / "blob-1");
  EXPECT_HAS(load_error(d), d + "/" + shard + ": missing");
  fs::remove(d + "/" + shard);
  fs::create_directory(tmp / "adir");
  fs::create_symlink(tmp / "adir", d + "/" + shard);
  EXPECT_HAS(load_error(d), d + "/" + shard + ": a weight file must be a regular file (or a link to one)");
  // A single model.safetensors is read the same way.
  TinyModel m;
  const std::string single = save_checkpoint(mkdir(tmp / "run1"), m.model, m.opt, json{{"step", 1}});
  const std::string bare = tmp / "bare";
  fs::create_directories(bare);
  fs::copy_file(single + "/config.json", bare + "/config.json");
  fs::create_symlink(single + "/model.safetensors", bare + "/model.safetensors");
  EXPECT_NO_THROW(loads(bare));
}

TEST(HfShards, TamperedShardIsCaughtByTheSeal) {
  TempDir tmp;
  TinyModel m;
  const std::string ckpt = save_checkpoint(mkdir(tmp / "run"), m.model, m.opt, json{{"step", 2}}, kShard);
  const std::string shard = shard_files(ckpt)[1];
  std::string bytes = read_file(ckpt + "/" + shard);
  bytes[bytes.size() - 3] ^= 0x40;  // a weight's bits, not the header: the file still parses
  write_file(ckpt + "/" + shard, bytes);
  EXPECT_HAS(load_error(ckpt), ckpt + "/" + shard + ": checksum mismatch");

  // The index is sealed too: a re-pointed tensor is a checksum failure before anything is read.
  const std::string ckpt2 = save_checkpoint(mkdir(tmp / "run2"), m.model, m.opt, json{{"step", 2}}, kShard);
  json j = read_index(ckpt2);
  j["metadata"]["total_size"] = 1;
  write_index(ckpt2, j);
  EXPECT_HAS(load_error(ckpt2), ckpt2 + "/model.safetensors.index.json: checksum mismatch");

  // A shard the seal does not cover is not read.
  const std::string ckpt3 = save_checkpoint(mkdir(tmp / "run3"), m.model, m.opt, json{{"step", 2}}, kShard);
  json trainer = json::parse(read_file(ckpt3 + "/trainer.json"));
  trainer["files"].erase(shard);
  const std::string text = trainer.dump(2) + "\n";
  write_file(ckpt3 + "/trainer.json", text);
  write_file(ckpt3 + "/trainer.json.sha256", sha256_hex(text) + "  trainer.json\n");
  EXPECT_HAS(load_error(ckpt3), ckpt3 + "/trainer.json: field 'files' lacks '" + shard + "'");
  // Nor may it list a file that is neither ours nor a shard.
  trainer["files"]["notes.txt"] = std::string(64, 'a');
  const std::string text2 = trainer.dump(2) + "\n";
  write_file(ckpt3 + "/trainer.json", text2);
  write_file(ckpt3 + "/trainer.json.sha256", sha256_hex(text2) + "  trainer.json\n");
  EXPECT_HAS(user_error([&] { verify_checkpoint(ckpt3); }), "files.notes.txt");
}

TEST(HfShards, ForeignWeightFormatsAreRefusedSayingHowToConvert) {
  TempDir tmp;
  TinyModel m;
  const std::string single = save_checkpoint(mkdir(tmp / "run"), m.model, m.opt, json{{"step", 1}});
  for (const std::string name : {"pytorch_model.bin", "pytorch_model.bin.index.json"}) {
    const std::string d = tmp / ("pt-" + name);
    fs::create_directories(d);
    fs::copy_file(single + "/config.json", d + "/config.json");
    write_file(d + "/" + name, "PK\x03\x04 not really");
    for (const std::string& msg : {user_error([&] { require_checkpoint(d); }), load_error(d)}) {
      EXPECT_HAS(msg, d + "/" + name + ": ");
      EXPECT_HAS(msg, "pickle");
      EXPECT_HAS(msg, "does not load");
      EXPECT_HAS(msg, "save_pretrained(DIR, safe_serialization=True)");
    }
    const RunResult r = run_cli("eval --device cpu --checkpoint " + d + " --data " + (tmp / "none.bin"));
    expect_error(r, 2, {name, "pickle", "safe_serialization=True"});
  }
  const std::string tf = tmp / "tf";
  fs::create_directories(tf);
  write_file(tf + "/tf_model.h5", "HDF");
  EXPECT_HAS(user_error([&] { require_checkpoint(tf); }), tf + "/tf_model.h5: TensorFlow (HDF5) weights");
  // Nothing at all: the message names what a checkpoint is.
  const std::string empty = tmp / "empty";
  fs::create_directories(empty);
  const std::string msg = user_error([&] { require_checkpoint(empty); });
  EXPECT_HAS(msg, "no checkpoint (expected a directory with config.json and model.safetensors, or "
                  "model.safetensors.index.json and its shards");
}

// ---------------------------------------------------------------------------------------------
// GPT2Config keys and shard sizes

TEST(HfShards, ConfigKeysThatChangeTheModelAreRefusedAndDropoutWarned) {
  TempDir tmp;
  const std::string d = sharded_export(tmp, "cfg");
  const json base = json::parse(read_file(d + "/config.json"));
  auto with = [&](const std::string& key, const json& v) {
    json j = base;
    j[key] = v;
    write_file(d + "/config.json", j.dump(2));
  };
  with("scale_attn_weights", false);
  std::string msg = user_error([&] { read_checkpoint_config(d); });
  EXPECT_HAS(msg, d + "/config.json: key 'scale_attn_weights' is false, expected true");
  with("scale_attn_weights", true);
  EXPECT_EQ(read_checkpoint_config(d), kTiny);
  with("scale_attn_by_inverse_layer_idx", true);
  EXPECT_HAS(user_error([&] { read_checkpoint_config(d); }), "key 'scale_attn_by_inverse_layer_idx' is true, expected false");
  with("reorder_and_upcast_attn", true);
  EXPECT_HAS(user_error([&] { read_checkpoint_config(d); }), "key 'reorder_and_upcast_attn' is true, expected false");

  with("resid_pdrop", 0.0);
  EXPECT_EQ(checkpoint_dropout_warning(d), "");
  json j = base;
  j["resid_pdrop"] = 0.1;
  j["attn_pdrop"] = 0.25;
  write_file(d + "/config.json", j.dump(2));
  const std::string w = checkpoint_dropout_warning(d);
  EXPECT_EQ(w, d + "/config.json: resid_pdrop = 0.1, attn_pdrop = 0.25: leasetrain trains without dropout, so "
                   "these are ignored");
  EXPECT_EQ(read_checkpoint_config(d), kTiny) << "dropout is not a refusal";
  with("embd_pdrop", "lots");
  EXPECT_HAS(user_error([&] { read_checkpoint_config(d); }), "embd_pdrop");
}

TEST(HfShards, ShardSizesParseAsHuggingFaceSpellsThem) {
  EXPECT_EQ(parse_shard_size("5GB", "x"), 5'000'000'000ull);
  EXPECT_EQ(parse_shard_size("50GB", "x"), kDefaultMaxShardBytes);
  EXPECT_EQ(parse_shard_size("500MB", "x"), 500'000'000ull);
  EXPECT_EQ(parse_shard_size("100kb", "x"), 100'000ull);
  EXPECT_EQ(parse_shard_size("1.5GB", "x"), 1'500'000'000ull);
  EXPECT_EQ(parse_shard_size("2 TB", "x"), 2'000'000'000'000ull);
  EXPECT_EQ(parse_shard_size("12345", "x"), 12345ull);
  for (const char* bad : {"", "GB", "5GiB", "0", "0MB", "-1", "5XB", "1.5", "5 G", "1e9", "5GBB"})
    EXPECT_HAS(user_error([&] { parse_shard_size(bad, "--max-shard-size"); }),
               std::string("--max-shard-size: expected a size such as 5GB, 500MB, 100KB or a byte count, got '") + bad +
                   "'");
}

// ---------------------------------------------------------------------------------------------
// Through the CLI

struct Job {
  TempDir dir;
  std::string config, val;
  Job() {
    write_corpus_shards(dir.path.string());
    val = dir / "d_val_000000.bin";
    config = write_config("job.toml", "[model]\nn_layer = 2\nn_head = 2\nn_embd = 32\nblock_size = 32\nvocab_size = 256\n");
  }
  std::string write_config(const std::string& name, const std::string& model_table) const {
    const std::string path = dir / name;
    write_file(path, model_table + "[data]\ntrain = \"" + (dir / "d_train_*.bin") + "\"\nval = \"" + val +
                         "\"\n[optim]\nlr = 1e-2\nwarmup_steps = 2\n"
                         "[train]\nmicro_batch = 4\nseq_len = 32\nsteps = 4\neval_interval = 0\neval_batches = 2\n"
                         "log_interval = 2\n");
    return path;
  }
};

TEST(HfShards, TrainWritesShardsAndInitEvalReadThem) {
  Job job;
  const std::string run = job.dir / "run";
  RunResult r = run_cli("train --device cpu --config " + job.config + " --out " + run + " --max-shard-size 40KB");
  ASSERT_EQ(r.code, 0) << r.both();
  const std::string ckpt = run + "/checkpoints/step-00000004";
  EXPECT_GE(shard_files(ckpt).size(), 2u);
  EXPECT_TRUE(fs::exists(ckpt + "/model.safetensors.index.json"));
  r = run_cli("eval --device cpu --checkpoint " + run + " --data " + job.val + " --batch 2 --seq 32 --batches 2");
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_EQ(json::parse(r.out)["batches"], 2);

  // --init from the sharded checkpoint, the config's [model] omitted: the checkpoint's shape.
  const std::string no_model = job.write_config("nomodel.toml", "");
  r = run_cli("train --device cpu --config " + no_model + " --out " + (job.dir / "run2") + " --init " + ckpt);
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_HAS(r.out, "init: weights from " + ckpt);
  EXPECT_TRUE(fs::exists(job.dir / "run2/checkpoints/step-00000004/model.safetensors")) << "default: one file";

  // A [model] that disagrees names both values, and nothing is written.
  const std::string wrong = job.write_config("wrong.toml", "[model]\nn_layer = 3\nn_embd = 32\n");
  r = run_cli("train --device cpu --config " + wrong + " --out " + (job.dir / "run3") + " --init " + ckpt);
  expect_error(r, 2, {wrong + ": model.n_layer = 3 but " + ckpt + "/config.json has n_layer = 2", "--init"});
  EXPECT_FALSE(fs::exists(job.dir / "run3/checkpoints"));
  const std::string ctx = job.write_config("ctx.toml", "[model]\nblock_size = 64\n");
  r = run_cli("train --device cpu --config " + ctx + " --out " + (job.dir / "run4") + " --init " + ckpt);
  expect_error(r, 2, {ctx + ": model.block_size = 64 but " + ckpt + "/config.json has n_positions = 32"});

  // Dropout in the checkpoint's config.json: one warning line, and the run goes on.
  const std::string hf = job.dir / "hf";
  fs::create_directories(hf);
  for (const std::string& f : shard_files(ckpt)) fs::copy_file(ckpt + "/" + f, hf + "/" + f);
  fs::copy_file(ckpt + "/model.safetensors.index.json", hf + "/model.safetensors.index.json");
  json cfg = json::parse(read_file(ckpt + "/config.json"));
  cfg["resid_pdrop"] = cfg["embd_pdrop"] = cfg["attn_pdrop"] = 0.1;
  write_file(hf + "/config.json", cfg.dump(2));
  r = run_cli("train --device cpu --config " + no_model + " --out " + (job.dir / "run5") + " --init " + hf);
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_EQ(count(r.err, "warning: "), 1u) << r.err;
  EXPECT_HAS(r.err, "warning: " + hf + "/config.json: resid_pdrop = 0.1, embd_pdrop = 0.1, attn_pdrop = 0.1: "
                    "leasetrain trains without dropout");

  // A bad size is one line before anything runs.
  r = run_cli("train --device cpu --config " + job.config + " --out " + (job.dir / "run6") + " --max-shard-size 5GiB");
  expect_error(r, 2, {"--max-shard-size: expected a size such as 5GB", "'5GiB'"});
  EXPECT_FALSE(fs::exists(job.dir / "run6"));
}

// Loading holds every shard open at once: a checkpoint of more shards than the soft limit on
// open files (1024 is a common default; 24 here, against 28 shards) still loads, up to the
// hard limit.
TEST(HfShards, MoreShardsThanTheSoftOpenFileLimitLoad) {
  Job job;
  const std::string run = job.dir / "run";
  RunResult r = run_cli("train --device cpu --config " + job.config + " --out " + run + " --max-shard-size 1");
  ASSERT_EQ(r.code, 0) << r.both();
  ASSERT_EQ(shard_files(run + "/checkpoints/step-00000004").size(), 28u);
  r = test::run_sh("ulimit -Sn 24 && " + std::string(LT_CLI) + " eval --device cpu --checkpoint " + run + " --data " +
                   job.val + " --batch 2 --seq 32 --batches 1");
  ASSERT_EQ(r.code, 0) << r.both();
}

TEST(HfShards, EvalRefusesMoreBatchesThanTheShardHoldsUnlessZero) {
  Job job;
  const std::string run = job.dir / "run";
  ASSERT_EQ(run_cli("train --device cpu --config " + job.config + " --out " + run).code, 0);
  const std::string eval = "eval --device cpu --checkpoint " + run + " --data " + job.val + " --batch 8 --seq 32";
  RunResult r = run_cli(eval + " --batches 0");
  ASSERT_EQ(r.code, 0) << r.both();
  const int all = json::parse(r.out)["batches"];
  // 8000 tokens (and the last one only a target) in batches of 8 x 32: 31 whole batches.
  EXPECT_EQ(all, 31);
  r = run_cli(eval + " --batches " + std::to_string(all));
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_EQ(json::parse(r.out)["batches"], all);
  r = run_cli(eval + " --batches " + std::to_string(all + 1));
  expect_error(r, 2, {job.val + ": holds 31 batches of 8 x 32 tokens, fewer than the 32 asked for"});
  EXPECT_EQ(r.out, "");
}

}  // namespace
}  // namespace lt::test
