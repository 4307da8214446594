// Lease manifest parsing and validation: every rule with a good and a bad case, errors that
// name the file, line and field path; the operator signature; time handling.
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "lease/manifest.h"
#include "lease/manifest_sign.h"
#include "runtime/error.h"
#include "tests/lease_fixtures.h"
#include "tests/util.h"

namespace fs = std::filesystem;
using namespace lt::lease;
using namespace lt::test;

namespace {

// Runs `leasetrain ARGS` and expects exit code `code` and `says` in what it prints (on either stream).
RunResult expect_cli(const std::string& args, int code, const std::string& says) {
  RunResult r = run_cli(args);
  EXPECT_EQ(r.code, code) << args << ": " << r.both();
  EXPECT_NE(r.both().find(says), std::string::npos) << args << ": " << r.both();
  return r;
}

struct Case {
  const char* name;
  const char* from;  // text of the good manifest to replace ("" = append `to`)
  const char* to;
  const char* error;  // substring of the error; nullptr = still valid
};

// The acme lease is lease[0], globex lease[1]; node01 is node[0].
const Case kCases[] = {
    {"good", "", "", nullptr},
    {"unknown key", "  gpu_hours = 10000\n", "  gpu_hours = 10000\n  gpu_hour = 10000\n", "lease[0].quota.gpu_hour: unknown key"},
    {"missing operator", "[operator]\nid = \"dc-east\"\n", "[operatorx]\nid = \"dc-east\"\n", "operator: missing"},
    {"duplicate node", "hostname = \"node02\"", "hostname = \"node01\"", "node[1].hostname: duplicate node"},
    {"short gpu uuid", "uuid = \"GPU-11111111-0000-4000-8000-000000000000\"",
     "uuid = \"GPU-11111111-0000-4000-8000-00000000000\"", "node[0].gpu[0].uuid: expected a full GPU UUID"},
    {"gpu uuid without prefix", "uuid = \"GPU-11111111-0000-4000-8000-000000000000\"",
     "uuid = \"11111111-0000-4000-8000-000000000000\"", "node[0].gpu[0].uuid"},
    {"non-hex uuid", "uuid = \"GPU-11111111-0000-4000-8000-000000000000\"",
     "uuid = \"GPU-1111111g-0000-4000-8000-000000000000\"", "node[0].gpu[0].uuid"},
    {"duplicate gpu uuid", "uuid = \"GPU-11111111-0000-4000-8000-000000000001\"",
     "uuid = \"GPU-11111111-0000-4000-8000-000000000000\"", "node[0].gpu[1].uuid: 'GPU-11111111-0000-4000-8000-000000000000' is already declared"},
    {"old mig form", "uuid = \"MIG-22222222-3333-4000-8000-000000000000\"",
     "uuid = \"MIG-GPU-22222222-0000-4000-8000-000000000003/1/0\"", "node[1].mig[0].uuid: the old MIG-GPU-"},
    {"mig parent unknown", "parent = \"GPU-22222222-0000-4000-8000-000000000003\"\n  profile = \"3g.40gb\"\n  gi = 1",
     "parent = \"GPU-11111111-0000-4000-8000-000000000003\"\n  profile = \"3g.40gb\"\n  gi = 1",
     "node[1].mig[0].parent: 'GPU-11111111-0000-4000-8000-000000000003' is not a GPU of node node02"},
    {"bad pci bus id", "pci_bus_id = \"0000:17:00.0\"\n  numa = 0", "pci_bus_id = \"17:00.0\"\n  numa = 0",
     "node[0].gpu[0].pci_bus_id: expected a PCI bus id"},
    {"unknown tenant", "tenant = \"acme\"", "tenant = \"acne\"", "lease[0].tenant: 'acne' is not a declared tenant"},
    {"unknown node", "node = \"node01\"\n  gpus = [\"GPU-11111111-0000-4000-8000-000000000000\"",
     "node = \"node09\"\n  gpus = [\"GPU-11111111-0000-4000-8000-000000000000\"", "lease[0].alloc[0].node: 'node09' is not a declared node"},
    {"gpu of another node", "gpus = [\"GPU-11111111-0000-4000-8000-000000000000\", \"GPU-11111111-0000-4000-8000-000000000001\"]",
     "gpus = [\"GPU-11111111-0000-4000-8000-000000000000\", \"GPU-22222222-0000-4000-8000-000000000001\"]",
     "lease[0].alloc[0].gpus[1]: 'GPU-22222222-0000-4000-8000-000000000001' is not a GPU of node node01"},
    {"gpu listed twice", "gpus = [\"GPU-11111111-0000-4000-8000-000000000000\", \"GPU-11111111-0000-4000-8000-000000000001\"]",
     "gpus = [\"GPU-11111111-0000-4000-8000-000000000000\", \"GPU-11111111-0000-4000-8000-000000000000\"]",
     "lease[0].alloc[0].gpus[1]: 'GPU-11111111-0000-4000-8000-000000000000' is listed twice"},
    {"gpu in two overlapping leases",
     "gpus = [\"GPU-11111111-0000-4000-8000-000000000002\", \"GPU-11111111-0000-4000-8000-000000000003\"]",
     "gpus = [\"GPU-11111111-0000-4000-8000-000000000001\", \"GPU-11111111-0000-4000-8000-000000000003\"]",
     "lease[1].alloc[0].gpus[0]: GPU-11111111-0000-4000-8000-000000000001 is also leased by acme-2024"},
    {"same gpu, windows apart (valid)",
     "gpus = [\"GPU-11111111-0000-4000-8000-000000000002\", \"GPU-11111111-0000-4000-8000-000000000003\"]",
     "gpus = [\"GPU-11111111-0000-4000-8000-000000000001\", \"GPU-11111111-0000-4000-8000-000000000003\"]\n"
     "  # moved below",
     nullptr},  // (windows adjusted in the test body)
    {"whole gpu and its slice", "gpus = [\"GPU-22222222-0000-4000-8000-000000000000\", \"GPU-22222222-0000-4000-8000-000000000001\"]",
     "gpus = [\"GPU-22222222-0000-4000-8000-000000000000\", \"GPU-22222222-0000-4000-8000-000000000003\"]",
     "lease[1].alloc[1].mig[0]: MIG-22222222-3333-4000-8000-000000000000 is a slice of GPU-22222222-0000-4000-8000-000000000003, which acme-2024 leases whole"},
    {"mig slice in two leases", "gpus = [\"GPU-22222222-0000-4000-8000-000000000000\", \"GPU-22222222-0000-4000-8000-000000000001\"]",
     "gpus = [\"GPU-22222222-0000-4000-8000-000000000000\", \"GPU-22222222-0000-4000-8000-000000000001\"]\n"
     "  mig = [\"MIG-22222222-3333-4000-8000-000000000000\"]",
     "lease[1].alloc[1].mig[0]: MIG-22222222-3333-4000-8000-000000000000 is also leased by acme-2024"},
    {"gpu and own slice in one lease", "  gpus = [\"GPU-22222222-0000-4000-8000-000000000002\"]\n",
     "  gpus = [\"GPU-22222222-0000-4000-8000-000000000002\", \"GPU-22222222-0000-4000-8000-000000000003\"]\n",
     "lease[1].alloc[1].mig[0]: slice of GPU-22222222-0000-4000-8000-000000000003, which this lease also holds whole"},
    {"window order", "not_after = 2099-01-01T00:00:00Z\ngrace_seconds = 900", "not_after = 2023-01-01T00:00:00Z\ngrace_seconds = 900",
     "lease[1].not_after: 2023-01-01T00:00:00Z must be after not_before"},
    {"local date-time", "not_before = 2024-01-01T00:00:00Z\nnot_after = 2099-01-01T00:00:00Z\ngrace_seconds = 600",
     "not_before = 2024-01-01T00:00:00\nnot_after = 2099-01-01T00:00:00Z\ngrace_seconds = 600", "lease[0].not_before: a local date-time is ambiguous"},
    {"offset date-time (valid)", "not_before = 2024-01-01T00:00:00Z\nnot_after = 2099-01-01T00:00:00Z\ngrace_seconds = 600",
     "not_before = 2024-01-01T02:00:00+02:00\nnot_after = 2099-01-01T00:00:00Z\ngrace_seconds = 600", nullptr},
    {"grace eats the window", "not_after = 2099-01-01T00:00:00Z\ngrace_seconds = 600",
     "not_after = 2024-01-01T00:05:00Z\ngrace_seconds = 600", "lease[0].grace_seconds: 600 s leaves no time to train"},
    {"max_ranks zero", "  max_ranks = 4\n  gpu_hours = 10000", "  max_ranks = 0\n  gpu_hours = 10000", "lease[0].quota.max_ranks: must be positive"},
    {"gpu_hours negative", "gpu_hours = 10000", "gpu_hours = -1", "lease[0].quota.gpu_hours: must be positive"},
    {"storage zero", "storage_bytes = 500000000000", "storage_bytes = 0", "lease[1].quota.storage_bytes: must be positive"},
    {"storage unit unknown", "storage_bytes = \"2TiB\"", "storage_bytes = \"2XB\"", "lease[0].quota.storage_bytes: expected a byte count"},
    {"quota missing", "  [lease.quota]\n  max_ranks = 4\n  gpu_hours = 10000\n  storage_bytes = \"2TiB\"\n", "",
     "lease[0].quota: missing"},
    {"relative storage root", "storage_roots = [\"/srv/tenants/acme\"]", "storage_roots = [\"srv/tenants/acme\"]",
     "lease[0].storage_roots: entry 0 'srv/tenants/acme' must be an absolute path"},
    {"storage root with ..", "storage_roots = [\"/srv/tenants/acme\"]", "storage_roots = [\"/srv/tenants/../acme\"]",
     "lease[0].storage_roots"},
    {"allow NCCL_COMM_ID", "allow_env = [\"NCCL_ALGO\", \"NCCL_PROTO\"]", "allow_env = [\"NCCL_ALGO\", \"NCCL_COMM_ID\"]",
     "lease[0].policy.allow_env[1]: NCCL_COMM_ID makes NCCL use a fixed connection magic"},
    {"allow lease-controlled var", "allow_env = [\"NCCL_ALGO\", \"NCCL_PROTO\"]", "allow_env = [\"CUDA_VISIBLE_DEVICES\"]",
     "lease[0].policy.allow_env[0]: CUDA_VISIBLE_DEVICES is set from the lease"},
    {"allow everything", "allow_env = [\"NCCL_ALGO\", \"NCCL_PROTO\"]", "allow_env = [\"*\"]", "lease[0].policy.allow_env[0]: expected a variable name"},
    {"probe policy unknown", "device_probe = \"warn\"", "device_probe = \"ignore\"", "lease[1].policy.device_probe: expected \"refuse\" or \"warn\""},
    {"default partition", "pkey = 0x8001", "pkey = 0xffff", "partition[0].pkey: the default partition"},
    {"same key twice", "pkey = 0x8002", "pkey = 0x0001", "partition[1].pkey: same P_Key as partition acme-ib"},
    {"partition shared by tenants", "  nics = [\"ib1\"]\n  partition = \"globex-ib\"\n  [[lease.alloc]]\n  node = \"node02\"\n  gpus = [\"GPU-22222222-0000-4000-8000-000000000002\"]",
     "  nics = [\"ib1\"]\n  partition = \"acme-ib\"\n  [[lease.alloc]]\n  node = \"node02\"\n  gpus = [\"GPU-22222222-0000-4000-8000-000000000002\"]",
     "lease[1].alloc[0].partition: partition acme-ib is also used by tenant acme"},
    {"nic shared by tenants", "  nics = [\"ib1\"]\n  partition = \"globex-ib\"\n  [[lease.alloc]]\n  node = \"node02\"\n  gpus = [\"GPU-22222222-0000-4000-8000-000000000002\"]",
     "  nics = [\"ib0\"]\n  partition = \"globex-ib\"\n  [[lease.alloc]]\n  node = \"node02\"\n  gpus = [\"GPU-22222222-0000-4000-8000-000000000002\"]",
     "lease[1].alloc[0].nics[0]: ib0 on node01 is also leased to tenant acme"},
    {"unknown nic", "  nics = [\"ib1\"]\n  partition = \"globex-ib\"\n  [[lease.alloc]]\n  node = \"node02\"\n  gpus = [\"GPU-22222222-0000-4000-8000-000000000002\"]",
     "  nics = [\"eth7\"]\n  partition = \"globex-ib\"\n  [[lease.alloc]]\n  node = \"node02\"\n  gpus = [\"GPU-22222222-0000-4000-8000-000000000002\"]",
     "lease[1].alloc[0].nics[0]: 'eth7' is not a NIC (netdev) of node node01"},
    {"ib nic without partition", "  nics = [\"ib0\"]\n  partition = \"acme-ib\"\n  [[lease.alloc]]\n  node = \"node02\"",
     "  nics = [\"ib0\"]\n  [[lease.alloc]]\n  node = \"node02\"", "lease[0].alloc[0].partition: missing: an InfiniBand/RoCE NIC needs"},
    {"multi-node without nic", "  nics = [\"ib0\"]\n  partition = \"acme-ib\"\n  [[lease.alloc]]\n  node = \"node02\"",
     "  [[lease.alloc]]\n  node = \"node02\"", "lease[0].alloc[0].nics: missing: lease acme-2024 spans 2 nodes"},
    {"empty allocation", "  gpus = [\"GPU-22222222-0000-4000-8000-000000000002\"]\n  mig = [\"MIG-22222222-3333-4000-8000-000000000000\"]\n", "",
     "lease[1].alloc[1]: allocates nothing"},
    {"pkey out of range", "pkey = 0x8001", "pkey = 0x18001", "partition[0].pkey: expected an integer in [0, 65535]"},
    {"syntax error", "[operator]", "[operator", "(syntax)"},
};

class ManifestRules : public ::testing::TestWithParam<Case> {};

TEST_P(ManifestRules, ValidatesWithFieldPath) {
  const Case& c = GetParam();
  std::string text = base();
  if (std::string(c.from).empty()) text += c.to;
  else text = replace_once(text, c.from, c.to);
  if (std::string(c.name) == "same gpu, windows apart (valid)")  // globex's lease then starts after acme's ends
    text = replace_once(text, "not_before = 2024-01-01T00:00:00Z\nnot_after = 2099-01-01T00:00:00Z\ngrace_seconds = 900",
                        "not_before = 2099-01-01T00:00:00Z\nnot_after = 2100-01-01T00:00:00Z\ngrace_seconds = 900");
  if (!c.error) {
    EXPECT_NO_THROW(parse_manifest(text, "m.toml")) << c.name;
    return;
  }
  try {
    parse_manifest(text, "m.toml");
    FAIL() << c.name << ": accepted";
  } catch (const lt::UserError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(c.error), std::string::npos) << c.name << ": " << msg;
    EXPECT_EQ(msg.rfind("m.toml", 0), 0u) << "errors start with the file: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "errors are one line: " << msg;
  }
}

INSTANTIATE_TEST_SUITE_P(Table, ManifestRules, ::testing::ValuesIn(kCases), [](const auto& info) {
  std::string n;
  for (char ch : std::string(info.param.name)) n += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  return n;
});

TEST(Manifest, ParsesTheSharedCluster) {
  Manifest m = load_manifest(kFixtures + "/shared-cluster.toml");
  ASSERT_EQ(m.nodes.size(), 2u);
  EXPECT_EQ(m.op.id, "dc-east");
  EXPECT_EQ(m.nodes[0].shm_bytes, 64ull << 30);
  EXPECT_EQ(m.nodes[1].mig.size(), 2u);
  EXPECT_EQ(m.nodes[1].mig[0].gi, 1);
  const Lease& a = m.lease("acme-2024");
  EXPECT_EQ(a.quota.storage_bytes, 2ull << 40);
  EXPECT_EQ(a.total_slots(), 4);
  EXPECT_EQ(a.grace_seconds, 600);
  EXPECT_EQ(format_time(a.deadline()), "2098-12-31T23:50:00Z");
  const Lease& g = m.lease("globex-2024");
  EXPECT_DOUBLE_EQ(g.quota.gpu_hours, 500.5);
  EXPECT_EQ(g.policy.probe, ProbePolicy::warn);
  EXPECT_EQ(g.alloc[1].slots(), 2);  // one GPU and one MIG slice
  EXPECT_EQ(m.find_partition("globex-ib")->pkey, 0x8002);
  EXPECT_EQ(m.sha256.size(), 64u);
  EXPECT_THROW(m.lease("nope"), lt::UserError);
}

TEST(Manifest, DocumentedExampleIsValid) {
  Manifest m = load_manifest(std::string(LT_SOURCE_DIR) + "/examples/manifest.toml");
  EXPECT_EQ(m.leases.size(), 2u);
  EXPECT_EQ(m.lease("lumen-2025-06").total_slots(), 6);
}

TEST(Manifest, ErrorsCarryTheLine) {
  std::string text = replace_once(base(), "tenant = \"acme\"", "tenant = \"acne\"");
  try {
    parse_manifest(text, "m.toml");
    FAIL();
  } catch (const lt::UserError& e) {
    // `tenant = "acne"` is on the line of the first [[lease]]'s tenant key.
    size_t line = 1;
    std::string prefix = text.substr(0, text.find("tenant = \"acne\""));
    for (char c : prefix) line += c == '\n';
    EXPECT_NE(std::string(e.what()).find("m.toml:" + std::to_string(line) + ": lease[0].tenant"), std::string::npos) << e.what();
  }
}

TEST(Manifest, UuidsAndTimes) {
  EXPECT_TRUE(is_gpu_uuid("GPU-8a1f6c2e-0b1d-4c3e-9f00-123456789abc"));
  EXPECT_FALSE(is_gpu_uuid("GPU-8a1f6c2e-0b1d-4c3e-9f00-123456789ab"));
  EXPECT_FALSE(is_gpu_uuid("MIG-8a1f6c2e-0b1d-4c3e-9f00-123456789abc"));
  EXPECT_TRUE(is_mig_uuid("MIG-8a1f6c2e-0b1d-4c3e-9f00-123456789abc"));
  EXPECT_EQ(uuid_key("GPU-8A1F6C2E-0b1d-4c3e-9f00-123456789abc"), "8a1f6c2e0b1d4c3e9f00123456789abc");
  EXPECT_EQ(uuid_key("MIG-8a1f6c2e-0b1d-4c3e-9f00-123456789abc"), uuid_key("GPU-8a1f6c2e-0b1d-4c3e-9f00-123456789abc"));
  EXPECT_EQ(format_time(parse_time("2025-06-01T12:34:56Z")), "2025-06-01T12:34:56Z");
  EXPECT_EQ(format_time(parse_time("2025-06-01T12:34:56+02:00")), "2025-06-01T10:34:56Z");
  EXPECT_EQ(format_time(parse_time("2025-06-01T00:00:00-01:30")), "2025-06-01T01:30:00Z");
  EXPECT_THROW(parse_time("2025-06-01 12:34:56"), lt::UserError);
  EXPECT_THROW(parse_time("2025-02-30T00:00:00Z"), lt::UserError);
  EXPECT_THROW(parse_time("2025-06-01T00:00:00"), lt::UserError);
}

TEST(Manifest, WindowChecks) {
  Manifest m = load_manifest(kFixtures + "/shared-cluster.toml");
  const Lease& l = m.lease("acme-2024");
  EXPECT_THROW(check_window(l, parse_time("2023-12-31T23:59:59Z")), lt::UserError);
  EXPECT_NO_THROW(check_window(l, parse_time("2024-01-01T00:00:00Z")));
  EXPECT_NO_THROW(check_window(l, parse_time("2098-12-31T23:49:59Z")));
  EXPECT_THROW(check_window(l, parse_time("2098-12-31T23:50:00Z")), lt::UserError);  // grace
  try {
    check_window(l, parse_time("2099-01-01T00:00:00Z"));
    FAIL();
  } catch (const lt::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("has expired"), std::string::npos);
  }
}

TEST(ManifestCli, BadFixturesExitTwoWithOneLine) {
  for (const char* f : {"bad-gpu-in-two-leases.toml", "bad-short-uuid.toml", "bad-whole-gpu-and-slice.toml",
                        "bad-window-order.toml"}) {
    RunResult r = expect_cli("manifest check " + kFixtures + "/" + f, 2, f);
    EXPECT_EQ(count_lines(r.both()), 1) << r.both();
  }
  expect_cli("plan --manifest " + kFixtures + "/bad-short-uuid.toml --lease acme-2024", 2, "node[1].gpu[1].uuid");
  RunResult r2 = run_cli("manifest check " + kFixtures + "/shared-cluster.toml");
  EXPECT_EQ(r2.code, 0) << r2.both();
}

// ---- operator signature ---------------------------------------------------------------------

class Signature : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!ed25519_available()) GTEST_SKIP() << "libsodium not loadable";
    if (fs::exists(kSystemOperatorKey)) GTEST_SKIP() << kSystemOperatorKey << " exists on this machine";
    ::unsetenv("LEASETRAIN_OPERATOR_KEY");
    manifest = dir / "m.toml";
    write_file(manifest, base());
    generate_keypair(dir / "op");
  }
  TempDir dir;
  std::string manifest;
};

TEST_F(Signature, SignedManifestVerifies) {
  sign_file(manifest, dir / "op.key");
  SignatureInfo info;
  Manifest m = load_verified_manifest(manifest, dir / "op.pub", &info);
  EXPECT_TRUE(info.verified);
  EXPECT_EQ(m.leases.size(), 2u);
  expect_cli("manifest check " + manifest + " --operator-key " + (dir / "op.pub"), 0, "signature verified");
}

TEST_F(Signature, TamperedManifestIsRefused) {
  sign_file(manifest, dir / "op.key");
  // A tenant widens its own quota after signing.
  write_file(manifest, replace_once(base(), "max_ranks = 4", "max_ranks = 8"));
  EXPECT_THROW(load_verified_manifest(manifest, dir / "op.pub"), lt::UserError);
  expect_cli("plan --manifest " + manifest + " --lease acme-2024 --operator-key " + (dir / "op.pub"), 2,
             "signature does not match");
}

TEST_F(Signature, OtherKeyIsRefused) {
  generate_keypair(dir / "tenant");
  sign_file(manifest, dir / "tenant.key");  // signed, but not by the operator
  EXPECT_THROW(load_verified_manifest(manifest, dir / "op.pub"), lt::UserError);
}

TEST_F(Signature, MissingSignatureOrKey) {
  EXPECT_THROW(load_verified_manifest(manifest, dir / "op.pub"), lt::UserError);  // key but no .sig
  SignatureInfo info;
  EXPECT_NO_THROW(load_verified_manifest(manifest, "", &info));  // neither: accepted, noted
  EXPECT_FALSE(info.verified);
  EXPECT_NE(info.note.find("unsigned"), std::string::npos);
  sign_file(manifest, dir / "op.key");
  EXPECT_THROW(load_verified_manifest(manifest, ""), lt::UserError);  // .sig but no key to check it
  write_file(manifest + ".sig", "not base64 !!\n");
  EXPECT_THROW(load_verified_manifest(manifest, dir / "op.pub"), lt::UserError);
}

TEST_F(Signature, InteroperatesWithOpenssl) {
  if (run_sh("openssl version").code != 0) GTEST_SKIP() << "no openssl CLI";
  const std::string key = dir / "ossl.key", pub = dir / "ossl.pub", sig = manifest + ".sig";
  ASSERT_EQ(run_sh("openssl genpkey -algorithm ed25519 -out " + key).code, 0);
  ASSERT_EQ(run_sh("openssl pkey -in " + key + " -pubout -out " + pub).code, 0);
  // Signed by openssl, verified by us.
  ASSERT_EQ(run_sh("openssl pkeyutl -sign -inkey " + key + " -rawin -in " + manifest + " | base64 -w0 > " + sig).code, 0);
  EXPECT_NO_THROW(load_verified_manifest(manifest, pub));
  // Signed by us with openssl's key, verified by openssl.
  sign_file(manifest, key);
  ASSERT_EQ(run_sh("base64 -d " + sig + " > " + sig + ".raw").code, 0);
  RunResult r = run_sh("openssl pkeyutl -verify -pubin -inkey " + pub + " -rawin -in " + manifest + " -sigfile " + sig + ".raw");
  EXPECT_EQ(r.code, 0) << r.both();
}

TEST(Base64, RoundTrips) {
  for (std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    std::string e = base64_encode(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    EXPECT_EQ(base64_decode(e), s);
  }
  EXPECT_EQ(base64_encode(reinterpret_cast<const uint8_t*>("foobar"), 6), "Zm9vYmFy");
  EXPECT_THROW(base64_decode("Zm9v*"), lt::UserError);
}

}  // namespace
