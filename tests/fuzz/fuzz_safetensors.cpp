// Fuzz target: a safetensors file through SafetensorsReader (header validation, every read
// path) and through load_model_weights into a tiny GPT (names, shapes, dtype widening).
#include <filesystem>
#include <memory>
#include <vector>

#include "runtime/backend.h"
#include "runtime/checkpoint.h"
#include "runtime/model.h"
#include "runtime/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

// The model the seed corpus's model.safetensors seeds were written for (make_corpus.py).
const lt::GPTConfig kTiny{.n_layer = 1, .n_head = 1, .n_embd = 4, .block_size = 4, .vocab_size = 8};

void read_everything(const std::string& path) {
  lt::SafetensorsReader reader(path);
  for (const lt::StTensorInfo& t : reader.tensors()) {
    std::vector<uint8_t> raw(t.end - t.begin);
    reader.read_raw(t, raw.data());
    lt_fuzz::expect_user_error_only([&] {
      std::vector<float> f((size_t)t.numel());
      reader.read_f32(t, f.data());
    });
    lt_fuzz::expect_user_error_only([&] {
      std::vector<int64_t> i((size_t)t.numel());
      reader.read_i64(t, i.data());
    });
  }
  for (const auto& [key, value] : reader.metadata()) (void)reader.find(key);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path ckpt = [] {
    auto dir = lt_fuzz::scratch_dir() / "ckpt";
    std::filesystem::create_directories(dir);
    return dir;
  }();
  static std::unique_ptr<lt::Backend> backend = lt::make_cpu_backend();
  static lt::GPT model(kTiny, *backend);

  const std::string path = (ckpt / "model.safetensors").string();
  lt_fuzz::write_bytes(path, data, size);
  lt_fuzz::expect_user_error_only([&] { read_everything(path); });
  lt_fuzz::expect_user_error_only([&] { lt::load_model_weights(ckpt.string(), model); });
  return 0;
}
