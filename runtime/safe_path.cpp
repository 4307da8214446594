// Writes confined beneath a root directory fd (see safe_path.h): openat2 where the kernel has it,
// otherwise a component-by-component walk with O_NOFOLLOW.
#include "runtime/safe_path.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"

namespace lt {

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_force_walk{false};
std::atomic<bool> g_no_openat2{false};  // the kernel said ENOSYS once: do not ask again

std::string errno_text(int err) { return std::strerror(err); }

// The components of a relative path; "." and empty ones dropped. ".." and absolute paths are
// refused: a write names a place beneath the root, never a way out of it.
std::vector<std::string> split_rel(const std::string& rel, const std::string& shown) {
  if (!rel.empty() && rel[0] == '/') throw UserError(shown + ": expected a path relative to the run directory");
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= rel.size()) {
    size_t j = rel.find('/', i);
    if (j == std::string::npos) j = rel.size();
    std::string c = rel.substr(i, j - i);
    if (c == "..") throw UserError(shown + ": '..' is not allowed in a path the run writes");
    if (!c.empty() && c != ".") parts.push_back(std::move(c));
    i = j + 1;
  }
  return parts;
}

std::string join(const std::vector<std::string>& parts, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += (i ? "/" : "") + parts[i];
  return s;
}

int openat2_beneath(int dirfd, const std::string& rel, int flags, mode_t mode) {
#ifdef SYS_openat2
  struct open_how how;
  std::memset(&how, 0, sizeof how);
  how.flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW);
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd;
  do fd = ::syscall(SYS_openat2, dirfd, rel.c_str(), &how, sizeof how);
  while (fd < 0 && errno == EINTR);
  return (int)fd;
#else
  (void)dirfd, (void)rel, (void)flags, (void)mode;
  errno = ENOSYS;
  return -1;
#endif
}

// Opens `parts` beneath dirfd; -1 with errno on failure.
int open_parts(int dirfd, const std::vector<std::string>& parts, int flags, mode_t mode) {
  if (parts.empty()) return ::openat(dirfd, ".", flags | O_CLOEXEC);
  if (!g_force_walk && !g_no_openat2) {
    const int fd = openat2_beneath(dirfd, join(parts, parts.size()), flags, mode);
    if (fd >= 0 || errno != ENOSYS) return fd;
    g_no_openat2 = true;
  }
  int cur = dirfd;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    const int next = ::openat(cur, parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    const int err = errno;
    if (cur != dirfd) ::close(cur);
    if (next < 0) {
      errno = err;
      return -1;
    }
    cur = next;
  }
  const int fd = ::openat(cur, parts.back().c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
  const int err = errno;
  if (cur != dirfd) ::close(cur);
  errno = err;
  return fd;
}

bool user_errno(int err) {
  switch (err) {
    case EACCES: case EPERM: case EROFS: case ELOOP: case ENOTDIR: case EISDIR: case EEXIST:
    case ENAMETOOLONG: case EXDEV: case ENOENT:
      return true;
    default:
      return false;
  }
}

// After a failed open: name the symbolic link on the way, if that is what stopped it.
[[noreturn]] void open_failed(int rootfd, const std::string& root, const std::vector<std::string>& parts,
                              const std::string& action, int err) {
  if (err == ELOOP || err == EXDEV || err == ENOTDIR) {
    for (size_t i = 1; i <= parts.size(); ++i) {
      struct stat st;
      if (::fstatat(rootfd, join(parts, i).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) break;
      if (S_ISLNK(st.st_mode))
        throw UserError(root + "/" + join(parts, i) + ": is a symbolic link; a run writes only beneath " + root +
                        " and never through a link (remove the link, or point --out at the real directory)");
    }
  }
  throw_write_error(root + (parts.empty() ? "" : "/" + join(parts, parts.size())), action, err);
}

bool remove_at(int dirfd, const char* name) {
  struct stat st;
  if (::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT;
  if (S_ISDIR(st.st_mode)) {
    const int fd = ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return false;
    DIR* d = ::fdopendir(fd);
    if (!d) {
      ::close(fd);
      return false;
    }
    bool ok = true;
    while (dirent* e = ::readdir(d)) {
      if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
      ok = remove_at(fd, e->d_name) && ok;
    }
    ::closedir(d);
    return ok && ::unlinkat(dirfd, name, AT_REMOVEDIR) == 0;
  }
  return ::unlinkat(dirfd, name, 0) == 0 || errno == ENOENT;
}

}  // namespace

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Fd::close_checked(const std::string& what) {
  const int fd = release();
  if (fd >= 0 && ::close(fd) != 0 && errno != EINTR) throw_write_error(what, "close failed", errno);
}

void throw_write_error(const std::string& what, const std::string& action, int err) {
  const std::string msg = what + ": " + action + " (" + errno_text(err) + ")";
  if (user_errno(err)) throw UserError(msg);
  throw IoError(msg);
}

WriteRoot::WriteRoot(const std::string& dir) : path_(dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw UserError(dir + ": cannot open as a directory (" + errno_text(errno) + ")");
  fd_ = Fd(fd);
}

WriteRoot WriteRoot::open_out_dir(const std::string& dir) {
  if (dir.empty()) throw UserError("--out: empty path");
  const char* env = std::getenv("LEASETRAIN_WRITE_ROOTS");
  if (!env || !*env) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec && !fs::is_directory(dir))
      throw UserError(dir + ": cannot create the output directory (" + ec.message() + ")");
    return WriteRoot(dir);
  }
  // The lexical path decides which root it is beneath; the kernel then resolves it beneath that
  // root's fd, so a symlinked component cannot take it anywhere else.
  const fs::path out = fs::absolute(dir).lexically_normal();
  const std::string roots(env);
  size_t i = 0;
  while (i <= roots.size()) {
    size_t j = roots.find(':', i);
    if (j == std::string::npos) j = roots.size();
    const std::string r = roots.substr(i, j - i);
    i = j + 1;
    if (r.empty()) continue;
    if (r[0] != '/')
      throw UserError("environment: LEASETRAIN_WRITE_ROOTS: '" + r + "' is not an absolute path");
    std::error_code ec;
    for (const fs::path& root : {fs::path(r).lexically_normal(), fs::canonical(r, ec)}) {
      if (root.empty()) continue;
      const fs::path rel = out.lexically_relative(root);
      if (rel.empty() || *rel.begin() == "..") continue;
      WriteRoot base(root.string());
      WriteRoot w;
      w.fd_ = base.open_dir(rel.string(), true);
      w.path_ = dir;
      return w;
    }
  }
  throw UserError("--out " + dir + ": outside the storage roots this job may write (LEASETRAIN_WRITE_ROOTS=" + roots +
                  "); choose an --out beneath one of them");
}

std::string WriteRoot::display(const std::string& rel) const {
  return rel.empty() || rel == "." ? path_ : path_ + "/" + rel;
}

Fd WriteRoot::open_dir(const std::string& rel, bool create) const {
  const std::vector<std::string> parts = split_rel(rel, display(rel));
  if (!create) {
    const int fd = open_parts(fd_.get(), parts, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0) open_failed(fd_.get(), path_, parts, "cannot open directory", errno);
    return Fd(fd);
  }
  // mkdir then open, one component at a time, each open refusing links.
  Fd cur(::openat(fd_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cur.get() < 0) throw_write_error(path_, "cannot open directory", errno);
  for (size_t i = 0; i < parts.size(); ++i) {
    if (::mkdirat(cur.get(), parts[i].c_str(), 0755) != 0 && errno != EEXIST)
      open_failed(fd_.get(), path_, std::vector<std::string>(parts.begin(), parts.begin() + (long)i + 1), "cannot create directory", errno);
    const int next = open_parts(cur.get(), {parts[i]}, O_RDONLY | O_DIRECTORY, 0);
    if (next < 0)
      open_failed(fd_.get(), path_, std::vector<std::string>(parts.begin(), parts.begin() + (long)i + 1), "cannot open directory", errno);
    cur = Fd(next);
  }
  return cur;
}

Fd WriteRoot::open_file(const std::string& rel, int flags, mode_t mode) const {
  const std::vector<std::string> parts = split_rel(rel, display(rel));
  if (parts.empty()) throw UserError(display(rel) + ": expected a file name");
  const int fd = open_parts(fd_.get(), parts, flags, mode);
  if (fd < 0) open_failed(fd_.get(), path_, parts, (flags & O_CREAT) ? "cannot create" : "cannot open", errno);
  return Fd(fd);
}

bool WriteRoot::exists(const std::string& rel) const {
  const std::vector<std::string> parts = split_rel(rel, display(rel));
  if (parts.empty()) return true;
  const std::string parent = join(parts, parts.size() - 1);
  Fd dir;
  try {
    dir = open_dir(parent, false);
  } catch (const UserError&) {
    return false;
  }
  struct stat st;
  return ::fstatat(dir.get(), parts.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

bool WriteRoot::rename(const std::string& from, const std::string& to, bool exchange) const {
  const std::vector<std::string> a = split_rel(from, display(from)), b = split_rel(to, display(to));
  if (a.empty() || b.empty()) throw UserError(display(from) + ": cannot rename the run directory itself");
  Fd da = open_dir(join(a, a.size() - 1), false), db = open_dir(join(b, b.size() - 1), false);
  const int rc = exchange ? ::renameat2(da.get(), a.back().c_str(), db.get(), b.back().c_str(), RENAME_EXCHANGE)
                          : ::renameat(da.get(), a.back().c_str(), db.get(), b.back().c_str());
  if (rc == 0) return true;
  if (exchange && (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP)) return false;
  throw_write_error(display(from), "cannot rename to " + display(to), errno);
}

bool WriteRoot::remove_all(const std::string& rel) const {
  const std::vector<std::string> parts = split_rel(rel, display(rel));
  if (parts.empty()) throw UserError(display(rel) + ": refusing to remove the run directory itself");
  Fd dir;
  try {
    dir = open_dir(join(parts, parts.size() - 1), false);
  } catch (const UserError&) {
    return true;  // its parent is not there (or is a link): nothing of ours to remove
  }
  return remove_at(dir.get(), parts.back().c_str());
}

std::vector<std::string> WriteRoot::list(const std::string& rel) const {
  Fd dir = open_dir(rel, false);
  DIR* d = ::fdopendir(dir.release());
  if (!d) throw_write_error(display(rel), "cannot list directory", errno);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) names.push_back(e->d_name);
  ::closedir(d);
  return names;
}

void WriteRoot::sync_dir(const std::string& rel) const {
  Fd dir = open_dir(rel, false);
  if (::fsync(dir.get()) != 0) throw_write_error(display(rel), "fsync failed", errno);
}

void write_all_or_throw(int fd, const void* data, size_t n, const std::string& what, bool sync) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw_write_error(what, "write failed", errno);
    if (w == 0) throw_write_error(what, "write failed", ENOSPC);
    p += w;
    n -= (size_t)w;
  }
  if (sync && ::fsync(fd) != 0) throw_write_error(what, "fsync failed", errno);
}

void write_file_atomic(const WriteRoot& root, const std::string& rel, const std::string& text, mode_t mode) {
  const std::string tmp = rel + ".tmp-" + std::to_string(::getpid());
  root.remove_all(tmp);
  try {
    Fd f = root.open_file(tmp, O_WRONLY | O_CREAT | O_EXCL, mode);
    write_all_or_throw(f.get(), text.data(), text.size(), root.display(rel), true);
    f.close_checked(root.display(rel));
    root.rename(tmp, rel);
  } catch (...) {
    root.remove_all(tmp);
    throw;
  }
  const size_t slash = rel.rfind('/');
  root.sync_dir(slash == std::string::npos ? "." : rel.substr(0, slash));
}

void safe_path_force_component_walk(bool on) { g_force_walk = on; }

}  // namespace lt
