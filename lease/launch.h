// From a plan to a running job: the environment allowlist, the hostfile, and the exact
// mpirun (or, inside a SLURM allocation, srun) command with one app context per rank so
// that each rank gets its own CUDA_VISIBLE_DEVICES, NIC and P_Key index.
#pragma once
#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "lease/lease_plan.h"

namespace lt::lease {

using EnvMap = std::map<std::string, std::string>;

EnvMap current_environment();

// What the job inherits from the caller's environment.
struct EnvFilter {
  EnvMap passed;                     // approved variables, given to every rank
  std::vector<std::string> dropped;  // names that could have changed NCCL/CUDA/MPI behaviour
  size_t dropped_other = 0;          // everything else not passed (HOME-like noise)
  std::vector<std::string> dangerous;  // passed only because allow_dangerous_env names them
};

// The one place the job's inherited environment is decided. Starts from nothing and passes:
// PATH, LANG, LC_ALL, TZ, TMPDIR; NCCL_DEBUG, NCCL_DEBUG_SUBSYS, OMP_NUM_THREADS,
// OMP_PROC_BIND, OMP_PLACES; the policy's allow_env names/prefixes, except dangerous names
// (is_dangerous_env: LD_*, OMPI_*, PMIX_*, ...), which pass only when allow_dangerous_env
// names them exactly; NCCL_NET_PLUGIN when its value is in policy.net_plugins (else the
// ranks get NCCL_NET_PLUGIN=none). Variables the lease sets (LEASETRAIN_*, CUDA_VISIBLE_DEVICES,
// ...) are never inherited.
// UserError: NCCL_COMM_ID is set (fixed bootstrap magic), or NCCL_NET_PLUGIN is set to a
// plugin the policy does not approve.
EnvFilter filter_environment(const EnvMap& inherited, const Policy& policy);

struct LaunchOptions {
  std::vector<std::string> command;  // the program each rank runs, and its arguments
  std::string job_dir;               // hostfile, plan.json, env.json go here
  std::string launcher = "auto";     // auto (srun when SLURM_JOB_ID is set), mpirun, srun
  bool as_root = false;              // adds --allow-run-as-root (OpenMPI refuses root otherwise)
  std::string mpirun = "mpirun";
  std::string srun = "srun";
  EnvMap inherited;  // the caller's environment (for SLURM_JOB_ID, HOME, SSH_AUTH_SOCK, ...)
};

struct LaunchCommand {
  std::string launcher;                                   // "mpirun" or "srun"
  std::vector<std::string> argv;                          // exact command, argv[0] the launcher
  EnvMap exec_env;                                        // environment of mpirun/srun itself
  std::vector<EnvMap> rank_env;                           // what each rank gets, by rank
  std::vector<std::pair<std::string, std::string>> files; // (path, content) written before start
  std::string env_sha256;                                 // over rank_env, for the usage record
};

LaunchCommand build_launch(const Plan& plan, const EnvFilter& env, const LaunchOptions& opt);

// One run of `probe_argv` (leasetrain probe ...) on `host` through the launcher a job of `plan`
// would use: mpirun -np 1 --host HOST:1 over the plan's interfaces, or srun -w HOST -N1 -n1.
// No files; the launcher's environment is the job's (exec_env).
LaunchCommand build_probe(const std::string& host, const std::vector<std::string>& probe_argv, const Plan& plan,
                          const EnvFilter& env, const LaunchOptions& opt);

std::string shell_quote(const std::string& s);
std::string command_line(const LaunchCommand& cmd);  // argv shell-quoted, one line
nlohmann::json launch_json(const Plan& plan, const EnvFilter& env, const LaunchCommand& cmd);
std::string launch_text(const Plan& plan, const EnvFilter& env, const LaunchCommand& cmd);

}  // namespace lt::lease
