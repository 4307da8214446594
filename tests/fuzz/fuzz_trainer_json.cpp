// Fuzz target: a checkpoint's trainer.json (the training state a resume trusts) through
// latest_checkpoint, load_model_weights, load_training_state and DataLoader::load_state,
// beside a real tiny checkpoint written once per process. The input is re-sealed
// (trainer.json.sha256, as sha256sum writes it) so the fields are reached, not just the seal.
// With LT_FUZZ_SEED_DIR=DIR set, the fixture checkpoint's files are copied into DIR, from which
// make_corpus.py derives the seed corpora.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "runtime/backend.h"
#include "runtime/checkpoint.h"
#include "runtime/data.h"
#include "runtime/model.h"
#include "runtime/optim.h"
#include "runtime/sha256.h"
#include "tests/fuzz/fuzz_util.h"

namespace fs = std::filesystem;

namespace {

const lt::GPTConfig kTiny{.n_layer = 1, .n_head = 1, .n_embd = 4, .block_size = 4, .vocab_size = 8};
constexpr int kT = 4;

struct Fixture {
  std::unique_ptr<lt::Backend> backend = lt::make_cpu_backend();
  lt::GPT model{kTiny, *backend};
  lt::AdamW opt{lt::AdamWConfig{}, model};
  fs::path run, ckpt, shard;

  Fixture() {
    run = lt_fuzz::scratch_dir() / "run";
    fs::create_directories(run);  // save_checkpoint writes beneath an existing run directory
    fs::create_directories(lt_fuzz::scratch_dir() / "data");
    shard = lt_fuzz::scratch_dir() / "data" / "train_000000.bin";
    std::vector<uint16_t> tokens(64);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (uint16_t)(i % kTiny.vocab_size);
    lt::write_shard(shard.string(), tokens.data(), tokens.size());
    model.init_weights(1);
    // Fixed values (the shard's name, not its scratch path) so the seed's bytes are stable.
    const nlohmann::json state{
        {"step", 1}, {"seed", 1}, {"total_steps", 2}, {"init", ""},
        {"data", {{"seed", 1}, {"T", kT}, {"epoch", 0}, {"position", 2},
                  {"shards", {{{"path", "data/train_000000.bin"}, {"tokens", tokens.size()}}}}}}};
    opt.set_steps_taken(1);
    ckpt = lt::save_checkpoint(run.string(), model, opt, state);
    if (const char* out = std::getenv("LT_FUZZ_SEED_DIR"))
      for (const char* f : {"trainer.json", "model.safetensors", "optimizer.safetensors", "config.json"})
        fs::copy_file(ckpt / f, fs::path(out) / f, fs::copy_options::overwrite_existing);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture fx;
  lt_fuzz::write_bytes(fx.ckpt / "trainer.json", data, size);
  const std::string seal = lt::sha256_hex(data, size) + "  trainer.json\n";
  lt_fuzz::write_bytes(fx.ckpt / "trainer.json.sha256", seal.data(), seal.size());

  lt_fuzz::expect_user_error_only([&] { (void)lt::latest_checkpoint(fx.run.string()); });
  lt_fuzz::expect_user_error_only([&] { lt::load_model_weights(fx.ckpt.string(), fx.model); });
  lt_fuzz::expect_user_error_only([&] {
    const nlohmann::json st = lt::load_training_state(fx.ckpt.string(), fx.opt);
    if (st.is_object() && st.contains("data")) {
      lt::DataLoader loader(fx.shard.string(), kT, kTiny.vocab_size, 1);
      loader.load_state(st["data"], "trainer.json", "data.");
    }
  });
  return 0;
}
