// Tests for SHA-256 (FIPS 180-2 example vectors), the safetensors reader/writer including every
// malformed-header case, and checkpoints: HF layout, bit-exact round trip, checksums, atomicity.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>

#include "runtime/checkpoint.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"
#include "runtime/sha256.h"
#include "tests/util.h"

namespace fs = std::filesystem;
using namespace lt;
using lt::test::user_error;

namespace {

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("lt-test-checkpoint-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
             (info ? std::string(info->name()) : std::string("x")));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path operator/(const std::string& s) const { return path_ / s; }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}


// ---------------------------------------------------------------------------------------------
// SHA-256

TEST(Sha256, StandardVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 56 bytes: the padding needs a second block.
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                       "mnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalMatchesOneShotAtEveryBlockBoundary) {
  std::mt19937 rng(7);
  std::string data(300, '\0');
  for (char& c : data) c = (char)rng();
  for (size_t len : {0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 300}) {
    const std::string want = sha256_hex(data.data(), len);
    for (size_t chunk : {1, 3, 64, 100}) {
      Sha256 h;
      for (size_t i = 0; i < len; i += chunk) h.update(data.data() + i, std::min(chunk, len - i));
      EXPECT_EQ(h.hex_digest(), want) << "len " << len << " chunk " << chunk;
    }
  }
}

TEST(Sha256, File) {
  TempDir dir;
  write_file(dir / "f", std::string(5000, 'x'));
  EXPECT_EQ(sha256_file((dir / "f").string()), sha256_hex(std::string(5000, 'x')));
  std::string msg = user_error([&] { sha256_file((dir / "missing").string()); });
  EXPECT_HAS(msg, (dir / "missing").string());
}

// ---------------------------------------------------------------------------------------------
// safetensors

TEST(Safetensors, RoundTripAndAlignment) {
  TempDir dir;
  const std::string path = (dir / "t.safetensors").string();
  std::vector<float> a = {1.5f, -2.f, 3.25f, 0.f, -0.f, 1e-30f};
  std::vector<int32_t> b = {7, -8, 9, 2147483647};
  write_safetensors(path,
                    {{"zeta", StDType::F32, {2, 3}, a.data()},
                     {"alpha", StDType::I32, {4}, b.data()},
                     {"empty", StDType::F32, {0, 5}, nullptr}},
                    {{"step", "12"}, {"format", "pt"}});

  const std::string bytes = read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u) << "header padded so data starts 8-byte aligned";
  EXPECT_EQ(bytes.size(), 8 + n + a.size() * 4 + b.size() * 4);
  EXPECT_EQ(bytes[8], '{');
  EXPECT_EQ(bytes[8 + n - 1] == ' ' || bytes[8 + n - 1] == '}', true);

  SafetensorsReader r(path);
  ASSERT_EQ(r.tensors().size(), 3u);
  EXPECT_EQ(r.metadata().at("step"), "12");
  EXPECT_EQ(r.metadata().at("format"), "pt");
  const StTensorInfo& ta = r.at("zeta");
  EXPECT_EQ(ta.dtype, StDType::F32);
  EXPECT_EQ(ta.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ta.begin % 8, 0u);
  std::vector<float> a2(6, 99.f);
  r.read_f32(ta, a2.data());
  EXPECT_EQ(std::memcmp(a.data(), a2.data(), 24), 0);
  std::vector<int64_t> b2(4);
  r.read_i64(r.at("alpha"), b2.data());
  EXPECT_EQ(b2, (std::vector<int64_t>{7, -8, 9, 2147483647}));
  EXPECT_EQ(r.at("empty").numel(), 0);
  EXPECT_EQ(r.find("nope"), nullptr);

  std::string msg = user_error([&] { r.at("nope"); });
  EXPECT_HAS(msg, path);
  EXPECT_HAS(msg, "'nope'");
  msg = user_error([&] { r.read_f32(r.at("alpha"), a2.data()); });
  EXPECT_HAS(msg, "'alpha'");
  msg = user_error([&] { r.read_i64(r.at("zeta"), b2.data()); });
  EXPECT_HAS(msg, "'zeta'");
}

TEST(Safetensors, HalfAndBfloat16WidenExactly) {
  TempDir dir;
  const std::string path = (dir / "h.safetensors").string();
  // 1, -2, 65504 (max), 2^-24 (smallest subnormal), 2^-14 (smallest normal), 1023 * 2^-24, -0, inf, 1/3
  std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x0400, 0x03ff, 0x8000, 0x7c00, 0x3555};
  std::vector<float> want16 = {1.f, -2.f, 65504.f, std::ldexp(1.f, -24), std::ldexp(1.f, -14),
                               1023 * std::ldexp(1.f, -24), -0.f, INFINITY, 0.333251953125f};
  std::vector<uint16_t> bf16 = {0x3f80, 0xc049, 0x0001, 0x8000};
  std::vector<float> wantbf = {1.f, -3.140625f, std::ldexp(1.f, -133), -0.f};
  std::vector<int64_t> i64 = {-5, 1LL << 40};
  write_safetensors(path, {{"h", StDType::F16, {9}, f16.data()},
                           {"b", StDType::BF16, {2, 2}, bf16.data()},
                           {"l", StDType::I64, {2}, i64.data()}});
  SafetensorsReader r(path);
  std::vector<float> got(9);
  r.read_f32(r.at("h"), got.data());
  for (size_t i = 0; i < 9; ++i) {
    EXPECT_EQ(got[i], want16[i]) << i;
    EXPECT_EQ(std::signbit(got[i]), std::signbit(want16[i])) << i;
  }
  r.read_f32(r.at("b"), got.data());
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(std::memcmp(&got[i], &wantbf[i], 4), 0) << i;
  std::vector<int64_t> l(2);
  r.read_i64(r.at("l"), l.data());
  EXPECT_EQ(l, i64);
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
}

// A file with the given header text (and optionally a lying length field) then `data_bytes` bytes.
std::string craft(const TempDir& dir, const std::string& name, const std::string& header, size_t data_bytes,
                  int64_t length_field = -1) {
  const uint64_t n = length_field < 0 ? header.size() : (uint64_t)length_field;
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = (char)(n >> (8 * i));
  bytes += header;
  bytes += std::string(data_bytes, '\x01');
  const fs::path p = dir / name;
  write_file(p, bytes);
  return p.string();
}

TEST(Safetensors, MalformedFilesNameFileAndField) {
  TempDir dir;
  auto open = [](const std::string& p) { return user_error([&] { SafetensorsReader r(p); }); };
  std::string p, msg;

  p = (dir / "short.safetensors").string();
  write_file(p, "abc");
  msg = open(p);
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "truncated");

  p = craft(dir, "pastend.safetensors", "{}", 4, 1000);
  msg = open(p);
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "header length 1000");

  p = craft(dir, "badjson.safetensors", "{\"a\": {\"dtype\": ", 0);
  msg = open(p);
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "not valid JSON");

  p = craft(dir, "array.safetensors", "[1, 2]", 0);
  EXPECT_HAS(open(p), "not a JSON object");

  p = craft(dir, "dtype.safetensors", R"({"w": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]}})", 4);
  msg = open(p);
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "'w'");
  EXPECT_HAS(msg, "'dtype'");
  EXPECT_HAS(msg, "Q4");

  p = craft(dir, "noshape.safetensors", R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", 4);
  msg = open(p);
  EXPECT_HAS(msg, "'w'");
  EXPECT_HAS(msg, "'shape'");

  p = craft(dir, "negshape.safetensors", R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4);
  EXPECT_HAS(open(p), "'shape'");

  p = craft(dir, "range.safetensors", R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4);
  msg = open(p);
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "'w'");
  EXPECT_HAS(msg, "'data_offsets'");
  EXPECT_HAS(msg, "out of range");

  p = craft(dir, "size.safetensors", R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8);
  msg = open(p);
  EXPECT_HAS(msg, "'w'");
  EXPECT_HAS(msg, "'data_offsets'");
  EXPECT_HAS(msg, "needs 12");

  p = craft(dir, "backwards.safetensors", R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", 8);
  EXPECT_HAS(open(p), "'data_offsets'");

  p = craft(dir, "notint.safetensors", R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, "4"]}})", 4);
  EXPECT_HAS(open(p), "'data_offsets'");

  p = craft(dir, "overlap.safetensors",
            R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
            12);
  msg = open(p);
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "'b'");
  EXPECT_HAS(msg, "overlaps tensor 'a'");

  p = craft(dir, "gap.safetensors", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8);
  msg = open(p);
  EXPECT_HAS(msg, "'a'");
  EXPECT_HAS(msg, "gap");

  p = craft(dir, "trailing.safetensors", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 9);
  EXPECT_HAS(open(p), "5 trailing bytes");

  p = craft(dir, "meta.safetensors", R"({"__metadata__": {"step": 3}})", 0);
  msg = open(p);
  EXPECT_HAS(msg, "'__metadata__.step'");

  // A good file cut short: the header promises more data than the file holds.
  p = (dir / "cut.safetensors").string();
  std::vector<float> x(16, 1.f);
  write_safetensors(p, {{"x", StDType::F32, {16}, x.data()}});
  fs::resize_file(p, fs::file_size(p) - 3);
  msg = open(p);
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "'x'");
  EXPECT_HAS(msg, "out of range");

  msg = open((dir / "absent.safetensors").string());
  EXPECT_HAS(msg, "cannot open");
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

// vocab 70 pads to 128 rows, so the unpadded HF embedding is exercised.
const GPTConfig kTiny{2, 2, 32, 16, 70};

struct TinyRun {
  std::unique_ptr<Backend> be = make_cpu_backend();
  GPT model;
  AdamW opt;
  explicit TinyRun(const GPTConfig& cfg = kTiny, uint64_t seed = 1) : model(cfg, *be), opt(AdamWConfig{}, model) {
    model.init_weights(seed);
  }
  // One optimizer step on fixed pseudo-random tokens; returns the loss.
  float train_step(uint32_t data_seed) {
    const int B = 2, T = 8;
    std::mt19937 rng(data_seed);
    std::vector<int32_t> tok(B * T), tgt(B * T);
    for (auto& t : tok) t = (int32_t)(rng() % model.config().vocab_size);
    for (auto& t : tgt) t = (int32_t)(rng() % model.config().vocab_size);
    float loss = model.forward(tok.data(), tgt.data(), B, T);
    model.backward();
    opt.step(1e-3f);
    return loss;
  }
};

std::vector<float> host(const Tensor& t) {
  std::vector<float> v((size_t)t.numel());
  std::memcpy(v.data(), t.raw(), t.nbytes());  // CPU backend
  return v;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

TEST(Checkpoint, RoundTripIsBitExactAndResumesIdentically) {
  TempDir dir;
  TinyRun a;
  a.train_step(1);
  a.train_step(2);
  a.train_step(3);
  const nlohmann::json state = {{"step", 3}, {"tokens", 96}, {"rng", {1, 2}}};
  const std::string ckpt = save_checkpoint(dir.str(), a.model, a.opt, state);
  EXPECT_EQ(ckpt, (dir / "checkpoints/step-00000003").string());
  for (const char* f : {"model.safetensors", "config.json", "optimizer.safetensors", "trainer.json", "trainer.json.sha256"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(ckpt) / f)) << f;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints"))
    EXPECT_EQ(e.path().filename().string(), "step-00000003") << "no temporary directory left behind";

  TinyRun b(kTiny, 99);
  EXPECT_FALSE(bit_equal(host(a.model.params()), host(b.model.params())));
  load_model_weights(ckpt, b.model);
  nlohmann::json got = load_training_state(ckpt, b.opt);
  EXPECT_EQ(got, state);
  EXPECT_TRUE(bit_equal(host(a.model.params()), host(b.model.params())));
  EXPECT_TRUE(bit_equal(host(a.opt.m()), host(b.opt.m())));
  EXPECT_TRUE(bit_equal(host(a.opt.v()), host(b.opt.v())));
  EXPECT_EQ(b.opt.steps_taken(), 3);

  // Resuming continues exactly as the original run does.
  for (uint32_t s = 4; s < 6; ++s) {
    float la = a.train_step(s), lb = b.train_step(s);
    EXPECT_EQ(std::memcmp(&la, &lb, 4), 0) << "step " << s << ": " << la << " vs " << lb;
  }
  EXPECT_TRUE(bit_equal(host(a.model.params()), host(b.model.params())));

  const nlohmann::json trainer = nlohmann::json::parse(read_file(fs::path(ckpt) / "trainer.json"));
  EXPECT_EQ(trainer["step"], 3);
  EXPECT_EQ(trainer["files"]["model.safetensors"], sha256_file(ckpt + "/model.safetensors"));
  EXPECT_EQ(trainer["files"]["optimizer.safetensors"], sha256_file(ckpt + "/optimizer.safetensors"));
  EXPECT_EQ(trainer["files"]["config.json"], sha256_file(ckpt + "/config.json"));
  // The seal, in sha256sum's format, covers trainer.json itself.
  EXPECT_EQ(read_file(fs::path(ckpt) / "trainer.json.sha256"), sha256_file(ckpt + "/trainer.json") + "  trainer.json\n");
  SafetensorsReader opt_file(ckpt + "/optimizer.safetensors");
  EXPECT_EQ(opt_file.metadata().at("step"), "3");
  EXPECT_EQ(opt_file.at("adamw.m").shape, (std::vector<int64_t>{a.model.num_params()}));
}

TEST(Checkpoint, HuggingFaceLayout) {
  TempDir dir;
  TinyRun a;
  a.train_step(1);
  const std::string ckpt = save_checkpoint(dir.str(), a.model, a.opt, {{"step", 1}});
  SafetensorsReader r(ckpt + "/model.safetensors");
  EXPECT_EQ(r.metadata().at("format"), "pt");
  EXPECT_EQ(r.tensors().size(), a.model.param_info().size());
  const int64_t C = 32;

  const StTensorInfo& qkv = r.at("h.0.attn.c_attn.weight");
  EXPECT_EQ(qkv.dtype, StDType::F32);
  ASSERT_EQ(qkv.shape, (std::vector<int64_t>{C, 3 * C}));
  std::vector<float> hf(C * 3 * C);
  r.read_f32(qkv, hf.data());
  const std::vector<float> ours = host(a.model.param("h.0.attn.c_attn.weight"));  // [3C, C]
  for (int64_t o = 0; o < 3 * C; ++o)
    for (int64_t i = 0; i < C; ++i) ASSERT_EQ(hf[i * 3 * C + o], ours[o * C + i]) << o << "," << i;

  EXPECT_EQ(r.at("h.1.mlp.c_fc.weight").shape, (std::vector<int64_t>{C, 4 * C}));
  EXPECT_EQ(r.at("h.1.mlp.c_proj.weight").shape, (std::vector<int64_t>{4 * C, C}));
  EXPECT_EQ(r.at("h.1.attn.c_proj.weight").shape, (std::vector<int64_t>{C, C}));
  EXPECT_EQ(r.at("wpe.weight").shape, (std::vector<int64_t>{16, C}));
  EXPECT_EQ(r.at("ln_f.bias").shape, (std::vector<int64_t>{C}));

  const StTensorInfo& wte = r.at("wte.weight");
  ASSERT_EQ(wte.shape, (std::vector<int64_t>{70, C}));
  std::vector<float> w(70 * C);
  r.read_f32(wte, w.data());
  const std::vector<float> our_wte = host(a.model.param("wte.weight"));  // [128, C]
  EXPECT_EQ(our_wte.size(), 128u * C);
  EXPECT_EQ(std::memcmp(w.data(), our_wte.data(), w.size() * 4), 0);
}

TEST(Checkpoint, ConfigJson) {
  TempDir dir;
  TinyRun a;
  const std::string ckpt = save_checkpoint(dir.str(), a.model, a.opt, {{"step", 0}});
  EXPECT_EQ(ckpt, (dir / "checkpoints/step-00000000").string());
  const nlohmann::json c = nlohmann::json::parse(read_file(fs::path(ckpt) / "config.json"));
  EXPECT_EQ(c["model_type"], "gpt2");
  EXPECT_EQ(c["architectures"], nlohmann::json::array({"GPT2LMHeadModel"}));
  EXPECT_EQ(c["n_embd"], 32);
  EXPECT_EQ(c["n_layer"], 2);
  EXPECT_EQ(c["n_head"], 2);
  EXPECT_EQ(c["n_positions"], 16);
  EXPECT_EQ(c["n_ctx"], 16);
  EXPECT_EQ(c["vocab_size"], 70);
  EXPECT_EQ(c["activation_function"], "gelu_new");
  EXPECT_DOUBLE_EQ(c["layer_norm_epsilon"].get<double>(), 1e-5);
  EXPECT_EQ(c["tie_word_embeddings"], true);
  for (const char* k : {"resid_pdrop", "embd_pdrop", "attn_pdrop"}) EXPECT_EQ(c[k].get<double>(), 0.0) << k;
  EXPECT_EQ(read_checkpoint_config(ckpt), kTiny);
}

TEST(Checkpoint, ReadsHuggingFaceGpt2Config) {
  TempDir dir;
  // The shape of the config.json published with the original gpt2 model.
  write_file(dir / "config.json", R"({
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
    "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
    "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": null,
    "summary_first_dropout": 0.1, "summary_proj_to_labels": true, "summary_type": "cls_index",
    "summary_use_proj": true, "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
    "vocab_size": 50257})");
  EXPECT_EQ(read_checkpoint_config(dir.str()), (GPTConfig{12, 12, 768, 1024, 50257}));

  const std::string path = (dir / "config.json").string();
  write_file(dir / "config.json", R"({"n_layer": 2, "n_head": 2, "n_positions": 16, "vocab_size": 70})");
  std::string msg = user_error([&] { read_checkpoint_config(dir.str()); });
  EXPECT_HAS(msg, path);
  EXPECT_HAS(msg, "'n_embd'");
  write_file(dir / "config.json", R"({"n_layer": 2, "n_head": "2", "n_embd": 32, "n_positions": 16, "vocab_size": 70})");
  msg = user_error([&] { read_checkpoint_config(dir.str()); });
  EXPECT_HAS(msg, "'n_head'");
  write_file(dir / "config.json",
             R"({"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 16, "vocab_size": 70, "activation_function": "relu"})");
  EXPECT_HAS(user_error([&] { read_checkpoint_config(dir.str()); }), "'activation_function'");
  write_file(dir / "config.json", "{ nope");
  EXPECT_HAS(user_error([&] { read_checkpoint_config(dir.str()); }), "not valid JSON");
  EXPECT_HAS(user_error([&] { read_checkpoint_config((dir / "absent").string()); }), "config.json");
}

TEST(Checkpoint, CorruptedFileFailsChecksum) {
  TempDir dir;
  TinyRun a;
  a.train_step(1);
  const std::string ckpt = save_checkpoint(dir.str(), a.model, a.opt, {{"step", 1}});
  const fs::path model_path = fs::path(ckpt) / "model.safetensors";
  std::string bytes = read_file(model_path);
  bytes[bytes.size() - 100] ^= 0x01;  // one bit of one weight: still a well-formed file
  write_file(model_path, bytes);
  TinyRun b;
  const std::vector<float> before = host(b.model.params());
  std::string msg = user_error([&] { load_model_weights(ckpt, b.model); });
  EXPECT_HAS(msg, model_path.string());
  EXPECT_HAS(msg, "checksum mismatch");
  EXPECT_TRUE(bit_equal(before, host(b.model.params()))) << "a failed load leaves the model alone";

  const fs::path opt_path = fs::path(ckpt) / "optimizer.safetensors";
  bytes = read_file(opt_path);
  bytes[bytes.size() - 1] ^= 0x40;
  write_file(opt_path, bytes);
  msg = user_error([&] { load_training_state(ckpt, b.opt); });
  EXPECT_HAS(msg, opt_path.string());
  EXPECT_HAS(msg, "checksum mismatch");
}

TEST(Checkpoint, MismatchedConfigIsUserError) {
  TempDir dir;
  TinyRun a;
  const std::string ckpt = save_checkpoint(dir.str(), a.model, a.opt, {{"step", 5}});
  GPTConfig other = kTiny;
  other.n_layer = 3;
  TinyRun b(other);
  std::string msg = user_error([&] { load_model_weights(ckpt, b.model); });
  EXPECT_HAS(msg, "config.json");
  EXPECT_HAS(msg, "does not match");
  msg = user_error([&] { load_training_state(ckpt, b.opt); });
  EXPECT_HAS(msg, "'adamw.m'");

  // Without config.json or trainer.json (bare weights), the tensor shapes catch it.
  fs::create_directories(dir / "bare");
  fs::copy_file(fs::path(ckpt) / "model.safetensors", dir / "bare/model.safetensors");
  GPTConfig wider = kTiny;
  wider.n_embd = 64;
  TinyRun c(wider);
  msg = user_error([&] { load_model_weights((dir / "bare").string(), c.model); });
  EXPECT_HAS(msg, "model.safetensors");
  EXPECT_HAS(msg, "'wte.weight' has shape [70, 32], expected [70, 64]");
  msg = user_error([&] { load_training_state((dir / "bare").string(), c.opt); });
  EXPECT_HAS(msg, "trainer.json");
}

TEST(Checkpoint, LoadsHuggingFaceStyleFiles) {
  // What a real GPT-2 export looks like: "transformer." names, BF16/F16 data, mask buffers and
  // a duplicate lm_head.weight; no trainer.json.
  TempDir dir;
  TinyRun a;
  a.train_step(1);
  const std::string src = save_checkpoint(dir.str(), a.model, a.opt, {{"step", 1}});
  SafetensorsReader r(src + "/model.safetensors");
  std::vector<std::vector<uint16_t>> bf;
  std::vector<StEntry> entries;
  size_t wte_index = 0;
  for (const StTensorInfo& t : r.tensors()) {
    if (t.name == "wte.weight") wte_index = bf.size();
    std::vector<float> f((size_t)t.numel());
    r.read_f32(t, f.data());
    std::vector<uint16_t> b(f.size());
    for (size_t i = 0; i < f.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &f[i], 4);
      b[i] = (uint16_t)(bits >> 16);  // truncation: the expected value is exactly bf16_to_f32(b)
    }
    bf.push_back(std::move(b));
    entries.push_back({"transformer." + t.name, StDType::BF16, t.shape, bf.back().data()});
  }
  std::vector<float> mask(16 * 16, 1.f);
  entries.push_back({"transformer.h.0.attn.bias", StDType::F32, {1, 1, 16, 16}, mask.data()});
  entries.push_back({"transformer.h.1.attn.masked_bias", StDType::F32, {}, mask.data()});
  entries.push_back({"lm_head.weight", StDType::BF16, {70, 32}, bf[wte_index].data()});
  fs::create_directories(dir / "hf");
  write_safetensors((dir / "hf/model.safetensors").string(), entries);
  fs::copy_file(src + "/config.json", dir / "hf/config.json");

  TinyRun b(kTiny, 5);
  load_model_weights((dir / "hf").string(), b.model);
  for (const ParamInfo& p : b.model.param_info()) {
    const std::vector<float> want = host(a.model.param(p.name)), got = host(b.model.param(p.name));
    const int64_t real = p.name == "wte.weight" ? 70 * 32 : p.numel;
    for (int64_t i = 0; i < p.numel; ++i) {
      uint32_t bits;
      std::memcpy(&bits, &want[i], 4);
      const float expect = i < real ? bf16_to_f32((uint16_t)(bits >> 16)) : 0.f;
      ASSERT_EQ(got[i], expect) << p.name << "[" << i << "]";
    }
  }

  // An unknown tensor is not silently ignored.
  entries.push_back({"transformer.h.0.attn.rotary", StDType::F32, {1}, mask.data()});
  write_safetensors((dir / "hf/model.safetensors").string(), entries);
  EXPECT_HAS(user_error([&] { load_model_weights((dir / "hf").string(), b.model); }), "'transformer.h.0.attn.rotary'");
  // A missing one names itself.
  entries.erase(entries.begin());
  entries.pop_back();
  write_safetensors((dir / "hf/model.safetensors").string(), entries);
  EXPECT_HAS(user_error([&] { load_model_weights((dir / "hf").string(), b.model); }), "missing tensor '");
}

TEST(Checkpoint, LatestCheckpointSkipsTemporaryAndIncomplete) {
  TempDir dir;
  EXPECT_EQ(latest_checkpoint((dir / "nothing").string()), "");
  EXPECT_EQ(latest_checkpoint(dir.str()), "");
  TinyRun a;
  const std::string two = save_checkpoint(dir.str(), a.model, a.opt, {{"step", 2}});
  // Newer-looking leftovers: a crashed save's temp dir, and a step dir without trainer.json.
  fs::create_directories(dir / "checkpoints/.tmp-step-00000009-12345");
  write_file(dir / "checkpoints/.tmp-step-00000009-12345/trainer.json", "{}");
  fs::create_directories(dir / "checkpoints/step-00000007");
  fs::copy_file(two + "/model.safetensors", dir / "checkpoints/step-00000007/model.safetensors");
  fs::create_directories(dir / "checkpoints/step-junk");
  write_file(dir / "checkpoints/step-junk/trainer.json", "{}");
  // A complete copy of step 2 renamed to a newer step, without its seal: not complete.
  fs::copy(two, dir / "checkpoints/step-00000008", fs::copy_options::recursive);
  fs::remove(dir / "checkpoints/step-00000008/trainer.json.sha256");
  EXPECT_EQ(latest_checkpoint(dir.str()), two);
  EXPECT_EQ(latest_checkpoint((dir / "checkpoints").string()), two);

  // Ordered by step number, and a checkpoint directory names itself.
  const std::string ten = save_checkpoint(dir.str(), a.model, a.opt, {{"step", 10}});
  EXPECT_EQ(latest_checkpoint(dir.str()), ten);
  EXPECT_EQ(latest_checkpoint(two), two);
  EXPECT_EQ(latest_checkpoint((dir / "checkpoints/step-00000007").string()),
            (dir / "checkpoints/step-00000007").string());
}

TEST(Checkpoint, FailedSaveLeavesPreviousCheckpointIntact) {
  TempDir dir;
  TinyRun a;
  a.train_step(1);
  const std::string ckpt = save_checkpoint(dir.str(), a.model, a.opt, {{"step", 2}, {"note", "first"}});
  const std::string model_sha = sha256_file(ckpt + "/model.safetensors");
  a.train_step(2);
  // Fails after model.safetensors and optimizer.safetensors are written: trainer.json cannot be
  // serialised (invalid UTF-8).
  EXPECT_THROW(save_checkpoint(dir.str(), a.model, a.opt, {{"step", 2}, {"note", "\xff\xfe"}}),
               nlohmann::json::type_error);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints")) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"step-00000002"}) << "only the old checkpoint remains";
  EXPECT_EQ(sha256_file(ckpt + "/model.safetensors"), model_sha);
  TinyRun b;
  load_model_weights(ckpt, b.model);
  EXPECT_EQ(load_training_state(ckpt, b.opt)["note"], "first");

  // A run directory that cannot hold checkpoints at all.
  write_file(dir / "afile", "x");
  std::string msg = user_error([&] { save_checkpoint((dir / "afile").string(), a.model, a.opt, {{"step", 1}}); });
  EXPECT_HAS(msg, "afile");
  EXPECT_TRUE(fs::is_regular_file(dir / "afile"));
}

TEST(Checkpoint, ResavingAStepReplacesItCompletely) {
  TempDir dir;
  TinyRun a;
  const std::string first = save_checkpoint(dir.str(), a.model, a.opt, {{"step", 4}, {"n", 1}});
  a.train_step(1);
  const std::string second = save_checkpoint(dir.str(), a.model, a.opt, {{"step", 4}, {"n", 2}});
  EXPECT_EQ(first, second);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints")) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"step-00000004"});
  TinyRun b(kTiny, 3);
  load_model_weights(second, b.model);
  EXPECT_EQ(load_training_state(second, b.opt)["n"], 2);
  EXPECT_TRUE(bit_equal(host(a.model.params()), host(b.model.params())));
  EXPECT_TRUE(bit_equal(host(a.opt.m()), host(b.opt.m())));
  EXPECT_EQ(b.opt.steps_taken(), 1);
}

}  // namespace
