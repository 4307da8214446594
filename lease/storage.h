// Tenant storage roots: resolving a path to where it really points and checking that it
// stays under a root (no '..', symlink or absolute-path escapes); disk usage for the byte
// quota; atomic small-file writes for the launcher's own files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lt::lease {

// The absolute, symlink-free form of `path` (relative paths are taken from `base`, default
// the working directory). Components that do not exist yet are appended lexically; a '..'
// among them is refused, since what it climbs out of is not decided until it exists.
std::string resolve_real_path(const std::string& path, const std::string& base = "");

// True when `resolved` (a resolve_real_path result) is `root` or below it, compared by whole
// components (/srv/a does not contain /srv/ab). `root` is resolved too.
bool path_is_under(const std::string& resolved, const std::string& root);

// Sum of the sizes of the regular files under `root`, not following symlinks; 0 when the
// root does not exist.
uint64_t disk_usage(const std::string& root);

// Writes `content` to a temporary file beside `path`, fsyncs it and renames it over `path`,
// so no reader ever sees half a file. Creates parent directories. UserError on failure.
void write_file_atomic(const std::string& path, const std::string& content, unsigned mode = 0644);

}  // namespace lt::lease
