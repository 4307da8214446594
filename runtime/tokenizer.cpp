// tokenizer.json reader and byte-level BPE encoder/decoder, matching Hugging Face `tokenizers`
// (the pre-tokenizer regex through PCRE2, merges applied lowest rank first, leftmost on ties).
#include "runtime/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <unordered_map>

#include "runtime/error.h"
#include "runtime/input.h"

namespace lt {
namespace {

// Ids above this are refused: no vocabulary comes near it, and ids index flat tables.
constexpr int64_t kMaxTokenId = (1 << 24) - 1;
constexpr const char* kEndOfText = "<|endoftext|>";

// GPT-2's pre-tokenizer pattern, with \s and \S spelled as the class `tokenizers`' regex engine
// (Oniguruma) gives them: \t..\r, U+0085 and the Unicode separators (Z). PCRE2's own \s would
// also take U+180E, which Oniguruma does not.
#define LT_WS "\\t-\\r\\x{85}\\p{Z}"
constexpr const char* kGpt2Pattern = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" LT_WS
                                     "\\p{L}\\p{N}]+|[" LT_WS "]+(?![^" LT_WS "])|[" LT_WS "]+";
#undef LT_WS

// The same whitespace as a code point test (where encode_parallel may cut the text).
bool is_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the other 68 bytes
// for U+0100 onwards, so every byte is a visible character in vocab and merges.
std::array<uint32_t, 256> byte_to_codepoint() {
  std::array<uint32_t, 256> m{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    m[b] = printable ? b : next++;
  }
  return m;
}

void append_utf8(std::string& s, uint32_t c) {
  if (c < 0x80) {
    s += (char)c;
  } else if (c < 0x800) {
    s += (char)(0xC0 | (c >> 6));
    s += (char)(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += (char)(0xE0 | (c >> 12));
    s += (char)(0x80 | ((c >> 6) & 0x3F));
    s += (char)(0x80 | (c & 0x3F));
  } else {
    s += (char)(0xF0 | (c >> 18));
    s += (char)(0x80 | ((c >> 12) & 0x3F));
    s += (char)(0x80 | ((c >> 6) & 0x3F));
    s += (char)(0x80 | (c & 0x3F));
  }
}

// Length of the valid UTF-8 character at s[i] (1..4), or 0 when it is not one (overlong forms,
// surrogates and code points above U+10FFFF are invalid, as Rust and Python say).
size_t utf8_char_len(std::string_view s, size_t i, uint32_t* cp = nullptr) {
  const auto u = [&](size_t k) { return (unsigned char)s[k]; };
  const unsigned char c = u(i);
  if (c < 0x80) {
    if (cp) *cp = c;
    return 1;
  }
  size_t n;
  uint32_t v, lo;
  if (c >= 0xC2 && c <= 0xDF) n = 2, v = c & 0x1F, lo = 0x80;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, v = c & 0x0F, lo = 0x800;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, v = c & 0x07, lo = 0x10000;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((u(i + k) & 0xC0) != 0x80) return 0;
    v = (v << 6) | (u(i + k) & 0x3F);
  }
  if (v < lo || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  if (cp) *cp = v;
  return n;
}

}  // namespace

size_t invalid_utf8_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // ASCII runs dominate real text: skip 8 bytes at a time.
    while (i + 8 <= s.size()) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= s.size()) break;
    const size_t n = utf8_char_len(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

namespace {

// Hashing that lets a std::string_view look up std::string keys without a copy.
struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};
template <class V>
using StrMap = std::unordered_map<std::string, V, SvHash, std::equal_to<>>;

struct AddedToken {
  std::string content;
  int32_t id;
  bool normalized;
};

// The contents of one pass's added tokens as a byte trie, so finding them costs a walk as deep as
// the text matches rather than a comparison with every token at every position (thousands of
// "<...>" tokens over markup would otherwise take minutes a megabyte).
struct AddedTrie {
  std::unordered_map<uint64_t, uint32_t> edges;  // node << 8 | byte -> child node; node 0 is the root
  std::vector<int32_t> token{-1};                // node -> index of the token ending there, or -1

  void add(const std::string& content, int32_t index) {
    uint32_t node = 0;
    for (unsigned char c : content) {
      auto [it, fresh] = edges.emplace((uint64_t)node << 8 | c, (uint32_t)token.size());
      if (fresh) token.push_back(-1);
      node = it->second;
    }
    token[node] = index;
  }
  bool contains(const std::string& content) const {
    uint32_t node = 0;
    for (unsigned char c : content) {
      auto it = edges.find((uint64_t)node << 8 | c);
      if (it == edges.end()) return false;
      node = it->second;
    }
    return token[node] >= 0;
  }
};

// A compiled pattern, freed with the tokenizer.
struct Pattern {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Pattern() {
    if (code) pcre2_code_free(code);
  }
};

}  // namespace

struct Tokenizer::Impl {
  std::string json_text, source;
  // Tokens: id -> the bytes it stands for (a byte-level token's characters mapped back to bytes;
  // any other token, an added one like "<|endoftext|>", its own UTF-8), and whether id is used.
  std::vector<std::string> id_bytes;
  std::vector<bool> id_used;
  StrMap<int32_t> bytes_to_id;  // byte-level vocabulary tokens
  std::array<int32_t, 256> byte_id{};                    // the one-byte token of each byte, -1 if none
  std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>> merges;  // (a, b) -> (rank, merged id)
  std::optional<int32_t> unk;
  bool ignore_merges = false;
  bool add_prefix_space = false, use_regex = true;
  // Added tokens in the two passes `tokenizers` makes: those not normalized first, then the rest.
  std::vector<AddedToken> added[2];
  AddedTrie added_trie[2];
  Pattern pattern;
};

namespace {

// Per-thread working state: PCRE2 match data and JIT stack, and the word cache.
struct Scratch {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mc = nullptr;
  pcre2_jit_stack* js = nullptr;
  // Cache of pre-tokenized words (their bytes) -> ids, stored flat in `ids`.
  StrMap<std::pair<uint32_t, uint32_t>> cache;
  std::vector<int32_t> ids;
  // BPE working arrays.
  std::vector<int32_t> sym, prev, next;
  struct Merge {
    uint32_t rank;
    int32_t pos, id;
    bool operator>(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Merge> heap;

  explicit Scratch(const Tokenizer::Impl& t) {
    md = pcre2_match_data_create(4, nullptr);
    mc = pcre2_match_context_create(nullptr);
    LT_CHECK(md && mc, "PCRE2 allocation failed");
    if (t.pattern.jit) {
      js = pcre2_jit_stack_create(32 << 10, 8 << 20, nullptr);
      LT_CHECK(js, "PCRE2 JIT stack allocation failed");
      pcre2_jit_stack_assign(mc, nullptr, js);
    }
  }
  ~Scratch() {
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    if (js) pcre2_jit_stack_free(js);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// Words longer than this are not cached (they are rare and would crowd the cache).
constexpr size_t kMaxCachedWord = 64;
constexpr size_t kMaxCacheWords = 1 << 18;

// Byte-level BPE of one pre-tokenized word (its raw bytes), appended to `out`.
void bpe_word(const Tokenizer::Impl& t, Scratch& s, std::string_view word, std::vector<int32_t>& out) {
  if (t.ignore_merges) {
    auto it = t.bytes_to_id.find(word);
    if (it != t.bytes_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Symbols as a linked list over the word's bytes; a byte without a token is the unknown
  // token when there is one and is dropped otherwise, as `tokenizers` does.
  s.sym.clear();
  for (unsigned char b : word) {
    const int32_t id = t.byte_id[b];
    if (id >= 0) s.sym.push_back(id);
    else if (t.unk) s.sym.push_back(*t.unk);
  }
  const int32_t n = (int32_t)s.sym.size();
  if (n > 1 && !t.merges.empty()) {
    s.prev.resize(n);
    s.next.resize(n);
    for (int32_t i = 0; i < n; ++i) s.prev[i] = i - 1, s.next[i] = i + 1 < n ? i + 1 : -1;
    s.heap.clear();
    const auto push = [&](int32_t pos) {
      const int32_t nx = s.next[pos];
      if (nx < 0) return;
      auto it = t.merges.find((uint64_t)(uint32_t)s.sym[pos] << 32 | (uint32_t)s.sym[nx]);
      if (it == t.merges.end()) return;
      s.heap.push_back({it->second.first, pos, it->second.second});
      std::push_heap(s.heap.begin(), s.heap.end(), std::greater<>());
    };
    for (int32_t i = 0; i + 1 < n; ++i) push(i);
    // Lowest rank first, leftmost among equals; an entry whose pair has changed since it was
    // pushed is stale and skipped.
    while (!s.heap.empty()) {
      std::pop_heap(s.heap.begin(), s.heap.end(), std::greater<>());
      const Scratch::Merge m = s.heap.back();
      s.heap.pop_back();
      if (s.sym[m.pos] < 0) continue;  // merged away
      const int32_t nx = s.next[m.pos];
      if (nx < 0) continue;
      auto it = t.merges.find((uint64_t)(uint32_t)s.sym[m.pos] << 32 | (uint32_t)s.sym[nx]);
      if (it == t.merges.end() || it->second.second != m.id || it->second.first != m.rank) continue;
      s.sym[m.pos] = m.id;
      s.sym[nx] = -1;
      s.next[m.pos] = s.next[nx];
      if (s.next[nx] >= 0) s.prev[s.next[nx]] = m.pos;
      if (s.prev[m.pos] >= 0) push(s.prev[m.pos]);
      push(m.pos);
    }
  }
  for (int32_t i = 0; i < n; ++i)
    if (s.sym[i] >= 0) out.push_back(s.sym[i]);
}

void encode_word(const Tokenizer::Impl& t, Scratch& s, std::string_view word, std::vector<int32_t>& out) {
  if (word.size() > kMaxCachedWord) return bpe_word(t, s, word, out);
  auto it = s.cache.find(word);
  if (it != s.cache.end()) {
    out.insert(out.end(), s.ids.begin() + it->second.first, s.ids.begin() + it->second.first + it->second.second);
    return;
  }
  const size_t before = out.size();
  bpe_word(t, s, word, out);
  if (s.cache.size() >= kMaxCacheWords) s.cache.clear(), s.ids.clear();
  s.cache.emplace(std::string(word), std::make_pair((uint32_t)s.ids.size(), (uint32_t)(out.size() - before)));
  s.ids.insert(s.ids.end(), out.begin() + before, out.end());
}

// One span of text between added tokens: ByteLevel pre-tokenization (prefix space, regex split
// with the unmatched gaps kept, as `tokenizers`' Isolated split does) then BPE per piece.
void encode_segment(const Tokenizer::Impl& t, Scratch& s, std::string_view seg, bool segment_start,
                    std::vector<int32_t>& out) {
  std::string prefixed;
  if (segment_start && t.add_prefix_space && seg[0] != ' ') {
    prefixed = " ";
    prefixed += seg;
    seg = prefixed;
  }
  if (!t.use_regex) return encode_word(t, s, seg, out);
  const auto* subject = (PCRE2_SPTR)seg.data();
  size_t at = 0;
  while (at < seg.size()) {
    const int rc = t.pattern.jit ? pcre2_jit_match(t.pattern.code, subject, seg.size(), at, 0, s.md, s.mc)
                                 : pcre2_match(t.pattern.code, subject, seg.size(), at, PCRE2_NO_UTF_CHECK, s.md, s.mc);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    LT_CHECK(rc > 0, "PCRE2 match failed with code " + std::to_string(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.md);
    LT_CHECK(ov[1] > ov[0], "the pre-tokenizer pattern matched an empty string");
    if (ov[0] > at) encode_word(t, s, seg.substr(at, ov[0] - at), out);
    encode_word(t, s, seg.substr(ov[0], ov[1] - ov[0]), out);
    at = ov[1];
  }
  if (at < seg.size()) encode_word(t, s, seg.substr(at), out);
}

// Leftmost-longest occurrence of one of `tokens` in text[from, to): (position, index) or npos.
std::pair<size_t, size_t> find_added(const AddedTrie& trie, std::string_view text, size_t from, size_t to) {
  for (size_t i = from; i < to; ++i) {
    int32_t best = -1;
    uint32_t node = 0;
    for (size_t j = i; j < to; ++j) {
      auto it = trie.edges.find((uint64_t)node << 8 | (unsigned char)text[j]);
      if (it == trie.edges.end()) break;
      node = it->second;
      if (trie.token[node] >= 0) best = trie.token[node];  // deeper is longer
    }
    if (best >= 0) return {i, (size_t)best};
  }
  return {std::string_view::npos, 0};
}

// Encodes text[from, to), in which pass `pass` of the added tokens (and later ones) is still to
// be split out. `segment_start`: text[from] begins a segment (gets the prefix space when asked).
void encode_span(const Tokenizer::Impl& t, Scratch& s, std::string_view text, size_t from, size_t to, int pass,
                 bool segment_start, std::vector<int32_t>& out) {
  while (pass < 2 && t.added[pass].empty()) ++pass;
  if (pass == 2) {
    if (to > from) encode_segment(t, s, text.substr(from, to - from), segment_start, out);
    return;
  }
  size_t at = from;
  bool start = segment_start;
  while (at < to) {
    auto [pos, k] = find_added(t.added_trie[pass], text, at, to);
    if (pos == std::string_view::npos) break;
    encode_span(t, s, text, at, pos, pass + 1, start, out);
    out.push_back(t.added[pass][k].id);
    at = pos + t.added[pass][k].content.size();
    start = true;
  }
  encode_span(t, s, text, at, to, pass + 1, start, out);
}

void check_utf8(std::string_view text, size_t base, const std::string& what) {
  const size_t bad = invalid_utf8_at(text);
  if (bad != std::string_view::npos)
    throw UserError(what + ": invalid UTF-8 at byte " + std::to_string(base + bad) +
                    " (a tokenizer.json tokenizer reads UTF-8 text)");
}

// ---- reading tokenizer.json ----

bool opt_bool(const JsonFields& f, const char* key, bool dflt) { return f.has(key) ? f.boolean(key) : dflt; }

// A ByteLevel pre-tokenizer object (alone or inside a Sequence).
void read_byte_level(const JsonFields& f, Tokenizer::Impl& t) {
  t.add_prefix_space = opt_bool(f, "add_prefix_space", true);
  t.use_regex = opt_bool(f, "use_regex", true);
  opt_bool(f, "trim_offsets", true);  // offsets only
}

void read_pre_tokenizer(const JsonFields& top, Tokenizer::Impl& t) {
  const char* expected = "a ByteLevel pre-tokenizer (alone or the only one in a Sequence)";
  if (!top.has("pre_tokenizer")) top.fail("pre_tokenizer", expected);
  const JsonFields pt = top.object("pre_tokenizer");
  const std::string type = pt.string("type");
  if (type == "ByteLevel") return read_byte_level(pt, t);
  if (type != "Sequence") top.fail("pre_tokenizer", expected);
  const nlohmann::json& list = pt.array("pretokenizers");
  if (list.size() != 1 || !list[0].is_object() || list[0].value("type", "") != "ByteLevel")
    top.fail("pre_tokenizer", expected);
  read_byte_level(JsonFields(list[0], pt.source(), "pre_tokenizer.pretokenizers[0]."), t);
}

void read_model(const JsonFields& top, Tokenizer::Impl& t) {
  const JsonFields m = top.object("model");
  if (m.string("type") != "BPE") m.fail("type", "\"BPE\" (byte-level BPE as GPT-2 uses it is what leasetrain reads)");
  if (m.has("dropout")) m.fail("dropout", "null (BPE dropout is for training a tokenizer, not for encoding data)");
  if (opt_bool(m, "byte_fallback", false)) m.fail("byte_fallback", "false (byte-level BPE needs no fallback)");
  if (opt_bool(m, "fuse_unk", false)) m.fail("fuse_unk", "false (not supported)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.has(key) && !m.string(key).empty()) m.fail(key, "null or \"\" (not used by byte-level BPE; not supported)");
  t.ignore_merges = opt_bool(m, "ignore_merges", false);

  const JsonFields vocab = m.object("vocab");
  std::unordered_map<std::string, int32_t> token_id;  // vocab as written (byte-level characters)
  token_id.reserve(vocab.json().size());
  std::vector<const std::string*> id_token;
  const std::array<uint32_t, 256> b2c = byte_to_codepoint();
  std::unordered_map<uint32_t, unsigned char> c2b;
  for (int b = 0; b < 256; ++b) c2b[b2c[b]] = (unsigned char)b;
  for (const auto& [token, v] : vocab.json().items()) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxTokenId)
      vocab.fail(token, "an id in [0, " + std::to_string(kMaxTokenId) + "]");
    const int32_t id = (int32_t)v.get<int64_t>();
    if ((size_t)id >= id_token.size()) id_token.resize((size_t)id + 1, nullptr);
    if (id_token[id]) vocab.fail(token, "a unique id (" + std::to_string(id) + " is also '" + *id_token[id] + "')");
    auto [it, _] = token_id.emplace(token, id);
    id_token[id] = &it->first;
  }
  t.id_bytes.assign(id_token.size(), "");
  t.id_used.assign(id_token.size(), false);
  t.byte_id.fill(-1);
  for (const auto& [token, id] : token_id) {
    // The bytes a byte-level token stands for; a token with other characters is taken as its
    // own UTF-8 (the ByteLevel decoder does the same) and never comes out of BPE.
    std::string bytes;
    bool byte_level = true;
    for (size_t i = 0; i < token.size();) {
      uint32_t cp = 0;
      const size_t n = utf8_char_len(token, i, &cp);
      if (n == 0) vocab.fail(token, "a UTF-8 token");
      auto it = c2b.find(cp);
      if (it == c2b.end()) byte_level = false;
      else bytes += (char)it->second;
      i += n;
    }
    t.id_used[id] = true;
    t.id_bytes[id] = byte_level ? bytes : token;
    if (byte_level && !bytes.empty()) {
      t.bytes_to_id.emplace(bytes, id);
      if (bytes.size() == 1) t.byte_id[(unsigned char)bytes[0]] = id;
    }
  }

  if (m.has("unk_token")) {
    const std::string unk = m.string("unk_token");
    auto it = token_id.find(unk);
    if (it == token_id.end()) m.fail("unk_token", "a token of the vocabulary");
    t.unk = it->second;
  }

  if (!m.has("merges")) m.fail("merges", "a list of merges (\"a b\" strings or [\"a\", \"b\"] pairs)");
  const nlohmann::json& merges = m.array("merges");
  t.merges.reserve(merges.size());
  const auto lookup = [&](const std::string& tok, size_t rank) {
    auto it = token_id.find(tok);
    if (it == token_id.end())
      throw UserError(m.source() + ": field 'model.merges[" + std::to_string(rank) + "]' names '" + tok +
                      "', which is not in model.vocab");
    return it->second;
  };
  for (size_t r = 0; r < merges.size(); ++r) {
    const nlohmann::json& e = merges[r];
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() || s.find(' ', sp + 1) != std::string::npos)
        throw UserError(m.source() + ": field 'model.merges[" + std::to_string(r) +
                        "]' must be \"a b\" (two tokens and one space), got " + json_excerpt(e));
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>(), b = e[1].get<std::string>();
    } else {
      throw UserError(m.source() + ": field 'model.merges[" + std::to_string(r) +
                      "]' must be \"a b\" or [\"a\", \"b\"], got " + json_excerpt(e));
    }
    const int32_t ia = lookup(a, r), ib = lookup(b, r), im = lookup(a + b, r);
    const uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    if (!t.merges.emplace(key, std::make_pair((uint32_t)r, im)).second)
      throw UserError(m.source() + ": field 'model.merges[" + std::to_string(r) + "]' repeats the merge '" + a +
                      "' '" + b + "'");
  }
}

void read_added_tokens(const JsonFields& top, Tokenizer::Impl& t) {
  if (!top.has("added_tokens")) return;
  const nlohmann::json& list = top.array("added_tokens");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string prefix = "added_tokens[" + std::to_string(i) + "].";
    const JsonFields a(list[i], top.source(), prefix);
    const int64_t id = a.integer("id", 0, kMaxTokenId);
    const std::string content = a.string("content");
    if (content.empty()) a.fail("content", "a non-empty string");
    if (invalid_utf8_at(content) != std::string_view::npos) a.fail("content", "UTF-8 text");
    for (const char* key : {"lstrip", "rstrip", "single_word"})
      if (opt_bool(a, key, false)) a.fail(key, "false (not supported)");
    const bool normalized = opt_bool(a, "normalized", false);
    if ((size_t)id < t.id_used.size() && t.id_used[id]) {
      // Already a vocabulary token: it must be this one (GPT-2's <|endoftext|> is both).
      if (t.id_bytes[id] != content)
        a.fail("id", "the id of '" + content + "' (id " + std::to_string(id) + " is another token)");
    } else {
      if ((size_t)id >= t.id_bytes.size()) t.id_bytes.resize((size_t)id + 1), t.id_used.resize((size_t)id + 1);
      t.id_bytes[id] = content;
      t.id_used[id] = true;
    }
    if (t.added_trie[0].contains(content) || t.added_trie[1].contains(content))
      a.fail("content", "a token not listed twice");
    const int pass = normalized ? 1 : 0;
    t.added_trie[pass].add(content, (int32_t)t.added[pass].size());
    t.added[pass].push_back({content, (int32_t)id, normalized});
  }
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  return from_json(read_regular_file(path, "tokenizer"), path);
}

Tokenizer Tokenizer::from_json(const std::string& text, const std::string& source) {
  auto t = std::make_unique<Impl>();
  t->json_text = text;
  t->source = source;
  const nlohmann::json j = parse_json(text, source);
  const JsonFields top(j, source);
  if (!top.has("model")) top.fail("model", "a BPE model object (is this a tokenizer.json of the `tokenizers` library?)");
  if (top.has("truncation")) top.fail("truncation", "null (encoding for training data keeps every token)");
  if (top.has("padding")) top.fail("padding", "null (encoding for training data adds no padding)");
  if (top.has("normalizer")) {
    const nlohmann::json& n = top.raw("normalizer");
    const bool empty_sequence = n.is_object() && n.value("type", "") == "Sequence" && n.contains("normalizers") &&
                                n["normalizers"].is_array() && n["normalizers"].empty();
    if (!empty_sequence) top.fail("normalizer", "null (normalizers change the text before it is split; not supported)");
  }
  read_pre_tokenizer(top, *t);
  if (!top.has("decoder") || !top.raw("decoder").is_object() || top.raw("decoder").value("type", "") != "ByteLevel")
    top.fail("decoder", "a ByteLevel decoder");
  if (top.has("post_processor")) {
    const nlohmann::json& p = top.raw("post_processor");
    if (!p.is_object() || p.value("type", "") != "ByteLevel")
      top.fail("post_processor", "null or ByteLevel (processors that add tokens are not supported)");
  }
  read_model(top, *t);
  read_added_tokens(top, *t);

  int errcode = 0;
  PCRE2_SIZE erroff = 0;
  t->pattern.code = pcre2_compile((PCRE2_SPTR)kGpt2Pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &errcode,
                                  &erroff, nullptr);
  LT_CHECK(t->pattern.code, "PCRE2 could not compile GPT-2's pattern (error " + std::to_string(errcode) + ")");
  t->pattern.jit = pcre2_jit_compile(t->pattern.code, PCRE2_JIT_COMPLETE) == 0;
  return Tokenizer(std::move(t));
}

std::string Tokenizer::byte_level_json() {
  const std::array<uint32_t, 256> b2c = byte_to_codepoint();
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    append_utf8(s, b2c[b]);
    vocab[s] = b;
  }
  const nlohmann::ordered_json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", true}};
  const nlohmann::ordered_json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", nlohmann::ordered_json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", byte_level},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", nlohmann::ordered_json::array()}}},
  };
  return j.dump(2) + "\n";
}

void Tokenizer::encode(std::string_view text, std::vector<int32_t>& out, const std::string& what) const {
  check_utf8(text, 0, what);
  Scratch s(*impl_);
  encode_span(*impl_, s, text, 0, text.size(), 0, true, out);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  encode(text, out);
  return out;
}

// The text is cut where no token and no pre-tokenized word can cross, so the pieces encode to
// exactly the ids of the whole: between a non-whitespace character and an ASCII whitespace byte.
// Every alternative of GPT-2's pattern that matches a non-whitespace character matches only
// non-whitespace after it, and no alternative looks behind, so a word ends at such a point and
// the next starts there whatever came before; the piece after the cut continues its segment (no
// prefix space). A cut is skipped where an added token occurs across it or ends at it (the text
// after an added token is a new segment, which add_prefix_space changes). Without the regex
// (use_regex false) a segment is one word, so the text is not cut at all.
std::vector<int32_t> Tokenizer::encode_parallel(std::string_view text, int threads, const std::string& what,
                                                const std::function<void(size_t, size_t)>& progress,
                                                size_t piece_bytes) const {
  check_utf8(text, 0, what);
  const Impl& t = *impl_;
  const size_t kChunk = std::max<size_t>(piece_bytes, 1);
  std::vector<size_t> cuts = {0};
  while (t.use_regex && cuts.back() + kChunk < text.size()) {
    size_t cut = 0;
    for (size_t p = cuts.back() + kChunk; p < text.size() && cut == 0; ++p) {
      const unsigned char c = (unsigned char)text[p];
      if (!(c == ' ' || (c >= '\t' && c <= '\r'))) continue;
      size_t q = p - 1;  // the character before p
      while (q > 0 && ((unsigned char)text[q] & 0xC0) == 0x80) --q;
      uint32_t cp = 0;
      if (utf8_char_len(text, q, &cp) == 0 || is_space(cp)) continue;
      bool crossed = false;
      for (int pass = 0; pass < 2 && !crossed; ++pass)
        for (const AddedToken& a : t.added[pass])
          for (size_t k = 1; k <= a.content.size() && !crossed; ++k)
            crossed = p >= k && text.compare(p - k, a.content.size(), a.content) == 0;
      if (!crossed) cut = p;
    }
    if (cut == 0) break;  // nowhere left to cut
    cuts.push_back(cut);
  }
  cuts.push_back(text.size());
  const size_t n_chunks = cuts.size() - 1;
  std::vector<std::vector<int32_t>> parts(n_chunks);
  std::atomic<size_t> next{0}, done_bytes{0};
  std::mutex mu;
  std::condition_variable finished_cv;
  int finished = 0;
  std::exception_ptr err;
  const auto work = [&] {
    try {
      Scratch s(t);
      for (size_t i; (i = next.fetch_add(1)) < n_chunks;) {
        encode_span(t, s, text, cuts[i], cuts[i + 1], 0, i == 0, parts[i]);
        done_bytes += cuts[i + 1] - cuts[i];
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!err) err = std::current_exception();
      next = n_chunks;
    }
    std::lock_guard<std::mutex> lock(mu);
    ++finished;
    finished_cv.notify_all();
  };
  const int n_threads = (int)std::min<size_t>(std::max(threads, 1), n_chunks);
  std::vector<std::thread> pool;
  for (int i = 0; i < n_threads; ++i) pool.emplace_back(work);
  {
    std::unique_lock<std::mutex> lock(mu);
    while (!finished_cv.wait_for(lock, std::chrono::seconds(2), [&] { return finished == n_threads; }))
      if (progress) progress(done_bytes.load(), text.size());
  }
  for (std::thread& th : pool) th.join();
  if (err) std::rethrow_exception(err);
  size_t total = 0;
  for (const auto& p : parts) total += p.size();
  std::vector<int32_t> out;
  out.reserve(total);
  for (auto& p : parts) {
    out.insert(out.end(), p.begin(), p.end());
    std::vector<int32_t>().swap(p);
  }
  return out;
}

std::string Tokenizer::decode(const int32_t* ids, size_t n) const {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = ids[i];
    if (id >= 0 && (size_t)id < impl_->id_bytes.size() && impl_->id_used[id]) out += impl_->id_bytes[id];
    else out += "\xEF\xBF\xBD";  // U+FFFD
  }
  return out;
}

bool Tokenizer::encodes_like(const Tokenizer& other) const {
  const Impl &a = *impl_, &b = *other.impl_;
  const auto same_added = [](const std::vector<AddedToken>& x, const std::vector<AddedToken>& y) {
    return std::equal(x.begin(), x.end(), y.begin(), y.end(),
                      [](const AddedToken& p, const AddedToken& q) { return p.content == q.content && p.id == q.id; });
  };
  return a.id_bytes == b.id_bytes && a.id_used == b.id_used && a.merges == b.merges && a.unk == b.unk &&
         a.ignore_merges == b.ignore_merges && a.add_prefix_space == b.add_prefix_space && a.use_regex == b.use_regex &&
         same_added(a.added[0], b.added[0]) && same_added(a.added[1], b.added[1]);
}

int Tokenizer::vocab_size() const { return (int)impl_->id_bytes.size(); }

std::optional<int32_t> Tokenizer::eos_id() const {
  for (int p = 0; p < 2; ++p)
    for (const AddedToken& a : impl_->added[p])
      if (a.content == kEndOfText) return a.id;
  auto it = impl_->bytes_to_id.find(kEndOfText);
  if (it != impl_->bytes_to_id.end()) return it->second;
  return std::nullopt;
}

const std::string& Tokenizer::json_text() const { return impl_->json_text; }

}  // namespace lt
