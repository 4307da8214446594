// Usage records: the JSONL hash chain detects altered, removed, reordered, duplicated and
// truncated records, reports the first, and refuses to build on a broken chain. (Malformed
// records, --head, anchors: tests/test_hardening_audit.cpp.)
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lease/audit.h"
#include "runtime/error.h"
#include "tests/util.h"

using namespace lt::lease;
using namespace lt::test;
using nlohmann::json;

namespace {

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
    ::setenv(kAnchorFileEnv, (dir / "anchors.log").c_str(), 1);  // not the machine's syslog
    log = dir / "usage.jsonl";
    for (int i = 0; i < 5; ++i)
      heads.push_back(append_record(log, {{"kind", "job"},
                                          {"lease", i % 2 ? "acme-2024" : "globex-2024"},
                                          {"job_id", "job" + std::to_string(i)},
                                          {"ranks", json::array({{{"rank", 0}, {"host", "node01"}, {"devices", {"GPU-x"}}}})},
                                          {"gpu_seconds", 3600.5 * (i + 1)},
                                          {"exit_status", 0}}));
    good = lines_of(log);
  }
  void TearDown() override { ::unsetenv(kAnchorFileEnv); }
  // Rewrites the log as `lines` and verifies it.
  AuditResult rewrite(const std::vector<std::string>& lines, bool final_newline = true) {
    write_lines(log, lines, final_newline);
    return verify_log(log);
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
  EXPECT_TRUE(verify_log(log, {.head = heads.back()}).ok);
}

TEST_F(Chain, AlteredRecord) {
  auto v = good;
  v[2].replace(v[2].find("\"exit_status\":0"), 15, "\"exit_status\":1");
  AuditResult r = rewrite(v);
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
  AuditResult r = rewrite(v);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_line, 3u);
  EXPECT_NE(r.reason.find("prev does not match the hash of record 1"), std::string::npos) << r.reason;
}

TEST_F(Chain, MissingRecord) {
  auto v = good;
  v.erase(v.begin() + 2);
  AuditResult r = rewrite(v);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_line, 3u);
  EXPECT_NE(r.reason.find("record 2 is missing"), std::string::npos) << r.reason;
  v = good;
  v.erase(v.begin());
  r = rewrite(v);
  EXPECT_EQ(r.bad_line, 1u);
  EXPECT_NE(r.reason.find("record 0 is missing"), std::string::npos) << r.reason;
}

TEST_F(Chain, ReorderedAndDuplicatedRecords) {
  auto v = good;
  std::swap(v[1], v[2]);
  AuditResult r = rewrite(v);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_line, 2u);
  v = good;
  v.insert(v.begin() + 3, good[2]);
  r = rewrite(v);
  EXPECT_EQ(r.bad_line, 4u);
  EXPECT_NE(r.reason.find("appears again"), std::string::npos) << r.reason;
}

TEST_F(Chain, TruncationAndGarbage) {
  AuditResult r = rewrite(good, false);  // last line lost its newline: a half-written record
  EXPECT_EQ(r.bad_line, 5u);
  EXPECT_NE(r.reason.find("not terminated"), std::string::npos);
  auto v = good;
  v[3] = v[3].substr(0, v[3].size() / 2);
  EXPECT_EQ(rewrite(v).bad_line, 4u);
  // Whole records cut off the end: only a head kept elsewhere shows it.
  v = good;
  v.resize(3);
  EXPECT_TRUE(rewrite(v).ok);
  r = verify_log(log, {.head = heads.back()});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.reason.find("truncated or rewritten"), std::string::npos) << r.reason;
}

TEST_F(Chain, AppendRefusesABrokenChain) {
  auto v = good;
  v.erase(v.begin() + 1);
  write_lines(log, v);
  EXPECT_THROW(append_record(log, {{"kind", "job"}, {"lease", "acme-2024"}, {"gpu_seconds", 1.0}}), lt::UserError);
  EXPECT_THROW(gpu_seconds_used(log, "acme-2024"), lt::UserError);
}

TEST_F(Chain, GpuSecondsPerLease) {
  EXPECT_DOUBLE_EQ(gpu_seconds_used(log, "acme-2024"), 3600.5 * (2 + 4));
  EXPECT_DOUBLE_EQ(gpu_seconds_used(log, "globex-2024"), 3600.5 * (1 + 3 + 5));
  EXPECT_DOUBLE_EQ(gpu_seconds_used(dir / "none.jsonl", "acme-2024"), 0.0);
}

TEST_F(Chain, ConcurrentAppendersKeepOneChain) {
  std::vector<pid_t> kids;
  for (int k = 0; k < 4; ++k) {
    pid_t pid = ::fork();
    if (pid == 0) {
      for (int i = 0; i < 10; ++i)
        append_record(log, {{"kind", "job"}, {"lease", "acme-2024"}, {"job_id", std::to_string(k) + "." + std::to_string(i)},
                            {"gpu_seconds", 1.0}});
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
  RunResult r = run_cli("audit verify " + log);
  EXPECT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.both().find("5 record(s), chain intact"), std::string::npos) << r.both();
  RunResult r1 = run_cli("audit verify --json " + log + " --head " + heads.back());
  EXPECT_EQ(r1.code, 0) << r1.both();
  EXPECT_TRUE(json::parse(r1.both())["ok"]);  // all it prints, on either stream, is the JSON
  auto v = good;
  v.erase(v.begin() + 3);
  write_lines(log, v);
  RunResult r2 = run_cli("audit verify " + log);
  EXPECT_EQ(r2.code, 1) << r2.both();
  EXPECT_NE(r2.both().find("line 4: record 3 is missing"), std::string::npos) << r2.both();
  RunResult r3 = run_cli("audit verify " + (dir / "nonexistent.jsonl"));
  EXPECT_EQ(r3.code, 2) << r3.both();
}

}  // namespace
