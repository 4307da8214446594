// What a job gets from its lease, per node and per rank: slots, device UUID, NIC, resolved
// P_Key index and the environment the launcher sets. `leasetrain plan` prints it and
// `leasetrain launch` turns it into a hostfile and an mpirun/srun command.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lease/manifest.h"

namespace lt::lease {

inline constexpr const char* kLocalLeaseId = "local";

struct RankPlan {
  int rank = 0, local_rank = 0;
  std::string host;
  std::vector<std::string> devices;  // the rank's one GPU or MIG UUID; empty for a CPU rank
  std::string pci_bus_id;
  std::string netdev;   // "" on a single-node lease without a NIC (loopback)
  std::string hca;      // ib_dev:port, "" for Ethernet
  uint16_t pkey = 0;    // partition key value (0: none)
  int pkey_index = -1;  // index in the port's table; -1: resolved on the node at start
  std::map<std::string, std::string> env;  // every variable this rank gets from the lease
};

struct NodePlan {
  std::string host;
  int slots = 0;  // ranks placed here (= leased devices, or fewer with --np)
  std::vector<std::string> devices, netdevs;
};

struct Plan {
  std::string lease_id, tenant, operator_id;
  std::string manifest_origin, manifest_sha256, signature_note;
  bool embedded = false;
  TimePoint now{}, not_before{}, not_after{}, deadline{};
  int64_t grace_seconds = 0;
  int np = 0;
  int max_ranks = 0;
  double gpu_hours_quota = 0, gpu_seconds_used = 0;
  uint64_t storage_bytes = 0;
  std::vector<std::string> storage_roots, read_only_roots;
  std::string usage_log;  // "" = no usage records (the embedded local lease)
  Policy policy;
  std::vector<NodePlan> nodes;
  std::vector<RankPlan> ranks;
  std::vector<std::string> mpi_interfaces;  // for btl_tcp_if_include / oob_tcp_if_include
  std::vector<std::string> notes;
  std::string job_id;

  int devices_per_rank() const { return ranks.empty() || ranks[0].devices.empty() ? 0 : 1; }
  // Wall seconds the job may run before the GPU-hours quota is spent (all ranks together).
  double gpu_seconds_left() const { return gpu_hours_quota * 3600.0 - gpu_seconds_used; }
};

// Who runs plan/launch: the real uid (getuid, not the effective one) with its name, and the
// primary and supplementary groups, by id and name.
struct Identity {
  uint32_t uid = 0;
  std::string user;  // "" when the uid has no passwd entry
  std::vector<uint32_t> gids;
  std::vector<std::string> groups;  // names of gids that have one
  static Identity current();
  std::string describe() const;  // "uid 1000 (alice), groups 1000 (alice), 27 (sudo)"
};

// Refuses (UserError, one line naming the lease, the caller and what was expected) unless the
// caller is one of the lease's tenant's `users` or in one of its `groups` (entries are names
// or numeric ids). Root is not exempt: an operator who wants root to act for a tenant lists
// "root" (or 0) among its users. A tenant that declares neither users nor groups is open to
// every local user, and the embedded local lease to anyone.
void check_identity(const Manifest& m, const Lease& l, const Identity& who);

struct PlanRequest {
  int np = 0;  // 0: every leased slot
  TimePoint now{};
  std::string sysfs_root = "/sys";  // where P_Key tables are read (a fake tree in tests)
  std::string job_id;               // goes into the rank environment
  std::string manifest_path;        // absolute path the ranks re-read; "" for embedded
  std::string operator_key;         // passed on so every rank re-verifies the manifest
  // --usage-log: must be the lease's own log (after resolving) when the manifest is not the
  // embedded local lease, where it is the only way to get records. "" keeps the lease's.
  std::string usage_log;
  std::optional<Identity> caller;   // who is asking; nullopt: the real caller (Identity::current)
  bool check_usage = true;          // read the usage log for GPU-hours (off in unit tests)
  int attempt = 1;                  // LEASETRAIN_ATTEMPT of every rank (launch --restarts counts from 1)
  // What a restart leaves out (launch --restarts), by host: the whole node, some of its devices
  // (by UUID), or a number of its CPU slots. The plan is made as if the lease did not hold them;
  // --np counts against what is left.
  struct Exclusion {
    bool whole_node = false;
    std::set<std::string> devices;
    int cpu_slots = 0;
  };
  std::map<std::string, Exclusion> exclude;
};

// The slots of allocation `a` that `exclude` leaves in, and their devices
// (empty for CPU slots).
int usable_slots(const Allocation& a, const std::map<std::string, PlanRequest::Exclusion>& exclude,
                 std::vector<std::string>* devices = nullptr);

// Refuses (UserError, one line) when the lease is unknown, the caller is not among its
// tenant's users/groups, it is outside its window, over a quota, a storage root is a symlink,
// --usage-log is not the lease's log, or the request exceeds it (before allocating anything).
// Ranks fill nodes in manifest order; on each node devices are taken in the order the
// allocation lists them (less req.exclude), and NICs round-robin by local rank. Every rank gets
// LEASETRAIN_ATTEMPT (req.attempt) and LEASETRAIN_NODES (the nodes of this plan).
Plan make_plan(const Manifest& m, const std::string& lease_id, const PlanRequest& req);

// v's items with sep between them (names in plans, NIC lists, messages).
std::string join(const std::vector<std::string>& v, const std::string& sep);

// The lease used when no manifest is given: this machine alone, its GPUs (read from
// <proc_root>/driver/nvidia/gpus/*/information, kept only when <dev_root>/nvidia<minor>
// opens) or, with none, `cpu_ranks` CPU ranks; no window, no quotas, no storage limits.
// cpu_ranks above kMaxCpuRanks is refused (UserError).
Manifest local_default_manifest(int cpu_ranks = 1, const std::string& proc_root = "/proc",
                                const std::string& dev_root = "/dev");

std::string local_hostname();

nlohmann::json plan_json(const Plan& p);
std::string plan_text(const Plan& p);

}  // namespace lt::lease
