// Storage-root containment and small atomic writes (see storage.h).
#include "lease/storage.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"
#include "runtime/safe_path.h"

namespace lt::lease {

namespace fs = std::filesystem;

std::string resolve_real_path(const std::string& path, const std::string& base) {
  if (path.empty()) throw UserError("empty path");
  fs::path p(path);
  if (p.is_relative()) p = (base.empty() ? fs::current_path() : fs::path(base)) / p;
  // Walk down from '/', resolving each existing prefix with realpath semantics.
  fs::path existing = "/";
  auto it = p.begin();
  ++it;  // skip the root
  std::error_code ec;
  for (; it != p.end(); ++it) {
    fs::path next = existing / *it;
    if (*it == "." || it->empty()) continue;
    if (*it == "..") {
      existing = existing.parent_path();
      continue;
    }
    // symlink_status: a dangling link still counts as existing, and canonical() then fails,
    // which is what we want (it could later be pointed anywhere).
    if (!fs::exists(fs::symlink_status(next, ec))) break;
    fs::path canon = fs::canonical(next, ec);
    if (ec) throw UserError(next.string() + ": cannot resolve (" + ec.message() + "); a dangling symlink is refused");
    existing = canon;
  }
  fs::path out = existing;
  for (; it != p.end(); ++it) {
    if (*it == "." || it->empty()) continue;
    if (*it == "..") throw UserError(path + ": '..' after a component that does not exist yet is refused");
    out /= *it;
  }
  return out.lexically_normal().string();
}

bool path_is_under(const std::string& resolved, const std::string& root) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(fs::path(root), ec);
  if (ec) r = fs::path(root).lexically_normal();
  fs::path p(resolved);
  auto pi = p.begin();
  for (auto ri = r.begin(); ri != r.end(); ++ri, ++pi) {
    if (ri->empty() && std::next(ri) == r.end()) break;  // trailing slash
    if (pi == p.end() || *pi != *ri) return false;
  }
  return true;
}

uint64_t disk_usage(const std::string& root) {
  std::error_code ec;
  if (!fs::exists(root, ec)) return 0;
  uint64_t total = 0;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::error_code e2;
    if (it->is_regular_file(e2) && !it->is_symlink(e2)) total += it->file_size(e2);
  }
  return total;
}

void write_file_atomic(const std::string& path, const std::string& content, unsigned mode) {
  // The one atomic writer (runtime/safe_path.h), beneath the file's directory: a symbolic link in
  // place of the file or of its temporary is refused, never followed.
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  lt::write_file_atomic(WriteRoot(dir.string()), p.filename().string(), content, (mode_t)mode);
}

}  // namespace lt::lease
