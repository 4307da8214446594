// English-like training text for tests: five sentences drawn in a seeded order, so a small
// model has structure to learn, written as byte-level llm.c shards.
#pragma once
#include <string>
#include <vector>

#include "runtime/data.h"
#include "runtime/rng.h"

namespace lt::test {

inline std::string corpus(size_t bytes, uint64_t seed) {
  const char* sentences[] = {"The quick brown fox jumps over the lazy dog. ",
                             "A tenant rents a node and trains a model on it. ",
                             "Operators lease whole nodes, single GPUs or slices of one. ",
                             "Every kernel is checked against the reference on the CPU. ",
                             "She sells sea shells by the sea shore. "};
  Rng rng(seed);
  std::string s;
  while (s.size() < bytes) s += sentences[rng.below(5)];
  s.resize(bytes);
  return s;
}

inline void write_text_shard(const std::string& path, const std::string& text) {
  std::vector<uint16_t> toks(text.begin(), text.end());
  for (auto& t : toks) t &= 0xff;
  write_shard(path, toks.data(), toks.size());
}

// DIR/d_train_000000.bin (60000 bytes) and DIR/d_val_000000.bin (8000 bytes).
inline void write_corpus_shards(const std::string& dir) {
  write_text_shard(dir + "/d_train_000000.bin", corpus(60000, 1));
  write_text_shard(dir + "/d_val_000000.bin", corpus(8000, 2));
}

}  // namespace lt::test
