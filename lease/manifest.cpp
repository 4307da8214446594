// Parsing (toml++) and validation of the operator's lease manifest. Unknown keys are errors: a
// misspelt quota or policy key must not silently fall back to a default.
#include "lease/manifest.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/sha256.h"

namespace lt::lease {
namespace {

using std::chrono::seconds;

[[noreturn]] void fail_at(const std::string& origin, int64_t line, const std::string& path,
                          const std::string& msg) {
  std::string where = origin;
  if (line > 0) where += ":" + std::to_string(line);
  throw UserError(where + ": " + path + ": " + msg);
}

// Not named `quoted`: ADL would find std::quoted (through <iomanip>) for std::string arguments.
std::string quote_name(std::string_view s) { return "'" + std::string(s) + "'"; }

bool is_hex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

// 8-4-4-4-12 hex digits.
bool is_uuid_body(std::string_view s) {
  static constexpr int groups[] = {8, 4, 4, 4, 12};
  size_t i = 0;
  for (int g = 0; g < 5; ++g) {
    if (g > 0) {
      if (i >= s.size() || s[i] != '-') return false;
      ++i;
    }
    for (int k = 0; k < groups[g]; ++k, ++i)
      if (i >= s.size() || !is_hex(s[i])) return false;
  }
  return i == s.size();
}

bool is_pci_bus_id(std::string_view s) {  // DDDD:BB:DD.F, hex
  if (s.size() != 12) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 4 || i == 7) {
      if (s[i] != ':') return false;
    } else if (i == 10) {
      if (s[i] != '.') return false;
    } else if (!is_hex(s[i])) {
      return false;
    }
  }
  return true;
}

// Hostnames, netdevs, HCA names and ids end up in hostfiles, mpirun flags and env values:
// keep them to characters that need no quoting anywhere.
bool is_plain_name(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

bool is_env_pattern(std::string_view s) {
  if (s.empty()) return false;
  std::string_view body = s.back() == '*' ? s.substr(0, s.size() - 1) : s;
  if (body.empty()) return false;  // a bare '*' would pass everything
  // POSIX names: letters of either case (OMPI_MCA_btl_tcp_if_include is a real one), digits
  // and '_', not starting with a digit.
  if (std::isdigit(static_cast<unsigned char>(body[0]))) return false;
  return std::all_of(body.begin(), body.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

bool is_clean_absolute(std::string_view p) {
  if (p.empty() || p[0] != '/') return false;
  std::stringstream ss{std::string(p)};
  std::string part;
  while (std::getline(ss, part, '/'))
    if (part == ".." || part == ".") return false;
  return true;
}

std::optional<uint64_t> parse_bytes(const std::string& s) {
  size_t pos = 0;
  uint64_t v = 0;
  try {
    if (s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) return std::nullopt;
    v = std::stoull(s, &pos);
  } catch (...) {
    return std::nullopt;
  }
  std::string unit = s.substr(pos);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  static const std::map<std::string, uint64_t> units = {
      {"", 1},           {"B", 1},
      {"KB", 1000ULL},   {"MB", 1000ULL * 1000},   {"GB", 1000ULL * 1000 * 1000},
      {"TB", 1000ULL * 1000 * 1000 * 1000},        {"KiB", 1ULL << 10},
      {"MiB", 1ULL << 20}, {"GiB", 1ULL << 30},    {"TiB", 1ULL << 40},
      {"PiB", 1ULL << 50}};
  auto it = units.find(unit);
  if (it == units.end()) return std::nullopt;
  if (v > UINT64_MAX / it->second) return std::nullopt;
  return v * it->second;
}

TimePoint from_toml(const toml::date_time& dt) {
  using namespace std::chrono;
  sys_days d = year{dt.date.year} / month{dt.date.month} / day{dt.date.day};
  TimePoint t = d + hours{dt.time.hour} + minutes{dt.time.minute} + seconds{dt.time.second};
  return t - minutes{dt.offset->minutes};
}

// A view of one TOML table that knows its field path and which keys were read, so that keys
// nobody reads are reported as unknown.
class Table {
 public:
  Table(const toml::table& t, std::string path, const std::string& origin,
        std::map<std::string, int64_t>& lines)
      : t_(t), path_(std::move(path)), origin_(origin), lines_(lines) {
    lines_[path_] = t.source().begin.line;
  }

  const std::string& path() const { return path_; }
  std::string field(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  int64_t line_of(std::string_view key) const {
    const toml::node* n = t_.get(key);
    return n ? n->source().begin.line : t_.source().begin.line;
  }
  [[noreturn]] void fail(std::string_view key, const std::string& msg) const {
    fail_at(origin_, line_of(key), field(key), msg);
  }
  bool has(std::string_view key) const { return t_.contains(key); }

  const toml::node* get(std::string_view key) {
    seen_.insert(std::string(key));
    const toml::node* n = t_.get(key);
    if (n) lines_[field(key)] = n->source().begin.line;
    return n;
  }

  std::string str(std::string_view key, bool required, const std::string& dflt = "") {
    const toml::node* n = get(key);
    if (!n) {
      if (required) fail(key, "missing (expected a string)");
      return dflt;
    }
    if (!n->is_string()) fail(key, "expected a string");
    std::string v = n->as_string()->get();
    if (required && v.empty()) fail(key, "must not be empty");
    return v;
  }

  int64_t integer(std::string_view key, bool required, int64_t dflt, int64_t lo, int64_t hi) {
    const toml::node* n = get(key);
    if (!n) {
      if (required) fail(key, "missing (expected an integer)");
      return dflt;
    }
    if (!n->is_integer()) fail(key, "expected an integer");
    int64_t v = n->as_integer()->get();
    if (v < lo || v > hi)
      fail(key, "expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                    "], got " + std::to_string(v));
    return v;
  }

  double number(std::string_view key, bool required) {
    const toml::node* n = get(key);
    if (!n) {
      if (required) fail(key, "missing (expected a number)");
      return 0;
    }
    if (n->is_integer()) return double(n->as_integer()->get());
    if (n->is_floating_point()) return n->as_floating_point()->get();
    fail(key, "expected a number");
  }

  bool boolean(std::string_view key, bool dflt) {
    const toml::node* n = get(key);
    if (!n) return dflt;
    if (!n->is_boolean()) fail(key, "expected true or false");
    return n->as_boolean()->get();
  }

  uint64_t bytes(std::string_view key, bool required) {
    const toml::node* n = get(key);
    if (!n) {
      if (required) fail(key, "missing (expected a byte count such as 2000000000000 or \"2TiB\")");
      return 0;
    }
    if (n->is_integer()) {
      int64_t v = n->as_integer()->get();
      if (v <= 0) fail(key, "must be positive, got " + std::to_string(v));
      return uint64_t(v);
    }
    if (n->is_string()) {
      auto v = parse_bytes(n->as_string()->get());
      if (!v) fail(key, "expected a byte count such as \"500GiB\" or \"2TB\", got " + quote_name(n->as_string()->get()));
      if (*v == 0) fail(key, "must be positive");
      return *v;
    }
    fail(key, "expected an integer or a string such as \"2TiB\"");
  }

  TimePoint time(std::string_view key) {
    const toml::node* n = get(key);
    if (!n) fail(key, "missing (expected a UTC date-time such as 2025-06-01T00:00:00Z)");
    if (n->is_date_time()) {
      const toml::date_time& dt = n->as_date_time()->get();
      if (!dt.offset) fail(key, "a local date-time is ambiguous; write it in UTC with a Z (2025-06-01T00:00:00Z)");
      return from_toml(dt);
    }
    if (n->is_string()) {
      try {
        return parse_time(n->as_string()->get());
      } catch (const UserError& e) {
        fail(key, e.what());
      }
    }
    fail(key, "expected a UTC date-time such as 2025-06-01T00:00:00Z");
  }

  std::vector<std::string> strings(std::string_view key) {
    const toml::node* n = get(key);
    std::vector<std::string> out;
    if (!n) return out;
    const toml::array* a = n->as_array();
    if (!a) fail(key, "expected an array of strings");
    for (size_t i = 0; i < a->size(); ++i) {
      const toml::node& e = *a->get(i);
      if (!e.is_string())
        fail_at(origin_, e.source().begin.line, field(key) + "[" + std::to_string(i) + "]",
                "expected a string");
      out.push_back(e.as_string()->get());
      lines_[field(key) + "[" + std::to_string(i) + "]"] = e.source().begin.line;
    }
    return out;
  }

  std::optional<Table> table(std::string_view key) {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    if (!n->is_table()) fail(key, "expected a table ([" + field(key) + "])");
    return Table(*n->as_table(), field(key), origin_, lines_);
  }

  // [[key]] arrays of tables; each element's path is key[i].
  std::vector<Table> tables(std::string_view key) {
    const toml::node* n = get(key);
    std::vector<Table> out;
    if (!n) return out;
    const toml::array* a = n->as_array();
    if (!a) fail(key, "expected an array of tables ([[" + field(key) + "]])");
    for (size_t i = 0; i < a->size(); ++i) {
      const toml::node& e = *a->get(i);
      std::string p = field(key) + "[" + std::to_string(i) + "]";
      if (!e.is_table()) fail_at(origin_, e.source().begin.line, p, "expected a table");
      out.emplace_back(*e.as_table(), p, origin_, lines_);
    }
    return out;
  }

  void finish() const {
    for (auto&& [k, v] : t_) {
      if (!seen_.count(std::string(k.str())))
        fail_at(origin_, v.source().begin.line, field(k.str()), "unknown key");
    }
  }

 private:
  const toml::table& t_;
  std::string path_;
  const std::string& origin_;
  std::map<std::string, int64_t>& lines_;
  std::set<std::string> seen_;
};

Node parse_node(Table& t) {
  Node n;
  n.hostname = t.str("hostname", true);
  if (!is_plain_name(n.hostname)) t.fail("hostname", "expected a host name (letters, digits, '-', '_', '.'), got " + quote_name(n.hostname));
  if (t.has("shm_bytes")) n.shm_bytes = t.bytes("shm_bytes", true);
  for (Table& g : t.tables("gpu")) {
    Gpu gpu;
    gpu.uuid = g.str("uuid", true);
    if (!is_gpu_uuid(gpu.uuid))
      g.fail("uuid", "expected a full GPU UUID GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, got " + quote_name(gpu.uuid));
    gpu.pci_bus_id = g.str("pci_bus_id", true);
    std::transform(gpu.pci_bus_id.begin(), gpu.pci_bus_id.end(), gpu.pci_bus_id.begin(),
                   [](unsigned char c) { return char(std::tolower(c)); });
    if (!is_pci_bus_id(gpu.pci_bus_id))
      g.fail("pci_bus_id", "expected a PCI bus id DDDD:BB:DD.F such as 0000:17:00.0, got " + quote_name(gpu.pci_bus_id));
    gpu.numa = int(g.integer("numa", false, -1, -1, 1024));
    gpu.minor = int(g.integer("minor", false, -1, 0, 255));
    g.finish();
    n.gpus.push_back(gpu);
  }
  for (Table& s : t.tables("mig")) {
    MigSlice m;
    m.uuid = s.str("uuid", true);
    if (m.uuid.rfind("MIG-GPU-", 0) == 0)
      s.fail("uuid", "the old MIG-GPU-<uuid>/<gi>/<ci> form is not accepted; give the slice's MIG-<uuid> (nvidia-smi -L, driver R470+)");
    if (!is_mig_uuid(m.uuid))
      s.fail("uuid", "expected a full MIG UUID MIG-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, got " + quote_name(m.uuid));
    m.parent = s.str("parent", true);
    m.profile = s.str("profile", true);
    m.gi = int(s.integer("gi", true, -1, 0, 64));
    m.ci = int(s.integer("ci", true, -1, 0, 64));
    s.finish();
    n.mig.push_back(m);
  }
  for (Table& c : t.tables("nic")) {
    Nic nic;
    nic.netdev = c.str("netdev", true);
    if (!is_plain_name(nic.netdev)) c.fail("netdev", "expected an interface name, got " + quote_name(nic.netdev));
    nic.ib_dev = c.str("ib_dev", false);
    if (!nic.ib_dev.empty() && !is_plain_name(nic.ib_dev))
      c.fail("ib_dev", "expected an HCA name such as mlx5_0, got " + quote_name(nic.ib_dev));
    nic.port = int(c.integer("port", false, 1, 1, 255));
    nic.gid_index = int(c.integer("gid_index", false, -1, 0, 255));
    nic.traffic_class = int(c.integer("traffic_class", false, -1, 0, 255));
    nic.rail = int(c.integer("rail", false, -1, 0, 1024));
    nic.ip = c.str("ip", false);
    c.finish();
    n.nics.push_back(nic);
  }
  t.finish();
  return n;
}

Lease parse_lease(Table& t) {
  Lease l;
  l.id = t.str("id", true);
  if (!is_plain_name(l.id)) t.fail("id", "expected letters, digits, '-', '_', '.', got " + quote_name(l.id));
  l.tenant = t.str("tenant", true);
  l.not_before = t.time("not_before");
  l.not_after = t.time("not_after");
  l.grace_seconds = t.integer("grace_seconds", false, 300, 0, int64_t(366) * 86400);
  auto q = t.table("quota");
  if (!q) t.fail("quota", "missing ([" + t.field("quota") + "] with max_ranks, gpu_hours, storage_bytes)");
  l.quota.max_ranks = int(q->integer("max_ranks", true, 0, INT32_MIN, INT32_MAX));
  if (l.quota.max_ranks <= 0) q->fail("max_ranks", "must be positive, got " + std::to_string(l.quota.max_ranks));
  l.quota.gpu_hours = q->number("gpu_hours", true);
  if (!(l.quota.gpu_hours > 0)) q->fail("gpu_hours", "must be positive");
  l.quota.storage_bytes = q->bytes("storage_bytes", true);
  q->finish();
  l.storage_roots = t.strings("storage_roots");
  if (l.storage_roots.empty()) t.fail("storage_roots", "missing (expected at least one absolute directory)");
  for (size_t i = 0; i < l.storage_roots.size(); ++i)
    if (!is_clean_absolute(l.storage_roots[i]))
      t.fail("storage_roots", "entry " + std::to_string(i) + " " + quote_name(l.storage_roots[i]) +
                                  " must be an absolute path without '.' or '..'");
  l.read_only_roots = t.strings("read_only_roots");
  for (size_t i = 0; i < l.read_only_roots.size(); ++i)
    if (!is_clean_absolute(l.read_only_roots[i]))
      t.fail("read_only_roots", "entry " + std::to_string(i) + " " + quote_name(l.read_only_roots[i]) +
                                    " must be an absolute path without '.' or '..'");
  l.usage_log = t.str("usage_log", false);
  if (!l.usage_log.empty() && !is_clean_absolute(l.usage_log))
    t.fail("usage_log", "must be an absolute path without '.' or '..'");
  if (auto p = t.table("policy")) {
    l.policy.allow_env = p->strings("allow_env");
    l.policy.allow_dangerous_env = p->strings("allow_dangerous_env");
    l.policy.net_plugins = p->strings("net_plugins");
    l.policy.ras = p->boolean("ras", false);
    std::string probe = p->str("device_probe", false, "refuse");
    if (probe == "refuse") l.policy.probe = ProbePolicy::refuse;
    else if (probe == "warn") l.policy.probe = ProbePolicy::warn;
    else p->fail("device_probe", "expected \"refuse\" or \"warn\", got " + quote_name(probe));
    p->finish();
  }
  for (Table& a : t.tables("alloc")) {
    Allocation al;
    al.node = a.str("node", true);
    al.gpus = a.strings("gpus");
    al.mig = a.strings("mig");
    al.nics = a.strings("nics");
    al.partition = a.str("partition", false);
    al.cpu_ranks = int(a.integer("cpu_ranks", false, 0, 0, 4096));
    a.finish();
    l.alloc.push_back(al);
  }
  t.finish();
  return l;
}

}  // namespace

// ---- small accessors ------------------------------------------------------------------------

const Gpu* Node::find_gpu(std::string_view uuid) const {
  for (const Gpu& g : gpus)
    if (g.uuid == uuid) return &g;
  return nullptr;
}
const MigSlice* Node::find_mig(std::string_view uuid) const {
  for (const MigSlice& s : mig)
    if (s.uuid == uuid) return &s;
  return nullptr;
}
const Nic* Node::find_nic(std::string_view netdev) const {
  for (const Nic& n : nics)
    if (n.netdev == netdev) return &n;
  return nullptr;
}
const Node* Manifest::find_node(std::string_view hostname) const {
  for (const Node& n : nodes)
    if (n.hostname == hostname) return &n;
  return nullptr;
}
const Partition* Manifest::find_partition(std::string_view id) const {
  for (const Partition& p : partitions)
    if (p.id == id) return &p;
  return nullptr;
}
const Tenant* Manifest::find_tenant(std::string_view id) const {
  for (const Tenant& t : tenants)
    if (t.id == id) return &t;
  return nullptr;
}
const Lease& Manifest::lease(std::string_view id) const {
  for (const Lease& l : leases)
    if (l.id == id) return l;
  std::string known;
  for (const Lease& l : leases) known += (known.empty() ? "" : ", ") + l.id;
  throw UserError(origin + ": no lease " + quote_name(id) + " (leases: " + (known.empty() ? "none" : known) + ")");
}

int Lease::total_slots() const {
  int64_t n = 0;  // saturates: a huge manifest must not wrap the count negative
  for (const Allocation& a : alloc) n = std::min<int64_t>(n + a.slots(), INT32_MAX);
  return int(n);
}

std::string Lease::usage_log_path() const {
  if (!usage_log.empty()) return usage_log;
  return storage_roots.empty() ? std::string() : storage_roots[0] + "/usage.jsonl";
}

bool is_gpu_uuid(std::string_view s) { return s.size() == 40 && s.substr(0, 4) == "GPU-" && is_uuid_body(s.substr(4)); }
bool is_mig_uuid(std::string_view s) { return s.size() == 40 && s.substr(0, 4) == "MIG-" && is_uuid_body(s.substr(4)); }

std::string uuid_key(std::string_view s) {
  std::string out;
  for (char c : s) out += char(std::tolower(static_cast<unsigned char>(c)));
  if (out.rfind("gpu-", 0) == 0 || out.rfind("mig-", 0) == 0) out.erase(0, 4);
  out.erase(std::remove(out.begin(), out.end(), '-'), out.end());
  return out;
}

bool is_lease_controlled_env(std::string_view n) {
  static const std::set<std::string, std::less<>> names = {
      "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NCCL_SOCKET_IFNAME", "NCCL_IB_HCA",
      "NCCL_IB_PKEY",         "NCCL_IB_GID_INDEX", "NCCL_IB_TC",         "NCCL_IB_SL",
      "NCCL_HOSTID",          "NCCL_RAS_ENABLE",   "NCCL_COMM_ID",       "NCCL_NET_PLUGIN",
      "NCCL_IB_DISABLE",      "OMPI_MCA_btl_tcp_if_include", "OMPI_MCA_oob_tcp_if_include",
      "CUDA_MPS_PIPE_DIRECTORY"};
  return names.count(n) > 0 || n.rfind("LEASETRAIN_", 0) == 0;
}

bool is_dangerous_env(std::string_view n) {
  // Code loaded into the ranks, the loader's search, MPI/PMIx/launcher control (which can
  // re-point the interfaces the lease fixes), other transports' device and NIC choice.
  static const std::string_view prefixes[] = {"LD_",   "OMPI_", "PMIX_",   "PRTE_",    "OPAL_",  "ORTE_",
                                              "HYDRA_", "I_MPI_", "MPICH_", "UCX_",   "FI_",    "HCOLL_",
                                              "SHARP_", "NVSHMEM_", "CUDA_MPS_", "GLOO_", "NCCL_MNNVL_"};
  // NCCL and CUDA variables that load a library or config file, pick the network, address
  // family or topology, or write files wherever they name.
  static const std::set<std::string, std::less<>> names = {
      "GCONV_PATH",          "GLIBC_TUNABLES",       "NCCL_CONF_FILE",      "NCCL_TUNER_PLUGIN",
      "NCCL_PROFILER_PLUGIN", "NCCL_ENV_PLUGIN",     "NCCL_NET",            "NCCL_TOPO_FILE",
      "NCCL_TOPO_DUMP_FILE", "NCCL_GRAPH_FILE",      "NCCL_GRAPH_DUMP_FILE", "NCCL_DEBUG_FILE",
      "NCCL_SOCKET_FAMILY",  "NCCL_IB_ADDR_FAMILY",  "NCCL_IB_ADDR_RANGE",  "NCCL_IB_MERGE_NICS",
      "NCCL_CROSS_NIC",      "NCCL_COLLNET_ENABLE",  "NCCL_RAS_ADDR",       "CUDA_INJECTION64_PATH",
      "CUDA_CACHE_PATH",     "CUDA_COREDUMP_FILE",   "NVIDIA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL",
      // OpenMP tools and OpenSSL engines/providers are shared libraries loaded by name.
      "OMP_TOOL",            "OMP_TOOL_LIBRARIES",   "OMP_TOOL_VERBOSE_INIT", "OPENSSL_CONF",
      "OPENSSL_ENGINES",     "OPENSSL_MODULES",      "LOCPATH",             "NLSPATH",
      // What a shell or an interpreter the job starts would run or load: startup files, module
      // paths (PATH itself is the job's own, passed as the base environment).
      "BASH_ENV",            "ENV",                  "SHELLOPTS",           "PYTHONPATH",
      "PYTHONHOME",          "PYTHONSTARTUP",        "PYTHONUSERBASE",      "PYTHONPLATLIBDIR",
      "PERL5LIB",            "PERL5OPT",             "PERLLIB",             "RUBYLIB",
      "RUBYOPT",             "NODE_OPTIONS",         "NODE_PATH",           "TCLLIBPATH"};
  for (std::string_view p : prefixes)
    if (n.substr(0, p.size()) == p) return true;
  return names.count(n) > 0;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, sep))
    if (!part.empty()) out.push_back(part);
  return out;
}

std::string format_time(TimePoint t) {
  using namespace std::chrono;
  sys_days d = floor<days>(t);
  year_month_day ymd{d};
  hh_mm_ss<seconds> hms{t - d};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", int(ymd.year()), unsigned(ymd.month()),
                unsigned(ymd.day()), int(hms.hours().count()), int(hms.minutes().count()),
                int(hms.seconds().count()));
  return buf;
}

TimePoint parse_time(std::string_view s) {
  using namespace std::chrono;
  int Y, M, D, h, m, sec;
  char tail[16] = {0};
  std::string str(s);
  int got = std::sscanf(str.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%15s", &Y, &M, &D, &h, &m, &sec, tail);
  std::string t = tail;
  bool ok = got >= 6 && M >= 1 && M <= 12 && D >= 1 && D <= 31 && h < 24 && m < 60 && sec < 61;
  int offset_min = 0;
  if (ok) {
    if (t == "Z" || t == "z") {
    } else if (t.size() == 6 && (t[0] == '+' || t[0] == '-') && t[3] == ':' &&
               std::isdigit((unsigned char)t[1]) && std::isdigit((unsigned char)t[2]) &&
               std::isdigit((unsigned char)t[4]) && std::isdigit((unsigned char)t[5])) {
      offset_min = ((t[1] - '0') * 10 + (t[2] - '0')) * 60 + (t[4] - '0') * 10 + (t[5] - '0');
      if (t[0] == '-') offset_min = -offset_min;
    } else {
      ok = false;
    }
  }
  year_month_day ymd{year{Y}, month{unsigned(M)}, day{unsigned(D)}};
  if (!ok || !ymd.ok())
    throw UserError("expected a UTC date-time such as 2025-06-01T00:00:00Z, got " + quote_name(s));
  return sys_days{ymd} + hours{h} + minutes{m} + seconds{sec} - minutes{offset_min};
}

void check_window(const Lease& l, TimePoint now) {
  if (now < l.not_before)
    throw UserError("lease " + l.id + " is not valid yet: it starts at " + format_time(l.not_before) +
                    " (now " + format_time(now) + ")");
  if (now >= l.not_after)
    throw UserError("lease " + l.id + " has expired at " + format_time(l.not_after) + " (now " +
                    format_time(now) + ")");
  if (now >= l.deadline())
    throw UserError("lease " + l.id + " ends at " + format_time(l.not_after) + " and its last " +
                    std::to_string(l.grace_seconds) + " s are reserved for checkpointing (now " +
                    format_time(now) + "); no job may start");
}

// ---- parsing --------------------------------------------------------------------------------

Manifest parse_manifest(const std::string& text, const std::string& origin) {
  check_toml_key_depth(text, origin, "manifest");
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    fail_at(origin, e.source().begin.line, "(syntax)", std::string(e.description()));
  }
  Manifest m;
  m.origin = origin;
  Table t(root, "", m.origin, m.field_lines);
  int64_t schema = t.integer("schema", false, 1, 1, 1);
  (void)schema;
  auto op = t.table("operator");
  if (!op) t.fail("operator", "missing ([operator] with id)");
  m.op.id = op->str("id", true);
  m.op.legal_entity = op->str("legal_entity", false);
  m.op.contact = op->str("contact", false);
  op->finish();
  for (Table& n : t.tables("node")) m.nodes.push_back(parse_node(n));
  for (Table& p : t.tables("partition")) {
    Partition part;
    part.id = p.str("id", true);
    int64_t pkey = p.integer("pkey", true, 0, 0, 0xffff);
    if ((pkey & 0x7fff) == 0) p.fail("pkey", "0x0000/0x8000 is not a valid P_Key");
    if ((pkey & 0x7fff) == 0x7fff)
      p.fail("pkey", "the default partition (0x7fff/0xffff) holds every port and isolates nothing");
    part.pkey = uint16_t(pkey);
    part.service_level = int(p.integer("service_level", false, -1, 0, 15));
    p.finish();
    m.partitions.push_back(part);
  }
  for (Table& tt : t.tables("tenant")) {
    Tenant ten;
    ten.id = tt.str("id", true);
    if (!is_plain_name(ten.id)) tt.fail("id", "expected letters, digits, '-', '_', '.', got " + quote_name(ten.id));
    ten.users = tt.strings("users");
    ten.groups = tt.strings("groups");
    ten.account = tt.str("account", false);
    tt.finish();
    m.tenants.push_back(ten);
  }
  for (Table& l : t.tables("lease")) m.leases.push_back(parse_lease(l));
  t.finish();
  validate_manifest(m);
  return m;
}

Manifest load_manifest(const std::string& path) {
  std::string text = read_regular_file(path, "lease manifest", kMaxManifestBytes);
  Manifest m = parse_manifest(text, path);
  m.sha256 = sha256_hex(text);
  return m;
}

// ---- validation -----------------------------------------------------------------------------

namespace {

// One device a lease holds, by its physical identity: the node and the PCI bus id of the GPU
// (a slice's parent), plus GPU and compute instance for a MIG slice. UUIDs are names the
// driver gives; the same slice, re-created or mistyped, can carry two.
struct DeviceClaim {
  size_t lease = 0;
  std::string path, uuid;
  const Node* node = nullptr;
  std::string bus;
  bool whole = false;
  int gi = -1, ci = -1;
};

// Sweeps groups of claims that share a key, each group ordered by window start (then lease
// index, then position): a claim conflicts with an earlier one of its group exactly when the
// earlier window ends after this one starts, so the earlier claim ending last is the only
// one to keep. Sorting makes every cross-lease rule O(n log n).
template <class Item, class Key, class Visit>
void sweep_groups(std::vector<Item>& items, Key key, const std::vector<Lease>& leases, Visit visit) {
  std::sort(items.begin(), items.end(), [&](const Item& a, const Item& b) {
    auto ka = key(a), kb = key(b);
    if (ka != kb) return ka < kb;
    const Lease &la = leases[a.lease], &lb = leases[b.lease];
    if (la.not_before != lb.not_before) return la.not_before < lb.not_before;
    return a.lease < b.lease;
  });
  for (size_t b = 0; b < items.size();) {
    size_t e = b + 1;
    while (e < items.size() && key(items[e]) == key(items[b])) ++e;
    visit(&items[b], &items[e]);
    b = e;
  }
}

// The latest-ending earlier claims of up to two tenants: enough to answer "does an earlier
// claim of another tenant than T still run?" in O(1).
template <class Item>
struct TwoTenants {
  const Item* best = nullptr;    // ends last
  const Item* other = nullptr;   // ends last among tenants other than best's
  const std::vector<Lease>* leases = nullptr;
  const std::string& tenant(const Item* i) const { return (*leases)[i->lease].tenant; }
  TimePoint end(const Item* i) const { return (*leases)[i->lease].not_after; }
  const Item* of_other_than(const std::string& t) const {
    if (best && tenant(best) != t) return best;
    return other;
  }
  void add(const Item* i) {
    if (!best || end(i) > end(best)) {
      if (best && tenant(i) != tenant(best)) other = best;
      best = i;
    } else if (tenant(i) != tenant(best) && (!other || end(i) > end(other))) {
      other = i;
    }
  }
};

const char* const kSystemTrees[] = {"/proc", "/sys",      "/dev",     "/etc",      "/usr",       "/bin",
                                    "/sbin", "/boot",     "/lib",     "/lib32",    "/lib64",     "/libx32",
                                    "/run",  "/root",     "/snap",    "/var/lib",  "/var/log",   "/var/cache",
                                    "/var/spool", "/var/mail", "/var/run", "/var/lock", "/var/backups",
                                    "/lost+found"};

}  // namespace

std::string normalize_path(std::string_view p) {
  std::string out;
  for (const std::string& part : split(std::string(p), '/')) out += "/" + part;
  return out.empty() ? "/" : out;
}

std::string storage_root_problem(std::string_view root) {
  if (!is_clean_absolute(root)) return "must be an absolute path without '.' or '..'";
  for (char c : root)
    if (c == ':' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return "may not hold ':' or control characters (roots travel colon-separated in LEASETRAIN_WRITE_ROOTS)";
  std::string n = normalize_path(root);
  if (n == "/") return "is the whole file system; give the tenant's own directory (/srv/tenants/NAME)";
  for (const char* sys : kSystemTrees) {
    std::string s = sys;
    if (n == s || n.rfind(s + "/", 0) == 0) return "is in the system directory " + s + ", which no tenant may own";
  }
  if (split(n, '/').size() < 2)
    return "is a top-level directory shared by the whole node; a root must be at least two levels deep (/srv/tenants/NAME)";
  return "";
}

void validate_manifest(const Manifest& m) {
  const std::string& o = m.origin;
  // The line of the path, or of the closest enclosing field that has one.
  auto fail = [&](const std::string& path, const std::string& msg) {
    for (std::string p = path; !p.empty();) {
      if (auto it = m.field_lines.find(p); it != m.field_lines.end()) fail_at(o, it->second, path, msg);
      size_t cut = p.find_last_of(".[");
      p = cut == std::string::npos ? "" : p.substr(0, cut);
    }
    fail_at(o, 0, path, msg);
  };
  auto idx = [](const char* k, size_t i) { return std::string(k) + "[" + std::to_string(i) + "]"; };

  // Nodes: unique names; device identities unique across the whole cluster.
  std::map<std::string, std::string> seen_uuid;  // uuid key -> field path
  std::set<std::string> hostnames;
  for (size_t i = 0; i < m.nodes.size(); ++i) {
    const Node& n = m.nodes[i];
    std::string np = idx("node", i);
    // Host names are case-insensitive and node01 is node01.example.org: one machine declared
    // twice would let its GPUs be leased twice under made-up UUIDs.
    std::string host_key = n.hostname.substr(0, n.hostname.find('.'));
    std::transform(host_key.begin(), host_key.end(), host_key.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
    if (!hostnames.insert(host_key).second) fail(np + ".hostname", "duplicate node " + quote_name(n.hostname) + " (host names compare without case and domain)");
    std::set<std::string> buses, netdevs, hcas;
    std::map<int, std::string> minors;
    auto unique_uuid = [&](const std::string& u, const std::string& path) {
      auto [it, fresh] = seen_uuid.emplace(uuid_key(u), path);
      if (!fresh) fail(path, quote_name(u) + " is already declared at " + it->second);
    };
    for (size_t g = 0; g < n.gpus.size(); ++g) {
      std::string gp = np + "." + idx("gpu", g);
      unique_uuid(n.gpus[g].uuid, gp + ".uuid");
      if (!buses.insert(n.gpus[g].pci_bus_id).second)
        fail(gp + ".pci_bus_id", "duplicate PCI bus id " + n.gpus[g].pci_bus_id + " on node " + n.hostname);
      // The device node is what isolation grants: two GPUs on one /dev/nvidiaN are one GPU.
      if (const int minor = n.gpus[g].minor; minor >= 0) {
        auto [it, fresh] = minors.emplace(minor, gp);
        if (!fresh)
          fail(gp + ".minor", "minor " + std::to_string(minor) + " (/dev/nvidia" + std::to_string(minor) +
                                  ") on node " + n.hostname + " is already " + it->second + "'s");
      }
    }
    for (size_t s = 0; s < n.mig.size(); ++s) {
      std::string sp = np + "." + idx("mig", s);
      unique_uuid(n.mig[s].uuid, sp + ".uuid");
      if (!n.find_gpu(n.mig[s].parent))
        fail(sp + ".parent", quote_name(n.mig[s].parent) + " is not a GPU of node " + n.hostname);
      if (n.mig[s].gi < 0 || n.mig[s].ci < 0)
        fail(sp + (n.mig[s].gi < 0 ? ".gi" : ".ci"),
             "missing: gi and ci (nvidia-smi mig -lgi / -lci) are the slice's physical identity, which the UUID is not");
    }
    for (size_t c = 0; c < n.nics.size(); ++c) {
      std::string cp = np + "." + idx("nic", c);
      if (!netdevs.insert(n.nics[c].netdev).second)
        fail(cp + ".netdev", "duplicate interface " + quote_name(n.nics[c].netdev) + " on node " + n.hostname);
      if (n.nics[c].is_ib() && !hcas.insert(n.nics[c].hca()).second)
        fail(cp + ".ib_dev", "duplicate HCA port " + n.nics[c].hca() + " on node " + n.hostname);
    }
  }
  std::set<std::string> ids;
  std::map<int, std::string> pkeys;  // base key (membership bit dropped) -> partition id
  for (size_t i = 0; i < m.partitions.size(); ++i) {
    const Partition& p = m.partitions[i];
    if (!ids.insert(p.id).second) fail(idx("partition", i) + ".id", "duplicate partition " + quote_name(p.id));
    auto [it, fresh] = pkeys.emplace(p.pkey & 0x7fff, p.id);
    if (!fresh) fail(idx("partition", i) + ".pkey", "same P_Key as partition " + it->second + " (bit 0x8000 is only membership)");
  }
  std::set<std::string> partition_ids = std::move(ids);
  std::set<std::string> tenant_ids;
  for (size_t i = 0; i < m.tenants.size(); ++i)
    if (!tenant_ids.insert(m.tenants[i].id).second) fail(idx("tenant", i) + ".id", "duplicate tenant " + quote_name(m.tenants[i].id));
  std::map<std::string_view, const Node*> node_by_name;
  for (const Node& n : m.nodes) node_by_name.emplace(n.hostname, &n);
  ids.clear();

  // Leases: references resolve, windows and quotas make sense, allocations are self-consistent.
  for (size_t i = 0; i < m.leases.size(); ++i) {
    const Lease& l = m.leases[i];
    std::string lp = idx("lease", i);
    if (!ids.insert(l.id).second) fail(lp + ".id", "duplicate lease " + quote_name(l.id));
    if (!tenant_ids.count(l.tenant)) fail(lp + ".tenant", quote_name(l.tenant) + " is not a declared tenant");
    if (!(l.not_before < l.not_after))
      fail(lp + ".not_after", format_time(l.not_after) + " must be after not_before " + format_time(l.not_before));
    if (std::chrono::seconds(l.grace_seconds) >= l.not_after - l.not_before)
      fail(lp + ".grace_seconds", std::to_string(l.grace_seconds) + " s leaves no time to train in the window");
    for (size_t k = 0; k < l.policy.allow_env.size(); ++k) {
      const std::string& e = l.policy.allow_env[k];
      std::string ep = lp + ".policy.allow_env[" + std::to_string(k) + "]";
      if (!is_env_pattern(e)) fail(ep, "expected a variable name or a prefix ending in '*' (NCCL_DEBUG, OMP_*: letters, digits, '_'), got " + quote_name(e));
      // Any pattern that would cover NCCL_COMM_ID (NCCL_*, NCCL_COMM_*, N*, ...), not just those spelt so.
      if (e.back() == '*' ? std::string_view("NCCL_COMM_ID").starts_with(std::string_view(e).substr(0, e.size() - 1))
                          : e == "NCCL_COMM_ID")
        fail(ep, "NCCL_COMM_ID makes NCCL use a fixed connection magic; it can never be allowed");
      if (is_lease_controlled_env(e)) fail(ep, e + " is set from the lease and cannot be passed through");
      if (e.back() != '*' && is_dangerous_env(e))
        fail(ep, e + " loads code or steers the loader, MPI or the network; name it in allow_dangerous_env if the job must have it");
    }
    for (size_t k = 0; k < l.policy.allow_dangerous_env.size(); ++k) {
      const std::string& e = l.policy.allow_dangerous_env[k];
      std::string ep = lp + ".policy.allow_dangerous_env[" + std::to_string(k) + "]";
      if (!is_env_pattern(e) || e.back() == '*') fail(ep, "expected one exact variable name (no wildcard), got " + quote_name(e));
      if (e == "NCCL_COMM_ID") fail(ep, "NCCL_COMM_ID makes NCCL use a fixed connection magic; it can never be allowed");
      if (is_lease_controlled_env(e)) fail(ep, e + " is set from the lease and cannot be passed through");
      if (!is_dangerous_env(e)) fail(ep, e + " is an ordinary variable; list it in allow_env instead");
    }
    for (size_t k = 0; k < l.policy.net_plugins.size(); ++k)
      if (l.policy.net_plugins[k].empty() || l.policy.net_plugins[k] == "none")
        fail(lp + ".policy.net_plugins[" + std::to_string(k) + "]", "expected a plugin name or path");
    if (l.alloc.empty()) fail(lp + ".alloc", "missing (expected at least one [[" + lp + ".alloc]])");
    std::set<std::string> nodes_used;
    for (size_t a = 0; a < l.alloc.size(); ++a) {
      const Allocation& al = l.alloc[a];
      std::string ap = lp + "." + idx("alloc", a);
      auto found = node_by_name.find(al.node);
      const Node* node = found == node_by_name.end() ? nullptr : found->second;
      if (!node) fail(ap + ".node", quote_name(al.node) + " is not a declared node");
      if (!nodes_used.insert(al.node).second)
        fail(ap + ".node", "node " + al.node + " appears twice in lease " + l.id + "; merge the allocations");
      if (al.gpus.empty() && al.mig.empty() && al.cpu_ranks == 0)
        fail(ap, "allocates nothing (expected gpus, mig or cpu_ranks)");
      if ((!al.gpus.empty() || !al.mig.empty()) && al.cpu_ranks > 0)
        fail(ap + ".cpu_ranks", "only for allocations without GPUs or MIG slices");
      std::set<std::string> local;
      for (size_t g = 0; g < al.gpus.size(); ++g) {
        std::string gp = ap + ".gpus[" + std::to_string(g) + "]";
        if (!is_gpu_uuid(al.gpus[g])) fail(gp, "expected a full GPU UUID, got " + quote_name(al.gpus[g]));
        if (!node->find_gpu(al.gpus[g])) fail(gp, quote_name(al.gpus[g]) + " is not a GPU of node " + node->hostname);
        if (!local.insert(al.gpus[g]).second) fail(gp, quote_name(al.gpus[g]) + " is listed twice");
      }
      for (size_t s = 0; s < al.mig.size(); ++s) {
        std::string sp = ap + ".mig[" + std::to_string(s) + "]";
        if (!is_mig_uuid(al.mig[s])) fail(sp, "expected a full MIG UUID, got " + quote_name(al.mig[s]));
        const MigSlice* slice = node->find_mig(al.mig[s]);
        if (!slice) fail(sp, quote_name(al.mig[s]) + " is not a MIG slice of node " + node->hostname);
        if (!local.insert(al.mig[s]).second) fail(sp, quote_name(al.mig[s]) + " is listed twice");
        if (local.count(slice->parent))
          fail(sp, "slice of " + slice->parent + ", which this lease also holds whole");
      }
      bool any_ib = false;
      for (size_t c = 0; c < al.nics.size(); ++c) {
        std::string cp = ap + ".nics[" + std::to_string(c) + "]";
        const Nic* nic = node->find_nic(al.nics[c]);
        if (!nic) fail(cp, quote_name(al.nics[c]) + " is not a NIC (netdev) of node " + node->hostname);
        if (!local.insert("nic:" + al.nics[c]).second) fail(cp, quote_name(al.nics[c]) + " is listed twice");
        any_ib = any_ib || nic->is_ib();
      }
      if (!al.partition.empty() && !partition_ids.count(al.partition))
        fail(ap + ".partition", quote_name(al.partition) + " is not a declared partition");
      if (any_ib && al.partition.empty())
        fail(ap + ".partition", "missing: an InfiniBand/RoCE NIC needs the lease's partition (P_Key)");
      if (!any_ib && !al.partition.empty())
        fail(ap + ".partition", "set, but the allocation holds no InfiniBand/RoCE NIC to apply it to");
    }
    if (l.alloc.size() > 1)
      for (size_t a = 0; a < l.alloc.size(); ++a)
        if (l.alloc[a].nics.empty())
          fail(lp + "." + idx("alloc", a) + ".nics", "missing: lease " + l.id + " spans " +
                                                         std::to_string(l.alloc.size()) +
                                                         " nodes and ranks on " + l.alloc[a].node +
                                                         " need a NIC to reach the others");
  }

  // Storage, whatever the windows (data outlives a lease): every root passes the rule above,
  // and no root is shared with, or nested in (either way), a root of another tenant's lease;
  // a read-only root may not reach into another tenant's read-write root either.
  if (!m.embedded) {
    struct Root {
      size_t lease = 0;
      std::string key, path, root;  // key: normalised with a trailing '/', so prefixes are whole components
      bool rw = true;
    };
    std::vector<Root> roots;
    for (size_t i = 0; i < m.leases.size(); ++i) {
      const Lease& l = m.leases[i];
      for (int rw = 1; rw >= 0; --rw) {
        const auto& list = rw ? l.storage_roots : l.read_only_roots;
        const char* field = rw ? ".storage_roots[" : ".read_only_roots[";
        for (size_t k = 0; k < list.size(); ++k) {
          std::string path = idx("lease", i) + field + std::to_string(k) + "]";
          if (std::string why = storage_root_problem(list[k]); !why.empty()) fail(path, quote_name(list[k]) + " " + why);
          std::string n = normalize_path(list[k]);
          roots.push_back({i, n + "/", path, n, rw == 1});
        }
      }
    }
    std::sort(roots.begin(), roots.end(), [](const Root& a, const Root& b) {
      return a.key != b.key ? a.key < b.key : a.lease < b.lease;
    });
    // In sorted order a root's descendants follow it contiguously, so a stack holds exactly the
    // ancestors (and equals) of the current root; each level carries who holds the chain.
    struct Level {
      const Root* r;
      TwoTenants<Root> any, rw;
    };
    std::vector<Level> stack;
    for (const Root& r : roots) {
      while (!stack.empty() && r.key.rfind(stack.back().r->key, 0) != 0) stack.pop_back();
      const std::string& t = m.leases[r.lease].tenant;
      if (!stack.empty()) {
        const Level& top = stack.back();
        if (const Root* o = (r.rw ? top.any : top.rw).of_other_than(t)) {
          const Lease& ol = m.leases[o->lease];
          std::string how = o->root == r.root ? "is also " : "lies inside ";
          fail(r.path, r.root + " " + how + (o->rw ? "storage root " : "read-only root ") + o->root + " of lease " +
                           ol.id + " (tenant " + ol.tenant + ", " + o->path + "); tenants' roots may not be shared or nested (refused for lease " +
                           m.leases[r.lease].id + ")");
        }
      }
      Level lv{&r, {}, {}};
      if (!stack.empty()) lv.any = stack.back().any, lv.rw = stack.back().rw;
      lv.any.leases = lv.rw.leases = &m.leases;
      lv.any.add(&r);
      if (r.rw) lv.rw.add(&r);
      stack.push_back(lv);
    }
    // A named usage log is the lease's accounting: no tenant may be able to rewrite it, so it
    // lies outside every storage root (each of its ancestors looked up: O(depth log n)).
    std::map<std::string_view, const Root*> rw_roots;
    for (const Root& r : roots)
      if (r.rw) rw_roots.emplace(r.key, &r);
    for (size_t i = 0; i < m.leases.size(); ++i) {
      const std::string& log = m.leases[i].usage_log;
      if (log.empty()) continue;
      std::string prefix;
      for (const std::string& part : split(normalize_path(log), '/')) {
        prefix += "/" + part;
        auto it = rw_roots.find(prefix + "/");
        if (it == rw_roots.end()) continue;
        const Lease& ol = m.leases[it->second->lease];
        fail(idx("lease", i) + ".usage_log",
             log + " lies inside storage root " + it->second->root + " of lease " + ol.id + " (tenant " + ol.tenant +
                 "), whose jobs could rewrite the log lease " + m.leases[i].id + "'s GPU-hours are counted from; keep it "
                 "where only the operator writes (/var/lib/leasetrain/usage/...)");
      }
    }
  }

  // Across leases whose windows overlap, by physical identity: a GPU or MIG slice is leased
  // once; a GPU is never leased whole while one of its slices is; two slices of one GPU
  // instance (they share its memory) stay with one tenant; NICs and partitions stay with one
  // tenant. Each rule sorts and sweeps (sweep_groups), so 20,000 leases take a moment.
  std::vector<DeviceClaim> claims;
  for (size_t i = 0; i < m.leases.size(); ++i)
    for (size_t a = 0; a < m.leases[i].alloc.size(); ++a) {
      const Allocation& al = m.leases[i].alloc[a];
      const Node* node = node_by_name.at(al.node);
      std::string ap = idx("lease", i) + "." + idx("alloc", a);
      for (size_t g = 0; g < al.gpus.size(); ++g)
        claims.push_back({i, ap + ".gpus[" + std::to_string(g) + "]", al.gpus[g], node,
                          node->find_gpu(al.gpus[g])->pci_bus_id, true, -1, -1});
      for (size_t s = 0; s < al.mig.size(); ++s) {
        const MigSlice* slice = node->find_mig(al.mig[s]);
        claims.push_back({i, ap + ".mig[" + std::to_string(s) + "]", al.mig[s], node,
                          node->find_gpu(slice->parent)->pci_bus_id, false, slice->gi, slice->ci});
      }
    }
  // Names the other lease's window and this one: the path gives the field, this the lease.
  auto window = [&](size_t other, size_t self) {
    return " (" + format_time(m.leases[other].not_before) + " to " + format_time(m.leases[other].not_after) +
           ") and the windows overlap (refused for lease " + m.leases[self].id + ")";
  };
  auto phys = [&](const DeviceClaim& c) {
    std::string s = "GPU " + c.bus + " of " + c.node->hostname;
    if (!c.whole) s += ", GPU instance " + std::to_string(c.gi) + ", compute instance " + std::to_string(c.ci);
    return s;
  };
  auto parent_of = [&](const DeviceClaim& c) { return c.node->find_mig(c.uuid)->parent; };
  auto starts_before_end = [&](const DeviceClaim* earlier, const DeviceClaim& c) {
    return earlier && m.leases[c.lease].not_before < m.leases[earlier->lease].not_after;
  };
  // Whole GPUs against everything on the same GPU.
  sweep_groups(claims, [](const DeviceClaim& c) { return std::tie(c.node->hostname, c.bus); }, m.leases,
               [&](DeviceClaim* b, DeviceClaim* e) {
                 const DeviceClaim *last_any = nullptr, *last_whole = nullptr;
                 auto later = [&](const DeviceClaim* x, const DeviceClaim* y) {
                   return !x || m.leases[y->lease].not_after > m.leases[x->lease].not_after ? y : x;
                 };
                 for (DeviceClaim* c = b; c != e; ++c) {
                   const DeviceClaim* o = c->whole ? last_any : last_whole;
                   if (starts_before_end(o, *c)) {
                     const std::string& oid = m.leases[o->lease].id;
                     if (c->whole && o->whole)
                       fail(c->path, c->uuid + (o->uuid == c->uuid ? "" : " (" + phys(*c) + ", also declared as " + o->uuid + ")") +
                                         " is also leased by " + oid + window(o->lease, c->lease));
                     if (c->whole)
                       fail(c->path, c->uuid + " is leased whole while its MIG slice " + o->uuid + " is leased by " + oid +
                                         " (" + o->path + ")" + window(o->lease, c->lease));
                     fail(c->path, c->uuid + " is a slice of " + parent_of(*c) + ", which " + oid + " leases whole (" +
                                       o->path + ")" + window(o->lease, c->lease));
                   }
                   last_any = later(last_any, c);
                   if (c->whole) last_whole = later(last_whole, c);
                 }
               });
  std::vector<DeviceClaim> slices;
  for (DeviceClaim& c : claims)
    if (!c.whole) slices.push_back(std::move(c));
  // The same physical slice (GPU, GI, CI), whatever UUID names it.
  sweep_groups(slices, [](const DeviceClaim& c) { return std::tie(c.node->hostname, c.bus, c.gi, c.ci); }, m.leases,
               [&](DeviceClaim* b, DeviceClaim* e) {
                 const DeviceClaim* last = nullptr;
                 for (DeviceClaim* c = b; c != e; ++c) {
                   if (starts_before_end(last, *c)) {
                     const std::string& oid = m.leases[last->lease].id;
                     if (last->uuid == c->uuid) fail(c->path, c->uuid + " is also leased by " + oid + window(last->lease, c->lease));
                     fail(c->path, c->uuid + " is the same physical slice (" + phys(*c) + ") as " + last->uuid +
                                       ", leased by " + oid + " (" + last->path + ")" + window(last->lease, c->lease));
                   }
                   if (!last || m.leases[c->lease].not_after > m.leases[last->lease].not_after) last = c;
                 }
               });
  // Compute instances of one GPU instance share its memory: one tenant per GPU instance.
  sweep_groups(slices, [](const DeviceClaim& c) { return std::tie(c.node->hostname, c.bus, c.gi); }, m.leases,
               [&](DeviceClaim* b, DeviceClaim* e) {
                 TwoTenants<DeviceClaim> seen;
                 seen.leases = &m.leases;
                 for (DeviceClaim* c = b; c != e; ++c) {
                   const DeviceClaim* o = seen.of_other_than(m.leases[c->lease].tenant);
                   if (starts_before_end(o, *c))
                     fail(c->path, c->uuid + " shares GPU instance " + std::to_string(c->gi) + " of " + parent_of(*c) +
                                       " (its memory) with " + o->uuid + " of tenant " + m.leases[o->lease].tenant +
                                       " (lease " + m.leases[o->lease].id + ", " + o->path + ")" + window(o->lease, c->lease));
                   seen.add(c);
                 }
               });
  // NICs (by node and netdev) and partitions stay with one tenant while windows overlap.
  struct Named {
    size_t lease = 0;
    std::string key, path, what;
  };
  std::vector<Named> nics, parts;
  for (size_t i = 0; i < m.leases.size(); ++i)
    for (size_t a = 0; a < m.leases[i].alloc.size(); ++a) {
      const Allocation& al = m.leases[i].alloc[a];
      std::string ap = idx("lease", i) + "." + idx("alloc", a);
      for (size_t c = 0; c < al.nics.size(); ++c)
        nics.push_back({i, al.node + '\0' + al.nics[c], ap + ".nics[" + std::to_string(c) + "]", al.nics[c] + " on " + al.node + " is also leased to tenant "});
      if (!al.partition.empty())
        parts.push_back({i, al.partition, ap + ".partition", "partition " + al.partition + " is also used by tenant "});
    }
  for (auto* list : {&nics, &parts})
    sweep_groups(*list, [](const Named& n) { return std::string_view(n.key); }, m.leases, [&](Named* b, Named* e) {
      TwoTenants<Named> seen;
      seen.leases = &m.leases;
      for (Named* c = b; c != e; ++c) {
        const Named* o = seen.of_other_than(m.leases[c->lease].tenant);
        if (o && m.leases[c->lease].not_before < m.leases[o->lease].not_after)
          fail(c->path, c->what + m.leases[o->lease].tenant + " (lease " + m.leases[o->lease].id + ")" +
                            (list == &parts ? "; each tenant needs its own P_Key" : "") + window(o->lease, c->lease));
        seen.add(c);
      }
    });
}

}  // namespace lt::lease
