// Data module: shard format and its validation, the training loader's shuffling, coverage,
// world-size invariance and resume, the validation loader, text preparation and `data` CLI.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "runtime/data.h"
#include "runtime/error.h"
#include "tests/util.h"

namespace fs = std::filesystem;
using lt::UserError;
using lt::test::count_lines;
using lt::test::read_file;
using lt::test::run_cli;
using lt::test::RunResult;

namespace {

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/lt-test-data-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // A shard whose tokens are base, base+1, ... so any window names where it came from.
  std::string counting_shard(const std::string& name, size_t n, uint16_t base) {
    std::vector<uint16_t> t(n);
    for (size_t i = 0; i < n; ++i) t[i] = (uint16_t)(base + i);
    lt::write_shard(path(name), t.data(), n);
    return path(name);
  }

  // Raw bytes: a header of the given words (rest zero) followed by body_bytes zero bytes.
  std::string raw_shard(const std::string& name, std::vector<int32_t> words, size_t body_bytes,
                        size_t header_bytes = lt::kShardHeaderBytes) {
    std::vector<char> bytes(header_bytes + body_bytes, 0);
    if (!words.empty())  // memcpy from an empty vector's null data() is undefined, even for 0 bytes
      std::memcpy(bytes.data(), words.data(), std::min(words.size() * sizeof(int32_t), header_bytes));
    std::ofstream(path(name), std::ios::binary).write(bytes.data(), (std::streamsize)bytes.size());
    return path(name);
  }

  std::string dir_;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no UserError)";
}

// A batch as one vector: inputs then targets.
std::vector<int32_t> batch(lt::DataLoader& dl, int B, int rank = 0, int world = 1) {
  const int T = dl.T();
  std::vector<int32_t> v(2 * (size_t)B * T, -1);
  dl.next_batch(v.data(), v.data() + (size_t)B * T, B, rank, world);
  return v;
}

}  // namespace

// ---- shards ----

TEST_F(DataTest, ShardRoundTrip) {
  std::vector<uint16_t> toks = {0, 1, 65535, 256, 42, 7, 9};
  lt::write_shard(path("a.bin"), toks.data(), toks.size());
  EXPECT_FALSE(fs::exists(path("a.bin.tmp")));
  EXPECT_EQ(fs::file_size(path("a.bin")), lt::kShardHeaderBytes + 2 * toks.size());
  lt::Shard s(path("a.bin"));
  ASSERT_EQ(s.size(), toks.size());
  EXPECT_EQ(std::vector<uint16_t>(s.data(), s.data() + s.size()), toks);
  EXPECT_EQ(s.path(), path("a.bin"));

  // Moving keeps the mapping alive in the new owner.
  lt::Shard moved = std::move(s);
  EXPECT_EQ(moved.data()[2], 65535);

  // Overwriting replaces the file whole; an empty shard is valid.
  lt::write_shard(path("a.bin"), toks.data(), 0);
  EXPECT_EQ(lt::Shard(path("a.bin")).size(), 0u);
}

TEST_F(DataTest, ShardHeaderIsLlmcLayout) {
  std::vector<uint16_t> toks(5, 3);
  lt::write_shard(path("h.bin"), toks.data(), toks.size());
  std::string bytes = read_file(path("h.bin"));
  int32_t h[3];
  std::memcpy(h, bytes.data(), sizeof h);
  EXPECT_EQ(h[0], 20240520);
  EXPECT_EQ(h[1], 1);
  EXPECT_EQ(h[2], 5);
}

TEST_F(DataTest, BadMagic) {
  std::string p = raw_shard("x.bin", {1234, 1, 0}, 0);
  EXPECT_EQ(error_of([&] { lt::Shard s(p); }), p + ": header magic: expected 20240520, got 1234");
}

TEST_F(DataTest, BadVersion) {
  std::string p = raw_shard("x.bin", {20240520, 2, 0}, 0);
  EXPECT_EQ(error_of([&] { lt::Shard s(p); }), p + ": header version: expected 1, got 2");
}

TEST_F(DataTest, ShortHeader) {
  std::string p = raw_shard("x.bin", {20240520, 1, 0}, 0, 100);
  EXPECT_EQ(error_of([&] { lt::Shard s(p); }),
            p + ": header: the file holds 100 bytes, fewer than the 1024-byte header");
  std::string empty = raw_shard("empty.bin", {}, 0, 0);
  EXPECT_NE(error_of([&] { lt::Shard s(empty); }).find(empty + ": header: the file holds 0 bytes"),
            std::string::npos);
}

TEST_F(DataTest, ShortBody) {
  std::string p = raw_shard("x.bin", {20240520, 1, 1000}, 1500);
  EXPECT_EQ(error_of([&] { lt::Shard s(p); }),
            p + ": token count: header says 1000 tokens (2000 bytes) but the file holds 1500 "
                "bytes after the header");
}

TEST_F(DataTest, MissingShardAndGlob) {
  EXPECT_EQ(error_of([&] { lt::Shard s(path("nope.bin")); }),
            path("nope.bin") + ": cannot open shard (No such file or directory)");
  EXPECT_EQ(error_of([&] { lt::glob_files(path("*.bin")); }), path("*.bin") + ": no files match");
  EXPECT_EQ(error_of([&] { lt::DataLoader dl(path("*.bin"), 4, 256, 1); }),
            path("*.bin") + ": no files match");
}

TEST_F(DataTest, GlobSortsBytewise) {
  for (const char* n : {"b_000001.bin", "B_000000.bin", "a_000002.bin"})
    std::ofstream(path(n)).put('x');
  EXPECT_EQ(
      lt::glob_files(path("*.bin")),
      (std::vector<std::string>{path("B_000000.bin"), path("a_000002.bin"), path("b_000001.bin")}));
}

TEST_F(DataTest, TokenOutsideVocab) {
  std::vector<uint16_t> toks(40, 5);
  toks[17] = 300;
  toks[30] = 400;  // only the first offender is reported
  lt::write_shard(path("v.bin"), toks.data(), toks.size());
  const std::string want =
      path("v.bin") + ": token id 300 at position 17 is outside the vocabulary (256)";
  lt::Shard s(path("v.bin"));
  EXPECT_EQ(error_of([&] { lt::check_vocab(s, 256); }), want);
  EXPECT_NO_THROW(lt::check_vocab(s, 401));
  // Both loaders check on open.
  EXPECT_EQ(error_of([&] { lt::DataLoader dl(path("v.bin"), 4, 256, 1); }), want);
  EXPECT_EQ(error_of([&] { lt::EvalLoader el(path("v.bin"), 256); }), want);
}

// ---- training loader ----

// Two shards: 1001 tokens (125 windows of T=8) and 803 tokens (100 windows) = 225 windows.
class LoaderTest : public DataTest {
 protected:
  static constexpr int T = 8;
  static constexpr uint64_t kWindows = 225;
  void SetUp() override {
    DataTest::SetUp();
    counting_shard("d_000000.bin", 1001, 0);
    counting_shard("d_000001.bin", 803, 20000);
  }
  std::string pattern() const { return path("d_*.bin"); }
};

TEST_F(LoaderTest, WindowsAndTargets) {
  lt::DataLoader dl(pattern(), T, 65536, 7);
  EXPECT_EQ(dl.samples_per_epoch(), kWindows);
  EXPECT_EQ(dl.num_tokens(), 1001u + 803u);
  std::vector<int32_t> v = batch(dl, 16);
  for (int b = 0; b < 16; ++b) {
    const int32_t* in = v.data() + b * T;
    const int32_t* tg = v.data() + 16 * T + b * T;
    const int32_t start = in[0];
    // A window starts at a multiple of T in its shard and is T+1 consecutive tokens.
    EXPECT_EQ((start >= 20000 ? start - 20000 : start) % T, 0) << start;
    for (int t = 0; t < T; ++t) {
      EXPECT_EQ(in[t], start + t);
      EXPECT_EQ(tg[t], start + t + 1);
    }
  }
  EXPECT_EQ(dl.position(), 16u);
}

TEST_F(LoaderTest, SameSeedSameBatchesDifferentSeedDifferent) {
  lt::DataLoader a(pattern(), T, 65536, 42), b(pattern(), T, 65536, 42), c(pattern(), T, 65536, 43);
  bool differs = false;
  for (int i = 0; i < 10; ++i) {
    std::vector<int32_t> x = batch(a, 4), y = batch(b, 4), z = batch(c, 4);
    EXPECT_EQ(x, y) << "call " << i;
    differs |= x != z;
  }
  EXPECT_TRUE(differs);
}

TEST_F(LoaderTest, EveryWindowOncePerEpoch) {
  lt::DataLoader dl(pattern(), T, 65536, 3);
  std::vector<int32_t> order[2];
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<int32_t> seen;
    for (uint64_t i = 0; i < kWindows / 5; ++i) {  // 225 = 45 batches of 5
      EXPECT_EQ(dl.epoch(), (uint64_t)epoch);
      std::vector<int32_t> v = batch(dl, 5);
      for (int b = 0; b < 5; ++b) {
        EXPECT_TRUE(seen.insert(v[b * T]).second) << "window at " << v[b * T] << " twice";
        order[epoch].push_back(v[b * T]);
      }
    }
    EXPECT_EQ(seen.size(), kWindows);
    // The last window of each shard is the last whole one, and nothing past it is used.
    EXPECT_TRUE(seen.count(124 * T));
    EXPECT_TRUE(seen.count(20000 + 99 * T));
  }
  EXPECT_EQ(dl.epoch(), 2u);
  EXPECT_NE(order[0], order[1]);  // each epoch has its own permutation
}

// N ranks x B see exactly what 1 rank x N*B sees, through an epoch boundary mid-batch.
TEST_F(LoaderTest, WorldSizeInvariance) {
  const int B = 7;  // 14 per call does not divide 225, so a call straddles the boundary
  lt::DataLoader one(pattern(), T, 65536, 11), r0(pattern(), T, 65536, 11),
      r1(pattern(), T, 65536, 11);
  for (int call = 0; call < 40; ++call) {  // 560 samples: into the third epoch
    std::vector<int32_t> whole = batch(one, 2 * B);
    std::vector<int32_t> a = batch(r0, B, 0, 2), b = batch(r1, B, 1, 2);
    const size_t half = (size_t)B * T;
    // whole = [inputs of 2B rows | targets of 2B rows]; each rank's = [inputs B | targets B].
    std::vector<int32_t> inputs(a.begin(), a.begin() + half), targets(a.begin() + half, a.end());
    inputs.insert(inputs.end(), b.begin(), b.begin() + half);
    targets.insert(targets.end(), b.begin() + half, b.end());
    ASSERT_EQ(std::vector<int32_t>(whole.begin(), whole.begin() + 2 * half), inputs)
        << "call " << call;
    ASSERT_EQ(std::vector<int32_t>(whole.begin() + 2 * half, whole.end()), targets)
        << "call " << call;
  }
  EXPECT_EQ(one.position(), r0.position());
  EXPECT_EQ(one.position(), 560u);
  EXPECT_EQ(one.epoch(), 2u);
}

TEST_F(LoaderTest, StateRoundTripContinuesIdentically) {
  lt::DataLoader a(pattern(), T, 65536, 5);
  for (int i = 0; i < 20; ++i) batch(a, 10);  // 200 samples, next call crosses the epoch
  nlohmann::json st = a.state();
  EXPECT_EQ(st["seed"], 5u);
  EXPECT_EQ(st["T"], T);
  EXPECT_EQ(st["position"], 200u);
  EXPECT_EQ(st["epoch"], 0u);
  ASSERT_EQ(st["shards"].size(), 2u);
  EXPECT_EQ(st["shards"][1]["tokens"], 803u);

  // Through text, as a checkpoint would store it; a different seed is overridden by the state.
  lt::DataLoader b(pattern(), T, 65536, 999);
  b.load_state(nlohmann::json::parse(st.dump()));
  EXPECT_EQ(b.seed(), 5u);
  // Resuming on two ranks continues the same global stream.
  lt::DataLoader r0(pattern(), T, 65536, 1), r1(pattern(), T, 65536, 2);
  r0.load_state(st);
  r1.load_state(st);
  for (int i = 0; i < 30; ++i) {
    std::vector<int32_t> x = batch(a, 10), y = batch(b, 10);
    ASSERT_EQ(x, y) << "call " << i;
    std::vector<int32_t> p = batch(r0, 5, 0, 2), q = batch(r1, 5, 1, 2);
    ASSERT_EQ(std::vector<int32_t>(p.begin(), p.begin() + 5 * T),
              std::vector<int32_t>(x.begin(), x.begin() + 5 * T));
    ASSERT_EQ(std::vector<int32_t>(q.begin(), q.begin() + 5 * T),
              std::vector<int32_t>(x.begin() + 5 * T, x.begin() + 10 * T));
  }
}

TEST_F(LoaderTest, StateMismatchNamesTheField) {
  lt::DataLoader a(pattern(), T, 65536, 5);
  nlohmann::json st = a.state();

  lt::DataLoader otherT(pattern(), 4, 65536, 5);
  EXPECT_EQ(error_of([&] { otherT.load_state(st); }),
            "data state: T: the state was saved with T=8 but this loader has T=4");

  lt::DataLoader one_shard(path("d_000000.bin"), T, 65536, 5);
  EXPECT_EQ(error_of([&] { one_shard.load_state(st); }),
            "data state: shards: the state lists 2 shards but the pattern matches 1");

  nlohmann::json changed = st;
  changed["shards"][1]["tokens"] = 804;
  EXPECT_EQ(error_of([&] { a.load_state(changed); }),
            "data state: shards[1]: the state has d_000001.bin (804 tokens) but the data has "
            "d_000001.bin (803 tokens)");

  nlohmann::json missing = st;
  missing.erase("position");
  EXPECT_EQ(error_of([&] { a.load_state(missing); }), "data state: position: missing");

  // The same data in another directory is the same data.
  fs::create_directory(path("moved"));
  fs::copy(path("d_000000.bin"), path("moved/d_000000.bin"));
  fs::copy(path("d_000001.bin"), path("moved/d_000001.bin"));
  lt::DataLoader moved(path("moved/d_*.bin"), T, 65536, 0);
  EXPECT_NO_THROW(moved.load_state(st));
}

TEST_F(DataTest, LoaderNeedsOneWindow) {
  counting_shard("tiny.bin", 8, 0);  // T=8 needs 9 tokens
  EXPECT_EQ(error_of([&] { lt::DataLoader dl(path("tiny.bin"), 8, 65536, 0); }),
            path("tiny.bin") + ": no shard holds T+1 = 9 tokens, so there is no training sample");
}

// ---- validation loader ----

TEST_F(DataTest, EvalLoaderReadsFirstShardSequentially) {
  counting_shard("v_000000.bin", 50, 0);
  counting_shard("v_000001.bin", 500, 1000);  // never read
  lt::EvalLoader el(path("v_*.bin"), 65536);
  const int B = 2, T = 4;
  EXPECT_EQ(el.num_batches(B, T), 6u);  // (50-1)/8
  std::vector<int32_t> in(B * T), tg(B * T);
  int batches = 0;
  while (el.next_batch(in.data(), tg.data(), B, T)) {
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t) {
        EXPECT_EQ(in[b * T + t], batches * B * T + b * T + t);
        EXPECT_EQ(tg[b * T + t], batches * B * T + b * T + t + 1);
      }
    ++batches;
  }
  EXPECT_EQ(batches, 6);
  EXPECT_FALSE(el.next_batch(in.data(), tg.data(), B, T));
  el.reset();
  ASSERT_TRUE(el.next_batch(in.data(), tg.data(), B, T));
  EXPECT_EQ(in[0], 0);
  EXPECT_EQ(in[T], T);
}

// ---- byte tokenizer and prepare ----

TEST(ByteTokenizer, RoundTrip) {
  std::string text = "Hello, \xc3\xa9t\xc3\xa9!\n";
  std::vector<int32_t> t = lt::encode_bytes(text);
  EXPECT_EQ(t[0], 'H');
  EXPECT_EQ(t[7], 0xc3);
  EXPECT_EQ(lt::decode_bytes(t.data(), (int)t.size()), text);
  int32_t bad[] = {'a', 300, 'b'};
  EXPECT_EQ(lt::decode_bytes(bad, 3), std::string("a") + "\xEF\xBF\xBD" + "b");
}

TEST_F(DataTest, PrepareSplitsTrainAndVal) {
  std::string a(600, 'a'), b;
  for (int i = 0; i < 400; ++i) b.push_back((char)(i % 256));
  std::ofstream(path("a.txt"), std::ios::binary) << a;
  std::ofstream(path("b.txt"), std::ios::binary) << b;
  const std::string prefix = path("out/ds");  // the directory does not exist yet

  std::vector<lt::ShardSummary> w =
      lt::prepare_text_shards({path("a.txt"), path("b.txt")}, prefix, 0.1, 300);
  // 1000 bytes: train = first 900 in shards of 300, val = the last 100.
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[0].path, prefix + "_train_000000.bin");
  EXPECT_EQ(w[2].path, prefix + "_train_000002.bin");
  EXPECT_EQ(w[3].path, prefix + "_val_000000.bin");
  EXPECT_EQ(w[3].tokens, 100u);

  const std::string all = a + b;
  std::string train;
  for (const std::string& p : lt::glob_files(prefix + "_train_*.bin")) {
    lt::Shard s(p);
    lt::check_vocab(s, 256);
    EXPECT_EQ(s.size(), 300u);
    for (size_t i = 0; i < s.size(); ++i) train.push_back((char)s.data()[i]);
  }
  EXPECT_EQ(train, all.substr(0, 900));
  lt::Shard val(prefix + "_val_000000.bin");
  std::string v;
  for (size_t i = 0; i < val.size(); ++i) v.push_back((char)val.data()[i]);
  EXPECT_EQ(v, all.substr(900));

  // A smaller rerun removes the earlier run's extra shards so a glob does not mix the two.
  lt::prepare_text_shards({path("a.txt")}, prefix, 0.5, 300);
  EXPECT_EQ(lt::glob_files(prefix + "_train_*.bin"),
            std::vector<std::string>{prefix + "_train_000000.bin"});
  EXPECT_EQ(lt::Shard(prefix + "_val_000000.bin").size(), 300u);
}

TEST_F(DataTest, PrepareMissingInputWritesNothing) {
  std::ofstream(path("a.txt")) << "some text";
  EXPECT_EQ(error_of([&] {
              lt::prepare_text_shards({path("a.txt"), path("missing.txt")}, path("out/ds"));
            }),
            path("missing.txt") + ": cannot open input (No such file or directory)");
  EXPECT_FALSE(fs::exists(path("out")));
  EXPECT_EQ(error_of([&] { lt::prepare_text_shards({path("a.txt")}, path("ds"), 1.0); }),
            "prepare: val_fraction: expected a value in [0, 1), got 1.000000");
}

// A link left where a shard's temporary file goes is replaced, never written through: the file
// it points to (anywhere) keeps its bytes.
TEST_F(DataTest, PrepareDoesNotWriteThroughLinks) {
  std::ofstream(path("a.txt")) << std::string(100, 'q');
  std::ofstream(path("victim")) << "precious";
  fs::create_symlink(path("victim"), path("ds_train_000000.bin.tmp"));
  fs::create_symlink(path("victim"), path("ds_val_000000.bin"));
  lt::prepare_text_shards({path("a.txt")}, path("ds"), 0.1);
  EXPECT_EQ(read_file(path("victim")), "precious");
  EXPECT_FALSE(fs::is_symlink(path("ds_train_000000.bin")));
  EXPECT_FALSE(fs::is_symlink(path("ds_val_000000.bin")));
  EXPECT_FALSE(fs::exists(path("ds_train_000000.bin.tmp")));
  EXPECT_EQ(lt::Shard(path("ds_train_000000.bin")).size(), 90u);
  // A directory at the temporary name is the user's: refused, not emptied.
  fs::create_directories(path("dz_train_000000.bin.tmp"));
  std::ofstream(path("dz_train_000000.bin.tmp/keep")) << "mine";
  EXPECT_THROW(lt::prepare_text_shards({path("a.txt")}, path("dz"), 0.1), UserError);
  EXPECT_EQ(read_file(path("dz_train_000000.bin.tmp/keep")), "mine");
}

// ---- CLI ----

TEST_F(DataTest, CliPrepareMissingInputExits2) {
  fs::create_directory(path("work"));
  std::ofstream(path("work/a.txt")) << "some text";
  RunResult r = run_cli("data prepare --input '" + path("work/a.txt") + "' '" + path("work/missing.txt") +
                        "' --output '" + path("work/ds") + "'");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(path("work/missing.txt")), std::string::npos) << r.err;
  // Nothing but the input is left in the directory.
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(path("work"))) left.push_back(e.path().string());
  EXPECT_EQ(left, std::vector<std::string>{path("work/a.txt")});
}

TEST_F(DataTest, CliPrepareAndInspect) {
  std::ofstream(path("a.txt"), std::ios::binary) << std::string(90, 'z') << "AAAAAAAAAA";
  RunResult r = run_cli("data prepare --input '" + path("a.txt") + "' --output '" + path("ds") +
                        "' --val-fraction 0.1 --shard-tokens 50");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find(path("ds_train_000001.bin") + " (40 tokens)"), std::string::npos) << r.out;
  r = run_cli("data inspect '" + path("ds_val_000000.bin") + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["path"], path("ds_val_000000.bin"));
  EXPECT_EQ(j["tokens"], 10);
  EXPECT_EQ(j["min"], 'A');
  EXPECT_EQ(j["max"], 'A');

  r = run_cli("data prepare --input '" + path("a.txt") + "' --output '" + path("ds") + "' --val-fraction 1");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--val-fraction"), std::string::npos) << r.err;
}
