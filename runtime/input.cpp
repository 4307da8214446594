// Validated reading of untrusted files (see input.h).
#include "runtime/input.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/error.h"

namespace lt {

namespace {

const char* file_kind(mode_t m) {
  if (S_ISREG(m)) return "a regular file";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  return "not a regular file";
}

// Depth of the deepest array/object nesting, stopping as soon as it passes `limit`. Strings are
// skipped (with their escapes) so brackets inside them do not count.
int json_depth_exceeds(const std::string& s, int limit, size_t* at) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > limit) {
        *at = i;
        return depth;
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return 0;
}

// The line of the first dotted key or table header with more than `limit` dots, or 0. toml++
// bounds nested values itself but builds a dotted key's tables recursively, so a key of 10^5
// parts overflows the stack. A small scanner of TOML's lexical structure: strings (basic,
// literal, multi-line), comments, and which brackets open values (arrays, inline tables) versus
// table headers; dots count only where a key is being read.
size_t toml_key_depth_exceeds(const std::string& s, int limit) {
  std::vector<char> open;  // value brackets: '[' array, '{' inline table
  bool key = true, header = false, line_start = true;
  int dots = 0;
  size_t line = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '"' || c == '\'') {
      const bool multi = s.compare(i, 3, std::string(3, c)) == 0;
      i += multi ? 3 : 1;
      for (; i < s.size(); ++i) {
        if (s[i] == '\n') ++line;
        if (c == '"' && s[i] == '\\') {
          if (i + 1 < s.size() && s[i + 1] == '\n') ++line;
          ++i;
          continue;
        }
        if (s[i] == c && (!multi || s.compare(i, 3, std::string(3, c)) == 0)) {
          if (multi) i += 2;
          break;
        }
        if (!multi && s[i] == '\n') break;  // unterminated: toml++ reports it
      }
      line_start = false;
      continue;
    }
    if (c == '#') {
      while (i + 1 < s.size() && s[i + 1] != '\n') ++i;
      continue;
    }
    if (c == '\n') {
      ++line;
      header = false;
      if (open.empty()) key = true, dots = 0, line_start = true;
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r') continue;
    if (line_start && open.empty() && c == '[') header = true, key = true, dots = 0;
    line_start = false;
    if (c == '.' && key && ++dots > limit) return line;
    if (header) continue;
    if (key && c == '=') {
      key = false;
    } else if (!key && (c == '[' || c == '{')) {
      open.push_back(c);
      if (c == '{') key = true, dots = 0;
    } else if ((c == ']' || c == '}') && !open.empty()) {
      open.pop_back();
      key = false;
    } else if (c == ',' && !open.empty() && open.back() == '{') {
      key = true, dots = 0;
    }
  }
  return 0;
}

// Kernel filesystems where a run directory cannot (or must not) be created.
const char* pseudo_filesystem(const std::string& path) {
  struct statfs fs;
  if (::statfs(path.c_str(), &fs) != 0) return nullptr;
  switch ((unsigned long)fs.f_type) {
    case PROC_SUPER_MAGIC: return "/proc (procfs)";
    case SYSFS_MAGIC: return "/sys (sysfs)";
    case CGROUP_SUPER_MAGIC:
    case CGROUP2_SUPER_MAGIC: return "a cgroup filesystem";
    case DEBUGFS_MAGIC: return "debugfs";
    case TRACEFS_MAGIC: return "tracefs";
    case SECURITYFS_MAGIC: return "securityfs";
    case DEVPTS_SUPER_MAGIC: return "devpts";
    case BPF_FS_MAGIC: return "bpffs";
    default: return nullptr;
  }
}

}  // namespace

void check_output_directory(const std::string& path, const char* what) {
  if (path.empty()) throw UserError(std::string(what) + ": empty path");
  // The directory itself, or the nearest ancestor that exists (which the writer would create
  // the rest under).
  std::string at = path;
  bool exists_itself = true;
  struct stat st;
  for (;;) {
    if (::stat(at.c_str(), &st) == 0) break;
    const int err = errno;
    if (err != ENOENT)
      throw UserError(path + ": " + what + ": cannot use " + at + " (" + std::strerror(err) + ")");
    exists_itself = false;
    while (at.size() > 1 && at.back() == '/') at.pop_back();
    const size_t slash = at.find_last_of('/');
    at = slash == std::string::npos ? "." : slash == 0 ? "/" : at.substr(0, slash);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (exists_itself)
      throw UserError(path + ": " + what + " must be a directory, this is " + file_kind(st.st_mode));
    throw UserError(path + ": " + what + ": cannot be created: " + at + " is " + file_kind(st.st_mode));
  }
  if (const char* fs = pseudo_filesystem(at))
    throw UserError(path + ": " + what + ": " + at + " is on " + fs + ", not a place for a run's files");
  struct statvfs vfs;
  if (::statvfs(at.c_str(), &vfs) == 0 && (vfs.f_flag & ST_RDONLY))
    throw UserError(path + ": " + what + ": " + at + " is on a read-only filesystem");
  if (::access(at.c_str(), W_OK | X_OK) != 0)
    throw UserError(path + ": " + what + ": " + at + " is not writable (" + std::strerror(errno) + ")");
}

void check_toml_key_depth(const std::string& text, const std::string& source, const char* what) {
  if (const size_t line = toml_key_depth_exceeds(text, kMaxTomlKeyDepth))
    throw UserError(source + ":" + std::to_string(line) + ": " + what + ": a dotted key or table header with more than " +
                    std::to_string(kMaxTomlKeyDepth) + " parts");
}

toml::table parse_toml_file(const std::string& path, const char* what) {
  const std::string text = read_regular_file(path, what);
  check_toml_key_depth(text, path, what);
  try {
    return toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    throw UserError(path + ":" + std::to_string(src.begin.line) + ":" + std::to_string(src.begin.column) +
                    ": TOML syntax error: " + std::string(e.description()));
  }
}

int open_regular_file(const std::string& path, const char* what) {
  if (path.empty()) throw UserError(std::string(what) + ": empty path");
  // O_NONBLOCK: opening a FIFO with no writer would otherwise block forever.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) throw UserError(path + ": cannot open " + what + " (" + std::strerror(errno) + ")");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw UserError(path + ": cannot stat " + what + " (" + std::strerror(err) + ")");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw UserError(path + ": " + what + " must be a regular file, this is " + file_kind(st.st_mode));
  }
  // Reads of a regular file never block; clear the flag so nothing downstream sees EAGAIN.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

std::string read_regular_file(const std::string& path, const char* what, uint64_t max_bytes) {
  const int fd = open_regular_file(path, what);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  return read_regular_fd(fd, path, what, max_bytes);
}

std::string read_regular_fd(int fd, const std::string& path, const char* what, uint64_t max_bytes) {
  struct stat st;
  if (::fstat(fd, &st) != 0) throw UserError(path + ": cannot stat " + what + " (" + std::strerror(errno) + ")");
  if (!S_ISREG(st.st_mode))
    throw UserError(path + ": " + what + " must be a regular file, this is " + file_kind(st.st_mode));
  if ((uint64_t)st.st_size > max_bytes)
    throw UserError(path + ": " + what + " is " + std::to_string((uint64_t)st.st_size) +
                    " bytes, more than the " + std::to_string(max_bytes) + " accepted");
  std::string out;
  out.reserve((size_t)st.st_size);
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, (off_t)out.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw UserError(path + ": reading " + what + " failed (" + std::strerror(errno) + ")");
    if (n == 0) break;
    out.append(buf, (size_t)n);
    if (out.size() > max_bytes)  // the file grew while we read it
      throw UserError(path + ": " + what + " is more than the " + std::to_string(max_bytes) + " bytes accepted");
  }
  return out;
}

void require_directory(const std::string& path, const char* what) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    throw UserError(path + ": " + what + ": " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) throw UserError(path + ": " + what + " must be a directory, this is " + file_kind(st.st_mode));
}

nlohmann::json parse_json(const std::string& text, const std::string& source) {
  size_t at = 0;
  if (json_depth_exceeds(text, kMaxJsonDepth, &at))
    throw UserError(source + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels (at byte " +
                    std::to_string(at) + ")");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw UserError(source + ": not valid JSON (parse error at byte " + std::to_string(e.byte) + ")");
  } catch (const nlohmann::json::exception& e) {
    // The library's own tag ("[json.exception.out_of_range.406] ") means nothing to a user.
    std::string why = e.what();
    if (why.starts_with("[json.exception.")) why = why.substr(why.find("] ") + 2);
    throw UserError(source + ": not valid JSON (" + why + ")");
  }
}

nlohmann::json read_json_file(const std::string& path, const char* what) {
  return parse_json(read_regular_file(path, what), path);
}

std::string json_excerpt(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

JsonFields::JsonFields(const nlohmann::json& j, std::string source, std::string prefix)
    : j_(j), source_(std::move(source)), prefix_(std::move(prefix)) {
  if (!j_.is_object()) {
    if (prefix_.empty()) throw UserError(source_ + ": expected a JSON object, got " + json_excerpt(j_));
    throw UserError(source_ + ": field '" + prefix_.substr(0, prefix_.size() - 1) + "' must be an object, got " +
                    json_excerpt(j_));
  }
}

void JsonFields::fail(const std::string& key, const std::string& expected) const {
  auto it = j_.find(key);
  const std::string got = it == j_.end() ? std::string("nothing (missing)") : json_excerpt(*it);
  throw UserError(source_ + ": field '" + prefix_ + key + "' must be " + expected + ", got " + got);
}

bool JsonFields::has(const std::string& key) const {
  auto it = j_.find(key);
  return it != j_.end() && !it->is_null();
}

const nlohmann::json& JsonFields::raw(const std::string& key) const {
  auto it = j_.find(key);
  if (it == j_.end()) fail(key, "present");
  return *it;
}

int64_t JsonFields::integer(const std::string& key, int64_t lo, int64_t hi) const {
  auto it = j_.find(key);
  const std::string range = "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (it == j_.end()) fail(key, range);
  int64_t v = 0;
  if (it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    if (u > (uint64_t)std::numeric_limits<int64_t>::max()) fail(key, range);
    v = (int64_t)u;
  } else if (it->is_number_integer()) {
    v = it->get<int64_t>();
  } else {
    fail(key, range);
  }
  if (v < lo || v > hi) fail(key, range);
  return v;
}

uint64_t JsonFields::unsigned_integer(const std::string& key, uint64_t hi) const {
  auto it = j_.find(key);
  const std::string range = "an integer in [0, " + std::to_string(hi) + "]";
  if (it == j_.end()) fail(key, range);
  if (it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    if (u > hi) fail(key, range);
    return u;
  }
  if (it->is_number_integer() && it->get<int64_t>() >= 0 && (uint64_t)it->get<int64_t>() <= hi)
    return (uint64_t)it->get<int64_t>();
  fail(key, range);
}

double JsonFields::number(const std::string& key, double lo, double hi) const {
  auto it = j_.find(key);
  auto expected = [&] {
    char buf[96];
    std::snprintf(buf, sizeof buf, "a finite number in [%g, %g]", lo, hi);
    return std::string(buf);
  };
  if (it == j_.end() || !it->is_number()) fail(key, expected());
  const double d = it->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) fail(key, expected());
  return d;
}

std::string JsonFields::string(const std::string& key) const {
  auto it = j_.find(key);
  if (it == j_.end() || !it->is_string()) fail(key, "a string");
  return it->get<std::string>();
}

bool JsonFields::boolean(const std::string& key) const {
  auto it = j_.find(key);
  if (it == j_.end() || !it->is_boolean()) fail(key, "true or false");
  return it->get<bool>();
}

JsonFields JsonFields::object(const std::string& key) const {
  auto it = j_.find(key);
  if (it == j_.end() || !it->is_object()) fail(key, "an object");
  return JsonFields(*it, source_, prefix_ + key + ".");
}

const nlohmann::json& JsonFields::array(const std::string& key) const {
  auto it = j_.find(key);
  if (it == j_.end() || !it->is_array()) fail(key, "an array");
  return *it;
}

std::optional<int64_t> JsonFields::opt_integer(const std::string& key, int64_t lo, int64_t hi) const {
  if (!has(key)) return std::nullopt;
  return integer(key, lo, hi);
}

std::optional<double> JsonFields::opt_number(const std::string& key, double lo, double hi) const {
  if (!has(key)) return std::nullopt;
  return number(key, lo, hi);
}

std::optional<std::string> JsonFields::opt_string(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  return string(key);
}

}  // namespace lt
