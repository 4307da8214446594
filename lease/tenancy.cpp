// LeaseGuard: the per-rank checks (see tenancy.h).
#include "lease/tenancy.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "lease/lease_plan.h"
#include "lease/manifest_sign.h"
#include "lease/pkey.h"
#include "lease/storage.h"
#include "runtime/error.h"
#include "runtime/safe_path.h"

namespace lt::lease {
namespace {

namespace fs = std::filesystem;

std::string get(const EnvMap& vars, const std::string& k) {
  auto it = vars.find(k);
  return it == vars.end() ? std::string() : it->second;
}

std::string short_host(const std::string& h) { return h.substr(0, h.find('.')); }

bool opens(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

// "Device Minor" of the GPU at `bus` from the driver's /proc entry; -1 when absent.
int minor_from_proc(const std::string& proc_dir, const std::string& bus) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(proc_dir) / "driver/nvidia/gpus", ec)) {
    std::string name = e.path().filename().string();
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (name != bus) continue;
    std::ifstream in(e.path() / "information");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("Device Minor:", 0) == 0) return std::atoi(line.c_str() + 13);
  }
  return -1;
}

}  // namespace

TimePoint system_now() {
  return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
}

std::string format_device_uuid(const unsigned char b[16], bool mig) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                mig ? "MIG" : "GPU", b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                b[12], b[13], b[14], b[15]);
  return buf;
}

LeaseGuard::LeaseGuard(Manifest m, const std::string& lease_id, const std::string& node,
                       std::vector<std::string> rank_devices, Clock clock)
    : m_(std::move(m)), node_(node), rank_devices_(std::move(rank_devices)), clock_(std::move(clock)) {
  const Lease& l = m_.lease(lease_id);
  lease_idx_ = size_t(&l - m_.leases.data());
  auto it = std::find_if(l.alloc.begin(), l.alloc.end(), [&](const Allocation& a) { return a.node == node_; });
  if (it == l.alloc.end())
    throw UserError("lease " + l.id + " holds nothing on node " + node_ + "; this rank may not run here");
  alloc_idx_ = size_t(it - l.alloc.begin());
  for (const std::string& d : rank_devices_) {
    auto held = [&](const std::vector<std::string>& v) {
      return std::any_of(v.begin(), v.end(), [&](const std::string& u) { return uuid_key(u) == uuid_key(d); });
    };
    if (!held(alloc().gpus) && !held(alloc().mig))
      throw UserError("LEASETRAIN_RANK_DEVICES names " + d + ", which lease " + l.id + " does not hold on " + node_);
  }
  storage_root_ = l.storage_roots.empty() ? "/" : l.storage_roots[0];
}

LeaseGuard LeaseGuard::from_env(Clock clock) {
  LeaseGuard g = from_vars(current_environment(), local_hostname(), std::move(clock));
  // The rank checks its caller too: setting LEASETRAIN_* by hand and running `train` (or
  // mpirun) directly must not let someone outside the tenant use its lease.
  check_identity(g.manifest(), g.lease(), Identity::current());
  return g;
}

LeaseGuard LeaseGuard::from_vars(const EnvMap& vars, const std::string& host, Clock clock) {
  const std::string manifest = get(vars, "LEASETRAIN_MANIFEST");
  std::string lease_id = get(vars, "LEASETRAIN_LEASE");
  std::string node = get(vars, "LEASETRAIN_NODE");
  Manifest m;
  if (manifest.empty()) {
    m = local_default_manifest();
    if (!lease_id.empty() && lease_id != kLocalLeaseId)
      throw UserError("LEASETRAIN_LEASE=" + lease_id + " but LEASETRAIN_MANIFEST is not set");
    lease_id = kLocalLeaseId;
    node = m.nodes[0].hostname;
  } else {
    if (lease_id.empty()) throw UserError("LEASETRAIN_MANIFEST is set but LEASETRAIN_LEASE is not");
    m = load_verified_manifest(manifest, get(vars, "LEASETRAIN_OPERATOR_KEY"));
    if (node.empty()) node = host;
    if (short_host(node) != short_host(host))
      throw UserError("this rank runs on " + host + " but was placed on " + node + " (LEASETRAIN_NODE)");
  }
  LeaseGuard g(std::move(m), lease_id, node, split(get(vars, "LEASETRAIN_RANK_DEVICES"), ','), std::move(clock));
  if (std::string root = get(vars, "LEASETRAIN_STORAGE_ROOT"); !root.empty()) {
    const auto& roots = g.lease().storage_roots;
    if (!g.local() && std::find(roots.begin(), roots.end(), root) == roots.end())
      throw UserError("LEASETRAIN_STORAGE_ROOT=" + root + " is not a storage root of lease " + lease_id);
    g.storage_root_ = root;
  }
  g.job_dir_ = get(vars, "LEASETRAIN_JOB_DIR");
  if (std::string end = get(vars, "LEASETRAIN_GPU_BUDGET_END"); !end.empty()) g.gpu_budget_end_ = parse_time(end);
  return g;
}

void LeaseGuard::check_start(TimePoint now) const {
  check_window(lease(), now);
  if (now >= gpu_budget_end_)
    throw UserError("lease " + lease().id + " has no GPU-hours left (budget ended " + format_time(gpu_budget_end_) + ")");
}

TimePoint LeaseGuard::deadline() const {
  TimePoint d = lease().deadline();
  if (gpu_budget_end_ != TimePoint::max()) d = std::min(d, gpu_budget_end_ - std::chrono::seconds(lease().grace_seconds));
  return d;
}

int64_t LeaseGuard::seconds_until_deadline(TimePoint now) const { return (deadline() - now).count(); }

std::string LeaseGuard::deadline_message(TimePoint now) const {
  const Lease& l = lease();
  bool budget = deadline() < l.deadline();
  return "lease " + l.id + ": stopping at " + format_time(now) + ", " +
         (budget ? "the GPU-hours quota runs out at " + format_time(gpu_budget_end_)
                 : "the lease ends at " + format_time(l.not_after)) +
         " and the last " + std::to_string(l.grace_seconds) + " s are for the checkpoint";
}

void LeaseGuard::check_ranks(int world_size) const {
  const Lease& l = lease();
  if (world_size <= 0) throw UserError("world size must be positive");
  if (world_size > l.quota.max_ranks)
    throw UserError("job has " + std::to_string(world_size) + " ranks; lease " + l.id + " allows " +
                    std::to_string(l.quota.max_ranks) + " (quota.max_ranks)");
  if (world_size > l.total_slots())
    throw UserError("job has " + std::to_string(world_size) + " ranks; lease " + l.id + " holds " +
                    std::to_string(l.total_slots()) + " slots");
}

std::string LeaseGuard::check_path(const std::string& path, bool for_write) const {
  std::string real = resolve_real_path(path);
  const Lease& l = lease();
  for (const std::string& r : l.storage_roots)
    if (path_is_under(real, r)) return real;
  if (!for_write)
    for (const std::string& r : l.read_only_roots)
      if (path_is_under(real, r)) return real;
  std::string roots;
  for (const std::string& r : l.storage_roots) roots += (roots.empty() ? "" : ", ") + r;
  for (const std::string& r : l.read_only_roots)
    if (for_write && path_is_under(real, r))
      throw UserError(path + ": " + r + " is read-only for lease " + l.id + "; write under " + roots);
  throw UserError(path + (real != path ? " (really " + real + ")" : std::string()) + " is outside lease " + l.id +
                  "'s storage roots (" + roots + ")");
}

uint64_t LeaseGuard::bytes_used() const {
  if (local()) return 0;
  uint64_t total = 0;
  for (const std::string& r : lease().storage_roots) total += disk_usage(r);
  return total;
}

void LeaseGuard::reserve_bytes(uint64_t n) const {
  const Lease& l = lease();
  if (local()) return;
  uint64_t used = bytes_used();
  if (used > l.quota.storage_bytes || n > l.quota.storage_bytes - used)
    throw UserError("lease " + l.id + ": writing " + std::to_string(n) + " bytes would exceed the storage quota (" +
                    std::to_string(used) + " of " + std::to_string(l.quota.storage_bytes) + " bytes used)");
}

void LeaseGuard::check_devices(const std::vector<std::string>& uuids) const {
  const Lease& l = lease();
  const Allocation& a = alloc();
  std::set<std::string> seen, expected;
  for (const std::string& d : rank_devices_) expected.insert(uuid_key(d));
  std::set<std::string> held;
  for (const std::string& u : a.gpus) held.insert(uuid_key(u));
  for (const std::string& u : a.mig) held.insert(uuid_key(u));
  for (const std::string& u : uuids) {
    std::string k = uuid_key(u);
    if (k.size() != 32) throw UserError("device UUID " + u + " is not a full UUID");
    if (!seen.insert(k).second) throw UserError("device " + u + " is visible twice");
    if (!held.count(k))
      throw UserError("device " + u + " is not leased: lease " + l.id + " holds no such GPU or MIG slice on " + node_ +
                      "; refusing to run on it");
    if (!expected.empty() && !expected.count(k))
      throw UserError("device " + u + " belongs to lease " + l.id + " but not to this rank (LEASETRAIN_RANK_DEVICES)");
  }
  if (!expected.empty() && seen.size() != expected.size())
    throw UserError("this rank sees " + std::to_string(seen.size()) + " device(s) but lease " + l.id + " gives it " +
                    std::to_string(expected.size()) + " (" + rank_devices_[0] + (expected.size() > 1 ? ", ..." : "") +
                    "); a wrong CUDA_VISIBLE_DEVICES entry hides the devices after it");
}

std::vector<std::string> LeaseGuard::probe_device_nodes(const std::string& dev_dir, const std::string& proc_dir) const {
  const Node& node = *m_.find_node(node_);
  const Allocation& a = alloc();
  std::vector<std::string> found;
  std::error_code ec;
  std::vector<fs::path> gpu_nodes, cap_nodes;
  for (const auto& e : fs::directory_iterator(dev_dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.size() > 6 && name.rfind("nvidia", 0) == 0 &&
        std::all_of(name.begin() + 6, name.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
      gpu_nodes.push_back(e.path());
  }
  for (const auto& e : fs::directory_iterator(fs::path(dev_dir) / "nvidia-caps", ec)) cap_nodes.push_back(e.path());
  std::sort(gpu_nodes.begin(), gpu_nodes.end());
  std::sort(cap_nodes.begin(), cap_nodes.end());

  // Minors this lease may open: its whole GPUs and the parents of its slices.
  std::set<int> allowed;
  std::set<std::string> leased_gpus(a.gpus.begin(), a.gpus.end());
  for (const std::string& s : a.mig) leased_gpus.insert(node.find_mig(s)->parent);
  std::map<std::string, int> minor_of;  // gpu uuid -> minor
  for (const std::string& u : leased_gpus) {
    const Gpu* g = node.find_gpu(u);
    int minor = g->minor >= 0 ? g->minor : minor_from_proc(proc_dir, g->pci_bus_id);
    if (minor < 0 && !gpu_nodes.empty())
      throw UserError("cannot tell which /dev/nvidia* node is leased GPU " + u + " (bus " + g->pci_bus_id + "): not in " +
                      proc_dir + "/driver/nvidia/gpus; set its minor in the manifest");
    allowed.insert(minor);
    minor_of[u] = minor;
  }
  for (const fs::path& p : gpu_nodes) {
    int minor = std::atoi(p.filename().string().c_str() + 6);
    if (!allowed.count(minor) && opens(p.string())) found.push_back(p.string());
  }

  // MIG capabilities: the gi/ci access caps of the leased slices, from the driver's table.
  std::set<std::string> allowed_caps;
  std::ifstream mm(fs::path(proc_dir) / "driver/nvidia-caps/mig-minors");
  std::map<std::string, std::string> cap_of;  // "gpu0/gi1/access" -> "nvidia-cap12"
  std::string key, value;
  while (mm >> key >> value) cap_of[key] = "nvidia-cap" + value;
  for (const std::string& s : a.mig) {
    const MigSlice* slice = node.find_mig(s);
    if (slice->gi < 0) continue;
    std::string gpu = "gpu" + std::to_string(minor_of[slice->parent]);
    std::string gi = gpu + "/gi" + std::to_string(slice->gi);
    for (const std::string& k : {gi + "/access", gi + "/ci" + std::to_string(slice->ci) + "/access"})
      if (auto it = cap_of.find(k); it != cap_of.end()) allowed_caps.insert(it->second);
  }
  for (const fs::path& p : cap_nodes)
    if (!allowed_caps.count(p.filename().string()) && opens(p.string())) found.push_back(p.string());
  return found;
}

std::string LeaseGuard::enforce_isolation(const std::string& dev_dir, const std::string& proc_dir) const {
  std::vector<std::string> open = probe_device_nodes(dev_dir, proc_dir);
  if (open.empty()) return "";
  std::string list;
  for (const std::string& p : open) list += (list.empty() ? "" : " ") + p;
  std::string msg = "node " + node_ + " is not isolated for lease " + lease().id + ": device nodes outside the lease open (" +
                    list + "); the operator must fence them (cgroup device rules, ConstrainDevices=yes)";
  if (lease().policy.probe == ProbePolicy::refuse) throw UserError(msg);
  std::fprintf(stderr, "leasetrain: warning: %s\n", msg.c_str());
  return msg;
}

std::string LeaseGuard::apply_rank_env(const std::string& sysfs_root) const {
  const char* pk = std::getenv("LEASETRAIN_IB_PKEY");
  const char* hca = std::getenv("NCCL_IB_HCA");
  if (!pk || !*pk || !hca || !*hca) return "";
  std::string h = hca;
  if (!h.empty() && h[0] == '=') h.erase(0, 1);
  size_t colon = h.find(':');
  if (colon == std::string::npos || h.find(',') != std::string::npos)
    throw UserError("NCCL_IB_HCA=" + std::string(hca) + ": expected one =<dev>:<port> per rank");
  std::string dev = h.substr(0, colon);
  int port = std::atoi(h.c_str() + colon + 1);
  uint16_t pkey = uint16_t(std::stoul(pk, nullptr, 0));
  auto idx = resolve_pkey_index(sysfs_root, dev, port, pkey);
  if (!idx) throw UserError(h + " (lease " + lease().id + ") is not present on node " + node_ + " under " + sysfs_root);
  std::string want = std::to_string(*idx);
  const char* cur = std::getenv("NCCL_IB_PKEY");
  std::string note;
  if (cur && want != cur)
    note = "P_Key " + pkey_hex(pkey) + " is at index " + want + " on " + node_ + " (launcher said " + cur + ")";
  ::setenv("NCCL_IB_PKEY", want.c_str(), 1);
  return note;
}

void LeaseGuard::record_runtime(int rank, const std::vector<std::string>& devices, const std::string& nccl_version,
                                const std::string& cuda_version) const {
  if (job_dir_.empty()) return;
  nlohmann::json j = {{"rank", rank},
                      {"host", node_},
                      {"devices", devices},
                      {"nccl_version", nccl_version},
                      {"cuda_version", cuda_version},
                      {"start", format_time(clock_())}};
  // A rank's write like any other: beneath the lease's storage roots (LEASETRAIN_WRITE_ROOTS),
  // no symbolic link followed.
  lt::write_file_atomic(WriteRoot::open_out_dir(job_dir_), "rank-" + std::to_string(rank) + ".json",
                        j.dump() + "\n");
}

void LeaseGuard::write_job_file(const std::string& name, const std::string& text) const {
  if (job_dir_.empty()) return;
  try {
    lt::write_file_atomic(WriteRoot::open_out_dir(job_dir_), name, text);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "leasetrain: warning: job dir: %s (not written: %s)\n", name.c_str(), e.what());
  }
}

void LeaseGuard::record_progress(const RunProgress& p) const {
  if (job_dir_.empty()) return;
  const nlohmann::json j = {{"step", p.step},
                            {"start_step", p.start_step},
                            {"checkpoint_step", p.checkpoint_step},
                            {"checkpoint_seconds", p.checkpoint_seconds},
                            {"global_batch", p.global_batch},
                            {"world", p.world},
                            {"time", format_time(clock_())}};
  write_job_file("progress.json", j.dump() + "\n");
}

void LeaseGuard::record_exit(int rank, int exit_code, const std::string& error) const {
  if (job_dir_.empty()) return;
  std::string line = error.substr(0, error.find('\n'));  // one line
  const nlohmann::json j = {{"rank", rank}, {"host", node_}, {"exit_code", exit_code}, {"error", line}};
  // dump() with replacement: an error quoting a file's bytes need not be valid UTF-8.
  write_job_file("rank-" + std::to_string(rank) + ".exit.json",
                 j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

}  // namespace lt::lease
