// Usage records: the JSONL hash chain detects altered, removed, reordered, duplicated and
// truncated records, reports the first, and refuses to build on a broken chain.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "launcher/audit.h"
#include "runtime/error.h"

namespace fs = std::filesystem;
using namespace lt::lease;
using nlohmann::json;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/lt-audit-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::pair<int, std::string> run(const std::string& cmd) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> v;
  std::string l;
  while (std::getline(in, l)) v.push_back(l);
  return v;
}

void write_lines(const std::string& path, const std::vector<std::string>& v, bool final_newline = true) {
  std::ofstream out(path, std::ios::trunc);
  for (size_t i = 0; i < v.size(); ++i) out << v[i] << (i + 1 < v.size() || final_newline ? "\n" : "");
}

class Chain : public ::testing::Test {
 protected:
  void SetUp() override {
    log = dir.path + "/usage.jsonl";
    for (int i = 0; i < 5; ++i)
      heads.push_back(append_record(log, {{"kind", "job"},
                                          {"lease", i % 2 ? "acme-2024" : "globex-2024"},
                                          {"job_id", "job" + std::to_string(i)},
                                          {"ranks", json::array({{{"rank", 0}, {"host", "node01"}, {"devices", {"GPU-x"}}}})},
                                          {"gpu_seconds", 3600.5 * (i + 1)},
                                          {"exit_status", 0}}));
    good = lines_of(log);
  }
  TempDir dir;
  std::string log;
  std::vector<std::string> heads, good;
};

TEST_F(Chain, IntactChainVerifies) {
  AuditResult r = verify_log(log);
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 5u);
  EXPECT_EQ(r.head, heads.back());
  json first = json::parse(good[0]);
  EXPECT_EQ(first["prev"], kGenesisHash);
  EXPECT_EQ(first["seq"], 0);
  EXPECT_EQ(json::parse(good[3])["prev"], heads[2]);
  EXPECT_EQ(record_hash(first), first["hash"]);
  EXPECT_TRUE(verify_log(log, heads[2]).ok);  // a head kept earlier is still in the chain
}

TEST_F(Chain, AlteredRecord) {
  auto v = good;
  v[2].replace(v[2].find("\"exit_status\":0"), 15, "\"exit_status\":1");
  write_lines(log, v);
  AuditResult r = verify_log(log);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_line, 3u);
  EXPECT_EQ(r.records, 2u);
  EXPECT_NE(r.reason.find("record 2 was altered"), std::string::npos) << r.reason;
}

TEST_F(Chain, AlteredRecordWithRecomputedHash) {
  // Someone who knows the scheme edits record 1 and fixes its hash: record 2's prev breaks.
  json rec = json::parse(good[1]);
  rec["gpu_seconds"] = 1.0;
  rec["hash"] = record_hash(rec);
  auto v = good;
  v[1] = rec.dump();
  write_lines(log, v);
  AuditResult r = verify_log(log);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_line, 3u);
  EXPECT_NE(r.reason.find("prev does not match the hash of record 1"), std::string::npos) << r.reason;
}

TEST_F(Chain, MissingRecord) {
  auto v = good;
  v.erase(v.begin() + 2);
  write_lines(log, v);
  AuditResult r = verify_log(log);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_line, 3u);
  EXPECT_NE(r.reason.find("record 2 is missing"), std::string::npos) << r.reason;
  v = good;
  v.erase(v.begin());
  write_lines(log, v);
  r = verify_log(log);
  EXPECT_EQ(r.bad_line, 1u);
  EXPECT_NE(r.reason.find("record 0 is missing"), std::string::npos) << r.reason;
}

TEST_F(Chain, ReorderedAndDuplicatedRecords) {
  auto v = good;
  std::swap(v[1], v[2]);
  write_lines(log, v);
  AuditResult r = verify_log(log);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_line, 2u);
  v = good;
  v.insert(v.begin() + 3, good[2]);
  write_lines(log, v);
  r = verify_log(log);
  EXPECT_EQ(r.bad_line, 4u);
  EXPECT_NE(r.reason.find("appears again"), std::string::npos) << r.reason;
}

TEST_F(Chain, TruncationAndGarbage) {
  write_lines(log, good, false);  // last line lost its newline: a half-written record
  AuditResult r = verify_log(log);
  EXPECT_EQ(r.bad_line, 5u);
  EXPECT_NE(r.reason.find("not terminated"), std::string::npos);
  auto v = good;
  v[3] = v[3].substr(0, v[3].size() / 2);
  write_lines(log, v);
  EXPECT_EQ(verify_log(log).bad_line, 4u);
  // Whole records cut off the end: only a head kept elsewhere shows it.
  v = good;
  v.resize(3);
  write_lines(log, v);
  EXPECT_TRUE(verify_log(log).ok);
  r = verify_log(log, heads.back());
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.reason.find("truncated or rewritten"), std::string::npos) << r.reason;
}

TEST_F(Chain, AppendRefusesABrokenChain) {
  auto v = good;
  v.erase(v.begin() + 1);
  write_lines(log, v);
  EXPECT_THROW(append_record(log, {{"kind", "job"}}), lt::UserError);
  EXPECT_THROW(gpu_seconds_used(log, "acme-2024"), lt::UserError);
}

TEST_F(Chain, GpuSecondsPerLease) {
  EXPECT_DOUBLE_EQ(gpu_seconds_used(log, "acme-2024"), 3600.5 * (2 + 4));
  EXPECT_DOUBLE_EQ(gpu_seconds_used(log, "globex-2024"), 3600.5 * (1 + 3 + 5));
  EXPECT_DOUBLE_EQ(gpu_seconds_used(dir.path + "/none.jsonl", "acme-2024"), 0.0);
}

TEST_F(Chain, ConcurrentAppendersKeepOneChain) {
  std::vector<pid_t> kids;
  for (int k = 0; k < 4; ++k) {
    pid_t pid = ::fork();
    if (pid == 0) {
      for (int i = 0; i < 10; ++i) append_record(log, {{"kind", "note"}, {"writer", k}, {"i", i}});
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) {
    int st = 0;
    ::waitpid(pid, &st, 0);
    EXPECT_EQ(st, 0);
  }
  AuditResult r = verify_log(log);
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 45u);
}

TEST_F(Chain, CliReportsTheFirstBadRecord) {
  const std::string cli = LT_CLI;
  auto [rc, out] = run(cli + " audit verify " + log);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("5 record(s), chain intact"), std::string::npos) << out;
  auto [rc1, out1] = run(cli + " audit verify --json " + log + " --head " + heads[1]);
  EXPECT_EQ(rc1, 0) << out1;
  EXPECT_TRUE(json::parse(out1)["ok"]);
  auto v = good;
  v.erase(v.begin() + 3);
  write_lines(log, v);
  auto [rc2, out2] = run(cli + " audit verify " + log);
  EXPECT_EQ(rc2, 1) << out2;
  EXPECT_NE(out2.find("line 4: record 3 is missing"), std::string::npos) << out2;
  auto [rc3, out3] = run(cli + " audit verify " + dir.path + "/nonexistent.jsonl");
  EXPECT_EQ(rc3, 2) << out3;
}

}  // namespace
