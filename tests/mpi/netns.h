// Two "nodes" for tests that start whole MPI jobs across hosts: two network namespaces, each
// with its own host name, connected by two veth pairs named `pa` (10.77.1.0/24) and `pb`
// (10.77.2.0/24), IPv6 off and static neighbour entries so that the kernel itself sends
// nothing. OpenMPI reaches the second node with `ssh HOST COMMAND`; the test's `ssh`, first on
// PATH, runs the command inside namespace HOST, and only while the caller's links have carrier:
// a node whose links are down cannot be reached, as over a real network. netns_manifest writes
// a manifest of the two nodes and leases of CPU ranks on them.
//
// Needs root, `ip netns`, unshare and mpirun (netns_why_not_runnable says which is missing).
#pragma once
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/util.h"

namespace lt::test {

inline constexpr const char* kIfs[2] = {"pa", "pb"};
inline constexpr const char* kNets[2] = {"10.77.1.", "10.77.2."};  // .1 on node 0, .2 on node 1

inline std::string utc(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&tt));
  return buf;
}

inline std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

inline const std::string kNetnsPrefix = "ltnet";  // namespaces are ltnet<pid>n0, ltnet<pid>n1

// Namespaces left by an earlier run of a test that was killed before its cleanup ran.
inline void remove_stale_namespaces() {
  RunResult r = run_sh("ip netns list");
  static const std::regex name("^" + kNetnsPrefix + "([0-9]+)n[01]\\b");
  std::istringstream in(r.out);
  std::string line;
  std::smatch m;
  while (std::getline(in, line))
    if (std::regex_search(line, m, name) && ::kill(pid_t(std::stol(m[1])), 0) != 0 && errno == ESRCH)
      run_sh("ip netns del " + m[0].str());
}

inline std::string netns_why_not_runnable() {
  if (::geteuid() != 0) return "needs root (network namespaces and veth pairs)";
  for (const char* tool : {"ip", "unshare", "mpirun"})
    if (run_sh(std::string("command -v ") + tool).code != 0)
      return std::string(tool) + " is not installed" + (tool[0] == 'i' ? " (Debian package iproute2)" : "");
  return "";
}

// Two nodes as network namespaces, joined by the veth pairs pa and pb. Removed on destruction.
struct TwoNodes {
  std::string ns[2];
  std::string error;  // why the cluster could not be made ("" when it was)
  bool created[2] = {false, false};

  TwoNodes() {
    for (int i = 0; i < 2; ++i) ns[i] = kNetnsPrefix + std::to_string(::getpid()) + "n" + std::to_string(i);
    remove_stale_namespaces();
    for (int i = 0; i < 2; ++i) {
      RunResult r = run_sh("ip netns add " + ns[i]);
      if (r.code != 0) {
        error = "`ip netns add` is not permitted here: " + trim(r.err);
        return;
      }
      created[i] = true;
      // IPv6 off before any interface arrives: no router solicitations, DAD or MLD reports.
      r = run_sh("ip netns exec " + ns[i] +
                 " sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && "
                 "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; ip link set lo up'");
      if (r.code != 0) {
        error = "cannot configure namespace " + ns[i] + ": " + trim(r.err);
        return;
      }
    }
    for (int k = 0; k < 2; ++k) {
      const std::string ifn = kIfs[k], net = kNets[k];
      RunResult r = run_sh("ip link add name " + ifn + " netns " + ns[0] + " type veth peer name " + ifn + " netns " +
                           ns[1] + " && ip -n " + ns[0] + " addr add " + net + "1/24 dev " + ifn + " && ip -n " +
                           ns[1] + " addr add " + net + "2/24 dev " + ifn + " && ip -n " + ns[0] + " link set " +
                           ifn + " up && ip -n " + ns[1] + " link set " + ifn + " up");
      if (r.code != 0) {
        error = "cannot make veth pair " + ifn + ": " + trim(r.err);
        return;
      }
      // Static neighbours: no ARP, so a job's packets are the only ones on the wire.
      std::string mac[2];
      for (int i = 0; i < 2; ++i)
        mac[i] = trim(run_sh("ip netns exec " + ns[i] + " cat /sys/class/net/" + ifn + "/address").out);
      r = run_sh("ip -n " + ns[0] + " neigh replace " + net + "2 lladdr " + mac[1] + " dev " + ifn +
                 " nud permanent && ip -n " + ns[1] + " neigh replace " + net + "1 lladdr " + mac[0] + " dev " +
                 ifn + " nud permanent");
      if (r.code != 0) {
        error = "cannot set neighbour entries on " + ifn + ": " + trim(r.err);
        return;
      }
    }
  }
  ~TwoNodes() {
    for (int i = 0; i < 2; ++i)
      if (created[i]) run_sh("ip netns del " + ns[i]);
  }
  TwoNodes(const TwoNodes&) = delete;
  TwoNodes& operator=(const TwoNodes&) = delete;

  // `cmd` (a shell command line) run on node i: in its namespace, with its host name.
  std::string on_node(int i, const std::string& cmd) const {
    return "ip netns exec " + ns[i] + " unshare --uts sh -c " +
           shell_quote("echo " + ns[i] + " > /proc/sys/kernel/hostname && exec " + cmd);
  }

  // Node i's ends of both links up or down. Down, the other node's ends lose carrier, and the
  // test's ssh no longer reaches node i.
  RunResult set_links(int i, bool up) const {
    std::string cmd;
    for (const char* ifn : kIfs)
      cmd += std::string(cmd.empty() ? "" : " && ") + "ip -n " + ns[i] + " link set " + ifn + (up ? " up" : " down");
    return run_sh(cmd);
  }
};

// Writes BIN_DIR/ssh, the cluster's ssh: `ssh [options] HOST COMMAND` runs COMMAND in namespace
// HOST with host name HOST, and appends "HOST COMMAND" to LOG. Like a real ssh it goes over the
// network: when none of the caller's links (pa, pb) has carrier, HOST cannot be reached, and it
// fails as ssh does (exit 255) instead of starting anything there; and the client stays on the
// caller's node, where the loss of the remote node does not end it. Returns a PATH with BIN_DIR
// first.
inline std::string write_netns_ssh(const std::string& bin_dir, const std::string& log) {
  std::filesystem::create_directories(bin_dir);
  std::string carrier;
  for (const char* ifn : kIfs) carrier += std::string(" /sys/class/net/") + ifn + "/carrier";
  write_file(bin_dir + "/ssh",
             "#!/bin/sh\n"
             "# ssh for the test's cluster: node HOST is network namespace HOST, with host name HOST.\n"
             "while [ $# -gt 0 ]; do case \"$1\" in -*) shift ;; *) break ;; esac; done\n"
             "host=$1; shift\n"
             "printf '%s %s\\n' \"$host\" \"$*\" >> " + shell_quote(log) + "\n"
             "# Reached over the network only: a link whose other end is down has no carrier.\n"
             "linked() { cat" + carrier + " 2>/dev/null | grep -qx 1; }\n"
             "if ! linked; then\n"
             "  echo \"ssh: connect to host $host port 22: No route to host\" >&2; exit 255\n"
             "fi\n"
             "ip netns exec \"$host\" unshare --uts sh -c "
             "'echo \"$0\" > /proc/sys/kernel/hostname && exec sh -c \"$1\"' \"$host\" \"$*\"\n"
             "rc=$?\n"
             "# The client hears of the command's end over the network: from a node whose links went\n"
             "# down it hears nothing, and waits (until it is killed) as a real one would. A command\n"
             "# killed by a signal may be a node being lost: its links go down just after.\n"
             "if [ $rc -gt 128 ]; then sleep 1; fi\n"
             "if ! linked; then exec sleep 100000; fi\n"
             "exit $rc\n");
  std::filesystem::permissions(bin_dir + "/ssh", std::filesystem::perms::owner_all);
  const char* path = std::getenv("PATH");
  return bin_dir + ":" + (path ? path : "/usr/bin:/bin");
}

// A lease of CPU ranks on both nodes.
struct NetnsLease {
  std::string id, tenant, root;  // lease id, tenant id, its one storage root
  int cpu_ranks = 1;             // per node
  std::string nic = "pa";        // the lease's interface on both nodes
};

// A manifest of the two nodes (both holding both NICs) and LEASES, valid from an hour ago to
// an hour from now.
inline std::string netns_manifest(const TwoNodes& nodes, const std::vector<NetnsLease>& leases) {
  const auto now = std::chrono::system_clock::now();
  std::string m = "[operator]\nid = \"netns-test\"\n";
  for (int n = 0; n < 2; ++n) {
    m += "[[node]]\nhostname = \"" + nodes.ns[n] + "\"\n";
    for (int k = 0; k < 2; ++k)
      m += "  [[node.nic]]\n  netdev = \"" + std::string(kIfs[k]) + "\"\n  ip = \"" + kNets[k] +
           std::to_string(n + 1) + "/24\"\n";
  }
  for (const NetnsLease& l : leases) {
    m += "[[tenant]]\nid = \"" + l.tenant + "\"\n[[lease]]\nid = \"" + l.id + "\"\ntenant = \"" + l.tenant +
         "\"\nnot_before = " + utc(now - std::chrono::hours(1)) + "\nnot_after = " + utc(now + std::chrono::hours(1)) +
         "\nstorage_roots = [\"" + l.root + "\"]\n  [lease.quota]\n  max_ranks = " + std::to_string(2 * l.cpu_ranks) +
         "\n  gpu_hours = 1\n  storage_bytes = \"1GiB\"\n  [lease.policy]\n  device_probe = \"warn\"\n";
    for (int n = 0; n < 2; ++n)
      m += "  [[lease.alloc]]\n  node = \"" + nodes.ns[n] + "\"\n  cpu_ranks = " + std::to_string(l.cpu_ranks) +
           "\n  nics = [\"" + l.nic + "\"]\n";
  }
  return m;
}

}  // namespace lt::test
