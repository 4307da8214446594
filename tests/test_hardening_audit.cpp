// Issue #12, the usage log: every record field typed and ranged (file:line and field named,
// exit 2), no chain claimed for an empty log or a non-file, --head meaning the exact last
// record, and anchors sent to syslog on append that `audit verify --anchors` checks.
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
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
namespace fs = std::filesystem;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> v;
  std::istringstream in(text);
  std::string l;
  while (std::getline(in, l)) v.push_back(l);
  return v;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& l : v) s += l + "\n";
  return s;
}

// A job record as `launch` writes it: two device ranks for an hour.
json job(int i) {
  return {{"kind", "job"},
          {"lease", "acme-2024"},
          {"tenant", "acme"},
          {"operator", "op"},
          {"manifest_sha256", std::string(64, 'c')},
          {"job_id", "job" + std::to_string(i)},
          {"ranks", json::array({{{"rank", 0}, {"host", "node01"}, {"devices", {"GPU-a"}}},
                                 {{"rank", 1}, {"host", "node01"}, {"devices", {"GPU-b"}}, {"devices_seen", "unreadable"}}})},
          {"start", "2025-06-01T00:00:00Z"},
          {"end", "2025-06-01T01:00:00Z"},
          {"gpu_seconds", 7200.0},
          {"nccl_version", "2.21.5"},
          {"cuda_version", "12.4"},
          {"env_sha256", std::string(64, 'e')},
          {"launcher", "mpirun"},
          {"exit_status", 0}};
}

std::string rehash(json rec) {
  rec["hash"] = record_hash(rec);
  return rec.dump();
}

class UsageLog : public ::testing::Test {
 protected:
  void SetUp() override {
    anchors = dir / "anchors.log";
    ::setenv(kAnchorFileEnv, anchors.c_str(), 1);
    log = dir / "usage.jsonl";
    for (int i = 0; i < 4; ++i) heads.push_back(append_record(log, job(i)));
    good = lines_of(read_file(log));
  }
  void TearDown() override { ::unsetenv(kAnchorFileEnv); }

  // The log with record `from` edited and it and every later record re-chained with recomputed
  // hashes, as someone who knows the scheme and can write the file would do.
  std::vector<std::string> forged(size_t from, const std::function<void(json&)>& edit) {
    std::vector<std::string> v = good;
    std::string prev = from == 0 ? kGenesisHash : json::parse(v[from - 1])["hash"].get<std::string>();
    for (size_t i = from; i < v.size(); ++i) {
      json rec = json::parse(v[i]);
      rec["prev"] = prev;
      if (i == from) edit(rec);
      v[i] = rehash(rec);
      prev = json::parse(v[i])["hash"];
    }
    return v;
  }
  // Appends `rec` to the file directly, chained and hashed correctly but with no anchor.
  void append_unanchored(json rec) {
    std::vector<std::string> v = lines_of(read_file(log));
    rec["seq"] = v.size();
    rec["prev"] = json::parse(v.back())["hash"];
    v.push_back(rehash(rec));
    write_file(log, joined(v));
  }
  RunResult verify_cli(const std::string& args) { return run_cli("audit verify " + shell_quote(log) + " " + args); }

  TempDir dir;
  std::string log, anchors;
  std::vector<std::string> heads, good;
};

// ---- 1. every field typed and ranged, through one reader ------------------------------------

struct BadField {
  const char* field;  // as named in the error
  std::function<void(json&)> edit;
};

TEST_F(UsageLog, MalformedRecordIsRefusedByVerifyAccountingAndAppendNamingFileLineAndField) {
  const std::vector<BadField> cases = {
      {"gpu_seconds", [](json& r) { r["gpu_seconds"] = -1.0; }},
      {"gpu_seconds", [](json& r) { r["gpu_seconds"] = "3600"; }},
      {"gpu_seconds", [](json& r) { r["gpu_seconds"] = nullptr; }},  // what a NaN is written as
      {"gpu_seconds", [](json& r) { r["gpu_seconds"] = 1e300; }},
      {"gpu_seconds", [](json& r) { r.erase("gpu_seconds"); }},
      {"gpu_seconds", [](json& r) { r["gpu_seconds"] = 7201.0; }},  // more than 1 h x 2 device ranks
      {"lease", [](json& r) { r["lease"] = 42; }},
      {"lease", [](json& r) { r["lease"] = "../acme"; }},
      {"kind", [](json& r) { r["kind"] = "refund"; }},
      {"seq", [](json& r) { r["seq"] = std::to_string(r["seq"].get<int>()); }},
      {"prev", [](json& r) { r["prev"] = 5; }},
      {"start", [](json& r) { r["start"] = "yesterday"; }},
      {"end", [](json& r) { r["end"] = "2025-05-31T00:00:00Z"; }},
      {"exit_status", [](json& r) { r["exit_status"] = "0"; }},
      {"exit_status", [](json& r) { r["exit_status"] = 10000000000LL; }},
      {"ranks", [](json& r) { r["ranks"] = "all"; }},
      {"ranks[0].rank", [](json& r) { r["ranks"][0]["rank"] = -1; }},
      {"ranks[1].devices", [](json& r) { r["ranks"][1]["devices"] = json::array({1}); }},
      {"ranks[1].devices_seen", [](json& r) { r["ranks"][1]["devices_seen"] = "plenty"; }},
      {"env_sha256", [](json& r) { r["env_sha256"] = "abc"; }},
      {"refund_seconds", [](json& r) { r["refund_seconds"] = 100; }},
  };
  for (size_t last : {size_t(3), size_t(1)}) {  // the last record, and one in the middle
    for (const BadField& c : cases) {
      SCOPED_TRACE(std::string(c.field) + " in record " + std::to_string(last));
      const std::string text = joined(forged(last, c.edit));
      write_file(log, text);
      const std::string where = log + ":" + std::to_string(last + 1) + ": field '" + c.field + "'";
      try {
        verify_log(log);
        ADD_FAILURE() << "verify accepted it";
      } catch (const lt::UserError& e) {
        EXPECT_NE(std::string(e.what()).find(where), std::string::npos) << e.what();
      }
      EXPECT_THROW(gpu_seconds_used(log, "acme-2024"), lt::UserError);
      EXPECT_THROW(append_record(log, job(9)), lt::UserError);
      EXPECT_EQ(read_file(log), text);  // nothing built on it
    }
  }
  // The CLI: exit 2, one line naming file, line and field; no claim of a chain.
  write_file(log, joined(forged(3, [](json& r) { r["gpu_seconds"] = -3600.0; })));
  RunResult r = verify_cli("");
  EXPECT_EQ(r.code, 2) << r.both();
  EXPECT_EQ(count_lines(r.both()), 1) << r.both();
  EXPECT_NE(r.err.find(log + ":4: field 'gpu_seconds' must be a finite number in [0,"), std::string::npos) << r.both();
  EXPECT_EQ(r.both().find("chain intact"), std::string::npos) << r.both();
}

TEST_F(UsageLog, AppendRefusesAMalformedNewRecordAndWritesNothing) {
  const std::string before = read_file(log);
  json bad = job(5);
  bad["gpu_seconds"] = -1.0;
  EXPECT_THROW(append_record(log, bad), lt::UserError);
  EXPECT_THROW(append_record(log, {{"kind", "job"}, {"lease", "acme-2024"}}), lt::UserError);
  EXPECT_EQ(read_file(log), before);
  EXPECT_EQ(count_lines(read_file(anchors)), 4);
}

TEST_F(UsageLog, AccountingSumsOnlyValidatedJobRecordsOfTheLease) {
  EXPECT_DOUBLE_EQ(gpu_seconds_used(log, "acme-2024"), 4 * 7200.0);
  EXPECT_DOUBLE_EQ(gpu_seconds_used(log, "globex-2024"), 0.0);
  // A value that is no double at all (1e400) breaks the chain: refused, never summed as inf.
  std::vector<std::string> v = good;
  std::string& last = v.back();
  last.replace(last.find("\"gpu_seconds\":7200.0"), 20, "\"gpu_seconds\":1e400");
  write_file(log, joined(v));
  EXPECT_THROW(gpu_seconds_used(log, "acme-2024"), lt::UserError);
  AuditResult r = verify_log(log);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_line, 4u);
  EXPECT_NE(r.reason.find("not a JSON record"), std::string::npos) << r.reason;
}

// ---- 2. no chain claimed where there is none ------------------------------------------------

TEST(UsageLogInput, EmptyLogDirectoryFifoAndDanglingLinkAreErrorsNotChains) {
  TempDir dir;
  ::setenv(kAnchorFileEnv, (dir / "anchors.log").c_str(), 1);
  const std::string empty = dir / "empty.jsonl", sub = dir / "logdir", fifo = dir / "fifo.jsonl",
                    dangling = dir / "dangling.jsonl";
  write_file(empty, "");
  fs::create_directory(sub);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  fs::create_symlink(dir / "nowhere.jsonl", dangling);
  for (const std::string& p : {empty, sub, fifo}) {
    SCOPED_TRACE(p);
    EXPECT_THROW(verify_log(p), lt::UserError);
    RunResult r = run_sh("timeout 20 " + std::string(LT_CLI) + " audit verify " + shell_quote(p));
    EXPECT_EQ(r.code, 2) << r.both();
    EXPECT_EQ(count_lines(r.both()), 1) << r.both();
    EXPECT_EQ(r.both().find("chain intact"), std::string::npos) << r.both();
  }
  EXPECT_NE(run_cli("audit verify " + shell_quote(empty)).err.find("usage log is empty"), std::string::npos);
  // Accounting: a log not yet there or still empty has used nothing; anything else in its place
  // is refused, never read as "nothing used", and never waited on.
  EXPECT_DOUBLE_EQ(gpu_seconds_used(empty, "acme-2024"), 0.0);
  EXPECT_DOUBLE_EQ(gpu_seconds_used(dir / "absent.jsonl", "acme-2024"), 0.0);
  for (const std::string& p : {sub, fifo, dangling}) {
    SCOPED_TRACE(p);
    EXPECT_THROW(gpu_seconds_used(p, "acme-2024"), lt::UserError);
  }
  for (const std::string& p : {sub, fifo}) {
    SCOPED_TRACE(p);
    EXPECT_THROW(append_record(p, job(0)), lt::UserError);
  }
  append_record(empty, job(0));  // an empty log starts a chain
  EXPECT_TRUE(verify_log(empty).ok);
  ::unsetenv(kAnchorFileEnv);
}

// ---- 3. --head is the exact last record -----------------------------------------------------

TEST_F(UsageLog, HeadMustBeTheExactLastRecord) {
  EXPECT_TRUE(verify_log(log, {.head = heads.back()}).ok);
  AuditResult r = verify_log(log, {.head = heads[1]});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_line, 3u);
  EXPECT_NE(r.reason.find("2 records follow the expected head (record 1)"), std::string::npos) << r.reason;
  r = verify_log(log, {.head = std::string(64, 'a')});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.reason.find("is not in the log"), std::string::npos) << r.reason;

  RunResult ok = verify_cli("--head " + heads.back());
  EXPECT_EQ(ok.code, 0) << ok.both();
  RunResult early = verify_cli("--head " + heads[2]);
  EXPECT_EQ(early.code, 1) << early.both();
  EXPECT_NE(early.err.find("1 record follows the expected head (record 2)"), std::string::npos) << early.both();
  RunResult junk = verify_cli("--head xyz");
  EXPECT_EQ(junk.code, 2) << junk.both();
  EXPECT_NE(run_cli("audit verify --help").out.find("LAST record"), std::string::npos);
}

// ---- 4. anchors outside the file ------------------------------------------------------------

TEST_F(UsageLog, EachAppendSendsOneAnchorWithItsSeqAndHash) {
  std::vector<std::string> lines = lines_of(read_file(anchors));
  ASSERT_EQ(lines.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NE(lines[i].find(std::string(kAnchorIdent) + "["), std::string::npos) << lines[i];
    EXPECT_NE(lines[i].find(anchor_message(i, heads[i], "acme-2024", anchor_log_name(log))), std::string::npos)
        << lines[i];
  }
  EXPECT_NE(lines[0].find("log=" + fs::absolute(log).lexically_normal().string()), std::string::npos);
}

TEST_F(UsageLog, IntactChainPassesItsAnchors) {
  AuditResult r = verify_log(log, {.anchors = anchors});
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.anchors, 4u);
  RunResult c = verify_cli("--anchors " + shell_quote(anchors) + " --head " + heads.back());
  EXPECT_EQ(c.code, 0) << c.both();
  EXPECT_NE(c.out.find("4 anchor(s) match"), std::string::npos) << c.both();
}

TEST_F(UsageLog, ForgedAppendPassesThePlainChainButNotTheAnchors) {
  json extra = job(4);
  extra["lease"] = "globex-2024";  // someone charges another lease
  append_unanchored(extra);
  EXPECT_TRUE(verify_log(log).ok);
  AuditResult r = verify_log(log, {.anchors = anchors});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_line, 5u);
  EXPECT_NE(r.reason.find("record 4 (the last 1 record) has no anchor"), std::string::npos) << r.reason;
  append_unanchored(job(5));
  r = verify_log(log, {.anchors = anchors});
  EXPECT_NE(r.reason.find("records 4 to 5 (the last 2 records) have no anchor"), std::string::npos) << r.reason;
  RunResult c = verify_cli("--anchors " + shell_quote(anchors));
  EXPECT_EQ(c.code, 1) << c.both();
}

TEST_F(UsageLog, TruncatedChainFailsItsAnchors) {
  write_file(log, joined({good[0], good[1]}));
  EXPECT_TRUE(verify_log(log).ok);
  AuditResult r = verify_log(log, {.anchors = anchors});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.reason.find("record 2 is anchored"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("at least records 2 to 3 were cut off the end"), std::string::npos) << r.reason;
  EXPECT_EQ(verify_cli("--anchors " + shell_quote(anchors)).code, 1);
}

TEST_F(UsageLog, HistoryRewrittenWithRecomputedHashesFailsItsAnchors) {
  write_file(log, joined(forged(1, [](json& r) { r["gpu_seconds"] = 60.0; })));
  EXPECT_TRUE(verify_log(log).ok);  // the chain alone cannot tell
  AuditResult r = verify_log(log, {.anchors = anchors});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.bad_line, 2u);
  EXPECT_NE(r.reason.find("record 1 does not match its anchor"), std::string::npos) << r.reason;
  // Rewritten from the start, with anchors forged for the new chain (anyone can write to
  // syslog): the old anchors of the same log still contradict it.
  const std::string real = read_file(anchors);
  fs::remove(log);
  fs::remove(anchors);
  append_record(log, job(7));
  write_file(anchors, real + read_file(anchors));
  r = verify_log(log, {.anchors = anchors});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.reason.find("record 0 does not match its anchor"), std::string::npos) << r.reason;
}

TEST_F(UsageLog, AnchorsAreReadFromSyslogExportsAndMustBeInOrder) {
  // The same messages as /var/log/auth.log and `journalctl -o cat` show them, among other
  // programs' lines and another log's anchors.
  std::vector<std::string> msgs;
  for (const std::string& l : lines_of(read_file(anchors))) msgs.push_back(l.substr(l.find(kAnchorMarker)));
  const std::string other = anchor_message(0, std::string(64, 'f'), "globex-2024", "/data/globex/usage.jsonl");
  const std::string auth_log = "Dec  2 13:42:25 node01 sshd[811]: Accepted publickey for acme\n"
                               "Dec  2 13:42:26 node01 leasetrain-usage[900]: " + msgs[0] + "\n"
                               "Dec  2 13:42:27 node01 leasetrain-usage[901]: " + other + "\n"
                               "Dec  2 13:42:28 node01 leasetrain-usage[902]: " + msgs[1] + "\n"
                               "Dec  2 13:42:28 node01 leasetrain-usage[902]: " + msgs[1] + "\n"  // forwarded twice
                               "Dec  2 13:42:29 node01 CRON[77]: pam_unix(cron:session): session opened\n";
  write_file(dir / "auth.log", auth_log + msgs[2] + "\n" + msgs[3]);  // the journal part has no final newline
  AuditResult r = verify_log(log, {.anchors = dir / "auth.log"});
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.anchors, 4u);
  // Anchors out of order: a later anchor for an earlier record was added afterwards.
  write_file(dir / "swapped.log", joined({msgs[0], msgs[2], msgs[1], msgs[3]}));
  r = verify_log(log, {.anchors = dir / "swapped.log"});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.reason.find("out of order"), std::string::npos) << r.reason;
  // A damaged anchor line is an error (exit 2), not skipped.
  write_file(dir / "bad.log", joined({msgs[0], std::string(kAnchorMarker) + "seq=1 hash=zz lease=acme-2024 log=" + log}));
  EXPECT_THROW(verify_log(log, {.anchors = dir / "bad.log"}), lt::UserError);
  RunResult c = verify_cli("--anchors " + shell_quote(dir / "bad.log"));
  EXPECT_EQ(c.code, 2) << c.both();
  EXPECT_NE(c.err.find(dir / "bad.log:2: malformed usage anchor"), std::string::npos) << c.both();
}

TEST_F(UsageLog, ACopyIsVerifiedUnderTheNameItWasAnchoredAs) {
  const std::string copy = dir / "copy.jsonl";
  fs::copy_file(log, copy);
  AuditResult r = verify_log(copy, {.anchors = anchors});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.reason.find("--anchored-as"), std::string::npos) << r.reason;
  r = verify_log(copy, {.anchors = anchors, .anchored_as = log});
  EXPECT_TRUE(r.ok) << r.reason;
  RunResult c = run_cli("audit verify " + shell_quote(copy) + " --anchors " + shell_quote(anchors) +
                        " --anchored-as " + shell_quote(log));
  EXPECT_EQ(c.code, 0) << c.both();
}

// Without the test seam the anchor goes to syslog: checked in a child with its own mount
// namespace, where a tmpfs on /dev holds our socket as /dev/log (skipped where namespaces are
// not allowed).
TEST(UsageLogSyslog, WithoutTheSeamTheAnchorGoesToSyslogAsAuthprivNotice) {
  TempDir dir;
  const std::string log = dir / "usage.jsonl";
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    auto finish = [&](int code, const std::string& msg) {
      (void)!::write(pipefd[1], msg.data(), msg.size());
      ::_exit(code);
    };
    ::unsetenv(kAnchorFileEnv);
    if (::unshare(CLONE_NEWNS) != 0 && ::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) finish(77, "no mount namespace");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("none", "/dev", "tmpfs", 0, nullptr) != 0)
      finish(77, "cannot mount a tmpfs on /dev");
    const int s = ::socket(AF_UNIX, SOCK_DGRAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, "/dev/log");
    if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) finish(77, "cannot bind /dev/log");
    std::string hash;
    try {
      hash = append_record(log, job(0));
    } catch (const std::exception& e) {
      finish(1, std::string("append failed: ") + e.what());
    }
    char buf[4096];
    timeval tv{5, 0};
    ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const ssize_t n = ::recv(s, buf, sizeof buf, 0);
    if (n <= 0) finish(1, "nothing arrived at /dev/log");
    finish(0, hash + "\n" + std::string(buf, size_t(n)));
  }
  ::close(pipefd[1]);
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) got.append(buf, size_t(n));
  ::close(pipefd[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  if (WEXITSTATUS(st) == 77) GTEST_SKIP() << got;
  ASSERT_EQ(WEXITSTATUS(st), 0) << got;
  const std::string hash = got.substr(0, got.find('\n')), datagram = got.substr(got.find('\n') + 1);
  // <85>: facility authpriv (10), severity notice (5); then the ident with the pid, then ours.
  char pri[16];
  std::snprintf(pri, sizeof pri, "<%d>", LOG_AUTHPRIV | LOG_NOTICE);
  EXPECT_EQ(datagram.rfind(pri, 0), 0u) << datagram;
  EXPECT_NE(datagram.find(std::string(kAnchorIdent) + "["), std::string::npos) << datagram;
  EXPECT_NE(datagram.find(anchor_message(0, hash, "acme-2024", anchor_log_name(log))), std::string::npos) << datagram;
  // What syslog received is an anchors file `audit verify --anchors` accepts.
  write_file(dir / "anchors.log", datagram + "\n");
  AuditResult r = verify_log(log, {.anchors = dir / "anchors.log"});
  EXPECT_TRUE(r.ok) << r.reason;
}

// The launcher's own append: a rank's record file is the tenant's, so a FIFO in its place must
// neither hang the launcher nor cost the usage record; the record is anchored.
TEST(UsageLogLaunch, AHostileRankRecordNeitherHangsNorDropsTheUsageRecord) {
  if (run_sh("command -v mpirun").code != 0) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  const std::string log = dir / "usage.jsonl", anchors = dir / "anchors.log";
  RunResult r = run_sh("timeout 60 " + std::string(LT_CLI) + " launch --launcher mpirun --np 1 --usage-log " +
                           shell_quote(log) + " --job-dir " + shell_quote(dir / "job") +
                           " -- sh -c 'mkfifo \"$LEASETRAIN_JOB_DIR/rank-0.json\"'",
                       dir.path.string(), {{kAnchorFileEnv, anchors}});
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.err.find("rank record must be a regular file"), std::string::npos) << r.both();
  AuditResult a = verify_log(log, {.anchors = anchors});
  EXPECT_TRUE(a.ok) << a.reason;
  EXPECT_EQ(a.records, 1u);
  json rec = json::parse(lines_of(read_file(log))[0]);
  EXPECT_EQ(rec["ranks"][0]["devices_seen"], "unreadable");
  EXPECT_EQ(rec["lease"], "local");
}

}  // namespace
