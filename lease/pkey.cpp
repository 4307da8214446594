// P_Key table lookup in sysfs (see pkey.h).
#include "lease/pkey.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "runtime/error.h"
#include "runtime/input.h"

namespace lt::lease {

namespace fs = std::filesystem;

std::string pkey_hex(uint16_t pkey) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%04x", pkey);
  return buf;
}

std::optional<int> resolve_pkey_index(const std::string& sysfs_root, const std::string& ib_dev,
                                      int port, uint16_t pkey) {
  fs::path port_dir = fs::path(sysfs_root) / "class/infiniband" / ib_dev / "ports" / std::to_string(port);
  std::error_code ec;
  if (!fs::is_directory(port_dir, ec)) return std::nullopt;
  fs::path dir = port_dir / "pkeys";
  if (!fs::is_directory(dir, ec))
    throw UserError(dir.string() + ": no P_Key table for " + ib_dev + ":" + std::to_string(port));
  std::map<int, uint16_t> table;  // ordered by index, so the lowest matching index wins
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    int index = 0;
    try {
      size_t pos = 0;
      index = std::stoi(name, &pos);
      if (pos != name.size() || index < 0) continue;
    } catch (...) {
      continue;
    }
    // Through the validated reader: --sysfs-root is the caller's to choose, and a FIFO there
    // must not hang the plan. A real table has up to 65536 entries of a few bytes each.
    std::istringstream in(read_regular_file(e.path().string(), "P_Key table entry", 4096));
    std::string text;
    if (!(in >> text)) continue;  // empty entries do not match anything
    unsigned long v = 0;
    try {
      v = std::stoul(text, nullptr, 0);
    } catch (...) {
      throw UserError(e.path().string() + ": expected a P_Key such as 0x8001, got '" + text + "'");
    }
    table[index] = uint16_t(v & 0xffff);
  }
  if (ec) throw UserError(dir.string() + ": cannot list the P_Key table: " + ec.message());
  std::optional<int> limited;
  for (auto [index, key] : table) {
    if (key == 0 || (key & 0x7fff) != (pkey & 0x7fff)) continue;
    if (key & 0x8000) return index;
    if (!limited) limited = index;
  }
  if (limited)
    throw UserError(dir.string() + ": " + ib_dev + ":" + std::to_string(port) + " is only a limited member of P_Key " +
                    pkey_hex(pkey & 0x7fff) + " (index " + std::to_string(*limited) +
                    "); ranks need full membership (0x8000) to talk to each other");
  throw UserError(dir.string() + ": P_Key " + pkey_hex(pkey) + " is not in the table of " + ib_dev + ":" +
                  std::to_string(port) + " (" + std::to_string(table.size()) +
                  " entries); ask the operator to add the port to the partition");
}

}  // namespace lt::lease
