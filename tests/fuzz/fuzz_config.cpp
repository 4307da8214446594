// Fuzz target: a training config (TOML) through load_train_config.
#include "runtime/config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lt_fuzz::input_file(data, size, "config.toml");
  lt_fuzz::expect_user_error_only([&] { lt::load_train_config(path); });
  return 0;
}
