// The operator's lease manifest (TOML): nodes and their GPUs, MIG slices and NICs, network
// partitions, tenants and leases; parsing and the validation rules every manifest must pass.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace lt::lease {

using TimePoint = std::chrono::sys_seconds;  // UTC, whole seconds

struct Gpu {
  std::string uuid;        // GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx
  std::string pci_bus_id;  // 0000:17:00.0
  int numa = -1;
  int minor = -1;  // /dev/nvidia<minor>; -1: read from /proc/driver/nvidia/gpus/<bus>/information
};

struct MigSlice {
  std::string uuid;     // MIG-xxxxxxxx-... (the R470+ form; the old MIG-GPU-.../gi/ci is refused)
  std::string parent;   // uuid of a Gpu of the same node
  std::string profile;  // 1g.10gb, 3g.40gb, ...
  int gi = -1;          // GPU / compute instance ids (required): with the parent they are the
  int ci = -1;          // slice's physical identity, and map it to /dev/nvidia-caps/* nodes
};

struct Nic {
  std::string netdev;  // interface name, matched exactly (NCCL_SOCKET_IFNAME==netdev)
  std::string ib_dev;  // HCA (mlx5_0); empty for a plain Ethernet NIC
  int port = 1;
  int gid_index = -1;      // -1: not set
  int traffic_class = -1;  // -1: not set
  int rail = -1;
  std::string ip;  // CIDR, informational
  bool is_ib() const { return !ib_dev.empty(); }
  std::string hca() const { return ib_dev + ":" + std::to_string(port); }
};

struct Node {
  std::string hostname;
  uint64_t shm_bytes = 0;  // size of the private /dev/shm, 0: not stated
  std::vector<Gpu> gpus;
  std::vector<MigSlice> mig;
  std::vector<Nic> nics;
  const Gpu* find_gpu(std::string_view uuid) const;
  const MigSlice* find_mig(std::string_view uuid) const;
  const Nic* find_nic(std::string_view netdev) const;
};

struct Partition {
  std::string id;
  uint16_t pkey = 0;       // as configured by the subnet manager; bit 0x8000 = full member
  int service_level = -1;  // NCCL_IB_SL; -1: not set
};

struct Tenant {
  std::string id;
  std::vector<std::string> users, groups;
  std::string account;  // scheduler account, to join usage records with sacct
};

// What one lease gets on one node. Ranks on the node = devices (GPUs + MIG slices), or
// cpu_ranks on a CPU-only allocation.
struct Allocation {
  std::string node;
  std::vector<std::string> gpus, mig, nics;
  std::string partition;  // required when a NIC is InfiniBand/RoCE
  int cpu_ranks = 0;
  int slots() const { return gpus.empty() && mig.empty() ? cpu_ranks : int(gpus.size() + mig.size()); }
};

struct Quota {
  int max_ranks = 0;
  double gpu_hours = 0;  // device-hours; a MIG slice counts as one device
  uint64_t storage_bytes = 0;
};

enum class ProbePolicy { refuse, warn };

struct Policy {
  std::vector<std::string> allow_env;    // names, or prefixes ending in '*', passed through
  // Loader/MPI-control variables (is_dangerous_env) the operator lets through, by exact name
  // only: a wildcard in allow_env never matches them. `manifest check`, plan and launch warn.
  std::vector<std::string> allow_dangerous_env;
  std::vector<std::string> net_plugins;  // approved NCCL_NET_PLUGIN values; empty: none
  bool ras = false;                      // NCCL_RAS_ENABLE; off unless the operator allows it
  ProbePolicy probe = ProbePolicy::refuse;
};

struct Lease {
  std::string id, tenant;
  TimePoint not_before{}, not_after{};
  int64_t grace_seconds = 0;
  Quota quota;
  std::vector<std::string> storage_roots;    // read-write; the first is the job's home
  std::vector<std::string> read_only_roots;  // shared data sets
  std::string usage_log;                     // "" = <storage_roots[0]>/usage.jsonl
  Policy policy;
  std::vector<Allocation> alloc;

  // Training must have checkpointed and stopped by then.
  TimePoint deadline() const { return not_after - std::chrono::seconds(grace_seconds); }
  int total_slots() const;
  std::string usage_log_path() const;
};

struct Operator {
  std::string id, legal_entity, contact;
};

struct Manifest {
  std::string origin;  // file path, or "<embedded>"
  std::string sha256;  // of the exact file bytes ("" for the embedded default)
  bool embedded = false;
  Operator op;
  std::vector<Node> nodes;
  std::vector<Partition> partitions;
  std::vector<Tenant> tenants;
  std::vector<Lease> leases;
  // Source line of each field path ("lease[1].alloc[0].gpus[2]") seen while parsing, so
  // validation errors can point into the file. Empty for manifests built in code.
  std::map<std::string, int64_t> field_lines;

  const Node* find_node(std::string_view hostname) const;
  const Partition* find_partition(std::string_view id) const;
  const Tenant* find_tenant(std::string_view id) const;
  // The lease, or a UserError naming the manifest and the leases it does hold.
  const Lease& lease(std::string_view id) const;
};

// Reads the file, records its SHA-256, parses and validates. Every problem is a UserError of
// the form "FILE:LINE: field.path: what was expected" (LINE when the TOML has one).
Manifest load_manifest(const std::string& path);
Manifest parse_manifest(const std::string& text, const std::string& origin);
// Validation alone (parse_manifest calls it); for manifests built in code.
void validate_manifest(const Manifest& m);

// Variables the launcher sets from the lease; a policy may not pass them through.
bool is_lease_controlled_env(std::string_view name);
// Variables that load code or steer the loader, MPI or the network/device choice (LD_*,
// OMPI_*, PMIX_*, PRTE_*, UCX_*, NCCL_CONF_FILE, NCCL_TUNER_PLUGIN, CUDA_INJECTION64_PATH, ...;
// docs/leases.md lists them): passed to ranks only when the lease's allow_dangerous_env names
// them exactly, never through a wildcard of allow_env.
bool is_dangerous_env(std::string_view name);

// Largest manifest read (bytes): 20,000 leases take about 10 MB.
inline constexpr uint64_t kMaxManifestBytes = 64ull << 20;
// Most CPU ranks one allocation (or the embedded local lease) may have.
inline constexpr int kMaxCpuRanks = 4096;
// Most ranks one job may have: the plan holds each rank's environment, so the count is
// checked before anything per rank is allocated.
inline constexpr int kMaxJobRanks = 65536;

// Why `root` may not be a tenant's storage (or read-only) root, or "" when it may: not
// absolute and clean, '/', fewer than two components deep, or in a system tree (/proc, /sys,
// /dev, /etc, /usr, /bin, /sbin, /boot, /lib*, /run, /var/lib, /var/log, /root, ...).
std::string storage_root_problem(std::string_view root);
// `p` with repeated and trailing slashes removed ("/srv//a/" -> "/srv/a").
std::string normalize_path(std::string_view p);

// UUID forms: "GPU-" or "MIG-" then 8-4-4-4-12 hex digits.
bool is_gpu_uuid(std::string_view s);
bool is_mig_uuid(std::string_view s);
// The 32 hex digits, lowercase, prefix and dashes dropped: "GPU-ABCD..." and what CUDA reports
// for the same device compare equal.
std::string uuid_key(std::string_view s);

// The non-empty pieces of s between separators: "a,,b," -> {"a", "b"}.
std::vector<std::string> split(const std::string& s, char sep);

std::string format_time(TimePoint t);  // 2025-06-01T00:00:00Z
// Accepts YYYY-MM-DDTHH:MM:SSZ (or an explicit +HH:MM offset); UserError otherwise.
TimePoint parse_time(std::string_view s);

// Refuses (UserError) outside [not_before, deadline): not yet valid, expired, or inside the
// grace period where no training may start.
void check_window(const Lease& lease, TimePoint now);

}  // namespace lt::lease
