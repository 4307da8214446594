// Fuzz target: a model.safetensors.index.json beside the real shards of a tiny checkpoint,
// through load_model_weights: the index's JSON, its shard names (which must not lead out of the
// directory), its weight_map and metadata, and their agreement with the shards.
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "runtime/backend.h"
#include "runtime/checkpoint.h"
#include "runtime/model.h"
#include "runtime/optim.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

// The model and shard limit the seed indexes were written for (make_corpus.py): 256 bytes
// splits it into 7 shards.
const lt::GPTConfig kTiny{.n_layer = 1, .n_head = 1, .n_embd = 4, .block_size = 4, .vocab_size = 8};
constexpr uint64_t kShardBytes = 256;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  static std::unique_ptr<lt::Backend> backend = lt::make_cpu_backend();
  static lt::GPT model(kTiny, *backend);
  static const fs::path ckpt = [] {
    const fs::path run = lt_fuzz::scratch_dir() / "run", dir = lt_fuzz::scratch_dir() / "ckpt";
    fs::create_directories(run);
    fs::create_directories(dir);
    model.init_weights(1);
    lt::AdamW opt(lt::AdamWConfig{}, model);
    const fs::path saved = lt::save_checkpoint(run.string(), model, opt, {{"step", 0}}, kShardBytes);
    // The shards and config.json without trainer.json: a bare export, which no seal covers, so
    // the index checks are all that stand between the input and the reads.
    for (const auto& e : fs::directory_iterator(saved)) {
      const std::string name = e.path().filename().string();
      if (name.starts_with("model-") || name == "config.json") fs::copy_file(e.path(), dir / name);
      // LT_FUZZ_SEED_DIR: where make_corpus.py takes the valid index from.
      if (const char* seeds = std::getenv("LT_FUZZ_SEED_DIR"); seeds && name == "model.safetensors.index.json")
        fs::copy_file(e.path(), fs::path(seeds) / name, fs::copy_options::overwrite_existing);
    }
    return dir;
  }();
  lt_fuzz::write_bytes(ckpt / "model.safetensors.index.json", data, size);
  lt_fuzz::expect_user_error_only([&] { lt::load_model_weights(ckpt.string(), model); });
  return 0;
}
