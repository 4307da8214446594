// Two tenants, two "nodes", one network partition each: a job started by `leasetrain launch`
// keeps its MPI bootstrap (OpenMPI's oob) and its MPI traffic (btl tcp, the gradient
// all-reduce) on the interface its lease names, and sends not one byte over the other
// tenant's. Plain mpirun, without the lease's interface restriction, spreads over both.
//
// The cluster is tests/mpi/netns.h's: two network namespaces joined by the veth pairs `pa`
// (tenant A's partition) and `pb` (tenant B's). Byte counters come from
// /sys/class/net/<if>/statistics.
//
// Needs root, `ip netns`, unshare and mpirun; skips with the reason otherwise.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <regex>
#include <thread>

#include "tests/mpi/dp_job.h"
#include "tests/mpi/netns.h"

namespace lt::test {
namespace {

namespace fs = std::filesystem;

// Bytes sent and received on each interface of each node.
struct Counters {
  uint64_t tx[2][2] = {}, rx[2][2] = {};  // [node][interface]
  bool operator==(const Counters& o) const {
    for (int n = 0; n < 2; ++n)
      for (int k = 0; k < 2; ++k)
        if (tx[n][k] != o.tx[n][k] || rx[n][k] != o.rx[n][k]) return false;
    return true;
  }
  Counters operator-(const Counters& o) const {
    Counters d;
    for (int n = 0; n < 2; ++n)
      for (int k = 0; k < 2; ++k) d.tx[n][k] = tx[n][k] - o.tx[n][k], d.rx[n][k] = rx[n][k] - o.rx[n][k];
    return d;
  }
  // Every byte counted on interface k, on either node, in either direction.
  uint64_t total(int k) const { return tx[0][k] + rx[0][k] + tx[1][k] + rx[1][k]; }
  std::string str() const {
    std::string s;
    for (int n = 0; n < 2; ++n)
      for (int k = 0; k < 2; ++k)
        s += "node" + std::to_string(n) + "/" + kIfs[k] + " tx " + std::to_string(tx[n][k]) + " rx " +
             std::to_string(rx[n][k]) + (n == 1 && k == 1 ? "" : "; ");
    return s;
  }
};

Counters read_counters(const TwoNodes& c) {
  Counters out;
  for (int n = 0; n < 2; ++n) {
    std::string files;
    for (const char* ifn : kIfs)
      for (const char* dir : {"tx", "rx"})
        files += std::string(" /sys/class/net/") + ifn + "/statistics/" + dir + "_bytes";
    RunResult r = run_sh("ip netns exec " + c.ns[n] + " cat" + files);
    EXPECT_EQ(r.code, 0) << r.err;
    std::istringstream in(r.out);
    for (int k = 0; k < 2; ++k) in >> out.tx[n][k] >> out.rx[n][k];
  }
  return out;
}

// The counters once nothing moves (the previous job's last segments are through).
Counters quiet_counters(const TwoNodes& c) {
  Counters a = read_counters(c);
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Counters b = read_counters(c);
    if (b == a) return b;
    a = b;
  }
  return a;
}

// The addresses the daemon on node 1 is told to call mpirun back on: from its command line's
// `..._uri "<jobid>;tcp://ADDR[,ADDR...]:PORT"` arguments (orte_hnp_uri, orte_parent_uri).
std::vector<std::string> callback_uris(const std::string& ssh_log) {
  static const std::regex uri("_uri \"[^\";]*;tcp://([0-9.,]+):[0-9]+\"");
  std::vector<std::string> out;
  for (auto it = std::sregex_iterator(ssh_log.begin(), ssh_log.end(), uri); it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1]);
  return out;
}

class NetnsTenants : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = netns_why_not_runnable(); !why.empty()) GTEST_SKIP() << why;
    nodes_ = std::make_unique<TwoNodes>();
    if (!nodes_->error.empty()) GTEST_SKIP() << nodes_->error;
    // OpenMPI starts its daemon on another node with `ssh [options] HOST COMMAND`.
    shim_log_ = dir_ / "ssh.log";
    path_ = write_netns_ssh(dir_ / "bin", shim_log_);

    // The manifest: both nodes hold both NICs; tenant A's lease uses pa, tenant B's pb.
    std::vector<NetnsLease> leases;
    for (int t = 0; t < 2; ++t) {
      const std::string id = t == 0 ? "a" : "b", root = dir_ / ("tenant-" + id);
      fs::create_directories(root);
      write_corpus_shards(root);
      configs_[t] = dp_write_config(root, "job", DpJobSpec{.steps = 20});
      roots_[t] = root;
      leases.push_back({.id = "lease-" + id, .tenant = id, .root = root, .cpu_ranks = 1, .nic = kIfs[t]});
    }
    manifest_ = dir_ / "manifest.toml";
    write_file(manifest_, netns_manifest(*nodes_, leases));
  }

  // Runs `cmd` on node 0 (where mpirun starts) and returns its result and the bytes it moved.
  struct Job {
    RunResult r;
    Counters moved;
    std::string ssh_log;  // the commands OpenMPI sent to node 1
    double seconds = 0;
  };
  Job run_on_node0(const std::string& cmd) {
    write_file(shim_log_, "");
    const Counters before = quiet_counters(*nodes_);
    const auto t0 = std::chrono::steady_clock::now();
    Job j;
    j.r = run_sh(nodes_->on_node(0, "timeout -k 5 60 " + cmd), "", {{"PATH", path_}});
    j.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    j.moved = quiet_counters(*nodes_) - before;
    j.ssh_log = read_file(shim_log_);
    return j;
  }

  Job launch(int tenant) {
    const std::string id = tenant == 0 ? "a" : "b";
    return run_on_node0(std::string(LT_CLI) + " launch --manifest " + manifest_ + " --lease lease-" + id +
                        " --np 2 -- train --config " + configs_[tenant] + " --out " + roots_[tenant] + "/run");
  }

  TempDir dir_;
  std::unique_ptr<TwoNodes> nodes_;
  std::string shim_log_, path_, manifest_, configs_[2], roots_[2];
};

// The all-reduce of 20 steps of a 0.03M-parameter model (0.14 MB of gradients, one bucket):
// about 2.8 MB each way between the two ranks.
constexpr uint64_t kJobBytes = 1'000'000;

TEST_F(NetnsTenants, EachTenantsJobStaysOnItsOwnInterface) {
  for (int t = 0; t < 2; ++t) {
    SCOPED_TRACE(std::string("tenant ") + (t == 0 ? "A on pa" : "B on pb"));
    const int own = t, other = 1 - t;
    Job j = launch(t);
    ASSERT_EQ(j.r.code, 0) << j.r.both();
    EXPECT_NE(j.r.out.find("dist: 2 ranks"), std::string::npos) << j.r.out;
    EXPECT_NE(j.r.out.find("step 20/20"), std::string::npos) << j.r.out;
    // The second rank ran on the other node, reached through its network.
    ASSERT_EQ(j.ssh_log.rfind(nodes_->ns[1] + " ", 0), 0u) << j.ssh_log;
    // Bootstrap: the daemon on node 1 is told to call back on this tenant's address only.
    const std::vector<std::string> uris = callback_uris(j.ssh_log);
    ASSERT_FALSE(uris.empty()) << j.ssh_log;
    for (const std::string& uri : uris) EXPECT_EQ(uri, std::string(kNets[own]) + "1") << j.ssh_log;
    // Traffic: megabytes over its own interface in both directions, nothing over the other.
    for (int n = 0; n < 2; ++n) {
      EXPECT_GT(j.moved.tx[n][own], kJobBytes) << j.moved.str();
      EXPECT_GT(j.moved.rx[n][own], kJobBytes) << j.moved.str();
    }
    EXPECT_EQ(j.moved.total(other), 0u) << j.moved.str();
    std::printf("tenant %s: %.1f s; %s\n", t == 0 ? "A (pa)" : "B (pb)", j.seconds, j.moved.str().c_str());
  }
}

// The control: the same two nodes and training job under plain mpirun, which is told no
// interface. OpenMPI then offers its daemon both addresses and stripes the all-reduce's large
// messages over every TCP interface, so the other partition carries a share of it.
TEST_F(NetnsTenants, PlainMpirunUsesBothPartitions) {
  write_file(dir_ / "hostfile", nodes_->ns[0] + " slots=1\n" + nodes_->ns[1] + " slots=1\n");
  Job j = run_on_node0("mpirun --allow-run-as-root --hostfile " + (dir_ / "hostfile") +
                       " -np 2 --bind-to none -x PATH -x OMP_NUM_THREADS=1 " + LT_CLI + " train --config " +
                       configs_[0] + " --out " + roots_[0] + "/plain");
  ASSERT_EQ(j.r.code, 0) << j.r.both();
  EXPECT_NE(j.r.out.find("dist: 2 ranks"), std::string::npos) << j.r.out;
  ASSERT_EQ(j.ssh_log.rfind(nodes_->ns[1] + " ", 0), 0u) << j.ssh_log;
  const std::vector<std::string> uris = callback_uris(j.ssh_log);
  ASSERT_FALSE(uris.empty()) << j.ssh_log;
  for (const char* net : kNets) EXPECT_NE(uris[0].find(std::string(net) + "1"), std::string::npos) << j.ssh_log;
  EXPECT_GT(j.moved.total(0), kJobBytes / 4) << j.moved.str();
  EXPECT_GT(j.moved.total(1), kJobBytes / 4) << j.moved.str();
  std::printf("plain mpirun: %.1f s; %s\n", j.seconds, j.moved.str().c_str());
}

}  // namespace
}  // namespace lt::test
