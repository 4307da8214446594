// Training data: llm.c token shards (read by memory map, written atomically), the shuffled
// training loader, the sequential validation loader and the byte-level text tokenizer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lt {

class Tokenizer;

// llm.c shard format: 256 little-endian int32 header words, then `count` uint16 tokens.
inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 256 * sizeof(int32_t);

// The files matching a POSIX glob pattern, sorted bytewise (not by locale), so every rank and
// every run sees the same order. UserError "PATTERN: no files match" when nothing matches.
std::vector<std::string> glob_files(const std::string& pattern);

// One shard, memory-mapped read-only and validated on open: a bad magic, version or a file
// shorter than its header says is a UserError naming the file and the header field.
class Shard {
 public:
  explicit Shard(const std::string& path);
  ~Shard();
  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&& other) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::string& path() const { return path_; }
  size_t size() const { return n_tokens_; }         // tokens
  const uint16_t* data() const { return tokens_; }  // [size()]

 private:
  void unmap();
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint16_t* tokens_ = nullptr;
  size_t n_tokens_ = 0;
};

// UserError "FILE: token id 300 at position 17 is outside the vocabulary (256)" on the first
// token >= vocab_size.
void check_vocab(const Shard& shard, int vocab_size);

// Writes a shard to PATH.tmp, fsyncs it and renames it over PATH, so PATH is either the old
// file or the complete new one. I/O failures are a UserError naming PATH.
void write_shard(const std::string& path, const uint16_t* tokens, size_t n);

// Training samples. A sample is a window of T+1 tokens starting at k*T inside one shard
// (k = 0 .. (n-1)/T - 1, so windows never cross a shard boundary); the dataset is every window
// of every shard in file-name order. Each epoch visits all windows once in a permutation
// seeded by (seed, epoch), from our own PRNG so it is the same with every standard library.
//
// The stream is global: a call consumes world*B samples and rank r gets samples
// [r*B, (r+1)*B) of them, so N ranks of B see exactly what 1 rank of N*B sees, and the data
// position (samples consumed) carries over when a run resumes on a different world size.
class DataLoader {
 public:
  // Opens every shard matching glob_pattern and checks its tokens against vocab_size.
  DataLoader(const std::string& glob_pattern, int T, int vocab_size, uint64_t seed);

  // Fills inputs[B,T] and targets[B,T] (inputs shifted by one) with this rank's samples.
  void next_batch(int32_t* inputs, int32_t* targets, int B, int rank = 0, int world = 1);

  int T() const { return T_; }
  uint64_t seed() const { return seed_; }
  uint64_t samples_per_epoch() const { return n_windows_; }
  uint64_t position() const { return position_; }  // samples consumed, all ranks together
  uint64_t epoch() const { return position_ / n_windows_; }
  uint64_t num_tokens() const;  // over all shards
  const std::vector<Shard>& shards() const { return shards_; }

  // {seed, T, epoch, position, shards: [{path, tokens}]}. load_state restores seed and
  // position; a different T or shard set (file names and token counts, not directories, so
  // the data may move) is a UserError "SOURCE: PREFIXFIELD: ..." (a checkpoint passes its
  // trainer.json and "data."); every field is read through JsonFields (runtime/input.h).
  nlohmann::json state() const;
  void load_state(const nlohmann::json& state, const std::string& source = "data state",
                  const std::string& prefix = "");

 private:
  uint32_t window_at(uint64_t sample);  // global window index of the sample-th sample

  int T_;
  uint64_t seed_;
  std::vector<Shard> shards_;
  std::vector<uint64_t> first_window_;  // [shards+1] prefix sums of windows per shard
  uint64_t n_windows_ = 0;
  uint64_t position_ = 0;
  std::vector<uint32_t> perm_;        // the permutation of epoch perm_epoch_
  uint64_t perm_epoch_ = UINT64_MAX;  // none yet
};

// Validation batches in llm.c's convention: the FIRST shard only, read from its start in
// non-overlapping windows (row b of batch i starts at i*B*T + b*T and holds T+1 tokens), so
// every evaluation sees the same tokens whatever the training data does.
class EvalLoader {
 public:
  EvalLoader(const std::string& glob_pattern, int vocab_size);
  // false, with nothing written, once the next full batch would run past the shard's end.
  bool next_batch(int32_t* inputs, int32_t* targets, int B, int T);
  void reset() { position_ = 0; }
  size_t num_batches(int B, int T) const;  // full batches per pass
  const Shard& shard() const { return shard_; }

 private:
  Shard shard_;
  size_t position_ = 0;  // tokens
};

// Byte-level tokenizer: a token is a byte value, vocabulary 256.
inline constexpr int kByteVocab = 256;
std::vector<int32_t> encode_bytes(std::string_view text);
// Ids outside [0, 256) (a model's padding rows) decode to U+FFFD.
std::string decode_bytes(const int32_t* tokens, int n);

struct ShardSummary {
  std::string path;
  size_t tokens = 0;
};

// Tokenizes the input files (concatenated in order) into PREFIX_train_000000.bin, ... and
// PREFIX_val_000000.bin, ..., splitting every shard_tokens: bytes as tokens when `tokenizer` is
// null, else `tokenizer`'s ids (its vocabulary must fit uint16; the text must be UTF-8; encoded by
// `threads` threads, the same ids for any count). Validation is the LAST val_fraction of the
// tokens, so training never sees it; 0 writes no val shards. Writes the tokenizer.json the shards
// were made with to PREFIX_tokenizer.json (the byte-level one for bytes). Every input is read
// and tokenized before anything is written, so a missing one (UserError naming it) leaves no
// output; stale PREFIX_{train,val}_NNNNNN.bin from an earlier, larger run are removed so a glob
// does not pick them up. Creates PREFIX's directory. With `progress`, stderr gets a line every
// so often on inputs of 64 MB or more, and the throughput at the end. Returns the shards written.
std::vector<ShardSummary> prepare_text_shards(const std::vector<std::string>& inputs,
                                              const std::string& output_prefix,
                                              double val_fraction = 0.1,
                                              size_t shard_tokens = 100'000'000,
                                              const Tokenizer* tokenizer = nullptr, int threads = 1,
                                              bool progress = false);

// Token ids in shards are uint16.
inline constexpr int kMaxShardVocab = 65536;
inline constexpr const char* kShardTokenizerSuffix = "_tokenizer.json";

// The tokenizer.json recorded for shard PREFIX_{train,val}_NNNNNN.bin: PREFIX_tokenizer.json;
// "" for a shard named otherwise.
std::string shard_tokenizer_path(const std::string& shard_path);

struct ShardsTokenizer {
  std::string path, json_text;
};
// The tokenizer recorded for a set of shards (shard_tokenizer_path of each, where present);
// nullopt when none has one; UserError when two shards' tokenizers differ.
std::optional<ShardsTokenizer> find_shards_tokenizer(const std::vector<std::string>& shard_paths);

}  // namespace lt
