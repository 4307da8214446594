// The usage-record hash chain (see audit.h): the one validated reader of a log, appends with
// their syslog anchors, and verification against a kept head or exported anchors.
#include "lease/audit.h"

#include <fcntl.h>
#include <sys/file.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>

#include "lease/manifest.h"
#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/sha256.h"

namespace lt::lease {
namespace {

using nlohmann::json;

std::string canonical(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

bool is_hex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool is_plain_name(const std::string& s) {
  return !s.empty() && s.size() <= 253 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

std::string hex64_field(const JsonFields& f, const std::string& key) {
  std::string v = f.string(key);
  if (!is_hex64(v)) f.fail(key, "64 lowercase hex digits (a SHA-256)");
  return v;
}

std::optional<TimePoint> opt_time_field(const JsonFields& f, const std::string& key) {
  std::optional<std::string> s = f.opt_string(key);
  if (!s) return std::nullopt;
  try {
    return parse_time(*s);
  } catch (const UserError&) {
    f.fail(key, "a UTC date-time such as 2025-06-01T00:00:00Z");
  }
}

void string_array(const JsonFields& f, const std::string& key) {
  const json& a = f.array(key);
  for (size_t i = 0; i < a.size(); ++i)
    if (!a[i].is_string()) f.fail(key, "an array of strings (element " + std::to_string(i) + " is not)");
}

const std::set<std::string> kJobFields = {"seq", "prev", "hash", "kind", "lease", "tenant", "operator",
                                          "manifest_sha256", "job_id", "ranks", "start", "end", "gpu_seconds",
                                          "nccl_version", "cuda_version", "env_sha256", "launcher", "exit_status",
                                          "attempt", "outcome", "reason"};

const std::set<std::string> kOutcomes = {"completed", "preempted", "failed", "bad-input", "watchdog"};

// Every field of a record besides the chain fields: typed, ranged, and consistent with each other.
void check_content(const JsonFields& f, UsageRecord& u) {
  for (const auto& item : f.json().items())
    if (!kJobFields.count(item.key()))
      throw UserError(f.source() + ": field '" + item.key() + "' is not a usage-record field");
  u.kind = f.string("kind");
  if (u.kind != "job") f.fail("kind", "\"job\"");
  u.lease = f.string("lease");
  if (!is_plain_name(u.lease)) f.fail("lease", "a lease id (letters, digits, '-', '_', '.')");
  u.gpu_seconds = f.number("gpu_seconds", 0.0, kMaxRecordGpuSeconds);
  for (const char* k : {"tenant", "operator", "job_id", "nccl_version", "cuda_version", "launcher"}) f.opt_string(k);
  if (f.has("manifest_sha256") && !f.string("manifest_sha256").empty())  // "" for the embedded local lease
    hex64_field(f, "manifest_sha256");
  if (f.has("env_sha256")) hex64_field(f, "env_sha256");
  f.opt_integer("exit_status", std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
  f.opt_integer("attempt", 1, std::numeric_limits<int32_t>::max());
  if (std::optional<std::string> o = f.opt_string("outcome"); o && !kOutcomes.count(*o))
    f.fail("outcome", "one of completed, preempted, failed, bad-input, watchdog");
  if (std::optional<std::string> r = f.opt_string("reason"); r && (r->size() > 1000 || r->find('\n') != std::string::npos))
    f.fail("reason", "one line of at most 1000 characters");
  std::optional<TimePoint> start = opt_time_field(f, "start"), end = opt_time_field(f, "end");
  if (start && end && *end < *start) f.fail("end", "a time not before start (" + format_time(*start) + ")");
  std::optional<size_t> device_ranks;
  if (f.has("ranks")) {
    const json& ranks = f.array("ranks");
    device_ranks = 0;
    for (size_t i = 0; i < ranks.size(); ++i) {
      JsonFields r(ranks[i], f.source(), "ranks[" + std::to_string(i) + "].");
      r.integer("rank", 0, std::numeric_limits<int32_t>::max());
      r.string("host");
      string_array(r, "devices");
      if (!r.raw("devices").empty()) ++*device_ranks;
      for (const auto& item : ranks[i].items())
        if (item.key() != "rank" && item.key() != "host" && item.key() != "devices" && item.key() != "devices_seen")
          r.fail(item.key(), "absent (not a field of a rank)");
      if (r.has("devices_seen") && !(r.raw("devices_seen").is_string() && r.raw("devices_seen") == "unreadable"))
        string_array(r, "devices_seen");
    }
  }
  // The launcher records wall time times the ranks holding devices; more than that was not measured.
  if (start && end && device_ranks) {
    const double most = double((*end - *start).count()) * double(*device_ranks);
    if (u.gpu_seconds > most)
      f.fail("gpu_seconds", "at most (end - start) x ranks with devices = " + std::to_string((long long)most));
  }
}

std::string count_records(size_t n) { return std::to_string(n) + (n == 1 ? " record" : " records"); }

std::string record_range(size_t from, size_t to) {
  return from == to ? "record " + std::to_string(from) : "records " + std::to_string(from) + " to " + std::to_string(to);
}

// Escapes what a syslog line cannot carry (control characters) and '%', so a path reads back
// from an exported log exactly as it was sent.
std::string escape_log_name(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f || c == '%') {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out;
}

// Sends one anchor: to syslog, or to the test seam's file.
void send_anchor(const std::string& message) {
  const char* file = std::getenv(kAnchorFileEnv);
  if (file && *file) {
    const std::string line = format_time(std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now())) +
                             " " + kAnchorIdent + "[" + std::to_string(::getpid()) + "]: " + message + "\n";
    const int fd = ::open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0644);
    const bool ok = fd >= 0 && ::write(fd, line.data(), line.size()) == ssize_t(line.size());
    const int err = errno;
    if (fd >= 0) ::close(fd);
    if (!ok)
      throw UserError(std::string(file) + " ($" + kAnchorFileEnv + "): cannot write the usage anchor (" +
                      std::strerror(err) + "); the record itself was appended");
    return;
  }
  // authpriv: Debian's rsyslog files it in /var/log/auth.log, readable by root and adm only.
  ::openlog(kAnchorIdent, LOG_PID, LOG_AUTHPRIV);
  ::syslog(LOG_NOTICE, "%s", message.c_str());
  ::closelog();
}

struct Anchor {
  size_t line = 0;  // in the anchors file
  uint64_t seq = 0;
  std::string hash, log;
};

// The anchors of every log in an exported syslog file: lines holding kAnchorMarker, whatever
// syslog put before it. A line with the marker that does not parse is an error: it is either
// ours and damaged, or someone's attempt to pass for one.
std::vector<Anchor> read_anchors(const std::string& path) {
  const std::string text = read_regular_file(path, "anchors file");
  std::vector<Anchor> out;
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    const size_t at = line.find(kAnchorMarker);
    if (at == std::string::npos) continue;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::string where = path + ":" + std::to_string(line_no);
    auto malformed = [&](const std::string& why) {
      return UserError(where + ": malformed usage anchor (" + why + "); expected '" + kAnchorMarker +
                       "seq=<n> hash=<64 hex> lease=<id> log=<path>'");
    };
    std::string rest = line.substr(at + std::strlen(kAnchorMarker));
    Anchor a;
    a.line = line_no;
    for (const char* key : {"seq=", "hash=", "lease="}) {
      if (rest.compare(0, std::strlen(key), key) != 0) throw malformed(std::string("no ") + key);
      const size_t sp = rest.find(' ');
      if (sp == std::string::npos) throw malformed("nothing after " + std::string(key));
      const std::string value = rest.substr(std::strlen(key), sp - std::strlen(key));
      rest = rest.substr(sp + 1);
      if (key[0] == 's') {
        if (value.empty() || value.size() > 19 || !std::all_of(value.begin(), value.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
          throw malformed("seq is not a record number");
        a.seq = std::stoull(value);
      } else if (key[0] == 'h') {
        if (!is_hex64(value)) throw malformed("hash is not 64 hex digits");
        a.hash = value;
      }
    }
    if (rest.compare(0, 4, "log=") != 0 || rest.size() == 4) throw malformed("no log=");
    a.log = rest.substr(4);
    out.push_back(a);
  }
  return out;
}

// The --anchors check of a chain that verified on its own.
void check_anchors(const Chain& c, const std::string& anchors_path, const std::string& log_name, AuditResult& r) {
  const std::vector<Anchor> all = read_anchors(anchors_path);
  const size_t n = c.records.size();
  auto fail = [&](size_t bad_line, const std::string& why) {
    r.ok = false;
    r.bad_line = bad_line;
    r.reason = why;
  };
  std::set<uint64_t> seen;
  size_t other_logs = 0;
  uint64_t last = 0;
  const Anchor* last_anchor = nullptr;
  for (const Anchor& a : all) {
    if (a.log != log_name) {
      ++other_logs;
      continue;
    }
    const std::string where = anchors_path + ":" + std::to_string(a.line);
    if (a.seq >= n) {
      uint64_t top = a.seq;
      for (const Anchor& b : all)
        if (b.log == log_name) top = std::max(top, b.seq);
      return fail(n == 0 ? 1 : c.records.back().line + 1,
                  "record " + std::to_string(a.seq) + " is anchored (" + where + ") but the log ends after " +
                      count_records(n) + ": at least " + record_range(n, top) + (n == top ? " was" : " were") +
                      " cut off the end (truncated or rolled back)");
    }
    const UsageRecord& u = c.records[a.seq];
    if (u.hash != a.hash)
      return fail(u.line, "line " + std::to_string(u.line) + ": record " + std::to_string(a.seq) +
                              " does not match its anchor (" + where + ", hash " + a.hash.substr(0, 16) +
                              "...): it or a record before it was rewritten and the hashes recomputed");
    if (seen.count(a.seq)) continue;  // the same anchor twice (forwarded twice): nothing new
    if (last_anchor && a.seq < last)
      return fail(u.line, where + " anchors record " + std::to_string(a.seq) + " after " + anchors_path + ":" +
                              std::to_string(last_anchor->line) + " anchored record " + std::to_string(last) +
                              ": the anchors are out of order (an anchor was added later for an earlier record)");
    seen.insert(a.seq);
    last = a.seq;
    last_anchor = &a;
  }
  r.anchors = seen.size();
  if (!last_anchor)
    return fail(c.records.back().line,
                "no anchor in " + anchors_path + " names this log (" + log_name + "), so none of its " +
                    count_records(n) + " is anchored" +
                    (other_logs ? " (" + std::to_string(other_logs) +
                                      " anchor(s) name other logs: pass --anchored-as with the path the log was "
                                      "written under)"
                                : std::string()));
  if (last + 1 < n)
    return fail(c.records[last + 1].line,
                "line " + std::to_string(c.records[last + 1].line) + ": " + record_range(last + 1, n - 1) +
                    " (the last " + count_records(n - 1 - last) + ") " + (n - 1 - last == 1 ? "has" : "have") +
                    " no anchor in " + anchors_path + " (the last anchored is record " + std::to_string(last) +
                    "): appended without the launcher's anchor (forged), or the anchors were lost");
}

}  // namespace

std::string record_hash(const json& record) {
  json copy = record;
  copy.erase("hash");
  return sha256_hex(canonical(copy));
}

Chain read_chain(const std::string& text, const std::string& source) {
  Chain c;
  AuditResult& r = c.result;
  r.head = kGenesisHash;
  size_t line_no = 0, pos = 0;
  auto bad = [&](const std::string& why) {
    r.ok = false;
    r.bad_line = line_no;
    r.reason = "line " + std::to_string(line_no) + ": " + why + " (" + count_records(r.records) +
               " before it verified)";
    return c;
  };
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    ++line_no;
    if (nl == std::string::npos) return bad("record is not terminated by a newline (truncated or half-written)");
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    const std::string where = source + ":" + std::to_string(line_no);
    json rec;
    try {
      rec = parse_json(line, where);
    } catch (const UserError& e) {
      std::string why = e.what();
      if (why.rfind(where + ": ", 0) == 0) why = why.substr(where.size() + 2);
      return bad("not a JSON record (altered or truncated: " + why + ")");
    }
    JsonFields f(rec, where);
    UsageRecord u;
    u.line = line_no;
    u.seq = f.unsigned_integer("seq");
    u.prev = hex64_field(f, "prev");
    u.hash = hex64_field(f, "hash");
    if (record_hash(rec) != u.hash)
      return bad("content does not match its hash (record " + std::to_string(u.seq) + " was altered)");
    if (u.seq > r.records)
      return bad(record_range(r.records, u.seq - 1) + (u.seq - r.records == 1 ? " is missing" : " are missing"));
    if (u.seq < r.records) return bad("record " + std::to_string(u.seq) + " appears again (duplicated or reordered)");
    if (u.prev != r.head)
      return bad(r.records == 0 ? "first record does not start the chain (records before it were removed)"
                                : "prev does not match the hash of record " + std::to_string(r.records - 1) +
                                      " (that record was altered, or records were removed or inserted)");
    check_content(f, u);
    r.head = u.hash;
    ++r.records;
    c.records.push_back(std::move(u));
  }
  return c;
}

std::string anchor_log_name(const std::string& path) {
  return escape_log_name(std::filesystem::absolute(path).lexically_normal().string());
}

std::string anchor_message(uint64_t seq, const std::string& hash, const std::string& lease, const std::string& log) {
  return std::string(kAnchorMarker) + "seq=" + std::to_string(seq) + " hash=" + hash +
         " lease=" + (lease.empty() ? "-" : lease) + " log=" + log;
}

std::string append_record(const std::string& path, json record) {
  if (!record.is_object()) throw UserError("usage record must be a JSON object");
  std::error_code ec;
  std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  // O_NONBLOCK: a FIFO planted in the log's place must be refused (read_regular_fd below, before
  // anything is written), not waited on.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0644);
  if (fd < 0) throw UserError(path + ": cannot open the usage log: " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }  // also drops the lock
  } closer{fd};
  while (::flock(fd, LOCK_EX) != 0)
    if (errno != EINTR) throw UserError(path + ": cannot lock the usage log: " + std::strerror(errno));
  Chain chain = read_chain(read_regular_fd(fd, path, "usage log"), path);
  if (!chain.result.ok)
    throw UserError(path + ": usage log chain is broken at " + chain.result.reason +
                    "; the operator must reconcile it before new records are added");
  record["seq"] = chain.result.records;
  record["prev"] = chain.result.head;
  record.erase("hash");
  record["hash"] = record_hash(record);
  const std::string line = canonical(record) + "\n";
  // What we write must read back through the same reader, or the next append would refuse it.
  {
    const std::string where = path + ":" + std::to_string(chain.records.size() + 1) + " (the new record)";
    json back = parse_json(line, where);
    UsageRecord u;
    check_content(JsonFields(back, where), u);
  }
  // One write of the whole line: O_APPEND puts it at the end even if another host's writer
  // (on a filesystem without flock) got there first.
  ssize_t w = ::write(fd, line.data(), line.size());
  if (w != ssize_t(line.size()) || ::fsync(fd) != 0)
    throw UserError(path + ": cannot append the usage record: " + std::strerror(errno));
  const std::string hash = record["hash"].get<std::string>();
  send_anchor(anchor_message(chain.result.records, hash, record.value("lease", ""), anchor_log_name(path)));
  return hash;
}

AuditResult verify_log(const std::string& path, const VerifyOptions& opt) {
  if (!opt.head.empty() && !is_hex64(opt.head))
    throw UserError("--head: expected the 64 lowercase hex digits of a record's hash, got '" + opt.head + "'");
  const std::string text = read_regular_file(path, "usage log");
  if (text.empty())
    throw UserError(path + ": usage log is empty: there is no chain to verify (no record was ever appended, or "
                           "the log was emptied)");
  Chain c = read_chain(text, path);
  AuditResult r = c.result;
  if (!r.ok) return r;
  const size_t n = c.records.size();
  if (!opt.head.empty() && r.head != opt.head) {
    r.ok = false;
    auto it = std::find_if(c.records.begin(), c.records.end(), [&](const UsageRecord& u) { return u.hash == opt.head; });
    if (it == c.records.end()) {
      r.bad_line = c.records.back().line + 1;
      r.reason = "expected head " + opt.head + " is not in the log (" + count_records(n) +
                 "; the log was truncated or rewritten)";
    } else {
      const size_t i = size_t(it - c.records.begin()), after = n - 1 - i;
      r.bad_line = c.records[i + 1].line;
      r.reason = "line " + std::to_string(r.bad_line) + ": " + count_records(after) + " follow" +
                 (after == 1 ? "s" : "") + " the expected head (record " + std::to_string(i) + "): " +
                 record_range(i + 1, n - 1) + (after == 1 ? " was" : " were") + " appended after the head was kept";
    }
    return r;
  }
  if (!opt.anchors.empty())
    check_anchors(c, opt.anchors, anchor_log_name(opt.anchored_as.empty() ? path : opt.anchored_as), r);
  return r;
}

double gpu_seconds_used(const std::string& path, const std::string& lease_id) {
  if (path.empty()) return 0;
  std::error_code ec;
  // Only a log that is not there at all reads as "nothing used"; a dangling symlink is read
  // (and refused) like anything else that stands in the log's place.
  if (std::filesystem::symlink_status(path, ec).type() == std::filesystem::file_type::not_found) return 0;
  const std::string text = read_regular_file(path, "usage log");
  Chain c = read_chain(text, path);
  if (!c.result.ok)
    throw UserError(path + ": usage log chain is broken (" + c.result.reason + "); GPU-hours cannot be accounted");
  double total = 0;
  for (const UsageRecord& u : c.records)
    if (u.kind == "job" && u.lease == lease_id) total += u.gpu_seconds;
  return total;
}

}  // namespace lt::lease
