// Times what a checkpoint costs: save and load of a GPT-2 124M checkpoint with its AdamW state
// (1.5 GB, as configs/gpt2-124m.toml trains), its weights as one model.safetensors and as shards
// (--max-shard-size), and the raw SHA-256 rate over a file of that size.
// Not part of `all`: cmake --build build --target bench_checkpoint_io; usage:
// bench_checkpoint_io DIR [MAX_SHARD_SIZE (100MB)] [ROUNDS (3)]
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/checkpoint.h"
#include "runtime/model.h"
#include "runtime/optim.h"
#include "runtime/sha256.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

static double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: %s DIR [MAX_SHARD_SIZE (100MB)] [ROUNDS (3)]; DIR: a scratch directory with ~4 GB free\n",
                 argv[0]);
    return 2;
  }
  const fs::path dir = argv[1];
  const uint64_t shard_bytes = lt::parse_shard_size(argc > 2 ? argv[2] : "100MB", "MAX_SHARD_SIZE");
  const int rounds = argc > 3 ? std::max(1, std::atoi(argv[3])) : 3;
  fs::create_directories(dir);
  const lt::GPTConfig cfg{.n_layer = 12, .n_head = 12, .n_embd = 768, .block_size = 1024, .vocab_size = 50257};
  auto backend = lt::make_cpu_backend();

  lt::GPT model(cfg, *backend);
  model.init_weights(1337);
  lt::AdamW opt(lt::AdamWConfig{}, model);
  opt.set_steps_taken(1);
  const nlohmann::json state{{"step", 1}, {"seed", 1337}, {"total_steps", 2}};
  lt::GPT model2(cfg, *backend);
  lt::AdamW opt2(lt::AdamWConfig{}, model2);

  // The single file (transformers' default limit) and shards of `shard_bytes`, alternated each
  // round so both see the same machine; medians of the rounds.
  uint64_t bytes = 0, layout_bytes[2] = {0, 0};
  std::vector<double> save_s[2], weights_s[2], optim_s[2];
  size_t files[2] = {0, 0};
  for (int r = 0; r < rounds; ++r)
    for (int layout = 0; layout < 2; ++layout) {
      const uint64_t limit = layout ? shard_bytes : lt::kDefaultMaxShardBytes;
      fs::create_directories(dir / "run");
      auto t0 = Clock::now();
      const std::string ckpt = lt::save_checkpoint((dir / "run").string(), model, opt, state, limit);
      save_s[layout].push_back(since(t0));
      bytes = 0;
      files[layout] = 0;
      for (const auto& e : fs::directory_iterator(ckpt)) {
        bytes += e.file_size();
        files[layout] += e.path().filename().string().starts_with("model");  // the shards and the index
      }
      t0 = Clock::now();
      lt::load_model_weights(ckpt, model2);
      weights_s[layout].push_back(since(t0));
      t0 = Clock::now();
      lt::load_training_state(ckpt, opt2);
      optim_s[layout].push_back(since(t0));
      layout_bytes[layout] = bytes;
      fs::remove_all(dir / "run");
    }
  for (int layout = 0; layout < 2; ++layout) {
    std::printf("%-30s checkpoint %.3f GB, %zu model file(s) (shards + index): save %.2f s, load weights %.2f s, load optimizer %.2f s "
                "(medians of %d; checksums verified)\n",
                layout ? (std::string("sharded, ") + (argc > 2 ? argv[2] : "100MB") + " shards").c_str()
                       : "single model.safetensors",
                layout_bytes[layout] / 1e9, files[layout], median(save_s[layout]), median(weights_s[layout]),
                median(optim_s[layout]), rounds);
    std::printf("  save runs:");
    for (double x : save_s[layout]) std::printf(" %.2f", x);
    std::printf("; load weights runs:");
    for (double x : weights_s[layout]) std::printf(" %.2f", x);
    std::printf("\n");
  }

  // The raw hash rate over one file of the checkpoint's size, read from the page cache
  // (hashed once to warm it, then timed).
  const fs::path big = dir / "hash-input.bin";
  {
    std::vector<char> block(16 << 20);
    for (size_t i = 0; i < block.size(); ++i) block[i] = (char)(i * 2654435761u >> 13);
    std::ofstream out(big, std::ios::binary);
    for (uint64_t done = 0; done < bytes; done += block.size()) out.write(block.data(), (std::streamsize)block.size());
  }
  const uint64_t big_bytes = fs::file_size(big);
  lt::sha256_file(big.string());
  const auto t0 = Clock::now();
  const std::string digest = lt::sha256_file(big.string());
  const double hash_s = since(t0);

  std::printf("sha256_file %.3f GB: %.2f s, %.3f GB/s (%s...)\n", big_bytes / 1e9, hash_s, big_bytes / 1e9 / hash_s,
              digest.substr(0, 16).c_str());
  fs::remove(big);
  return 0;
}
