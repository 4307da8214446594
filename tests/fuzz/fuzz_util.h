// Shared by the libFuzzer targets: a scratch directory per process, writing the input where
// a path-taking reader can open it, and the one rule every target applies: lt::UserError is
// the expected answer to bad input; any other exception escapes to libFuzzer as a finding.
#pragma once
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "runtime/error.h"

namespace lt_fuzz {

// /tmp/lt-fuzz-XXXXXX, created once per process and removed at exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    char tmpl[] = "/tmp/lt-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl)) {
      std::perror("mkdtemp");
      std::abort();
    }
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return std::filesystem::path(tmpl);
  }();
  return dir;
}

// Replaces `path` with exactly these bytes (plain POSIX writes: the code under test is the
// reader, not our writer).
inline void write_bytes(const std::filesystem::path& path, const void* data, size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::perror(path.c_str());
    std::abort();
  }
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n <= 0) {
      std::perror(path.c_str());
      std::abort();
    }
    p += n;
    size -= (size_t)n;
  }
  ::close(fd);
}

// The input as a file named `name` in the scratch directory; returns its path.
inline std::string input_file(const uint8_t* data, size_t size, const char* name) {
  const std::filesystem::path path = scratch_dir() / name;
  write_bytes(path, data, size);
  return path.string();
}

// Runs f; a UserError is a correct refusal of bad input and is swallowed.
template <class F>
void expect_user_error_only(F&& f) {
  try {
    f();
  } catch (const lt::UserError&) {
  }
}

}  // namespace lt_fuzz
