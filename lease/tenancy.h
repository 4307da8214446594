// LeaseGuard: what every rank checks before and during training, so that a job uses exactly
// its lease and fails closed otherwise. The trainer creates one per rank, from the variables
// `leasetrain launch` sets (LEASETRAIN_*); without them (a plain `leasetrain train`) it is the
// embedded local lease, which restricts nothing but still checks device UUIDs.
//
// Intended use in the trainer, in this order:
//   auto guard = lt::lease::LeaseGuard::from_env();
//   guard.check_start();                 // before anything else: inside the lease window?
//   guard.check_ranks(world_size);       // max_ranks quota
//   guard.apply_rank_env();              // before NCCL init: P_Key index of *this* node
//   guard.enforce_isolation();           // before CUDA init: other GPUs' /dev nodes closed?
//   ... CUDA init ...
//   guard.check_devices(uuids);          // each visible device's UUID (format_device_uuid)
//   guard.record_runtime(rank, uuids, nccl_version, cuda_version);
//   path = guard.check_path(p, write);   // every data/checkpoint/log path, before opening
//   guard.reserve_bytes(n);              // before writing n bytes (checkpoint, log)
//   each step: if (guard.seconds_until_deadline() <= margin) { checkpoint; exit 0; }
// Every refusal is an lt::UserError with one line naming the lease and what was expected.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lease/launch.h"
#include "lease/manifest.h"
#include "runtime/run_policy.h"

namespace lt::lease {

using Clock = std::function<TimePoint()>;
TimePoint system_now();  // the real UTC clock, whole seconds

// CUDA's cudaDeviceProp::uuid bytes as "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" ("MIG-" with
// mig=true). check_devices compares the hex digits only, so either prefix matches a slice.
std::string format_device_uuid(const unsigned char bytes[16], bool mig = false);

class LeaseGuard {
 public:
  // From this process's environment (LEASETRAIN_MANIFEST, LEASETRAIN_LEASE, LEASETRAIN_NODE,
  // LEASETRAIN_RANK_DEVICES, LEASETRAIN_STORAGE_ROOT, LEASETRAIN_OPERATOR_KEY,
  // LEASETRAIN_JOB_DIR, LEASETRAIN_IB_PKEY, LEASETRAIN_GPU_BUDGET_END). The manifest is read
  // again and its signature re-verified here; LEASETRAIN_NODE must name this host; the real
  // uid must be one of the tenant's users/groups (check_identity), as for plan and launch.
  static LeaseGuard from_env(Clock clock = system_now);
  // Same, from an explicit variable map and host name (tests).
  static LeaseGuard from_vars(const EnvMap& vars, const std::string& host, Clock clock = system_now);

  // Direct construction: the lease `lease_id` of `m`, as seen on node `node`; rank_devices
  // empty = not pinned (any device the lease holds on the node is accepted).
  LeaseGuard(Manifest m, const std::string& lease_id, const std::string& node,
             std::vector<std::string> rank_devices, Clock clock = system_now);

  const Manifest& manifest() const { return m_; }
  const Lease& lease() const { return m_.leases[lease_idx_]; }
  const std::string& node() const { return node_; }
  bool local() const { return m_.embedded; }
  const std::string& storage_root() const { return storage_root_; }

  // Lease window: refuses before not_before, at or after not_after, and inside the grace
  // period (no job may start there).
  void check_start() const { check_start(clock_()); }
  void check_start(TimePoint now) const;

  // Seconds left until the job must have checkpointed and stopped: the earlier of
  // not_after - grace and the end of the GPU-hours budget given at launch. <= 0: stop now.
  int64_t seconds_until_deadline() const { return seconds_until_deadline(clock_()); }
  int64_t seconds_until_deadline(TimePoint now) const;
  TimePoint deadline() const;
  // One line for the log when stopping: lease, deadline, why.
  std::string deadline_message(TimePoint now) const;

  // max_ranks quota and the slots the lease holds.
  void check_ranks(int world_size) const;

  // Resolves `path` (relative to the working directory) to its real, symlink-free absolute
  // form and returns it; refuses it when that is outside the lease's storage roots
  // (read-only roots count only when !for_write). Open the returned path, not `path`.
  std::string check_path(const std::string& path, bool for_write) const;

  // Refuses (UserError) when the bytes now under the read-write storage roots plus `n` would
  // exceed the storage quota. Call before each write of n bytes.
  void reserve_bytes(uint64_t n) const;
  uint64_t bytes_used() const;

  // Each UUID (GPU-... / MIG-... / bare hex) must be this rank's leased device; with pinned
  // rank devices the sets must be equal. An empty list is accepted only for a CPU rank.
  void check_devices(const std::vector<std::string>& uuids) const;

  // Tries to open every <dev_dir>/nvidia<N> and <dev_dir>/nvidia-caps/* that this lease does
  // not hold on this node (minors from the manifest, else <proc_dir>/driver/nvidia/gpus/*;
  // MIG caps from <proc_dir>/driver/nvidia-caps/mig-minors). Returns those that opened: the
  // node is not fenced for this job.
  std::vector<std::string> probe_device_nodes(const std::string& dev_dir = "/dev",
                                              const std::string& proc_dir = "/proc") const;
  // probe_device_nodes, then UserError (policy "refuse") or a warning on stderr ("warn").
  // Returns the warning text ("" when isolated).
  std::string enforce_isolation(const std::string& dev_dir = "/dev",
                                const std::string& proc_dir = "/proc") const;

  // Before NCCL starts: when the launcher gave a P_Key (LEASETRAIN_IB_PKEY) for this rank's
  // HCA (NCCL_IB_HCA), resolves its index in this node's table and sets NCCL_IB_PKEY.
  // Returns a note when it changed the launcher's value ("" otherwise).
  std::string apply_rank_env(const std::string& sysfs_root = "/sys") const;

  // Writes <job dir>/rank-<rank>.json (host, devices, versions); `leasetrain launch` puts it
  // into the usage record when the job ends. No-op without a job dir.
  void record_runtime(int rank, const std::vector<std::string>& devices, const std::string& nccl_version,
                      const std::string& cuda_version) const;
  // <job dir>/progress.json (rank 0, replaced atomically) and <job dir>/rank-<rank>.exit.json
  // (a failing rank's last words), for `launch --restarts`. No-op without a job dir; best
  // effort: a failed write is one line on stderr and is not thrown.
  void record_progress(const RunProgress& p) const;
  void record_exit(int rank, int exit_code, const std::string& error) const;

 private:
  void write_job_file(const std::string& name, const std::string& text) const;
  Manifest m_;
  const Allocation& alloc() const { return lease().alloc[alloc_idx_]; }
  size_t lease_idx_ = 0, alloc_idx_ = 0;  // indices, so copies stay valid
  std::string node_;
  std::vector<std::string> rank_devices_;
  Clock clock_;
  std::string storage_root_;
  std::string job_dir_;
  TimePoint gpu_budget_end_ = TimePoint::max();
};

}  // namespace lt::lease
