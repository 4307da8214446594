// Lease -> per-node / per-rank plan (see lease_plan.h), and the embedded local lease.
#include "lease/lease_plan.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "lease/audit.h"
#include "lease/pkey.h"
#include "lease/storage.h"
#include "runtime/error.h"

namespace lt::lease {
namespace {

namespace fs = std::filesystem;

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string fmt_double(double v) {
  std::ostringstream ss;
  ss.precision(6);
  ss << v;
  return ss.str();
}

}  // namespace

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

Identity Identity::current() {
  Identity id;
  id.uid = uint32_t(::getuid());
  std::vector<char> buf(1 << 16);
  struct passwd pw {}, *pwp = nullptr;
  if (::getpwuid_r(id.uid, &pw, buf.data(), buf.size(), &pwp) == 0 && pwp) id.user = pwp->pw_name;
  int n = ::getgroups(0, nullptr);
  std::vector<gid_t> gs(size_t(std::max(n, 0)));
  if (n > 0) n = ::getgroups(n, gs.data());
  gs.resize(size_t(std::max(n, 0)));
  gs.insert(gs.begin(), ::getgid());
  for (gid_t g : gs) {
    if (std::find(id.gids.begin(), id.gids.end(), uint32_t(g)) != id.gids.end()) continue;
    id.gids.push_back(uint32_t(g));
    struct group gr {}, *grp = nullptr;
    if (::getgrgid_r(g, &gr, buf.data(), buf.size(), &grp) == 0 && grp) id.groups.push_back(grp->gr_name);
  }
  return id;
}

std::string Identity::describe() const {
  std::string s = "uid " + std::to_string(uid) + (user.empty() ? "" : " (" + user + ")") + ", groups ";
  for (size_t i = 0; i < gids.size(); ++i) s += (i ? ", " : "") + std::to_string(gids[i]);
  if (!groups.empty()) s += " (" + join(groups, ", ") + ")";
  return s;
}

void check_identity(const Manifest& m, const Lease& l, const Identity& who) {
  if (m.embedded) return;
  const Tenant* t = m.find_tenant(l.tenant);
  if (!t || (t->users.empty() && t->groups.empty())) return;
  for (const std::string& u : t->users)
    if ((!who.user.empty() && u == who.user) || u == std::to_string(who.uid)) return;
  for (const std::string& g : t->groups) {
    if (std::find(who.groups.begin(), who.groups.end(), g) != who.groups.end()) return;
    for (uint32_t gid : who.gids)
      if (g == std::to_string(gid)) return;
  }
  std::string expected;
  if (!t->users.empty()) expected += "users " + join(t->users, ", ");
  if (!t->groups.empty()) expected += std::string(expected.empty() ? "" : " or ") + "groups " + join(t->groups, ", ");
  throw UserError("lease " + l.id + " belongs to tenant " + t->id + " (" + expected + "), and you are " + who.describe() +
                  (who.uid == 0 ? "; root is not exempt: the operator lists root among the tenant's users to allow it" : ""));
}

std::string local_hostname() {
  char buf[HOST_NAME_MAX + 1] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "localhost";
  return buf;
}

Manifest local_default_manifest(int cpu_ranks, const std::string& proc_root, const std::string& dev_root) {
  if (cpu_ranks > kMaxCpuRanks)
    throw UserError("--np " + std::to_string(cpu_ranks) + ": the local lease runs at most " + std::to_string(kMaxCpuRanks) +
                    " CPU ranks");
  Manifest m;
  m.origin = "<embedded local lease>";
  m.embedded = true;
  m.op.id = "local";
  Node node;
  node.hostname = local_hostname();
  std::error_code ec;
  fs::path gpus_dir = fs::path(proc_root) / "driver/nvidia/gpus";
  std::vector<fs::path> entries;
  for (const auto& e : fs::directory_iterator(gpus_dir, ec)) entries.push_back(e.path());
  std::sort(entries.begin(), entries.end());  // bus order, as CUDA_DEVICE_ORDER=PCI_BUS_ID
  for (const fs::path& dir : entries) {
    std::ifstream in(dir / "information");
    Gpu g;
    std::string line;
    while (std::getline(in, line)) {
      size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string key = trim(line.substr(0, colon)), val = trim(line.substr(colon + 1));
      if (key == "GPU UUID") g.uuid = val;
      else if (key == "Bus Location") g.pci_bus_id = val;
      else if (key == "Device Minor") g.minor = std::atoi(val.c_str());
    }
    std::transform(g.pci_bus_id.begin(), g.pci_bus_id.end(), g.pci_bus_id.begin(),
                   [](unsigned char c) { return char(std::tolower(c)); });
    if (!is_gpu_uuid(g.uuid) || g.minor < 0) continue;
    // Only what this process may use: in a container /proc lists the host's GPUs too.
    std::string devnode = (fs::path(dev_root) / ("nvidia" + std::to_string(g.minor))).string();
    int fd = ::open(devnode.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;
    ::close(fd);
    node.gpus.push_back(g);
  }
  Allocation a;
  a.node = node.hostname;
  for (const Gpu& g : node.gpus) a.gpus.push_back(g.uuid);
  if (a.gpus.empty()) a.cpu_ranks = std::max(1, cpu_ranks);
  m.nodes.push_back(node);
  m.tenants.push_back(Tenant{"local", {}, {}, ""});
  Lease l;
  l.id = kLocalLeaseId;
  l.tenant = "local";
  l.not_before = TimePoint{};  // 1970
  l.not_after = std::chrono::sys_days{std::chrono::year{9999} / 1 / 1};
  l.grace_seconds = 0;
  l.quota.max_ranks = std::max(a.slots(), 1);
  l.quota.gpu_hours = 1e15;
  l.quota.storage_bytes = UINT64_MAX;
  l.storage_roots = {"/"};
  l.policy.probe = ProbePolicy::warn;
  l.alloc.push_back(a);
  m.leases.push_back(l);
  validate_manifest(m);
  return m;
}

int usable_slots(const Allocation& a, const std::map<std::string, PlanRequest::Exclusion>& exclude,
                 std::vector<std::string>* devices) {
  std::vector<std::string> all = a.gpus;
  all.insert(all.end(), a.mig.begin(), a.mig.end());
  auto it = exclude.find(a.node);
  const PlanRequest::Exclusion none;
  const PlanRequest::Exclusion& ex = it == exclude.end() ? none : it->second;
  std::vector<std::string> kept;
  for (const std::string& d : all)
    if (!ex.devices.count(d)) kept.push_back(d);
  const int n = ex.whole_node ? 0 : all.empty() ? std::max(0, a.cpu_ranks - ex.cpu_slots) : int(kept.size());
  if (devices) *devices = ex.whole_node ? std::vector<std::string>{} : kept;
  return n;
}

Plan make_plan(const Manifest& m, const std::string& lease_id, const PlanRequest& req) {
  const Lease& l = m.lease(lease_id);
  check_identity(m, l, req.caller ? *req.caller : Identity::current());
  check_window(l, req.now);
  if (req.np < 0) throw UserError("--np must be positive, got " + std::to_string(req.np));
  Plan p;
  p.lease_id = l.id;
  p.tenant = l.tenant;
  p.operator_id = m.op.id;
  p.manifest_origin = m.origin;
  p.manifest_sha256 = m.sha256;
  p.embedded = m.embedded;
  p.now = req.now;
  p.not_before = l.not_before;
  p.not_after = l.not_after;
  p.deadline = l.deadline();
  p.grace_seconds = l.grace_seconds;
  p.max_ranks = l.quota.max_ranks;
  p.gpu_hours_quota = l.quota.gpu_hours;
  p.storage_bytes = l.quota.storage_bytes;
  p.storage_roots = l.storage_roots;
  p.read_only_roots = l.read_only_roots;
  p.policy = l.policy;
  p.job_id = req.job_id;
  // The lease's usage log is its only accounting source: a tenant naming a log of its own
  // would start every job with a fresh GPU-hours budget.
  if (!m.embedded && !req.usage_log.empty() &&
      resolve_real_path(req.usage_log) != resolve_real_path(l.usage_log_path()))
    throw UserError("--usage-log " + req.usage_log + ": lease " + l.id + " keeps its usage in " + l.usage_log_path() +
                    ", the only log its GPU-hours are counted from; drop --usage-log");
  // A root that is a symlink could be pointed at another tenant's directory after the
  // manifest was checked: the manifest must name real paths.
  if (!m.embedded)
    for (const std::string& r : l.storage_roots) {
      std::string real = resolve_real_path(r);
      if (real != normalize_path(r))
        throw UserError(m.origin + ": lease " + l.id + ": storage root " + r + " is really " + real +
                        " (a symlink on the way); the manifest must name the real directory");
    }
  p.usage_log = m.embedded ? req.usage_log : l.usage_log_path();
  if (req.check_usage && !p.usage_log.empty()) p.gpu_seconds_used = gpu_seconds_used(p.usage_log, l.id);
  if (p.gpu_seconds_left() <= 0)
    throw UserError("lease " + l.id + " has used its " + fmt_double(l.quota.gpu_hours) + " GPU-hours (" +
                    fmt_double(p.gpu_seconds_used / 3600.0) + " recorded in " + p.usage_log + ")");

  int total = 0;
  for (const Allocation& a : l.alloc) total += usable_slots(a, req.exclude);
  if (req.np > total) {
    std::string per_node;
    for (const Allocation& a : l.alloc)
      per_node += (per_node.empty() ? "" : ", ") + a.node + ": " + std::to_string(usable_slots(a, req.exclude));
    throw UserError("--np " + std::to_string(req.np) + " exceeds lease " + l.id + ", which has " + std::to_string(total) +
                    " slots (" + per_node + ")" + (req.exclude.empty() ? "" : " once the left-out slots are taken away"));
  }
  if (req.np > l.quota.max_ranks)
    throw UserError("--np " + std::to_string(req.np) + " exceeds lease " + l.id + "'s quota of " +
                    std::to_string(l.quota.max_ranks) + " ranks");
  p.np = req.np > 0 ? req.np : std::min(total, l.quota.max_ranks);
  if (p.np > kMaxJobRanks)
    throw UserError("lease " + l.id + ": a job of " + std::to_string(p.np) + " ranks is more than the " +
                    std::to_string(kMaxJobRanks) + " one launch starts; pass a smaller --np");
  if (req.np == 0 && total > l.quota.max_ranks)
    p.notes.push_back("the lease has " + std::to_string(total) + " slots but a quota of " +
                      std::to_string(l.quota.max_ranks) + " ranks; using " + std::to_string(p.np));

  std::map<std::string, std::optional<int>> pkey_cache;  // "host/hca" -> index
  std::set<std::string> ifaces;
  int rank = 0;
  for (const Allocation& a : l.alloc) {
    if (rank >= p.np) break;
    const Node& node = *m.find_node(a.node);
    std::vector<std::string> devices;
    const int here = std::min(usable_slots(a, req.exclude, &devices), p.np - rank);
    if (here <= 0) continue;
    const Partition* part = a.partition.empty() ? nullptr : m.find_partition(a.partition);
    NodePlan np;
    np.host = node.hostname;
    np.slots = here;
    for (int local = 0; local < here; ++local, ++rank) {
      RankPlan r;
      r.rank = rank;
      r.local_rank = local;
      r.host = node.hostname;
      auto& env = r.env;
      if (!devices.empty()) {
        const std::string& dev = devices[size_t(local)];
        r.devices = {dev};
        if (const Gpu* g = node.find_gpu(dev)) r.pci_bus_id = g->pci_bus_id;
        else if (const MigSlice* s = node.find_mig(dev)) r.pci_bus_id = node.find_gpu(s->parent)->pci_bus_id;
        env["CUDA_VISIBLE_DEVICES"] = dev;
        np.devices.push_back(dev);
      } else {
        env["CUDA_VISIBLE_DEVICES"] = "";  // a CPU rank sees no GPU, even on a GPU node
      }
      env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID";
      const Nic* nic = a.nics.empty() ? nullptr : node.find_nic(a.nics[size_t(local) % a.nics.size()]);
      if (nic) {
        r.netdev = nic->netdev;
        env["NCCL_SOCKET_IFNAME"] = "=" + nic->netdev;
        ifaces.insert(nic->netdev);
        if (std::find(np.netdevs.begin(), np.netdevs.end(), nic->netdev) == np.netdevs.end())
          np.netdevs.push_back(nic->netdev);
      } else {
        env["NCCL_SOCKET_IFNAME"] = "=lo";  // single node: bootstrap stays on loopback
        ifaces.insert("lo");
      }
      if (nic && nic->is_ib()) {
        r.hca = nic->hca();
        r.pkey = part->pkey;
        env["NCCL_IB_HCA"] = "=" + r.hca;
        std::string cache_key = node.hostname + "/" + r.hca;
        auto it = pkey_cache.find(cache_key);
        if (it == pkey_cache.end())
          it = pkey_cache.emplace(cache_key, resolve_pkey_index(req.sysfs_root, nic->ib_dev, nic->port, part->pkey)).first;
        env["LEASETRAIN_IB_PKEY"] = pkey_hex(part->pkey);
        if (it->second) {
          r.pkey_index = *it->second;
          env["NCCL_IB_PKEY"] = std::to_string(r.pkey_index);
        }
        if (nic->gid_index >= 0) env["NCCL_IB_GID_INDEX"] = std::to_string(nic->gid_index);
        if (nic->traffic_class >= 0) env["NCCL_IB_TC"] = std::to_string(nic->traffic_class);
        if (part->service_level >= 0) env["NCCL_IB_SL"] = std::to_string(part->service_level);
      } else {
        env["NCCL_IB_DISABLE"] = "1";
      }
      env["NCCL_HOSTID"] = l.id + "." + node.hostname;
      if (!l.policy.ras) env["NCCL_RAS_ENABLE"] = "0";
      env["LEASETRAIN_LEASE"] = l.id;
      env["LEASETRAIN_NODE"] = node.hostname;
      env["LEASETRAIN_RANK_DEVICES"] = join(r.devices, ",");
      env["LEASETRAIN_STORAGE_ROOT"] = l.storage_roots[0];
      // Every path the trainer writes must resolve beneath one of these (colon-separated).
      std::vector<std::string> write_roots;
      for (const std::string& root : l.storage_roots) write_roots.push_back(normalize_path(root));
      env["LEASETRAIN_WRITE_ROOTS"] = join(write_roots, ":");
      if (!req.manifest_path.empty()) env["LEASETRAIN_MANIFEST"] = req.manifest_path;
      if (!req.operator_key.empty()) env["LEASETRAIN_OPERATOR_KEY"] = req.operator_key;
      if (!req.job_id.empty()) env["LEASETRAIN_JOB_ID"] = req.job_id;
      if (!p.usage_log.empty()) env["LEASETRAIN_USAGE_LOG"] = p.usage_log;
      env["LEASETRAIN_WORLD_SIZE"] = std::to_string(p.np);
      env["LEASETRAIN_ATTEMPT"] = std::to_string(req.attempt);
      p.ranks.push_back(std::move(r));
    }
    p.nodes.push_back(std::move(np));
  }
  for (RankPlan& r : p.ranks) r.env["LEASETRAIN_NODES"] = std::to_string(p.nodes.size());
  // GPU-hours: the device ranks together may run until the quota left is spent.
  int device_ranks = 0;
  for (const RankPlan& r : p.ranks) device_ranks += r.devices.empty() ? 0 : 1;
  if (device_ranks > 0 && !m.embedded) {
    double secs = p.gpu_seconds_left() / device_ranks;
    if (secs < 1e10) {
      std::string end = format_time(req.now + std::chrono::seconds(int64_t(secs)));
      for (RankPlan& r : p.ranks) r.env["LEASETRAIN_GPU_BUDGET_END"] = end;
    }
  }
  for (const std::string& v : l.policy.allow_dangerous_env)
    p.notes.push_back("warning: lease " + l.id + " lets the job inherit " + v +
                      " (allow_dangerous_env), which can load code or re-point MPI, NCCL or the loader");
  if (!m.embedded && l.usage_log.empty())
    p.notes.push_back("lease " + l.id + " names no usage_log: its GPU-hours are counted from " + l.usage_log_path() +
                      ", inside the tenant's own storage, so the quota holds against mistakes only");
  if (const Tenant* t = m.find_tenant(l.tenant); !m.embedded && t && t->users.empty() && t->groups.empty())
    p.notes.push_back("tenant " + t->id + " declares no users or groups: any local user may use lease " + l.id);
  for (auto& [key, idx] : pkey_cache)
    if (!idx)
      p.notes.push_back("P_Key index for " + key + " is not in " + req.sysfs_root +
                        "; each rank resolves it on its node (LeaseGuard::apply_rank_env)");
  p.mpi_interfaces.assign(ifaces.begin(), ifaces.end());
  if (p.mpi_interfaces.size() > 1) p.mpi_interfaces.erase(std::remove(p.mpi_interfaces.begin(), p.mpi_interfaces.end(), "lo"), p.mpi_interfaces.end());
  return p;
}

nlohmann::json plan_json(const Plan& p) {
  using nlohmann::json;
  json j;
  j["lease"] = p.lease_id;
  j["tenant"] = p.tenant;
  j["operator"] = p.operator_id;
  j["manifest"] = {{"origin", p.manifest_origin}, {"sha256", p.manifest_sha256}, {"embedded", p.embedded},
                   {"signature", p.signature_note}};
  j["window"] = {{"now", format_time(p.now)}, {"not_before", format_time(p.not_before)},
                 {"not_after", format_time(p.not_after)}, {"grace_seconds", p.grace_seconds},
                 {"deadline", format_time(p.deadline)}};
  j["quota"] = {{"max_ranks", p.max_ranks}, {"gpu_hours", p.gpu_hours_quota},
                {"gpu_hours_used", p.gpu_seconds_used / 3600.0}, {"storage_bytes", p.storage_bytes}};
  j["storage_roots"] = p.storage_roots;
  j["read_only_roots"] = p.read_only_roots;
  j["usage_log"] = p.usage_log;
  j["np"] = p.np;
  j["job_id"] = p.job_id;
  j["mpi_interfaces"] = p.mpi_interfaces;
  j["nodes"] = json::array();
  for (const NodePlan& n : p.nodes)
    j["nodes"].push_back({{"host", n.host}, {"slots", n.slots}, {"devices", n.devices}, {"netdevs", n.netdevs}});
  j["ranks"] = json::array();
  for (const RankPlan& r : p.ranks) {
    json jr = {{"rank", r.rank},     {"local_rank", r.local_rank}, {"host", r.host},
               {"devices", r.devices}, {"pci_bus_id", r.pci_bus_id}, {"netdev", r.netdev},
               {"hca", r.hca},        {"env", r.env}};
    jr["pkey"] = r.pkey ? json(pkey_hex(r.pkey)) : json(nullptr);
    jr["pkey_index"] = r.pkey_index >= 0 ? json(r.pkey_index) : json(nullptr);
    j["ranks"].push_back(jr);
  }
  j["notes"] = p.notes;
  return j;
}

std::string plan_text(const Plan& p) {
  std::ostringstream o;
  o << "lease " << p.lease_id << " (tenant " << p.tenant << ", operator " << p.operator_id << ")\n";
  o << "manifest " << p.manifest_origin;
  if (!p.manifest_sha256.empty()) o << " sha256 " << p.manifest_sha256.substr(0, 16);
  if (!p.signature_note.empty()) o << "; " << p.signature_note;
  o << "\n";
  if (!p.embedded) {
    o << "window " << format_time(p.not_before) << " .. " << format_time(p.not_after) << ", grace "
      << p.grace_seconds << " s: checkpoint and stop by " << format_time(p.deadline) << " (now "
      << format_time(p.now) << ")\n";
    o << "quota  max_ranks " << p.max_ranks << ", GPU-hours " << fmt_double(p.gpu_hours_quota) << " (used "
      << fmt_double(p.gpu_seconds_used / 3600.0) << "), storage " << p.storage_bytes << " bytes\n";
  }
  o << "storage " << join(p.storage_roots, ", ");
  if (!p.read_only_roots.empty()) o << " (read-only: " << join(p.read_only_roots, ", ") << ")";
  o << "\nusage log " << (p.usage_log.empty() ? "(none)" : p.usage_log) << "\n";
  o << "ranks " << p.np << " on " << p.nodes.size() << " node(s); MPI interfaces " << join(p.mpi_interfaces, ",") << "\n";
  // Variables equal on every rank once, then what differs per rank.
  std::map<std::string, std::string> common;
  if (!p.ranks.empty()) {
    common = p.ranks[0].env;
    for (const RankPlan& r : p.ranks)
      for (auto it = common.begin(); it != common.end();) {
        auto f = r.env.find(it->first);
        it = (f == r.env.end() || f->second != it->second) ? common.erase(it) : std::next(it);
      }
  }
  for (const NodePlan& n : p.nodes) {
    o << "node " << n.host << " slots=" << n.slots << "\n";
    for (const RankPlan& r : p.ranks) {
      if (r.host != n.host) continue;
      o << "  rank " << r.rank << " (local " << r.local_rank << ")  "
        << (r.devices.empty() ? std::string("cpu") : r.devices[0]);
      if (!r.pci_bus_id.empty()) o << " @" << r.pci_bus_id;
      o << "  nic " << (r.netdev.empty() ? "lo" : r.netdev);
      if (!r.hca.empty()) {
        o << " " << r.hca << " pkey " << pkey_hex(r.pkey) << " index "
          << (r.pkey_index >= 0 ? std::to_string(r.pkey_index) : std::string("(resolved on the node)"));
      }
      o << "\n";
      for (const auto& [k, v] : r.env)
        if (!common.count(k)) o << "    " << k << "=" << v << "\n";
    }
  }
  o << "environment of every rank:\n";
  for (const auto& [k, v] : common) o << "  " << k << "=" << v << "\n";
  for (const std::string& n : p.notes) o << "note: " << n << "\n";
  return o.str();
}

}  // namespace lt::lease
