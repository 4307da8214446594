// Fuzz target: an llm.c token shard through Shard, check_vocab, DataLoader and EvalLoader.
#include <cstdint>
#include <vector>

#include "runtime/data.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lt_fuzz::input_file(data, size, "shard_000000.bin");
  lt_fuzz::expect_user_error_only([&] {
    lt::Shard shard(path);
    lt::check_vocab(shard, 256);
  });
  // Loaders with small windows so a shard of a few tokens still yields batches.
  constexpr int B = 2, T = 4;
  std::vector<int32_t> in(B * T), tgt(B * T);
  lt_fuzz::expect_user_error_only([&] {
    lt::DataLoader train(path, T, 256, 1);
    for (int i = 0; i < 3; ++i) train.next_batch(in.data(), tgt.data(), B);
    lt::DataLoader again(path, T, 256, 1);
    again.load_state(train.state());
  });
  lt_fuzz::expect_user_error_only([&] {
    lt::EvalLoader eval(path, 256);
    for (int i = 0; i < 3 && eval.next_batch(in.data(), tgt.data(), B, T); ++i) {
    }
  });
  return 0;
}
