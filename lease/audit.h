// Usage records: an append-only JSONL file whose every record carries the hash of the one
// before it, so that altering, removing or reordering a record breaks the chain.
//
// A record is one JSON object per line with these chain fields set by append_record():
//   "seq"  position in the file, from 0;   "prev" the previous record's "hash" (64 zeros
//   for the first);   "hash" SHA-256 (hex) of the record's compact JSON, keys sorted, without
//   "hash" itself.
// The only record kind is "job", written by `leasetrain launch`: lease and gpu_seconds
// (required), and tenant, operator, manifest_sha256, job_id, ranks [{rank, host, devices,
// devices_seen}], start, end (UTC), nccl_version, cuda_version, env_sha256, launcher,
// exit_status, and for `launch --restarts` (one record per attempt) attempt (from 1), outcome
// (completed, preempted, failed, bad-input, watchdog) and reason (one line). read_chain() is the one reader of a log: verify, accounting and append all go
// through it, and every field is typed and range-checked (a wrong one is a UserError naming
// file:line and field).
//
// What the chain proves (docs/leases.md, "What the usage log proves"): a record altered,
// removed, inserted or reordered is seen unless every later hash was recomputed, which anyone
// who can write the file can do (the hash is not keyed), and records cut off the end or
// appended are not seen at all. Fixing the end outside the file closes that: the exact last
// hash kept elsewhere (VerifyOptions::head), or the anchors each append also sends to syslog
// (VerifyOptions::anchors).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lt::lease {

inline const std::string kGenesisHash(64, '0');

// Syslog ident of the anchors, and the marker that starts an anchor message:
//   leasetrain-usage-anchor v1 seq=<n> hash=<64 hex> lease=<id or -> log=<absolute path>
// (log= is last and runs to the end of the line, so a path may hold spaces).
inline constexpr const char* kAnchorIdent = "leasetrain-usage";
inline constexpr const char* kAnchorMarker = "leasetrain-usage-anchor v1 ";
// Test seam: when this variable names a file, anchors are appended to it (one line each, as
// syslog would show them) instead of being sent to syslog. Only tests set it; a tenant who
// sets it only withholds anchors, which `audit verify --anchors` reports.
inline constexpr const char* kAnchorFileEnv = "LEASETRAIN_USAGE_ANCHORS";

// A GPU-seconds value above this (about 31,700 GPU-years) is refused: it is no measurement,
// and it keeps the sum over any log finite.
inline constexpr double kMaxRecordGpuSeconds = 1e12;

// SHA-256 over the canonical JSON of `record` without its "hash" member.
std::string record_hash(const nlohmann::json& record);

// One record of a log, validated.
struct UsageRecord {
  size_t line = 0;  // 1-based line in the log
  uint64_t seq = 0;
  std::string prev, hash, kind, lease;
  double gpu_seconds = 0;
};

struct AuditResult {
  bool ok = true;
  size_t records = 0;    // records that verified, in order from the start
  size_t bad_line = 0;   // 1-based line of the first problem; 0 when ok
  std::string reason;    // one line
  std::string head;      // hash of the last verified record (kGenesisHash when empty)
  size_t anchors = 0;    // anchors of this log checked against the chain (with VerifyOptions::anchors)
};

struct Chain {
  AuditResult result;               // ok=false at the first break of the chain
  std::vector<UsageRecord> records;  // the records before the break, each validated
};

// Reads the log `text` (named `source` in errors). A break of the chain (a line that is not a
// JSON record or not terminated, a hash that does not match, a missing, repeated or reordered
// record) stops the walk and is reported in result. A record whose hash matches but whose
// fields have the wrong type or range throws UserError "<source>:<line>: field '...' must be ...".
Chain read_chain(const std::string& text, const std::string& source);

// Appends under an exclusive lock (several launchers may share one log); the log must be a
// regular file (created when missing), the existing chain is read with read_chain and a broken
// or malformed one is refused (UserError), so nobody builds on tampered history; `record` is
// validated like any record read back. After the write is on disk, the new record's seq and
// hash are sent to syslog (facility authpriv, ident kAnchorIdent) while the lock is held, so
// anchors of one node come in chain order. Returns the new record's hash.
std::string append_record(const std::string& path, nlohmann::json record);

// The anchor message for a record (without syslog's own prefix).
std::string anchor_message(uint64_t seq, const std::string& hash, const std::string& lease,
                           const std::string& log);

// The name anchors use for a log: its absolute, lexically normal path.
std::string anchor_log_name(const std::string& path);

struct VerifyOptions {
  // The exact hash of the last record, kept elsewhere: fails when the chain ends anywhere else.
  std::string head{};
  // A file of exported syslog lines (journalctl -t leasetrain-usage -o cat, /var/log/auth.log, ...):
  // every anchor of this log must match the chain at its seq, in order, and the last record
  // must be anchored. Lines without the anchor marker are ignored.
  std::string anchors{};
  // The log's name in the anchors when it differs from anchor_log_name(path) (a copy).
  std::string anchored_as{};
};

// Checks every record in order and stops at the first problem. An empty log, a directory, a
// FIFO or anything but a regular file is a UserError: there is no chain to vouch for.
AuditResult verify_log(const std::string& path, const VerifyOptions& opt = {});

// Device-seconds that job records of `lease_id` account for: 0 for a missing or empty file (no
// job has ended yet). A broken chain or malformed record is a UserError: quota accounting
// must not trust tampered history.
double gpu_seconds_used(const std::string& path, const std::string& lease_id);

}  // namespace lt::lease
