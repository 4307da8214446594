// Usage records: an append-only JSONL file whose every record carries the hash of the one
// before it, so that altering, removing or reordering a record breaks the chain.
//
// A record is one JSON object per line with these chain fields set by append_record():
//   "seq"  position in the file, from 0;   "prev" the previous record's "hash" (64 zeros
//   for the first);   "hash" SHA-256 (hex) of the record's compact JSON, keys sorted, without
//   "hash" itself.
// Job records written by `leasetrain launch` (kind "job") also hold: lease, tenant,
// manifest_sha256, job_id, ranks [{rank, host, devices}], start, end (UTC), gpu_seconds,
// nccl_version, cuda_version, env_sha256, exit_status.
// The chain cannot show records cut off the end: keep the last hash elsewhere (the
// scheduler's accounting comment, a ticket) and pass it to verify_log as expected_head.
#pragma once
#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

namespace lt::lease {

inline const std::string kGenesisHash(64, '0');

// SHA-256 over the canonical JSON of `record` without its "hash" member.
std::string record_hash(const nlohmann::json& record);

// Appends under an exclusive lock (several launchers may share one log); the existing chain
// is verified first and a broken one is refused (UserError), so nobody builds on tampered
// history. Returns the new record's hash.
std::string append_record(const std::string& path, nlohmann::json record);

struct AuditResult {
  bool ok = true;
  size_t records = 0;    // records that verified, in order from the start
  size_t bad_line = 0;   // 1-based line of the first problem; 0 when ok
  std::string reason;    // one line
  std::string head;      // hash of the last verified record (kGenesisHash when empty)
};

// Checks every record in order and stops at the first problem. With expected_head, also
// requires a record with that hash to be present (catches truncation).
AuditResult verify_log(const std::string& path, const std::string& expected_head = "");

// Device-seconds that job records of `lease_id` account for; 0 for a missing file. A broken
// chain is a UserError: quota accounting must not trust tampered history.
double gpu_seconds_used(const std::string& path, const std::string& lease_id);

}  // namespace lt::lease
