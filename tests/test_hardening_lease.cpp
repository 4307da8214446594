// Issue 12, tenancy and accounting: devices by physical identity, storage roots, dangerous
// variables, who may use a lease, the usage log as the only accounting source, n log n
// validation, bounded counts and inputs, LEASETRAIN_WRITE_ROOTS.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lease/audit.h"
#include "lease/launch.h"
#include "lease/lease_plan.h"
#include "lease/manifest.h"
#include "runtime/error.h"
#include "tests/lease_fixtures.h"
#include "tests/util.h"

namespace fs = std::filesystem;
using namespace lt::lease;
using namespace lt::test;
using nlohmann::json;

namespace {

// The error parse_manifest gives `text`, or "" when it accepts it.
std::string refusal(const std::string& text) {
  try {
    parse_manifest(text, "m.toml");
  } catch (const lt::UserError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
    EXPECT_EQ(msg.rfind("m.toml", 0), 0u) << msg;
    return msg;
  }
  return "";
}

void expect_refused(const std::string& text, std::initializer_list<const char*> parts) {
  std::string msg = refusal(text);
  ASSERT_FALSE(msg.empty()) << "accepted";
  for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
}

const char* const kAcmeNode02Gpus =
    "  gpus = [\"GPU-22222222-0000-4000-8000-000000000000\", \"GPU-22222222-0000-4000-8000-000000000001\"]\n";
// Declares one more MIG slice on node02 (parent GPU 3) with the given UUID tail, gi and ci.
std::string with_extra_slice(const std::string& text, const std::string& tail, int gi, int ci) {
  const std::string second = "  gi = 2\n  ci = 0\n";
  return replace_once(text, second,
                      second + "  [[node.mig]]\n  uuid = \"MIG-22222222-3333-4000-8000-" + tail +
                          "\"\n  parent = \"GPU-22222222-0000-4000-8000-000000000003\"\n  profile = \"1g.10gb\"\n"
                          "  gi = " + std::to_string(gi) + "\n  ci = " + std::to_string(ci) + "\n");
}
// acme also takes the slice MIG-...-<tail> on node02.
std::string acme_takes_slice(const std::string& text, const std::string& tail) {
  return replace_once(text, kAcmeNode02Gpus,
                      std::string(kAcmeNode02Gpus) + "  mig = [\"MIG-22222222-3333-4000-8000-" + tail + "\"]\n");
}

Identity someone(const std::string& user, uint32_t uid, std::vector<std::string> groups = {},
                 std::vector<uint32_t> gids = {}) {
  Identity id;
  id.user = user;
  id.uid = uid;
  id.groups = std::move(groups);
  id.gids = std::move(gids);
  return id;
}

PlanRequest req_as(const Identity& who) {
  PlanRequest r;
  r.caller = who;
  r.now = parse_time("2025-06-01T00:00:00Z");
  r.sysfs_root = kSysfs;
  r.check_usage = false;
  return r;
}

// The fixture with this process's real uid admitted to both tenants (the CLI checks the real caller).
std::string fixture_for_me(const TempDir& dir, std::string text = base()) {
  const std::string me = "\"" + std::to_string(::getuid()) + "\"";
  text = replace_once(text, "users = [\"alice\"]", "users = [\"alice\", " + me + "]");
  text = replace_once(text, "groups = [\"globex-ml\"]", "groups = [\"globex-ml\"]\nusers = [" + me + "]");
  write_file(dir / "m.toml", text);
  return dir / "m.toml";
}

}  // namespace

// ---- 1. devices by physical identity ------------------------------------------------------

TEST(PhysicalIdentity, OneMigSliceUnderTwoUuidsForTwoTenantsIsRefused) {
  // MIG-...0002 is GI 1 / CI 0 of node02's GPU 3: the slice globex holds as MIG-...0000.
  std::string text = acme_takes_slice(with_extra_slice(base(), "000000000002", 1, 0), "000000000002");
  expect_refused(text, {"lease[1].alloc[1].mig[0]", "same physical slice", "GPU instance 1, compute instance 0",
                        "MIG-22222222-3333-4000-8000-000000000002", "acme-2024", "globex-2024"});
  // The same tenant may not double-book it either...
  std::string same = replace_once(text, "[[lease]]\nid = \"globex-2024\"\ntenant = \"globex\"",
                                  "[[lease]]\nid = \"globex-2024\"\ntenant = \"acme\"");
  expect_refused(same, {"lease[1].alloc[1].mig[0]", "same physical slice"});
  // ...and windows apart it is fine.
  std::string apart = replace_once(text, "not_before = 2024-01-01T00:00:00Z\nnot_after = 2099-01-01T00:00:00Z\ngrace_seconds = 900",
                                   "not_before = 2099-01-01T00:00:00Z\nnot_after = 2100-01-01T00:00:00Z\ngrace_seconds = 900");
  EXPECT_EQ(refusal(apart), "");
}

TEST(PhysicalIdentity, ComputeInstancesOfOneGpuInstanceStayWithOneTenant) {
  // GI 1 / CI 1 shares GI 1's memory with globex's GI 1 / CI 0.
  std::string text = acme_takes_slice(with_extra_slice(base(), "000000000002", 1, 1), "000000000002");
  expect_refused(text, {"lease[1].alloc[1].mig[0]", "shares GPU instance 1", "tenant acme", "acme-2024"});
  // Another GPU instance of the same GPU is a separate slice: fine for another tenant.
  EXPECT_EQ(refusal(acme_takes_slice(base(), "000000000001")), "");
}

TEST(PhysicalIdentity, WholeGpuAgainstItsSliceUnderAnyName) {
  // acme leases GPU 3 of node02 whole while globex holds its slice.
  std::string text = replace_once(base(), kAcmeNode02Gpus,
                                  "  gpus = [\"GPU-22222222-0000-4000-8000-000000000000\", "
                                  "\"GPU-22222222-0000-4000-8000-000000000003\"]\n");
  expect_refused(text, {"lease[1].alloc[1].mig[0]", "which acme-2024 leases whole", "globex-2024"});
}

TEST(PhysicalIdentity, MigSlicesNeedGpuAndComputeInstance) {
  std::string text = replace_once(base(), "  gi = 2\n  ci = 0\n", "  ci = 0\n");
  expect_refused(text, {"node[1].mig[1].gi", "missing"});
}

// ---- 2. storage roots ---------------------------------------------------------------------

TEST(StorageRoots, SystemDirectoriesAndShallowRootsAreRefused) {
  for (const char* root : {"/", "//", "/etc", "/etc/leasetrain", "/proc/1", "/sys/fs", "/dev/shm", "/usr/local/x",
                           "/bin/x", "/boot/x", "/lib/x", "/lib64/x", "/var/lib", "/var/lib/x", "/var/log/x", "/root/x",
                           "/srv", "/tmp", "/home", "/srv/a:b"}) {
    std::string text = replace_once(base(), "storage_roots = [\"/srv/tenants/acme\"]",
                                    "storage_roots = [\"" + std::string(root) + "\"]");
    expect_refused(text, {"lease[0].storage_roots[0]"});
    EXPECT_NE(storage_root_problem(root), "") << root;
  }
  for (const char* root : {"/srv/tenants/x", "/data/acme", "/home/alice", "/tmp/lt-x", "/var/tmp/x"})
    EXPECT_EQ(storage_root_problem(root), "") << root;
  // Read-only roots follow the same rule.
  expect_refused(replace_once(base(), "read_only_roots = [\"/srv/datasets\"]", "read_only_roots = [\"/\"]"),
                 {"lease[0].read_only_roots[0]", "whole file system"});
}

TEST(StorageRoots, SharedOrNestedAcrossTenantsIsRefusedComponentWise) {
  const std::string globex = "storage_roots = [\"/srv/tenants/globex\"]";
  auto as_globex = [&](const std::string& roots) { return replace_once(base(), globex, "storage_roots = " + roots); };
  expect_refused(as_globex("[\"/srv/tenants/acme\"]"), {"lease[1].storage_roots[0]", "is also storage root", "acme-2024", "globex-2024"});
  expect_refused(as_globex("[\"/srv/tenants/acme/globex\"]"), {"lease[1].storage_roots[0]", "lies inside", "acme-2024"});
  expect_refused(as_globex("[\"/srv//tenants/acme/\"]"), {"lease[1].storage_roots[0]", "acme-2024"});
  // Containing the other's root: reported at whichever sorts later, naming both.
  expect_refused(as_globex("[\"/srv/tenants\"]"), {"lease[0].storage_roots[0]", "/srv/tenants", "globex-2024", "acme-2024"});
  expect_refused(as_globex("[\"/srv/g\", \"/srv/tenants/acme/x\"]"), {"lease[1].storage_roots[1]"});
  // A string prefix is not nesting.
  EXPECT_EQ(refusal(as_globex("[\"/srv/tenants/acmex\"]")), "");
  EXPECT_EQ(refusal(as_globex("[\"/srv/tenants/ac\"]")), "");
  // Windows apart do not help: the data is still there.
  std::string apart = replace_once(as_globex("[\"/srv/tenants/acme\"]"),
                                   "not_before = 2024-01-01T00:00:00Z\nnot_after = 2099-01-01T00:00:00Z\ngrace_seconds = 900",
                                   "not_before = 2099-01-01T00:00:00Z\nnot_after = 2100-01-01T00:00:00Z\ngrace_seconds = 900");
  expect_refused(apart, {"lease[1].storage_roots[0]"});
  // A read-only root into another tenant's read-write root is refused; shared data sets are fine.
  expect_refused(replace_once(base(), globex, globex + "\nread_only_roots = [\"/srv/tenants/acme/ckpt\"]"),
                 {"lease[1].read_only_roots[0]", "storage root /srv/tenants/acme", "acme-2024"});
  EXPECT_EQ(refusal(replace_once(base(), globex, globex + "\nread_only_roots = [\"/srv/datasets\"]")), "");
}

TEST(StorageRoots, SameTenantMayReuseItsRoot) {
  // globex's lease handed to acme, under acme's own root.
  std::string text = replace_once(base(), "tenant = \"globex\"", "tenant = \"acme\"");
  text = replace_once(text, "storage_roots = [\"/srv/tenants/globex\"]", "storage_roots = [\"/srv/tenants/acme/second\"]");
  EXPECT_EQ(refusal(text), "");
}

TEST(StorageRoots, ASymlinkedRootIsRefusedAtPlan) {
  TempDir dir;
  fs::create_directories(dir.path / "real");
  fs::create_directory_symlink(dir.path / "real", dir.path / "link");
  std::string text = replace_once(base(), "storage_roots = [\"/srv/tenants/acme\"]",
                                  "storage_roots = [\"" + (dir / "link") + "\"]");
  Manifest m = parse_manifest(text, "m.toml");
  try {
    make_plan(m, "acme-2024", req_as(someone("alice", 1000)));
    FAIL() << "a symlinked root was accepted";
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("is really " + (dir / "real")), std::string::npos) << e.what();
  }
}

// ---- 3. dangerous variables -----------------------------------------------------------------

TEST(DangerousEnv, WildcardsNeverMatchThem) {
  Policy p;
  p.allow_env = {"LD_*", "OMPI_*", "PMIX_*", "PRTE_*", "L*", "N*", "U*", "C*", "OMP_*", "O*"};
  EnvMap in = {{"LD_PRELOAD", "/tmp/evil.so"},      {"LD_LIBRARY_PATH", "/tmp"},      {"LD_AUDIT", "/tmp/a.so"},
               {"OMPI_MCA_btl_tcp_if_include", "lo"}, {"OMPI_MCA_pml", "ob1"},        {"PMIX_MCA_x", "1"},
               {"PRTE_MCA_y", "1"},                  {"LEASETRAIN_WRITE_ROOTS", "/"}, {"LEASETRAIN_USAGE_LOG", "/tmp/u"},
               {"NCCL_CONF_FILE", "/tmp/nccl.conf"}, {"NCCL_TUNER_PLUGIN", "/tmp/t.so"}, {"NCCL_NET", "Socket"},
               {"UCX_NET_DEVICES", "mlx5_1:1"},      {"CUDA_INJECTION64_PATH", "/tmp/i.so"},
               {"CUDA_MPS_PIPE_DIRECTORY", "/tmp"},  {"NCCL_ALGO", "Ring"},            {"LANGUAGE", "C"},
               {"OMP_TOOL_LIBRARIES", "/tmp/t.so"},  {"OPENSSL_CONF", "/tmp/e.cnf"}};
  EnvFilter f = filter_environment(in, p);
  for (const auto& [k, v] : in) {
    if (k == "NCCL_ALGO" || k == "LANGUAGE") {
      EXPECT_EQ(f.passed.count(k), 1u) << k << " is ordinary";
    } else {
      EXPECT_EQ(f.passed.count(k), 0u) << k << " passed through a wildcard";
    }
  }
  // LD_LIBRARY_PATH is no longer passed by default either.
  EXPECT_EQ(filter_environment({{"LD_LIBRARY_PATH", "/tmp"}}, Policy{}).passed.count("LD_LIBRARY_PATH"), 0u);
}

TEST(DangerousEnv, OnlyAnExactOperatorOptInPassesThem) {
  Policy p;
  p.allow_dangerous_env = {"LD_LIBRARY_PATH"};
  EnvFilter f = filter_environment({{"LD_LIBRARY_PATH", "/opt/nccl/lib"}, {"LD_PRELOAD", "/tmp/x.so"}}, p);
  EXPECT_EQ(f.passed.at("LD_LIBRARY_PATH"), "/opt/nccl/lib");
  EXPECT_EQ(f.passed.count("LD_PRELOAD"), 0u);
  EXPECT_EQ(f.dangerous, std::vector<std::string>{"LD_LIBRARY_PATH"});
  // A policy built in code that lists a dangerous name in allow_env still does not pass it.
  Policy q;
  q.allow_env = {"LD_PRELOAD"};
  EXPECT_EQ(filter_environment({{"LD_PRELOAD", "/tmp/x.so"}}, q).passed.count("LD_PRELOAD"), 0u);
}

TEST(DangerousEnv, ManifestRules) {
  const std::string from = "allow_env = [\"NCCL_ALGO\", \"NCCL_PROTO\"]";
  auto policy = [&](const std::string& to) { return replace_once(base(), from, to); };
  expect_refused(policy("allow_env = [\"LD_PRELOAD\"]"), {"lease[0].policy.allow_env[0]", "allow_dangerous_env"});
  expect_refused(policy("allow_env = [\"OMPI_MCA_btl_tcp_if_exclude\"]"),
                 {"lease[0].policy.allow_env[0]", "allow_dangerous_env"});
  expect_refused(policy("allow_dangerous_env = [\"LD_*\"]"), {"lease[0].policy.allow_dangerous_env[0]", "no wildcard"});
  expect_refused(policy("allow_dangerous_env = [\"NCCL_ALGO\"]"), {"lease[0].policy.allow_dangerous_env[0]", "allow_env instead"});
  expect_refused(policy("allow_dangerous_env = [\"LEASETRAIN_WRITE_ROOTS\"]"), {"lease[0].policy.allow_dangerous_env[0]", "set from the lease"});
  expect_refused(policy("allow_dangerous_env = [\"NCCL_COMM_ID\"]"), {"lease[0].policy.allow_dangerous_env[0]"});
  EXPECT_EQ(refusal(policy("allow_env = [\"LD_*\", \"OMPI_*\", \"NCCL_IB_*\"]")), "");  // wildcards are fine: they skip them
  Manifest m = parse_manifest(policy("allow_dangerous_env = [\"LD_LIBRARY_PATH\"]"), "m.toml");
  EXPECT_EQ(m.lease("acme-2024").policy.allow_dangerous_env, std::vector<std::string>{"LD_LIBRARY_PATH"});
  // Real MPI variables have lower-case parts; the operator can name them exactly.
  Manifest o = parse_manifest(policy("allow_dangerous_env = [\"OMPI_MCA_pml_ucx_verbose\"]"), "m.toml");
  EXPECT_EQ(o.lease("acme-2024").policy.allow_dangerous_env, std::vector<std::string>{"OMPI_MCA_pml_ucx_verbose"});
}

TEST(DangerousEnv, ManifestCheckPlanAndLaunchWarnLoudly) {
  TempDir dir;
  std::string path = fixture_for_me(dir, replace_once(base(), "allow_env = [\"NCCL_ALGO\", \"NCCL_PROTO\"]",
                                                      "allow_dangerous_env = [\"LD_LIBRARY_PATH\"]"));
  RunResult c = run_cli("manifest check " + path);
  EXPECT_EQ(c.code, 0) << c.both();
  EXPECT_NE(c.err.find("warning: lease acme-2024 passes LD_LIBRARY_PATH"), std::string::npos) << c.both();
  RunResult p = run_cli("plan --manifest " + path + " --lease acme-2024 --sysfs-root " + kSysfs);
  EXPECT_EQ(p.code, 0) << p.both();
  EXPECT_NE(p.err.find("warning: lease acme-2024 passes LD_LIBRARY_PATH"), std::string::npos) << p.both();
  RunResult l = run_cli("launch --dry-run --json --launcher mpirun --manifest " + path + " --lease acme-2024 --sysfs-root " +
                            kSysfs + " -- train",
                        "", {{"LD_LIBRARY_PATH", "/opt/x"}, {"LD_BIND_NOW", "1"}});
  ASSERT_EQ(l.code, 0) << l.both();
  EXPECT_NE(l.err.find("warning: lease acme-2024 passes LD_LIBRARY_PATH"), std::string::npos) << l.both();
  json j = json::parse(l.out);
  EXPECT_EQ(j["rank_env"][0]["LD_LIBRARY_PATH"], "/opt/x");
  EXPECT_FALSE(j["rank_env"][0].contains("LD_BIND_NOW"));
}

// ---- 4. who may use a lease ---------------------------------------------------------------

TEST(Identity, UsersAndGroupsByNameOrId) {
  Manifest m = parse_manifest(base(), "m.toml");
  const Lease& acme = m.lease("acme-2024");    // users = ["alice"]
  const Lease& globex = m.lease("globex-2024");  // groups = ["globex-ml"]
  EXPECT_NO_THROW(check_identity(m, acme, someone("alice", 1000)));
  EXPECT_NO_THROW(check_identity(m, globex, someone("bob", 1001, {"bob", "globex-ml"}, {1001, 3000})));
  try {
    check_identity(m, acme, someone("bob", 1001, {"bob"}, {1001}));
    FAIL();
  } catch (const lt::UserError& e) {
    std::string msg = e.what();
    for (const char* p : {"lease acme-2024", "tenant acme", "users alice", "uid 1001 (bob)"})
      EXPECT_NE(msg.find(p), std::string::npos) << p << " in " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos);
  }
  EXPECT_THROW(check_identity(m, globex, someone("alice", 1000, {"alice"}, {1000})), lt::UserError);
  // Root is not exempt...
  try {
    check_identity(m, acme, someone("root", 0, {"root"}, {0}));
    FAIL();
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("root is not exempt"), std::string::npos) << e.what();
  }
  // ...unless the operator lists it; numeric ids work for users and groups.
  Manifest m2 = parse_manifest(replace_once(replace_once(base(), "users = [\"alice\"]", "users = [\"alice\", \"root\"]"),
                                            "groups = [\"globex-ml\"]", "groups = [\"3000\"]"),
                               "m.toml");
  EXPECT_NO_THROW(check_identity(m2, m2.lease("acme-2024"), someone("root", 0, {"root"}, {0})));
  EXPECT_NO_THROW(check_identity(m2, m2.lease("globex-2024"), someone("", 4242, {}, {4242, 3000})));
  Manifest m3 = parse_manifest(replace_once(base(), "users = [\"alice\"]", "users = [\"1000\"]"), "m.toml");
  EXPECT_NO_THROW(check_identity(m3, m3.lease("acme-2024"), someone("", 1000)));
  // make_plan checks it before anything else.
  EXPECT_THROW(make_plan(m, "acme-2024", req_as(someone("mallory", 6666))), lt::UserError);
  EXPECT_NO_THROW(make_plan(m, "acme-2024", req_as(someone("alice", 1000))));
}

TEST(Identity, TheCliChecksTheRealCaller) {
  Identity me = Identity::current();
  EXPECT_EQ(me.uid, uint32_t(::getuid()));
  ASSERT_FALSE(me.gids.empty());
  EXPECT_EQ(me.gids[0], uint32_t(::getgid()));
  if (me.user == "alice") GTEST_SKIP() << "this test needs a caller other than the fixture's alice";
  RunResult r = run_cli("plan --manifest " + kFixtures + "/shared-cluster.toml --lease acme-2024 --sysfs-root " + kSysfs);
  EXPECT_EQ(r.code, 2) << r.both();
  EXPECT_NE(r.err.find("lease acme-2024 belongs to tenant acme (users alice), and you are uid " + std::to_string(me.uid)),
            std::string::npos)
      << r.both();
  EXPECT_EQ(count_lines(r.both()), 1) << r.both();
  RunResult l = run_cli("launch --dry-run --manifest " + kFixtures + "/shared-cluster.toml --lease globex-2024 -- train");
  EXPECT_EQ(l.code, 2) << l.both();
  EXPECT_NE(l.err.find("groups globex-ml"), std::string::npos) << l.both();
  TempDir dir;
  RunResult ok = run_cli("plan --manifest " + fixture_for_me(dir) + " --lease acme-2024 --sysfs-root " + kSysfs);
  EXPECT_EQ(ok.code, 0) << ok.both();
}

// ---- 5. the lease's usage log is the only accounting source ------------------------------

TEST(UsageLog, AnotherLogIsRefusedTheSameFileIsNot) {
  TempDir dir;
  const std::string log = dir / "usage.jsonl";
  append_record(log, {{"kind", "job"}, {"lease", "globex-2024"}, {"gpu_seconds", 500.5 * 3600}});
  Manifest m = parse_manifest(replace_once(base(), "storage_roots = [\"/srv/tenants/globex\"]",
                                           "storage_roots = [\"/srv/tenants/globex\"]\nusage_log = \"" + log + "\""),
                              "m.toml");
  PlanRequest r = req_as(someone("bob", 1001, {"globex-ml"}, {3000}));
  r.check_usage = true;
  EXPECT_THROW(make_plan(m, "globex-2024", r), lt::UserError);  // quota spent
  r.usage_log = dir / "mine.jsonl";                              // a fresh file of the tenant's own
  try {
    make_plan(m, "globex-2024", r);
    FAIL() << "--usage-log bypassed the quota";
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("only log its GPU-hours are counted from"), std::string::npos) << e.what();
  }
  // The same file under another spelling is the same log (and still spent).
  fs::create_directory_symlink(dir.path, dir.path / "alias");
  r.usage_log = dir / "alias/./usage.jsonl";
  try {
    make_plan(m, "globex-2024", r);
    FAIL();
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("has used its 500.5 GPU-hours"), std::string::npos) << e.what();
  }
  // A lease without usage_log counts from <first storage root>/usage.jsonl, also exclusively.
  PlanRequest a = req_as(someone("alice", 1000));
  a.usage_log = dir / "mine.jsonl";
  EXPECT_THROW(make_plan(m, "acme-2024", a), lt::UserError);
  // The embedded local lease has no log of its own: --usage-log is how it gets one.
  PlanRequest loc = req_as(Identity::current());
  loc.usage_log = dir / "local.jsonl";
  EXPECT_EQ(make_plan(local_default_manifest(1), kLocalLeaseId, loc).usage_log, dir / "local.jsonl");
}

TEST(UsageLog, CliRefusesAForeignUsageLog) {
  TempDir dir;
  RunResult r = run_cli("plan --manifest " + fixture_for_me(dir) + " --lease acme-2024 --sysfs-root " + kSysfs +
                        " --usage-log " + (dir / "fresh.jsonl"));
  EXPECT_EQ(r.code, 2) << r.both();
  EXPECT_NE(r.err.find("--usage-log"), std::string::npos) << r.both();
  EXPECT_EQ(count_lines(r.both()), 1) << r.both();
}

// ---- 6. validation is n log n ------------------------------------------------------------

namespace {
// n leases of one whole GPU each on 8-GPU nodes, all windows overlapping, 1,000 tenants.
std::string big_manifest(int n) {
  std::string t = "[operator]\nid = \"big\"\n";
  t.reserve(size_t(n) * 520);
  const int nodes = (n + 7) / 8;
  char buf[160];
  for (int i = 0; i < nodes; ++i) {
    t += "[[node]]\nhostname = \"n" + std::to_string(i) + "\"\n";
    for (int g = 0; g < 8; ++g) {
      std::snprintf(buf, sizeof buf, "[[node.gpu]]\nuuid = \"GPU-%08x-0000-4000-8000-%012x\"\npci_bus_id = \"0000:%02x:00.0\"\n",
                    i, g, 0x10 + g);
      t += buf;
    }
  }
  for (int k = 0; k < 1000; ++k) t += "[[tenant]]\nid = \"t" + std::to_string(k) + "\"\n";
  for (int i = 0; i < n; ++i) {
    const int k = i % 1000;
    std::snprintf(buf, sizeof buf, "GPU-%08x-0000-4000-8000-%012x", i / 8, i % 8);
    t += "[[lease]]\nid = \"l" + std::to_string(i) + "\"\ntenant = \"t" + std::to_string(k) +
         "\"\nnot_before = 2025-01-01T00:00:00Z\nnot_after = 2026-01-01T00:00:00Z\nstorage_roots = [\"/srv/t/" +
         std::to_string(k) + "\"]\n[lease.quota]\nmax_ranks = 1\ngpu_hours = 10\nstorage_bytes = 1000\n"
         "[[lease.alloc]]\nnode = \"n" + std::to_string(i / 8) + "\"\ngpus = [\"" + buf + "\"]\n";
  }
  return t;
}
}  // namespace

TEST(Scale, TwentyThousandLeasesValidateInSeconds) {
  const int n = 20000;
  std::string text = big_manifest(n);
  auto t0 = std::chrono::steady_clock::now();
  Manifest m = parse_manifest(text, "big.toml");
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(m.leases.size(), size_t(n));
  std::printf("[ measured ] %d leases (%zu bytes) parsed and validated in %.2f s\n", n, text.size(), secs);
  EXPECT_LT(secs, 20.0) << "cross-lease validation is no longer n log n";
  // A late lease re-booking the first lease's GPU for another tenant is found (on a smaller
  // manifest, to keep the test short under sanitizers).
  text = big_manifest(2000);
  text += "[[lease]]\nid = \"late\"\ntenant = \"t1\"\nnot_before = 2025-06-01T00:00:00Z\nnot_after = 2025-07-01T00:00:00Z\n"
          "storage_roots = [\"/srv/t/1\"]\n[lease.quota]\nmax_ranks = 1\ngpu_hours = 1\nstorage_bytes = 1\n"
          "[[lease.alloc]]\nnode = \"n0\"\ngpus = [\"GPU-00000000-0000-4000-8000-000000000000\"]\n";
  try {
    parse_manifest(text, "big.toml");
    FAIL() << "double booking accepted";
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("lease[2000].alloc[0].gpus[0]: GPU-00000000-0000-4000-8000-000000000000 is also leased by l0"),
              std::string::npos)
        << e.what();
  }
}

// ---- 7. bounded counts and inputs ----------------------------------------------------------

TEST(Bounds, HugeAndNegativeRankCountsAreOneLine) {
  TempDir dir;
  const std::string m = fixture_for_me(dir);
  for (const std::string& args :
       {std::string("plan --np 2147483647"), std::string("launch --dry-run --np 2147483647 -- train"),
        std::string("plan --np -3"), std::string("plan --np 99999999999"),
        "plan --manifest " + m + " --lease acme-2024 --np 2147483647 --sysfs-root " + kSysfs,
        "launch --dry-run --manifest " + m + " --lease acme-2024 --np 2147483647 --sysfs-root " + kSysfs + " -- train"}) {
    RunResult r = run_cli(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.both();
    EXPECT_EQ(count_lines(r.both()), 1) << args << ": " << r.both();
    EXPECT_NE(r.both().find("--np"), std::string::npos) << args << ": " << r.both();
  }
  EXPECT_THROW(local_default_manifest(kMaxCpuRanks + 1), lt::UserError);
}

TEST(Bounds, ManifestIsReadThroughTheValidatedReader) {
  TempDir dir;
  const std::string fifo = dir / "m.toml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& args : {"manifest check " + fifo, "plan --manifest " + fifo + " --lease x",
                                  "manifest sign " + fifo + " --key " + (dir / "k")}) {
    RunResult r = run_sh("timeout 20 " + std::string(LT_CLI) + " " + args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.both();  // 124 would be the hang
    EXPECT_NE(r.err.find("regular file"), std::string::npos) << args << ": " << r.both();
  }
  // A FIFO as the signature is refused too, not waited on.
  write_file(dir / "s.toml", base());
  ASSERT_EQ(::mkfifo((dir / "s.toml.sig").c_str(), 0600), 0);
  RunResult s = run_sh("timeout 20 " + std::string(LT_CLI) + " manifest check " + (dir / "s.toml") + " --operator-key " +
                       (dir / "nokey.pub"));
  EXPECT_EQ(s.code, 2) << s.both();
  // Size bound, before reading: a sparse file larger than the bound.
  const std::string huge = dir / "huge.toml";
  write_file(huge, "#");
  fs::resize_file(huge, kMaxManifestBytes + 1);
  RunResult h = run_cli("manifest check " + huge);
  EXPECT_EQ(h.code, 2) << h.both();
  EXPECT_NE(h.err.find("more than the"), std::string::npos) << h.both();
}

// ---- 8. LEASETRAIN_WRITE_ROOTS ------------------------------------------------------------

TEST(WriteRoots, EveryRankGetsTheLeasesRootsColonSeparated) {
  Manifest m = parse_manifest(replace_once(base(), "storage_roots = [\"/srv/tenants/acme\"]",
                                           "storage_roots = [\"/srv/tenants/acme\", \"/scratch//acme/\"]"),
                              "m.toml");
  Plan p = make_plan(m, "acme-2024", req_as(someone("alice", 1000)));
  for (const RankPlan& r : p.ranks) EXPECT_EQ(r.env.at("LEASETRAIN_WRITE_ROOTS"), "/srv/tenants/acme:/scratch/acme");
  // The caller cannot override it: lease variables win over anything inherited, which is
  // never passed anyway.
  Policy pol = m.lease("acme-2024").policy;
  pol.allow_env.push_back("LEASE*");
  EnvFilter f = filter_environment({{"LEASETRAIN_WRITE_ROOTS", "/"}}, pol);
  EXPECT_EQ(f.passed.count("LEASETRAIN_WRITE_ROOTS"), 0u);
  LaunchOptions o;
  o.command = {"train"};
  o.job_dir = "/srv/tenants/acme/jobs/j";
  o.launcher = "mpirun";
  LaunchCommand c = build_launch(p, f, o);
  for (const EnvMap& e : c.rank_env) EXPECT_EQ(e.at("LEASETRAIN_WRITE_ROOTS"), "/srv/tenants/acme:/scratch/acme");
}

// ---- found on the way ----------------------------------------------------------------------

TEST(Found, DeeplyDottedKeysAreRefusedNotACrash) {
  TempDir dir;
  std::string key = "x";
  for (int i = 0; i < 300000; ++i) key += ".x";
  write_file(dir / "keys.toml", key + " = 1\n");
  write_file(dir / "header.toml", "[" + key + "]\n");
  write_file(dir / "inline.toml", "a = { " + key + " = 1 }\n");
  for (const char* f : {"keys.toml", "header.toml", "inline.toml"}) {
    RunResult r = run_cli("manifest check " + (dir / f));
    EXPECT_EQ(r.code, 2) << f << ": " << r.both();  // was a segfault (139)
    EXPECT_NE(r.err.find("dotted key or table header"), std::string::npos) << r.both();
  }
  // Dots in strings, comments and values are not key parts.
  std::string dots(200, '.');
  EXPECT_EQ(refusal(replace_once(base(), "contact = \"noc@example.invalid\"",
                                 "contact = \"" + dots + "\" # " + dots + "\n# " + dots)),
            "");
}

TEST(Found, TheUsageLogLiesOutsideEveryStorageRoot) {
  const std::string globex = "storage_roots = [\"/srv/tenants/globex\"]";
  expect_refused(replace_once(base(), globex, globex + "\nusage_log = \"/srv/tenants/globex/usage.jsonl\""),
                 {"lease[1].usage_log", "inside storage root /srv/tenants/globex", "globex-2024"});
  expect_refused(replace_once(base(), globex, globex + "\nusage_log = \"/srv/tenants/acme/logs/globex.jsonl\""),
                 {"lease[1].usage_log", "acme-2024"});
  EXPECT_EQ(refusal(replace_once(base(), globex, globex + "\nusage_log = \"/var/lib/leasetrain/usage/globex.jsonl\"")), "");
  // Without one, the plan says the quota is only as good as the tenant's own file.
  Plan p = make_plan(parse_manifest(base(), "m.toml"), "acme-2024", req_as(someone("alice", 1000)));
  bool noted = false;
  for (const std::string& n : p.notes) noted = noted || n.find("holds against mistakes only") != std::string::npos;
  EXPECT_TRUE(noted);
}

TEST(Found, OneMachineUnderTwoHostNamesIsRefused) {
  for (const char* other : {"NODE01", "node01.example.org"})
    expect_refused(replace_once(base(), "hostname = \"node02\"", std::string("hostname = \"") + other + "\""),
                   {"node[1].hostname", "duplicate node"});
}

TEST(Found, JobIdCannotClimbOutOfTheJobsDirectory) {
  TempDir dir;
  const std::string m = fixture_for_me(dir);
  for (const std::string& id : {std::string(".."), std::string("."), std::string(129, 'a')}) {
    RunResult r = run_cli("launch --dry-run --manifest " + m + " --lease acme-2024 --sysfs-root " + kSysfs +
                          " --job-id " + id + " -- train");
    EXPECT_EQ(r.code, 2) << id << ": " << r.both();
    EXPECT_NE(r.err.find("--job-id"), std::string::npos) << r.both();
  }
}

TEST(Found, AJobHasAtMostKMaxJobRanks) {
  // 17 nodes of 4096 CPU ranks: 69,632 slots.
  std::string t = "[operator]\nid = \"o\"\n";
  for (int i = 0; i < 17; ++i)
    t += "[[node]]\nhostname = \"c" + std::to_string(i) + "\"\n[[node.nic]]\nnetdev = \"eth0\"\n";
  t += "[[tenant]]\nid = \"t\"\n[[lease]]\nid = \"big\"\ntenant = \"t\"\nnot_before = 2025-01-01T00:00:00Z\n"
       "not_after = 2026-01-01T00:00:00Z\nstorage_roots = [\"/srv/t/big\"]\n[lease.quota]\nmax_ranks = 100000\n"
       "gpu_hours = 1\nstorage_bytes = 1\n";
  for (int i = 0; i < 17; ++i)
    t += "[[lease.alloc]]\nnode = \"c" + std::to_string(i) + "\"\ncpu_ranks = 4096\nnics = [\"eth0\"]\n";
  Manifest m = parse_manifest(t, "m.toml");
  EXPECT_EQ(m.lease("big").total_slots(), 17 * 4096);
  try {
    make_plan(m, "big", req_as(someone("x", 1)));
    FAIL();
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("more than the 65536"), std::string::npos) << e.what();
  }
  PlanRequest r = req_as(someone("x", 1));
  r.np = 8;
  EXPECT_EQ(make_plan(m, "big", r).ranks.size(), 8u);
}

TEST(Found, RanksCheckTheirCallerToo) {
  TempDir dir;
  const std::string host = local_hostname();
  write_file(dir / "m.toml", "[operator]\nid = \"o\"\n[[node]]\nhostname = \"" + host +
                                 "\"\n[[tenant]]\nid = \"t\"\nusers = [\"someone-else-entirely\"]\n[[lease]]\nid = \"l\"\n"
                                 "tenant = \"t\"\nnot_before = 2020-01-01T00:00:00Z\nnot_after = 2200-01-01T00:00:00Z\n"
                                 "storage_roots = [\"" + dir.path.string() + "\"]\n[lease.quota]\nmax_ranks = 1\n"
                                 "gpu_hours = 1\nstorage_bytes = 1000\n[[lease.alloc]]\nnode = \"" + host +
                                 "\"\ncpu_ranks = 1\n");
  if (Identity::current().user == "someone-else-entirely") GTEST_SKIP();
  // `train` started by hand with the lease's variables: the rank's LeaseGuard refuses.
  RunResult r = run_sh("timeout 60 " + std::string(LT_CLI) + " train --config " + (dir / "m.toml") + " --steps 1 --out " + (dir / "run"), dir.path.string(),
                       {{"LEASETRAIN_MANIFEST", dir / "m.toml"}, {"LEASETRAIN_LEASE", "l"}, {"LEASETRAIN_NODE", host}});
  EXPECT_EQ(r.code, 2) << r.both();
  EXPECT_NE(r.err.find("belongs to tenant t"), std::string::npos) << r.both();
}

namespace {

// Review, second round: new examples of the device-identity and environment classes.
TEST(SecondReview, OneDeviceNodeUnderTwoGpusIsRefused) {
  // Same /dev/nvidia3 under a new UUID and bus id: one GPU, two leases could get it.
  const std::string twice = replace_once(base(), "  minor = 3\n  [[node.nic]]",
                                         "  minor = 3\n  [[node.gpu]]\n  uuid = \"GPU-11111111-0000-4000-8000-0000000000ff\"\n"
                                         "  pci_bus_id = \"0000:cc:00.0\"\n  numa = 1\n  minor = 3\n  [[node.nic]]");
  expect_refused(twice, {".minor", "/dev/nvidia3", "node01"});
}

TEST(SecondReview, EveryPatternCoveringANeverAllowedNameIsRefused) {
  const std::string from = "allow_env = [\"NCCL_ALGO\", \"NCCL_PROTO\"]";
  for (const char* p : {"NCCL_COMM_*", "NCCL_C*", "N*"})
    expect_refused(replace_once(base(), from, std::string("allow_env = [\"") + p + "\"]"),
                   {"lease[0].policy.allow_env[0]", "NCCL_COMM_ID"});
  // What a shell or an interpreter loads is code, like LD_PRELOAD: only by exact opt-in.
  for (const char* v : {"PYTHONPATH", "BASH_ENV", "PYTHONSTARTUP", "PERL5OPT", "NODE_OPTIONS"}) {
    expect_refused(replace_once(base(), from, std::string("allow_env = [\"") + v + "\"]"), {"allow_dangerous_env"});
    Policy p;
    p.allow_env = {"P*", "B*", "N*"};
    EXPECT_EQ(filter_environment({{v, "/tmp/x"}}, p).passed.count(v), 0u) << v;
  }
}

}  // namespace
