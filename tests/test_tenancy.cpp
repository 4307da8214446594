// LeaseGuard, the per-rank checks: lease window and deadline with an injected clock, storage
// escapes and quota, device UUIDs from a fake device list, /dev probing on a fake tree, the
// per-node P_Key index, and construction from the launcher's variables.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lease/lease_plan.h"
#include "lease/manifest.h"
#include "lease/tenancy.h"
#include "runtime/error.h"
#include "tests/lease_fixtures.h"
#include "tests/util.h"

namespace fs = std::filesystem;
using namespace lt::lease;

namespace {

using lt::test::kFixtures;
using lt::test::kManifest;
using lt::test::read_file;

// A fresh directory by its canonical path: the guard compares paths with symlinks resolved.
struct CanonicalDir {
  lt::test::TempDir tmp;
  std::string path = fs::canonical(tmp.path).string();
};

// The shared cluster with acme's storage moved under `root` and a small storage quota.
Manifest cluster_at(const std::string& root, const std::string& quota = "\"2TiB\"") {
  std::string t = read_file(kManifest);
  auto swap = [&](const std::string& from, const std::string& to) { t.replace(t.find(from), from.size(), to); };
  swap("storage_roots = [\"/srv/tenants/acme\"]", "storage_roots = [\"" + root + "/acme\"]");
  swap("read_only_roots = [\"/srv/datasets\"]", "read_only_roots = [\"" + root + "/datasets\"]");
  swap("storage_bytes = \"2TiB\"", "storage_bytes = " + quota);
  return parse_manifest(t, "m.toml");
}

Clock fixed(const char* t) {
  TimePoint tp = parse_time(t);
  return [tp] { return tp; };
}

const std::string A0 = "GPU-11111111-0000-4000-8000-000000000000";
const std::string A1 = "GPU-11111111-0000-4000-8000-000000000001";
const std::string B2 = "GPU-11111111-0000-4000-8000-000000000002";
const std::string BMIG = "MIG-22222222-3333-4000-8000-000000000000";

// ---- window and deadline ----------------------------------------------------------------

TEST(Deadline, WindowWithAnInjectedClock) {
  Manifest m = load_manifest(kManifest);
  TimePoint now = parse_time("2023-12-31T23:00:00Z");
  LeaseGuard g(m, "acme-2024", "node01", {A0}, [&] { return now; });
  EXPECT_THROW(g.check_start(), lt::UserError);  // not yet
  now = parse_time("2024-01-01T00:00:00Z");
  EXPECT_NO_THROW(g.check_start());
  // not_after 2099-01-01T00:00:00Z, grace 600 s.
  now = parse_time("2098-12-31T23:40:00Z");
  EXPECT_EQ(g.seconds_until_deadline(), 600);
  now = parse_time("2098-12-31T23:49:59Z");
  EXPECT_EQ(g.seconds_until_deadline(), 1);
  EXPECT_NO_THROW(g.check_start());
  now = parse_time("2098-12-31T23:50:00Z");
  EXPECT_EQ(g.seconds_until_deadline(), 0);  // checkpoint and stop now
  EXPECT_THROW(g.check_start(), lt::UserError);
  EXPECT_NE(g.deadline_message(now).find("the lease ends at 2099-01-01T00:00:00Z"), std::string::npos);
  now = parse_time("2099-01-01T00:00:00Z");
  EXPECT_LT(g.seconds_until_deadline(), 0);
  EXPECT_THROW(g.check_start(), lt::UserError);
  // The explicit-time overloads agree.
  EXPECT_EQ(g.seconds_until_deadline(parse_time("2098-12-31T23:00:00Z")), 3000);
}

TEST(Deadline, GpuHoursBudgetComesFirstWhenEarlier) {
  EnvMap vars = {{"LEASETRAIN_MANIFEST", kManifest},
                 {"LEASETRAIN_LEASE", "acme-2024"},
                 {"LEASETRAIN_NODE", "node01"},
                 {"LEASETRAIN_RANK_DEVICES", A1},
                 {"LEASETRAIN_GPU_BUDGET_END", "2025-06-01T02:00:00Z"}};
  ::unsetenv("LEASETRAIN_OPERATOR_KEY");
  if (fs::exists("/etc/leasetrain/operator.pub")) GTEST_SKIP() << "this node requires signed manifests";
  LeaseGuard g = LeaseGuard::from_vars(vars, "node01", fixed("2025-06-01T01:00:00Z"));
  EXPECT_EQ(g.seconds_until_deadline(), 3600 - 600);  // budget end minus the grace period
  EXPECT_NE(g.deadline_message(parse_time("2025-06-01T01:50:00Z")).find("GPU-hours"), std::string::npos);
  EXPECT_THROW(g.check_start(parse_time("2025-06-01T02:00:00Z")), lt::UserError);
}

TEST(Ranks, MaxRanksAndSlots) {
  Manifest m = load_manifest(kManifest);
  LeaseGuard g(m, "acme-2024", "node01", {});
  EXPECT_NO_THROW(g.check_ranks(4));
  EXPECT_THROW(g.check_ranks(5), lt::UserError);
  EXPECT_THROW(g.check_ranks(0), lt::UserError);
  EXPECT_THROW(LeaseGuard(m, "acme-2024", "node03", {}), lt::UserError);  // not a node of the lease
  EXPECT_THROW(LeaseGuard(m, "acme-2024", "node01", {B2}), lt::UserError);  // globex's GPU
}

// ---- storage ---------------------------------------------------------------------------

class Storage : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir.path + "/acme/ckpt");
    fs::create_directories(dir.path + "/datasets");
    fs::create_directories(dir.path + "/acme2");
    fs::create_directories(dir.path + "/other");
    std::ofstream(dir.path + "/datasets/train.bin") << "data";
    std::ofstream(dir.path + "/other/secret") << "x";
  }
  LeaseGuard guard(const std::string& quota = "\"2TiB\"") { return LeaseGuard(cluster_at(dir.path, quota), "acme-2024", "node01", {}); }
  CanonicalDir dir;
};

TEST_F(Storage, InsideTheRootIsAllowed) {
  LeaseGuard g = guard();
  const std::string root = dir.path + "/acme";
  EXPECT_EQ(g.check_path(root + "/ckpt/step-100.bin", true), root + "/ckpt/step-100.bin");
  EXPECT_EQ(g.check_path(root + "/new/dir/log.txt", true), root + "/new/dir/log.txt");  // not created yet
  EXPECT_EQ(g.check_path(root + "/ckpt/../ckpt/x", true), root + "/ckpt/x");  // '..' that stays inside
  EXPECT_EQ(g.check_path(root, true), root);
  EXPECT_EQ(g.check_path(dir.path + "/datasets/train.bin", false), dir.path + "/datasets/train.bin");
}

TEST_F(Storage, EscapesAreRefused) {
  LeaseGuard g = guard();
  const std::string root = dir.path + "/acme";
  EXPECT_THROW(g.check_path(root + "/../other/secret", false), lt::UserError);         // '..'
  EXPECT_THROW(g.check_path(root + "/ckpt/../../other/x", true), lt::UserError);       // '..' deeper
  EXPECT_THROW(g.check_path("/etc/passwd", false), lt::UserError);                     // absolute
  EXPECT_THROW(g.check_path(dir.path + "/acme2/x", true), lt::UserError);             // prefix, not a child
  EXPECT_THROW(g.check_path(root + "/not/yet/../../../other/x", true), lt::UserError);  // '..' over new dirs
  fs::create_directory_symlink(dir.path + "/other", root + "/link");
  EXPECT_THROW(g.check_path(root + "/link/secret", false), lt::UserError);              // symlink escape
  EXPECT_THROW(g.check_path(root + "/link/new-file", true), lt::UserError);
  fs::create_symlink("/nonexistent/target", root + "/dangling");
  EXPECT_THROW(g.check_path(root + "/dangling", true), lt::UserError);                  // could point anywhere
  fs::create_symlink(root + "/ckpt", root + "/inner");
  EXPECT_EQ(g.check_path(root + "/inner/a", true), root + "/ckpt/a");                   // symlink inside is fine
  // Read-only roots can be read, not written.
  EXPECT_THROW(g.check_path(dir.path + "/datasets/train.bin", true), lt::UserError);
  // Relative paths are taken from the working directory.
  fs::path cwd = fs::current_path();
  fs::current_path(root);
  EXPECT_EQ(g.check_path("ckpt/x", true), root + "/ckpt/x");
  EXPECT_THROW(g.check_path("../other/secret", false), lt::UserError);
  fs::current_path(cwd);
  try {
    g.check_path(root + "/link/secret", false);
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("(really " + dir.path + "/other/secret)"), std::string::npos) << e.what();
  }
}

TEST_F(Storage, ByteQuota) {
  LeaseGuard g = guard("1000");
  std::ofstream(dir.path + "/acme/ckpt/a.bin") << std::string(600, 'x');
  std::ofstream(dir.path + "/datasets/big.bin") << std::string(5000, 'x');  // read-only roots do not count
  EXPECT_EQ(g.bytes_used(), 600u);
  EXPECT_NO_THROW(g.reserve_bytes(400));
  EXPECT_THROW(g.reserve_bytes(401), lt::UserError);
  fs::remove(dir.path + "/acme/ckpt/a.bin");  // the trainer removed an old checkpoint
  EXPECT_NO_THROW(g.reserve_bytes(1000));
}

// ---- device UUIDs --------------------------------------------------------------------------

TEST(Devices, UuidCheckWithAFakeDeviceList) {
  Manifest m = load_manifest(kManifest);
  LeaseGuard pinned(m, "acme-2024", "node01", {A1});
  EXPECT_NO_THROW(pinned.check_devices({A1}));
  EXPECT_NO_THROW(pinned.check_devices({"GPU-11111111-0000-4000-8000-000000000001"}));
  EXPECT_NO_THROW(pinned.check_devices({"gpu-11111111-0000-4000-8000-000000000001"}));
  EXPECT_THROW(pinned.check_devices({A0}), lt::UserError);       // the lease's, but another rank's
  EXPECT_THROW(pinned.check_devices({B2}), lt::UserError);       // the other tenant's
  EXPECT_THROW(pinned.check_devices({A1, A0}), lt::UserError);   // one too many visible
  EXPECT_THROW(pinned.check_devices({}), lt::UserError);         // the device vanished
  EXPECT_THROW(pinned.check_devices({A1, A1}), lt::UserError);
  EXPECT_THROW(pinned.check_devices({"GPU-1234"}), lt::UserError);
  LeaseGuard any(m, "acme-2024", "node01", {});
  EXPECT_NO_THROW(any.check_devices({A0, A1}));
  EXPECT_THROW(any.check_devices({A0, B2}), lt::UserError);
  // MIG: CUDA's uuid bytes formatted with either prefix match the slice.
  LeaseGuard mig(m, "globex-2024", "node02", {BMIG});
  const unsigned char bytes[16] = {0x22, 0x22, 0x22, 0x22, 0x33, 0x33, 0x40, 0x00,
                                   0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  EXPECT_EQ(format_device_uuid(bytes, true), BMIG);
  EXPECT_NO_THROW(mig.check_devices({format_device_uuid(bytes)}));
  EXPECT_THROW(mig.check_devices({"MIG-22222222-3333-4000-8000-000000000001"}), lt::UserError);  // unleased slice
}

// ---- /dev probing --------------------------------------------------------------------------

// A fake /dev: nodes that "open" are regular files; fenced ones are dangling symlinks, which
// fail to open even for root.
class Probe : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dev + "/nvidia-caps");
    fs::create_directories(proc + "/driver/nvidia-caps");
    std::ofstream(dev + "/nvidiactl") << "";
    std::ofstream(dev + "/nvidia-uvm") << "";
    std::ofstream(proc + "/driver/nvidia-caps/mig-minors")
        << "config 1\nmonitor 2\ngpu3/gi1/access 30\ngpu3/gi1/ci0/access 31\ngpu3/gi2/access 40\ngpu3/gi2/ci0/access 41\n";
  }
  void node(const std::string& name, bool opens) {
    std::string p = dev + "/" + name;
    if (opens) std::ofstream(p) << "";
    else fs::create_symlink("/nonexistent/fenced", p);
  }
  // The driver's /proc information file for the GPU at `bus`, `head` lines first.
  void gpu_info(const std::string& bus, const std::string& uuid, int minor, const std::string& head = "") {
    fs::create_directories(proc + "/driver/nvidia/gpus/" + bus);
    std::ofstream(proc + "/driver/nvidia/gpus/" + bus + "/information")
        << head << "GPU UUID: \t " << uuid << "\nBus Location: \t " << bus << "\nDevice Minor: \t " << minor << "\n";
  }
  CanonicalDir dir;
  std::string dev = dir.path + "/dev", proc = dir.path + "/proc";
};

TEST_F(Probe, FencedNodeIsIsolated) {
  Manifest m = load_manifest(kManifest);
  LeaseGuard g(m, "acme-2024", "node01", {});
  node("nvidia0", true);
  node("nvidia1", true);
  node("nvidia2", false);
  node("nvidia3", false);
  EXPECT_TRUE(g.probe_device_nodes(dev, proc).empty());
  EXPECT_EQ(g.enforce_isolation(dev, proc), "");
}

TEST_F(Probe, UnfencedNodeIsRefusedOrWarned) {
  Manifest m = load_manifest(kManifest);
  for (int i = 0; i < 4; ++i) node("nvidia" + std::to_string(i), true);
  LeaseGuard acme(m, "acme-2024", "node01", {});
  auto open = acme.probe_device_nodes(dev, proc);
  ASSERT_EQ(open.size(), 2u);
  EXPECT_EQ(open[0], dev + "/nvidia2");
  EXPECT_EQ(open[1], dev + "/nvidia3");
  EXPECT_THROW(acme.enforce_isolation(dev, proc), lt::UserError);  // acme: device_probe = refuse
  LeaseGuard globex(m, "globex-2024", "node01", {});
  EXPECT_NE(globex.enforce_isolation(dev, proc).find("nvidia0"), std::string::npos);  // globex: warn
}

TEST_F(Probe, MigCapsOfOtherSlices) {
  Manifest m = load_manifest(kManifest);
  node("nvidia2", true);  // globex holds GPU 2 of node02 whole
  node("nvidia3", true);  // and a slice of GPU 3, so it needs /dev/nvidia3 too
  node("nvidia0", false);
  node("nvidia1", false);
  for (const char* cap : {"nvidia-cap30", "nvidia-cap31"}) node(std::string("nvidia-caps/") + cap, true);
  node("nvidia-caps/nvidia-cap40", false);
  node("nvidia-caps/nvidia-cap41", false);
  LeaseGuard g(m, "globex-2024", "node02", {});
  EXPECT_TRUE(g.probe_device_nodes(dev, proc).empty());
  std::ofstream(dev + "/nvidia-caps/nvidia-cap1") << "";  // the MIG config capability opens: not fenced
  fs::remove(dev + "/nvidia-caps/nvidia-cap41");
  std::ofstream(dev + "/nvidia-caps/nvidia-cap41") << "";  // the other slice's compute instance opens
  auto open = g.probe_device_nodes(dev, proc);
  ASSERT_EQ(open.size(), 2u);
  EXPECT_EQ(open[0], dev + "/nvidia-caps/nvidia-cap1");
  EXPECT_EQ(open[1], dev + "/nvidia-caps/nvidia-cap41");
}

TEST_F(Probe, MinorsFromProcWhenTheManifestHasNone) {
  std::string t = read_file(kManifest);
  for (int i = 0; i < 4; ++i) {
    std::string key = "  minor = " + std::to_string(i) + "\n";
    size_t pos;
    while ((pos = t.find(key)) != std::string::npos) t.erase(pos, key.size());
  }
  Manifest m = parse_manifest(t, "m.toml");
  LeaseGuard g(m, "acme-2024", "node01", {});
  node("nvidia5", true);
  node("nvidia6", true);
  EXPECT_THROW(g.probe_device_nodes(dev, proc), lt::UserError);  // no way to tell which is ours
  const char* buses[] = {"0000:17:00.0", "0000:2a:00.0"};
  for (int i = 0; i < 2; ++i) gpu_info(buses[i], "GPU-x", 5 + i, "Model: \t\t Fake\n");
  EXPECT_TRUE(g.probe_device_nodes(dev, proc).empty());
  node("nvidia7", true);
  EXPECT_EQ(g.probe_device_nodes(dev, proc), std::vector<std::string>{dev + "/nvidia7"});
}

TEST_F(Probe, LocalLeaseKeepsOnlyOpenableGpus) {
  const char* buses[] = {"0000:17:00.0", "0000:2a:00.0"};
  for (int i = 0; i < 2; ++i) gpu_info(buses[i], "GPU-11111111-0000-4000-8000-00000000000" + std::to_string(i), i);
  node("nvidia0", true);
  node("nvidia1", false);  // a container that was given only GPU 0
  Manifest m = local_default_manifest(1, proc, dev);
  ASSERT_EQ(m.nodes[0].gpus.size(), 1u);
  EXPECT_EQ(m.leases[0].alloc[0].gpus, std::vector<std::string>{A0});
  Manifest cpu = local_default_manifest(3, dir.path + "/none", dev);
  EXPECT_EQ(cpu.leases[0].alloc[0].cpu_ranks, 3);
}

// ---- P_Key index on the rank's own node ---------------------------------------------------

TEST(RankEnv, ResolvesThePkeyIndexOnThisNode) {
  Manifest m = load_manifest(kManifest);
  LeaseGuard g(m, "globex-2024", "node01", {});
  ::setenv("LEASETRAIN_IB_PKEY", "0x8002", 1);
  ::setenv("NCCL_IB_HCA", "=mlx5_1:1", 1);
  ::setenv("NCCL_IB_PKEY", "0", 1);  // what a launch node with a different table guessed
  std::string note = g.apply_rank_env(kFixtures + "/sysfs");
  EXPECT_STREQ(std::getenv("NCCL_IB_PKEY"), "3");
  EXPECT_NE(note.find("index 3"), std::string::npos);
  ::setenv("NCCL_IB_HCA", "=mlx5_9:1", 1);
  EXPECT_THROW(g.apply_rank_env(kFixtures + "/sysfs"), lt::UserError);  // HCA missing here
  ::unsetenv("LEASETRAIN_IB_PKEY");
  ::unsetenv("NCCL_IB_HCA");
  ::unsetenv("NCCL_IB_PKEY");
  EXPECT_EQ(g.apply_rank_env(kFixtures + "/sysfs"), "");  // no IB: nothing to do
}

// ---- construction from the launcher's variables ---------------------------------------------

TEST(FromVars, ChecksWhatTheLauncherClaims) {
  if (fs::exists("/etc/leasetrain/operator.pub")) GTEST_SKIP() << "this node requires signed manifests";
  ::unsetenv("LEASETRAIN_OPERATOR_KEY");
  EnvMap v = {{"LEASETRAIN_MANIFEST", kManifest}, {"LEASETRAIN_LEASE", "acme-2024"}, {"LEASETRAIN_NODE", "node01"},
              {"LEASETRAIN_RANK_DEVICES", A0},   {"LEASETRAIN_STORAGE_ROOT", "/srv/tenants/acme"}};
  LeaseGuard g = LeaseGuard::from_vars(v, "node01.cluster.example");  // short names match
  EXPECT_EQ(g.lease().id, "acme-2024");
  EXPECT_EQ(g.storage_root(), "/srv/tenants/acme");
  EXPECT_THROW(LeaseGuard::from_vars(v, "node02"), lt::UserError);  // placed elsewhere
  EnvMap bad = v;
  bad["LEASETRAIN_STORAGE_ROOT"] = "/srv/tenants/globex";
  EXPECT_THROW(LeaseGuard::from_vars(bad, "node01"), lt::UserError);
  bad = v;
  bad["LEASETRAIN_RANK_DEVICES"] = B2;
  EXPECT_THROW(LeaseGuard::from_vars(bad, "node01"), lt::UserError);
  bad = v;
  bad.erase("LEASETRAIN_LEASE");
  EXPECT_THROW(LeaseGuard::from_vars(bad, "node01"), lt::UserError);
  // No manifest: the local lease, which restricts no path.
  LeaseGuard local = LeaseGuard::from_vars({}, "anything");
  EXPECT_TRUE(local.local());
  EXPECT_NO_THROW(local.check_start());
  EXPECT_EQ(local.check_path("/etc/hostname", false), fs::canonical("/etc/hostname").string());
  EXPECT_NO_THROW(local.reserve_bytes(1ull << 40));
}

TEST(FromVars, RecordsRuntimeInTheJobDir) {
  if (fs::exists("/etc/leasetrain/operator.pub")) GTEST_SKIP() << "this node requires signed manifests";
  CanonicalDir dir;
  EnvMap v = {{"LEASETRAIN_MANIFEST", kManifest}, {"LEASETRAIN_LEASE", "acme-2024"}, {"LEASETRAIN_NODE", "node01"},
              {"LEASETRAIN_JOB_DIR", dir.path}};
  LeaseGuard g = LeaseGuard::from_vars(v, "node01", fixed("2025-01-01T00:00:00Z"));
  g.record_runtime(1, {A1}, "2.21.5", "12.4");
  auto j = nlohmann::json::parse(read_file(dir.path + "/rank-1.json"));
  EXPECT_EQ(j["devices"][0], A1);
  EXPECT_EQ(j["nccl_version"], "2.21.5");
  EXPECT_EQ(j["host"], "node01");
  EXPECT_EQ(j["start"], "2025-01-01T00:00:00Z");
}

}  // namespace

namespace {

// A rank's record goes through the one write resolver: beneath LEASETRAIN_WRITE_ROOTS, with no
// symbolic link followed, so a job directory linked elsewhere is refused and nothing lands there.
TEST(FromVars, RankRecordNeverFollowsALinkOutOfTheStorageRoot) {
  if (fs::exists("/etc/leasetrain/operator.pub")) GTEST_SKIP() << "this node requires signed manifests";
  CanonicalDir root, elsewhere;
  fs::create_directories(root.path + "/jobs");
  fs::create_symlink(elsewhere.path, root.path + "/jobs/j1");
  ::setenv("LEASETRAIN_WRITE_ROOTS", root.path.c_str(), 1);
  EnvMap v = {{"LEASETRAIN_MANIFEST", kManifest}, {"LEASETRAIN_LEASE", "acme-2024"}, {"LEASETRAIN_NODE", "node01"},
              {"LEASETRAIN_JOB_DIR", root.path + "/jobs/j1"}};
  LeaseGuard g = LeaseGuard::from_vars(v, "node01", fixed("2025-01-01T00:00:00Z"));
  EXPECT_THROW(g.record_runtime(0, {A1}, "2.21.5", "12.4"), lt::UserError);
  EXPECT_FALSE(fs::exists(elsewhere.path + "/rank-0.json"));
  // The same job directory as a real directory beneath the root is written.
  fs::remove(root.path + "/jobs/j1");
  fs::create_directory(root.path + "/jobs/j1");
  g.record_runtime(0, {A1}, "2.21.5", "12.4");
  EXPECT_TRUE(fs::exists(root.path + "/jobs/j1/rank-0.json"));
  ::unsetenv("LEASETRAIN_WRITE_ROOTS");
}

}  // namespace
