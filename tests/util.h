// Shared test helpers: fresh temp directories, running the CLI and capturing its output.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace lt::test {

// A fresh directory under $TMPDIR, removed when the object goes.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "leasetrain-test-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

struct RunResult {
  int code = -1;
  std::string out, err;
};

// Runs `leasetrain ARGS` (a shell-quoted string) and returns its exit code, stdout and stderr.
inline RunResult run_cli(const std::string& args, const std::string& cwd = "") {
  TempDir io;
  const std::string out = io / "stdout", err = io / "stderr";
  std::string cmd = (cwd.empty() ? "" : "cd '" + cwd + "' && ") + std::string(LT_CLI) + " " + args + " >'" + out +
                    "' 2>'" + err + "' </dev/null";
  int status = std::system(cmd.c_str());
  RunResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

inline int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace lt::test
