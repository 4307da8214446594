// tokenizer.json: our byte-level BPE against the ids Hugging Face `tokenizers` gave for the
// fixtures (scripts/tokenizer_check.py wrote them), round trips, added tokens, refusals of bad
// files, `data prepare --tokenizer` and the tokenizer a checkpoint carries.
#include "runtime/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <chrono>
#include <random>

#include "runtime/data.h"
#include "runtime/error.h"
#include "tests/util.h"

namespace lt::test {
namespace {

using json = nlohmann::json;
const std::string kFixtures = std::string(LT_SOURCE_DIR) + "/tests/fixtures/tokenizers/";


// The fixture's JSON with `edit` applied, as text.
std::string edited(const std::string& name, const std::function<void(json&)>& edit) {
  json j = json::parse(read_file(kFixtures + name));
  edit(j);
  return j.dump();
}

// What decode(encode(text)) gives: the text, with the space bpe500's pre-tokenizer adds in front
// (add_prefix_space, as GPT-2's option; `tokenizers` decodes it back too).
std::string with_prefix(const std::string& name, const std::string& text) {
  return name == std::string("bpe500.json") && !text.empty() && text[0] != ' ' ? " " + text : text;
}

TEST(Tokenizer, FixturesMatchTokenizersIdForId) {
  const std::string sample = read_file(kFixtures + "sample.txt");
  const json want = json::parse(read_file(kFixtures + "sample_ids.json"));
  ASSERT_EQ(want["ids"].size(), 2u);
  for (const auto& [name, ids] : want["ids"].items()) {
    const Tokenizer tok = Tokenizer::from_file(kFixtures + name);
    const std::vector<int32_t> got = tok.encode(sample);
    const std::vector<int32_t> expected = ids.get<std::vector<int32_t>>();
    ASSERT_EQ(got.size(), expected.size()) << name;
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], expected[i]) << name << " token " << i;
    EXPECT_EQ(tok.decode(got.data(), got.size()), with_prefix(name, sample)) << name;
  }
}

// Random text over every class the pre-tokenizer tells apart decodes back to itself.
TEST(Tokenizer, RoundTripOnRandomUnicode) {
  const std::vector<std::string> atoms = {"a", "Z", "é", "ß", "東", "語", "😀", "👍🏽", "1", "٣", "½", " ", "  ", "\t",
                                          "\n", "\r\n", "\u00a0", "\u3000", "\u180e", "\u0085", "'s", "'ll", "'",
                                          "!", "...", "<|endoftext|>", "<|", "\u0301", "\x01", "\x7f"};
  std::mt19937 rng(17);
  for (const char* name : {"bpe500.json", "bpe2000_eot.json"}) {
    const Tokenizer tok = Tokenizer::from_file(kFixtures + name);
    for (int trial = 0; trial < 200; ++trial) {
      std::string text;
      const int n = (int)(rng() % 40);
      for (int i = 0; i < n; ++i) text += atoms[rng() % atoms.size()];
      const std::vector<int32_t> ids = tok.encode(text);
      ASSERT_EQ(tok.decode(ids.data(), ids.size()), with_prefix(name, text)) << name << ": " << text;
    }
  }
}

TEST(Tokenizer, AddedTokensAreSplitOutFirst) {
  const Tokenizer tok = Tokenizer::from_file(kFixtures + "bpe2000_eot.json");
  ASSERT_EQ(tok.eos_id(), std::optional<int32_t>(0));
  EXPECT_EQ(tok.encode("<|endoftext|>"), std::vector<int32_t>{0});
  // Between words, and the text either side encodes as it would alone.
  const std::vector<int32_t> a = tok.encode("Hello"), b = tok.encode(" world");
  std::vector<int32_t> want = a;
  want.push_back(0);
  want.insert(want.end(), b.begin(), b.end());
  EXPECT_EQ(tok.encode("Hello<|endoftext|> world"), want);
  // A near miss is ordinary text.
  const std::vector<int32_t> near = tok.encode("<|endoftext|");
  EXPECT_EQ(std::count(near.begin(), near.end(), 0), 0);
  EXPECT_EQ(tok.decode(want.data(), want.size()), "Hello<|endoftext|> world");
  // No end-of-text token: no eos.
  EXPECT_EQ(Tokenizer::from_file(kFixtures + "bpe500.json").eos_id(), std::nullopt);
}

// Thousands of added tokens sharing a first byte ("<image_N>"-style) over text full of that byte
// (markup): finding them must not compare every token at every position (that took ~100 s for
// these 2 MB), and the longest token at the leftmost position still wins.
TEST(Tokenizer, ManyAddedTokensOverMarkupStayFast) {
  const std::string js = edited("bpe2000_eot.json", [](json& j) {
    for (int i = 0; i < 20000; ++i) j["added_tokens"].push_back({{"id", 2000 + i}, {"content", "<t" + std::to_string(i)}});
  });
  const Tokenizer tok = Tokenizer::from_json(js, "many.json");
  EXPECT_EQ(tok.encode("<t10<t1<|endoftext|><t19999"), (std::vector<int32_t>{2010, 2001, 0, 21999}));
  const std::string text = std::string(2 << 20, '<') + "<t7";
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok.encode_parallel(text, 2, "text");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.back(), 2007);
  // Listing one twice is still refused.
  EXPECT_EQ(user_error([&] {
              Tokenizer::from_json(edited("bpe2000_eot.json", [](json& j) {
                                     j["added_tokens"].push_back({{"id", 2000}, {"content", "<|endoftext|>"}});
                                   }), "t.json");
            }),
            "t.json: field 'added_tokens[1].content' must be a token not listed twice, got \"<|endoftext|>\"");
}

TEST(Tokenizer, PrefixSpaceAndIgnoreMerges) {
  // bpe500 adds a prefix space (as GPT-2's "add_prefix_space": true does) to each segment.
  const Tokenizer tok = Tokenizer::from_file(kFixtures + "bpe500.json");
  EXPECT_EQ(tok.encode("the cat"), tok.encode(" the cat"));
  // ignore_merges: a word that is itself a token is that token, even when no merge builds it.
  json j = json::parse(read_file(kFixtures + "bpe500.json"));
  std::string longest;
  for (const auto& [t, id] : j["model"]["vocab"].items())
    if (t.size() > longest.size() && t.rfind("Ġ", 0) == 0 &&
        t.find_first_not_of("abcdefghijklmnopqrstuvwxyz", 2) == std::string::npos)
      longest = t;
  ASSERT_GT(longest.size(), 4u);
  const int32_t id = j["model"]["vocab"][longest].get<int32_t>();
  json& merges = j["model"]["merges"];
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string m = merges[i].get<std::string>();
    if (m.substr(0, m.find(' ')) + m.substr(m.find(' ') + 1) == longest) merges.erase(i);
  }
  const std::string word = " " + longest.substr(2);  // "Ġ" stands for the space byte
  EXPECT_GT(Tokenizer::from_json(j.dump(), "x").encode(word).size(), 1u);
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(Tokenizer::from_json(j.dump(), "x").encode(word), std::vector<int32_t>{id}) << word;
}

TEST(Tokenizer, ByteLevelVocabularyIsBytes) {
  const Tokenizer tok = Tokenizer::from_json(Tokenizer::byte_level_json(), "byte-level");
  EXPECT_EQ(tok.vocab_size(), 256);
  EXPECT_EQ(tok.eos_id(), std::nullopt);
  const std::string text = "Don't  stop\t123 café 東京 😀\r\n\x01";
  const std::vector<int32_t> ids = tok.encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], (unsigned char)text[i]);
  EXPECT_EQ(tok.decode(ids.data(), ids.size()), text);
  const int32_t beyond[] = {300, -1};
  EXPECT_EQ(tok.decode(beyond, 2), "\uFFFD\uFFFD");
}

// The text cut into pieces for threads encodes to the same ids as the whole: cut into pieces of
// about 1, 7 and 100 bytes, cuts fall after every kind of character the sample has.
TEST(Tokenizer, ThreadsGiveTheSameIds) {
  const std::string sample = read_file(kFixtures + "sample.txt");
  for (const char* name : {"bpe500.json", "bpe2000_eot.json"}) {
    const Tokenizer tok = Tokenizer::from_file(kFixtures + name);
    const std::vector<int32_t> whole = tok.encode(sample);
    for (size_t piece : {1, 7, 100}) {
      EXPECT_EQ(tok.encode_parallel(sample, 1, "text", {}, piece), whole) << name << " " << piece;
      EXPECT_EQ(tok.encode_parallel(sample, 3, "text", {}, piece), whole) << name << " " << piece;
    }
    EXPECT_EQ(tok.encode_parallel(sample, 2, "text"), whole) << name;
  }
}

// Cuts must not change what a segment is: after an added token the next segment gets the prefix
// space (add_prefix_space), and without the regex (use_regex false) the whole segment is one word.
TEST(Tokenizer, ThreadsGiveTheSameIdsAfterAddedTokensAndWithoutRegex) {
  const std::string text = "a<|endoftext|>\nb c<|endoftext|>\tdd ee\n\nff<|endoftext|> g";
  const std::string prefixed = edited("bpe500.json", [](json& j) {
    j["added_tokens"] = json::array({{{"id", 500}, {"content", "<|endoftext|>"}, {"special", true}}});
  });
  // A merge across the space, which only a tokenizer without the regex can apply.
  const std::string no_regex = edited("bpe2000_eot.json", [](json& j) {
    j["pre_tokenizer"]["use_regex"] = false;
    j["model"]["vocab"]["d\u0120"] = 2000;
    j["model"]["merges"].insert(j["model"]["merges"].begin(), "d \u0120");
  });
  for (const std::string& js : {prefixed, no_regex}) {
    const Tokenizer tok = Tokenizer::from_json(js, "t.json");
    const std::vector<int32_t> whole = tok.encode(text);
    for (size_t piece : {1, 2, 5})
      EXPECT_EQ(tok.encode_parallel(text, 2, "text", {}, piece), whole) << piece;
  }
}

TEST(Tokenizer, BadFilesAreOneLineNamingTheField) {
  const auto err = [](const std::string& text) {
    return user_error([&] { Tokenizer::from_json(text, "tok.json"); });
  };
  const std::string f = "bpe2000_eot.json";
  EXPECT_EQ(err(edited(f, [](json& j) { j["model"].erase("merges"); })),
            "tok.json: field 'model.merges' must be a list of merges (\"a b\" strings or [\"a\", \"b\"] pairs), got nothing (missing)");
  EXPECT_EQ(err(edited(f, [](json& j) { j["model"]["type"] = "WordPiece"; })),
            "tok.json: field 'model.type' must be \"BPE\" (byte-level BPE as GPT-2 uses it is what leasetrain reads), got \"WordPiece\"");
  EXPECT_EQ(err(edited(f, [](json& j) { j["model"]["merges"][5] = {"Ġt", "no-such-token"}; })),
            "tok.json: field 'model.merges[5]' names 'no-such-token', which is not in model.vocab");
  EXPECT_EQ(err(edited(f, [](json& j) { j["model"]["merges"][2] = "ab"; })),
            "tok.json: field 'model.merges[2]' must be \"a b\" (two tokens and one space), got \"ab\"");
  EXPECT_EQ(err(edited(f, [](json& j) { j["model"]["vocab"]["Ġt"] = -3; })),
            "tok.json: field 'model.vocab.Ġt' must be an id in [0, 16777215], got -3");
  EXPECT_EQ(err(edited(f, [](json& j) { j["model"]["vocab"]["Ġt"] = 1 << 30; })),
            "tok.json: field 'model.vocab.Ġt' must be an id in [0, 16777215], got 1073741824");
  EXPECT_EQ(err(edited(f, [](json& j) { j["added_tokens"][0]["id"] = 5; })),
            "tok.json: field 'added_tokens[0].id' must be the id of '<|endoftext|>' (id 5 is another token), got 5");
  EXPECT_EQ(err(edited(f, [](json& j) { j["added_tokens"][0]["id"] = 1 << 25; })),
            "tok.json: field 'added_tokens[0].id' must be an integer in [0, 16777215], got 33554432");
  EXPECT_EQ(err(edited(f, [](json& j) { j["normalizer"] = {{"type", "NFKC"}}; })),
            "tok.json: field 'normalizer' must be null (normalizers change the text before it is split; not supported), "
            "got {\"type\":\"NFKC\"}");
  EXPECT_EQ(err(edited(f, [](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; })),
            "tok.json: field 'pre_tokenizer' must be a ByteLevel pre-tokenizer (alone or the only one in a Sequence), "
            "got {\"type\":\"Whitespace\"}");
  EXPECT_EQ(err(edited(f, [](json& j) { j["model"]["continuing_subword_prefix"] = "##"; })),
            "tok.json: field 'model.continuing_subword_prefix' must be null or \"\" (not used by byte-level BPE; not "
            "supported), got \"##\"");
  EXPECT_EQ(err(edited(f, [](json& j) { j["added_tokens"][0]["lstrip"] = true; })),
            "tok.json: field 'added_tokens[0].lstrip' must be false (not supported), got true");
  EXPECT_EQ(err(edited(f, [](json& j) { j["decoder"] = nullptr; })),
            "tok.json: field 'decoder' must be a ByteLevel decoder, got null");
  EXPECT_EQ(err("[1, 2]"), "tok.json: expected a JSON object, got [1,2]");
  // ByteLevel inside a Sequence is read like ByteLevel alone.
  const Tokenizer seq = Tokenizer::from_json(edited(f, [](json& j) {
    j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", json::array({j["pre_tokenizer"]})}};
  }), "seq.json");
  EXPECT_EQ(seq.encode("Hello world"), Tokenizer::from_file(kFixtures + f).encode("Hello world"));
  // Text that is not UTF-8 cannot be encoded as `tokenizers` would.
  const Tokenizer tok = Tokenizer::from_file(kFixtures + f);
  EXPECT_EQ(user_error([&] { std::vector<int32_t> out; tok.encode("ok \xff", out, "in.txt"); }),
            "in.txt: invalid UTF-8 at byte 3 (a tokenizer.json tokenizer reads UTF-8 text)");
}

// ---- through the CLI ----

TEST(TokenizerCli, PrepareIsTheSameOnOneAndTwoThreads) {
  TempDir d;
  std::string text;
  const std::string sample = read_file(kFixtures + "sample.txt");
  while (text.size() < 700'000) text += sample;
  write_file(d / "in.txt", text);
  for (const char* threads : {"1", "2"}) {
    const RunResult r = run_cli("data prepare --tokenizer " + kFixtures + "bpe2000_eot.json --input " + (d / "in.txt") +
                                " --output " + (d / std::string("t") + threads) + " --threads " + threads);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.err.find("MB/s"), std::string::npos) << r.err;
  }
  EXPECT_EQ(read_file(d / "t1_train_000000.bin"), read_file(d / "t2_train_000000.bin"));
  EXPECT_EQ(read_file(d / "t1_val_000000.bin"), read_file(d / "t2_val_000000.bin"));
  // The ids are the tokenizer's, and the shards record it.
  const Tokenizer tok = Tokenizer::from_file(kFixtures + "bpe2000_eot.json");
  const std::vector<int32_t> want = tok.encode(text);
  Shard train(d / "t2_train_000000.bin"), val(d / "t2_val_000000.bin");
  ASSERT_EQ(train.size() + val.size(), want.size());
  for (size_t i = 0; i < train.size(); ++i) ASSERT_EQ(train.data()[i], want[i]) << i;
  EXPECT_EQ(read_file(d / "t2_tokenizer.json"), read_file(kFixtures + "bpe2000_eot.json"));
  EXPECT_EQ(shard_tokenizer_path(d / "t2_val_000000.bin"), d / "t2_tokenizer.json");
}

TEST(TokenizerCli, PrepareRefusesWhatShardsCannotHold) {
  TempDir d;
  write_file(d / "in.txt", "fine text\n");
  write_file(d / "bad.txt", "ok\n\xc3\x28 not UTF-8");
  // 65537 tokens do not fit uint16 ids.
  write_file(d / "big.json", edited("bpe500.json", [](json& j) { j["added_tokens"] = json::array({{{"id", 65536}, {"content", "<big>"}}}); }));
  RunResult r = run_cli("data prepare --tokenizer " + (d / "big.json") + " --input " + (d / "in.txt") + " --output " + (d / "o"));
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "leasetrain: error: prepare: tokenizer: a vocabulary of 65537 tokens does not fit llm.c shards' uint16 ids (at most 65536)\n");
  r = run_cli("data prepare --tokenizer " + kFixtures + "bpe500.json --input " + (d / "in.txt") + " " + (d / "bad.txt") +
              " --output " + (d / "o"));
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "leasetrain: error: " + (d / "bad.txt") +
                       ": invalid UTF-8 at byte 3 (a tokenizer.json tokenizer reads UTF-8 text; without --tokenizer "
                       "every byte is a token)\n");
  EXPECT_FALSE(std::filesystem::exists(d / "o_train_000000.bin"));
  // Bytes as before, now with the byte-level tokenizer beside them.
  ASSERT_EQ(run_cli("data prepare --input " + (d / "bad.txt") + " --output " + (d / "b")).code, 0);
  EXPECT_EQ(read_file(d / "b_tokenizer.json"), Tokenizer::byte_level_json());
}

// A prepare that stops after writing some shards (here: shard 1's name is taken by a directory)
// must not leave them beside the previous run's tokenizer.json, which would claim their ids.
TEST(TokenizerCli, StoppedPrepareLeavesNoOtherTokenizerBesideItsShards) {
  TempDir d;
  write_file(d / "in.txt", read_file(kFixtures + "sample.txt"));
  ASSERT_EQ(run_cli("data prepare --tokenizer " + kFixtures + "bpe500.json --input " + (d / "in.txt") + " --output " +
                    (d / "ds")).code, 0);
  ASSERT_EQ(read_file(d / "ds_tokenizer.json"), read_file(kFixtures + "bpe500.json"));
  std::filesystem::create_directories(d / "ds_train_000001.bin/x");
  const RunResult r = run_cli("data prepare --tokenizer " + kFixtures + "bpe2000_eot.json --input " + (d / "in.txt") +
                              " --output " + (d / "ds") + " --shard-tokens 100");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(read_file(d / "ds_train_000000.bin"), "");
  EXPECT_FALSE(std::filesystem::exists(d / "ds_tokenizer.json"));
  // A directory of that name is the user's: refused before any shard is written, and kept.
  std::filesystem::create_directories(d / "x_tokenizer.json");
  write_file(d / "x_tokenizer.json/keep", "mine");
  const RunResult x = run_cli("data prepare --input " + (d / "in.txt") + " --output " + (d / "x"));
  EXPECT_EQ(x.code, 2);
  EXPECT_EQ(read_file(d / "x_tokenizer.json/keep"), "mine");
  EXPECT_FALSE(std::filesystem::exists(d / "x_train_000000.bin"));
}

// A token (or any name from a file) with a newline in it is quoted into the one error line, not
// printed raw across two.
TEST(TokenizerCli, ErrorNamingATokenWithANewlineIsOneLine) {
  TempDir d;
  write_file(d / "in.txt", "hi\n");
  write_file(d / "nl.json", edited("bpe2000_eot.json", [](json& j) { j["model"]["vocab"]["x\ny\r\x01"] = -1; }));
  const RunResult r = run_cli("data prepare --tokenizer " + (d / "nl.json") + " --input " + (d / "in.txt") + " --output " +
                              (d / "o"));
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "leasetrain: error: " + (d / "nl.json") +
                       ": field 'model.vocab.x\\ny\\r\\x01' must be an id in [0, 16777215], got -1\n");
}

std::string tiny_config(const TempDir& d, const std::string& prefix, int vocab) {
  const std::string cfg = d / (prefix + ".toml");
  write_file(cfg, "[model]\nn_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 16\nvocab_size = " + std::to_string(vocab) +
                      "\n[data]\ntrain = \"" + (d / prefix) + "_train_*.bin\"\nval = \"" + (d / prefix) +
                      "_val_*.bin\"\n[optim]\nlr = 1e-3\n[train]\nmicro_batch = 2\nseq_len = 16\nsteps = 2\n"
                      "eval_interval = 2\neval_batches = 1\ncheckpoint_interval = 2\nlog_interval = 1\n");
  return cfg;
}

TEST(TokenizerCli, CheckpointCarriesTheDataTokenizer) {
  TempDir d;
  write_file(d / "in.txt", read_file(kFixtures + "sample.txt"));
  ASSERT_EQ(run_cli("data prepare --tokenizer " + kFixtures + "bpe2000_eot.json --input " + (d / "in.txt") + " --output " + (d / "bpe")).code, 0);
  RunResult r = run_cli("train --config " + tiny_config(d, "bpe", 2000) + " --out " + (d / "run"));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string ckpt = d / "run/checkpoints/step-00000002";
  EXPECT_EQ(read_file(ckpt + "/tokenizer.json"), read_file(kFixtures + "bpe2000_eot.json"));
  const json trainer = json::parse(read_file(ckpt + "/trainer.json"));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    EXPECT_EQ(trainer["files"][f].get<std::string>().size(), 64u) << f;
  const json gen = json::parse(read_file(ckpt + "/generation_config.json"));
  EXPECT_EQ(gen, json({{"bos_token_id", 0}, {"eos_token_id", 0}}));
  const json cfg = json::parse(read_file(ckpt + "/config.json"));
  EXPECT_EQ(cfg["eos_token_id"], 0);
  EXPECT_EQ(json::parse(read_file(ckpt + "/tokenizer_config.json"))["eos_token"], "<|endoftext|>");
  // sample encodes and decodes with it: the prompt comes back as it was written.
  r = run_cli("sample --checkpoint " + (d / "run") + " --prompt 'Don'\\''t stop, café' --tokens 5 --temperature 0");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Don't stop, café", 0), 0u) << r.out;
  // A vocabulary smaller than the tokenizer's is refused before training.
  r = run_cli("train --config " + tiny_config(d, "bpe", 1000) + " --out " + (d / "run2"));
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "leasetrain: error: " + (d / "bpe.toml") + ": model.vocab_size: expected at least the tokenizer's 2000 tokens (" +
                       (d / "bpe_tokenizer.json") + "), got 1000\n");
  // Starting from it on data of another tokenizer is refused; on data without one, its tokenizer
  // goes on into the new run's checkpoints.
  write_file(d / "in2.txt", read_file(kFixtures + "sample.txt"));
  ASSERT_EQ(run_cli("data prepare --tokenizer " + kFixtures + "bpe500.json --input " + (d / "in2.txt") + " --output " + (d / "other")).code, 0);
  r = run_cli("train --config " + tiny_config(d, "other", 2000) + " --out " + (d / "run3") + " --init " + ckpt);
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "leasetrain: error: " + (d / "other_tokenizer.json") + ": encodes text differently from " + ckpt +
                       "/tokenizer.json, so the shards' ids would not mean what the model learnt (prepare the data with "
                       "that tokenizer.json)\n");
  std::filesystem::remove(d / "bpe_tokenizer.json");
  r = run_cli("train --config " + tiny_config(d, "bpe", 2000) + " --out " + (d / "run4") + " --init " + ckpt);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(d / "run4/checkpoints/step-00000002/tokenizer.json"), read_file(kFixtures + "bpe2000_eot.json"));
  // The copy is sealed: a changed tokenizer.json is caught before use.
  write_file(ckpt + "/tokenizer.json", read_file(kFixtures + "bpe500.json"));
  r = run_cli("sample --checkpoint " + ckpt + " --tokens 2");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find(ckpt + "/tokenizer.json: checksum mismatch"), std::string::npos) << r.err;
}

TEST(TokenizerCli, ByteLevelRunWritesTheByteTokenizer) {
  TempDir d;
  write_file(d / "in.txt", read_file(kFixtures + "sample.txt"));
  ASSERT_EQ(run_cli("data prepare --input " + (d / "in.txt") + " --output " + (d / "b")).code, 0);
  // Shards from before tokenizers were recorded: a vocabulary of 256 is bytes.
  std::filesystem::remove(d / "b_tokenizer.json");
  const RunResult r = run_cli("train --config " + tiny_config(d, "b", 256) + " --out " + (d / "run"));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string ckpt = d / "run/checkpoints/step-00000002";
  EXPECT_EQ(read_file(ckpt + "/tokenizer.json"), Tokenizer::byte_level_json());
  EXPECT_EQ(json::parse(read_file(ckpt + "/generation_config.json")),
            json({{"bos_token_id", nullptr}, {"eos_token_id", nullptr}}));
  EXPECT_TRUE(json::parse(read_file(ckpt + "/config.json"))["eos_token_id"].is_null());
}

}  // namespace
}  // namespace lt::test
