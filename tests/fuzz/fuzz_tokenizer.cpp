// Fuzz target: tokenizer.json (Tokenizer::from_json) and the encoder. First byte even: the rest
// is a tokenizer.json; when it is accepted, a fixed text is encoded whole and in pieces. First
// byte odd: the rest is text for the test fixture bpe2000_eot.json. Either way the pieces
// (encode_parallel) must give the whole text's ids, and for the fixture decode must give the
// text back; anything else aborts as a finding.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/input.h"
#include "runtime/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void check(const lt::Tokenizer& tok, const std::string& text, bool exact_round_trip) {
  std::vector<int32_t> ids;
  tok.encode(text, ids, "text");
  for (size_t piece : {1, 5, 64})
    if (tok.encode_parallel(text, 2, "text", {}, piece) != ids) {
      std::fprintf(stderr, "encode_parallel(piece %zu) differs from encode\n", piece);
      std::abort();
    }
  const std::string back = tok.decode(ids.data(), ids.size());
  // A fuzzed vocabulary may lack bytes (dropped) or add a prefix space; the fixture does neither.
  if (exact_round_trip && back != text) {
    std::fprintf(stderr, "decode(encode(text)) is not the text\n");
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const lt::Tokenizer fixture =
      lt::Tokenizer::from_file(std::string(LT_SOURCE_DIR) + "/tests/fixtures/tokenizers/bpe2000_eot.json");
  if (size == 0) return 0;
  const std::string rest((const char*)data + 1, size - 1);
  if (data[0] % 2 == 0) {
    lt_fuzz::expect_user_error_only([&] {
      const lt::Tokenizer tok = lt::Tokenizer::from_json(rest, "tokenizer.json");
      check(tok, "Hello <|endoftext|> world,  don't\t123 caf\xc3\xa9 \xe6\x9d\xb1\n\n x<|endoftext|>\ny", false);
    });
  } else if (lt::invalid_utf8_at(rest) == std::string::npos) {
    check(fixture, rest, true);
  }
  return 0;
}
