// Token shards, the training and validation loaders and the byte tokenizer (see data.h).
#include "runtime/data.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/memory.h"
#include "runtime/safe_path.h"
#include "runtime/tokenizer.h"

// Tokens are read straight out of the mapping and written straight from memory.
static_assert(std::endian::native == std::endian::little, "shards are little-endian");

namespace lt {
namespace {

std::string errno_str() { return std::strerror(errno); }

int32_t read_le32(const unsigned char* p) {
  return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                   (uint32_t)p[3] << 24);
}

void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t w = ::write(fd, p, bytes);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw UserError(path + ": cannot write: " + errno_str());
    p += w;
    bytes -= (size_t)w;
  }
}

// splitmix64 (Steele, Lea, Flood 2014): tiny, fully specified, good enough to shuffle with.
struct SplitMix64 {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound) without modulo bias: reject the low values that would wrap unevenly.
  uint64_t below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      uint64_t r = next();
      if (r >= threshold) return r % bound;
    }
  }
};

std::vector<unsigned char> read_file_bytes(const std::string& path) {
  const int fd = open_regular_file(path, "input");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const std::string err = errno_str();
    ::close(fd);
    throw UserError(path + ": cannot stat input: " + err);
  }
  std::vector<unsigned char> bytes((size_t)st.st_size);
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t r = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      std::string err = errno_str();
      ::close(fd);
      throw UserError(path + ": cannot read: " + err);
    }
    if (r == 0) break;  // the file shrank under us; keep what is there
    got += (size_t)r;
  }
  ::close(fd);
  bytes.resize(got);
  return bytes;
}

std::string shard_name(const std::string& prefix, const char* split, size_t index) {
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, "_%s_%06zu.bin", split, index);
  return prefix + suffix;
}

}  // namespace

// ---- shards ----

std::vector<std::string> glob_files(const std::string& pattern) {
  glob_t g{};
  int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> files;
  if (rc == 0) files.assign(g.gl_pathv, g.gl_pathv + g.gl_pathc);
  ::globfree(&g);
  if (rc == GLOB_NOMATCH || (rc == 0 && files.empty()))
    throw UserError(pattern + ": no files match");
  if (rc != 0) throw UserError(pattern + ": cannot read the directories the pattern names");
  // glob sorts with strcoll; bytewise order keeps shard order independent of the locale.
  std::sort(files.begin(), files.end());
  return files;
}

Shard::Shard(const std::string& path) : path_(path) {
  // A FIFO, device or directory matched by a glob is refused here, without blocking.
  const int fd = open_regular_file(path, "shard");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const std::string err = errno_str();
    ::close(fd);
    throw UserError(path + ": cannot stat shard: " + err);
  }
  const size_t bytes = (size_t)st.st_size;
  if (bytes < kShardHeaderBytes) {
    ::close(fd);
    throw UserError(path + ": header: the file holds " + std::to_string(bytes) +
                    " bytes, fewer than the " + std::to_string(kShardHeaderBytes) + "-byte header");
  }
  void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file open
  if (map == MAP_FAILED) throw UserError(path + ": cannot map: " + errno_str());
  map_ = map;
  map_bytes_ = bytes;

  const auto* h = static_cast<const unsigned char*>(map);
  const int32_t magic = read_le32(h), version = read_le32(h + 4), count = read_le32(h + 8);
  std::string err;
  if (magic != kShardMagic) {
    err =
        "header magic: expected " + std::to_string(kShardMagic) + ", got " + std::to_string(magic);
  } else if (version != kShardVersion) {
    err = "header version: expected " + std::to_string(kShardVersion) + ", got " +
          std::to_string(version);
  } else if (count < 0) {
    err = "token count: header says " + std::to_string(count) + " tokens";
  } else if ((size_t)count * 2 != bytes - kShardHeaderBytes) {
    // Exactly: bytes past the count are a shard cut short by a rewrite or a wrong header, and
    // training on the count alone would silently leave them out (llm.c refuses them too).
    err = "token count: header says " + std::to_string(count) + " tokens (" +
          std::to_string((size_t)count * 2) + " bytes) but the file holds " +
          std::to_string(bytes - kShardHeaderBytes) + " bytes after the header";
  }
  if (!err.empty()) {
    unmap();  // the destructor does not run when a constructor throws
    throw UserError(path + ": " + err);
  }
  tokens_ = reinterpret_cast<const uint16_t*>(h + kShardHeaderBytes);
  n_tokens_ = (size_t)count;
}

Shard::~Shard() { unmap(); }

void Shard::unmap() {
  if (map_) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  tokens_ = nullptr;
  n_tokens_ = 0;
}

Shard::Shard(Shard&& o) noexcept
    : path_(std::move(o.path_)),
      map_(o.map_),
      map_bytes_(o.map_bytes_),
      tokens_(o.tokens_),
      n_tokens_(o.n_tokens_) {
  o.map_ = nullptr;
  o.unmap();
}

Shard& Shard::operator=(Shard&& o) noexcept {
  if (this != &o) {
    unmap();
    path_ = std::move(o.path_);
    map_ = o.map_;
    map_bytes_ = o.map_bytes_;
    tokens_ = o.tokens_;
    n_tokens_ = o.n_tokens_;
    o.map_ = nullptr;
    o.unmap();
  }
  return *this;
}

void check_vocab(const Shard& shard, int vocab_size) {
  const uint16_t* t = shard.data();
  const size_t n = shard.size();
  // Ids are uint16, so a vocabulary of 65536 or more admits every token.
  if (vocab_size > 65535) return;
  const uint16_t limit = (uint16_t)std::max(vocab_size, 0);
  for (size_t i = 0; i < n; ++i) {
    if (t[i] >= limit) {
      throw UserError(shard.path() + ": token id " + std::to_string(t[i]) + " at position " +
                      std::to_string(i) + " is outside the vocabulary (" +
                      std::to_string(vocab_size) + ")");
    }
  }
}

void write_shard(const std::string& path, const uint16_t* tokens, size_t n) {
  if (n > (size_t)std::numeric_limits<int32_t>::max())
    throw UserError(path + ": token count: " + std::to_string(n) +
                    " tokens do not fit the header's int32");
  int32_t header[256] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = (int32_t)n;

  // Through the one path resolver (safe_path.h): a link left at PATH.tmp or PATH is replaced,
  // never written through to wherever it points.
  const std::filesystem::path p(path);
  const WriteRoot root(p.parent_path().empty() ? "." : p.parent_path().string());
  const std::string name = p.filename().string(), tmp = name + ".tmp";
  // A stale file or link is removed; a directory of that name is the user's and is refused.
  if (::unlinkat(root.fd(), tmp.c_str(), 0) != 0 && errno != ENOENT)
    throw UserError(root.display(tmp) + ": cannot remove the stale temporary file: " + errno_str());
  try {
    Fd fd = root.open_file(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    write_all(fd.get(), header, sizeof header, root.display(tmp));
    write_all(fd.get(), tokens, n * sizeof(uint16_t), root.display(tmp));
    // Data must be on disk before the rename publishes it, or a crash can leave PATH empty.
    if (::fsync(fd.get()) != 0) throw UserError(root.display(tmp) + ": cannot sync: " + errno_str());
    fd.close_checked(root.display(tmp));
    root.rename(tmp, name);
  } catch (...) {
    ::unlinkat(root.fd(), tmp.c_str(), 0);
    throw;
  }
  // Persist the rename itself; failure here loses durability, not correctness, so ignore it.
  ::fsync(root.fd());
}

// ---- training loader ----

DataLoader::DataLoader(const std::string& glob_pattern, int T, int vocab_size, uint64_t seed)
    : T_(T), seed_(seed) {
  if (T < 1)
    throw UserError("data: T (sequence length) must be at least 1, got " + std::to_string(T));
  first_window_.push_back(0);
  for (const std::string& path : glob_files(glob_pattern)) {
    Shard s(path);
    check_vocab(s, vocab_size);
    const uint64_t windows = s.size() > 0 ? (s.size() - 1) / (uint64_t)T : 0;
    first_window_.push_back(first_window_.back() + windows);
    shards_.push_back(std::move(s));
  }
  n_windows_ = first_window_.back();
  if (n_windows_ == 0)
    throw UserError(glob_pattern + ": no shard holds T+1 = " + std::to_string(T + 1) +
                    " tokens, so there is no training sample");
  // The permutation stores uint32 indices to halve its memory; 2^32 windows of T=1024 would
  // be 4.4e12 tokens, far beyond any data set this harness is for.
  if (n_windows_ > std::numeric_limits<uint32_t>::max())
    throw UserError(glob_pattern + ": " + std::to_string(n_windows_) +
                    " windows exceed the loader's limit of 2^32-1; use a longer T");
  require_memory(n_windows_ * sizeof(uint32_t), Device::CPU, 0,
                 "data: the shuffle of " + std::to_string(n_windows_) + " windows of " + glob_pattern);
}

uint64_t DataLoader::num_tokens() const {
  uint64_t n = 0;
  for (const Shard& s : shards_) n += s.size();
  return n;
}

uint32_t DataLoader::window_at(uint64_t sample) {
  const uint64_t epoch = sample / n_windows_;
  if (epoch != perm_epoch_) {
    // Fisher-Yates by hand: std::shuffle's output differs between standard libraries.
    perm_.resize(n_windows_);
    for (uint64_t i = 0; i < n_windows_; ++i) perm_[i] = (uint32_t)i;
    SplitMix64 seeder{seed_};
    SplitMix64 rng{seeder.next() ^ (epoch * 0xD1B54A32D192ED03ull)};
    rng.next();  // decorrelate neighbouring epochs' first draws
    for (uint64_t i = n_windows_ - 1; i > 0; --i) std::swap(perm_[i], perm_[rng.below(i + 1)]);
    perm_epoch_ = epoch;
  }
  return perm_[sample % n_windows_];
}

void DataLoader::next_batch(int32_t* inputs, int32_t* targets, int B, int rank, int world) {
  const std::string args = "B=" + std::to_string(B) + " rank=" + std::to_string(rank) +
                           " world=" + std::to_string(world);
  LT_CHECK(B > 0 && world > 0 && rank >= 0 && rank < world, args);
  const uint64_t first = position_ + (uint64_t)rank * B;
  for (int b = 0; b < B; ++b) {
    const uint64_t w = window_at(first + b);
    // The shard holding window w: the last shard whose first window is <= w.
    const auto after = std::upper_bound(first_window_.begin(), first_window_.end(), w);
    const size_t s = (size_t)(after - first_window_.begin()) - 1;
    const uint16_t* tok = shards_[s].data() + (w - first_window_[s]) * (uint64_t)T_;
    int32_t* in = inputs + (size_t)b * T_;
    int32_t* tg = targets + (size_t)b * T_;
    for (int t = 0; t < T_; ++t) {
      in[t] = tok[t];
      tg[t] = tok[t + 1];
    }
  }
  position_ += (uint64_t)world * B;
}

nlohmann::json DataLoader::state() const {
  nlohmann::json shards = nlohmann::json::array();
  for (const Shard& s : shards_) shards.push_back({{"path", s.path()}, {"tokens", s.size()}});
  return {
      {"seed", seed_}, {"T", T_}, {"epoch", epoch()}, {"position", position_}, {"shards", shards}};
}

void DataLoader::load_state(const nlohmann::json& st, const std::string& source, const std::string& prefix) {
  const std::string at = source + ": " + prefix;
  auto present = [&](const char* name) {
    if (!st.is_object() || !st.contains(name)) throw UserError(at + name + ": missing");
  };
  for (const char* name : {"T", "shards", "seed", "position", "epoch"}) present(name);
  const JsonFields f(st, source, prefix);

  const uint64_t T = f.unsigned_integer("T");
  if (T != (uint64_t)T_)
    throw UserError(at + "T: the state was saved with T=" + std::to_string(T) + " but this loader has T=" +
                    std::to_string(T_));

  const nlohmann::json& shards = f.array("shards");
  if (shards.size() != shards_.size())
    throw UserError(at + "shards: the state lists " + std::to_string(shards.size()) +
                    " shards but the pattern matches " + std::to_string(shards_.size()));
  for (size_t i = 0; i < shards_.size(); ++i) {
    const std::string where = at + "shards[" + std::to_string(i) + "]: ";
    if (!shards[i].is_object()) throw UserError(where + "expected {path, tokens}, got " + json_excerpt(shards[i]));
    const JsonFields e(shards[i], source, prefix + "shards[" + std::to_string(i) + "].");
    // Names, not directories: a data set copied elsewhere is the same data.
    const std::string saved = std::filesystem::path(e.string("path")).filename();
    const std::string have = std::filesystem::path(shards_[i].path()).filename();
    const uint64_t saved_tokens = e.unsigned_integer("tokens");
    if (saved != have || saved_tokens != shards_[i].size())
      throw UserError(where + "the state has " + saved + " (" + std::to_string(saved_tokens) +
                      " tokens) but the data has " + have + " (" +
                      std::to_string(shards_[i].size()) + " tokens)");
  }

  const uint64_t seed = f.unsigned_integer("seed");
  const uint64_t position = f.unsigned_integer("position");
  const uint64_t epoch = f.unsigned_integer("epoch");
  if (epoch != position / n_windows_)
    throw UserError(at + "epoch: " + std::to_string(epoch) + " does not match position " +
                    std::to_string(position) + " (epoch " + std::to_string(position / n_windows_) +
                    " at " + std::to_string(n_windows_) + " samples per epoch)");
  seed_ = seed;
  position_ = position;
  perm_epoch_ = UINT64_MAX;  // the seed may have changed
}

// ---- validation loader ----

EvalLoader::EvalLoader(const std::string& glob_pattern, int vocab_size)
    : shard_(glob_files(glob_pattern).front()) {
  check_vocab(shard_, vocab_size);
}

bool EvalLoader::next_batch(int32_t* inputs, int32_t* targets, int B, int T) {
  LT_CHECK(B > 0 && T > 0, "B=" + std::to_string(B) + " T=" + std::to_string(T));
  const size_t span = (size_t)B * T;
  if (position_ + span + 1 > shard_.size()) return false;
  const uint16_t* tok = shard_.data() + position_;
  for (size_t i = 0; i < span; ++i) {
    inputs[i] = tok[i];
    targets[i] = tok[i + 1];
  }
  position_ += span;
  return true;
}

size_t EvalLoader::num_batches(int B, int T) const {
  const size_t span = (size_t)B * T;
  return shard_.size() > 0 ? (shard_.size() - 1) / span : 0;
}

// ---- byte tokenizer ----

std::vector<int32_t> encode_bytes(std::string_view text) {
  std::vector<int32_t> out(text.size());
  for (size_t i = 0; i < text.size(); ++i) out[i] = (unsigned char)text[i];
  return out;
}

std::string decode_bytes(const int32_t* tokens, int n) {
  std::string out;
  out.reserve(n > 0 ? n : 0);
  for (int i = 0; i < n; ++i) {
    if (tokens[i] >= 0 && tokens[i] < kByteVocab)
      out.push_back((char)tokens[i]);
    else
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
  }
  return out;
}

std::vector<ShardSummary> prepare_text_shards(const std::vector<std::string>& inputs,
                                              const std::string& output_prefix, double val_fraction,
                                              size_t shard_tokens, const Tokenizer* tokenizer, int threads,
                                              bool progress) {
  if (inputs.empty()) throw UserError("prepare: inputs: no input files given");
  if (output_prefix.empty()) throw UserError("prepare: output: the prefix is empty");
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    throw UserError("prepare: val_fraction: expected a value in [0, 1), got " +
                    std::to_string(val_fraction));
  if (shard_tokens < 1 || shard_tokens > (size_t)std::numeric_limits<int32_t>::max())
    throw UserError("prepare: shard_tokens: expected 1 .. 2147483647, got " +
                    std::to_string(shard_tokens));
  // Shards hold uint16 ids.
  if (tokenizer && tokenizer->vocab_size() > kMaxShardVocab)
    throw UserError("prepare: tokenizer: a vocabulary of " + std::to_string(tokenizer->vocab_size()) +
                    " tokens does not fit llm.c shards' uint16 ids (at most " + std::to_string(kMaxShardVocab) + ")");

  // Read everything before writing anything: a bad input must not leave partial output.
  // Everything is held at once (the text, its tokens and one shard's uint16 tokens): check it
  // fits first (a BPE token stands for at least one byte, so the tokens are at most the bytes).
  uint64_t total_bytes = 0;
  for (const std::string& in : inputs) {
    const int fd = open_regular_file(in, "input");
    struct stat st;
    const int rc = ::fstat(fd, &st);
    ::close(fd);
    if (rc == 0) total_bytes += (uint64_t)st.st_size;
  }
  require_memory(total_bytes * (tokenizer ? 5 : 1) + 2 * std::min<uint64_t>(total_bytes, shard_tokens), Device::CPU,
                 0, "prepare: the inputs (" + std::to_string(total_bytes) + " bytes)");
  std::string text;
  text.reserve(total_bytes);
  for (const std::string& in : inputs) {
    std::vector<unsigned char> b = read_file_bytes(in);
    const std::string_view view((const char*)b.data(), b.size());
    if (const size_t bad = invalid_utf8_at(view); tokenizer && bad != std::string_view::npos)
      throw UserError(in + ": invalid UTF-8 at byte " + std::to_string(bad) +
                      " (a tokenizer.json tokenizer reads UTF-8 text; without --tokenizer every byte is a token)");
    text.append(view);
  }
  std::vector<int32_t> ids;
  if (tokenizer) {
    const auto t0 = std::chrono::steady_clock::now();
    const bool show = progress && text.size() >= (64u << 20);
    ids = tokenizer->encode_parallel(text, threads, "prepare: inputs", [&](size_t done, size_t total) {
      if (!show) return;
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "prepare: tokenized %.0f of %.0f MB (%.1f MB/s)\n", done / 1e6, total / 1e6,
                   s > 0 ? done / 1e6 / s : 0.0);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (progress)
      std::fprintf(stderr, "prepare: tokenized %zu bytes into %zu tokens in %.2f s (%.2f MB/s, %d thread%s)\n",
                   text.size(), ids.size(), s, s > 0 ? text.size() / 1e6 / s : 0.0, threads, threads == 1 ? "" : "s");
  }
  const size_t total = tokenizer ? ids.size() : text.size();
  const auto token_at = [&](size_t i) -> uint16_t { return tokenizer ? (uint16_t)ids[i] : (unsigned char)text[i]; };
  size_t n_val = (size_t)std::floor((double)total * val_fraction);
  if (val_fraction > 0.0 && n_val == 0) n_val = 1;  // asked for validation, so have some
  if (n_val >= total)
    throw UserError("prepare: inputs: " + std::to_string(total) +
                    (tokenizer ? " tokens" : " bytes") + " leave nothing to train on after the validation split");
  const size_t n_train = total - n_val;

  const std::filesystem::path dir = std::filesystem::path(output_prefix).parent_path();
  if (!dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw UserError(dir.string() + ": cannot create the output directory: " + ec.message());
  }

  // The previous run's tokenizer.json goes before any shard is replaced: a run that stops part
  // way must leave its shards with no record rather than with one that misreads their ids.
  const std::string tok_path = output_prefix + kShardTokenizerSuffix;
  const std::filesystem::path tp(tok_path);
  const WriteRoot tok_root(tp.parent_path().empty() ? "." : tp.parent_path().string());
  // unlinkat, not remove_all: a directory of that name is the user's, refused rather than emptied.
  if (::unlinkat(tok_root.fd(), tp.filename().c_str(), 0) != 0 && errno != ENOENT)
    throw UserError(tok_path + ": cannot remove the previous tokenizer record: " + std::strerror(errno));

  std::vector<ShardSummary> written;
  std::vector<uint16_t> buf;
  auto write_split = [&](const char* split, size_t begin, size_t end) {
    size_t index = 0;
    for (size_t at = begin; at < end; at += shard_tokens, ++index) {
      const size_t n = std::min(shard_tokens, end - at);
      buf.resize(n);
      for (size_t i = 0; i < n; ++i) buf[i] = token_at(at + i);
      const std::string path = shard_name(output_prefix, split, index);
      write_shard(path, buf.data(), n);
      written.push_back({path, n});
    }
    // Shards of an earlier, larger run would join this one's glob; remove the run of them
    // that continues our numbering.
    for (;; ++index) {
      const std::string stale = shard_name(output_prefix, split, index);
      if (::unlink(stale.c_str()) != 0) break;
    }
  };
  write_split("train", 0, n_train);
  write_split("val", n_train, total);
  // The shards' tokenizer, where training finds it (shard_tokenizer_path) and copies it into
  // every checkpoint.
  write_file_atomic(tok_root, tp.filename().string(), tokenizer ? tokenizer->json_text() : Tokenizer::byte_level_json());
  return written;
}

std::string shard_tokenizer_path(const std::string& shard_path) {
  // PREFIX_{train,val}_NNNNNN.bin
  const std::string name = std::filesystem::path(shard_path).filename().string();
  for (const char* split : {"_train_", "_val_"}) {
    const size_t at = name.rfind(split);
    if (at == std::string::npos || at == 0) continue;
    const std::string rest = name.substr(at + std::strlen(split));
    if (rest.size() != 10 || !rest.ends_with(".bin") ||
        !std::all_of(rest.begin(), rest.begin() + 6, [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    return shard_path.substr(0, shard_path.size() - name.size() + at) + kShardTokenizerSuffix;
  }
  return "";
}

std::optional<ShardsTokenizer> find_shards_tokenizer(const std::vector<std::string>& shard_paths) {
  std::optional<ShardsTokenizer> found;
  for (const std::string& shard : shard_paths) {
    const std::string path = shard_tokenizer_path(shard);
    if (path.empty() || (found && found->path == path)) continue;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) continue;
    std::string text = read_regular_file(path, "tokenizer");
    if (found && found->json_text != text)
      throw UserError(path + ": differs from " + found->path +
                      ": the shards were tokenized differently and cannot be trained on together");
    if (!found) found = ShardsTokenizer{path, std::move(text)};
  }
  return found;
}

}  // namespace lt
