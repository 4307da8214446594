// Launcher environment, communicator choice and local mpirun command lines (see dist_env.h).
#include "runtime/dist_env.h"

#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <thread>

#include "runtime/error.h"

namespace lt {

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int env_int(const char* name, int lo) {
  const char* v = env(name);
  int x = 0;
  const char* end = v + std::char_traits<char>::length(v);
  auto [p, ec] = std::from_chars(v, end, x);
  if (ec != std::errc() || p != end || x < lo)
    throw UserError(std::string("environment: ") + name + ": expected an integer >= " + std::to_string(lo) +
                    ", got '" + v + "'");
  return x;
}

}  // namespace

DistEnv read_dist_env() {
  DistEnv e;
  if (env("OMPI_COMM_WORLD_SIZE")) {
    e.source = "OMPI_COMM_WORLD_*";
    e.world = env_int("OMPI_COMM_WORLD_SIZE", 1);
    e.rank = env("OMPI_COMM_WORLD_RANK") ? env_int("OMPI_COMM_WORLD_RANK", 0) : 0;
    e.local_rank = env("OMPI_COMM_WORLD_LOCAL_RANK") ? env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0) : 0;
    if (e.rank >= e.world)
      throw UserError("environment: OMPI_COMM_WORLD_RANK: expected less than OMPI_COMM_WORLD_SIZE (" +
                      std::to_string(e.world) + "), got " + std::to_string(e.rank));
  } else if (env("SLURM_STEP_NUM_TASKS") && env("SLURM_PROCID")) {
    e.source = "SLURM_*";
    e.world = env_int("SLURM_STEP_NUM_TASKS", 1);
    e.rank = env_int("SLURM_PROCID", 0);
    e.local_rank = env("SLURM_LOCALID") ? env_int("SLURM_LOCALID", 0) : 0;
    if (e.rank >= e.world)
      throw UserError("environment: SLURM_PROCID: expected less than SLURM_STEP_NUM_TASKS (" +
                      std::to_string(e.world) + "), got " + std::to_string(e.rank));
  }
  return e;
}

std::unique_ptr<Communicator> make_cpu_communicator(const DistEnv& e, const DistConfig& cfg) {
  if (e.world == 1) return make_self_comm();
#ifdef LEASETRAIN_HAVE_MPI
  MpiCommOptions opt;
  opt.progress = cfg.progress;
  std::unique_ptr<Communicator> c = make_mpi_comm(opt);
  if (c->rank() != e.rank || c->world() != e.world)
    throw UserError("environment: " + e.source + " says rank " + std::to_string(e.rank) + " of " +
                    std::to_string(e.world) + ", MPI says rank " + std::to_string(c->rank()) + " of " +
                    std::to_string(c->world()) + " (launched by a different MPI than this build's?)");
  return c;
#else
  throw UserError("environment: " + e.source + ": launched as rank " + std::to_string(e.rank) + " of " +
                  std::to_string(e.world) + ", but this build has no MPI (install libopenmpi-dev and rebuild)");
#endif
}

std::vector<std::string> local_mpirun_argv(int np, int threads_per_rank) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  // Far past the cores a local job measures the scheduler, and a thousand ranks of a thousand
  // threads each exhaust the machine (processes, memory) before any of them reports.
  if ((int64_t)np * threads_per_rank > (int64_t)kMaxLocalThreadsPerCore * cores)
    throw UserError("--ranks " + std::to_string(np) + " x --threads-per-rank " + std::to_string(threads_per_rank) +
                    " is " + std::to_string((int64_t)np * threads_per_rank) + " threads on this host's " +
                    std::to_string(cores) + " cores; at most " + std::to_string(kMaxLocalThreadsPerCore) +
                    " per core");
  std::vector<std::string> a = {"mpirun", "-np", std::to_string(np)};
  if ((unsigned)np > cores) a.push_back("--oversubscribe");
  if (::geteuid() == 0) a.push_back("--allow-run-as-root");
  for (const char* s : {"--bind-to", "none"}) a.push_back(s);
  for (const char* var : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"}) {
    a.push_back("-x");
    a.push_back(std::string(var) + "=" + std::to_string(threads_per_rank));
  }
  return a;
}

std::string shell_join(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& w : argv) {
    if (!s.empty()) s += ' ';
    const bool plain = !w.empty() && w.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                         "0123456789-_=./:,+@%") == std::string::npos;
    if (plain) {
      s += w;
    } else {
      s += '\'';
      for (char c : w) s += c == '\'' ? std::string("'\\''") : std::string(1, c);
      s += '\'';
    }
  }
  return s;
}

}  // namespace lt
