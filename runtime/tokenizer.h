// tokenizer.json, the file Hugging Face's `tokenizers` library reads and writes, for byte-level
// BPE as GPT-2 uses it: encode text to ids and decode ids to text, token for token as `tokenizers`.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lt {

// What is supported (anything else is refused with one UserError line naming the file and field):
//   model        {"type": "BPE", vocab, merges ("a b" strings or ["a", "b"] pairs), ignore_merges,
//                unk_token}; dropout, byte_fallback, fuse_unk, continuing_subword_prefix and
//                end_of_word_suffix must be null/false/empty
//   normalizer   null (a normalizer would change the text before it is split)
//   pre_tokenizer ByteLevel {add_prefix_space, use_regex (GPT-2's pattern)}, alone or as the only
//                kind inside a Sequence
//   decoder      ByteLevel;  post_processor  null or ByteLevel (offsets only)
//   added_tokens split out of the text before pre-tokenization, leftmost-longest, as `tokenizers`
//                does; lstrip, rstrip and single_word must be false
// Encoding needs valid UTF-8 (as `tokenizers`' Python strings are); decoding returns bytes.
// The object is immutable once built, so any number of threads may encode with one.
class Tokenizer {
 public:
  // Reads and validates `path`.
  static Tokenizer from_file(const std::string& path);
  // Validates tokenizer.json text read from `source` (named in errors).
  static Tokenizer from_json(const std::string& text, const std::string& source);
  // The tokenizer.json of leasetrain's byte-level vocabulary: byte b is token b (256 tokens, no
  // merges), ByteLevel pre-tokenizer without prefix space, ByteLevel decoder.
  static std::string byte_level_json();

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Appends the ids of `text` to `out`. UserError "<what>: invalid UTF-8 at byte N" otherwise.
  void encode(std::string_view text, std::vector<int32_t>& out, const std::string& what = "text") const;
  std::vector<int32_t> encode(std::string_view text) const;
  // The same ids as encode(text), computed by `threads` threads over pieces of the text cut where
  // no token can cross (see tokenizer.cpp); `progress(done_bytes)` is called from the calling
  // thread now and then when given. Pieces are about `piece_bytes` long (tests cut small ones).
  std::vector<int32_t> encode_parallel(std::string_view text, int threads, const std::string& what,
                                       const std::function<void(size_t done, size_t total)>& progress = {},
                                       size_t piece_bytes = 256 << 10) const;
  // The bytes of ids; an id that names no token decodes to U+FFFD.
  std::string decode(const int32_t* ids, size_t n) const;

  // Whether `other` gives every text the same ids (same tokens, merges, added tokens and
  // pre-tokenizer options), whatever its file's layout.
  bool encodes_like(const Tokenizer& other) const;

  int vocab_size() const;  // the largest id + 1 over the vocabulary and the added tokens
  // The id of "<|endoftext|>" when it is a token (GPT-2's end of text), else nullopt.
  std::optional<int32_t> eos_id() const;
  // The text of the file it was read from, to copy beside shards and into checkpoints.
  const std::string& json_text() const;

  struct Impl;  // defined in tokenizer.cpp

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Offset of the first byte of `s` that is not valid UTF-8 (overlong forms, surrogates and code
// points above U+10FFFF are not), or std::string_view::npos.
size_t invalid_utf8_at(std::string_view s);

}  // namespace lt
