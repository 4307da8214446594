// Plans and launch commands: two tenants sharing two nodes never see each other's devices,
// NICs or keys; P_Key indices from a fake sysfs tree; quotas and windows; the environment
// allowlist; mpirun and srun command lines; a real local mpirun job when mpirun is present,
// and a real srun job when the suite runs inside a SLURM allocation.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lease/audit.h"
#include "lease/launch.h"
#include "lease/lease_plan.h"
#include "lease/manifest.h"
#include "lease/pkey.h"
#include "runtime/error.h"
#include "tests/lease_fixtures.h"
#include "tests/util.h"

namespace fs = std::filesystem;
using namespace lt::lease;
using namespace lt::test;
using nlohmann::json;

namespace {

// The fixture's tenants admit alice (acme) and group globex-ml (globex); unit tests plan as
// someone who is both, through the identity seam.
Identity alice() {
  Identity id;
  id.uid = 1000;
  id.user = "alice";
  id.gids = {1000, 2000};
  id.groups = {"alice", "globex-ml"};
  return id;
}

PlanRequest req(int np = 0) {
  PlanRequest r;
  r.caller = alice();
  r.np = np;
  r.now = parse_time("2025-06-01T00:00:00Z");
  r.sysfs_root = kSysfs;
  r.check_usage = false;
  r.job_id = "job1";
  return r;
}

const Manifest& cluster() {
  static const Manifest m = load_manifest(kManifest);
  return m;
}

// The fixture with this process's real uid added to both tenants, for the CLI, which checks
// the real caller.
const std::string& my_manifest() {
  static TempDir dir;
  static const std::string path = [] {
    std::string t = read_file(kManifest);
    const std::string me = "\"" + std::to_string(::getuid()) + "\"";
    t.replace(t.find("users = [\"alice\"]"), 17, "users = [\"alice\", " + me + "]");
    t.replace(t.find("groups = [\"globex-ml\"]"), 22, "groups = [\"globex-ml\"]\nusers = [" + me + "]");
    write_file(dir / "shared-cluster.toml", t);
    return dir / "shared-cluster.toml";
  }();
  return path;
}

// Everything one tenant's job is given, as text: plan and launch command.
std::string everything(const std::string& lease_id) {
  Plan p = make_plan(cluster(), lease_id, req());
  LaunchOptions o;
  o.command = {"train"};
  o.job_dir = "/tmp/j";
  EnvFilter f = filter_environment({{"PATH", "/usr/bin"}}, cluster().lease(lease_id).policy);
  return launch_json(p, f, build_launch(p, f, o)).dump();
}

// ---- two tenants on the same nodes ------------------------------------------------------

TEST(SharedCluster, TenantsNeverSeeEachOther) {
  const std::string a = everything("acme-2024"), b = everything("globex-2024");
  // globex's devices, NICs, HCAs, keys and storage never appear in acme's job, and back.
  for (const char* s : {"GPU-11111111-0000-4000-8000-000000000002", "GPU-11111111-0000-4000-8000-000000000003",
                        "GPU-22222222-0000-4000-8000-000000000002", "MIG-22222222-3333-4000-8000-000000000000",
                        "ib1", "mlx5_1", "0x8002", "globex", "/srv/tenants/globex"})
    EXPECT_EQ(a.find(s), std::string::npos) << "acme's job mentions " << s;
  for (const char* s : {"GPU-11111111-0000-4000-8000-000000000000", "GPU-11111111-0000-4000-8000-000000000001",
                        "GPU-22222222-0000-4000-8000-000000000000", "GPU-22222222-0000-4000-8000-000000000001",
                        "\"ib0\"", "=ib0", "mlx5_0", "0x8001", "acme", "/srv/tenants/acme"})
    EXPECT_EQ(b.find(s), std::string::npos) << "globex's job mentions " << s;
  // Devices no lease holds appear in neither.
  for (const std::string* t : {&a, &b}) {
    EXPECT_EQ(t->find("MIG-22222222-3333-4000-8000-000000000001"), std::string::npos);
    EXPECT_EQ(t->find("GPU-22222222-0000-4000-8000-000000000003"), std::string::npos);
  }
}

TEST(SharedCluster, AcmePlanPerRank) {
  Plan p = make_plan(cluster(), "acme-2024", req());
  ASSERT_EQ(p.np, 4);
  ASSERT_EQ(p.nodes.size(), 2u);
  EXPECT_EQ(p.nodes[0].host, "node01");
  EXPECT_EQ(p.nodes[0].slots, 2);
  const std::string uuids[] = {"GPU-11111111-0000-4000-8000-000000000000", "GPU-11111111-0000-4000-8000-000000000001",
                               "GPU-22222222-0000-4000-8000-000000000000", "GPU-22222222-0000-4000-8000-000000000001"};
  for (int r = 0; r < 4; ++r) {
    const RankPlan& rp = p.ranks[size_t(r)];
    EXPECT_EQ(rp.rank, r);
    EXPECT_EQ(rp.local_rank, r % 2);
    EXPECT_EQ(rp.host, r < 2 ? "node01" : "node02");
    EXPECT_EQ(rp.env.at("CUDA_VISIBLE_DEVICES"), uuids[r]);  // exactly one device, by full UUID
    EXPECT_EQ(rp.env.at("CUDA_DEVICE_ORDER"), "PCI_BUS_ID");
    EXPECT_EQ(rp.env.at("NCCL_SOCKET_IFNAME"), "=ib0");      // exact interface match
    EXPECT_EQ(rp.env.at("NCCL_IB_HCA"), "=mlx5_0:1");
    EXPECT_EQ(rp.env.at("NCCL_IB_PKEY"), "1");               // index of 0x8001, not the key
    EXPECT_EQ(rp.env.at("NCCL_IB_GID_INDEX"), "3");
    EXPECT_EQ(rp.env.at("NCCL_IB_TC"), "106");
    EXPECT_EQ(rp.env.at("NCCL_IB_SL"), "1");
    EXPECT_EQ(rp.env.at("NCCL_RAS_ENABLE"), "0");
    EXPECT_EQ(rp.env.at("NCCL_HOSTID"), std::string("acme-2024.") + (r < 2 ? "node01" : "node02"));
    EXPECT_EQ(rp.env.count("NCCL_COMM_ID"), 0u);
  }
  EXPECT_EQ(p.mpi_interfaces, std::vector<std::string>{"ib0"});
}

TEST(SharedCluster, GlobexGetsItsMigSliceAndIndexThree) {
  Plan p = make_plan(cluster(), "globex-2024", req());
  ASSERT_EQ(p.np, 4);
  EXPECT_EQ(p.ranks[3].env.at("CUDA_VISIBLE_DEVICES"), "MIG-22222222-3333-4000-8000-000000000000");
  EXPECT_EQ(p.ranks[3].pci_bus_id, "0000:ab:00.0");  // the slice's parent GPU
  for (const RankPlan& r : p.ranks) {
    EXPECT_EQ(r.env.at("NCCL_IB_HCA"), "=mlx5_1:1");
    EXPECT_EQ(r.env.at("NCCL_IB_PKEY"), "3");
    EXPECT_EQ(r.env.count("NCCL_IB_TC"), 0u);  // not configured on ib1
    EXPECT_EQ(r.env.count("NCCL_IB_SL"), 0u);
  }
}

TEST(SharedCluster, NpFillsNodesInOrderAndIsBounded) {
  Plan p = make_plan(cluster(), "acme-2024", req(3));
  EXPECT_EQ(p.np, 3);
  EXPECT_EQ(p.nodes[1].slots, 1);
  p = make_plan(cluster(), "acme-2024", req(1));
  EXPECT_EQ(p.nodes.size(), 1u);
  try {
    make_plan(cluster(), "acme-2024", req(5));
    FAIL();
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds lease acme-2024, which has 4 slots"), std::string::npos) << e.what();
  }
}

TEST(SharedCluster, MaxRanksQuota) {
  std::string text = read_file(kManifest);
  text.replace(text.find("max_ranks = 4"), 13, "max_ranks = 2");
  Manifest m = parse_manifest(text, "m.toml");
  Plan p = make_plan(m, "acme-2024", req());
  EXPECT_EQ(p.np, 2);  // capped, with a note
  EXPECT_FALSE(p.notes.empty());
  EXPECT_THROW(make_plan(m, "acme-2024", req(3)), lt::UserError);
}

TEST(SharedCluster, WindowRefusals) {
  PlanRequest r = req();
  r.now = parse_time("2023-06-01T00:00:00Z");
  EXPECT_THROW(make_plan(cluster(), "acme-2024", r), lt::UserError);
  r.now = parse_time("2099-06-01T00:00:00Z");
  EXPECT_THROW(make_plan(cluster(), "acme-2024", r), lt::UserError);
  r.now = parse_time("2098-12-31T23:55:00Z");  // inside the 600 s grace
  EXPECT_THROW(make_plan(cluster(), "acme-2024", r), lt::UserError);
  EXPECT_THROW(make_plan(cluster(), "nope", req()), lt::UserError);
}

TEST(SharedCluster, GpuHoursQuotaFromTheUsageLog) {
  TempDir dir;
  const std::string log = dir / "usage.jsonl";
  append_record(log, {{"kind", "job"}, {"lease", "globex-2024"}, {"gpu_seconds", 500.0 * 3600}});
  append_record(log, {{"kind", "job"}, {"lease", "acme-2024"}, {"gpu_seconds", 1e9}});  // another lease's
  // The lease names the log: the operator's, the only accounting source.
  std::string text = read_file(kManifest);
  const std::string root = "storage_roots = [\"/srv/tenants/globex\"]";
  text.replace(text.find(root), root.size(), root + "\nusage_log = \"" + log + "\"");
  Manifest m = parse_manifest(text, "m.toml");
  PlanRequest r = req();
  r.check_usage = true;
  Plan p = make_plan(m, "globex-2024", r);  // 0.5 h left of 500.5
  EXPECT_NEAR(p.gpu_seconds_left(), 1800, 1e-6);
  // 4 device ranks share the 1800 s left: the budget ends 450 s after the start.
  EXPECT_EQ(p.ranks[0].env.at("LEASETRAIN_GPU_BUDGET_END"), "2025-06-01T00:07:30Z");
  append_record(log, {{"kind", "job"}, {"lease", "globex-2024"}, {"gpu_seconds", 1800.0}});
  try {
    make_plan(m, "globex-2024", r);
    FAIL();
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("has used its 500.5 GPU-hours"), std::string::npos) << e.what();
  }
}

// ---- P_Key index from sysfs ---------------------------------------------------------------

TEST(Pkey, ResolvedFromTheFixtureTree) {
  EXPECT_EQ(resolve_pkey_index(kSysfs, "mlx5_0", 1, 0x8001), 1);
  EXPECT_EQ(resolve_pkey_index(kSysfs, "mlx5_0", 1, 0x0001), 1);  // the lease may omit the bit
  EXPECT_EQ(resolve_pkey_index(kSysfs, "mlx5_1", 1, 0x8002), 3);
  EXPECT_EQ(resolve_pkey_index(kSysfs, "mlx5_9", 1, 0x8001), std::nullopt);  // HCA not on this node
  EXPECT_EQ(resolve_pkey_index(kSysfs, "mlx5_0", 2, 0x8001), std::nullopt);
}

TEST(Pkey, LimitedMembershipAndMissingKeysAreRefused) {
  try {
    resolve_pkey_index(kSysfs, "mlx5_1", 1, 0x8001);  // mlx5_1 holds 0x0001: limited member only
    FAIL();
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("only a limited member"), std::string::npos) << e.what();
  }
  try {
    resolve_pkey_index(kSysfs, "mlx5_0", 1, 0x8002);
    FAIL();
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("P_Key 0x8002 is not in the table of mlx5_0:1"), std::string::npos) << e.what();
  }
}

TEST(Pkey, LowestFullMemberIndexWins) {
  TempDir dir;
  fs::path t = dir.path / "class/infiniband/mlx5_4/ports/2/pkeys";
  fs::create_directories(t);
  const char* table[] = {"0xffff", "0x0000", "0x0005", "0x8005", "0x8005"};
  for (int i = 0; i < 5; ++i) std::ofstream(t / std::to_string(i)) << table[i] << "\n";
  for (int i = 5; i < 12; ++i) std::ofstream(t / std::to_string(i)) << "0x0000\n";  // index 10 sorts after 2
  EXPECT_EQ(resolve_pkey_index(dir.path.string(), "mlx5_4", 2, 0x8005), 3);
  std::ofstream(t / "10") << "0x8007\n";
  EXPECT_EQ(resolve_pkey_index(dir.path.string(), "mlx5_4", 2, 0x8007), 10);
}

TEST(Pkey, UnresolvedIndexIsLeftToTheNode) {
  PlanRequest r = req();
  r.sysfs_root = "/nonexistent";
  Plan p = make_plan(cluster(), "acme-2024", r);
  EXPECT_EQ(p.ranks[0].pkey_index, -1);
  EXPECT_EQ(p.ranks[0].env.count("NCCL_IB_PKEY"), 0u);
  EXPECT_EQ(p.ranks[0].env.at("LEASETRAIN_IB_PKEY"), "0x8001");  // the rank resolves it
  EXPECT_FALSE(p.notes.empty());
}

// ---- environment allowlist ------------------------------------------------------------------

TEST(EnvAllowlist, DropsReportsAndPasses) {
  EnvMap inherited = {{"PATH", "/usr/bin"},          {"NCCL_DEBUG", "INFO"},        {"NCCL_ALGO", "Ring"},
                      {"NCCL_IB_HCA", "mlx5_1"},      {"NCCL_SOCKET_IFNAME", "eth"}, {"CUDA_VISIBLE_DEVICES", "0,1"},
                      {"NCCL_P2P_DISABLE", "1"},      {"LD_PRELOAD", "/tmp/x.so"},   {"OMPI_MCA_btl", "tcp"},
                      {"LEASETRAIN_LEASE", "other"},  {"EDITOR", "vi"},              {"HOME", "/root"}};
  EnvFilter f = filter_environment(inherited, cluster().lease("acme-2024").policy);
  EXPECT_EQ(f.passed.at("PATH"), "/usr/bin");
  EXPECT_EQ(f.passed.at("NCCL_DEBUG"), "INFO");
  EXPECT_EQ(f.passed.at("NCCL_ALGO"), "Ring");  // allowed by acme's policy
  EXPECT_EQ(f.passed.at("NCCL_NET_PLUGIN"), "none");
  for (const char* k : {"NCCL_IB_HCA", "NCCL_SOCKET_IFNAME", "CUDA_VISIBLE_DEVICES", "NCCL_P2P_DISABLE", "LD_PRELOAD",
                        "OMPI_MCA_btl", "LEASETRAIN_LEASE"}) {
    EXPECT_EQ(f.passed.count(k), 0u) << k;
    EXPECT_NE(std::find(f.dropped.begin(), f.dropped.end(), k), f.dropped.end()) << k << " not reported";
  }
  EXPECT_EQ(f.passed.count("EDITOR"), 0u);
  EXPECT_EQ(f.dropped_other, 1u);  // EDITOR; HOME is the launcher's own
  // globex's policy does not allow NCCL_ALGO.
  EXPECT_EQ(filter_environment(inherited, cluster().lease("globex-2024").policy).passed.count("NCCL_ALGO"), 0u);
}

TEST(EnvAllowlist, RefusesCommIdAndUnapprovedPlugins) {
  const Policy& acme = cluster().lease("acme-2024").policy;
  const Policy& globex = cluster().lease("globex-2024").policy;
  EXPECT_THROW(filter_environment({{"NCCL_COMM_ID", "10.0.0.1:5000"}}, acme), lt::UserError);
  EXPECT_THROW(filter_environment({{"NCCL_NET_PLUGIN", "ib-sharp"}}, acme), lt::UserError);
  EXPECT_THROW(filter_environment({{"NCCL_NET_PLUGIN", "/tmp/libnccl-net-evil.so"}}, globex), lt::UserError);
  EXPECT_EQ(filter_environment({{"NCCL_NET_PLUGIN", "ib-sharp"}}, globex).passed.at("NCCL_NET_PLUGIN"), "ib-sharp");
}

TEST(EnvAllowlist, PrefixPatternsNeverReachLeaseVariables) {
  Policy p;
  p.allow_env = {"NCCL_IB_*", "OMP_*"};
  EnvFilter f = filter_environment({{"NCCL_IB_TIMEOUT", "22"}, {"NCCL_IB_PKEY", "0"}, {"NCCL_IB_HCA", "x"}, {"OMP_STACKSIZE", "1G"}}, p);
  EXPECT_EQ(f.passed.at("NCCL_IB_TIMEOUT"), "22");
  EXPECT_EQ(f.passed.at("OMP_STACKSIZE"), "1G");
  EXPECT_EQ(f.passed.count("NCCL_IB_PKEY"), 0u);
  EXPECT_EQ(f.passed.count("NCCL_IB_HCA"), 0u);
}

// ---- command building ---------------------------------------------------------------------

TEST(Command, MpirunHasOneContextPerRankAndXForEveryVariable) {
  Plan p = make_plan(cluster(), "acme-2024", req());
  EnvFilter f = filter_environment({{"PATH", "/usr/bin"}, {"NCCL_DEBUG", "WARN"}, {"HOME", "/home/a"}}, cluster().lease("acme-2024").policy);
  LaunchOptions o;
  o.command = {"/opt/lt/leasetrain", "train", "--config", "my config.toml"};
  o.job_dir = "/srv/tenants/acme/jobs/job1";
  o.as_root = true;
  o.inherited = {{"HOME", "/home/a"}, {"SSH_AUTH_SOCK", "/tmp/agent"}, {"NCCL_DEBUG", "WARN"}};
  LaunchCommand c = build_launch(p, f, o);
  EXPECT_EQ(c.launcher, "mpirun");
  const auto& a = c.argv;
  EXPECT_EQ(a[0], "mpirun");
  EXPECT_EQ(a[1], "--allow-run-as-root");
  EXPECT_EQ(std::count(a.begin(), a.end(), ":"), 3);
  EXPECT_EQ(std::count(a.begin(), a.end(), "--host"), 4);
  EXPECT_NE(std::find(a.begin(), a.end(), "node02:2"), a.end());
  size_t xs = size_t(std::count(a.begin(), a.end(), "-x"));
  size_t vars = 0;
  for (const EnvMap& e : c.rank_env) vars += e.size();
  EXPECT_EQ(xs, vars);
  EXPECT_NE(std::find(a.begin(), a.end(), "NCCL_DEBUG=WARN"), a.end());
  EXPECT_NE(std::find(a.begin(), a.end(), "CUDA_VISIBLE_DEVICES=GPU-22222222-0000-4000-8000-000000000001"), a.end());
  EXPECT_NE(std::find(a.begin(), a.end(), "my config.toml"), a.end());
  auto inc = std::find(a.begin(), a.end(), "btl_tcp_if_include");
  ASSERT_NE(inc, a.end());
  EXPECT_EQ(*(inc + 1), "ib0");
  EXPECT_NE(std::find(a.begin(), a.end(), "oob_tcp_if_include"), a.end());
  ASSERT_FALSE(c.files.empty());
  EXPECT_EQ(c.files[0].first, "/srv/tenants/acme/jobs/job1/hostfile");
  EXPECT_EQ(c.files[0].second, "node01 slots=2\nnode02 slots=2\n");
  // The launcher itself runs with only what it needs.
  EXPECT_EQ(c.exec_env.at("SSH_AUTH_SOCK"), "/tmp/agent");
  EXPECT_EQ(c.exec_env.count("NCCL_DEBUG"), 0u);
  EXPECT_EQ(c.env_sha256.size(), 64u);
  EXPECT_NE(command_line(c).find("'my config.toml'"), std::string::npos);
  o.as_root = false;
  EXPECT_EQ(build_launch(p, f, o).argv[1], "--hostfile");
}

TEST(Command, SrunInsideASlurmAllocation) {
  Plan p = make_plan(cluster(), "globex-2024", req());
  EnvFilter f = filter_environment({{"PATH", "/usr/bin"}}, cluster().lease("globex-2024").policy);
  LaunchOptions o;
  o.command = {"/opt/lt/leasetrain", "train"};
  o.job_dir = "/srv/tenants/globex/jobs/job1";
  o.inherited = {{"SLURM_JOB_ID", "4242"}, {"SLURM_NODELIST", "node[01-02]"}, {"PATH", "/usr/bin"}};
  LaunchCommand c = build_launch(p, f, o);
  EXPECT_EQ(c.launcher, "srun");
  EXPECT_EQ(c.argv[0], "srun");
  EXPECT_NE(std::find(c.argv.begin(), c.argv.end(), "--distribution=arbitrary"), c.argv.end());
  EXPECT_NE(std::find(c.argv.begin(), c.argv.end(), "--ntasks=4"), c.argv.end());
  EXPECT_NE(std::find(c.argv.begin(), c.argv.end(), "--nodes=2"), c.argv.end());
  // The task layout comes from SLURM_HOSTFILE alone: srun takes a --nodelist as the
  // one-host-per-task list instead, and node01,node02 for 4 tasks is refused.
  for (const std::string& a : c.argv) {
    EXPECT_FALSE(a.starts_with("--nodelist") || a == "-w") << command_line(c);
  }
  // One forwarded SIGINT ends the job (srun alone would only print the tasks' state).
  EXPECT_NE(std::find(c.argv.begin(), c.argv.end(), "--quit-on-interrupt"), c.argv.end());
  EXPECT_EQ(c.argv.back(), "/srv/tenants/globex/jobs/job1/multi-prog.conf");
  EXPECT_EQ(c.exec_env.at("SLURM_JOB_ID"), "4242");
  EXPECT_EQ(c.exec_env.at("SLURM_HOSTFILE"), "/srv/tenants/globex/jobs/job1/slurm-hostfile");
  std::string prog, hosts;
  for (const auto& [path, content] : c.files) {
    if (path.ends_with("multi-prog.conf")) prog = content;
    if (path.ends_with("slurm-hostfile")) hosts = content;
  }
  EXPECT_EQ(hosts, "node01\nnode01\nnode02\nnode02\n");
  EXPECT_NE(prog.find("3 /usr/bin/env "), std::string::npos);
  EXPECT_NE(prog.find("CUDA_VISIBLE_DEVICES=MIG-22222222-3333-4000-8000-000000000000"), std::string::npos);
  o.command = {"/opt/lt/leasetrain", "train", "--name", "a b"};
  EXPECT_THROW(build_launch(p, f, o), lt::UserError);  // multi-prog cannot quote it
  o.launcher = "mpirun";
  o.command = {"train"};
  EXPECT_EQ(build_launch(p, f, o).launcher, "mpirun");
}

// ---- the CLI -------------------------------------------------------------------------------

TEST(Cli, PlanJsonAndRefusals) {
  RunResult r = run_cli("plan --json --manifest " + my_manifest() + " --lease globex-2024 --sysfs-root " + kSysfs);
  ASSERT_EQ(r.code, 0) << r.both();
  json j = json::parse(r.out);
  EXPECT_EQ(j["np"], 4);
  EXPECT_EQ(j["ranks"][3]["devices"][0], "MIG-22222222-3333-4000-8000-000000000000");
  EXPECT_EQ(j["ranks"][0]["pkey_index"], 3);
  EXPECT_EQ(j["ranks"][0]["pkey"], "0x8002");

  auto expect_exit2 = [&](const std::string& args, const std::string& why) {
    RunResult r2 = run_cli(args);
    const std::string out2 = r2.both();
    EXPECT_EQ(r2.code, 2) << args << ": " << out2;
    EXPECT_NE(out2.find(why), std::string::npos) << args << ": " << out2;
    EXPECT_EQ(count_lines(out2), 1) << out2;
  };
  const std::string m = " --manifest " + my_manifest() + " --sysfs-root " + kSysfs;
  expect_exit2("plan" + m + " --lease acme-2024 --np 5", "exceeds lease acme-2024");
  expect_exit2("plan" + m + " --lease acme-2024 --at 2023-01-01T00:00:00Z", "is not valid yet");
  expect_exit2("plan" + m + " --lease acme-2024 --at 2099-02-01T00:00:00Z", "has expired");
  expect_exit2("plan" + m + " --lease nobody", "no lease 'nobody'");
  // An HCA absent from the sysfs tree (a login node) is not an error: each rank resolves it.
  RunResult r3 = run_cli("plan --manifest " + my_manifest() + " --lease globex-2024 --sysfs-root " + kFixtures);
  EXPECT_EQ(r3.code, 0) << r3.both();
  EXPECT_NE(r3.both().find("each rank resolves it on its node"), std::string::npos) << r3.both();
}

TEST(Cli, DryRunLaunchForBothTenants) {
  const std::string cli = LT_CLI;
  for (const char* lease : {"acme-2024", "globex-2024"}) {
    // --launcher mpirun: the default would be srun where this suite runs inside an allocation.
    RunResult r = run_cli("launch --dry-run --json --launcher mpirun --job-id j7 --manifest " + my_manifest() +
                              " --lease " + lease + " --sysfs-root " + kSysfs + " -- train --steps 3",
                          "", {{"NCCL_IB_HCA", "mlx5_7"}, {"NCCL_DEBUG", "INFO"}});
    ASSERT_EQ(r.code, 0) << r.both();
    json j = json::parse(r.out);
    EXPECT_EQ(j["launcher"], "mpirun");
    EXPECT_EQ(j["rank_env"].size(), 4u);
    EXPECT_NE(std::find(j["dropped_env"].begin(), j["dropped_env"].end(), "NCCL_IB_HCA"), j["dropped_env"].end());
    for (const auto& e : j["rank_env"]) {
      EXPECT_EQ(e["NCCL_DEBUG"], "INFO");
      EXPECT_NE(e["NCCL_IB_HCA"], "mlx5_7");
      EXPECT_EQ(e["LEASETRAIN_JOB_ID"], "j7");
    }
    // `train` became this leasetrain binary's train subcommand.
    std::vector<std::string> argv = j["argv"];
    EXPECT_NE(std::find(argv.begin(), argv.end(), "train"), argv.end());
    EXPECT_NE(std::find(argv.begin(), argv.end(), fs::canonical(cli).string()), argv.end());
  }
  RunResult r = run_cli("launch --dry-run --manifest " + my_manifest() + " --lease acme-2024 --sysfs-root " + kSysfs + " -- train",
                        "", {{"NCCL_COMM_ID", "10.0.0.1:9"}});
  EXPECT_EQ(r.code, 2) << r.both();
  EXPECT_NE(r.both().find("NCCL_COMM_ID"), std::string::npos);
}

TEST(Cli, EmbeddedLocalLeaseNeedsNoManifest) {
  // --np 1: a machine with one GPU has one slot (the local lease counts GPUs when it has any).
  RunResult r = run_cli("launch --dry-run --json --np 1 -- train --steps 1");
  ASSERT_EQ(r.code, 0) << r.both();
  json j = json::parse(r.out);
  EXPECT_EQ(j["plan"]["lease"], "local");
  EXPECT_TRUE(j["plan"]["manifest"]["embedded"]);
  EXPECT_EQ(j["rank_env"].size(), 1u);
  EXPECT_EQ(j["rank_env"][0]["NCCL_SOCKET_IFNAME"], "=lo");
  EXPECT_EQ(j["plan"]["usage_log"], "");
}

// A manifest naming this host with lease l1 of two CPU ranks, storage under `root`.
std::string two_cpu_rank_manifest(const std::string& host, const std::string& root) {
  return "[operator]\nid = \"test\"\n[[node]]\nhostname = \"" + host +
         "\"\n[[tenant]]\nid = \"t\"\n[[lease]]\nid = \"l1\"\ntenant = \"t\"\n"
         "not_before = 2020-01-01T00:00:00Z\nnot_after = 2200-01-01T00:00:00Z\n"
         "grace_seconds = 60\nstorage_roots = [\"" +
         root + "\"]\n[lease.quota]\nmax_ranks = 2\ngpu_hours = 1\nstorage_bytes = \"1GiB\"\n"
         // warn: on a GPU machine this CPU-only lease leaves the GPUs' nodes open
         "[lease.policy]\ndevice_probe = \"warn\"\n"
         "[[lease.alloc]]\nnode = \"" + host + "\"\ncpu_ranks = 2\n";
}

// A real job on this machine: a manifest naming this host with two CPU ranks, each rank
// writing what it received into the job directory.
TEST(RealMpirun, TwoRanksGetTheirOwnEnvironmentAndAUsageRecord) {
  if (run_sh("command -v mpirun").code != 0) GTEST_SKIP() << "mpirun not installed";
  TempDir dir;
  const std::string host = local_hostname(), root = dir.path.string();
  write_file(dir / "m.toml", two_cpu_rank_manifest(host, root));
  const std::string script =
      "echo \"$OMPI_COMM_WORLD_RANK $LEASETRAIN_LEASE $NCCL_SOCKET_IFNAME [$CUDA_VISIBLE_DEVICES] [$NCCL_IB_HCA] "
      "[$SECRET_TOKEN]\" > $LEASETRAIN_JOB_DIR/seen-$OMPI_COMM_WORLD_RANK";
  const std::string cli = "timeout 120 " + std::string(LT_CLI);
  RunResult r = run_sh(cli + " launch --launcher mpirun --manifest m.toml --lease l1 --job-id real1 -- sh -c '" +
                           script + "'",
                       root,
                       {{"NCCL_IB_HCA", "mlx5_3"}, {"SECRET_TOKEN", "x"}});
  ASSERT_EQ(r.code, 0) << r.both();
  for (int rank = 0; rank < 2; ++rank) {
    std::ifstream in(dir / ("jobs/real1/seen-" + std::to_string(rank)));
    std::string line;
    std::getline(in, line);
    EXPECT_EQ(line, std::to_string(rank) + " l1 =lo [] [] []") << r.both();
  }
  EXPECT_TRUE(fs::exists(dir / "jobs/real1/hostfile"));
  AuditResult a = verify_log(dir / "usage.jsonl");
  EXPECT_TRUE(a.ok) << a.reason;
  EXPECT_EQ(a.records, 1u);
  // A failing job's status comes back and is recorded too.
  RunResult r2 =
      run_sh(cli + " launch --launcher mpirun --manifest m.toml --lease l1 --np 1 --job-id real2 -- sh -c 'exit 3'", root);
  EXPECT_EQ(r2.code, 3) << r2.both();
  std::ifstream in(dir / "usage.jsonl");
  std::string l1, l2;
  std::getline(in, l1);
  std::getline(in, l2);
  json rec = json::parse(l2);
  EXPECT_EQ(rec["exit_status"], 3);
  EXPECT_EQ(rec["job_id"], "real2");
  EXPECT_EQ(rec["lease"], "l1");
  EXPECT_EQ(rec["prev"], json::parse(l1)["hash"]);
}

// The same job through srun, where this suite runs inside a SLURM allocation of at least two
// tasks on this host (salloc -n2 ctest ...); skipped elsewhere. Each rank's environment comes
// from --multi-prog under --export=NONE, its rank from SLURM_PROCID, and the caller's
// variables outside the allowlist never reach it.
TEST(RealSrun, TwoRanksInsideAnAllocation) {
  const char* job = std::getenv("SLURM_JOB_ID");
  if (!job || !*job) GTEST_SKIP() << "not inside a SLURM allocation (SLURM_JOB_ID unset)";
  if (run_sh("command -v srun").code != 0) GTEST_SKIP() << "srun not installed";
  TempDir dir;
  const std::string host = local_hostname(), root = dir.path.string();
  write_file(dir / "m.toml", two_cpu_rank_manifest(host, root));
  // --multi-prog carries no quoted arguments: the rank's script is a file.
  write_file(dir / "seen.sh",
             "#!/bin/sh\necho \"$SLURM_PROCID/$SLURM_STEP_NUM_TASKS $LEASETRAIN_LEASE $NCCL_SOCKET_IFNAME "
             "[$CUDA_VISIBLE_DEVICES] [$NCCL_IB_HCA] [$SECRET_TOKEN]\" > $LEASETRAIN_JOB_DIR/seen-$SLURM_PROCID\n");
  fs::permissions(dir / "seen.sh", fs::perms::owner_all);
  const std::string cli = "timeout 120 " + std::string(LT_CLI);
  RunResult r = run_sh(cli + " launch --manifest m.toml --lease l1 --job-id srun1 -- " + (dir / "seen.sh"), root,
                       {{"NCCL_IB_HCA", "mlx5_3"}, {"SECRET_TOKEN", "x"}});
  ASSERT_EQ(r.code, 0) << r.both();
  EXPECT_NE(r.err.find("leasetrain: srun "), std::string::npos) << r.both();
  for (int rank = 0; rank < 2; ++rank) {
    std::ifstream in(dir / ("jobs/srun1/seen-" + std::to_string(rank)));
    std::string line;
    std::getline(in, line);
    EXPECT_EQ(line, std::to_string(rank) + "/2 l1 =lo [] [] []") << r.both();
  }
  AuditResult a = verify_log(dir / "usage.jsonl");
  EXPECT_TRUE(a.ok) << a.reason;
  std::ifstream in(dir / "usage.jsonl");
  std::string l1;
  std::getline(in, l1);
  EXPECT_EQ(json::parse(l1)["launcher"], "srun");
}

}  // namespace
