// Shared test helpers: fresh temp directories, whole-file reads and writes, running the CLI (or any
// shell command) and capturing its exit code, stdout and stderr.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/error.h"

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
  // stdout followed by stderr (not interleaved), for checks that do not mind which stream a line went to.
  std::string both() const { return out + err; }
};

// Variables to add to a command's environment, as (NAME, VALUE) pairs.
using EnvVars = std::vector<std::pair<std::string, std::string>>;

// `s` as one single-quoted shell word.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs the shell command line CMD, from directory CWD unless it is empty, with ENV added to its
// environment and stdin from /dev/null. Returns its exit code (128 when it did not exit), stdout and stderr.
inline RunResult run_sh(const std::string& cmd, const std::string& cwd = "", const EnvVars& env = {}) {
  TempDir io;
  std::string script = cwd.empty() ? "" : "cd " + shell_quote(cwd) + " && ";
  script += "{ ";
  for (const auto& [name, value] : env) script += "export " + shell_quote(name + "=" + value) + "; ";
  script += cmd + "\n} >" + shell_quote(io / "stdout") + " 2>" + shell_quote(io / "stderr") + " </dev/null";
  int status = std::system(script.c_str());
  RunResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  r.out = read_file(io / "stdout");
  r.err = read_file(io / "stderr");
  return r;
}

// Runs `leasetrain ARGS` (a shell-quoted string) the same way.
inline RunResult run_cli(const std::string& args, const std::string& cwd = "", const EnvVars& env = {}) {
  return run_sh(std::string(LT_CLI) + " " + args, cwd, env);
}

inline int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// How many times `what` occurs in `s` (overlapping occurrences counted).
inline size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) n++;
  return n;
}

// The pids of the processes whose /proc/<pid>/FILE (environ, cmdline: NUL-separated) holds every
// one of `items` as a whole entry.
inline std::vector<pid_t> find_processes(const std::vector<std::string>& items, const char* file = "environ") {
  std::vector<pid_t> found;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string text = std::string(1, '\0') + read_file(e.path().string() + "/" + file);
    bool all = text.size() > 1;
    for (const std::string& v : items) all = all && text.find(std::string(1, '\0') + v + '\0') != std::string::npos;
    if (all) found.push_back(pid_t(std::stoi(name)));
  }
  return found;
}

// The pid of a process whose environment holds every one of `vars` ("NAME=value"), or 0.
inline pid_t find_process(const std::vector<std::string>& vars) {
  const std::vector<pid_t> found = find_processes(vars);
  return found.empty() ? 0 : found.front();
}

// A training run's metrics.jsonl (what `train --out RUN` writes), one object per step.
inline std::vector<nlohmann::json> read_metrics(const std::string& run_dir) {
  std::vector<nlohmann::json> v;
  std::istringstream in(read_file(run_dir + "/metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) v.push_back(nlohmann::json::parse(line));
  return v;
}


// EXPECT that `msg` contains `part`, printing both when it does not.
#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << "'" << (msg) << "' lacks '" << (part) << "'"

// The message of the UserError that f throws, checked to be one line; fails the test if f
// throws nothing or another type.
template <class F>
std::string user_error(F&& f) {
  try {
    f();
  } catch (const UserError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "UserError messages are one line: " << msg;
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected UserError, got " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected UserError, nothing thrown";
  return "";
}

// One line on stderr, exit code `code`, and every fragment in it.
inline void expect_error(const RunResult& r, int code, std::initializer_list<std::string> fragments) {
  EXPECT_EQ(r.code, code) << r.both();
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  for (const auto& f : fragments) EXPECT_HAS(r.err, f);
}

}  // namespace lt::test
