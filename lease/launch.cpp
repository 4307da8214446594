// Environment allowlist, mpirun/srun command building and the supervised start (launch.h).
#include "lease/launch.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <sstream>

#include "lease/storage.h"
#include "runtime/error.h"
#include "runtime/sha256.h"

extern char** environ;

namespace lt::lease {
namespace {

bool starts_with(const std::string& s, std::string_view p) { return s.rfind(p, 0) == 0; }

bool matches(const std::string& name, const std::string& pattern) {
  if (!pattern.empty() && pattern.back() == '*') return starts_with(name, pattern.substr(0, pattern.size() - 1));
  return name == pattern;
}

// LD_LIBRARY_PATH is not among them: it decides which libraries every rank loads, so it is a
// dangerous variable (is_dangerous_env) that only the lease's allow_dangerous_env can pass.
const std::vector<std::string> kBase = {"PATH", "LANG", "LC_ALL", "TZ", "TMPDIR"};
const std::vector<std::string> kDefaultAllowed = {"NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "OMP_NUM_THREADS",
                                                  "OMP_PROC_BIND", "OMP_PLACES"};
// What the launcher process itself needs (ssh to remote nodes, a terminal), never given to
// ranks through -x.
const std::vector<std::string> kLauncherOnly = {"HOME", "USER", "LOGNAME", "SHELL", "TERM", "SSH_AUTH_SOCK",
                                                "LEASETRAIN_OPERATOR_KEY", "LEASETRAIN_SYSFS_ROOT"};

// Inherited variables worth naming when dropped: they change what NCCL, CUDA, MPI or the
// dynamic loader do.
bool is_notable(const std::string& n) {
  for (std::string_view p : {"NCCL_", "CUDA_", "OMPI_", "PMIX_", "UCX_", "NVSHMEM_", "GLOO_", "OMP_", "MPI_",
                             "LEASETRAIN_", "LD_", "HCOLL_", "SHARP_", "FI_", "I_MPI_"})
    if (starts_with(n, p)) return true;
  return false;
}

}  // namespace

EnvMap current_environment() {
  EnvMap m;
  for (char** e = environ; e && *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq) m.emplace(std::string(*e, size_t(eq - *e)), std::string(eq + 1));
  }
  return m;
}

EnvFilter filter_environment(const EnvMap& inherited, const Policy& policy) {
  EnvFilter f;
  if (auto it = inherited.find("NCCL_COMM_ID"); it != inherited.end())
    throw UserError("NCCL_COMM_ID is set (" + it->second +
                    "): NCCL would bootstrap with a fixed connection magic that other tenants can guess; "
                    "unset it (the trainer sends the NCCL id by MPI_Bcast)");
  std::string plugin = "none";
  if (auto it = inherited.find("NCCL_NET_PLUGIN"); it != inherited.end()) {
    const auto& ok = policy.net_plugins;
    if (std::find(ok.begin(), ok.end(), it->second) == ok.end())
      throw UserError("NCCL_NET_PLUGIN=" + it->second + " is not approved by the lease (approved: " +
                      (ok.empty() ? std::string("none") : join(ok, ", ")) + "); unset it or ask the operator");
    plugin = it->second;
  }
  f.passed["NCCL_NET_PLUGIN"] = plugin;
  for (const auto& entry : inherited) {  // no structured binding: clang 14 cannot capture one
    const std::string& name = entry.first;
    const auto& value = entry.second;
    if (name == "NCCL_NET_PLUGIN") continue;
    // A dangerous name passes only by its exact entry in allow_dangerous_env: no wildcard, no
    // default list, and no exact allow_env entry of a policy built in code reaches it.
    const auto& risky = policy.allow_dangerous_env;
    bool pass = !is_lease_controlled_env(name) &&
                (is_dangerous_env(name)
                     ? std::find(risky.begin(), risky.end(), name) != risky.end()
                     : std::find(kBase.begin(), kBase.end(), name) != kBase.end() ||
                           std::find(kDefaultAllowed.begin(), kDefaultAllowed.end(), name) != kDefaultAllowed.end() ||
                           std::any_of(policy.allow_env.begin(), policy.allow_env.end(),
                                       [&](const std::string& p) { return matches(name, p); }));
    if (pass && is_dangerous_env(name)) f.dangerous.push_back(name);
    if (pass) f.passed[name] = value;
    else if (std::find(kLauncherOnly.begin(), kLauncherOnly.end(), name) != kLauncherOnly.end()) continue;
    else if (is_notable(name)) f.dropped.push_back(name);
    else ++f.dropped_other;
  }
  return f;
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.,:/=+@%") ==
                        std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string command_line(const LaunchCommand& cmd) {
  std::string out;
  for (size_t i = 0; i < cmd.argv.size(); ++i) {
    if (i) out += " ";
    out += shell_quote(cmd.argv[i]);
  }
  return out;
}

namespace {

// The launcher a job or probe uses and that launcher's own environment: the base variables,
// what ssh/srun need, nothing else.
LaunchCommand launcher_of(const EnvFilter& env, const LaunchOptions& opt) {
  LaunchCommand c;
  const bool in_slurm = opt.inherited.count("SLURM_JOB_ID") > 0;
  if (opt.launcher == "auto") c.launcher = in_slurm ? "srun" : "mpirun";
  else if (opt.launcher == "mpirun" || opt.launcher == "srun") c.launcher = opt.launcher;
  else throw UserError("--launcher: expected auto, mpirun or srun, got '" + opt.launcher + "'");
  for (const auto& [k, v] : env.passed)
    if (std::find(kBase.begin(), kBase.end(), k) != kBase.end()) c.exec_env[k] = v;
  for (const std::string& k : kLauncherOnly)
    if (auto it = opt.inherited.find(k); it != opt.inherited.end()) c.exec_env[k] = it->second;
  if (!c.exec_env.count("PATH")) c.exec_env["PATH"] = "/usr/local/bin:/usr/bin:/bin";
  if (c.launcher == "srun")
    for (const auto& [k, v] : opt.inherited)
      if (starts_with(k, "SLURM_")) c.exec_env[k] = v;
  return c;
}

// mpirun's options before the first app context: root, the job's hostfile (none for a probe),
// and the interfaces of the plan.
std::vector<std::string> mpirun_head(const Plan& plan, const LaunchOptions& opt, const std::string& hostfile) {
  std::vector<std::string> a = {opt.mpirun};
  if (opt.as_root) a.push_back("--allow-run-as-root");
  if (!hostfile.empty()) a.insert(a.end(), {"--hostfile", hostfile});
  const std::string ifs = join(plan.mpi_interfaces, ",");
  a.insert(a.end(), {"--bind-to", "none", "--mca", "btl_tcp_if_include", ifs, "--mca", "oob_tcp_if_include", ifs});
  return a;
}

}  // namespace

LaunchCommand build_probe(const std::string& host, const std::vector<std::string>& probe_argv, const Plan& plan,
                          const EnvFilter& env, const LaunchOptions& opt) {
  LaunchCommand c = launcher_of(env, opt);
  if (c.launcher == "mpirun") {
    c.argv = mpirun_head(plan, opt, "");
    c.argv.insert(c.argv.end(), {"-np", "1", "--host", host + ":1"});
  } else {
    c.argv = {opt.srun, "-w", host, "--nodes=1", "--ntasks=1", "--export=NONE"};
  }
  c.argv.insert(c.argv.end(), probe_argv.begin(), probe_argv.end());
  return c;
}

LaunchCommand build_launch(const Plan& plan, const EnvFilter& env, const LaunchOptions& opt) {
  if (opt.command.empty()) throw UserError("launch: no command to run (give it after --, e.g. -- train --config c.toml)");
  if (opt.job_dir.empty()) throw UserError("launch: no job directory");
  LaunchCommand c = launcher_of(env, opt);

  // Per-rank environment: what the caller may pass, then the lease's own values on top.
  for (const RankPlan& r : plan.ranks) {
    EnvMap e = env.passed;
    for (const auto& [k, v] : r.env) e[k] = v;
    e["LEASETRAIN_JOB_DIR"] = opt.job_dir;
    c.rank_env.push_back(std::move(e));
  }
  nlohmann::json ej = c.rank_env;
  c.env_sha256 = sha256_hex(ej.dump());

  std::ostringstream hostfile;
  for (const NodePlan& n : plan.nodes) hostfile << n.host << " slots=" << n.slots << "\n";
  c.files.emplace_back(opt.job_dir + "/hostfile", hostfile.str());

  if (c.launcher == "mpirun") {
    auto& a = c.argv;
    a = mpirun_head(plan, opt, opt.job_dir + "/hostfile");
    // One app context per rank, in rank order: OpenMPI numbers ranks by context, and -x given
    // inside a context applies to that context only.
    for (size_t i = 0; i < plan.ranks.size(); ++i) {
      if (i) a.push_back(":");
      // host:slots, the node's whole share: a bare host counts as one slot and the second
      // context on the same node would find it full.
      int slots = 1;
      for (const NodePlan& n : plan.nodes)
        if (n.host == plan.ranks[i].host) slots = n.slots;
      const std::vector<std::string> context = {"-np", "1", "--host", plan.ranks[i].host + ":" + std::to_string(slots)};
      a.insert(a.end(), context.begin(), context.end());
      for (const auto& [k, v] : c.rank_env[i]) {
        a.push_back("-x");
        a.push_back(k + "=" + v);
      }
      a.insert(a.end(), opt.command.begin(), opt.command.end());
    }
  } else {
    // srun: SLURM_HOSTFILE + --distribution=arbitrary pins rank i to the i-th line's host;
    // --multi-prog gives each rank its own command line, which sets its environment. No
    // --nodelist: with an arbitrary distribution srun takes it, not SLURM_HOSTFILE, as the
    // one-host-per-task list, and a list of distinct nodes is refused ("You asked for 2
    // tasks but hostlist specified 1 nodes").
    for (const std::string& arg : opt.command)
      if (arg.find_first_of(" \t\n'\"\\%") != std::string::npos)
        throw UserError("srun --multi-prog cannot carry the argument '" + arg +
                        "' (spaces, quotes, backslashes or '%'); pass it in a config file instead");
    for (const auto& e : c.rank_env)
      for (const auto& [k, v] : e)
        if (v.find_first_of(" \t\n'\"\\%") != std::string::npos)
          throw UserError("srun --multi-prog cannot carry " + k + "='" + v + "' (spaces, quotes, backslashes or '%')");
    std::ostringstream hosts, prog;
    for (size_t i = 0; i < plan.ranks.size(); ++i) {
      hosts << plan.ranks[i].host << "\n";
      prog << i << " /usr/bin/env";
      for (const auto& [k, v] : c.rank_env[i]) prog << " " << k << "=" << v;
      for (const std::string& arg : opt.command) prog << " " << arg;
      prog << "\n";
    }
    c.files.emplace_back(opt.job_dir + "/slurm-hostfile", hosts.str());
    c.files.emplace_back(opt.job_dir + "/multi-prog.conf", prog.str());
    c.exec_env["SLURM_HOSTFILE"] = opt.job_dir + "/slurm-hostfile";
    c.argv = {opt.srun,
              "--nodes=" + std::to_string(plan.nodes.size()),
              "--ntasks=" + std::to_string(plan.np),
              "--distribution=arbitrary",
              "--kill-on-bad-exit=1",
              // A second SIGINT reaches srun as SIGTERM (lease/supervise.cpp); a first one
              // must not only print the tasks' state ("one more within 1 sec to abort").
              "--quit-on-interrupt",
              "--export=NONE",
              "--multi-prog",
              opt.job_dir + "/multi-prog.conf"};
  }
  return c;
}

nlohmann::json launch_json(const Plan& plan, const EnvFilter& env, const LaunchCommand& cmd) {
  nlohmann::json j;
  j["launcher"] = cmd.launcher;
  j["argv"] = cmd.argv;
  j["command_line"] = command_line(cmd);
  j["exec_env"] = cmd.exec_env;
  j["rank_env"] = cmd.rank_env;
  j["env_sha256"] = cmd.env_sha256;
  j["dropped_env"] = env.dropped;
  j["dropped_other"] = env.dropped_other;
  j["files"] = nlohmann::json::object();
  for (const auto& [path, content] : cmd.files) j["files"][path] = content;
  j["plan"] = plan_json(plan);
  return j;
}

std::string launch_text(const Plan& plan, const EnvFilter& env, const LaunchCommand& cmd) {
  std::ostringstream o;
  o << plan_text(plan);
  if (!env.dropped.empty()) o << "dropped from the environment (not in the lease's policy): " << join(env.dropped, " ") << "\n";
  if (env.dropped_other) o << "dropped " << env.dropped_other << " other inherited variable(s)\n";
  for (const auto& [path, content] : cmd.files) {
    if (path.size() >= 10 && path.compare(path.size() - 10, 10, "/plan.json") == 0) o << "file " << path << ": the plan above, as JSON\n";
    else o << "file " << path << ":\n" << content;
  }
  o << "launcher environment:";
  for (const auto& [k, v] : cmd.exec_env) o << " " << k << "=" << shell_quote(v);
  o << "\nenvironment sha256 " << cmd.env_sha256 << "\ncommand:\n" << command_line(cmd) << "\n";
  return o.str();
}

}  // namespace lt::lease
