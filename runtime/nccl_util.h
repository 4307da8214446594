// Shared by the NCCL communicator and the NCCL all-reduce benchmark: error checks that name
// file, line, call and the library's message, and our ReduceOp in NCCL's terms.
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include "runtime/comm.h"

#define CUDA_CHECK(call)                                                                          \
  do {                                                                                            \
    cudaError_t e_ = (call);                                                                      \
    if (e_ != cudaSuccess)                                                                        \
      throw ::lt::CommError(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " #call ": " + \
                            cudaGetErrorString(e_));                                              \
  } while (0)

// NCCL_CHECK(call); NCCL_CHECK_COMM(comm, call) for calls on a communicator adds
// ncclGetLastError's detail (e.g. which GPU was duplicated), which the result code alone hides.
#define NCCL_CHECK(call) NCCL_CHECK_COMM(nullptr, call)
#define NCCL_CHECK_COMM(comm, call)                                                        \
  do {                                                                                     \
    ncclResult_t r_ = (call);                                                              \
    if (r_ != ncclSuccess) ::lt::nccl_fail(r_, __FILE__, __LINE__, #call, (comm));          \
  } while (0)

namespace lt {

// Throws CommError naming file, line, call and NCCL's message (and, with a communicator, its
// last error).
[[noreturn]] inline void nccl_fail(ncclResult_t r, const char* file, int line, const char* call, ncclComm_t comm) {
  std::string msg = std::string(file) + ":" + std::to_string(line) + ": " + call + ": " + ncclGetErrorString(r);
  if (comm) msg += std::string(" (") + ncclGetLastError(comm) + ")";
  throw CommError(msg);
}

// Selects `device`, checks the NCCL version, sends rank 0's ncclUniqueId over `bootstrap`
// (MPI_Bcast; not needed for world 1) and initialises this rank's NCCL communicator. Shared by
// NcclComm and the NCCL all-reduce benchmark.
ncclComm_t nccl_init_rank(Communicator* bootstrap, int rank, int world, int device);

// Avg is NCCL's own ncclAvg: identical on every rank like the MPI path's x / N, though NCCL
// may round differently (it can pre-scale floating-point inputs by 1/N).
inline ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Avg: return ncclAvg;
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
  }
  return ncclSum;
}

}  // namespace lt
