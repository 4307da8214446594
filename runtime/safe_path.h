// The one path resolver for everything a run writes: every path is opened, created, renamed or
// removed beneath a root directory fd, so no symbolic link and no ".." can lead a write outside it.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace lt {

// An owned file descriptor (closed on destruction; -1 when empty).
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  // close(2) with its result checked: a deferred write error (NFS, quota) surfaces here.
  void close_checked(const std::string& what);

 private:
  int fd_ = -1;
};

// A directory that writes are confined to. Relative paths given to its methods ("checkpoints/
// step-00000010/model.safetensors") are resolved component by component beneath it: a symbolic
// link anywhere (even one pointing back inside) and ".." are refused with a UserError naming the
// path, whatever the kernel. Where the kernel has openat2 (Linux 5.6+) the kernel enforces it
// (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS); elsewhere each component is
// opened with O_NOFOLLOW. Links are refused rather than followed when they stay inside, so the
// answer is the same on every kernel and a run directory never needs one.
class WriteRoot {
 public:
  WriteRoot() = default;
  // Opens the existing directory `dir` as a root (symlinks in `dir` itself are the caller's
  // choice and are followed). UserError when it is missing or not a directory.
  explicit WriteRoot(const std::string& dir);

  // A run's --out directory, created with its parents when missing. When LEASETRAIN_WRITE_ROOTS
  // is set (colon-separated absolute directories: the lease's storage roots), `dir` must lie
  // beneath one of them and is created and opened beneath that root's fd, so a symlinked
  // component cannot lead outside; otherwise a UserError (exit 2) says so.
  static WriteRoot open_out_dir(const std::string& dir);

  bool valid() const { return fd_.get() >= 0; }
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  std::string display(const std::string& rel) const;  // path()/rel, for messages

  // The directory `rel` beneath the root (rel "" or "." is the root itself), created with mode
  // 0755 component by component when `create` and missing. Returns its fd.
  Fd open_dir(const std::string& rel, bool create) const;
  // Opens the file `rel` with open(2) `flags` (O_NOFOLLOW and O_CLOEXEC are always added).
  Fd open_file(const std::string& rel, int flags, mode_t mode = 0644) const;
  // Whether `rel` exists beneath the root without following links (a link counts as existing).
  bool exists(const std::string& rel) const;
  // renameat(2) of `from` to `to`, both beneath the root; `exchange` swaps them atomically
  // (renameat2 RENAME_EXCHANGE) and returns false where the filesystem cannot.
  bool rename(const std::string& from, const std::string& to, bool exchange = false) const;
  // Removes `rel` and everything below it without following any link (a link is unlinked).
  // Missing is fine. Returns false (errno kept) on failure.
  bool remove_all(const std::string& rel) const;
  // The names in directory `rel` (without "." and "..").
  std::vector<std::string> list(const std::string& rel) const;
  // fsync of directory `rel`, so entries created or renamed in it are durable.
  void sync_dir(const std::string& rel) const;

 private:
  Fd fd_;
  std::string path_;
};

// Writes all of `data` to `fd` (retrying short writes), then fsyncs when `sync`. Throws an
// IoError (exit 1) or, for a cause in the user's hands (permissions, read-only filesystem), a
// UserError, naming `what`.
void write_all_or_throw(int fd, const void* data, size_t n, const std::string& what, bool sync);

// Writes `text` to `rel` beneath `root` through a temporary sibling that is fsynced and renamed
// over it, so `rel` is either the old file or the whole new one.
void write_file_atomic(const WriteRoot& root, const std::string& rel, const std::string& text, mode_t mode = 0644);

// The exception for a failed write: IoError (exit 1) for the machine's troubles (ENOSPC, EIO,
// EFBIG, EDQUOT), UserError (exit 2) when the user can fix the path (EACCES, EROFS, ELOOP...).
[[noreturn]] void throw_write_error(const std::string& what, const std::string& action, int err);

// Tests: resolve without openat2, as on a kernel that lacks it.
void safe_path_force_component_walk(bool on);

}  // namespace lt
