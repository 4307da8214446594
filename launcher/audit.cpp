// The usage-record hash chain (see audit.h).
#include "launcher/audit.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/error.h"
#include "runtime/sha256.h"

namespace lt::lease {
namespace {

using nlohmann::json;

std::string canonical(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Verifies `text` (the whole log); shared by verify_log and append_record.
AuditResult verify_text(const std::string& text, const std::string& expected_head) {
  AuditResult r;
  r.head = kGenesisHash;
  bool head_seen = expected_head.empty();
  size_t line_no = 0, pos = 0;
  auto bad = [&](const std::string& why) {
    r.ok = false;
    r.bad_line = line_no;
    r.reason = "line " + std::to_string(line_no) + ": " + why;
    return r;
  };
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    ++line_no;
    if (nl == std::string::npos) return bad("record is not terminated by a newline (truncated or half-written)");
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    json rec;
    try {
      rec = json::parse(line);
    } catch (const std::exception&) {
      return bad("not a JSON record (altered or truncated)");
    }
    if (!rec.is_object() || !rec.contains("hash") || !rec["hash"].is_string() || !rec.contains("seq") ||
        !rec["seq"].is_number_unsigned() || !rec.contains("prev") || !rec["prev"].is_string())
      return bad("missing seq, prev or hash (not a chained usage record)");
    const size_t seq = rec["seq"].get<size_t>();
    if (record_hash(rec) != rec["hash"].get<std::string>())
      return bad("content does not match its hash (record " + std::to_string(seq) + " was altered)");
    if (seq > r.records)
      return bad(seq - r.records == 1 ? "record " + std::to_string(r.records) + " is missing"
                                      : "records " + std::to_string(r.records) + " to " + std::to_string(seq - 1) + " are missing");
    if (seq < r.records) return bad("record " + std::to_string(seq) + " appears again (duplicated or reordered)");
    if (rec["prev"].get<std::string>() != r.head)
      return bad(r.records == 0 ? "first record does not start the chain (records before it were removed)"
                                : "prev does not match the hash of record " + std::to_string(r.records - 1) +
                                      " (that record was altered, or records were removed or inserted)");
    r.head = rec["hash"].get<std::string>();
    if (r.head == expected_head) head_seen = true;
    ++r.records;
  }
  if (!head_seen) {
    r.ok = false;
    r.bad_line = line_no + 1;
    r.reason = "expected head " + expected_head + " is not in the log (" + std::to_string(r.records) +
               " records; the log was truncated or rewritten)";
  }
  return r;
}

std::string read_fd(int fd, const std::string& path) {
  std::string out;
  char buf[65536];
  if (::lseek(fd, 0, SEEK_SET) < 0) throw UserError(path + ": cannot seek: " + std::strerror(errno));
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw UserError(path + ": cannot read: " + std::strerror(errno));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  return out;
}

}  // namespace

std::string record_hash(const json& record) {
  json copy = record;
  copy.erase("hash");
  return sha256_hex(canonical(copy));
}

std::string append_record(const std::string& path, json record) {
  if (!record.is_object()) throw UserError("usage record must be a JSON object");
  std::error_code ec;
  std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw UserError(path + ": cannot open the usage log: " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }  // also drops the lock
  } closer{fd};
  while (::flock(fd, LOCK_EX) != 0)
    if (errno != EINTR) throw UserError(path + ": cannot lock the usage log: " + std::strerror(errno));
  AuditResult chain = verify_text(read_fd(fd, path), "");
  if (!chain.ok)
    throw UserError(path + ": usage log chain is broken at " + chain.reason +
                    "; the operator must reconcile it before new records are added");
  record["seq"] = chain.records;
  record["prev"] = chain.head;
  record.erase("hash");
  record["hash"] = record_hash(record);
  std::string line = canonical(record) + "\n";
  // One write of the whole line: O_APPEND puts it at the end even if another host's writer
  // (on a filesystem without flock) got there first.
  ssize_t w = ::write(fd, line.data(), line.size());
  if (w != ssize_t(line.size()) || ::fsync(fd) != 0)
    throw UserError(path + ": cannot append the usage record: " + std::strerror(errno));
  return record["hash"].get<std::string>();
}

AuditResult verify_log(const std::string& path, const std::string& expected_head) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path + ": cannot read the usage log");
  std::stringstream ss;
  ss << in.rdbuf();
  return verify_text(ss.str(), expected_head);
}

double gpu_seconds_used(const std::string& path, const std::string& lease_id) {
  std::error_code ec;
  if (path.empty() || !std::filesystem::exists(path, ec)) return 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path + ": cannot read the usage log");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  AuditResult r = verify_text(text, "");
  if (!r.ok) throw UserError(path + ": usage log chain is broken (" + r.reason + "); GPU-hours cannot be accounted");
  double total = 0;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    json rec = json::parse(line);
    if (rec.value("kind", "") == "job" && rec.value("lease", "") == lease_id)
      total += rec.value("gpu_seconds", 0.0);
  }
  return total;
}

}  // namespace lt::lease
