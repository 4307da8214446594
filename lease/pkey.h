// InfiniBand P_Key value -> index in a port's P_Key table. NCCL_IB_PKEY takes the index, not
// the key; the table differs per port and per node, so it is read from sysfs, never assumed.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace lt::lease {

// Reads <sysfs_root>/class/infiniband/<ib_dev>/ports/<port>/pkeys/<i> (each "0x8001"-style)
// and returns the index whose key matches `pkey` in its low 15 bits and has the full-member
// bit 0x8000 set. nullopt when that port is not present under sysfs_root (the HCA is on
// another node); a UserError when the port is present but the key is missing or only a
// limited member (limited members cannot talk to each other, so NCCL would hang).
std::optional<int> resolve_pkey_index(const std::string& sysfs_root, const std::string& ib_dev,
                                      int port, uint16_t pkey);

std::string pkey_hex(uint16_t pkey);  // 0x8001

}  // namespace lt::lease
