// Where this process sits in a job: rank, world size and local rank from the launcher's
// environment (mpirun: OMPI_COMM_WORLD_*; srun: SLURM_*), the communicator that goes with it,
// and the mpirun command line for a job on this host.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/comm.h"
#include "runtime/config.h"

namespace lt {

struct DistEnv {
  int rank = 0, world = 1;
  int local_rank = 0;  // this host's rank: picks the GPU (the CUDA device index)
  std::string source = "none";  // "OMPI_COMM_WORLD_*", "SLURM_*" or "none"
};

// Open MPI's OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE} win over SLURM's (mpirun inside
// an allocation sets both). SLURM counts only inside an srun step (SLURM_STEP_NUM_TASKS set):
// a batch script sees SLURM_NTASKS of the whole allocation but is one process. A malformed
// or inconsistent value is a UserError naming the variable.
DistEnv read_dist_env();

// The communicator for a CPU job: SelfComm for one rank, MpiComm otherwise (UserError when
// this build has no MPI). Checks that MPI's rank and size agree with the environment's.
std::unique_ptr<Communicator> make_cpu_communicator(const DistEnv& env, const DistConfig& cfg);

// mpirun -np N on this host: --oversubscribe when N exceeds the cores, --allow-run-as-root as
// root, no core binding (each rank's communication thread must be free to run beside its
// compute thread), and one OpenMP/BLAS thread per rank unless threads_per_rank says otherwise.
// Refuses (UserError) more than kMaxLocalThreadsPerCore threads, ranks x threads, per core.
inline constexpr int kMaxLocalThreadsPerCore = 8;
std::vector<std::string> local_mpirun_argv(int np, int threads_per_rank = 1);
// argv joined for /bin/sh, each word single-quoted when it needs it.
std::string shell_join(const std::vector<std::string>& argv);

}  // namespace lt
