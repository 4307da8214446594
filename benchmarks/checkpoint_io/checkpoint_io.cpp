// Times what a checkpoint costs: save and load of a GPT-2 124M checkpoint with its AdamW state
// (1.5 GB, as configs/gpt2-124m.toml trains) and the raw SHA-256 rate over a file of that size.
// Not part of `all`: cmake --build build --target bench_checkpoint_io; usage: bench_checkpoint_io DIR
#include <chrono>
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

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR (an empty scratch directory with ~4 GB free)\n", argv[0]);
    return 2;
  }
  const fs::path dir = argv[1];
  fs::create_directories(dir);
  const lt::GPTConfig cfg{.n_layer = 12, .n_head = 12, .n_embd = 768, .block_size = 1024, .vocab_size = 50257};
  auto backend = lt::make_cpu_backend();

  lt::GPT model(cfg, *backend);
  model.init_weights(1337);
  lt::AdamW opt(lt::AdamWConfig{}, model);
  opt.set_steps_taken(1);
  const nlohmann::json state{{"step", 1}, {"seed", 1337}, {"total_steps", 2}};
  auto t0 = Clock::now();
  const std::string ckpt = lt::save_checkpoint((dir / "run").string(), model, opt, state);
  const double save_s = since(t0);

  uint64_t bytes = 0;
  for (const auto& e : fs::directory_iterator(ckpt)) bytes += e.file_size();

  lt::GPT model2(cfg, *backend);
  lt::AdamW opt2(lt::AdamWConfig{}, model2);
  t0 = Clock::now();
  lt::load_model_weights(ckpt, model2);
  lt::load_training_state(ckpt, opt2);
  const double load_s = since(t0);

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
  t0 = Clock::now();
  const std::string digest = lt::sha256_file(big.string());
  const double hash_s = since(t0);

  std::printf("checkpoint %.3f GB: save %.2f s, load (weights + optimizer, checksums verified) %.2f s\n",
              bytes / 1e9, save_s, load_s);
  std::printf("sha256_file %.3f GB: %.2f s, %.3f GB/s (%s...)\n", big_bytes / 1e9, hash_s, big_bytes / 1e9 / hash_s,
              digest.substr(0, 16).c_str());
  fs::remove_all(dir / "run");
  fs::remove(big);
  return 0;
}
