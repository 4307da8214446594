// Fuzz target: a usage log (JSONL hash chain) through verify_log, gpu_seconds_used and
// append_record. The first input byte picks the mode: even, the bytes as they are (the chain
// and line parsing); odd, every line that parses as a JSON object is re-chained first (seq,
// prev and hash recomputed) so the record fields behind the chain check are reached, which is
// where a forged record with a valid chain would be interpreted.
#include <sstream>
#include <string>

#include "lease/audit.h"
#include "runtime/input.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

std::string rechain(const std::string& text) {
  std::istringstream in(text);
  std::string line, out, prev = lt::lease::kGenesisHash;
  int64_t seq = 0;
  while (std::getline(in, line)) {
    nlohmann::json j;
    try {
      j = lt::parse_json(line, "fuzz input");
    } catch (const lt::UserError&) {
      out += line + "\n";
      continue;
    }
    if (j.is_object()) {
      j["seq"] = seq++;
      j["prev"] = prev;
      j["hash"] = prev = lt::lease::record_hash(j);
      out += j.dump() + "\n";
    } else {
      out += line + "\n";
    }
  }
  return out;
}

}  // namespace

// Appends send an anchor each; a fuzzer would flood syslog with them, so they go to the test
// seam, which /dev/null accepts.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ::setenv(lt::lease::kAnchorFileEnv, "/dev/null", 1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) text = rechain(text);
  const std::string path = lt_fuzz::input_file(reinterpret_cast<const uint8_t*>(text.data()), text.size(), "usage.jsonl");

  lt_fuzz::expect_user_error_only([&] {
    const lt::lease::AuditResult r = lt::lease::verify_log(path);
    if (r.ok) (void)lt::lease::verify_log(path, {.head = r.head});
  });
  // The same bytes as an anchors export: the anchor-line parser on hostile text.
  lt_fuzz::expect_user_error_only([&] { (void)lt::lease::verify_log(path, {.anchors = path}); });
  lt_fuzz::expect_user_error_only([&] { (void)lt::lease::gpu_seconds_used(path, "lease-a"); });
  lt_fuzz::expect_user_error_only([&] {
    lt::lease::append_record(path, {{"kind", "job"}, {"lease", "lease-a"}, {"gpu_seconds", 1.5}});
  });
  return 0;
}
