// Fuzz target: a lease manifest (TOML) through load_manifest (parse and validate) and the
// lookups `plan` and `launch` make on an accepted one.
#include "lease/manifest.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lt_fuzz::input_file(data, size, "manifest.toml");
  lt_fuzz::expect_user_error_only([&] {
    const lt::lease::Manifest m = lt::lease::load_manifest(path);
    for (const lt::lease::Lease& l : m.leases) {
      (void)m.lease(l.id);
      (void)l.total_slots();
      (void)l.deadline();
      lt_fuzz::expect_user_error_only([&] { (void)l.usage_log_path(); });
    }
  });
  return 0;
}
