// The lease tests' shared fixtures: the example shared-cluster manifest (tests/fixtures/leases),
// its fake sysfs tree, and a one-place text edit for building a broken variant of it.
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "tests/util.h"

namespace lt::test {

inline const std::string kFixtures = std::string(LT_SOURCE_DIR) + "/tests/fixtures/leases";
inline const std::string kManifest = kFixtures + "/shared-cluster.toml";
inline const std::string kSysfs = kFixtures + "/sysfs";

// The shared-cluster manifest's text, read once.
inline const std::string& base() {
  static const std::string text = read_file(kManifest);
  return text;
}

// `s` with the first `from` replaced by `to`; a test whose `from` is not there fails, so a
// fixture edit cannot silently turn a case into a copy of the valid manifest.
inline std::string replace_once(std::string s, const std::string& from, const std::string& to) {
  size_t pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << "test case text not found: " << from;
  if (pos != std::string::npos) s.replace(pos, from.size(), to);
  return s;
}

}  // namespace lt::test
