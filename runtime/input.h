// The one way leasetrain reads a file it did not write in this process: config, shards,
// checkpoints, manifests, usage logs, metrics. Every reader goes through here so a FIFO, a
// device, a directory, a huge file or hostile JSON is refused with one line (UserError, exit 2)
// naming the file and field, never a hang, a crash or an uncaught library exception.
#pragma once
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <toml++/toml.h>

namespace lt {

// The deepest JSON nesting any of our files needs is 4; hostile input can nest a million deep.
inline constexpr int kMaxJsonDepth = 64;
// Text inputs (JSON, TOML, manifests) larger than this are refused before being read.
inline constexpr uint64_t kMaxTextInputBytes = 256ull << 20;

// Opens `path` for reading and checks it is a regular file (a FIFO, socket, device or directory
// is refused without blocking: O_NONBLOCK on open, then fstat). `what` names the input in the
// error ("config", "shard", ...). Returns an fd the caller owns (close-on-exec).
int open_regular_file(const std::string& path, const char* what);

// The whole of a regular file, at most `max_bytes` long.
std::string read_regular_file(const std::string& path, const char* what,
                              uint64_t max_bytes = kMaxTextInputBytes);

// The same for a file the caller opened itself (to lock it, or to append to it afterwards):
// refuses anything but a regular file, then reads it from offset 0 (the fd's position is left
// alone). `path` only names it in errors; the caller keeps the fd.
std::string read_regular_fd(int fd, const std::string& path, const char* what,
                            uint64_t max_bytes = kMaxTextInputBytes);

// Throws UserError unless `path` is an existing directory (not following a final symlink is
// not required here: directories a job writes are resolved by the write path).
void require_directory(const std::string& path, const char* what);

// Throws UserError unless a run can write into `path` as a directory: it is one already, or the
// nearest existing ancestor is a writable directory on a real filesystem (not read-only, not
// /proc, /sys or another kernel pseudo-filesystem). Creates nothing: the writer does, after
// its own path checks.
void check_output_directory(const std::string& path, const char* what);

// read_regular_file + toml::parse: a TOML syntax error is "<path>:<line>:<col>: TOML syntax
// error: ...". toml++ bounds nested arrays and inline tables itself (TOML_MAX_NESTED_VALUES);
// dotted keys and table headers are bounded here (kMaxTomlKeyDepth).
inline constexpr int kMaxTomlKeyDepth = 64;
// Throws UserError("<source>:<line>: <what>: a dotted key or table header with more than ...")
// when a key has more than kMaxTomlKeyDepth parts: toml++ builds one nested table per part
// recursively and a few hundred thousand overflow the stack. Every TOML reader calls it first
// (parse_toml_file does).
void check_toml_key_depth(const std::string& text, const std::string& source, const char* what);
toml::table parse_toml_file(const std::string& path, const char* what);

// Parses JSON text from `source` (named in errors) with the nesting bounded by kMaxJsonDepth.
nlohmann::json parse_json(const std::string& text, const std::string& source);

// read_regular_file + parse_json.
nlohmann::json read_json_file(const std::string& path, const char* what);

// Typed, range-checked access to the fields of one JSON object read from `source`. Every error
// is one line: "<source>: field '<prefix><key>' must be <expected>, got <value>".
class JsonFields {
 public:
  // Throws unless `j` is an object. `prefix` is prepended to key names in errors ("data.").
  JsonFields(const nlohmann::json& j, std::string source, std::string prefix = "");

  bool has(const std::string& key) const;  // present and not null
  const nlohmann::json& raw(const std::string& key) const;  // present (throws if missing)

  int64_t integer(const std::string& key, int64_t lo = std::numeric_limits<int64_t>::min(),
                  int64_t hi = std::numeric_limits<int64_t>::max()) const;
  uint64_t unsigned_integer(const std::string& key, uint64_t hi = std::numeric_limits<uint64_t>::max()) const;
  // A finite number in [lo, hi].
  double number(const std::string& key, double lo = -std::numeric_limits<double>::max(),
                double hi = std::numeric_limits<double>::max()) const;
  std::string string(const std::string& key) const;
  bool boolean(const std::string& key) const;
  JsonFields object(const std::string& key) const;
  const nlohmann::json& array(const std::string& key) const;

  // Optional variants: nullopt when the key is absent or null, an error when it has a wrong type.
  std::optional<int64_t> opt_integer(const std::string& key, int64_t lo = std::numeric_limits<int64_t>::min(),
                                     int64_t hi = std::numeric_limits<int64_t>::max()) const;
  std::optional<double> opt_number(const std::string& key, double lo = -std::numeric_limits<double>::max(),
                                   double hi = std::numeric_limits<double>::max()) const;
  std::optional<std::string> opt_string(const std::string& key) const;

  const nlohmann::json& json() const { return j_; }
  const std::string& source() const { return source_; }
  [[noreturn]] void fail(const std::string& key, const std::string& expected) const;

 private:
  const nlohmann::json& j_;
  std::string source_, prefix_;
};

// A short rendering of a JSON value for error messages (long values are cut).
std::string json_excerpt(const nlohmann::json& v);

}  // namespace lt
