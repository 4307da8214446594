// A stand-in for the NCCL library over MPI, for the emulated CUDA build (tests/cuda/emulator.h,
// where "device" memory is host memory and every stream operation has completed when it
// returns). It lets NcclComm (runtime/comm_nccl.cpp), the data-parallel layer and the trainer
// run their NCCL path on a machine without a GPU. It implements the calls the project makes
// with NCCL's documented semantics and refuses what NCCL leaves undefined, so a misuse fails
// here instead of corrupting data on a device:
//   - counts are elements: ncclReduceScatter's recvcount and ncclAllGather's sendcount are
//     per rank;
//   - in place means exactly NCCL's forms (reduce-scatter: recvbuff == sendbuff + rank *
//     recvcount; all-gather: sendbuff == recvbuff + rank * sendcount); any other overlap of
//     the send and receive buffers is ncclInvalidUsage;
//   - bfloat16 is reduced in fp32 and rounded once (NCCL's kernels round per step: the
//     emulated results can differ from a device's in the last bit).
// What it does not model: asynchrony, streams, timing, NCCL's own reduction order. Two faults
// can be injected (fake_nccl.h): the next collective hangs on the "device" (its event stays
// pending) and the communicator reports an asynchronous error until it is aborted; or the next
// call blocks on the host before it runs.
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/cuda/fake_nccl.h"

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, nranks = 1;
  std::string last_error;
};

namespace {

// The injected failure (fake_nccl_fail_next): armed, then the communicator it struck.
ncclResult_t g_fail = ncclSuccess;
bool g_armed = false;
ncclComm* g_stuck = nullptr;

double g_delay_s = 0;  // fake_nccl_delay_next

cudaError_t stuck_event_query() { return g_stuck ? cudaErrorNotReady : cudaSuccess; }

// Applies the injected faults to this collective: a host-side delay; true when the injected
// failure takes it (it does nothing and never completes).
bool strike(ncclComm* c) {
  if (g_delay_s > 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(g_delay_s));
    g_delay_s = 0;
  }
  if (!g_armed) return false;
  g_armed = false;
  g_stuck = c;
  ::emu::event_query_hook = stuck_event_query;
  return true;
}

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
  }
}

float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_bf16(float f) {  // round to nearest even, as __float2bfloat16
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return 0x7fc0;
  u += 0x7fff + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}

// Elements of `n` as doubles (exact for fp32, bf16 and int32), and back.
std::vector<double> load(const void* p, size_t n, ncclDataType_t t) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; i++) {
    if (t == ncclFloat32) v[i] = static_cast<const float*>(p)[i];
    else if (t == ncclBfloat16) v[i] = bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    else v[i] = static_cast<const int32_t*>(p)[i];
  }
  return v;
}
void store(void* p, const double* v, size_t n, ncclDataType_t t) {
  for (size_t i = 0; i < n; i++) {
    if (t == ncclFloat32) static_cast<float*>(p)[i] = (float)v[i];
    else if (t == ncclBfloat16) static_cast<uint16_t*>(p)[i] = f32_to_bf16((float)v[i]);
    else static_cast<int32_t*>(p)[i] = (int32_t)v[i];
  }
}

ncclResult_t fail(ncclComm_t c, ncclResult_t r, const std::string& why) {
  if (c) c->last_error = why;
  return r;
}

bool overlap(const void* a, size_t an, const void* b, size_t bn) {
  const char *x = static_cast<const char*>(a), *y = static_cast<const char*>(b);
  return x < y + bn && y < x + an;
}

// Every rank's `n` values reduced with `op` (sum in double: exact for the tests' integers).
ncclResult_t reduce_all(ncclComm_t c, std::vector<double>& v, ncclRedOp_t op) {
  MPI_Op mop = op == ncclMax ? MPI_MAX : op == ncclMin ? MPI_MIN : MPI_SUM;
  if (op != ncclSum && op != ncclAvg && op != ncclMax && op != ncclMin)
    return fail(c, ncclInvalidArgument, "fake NCCL: unsupported reduction");
  if (MPI_Allreduce(MPI_IN_PLACE, v.data(), (int)v.size(), MPI_DOUBLE, mop, c->mpi) != MPI_SUCCESS)
    return fail(c, ncclSystemError, "fake NCCL: MPI_Allreduce failed");
  if (op == ncclAvg)
    for (double& x : v) x = (double)((float)x / (float)c->nranks);  // fp32 x / N, as ncclAvg on floats
  return ncclSuccess;
}

ncclResult_t check(ncclComm_t c, ncclDataType_t t) {
  if (!c || c->mpi == MPI_COMM_NULL) return fail(c, ncclInvalidArgument, "fake NCCL: invalid communicator");
  if (t != ncclFloat32 && t != ncclBfloat16 && t != ncclInt32)
    return fail(c, ncclInvalidArgument, "fake NCCL: the project only uses float32, bfloat16 and int32");
  return ncclSuccess;
}

}  // namespace

ncclResult_t ncclGetVersion(int* version) {
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::random_device rd;
  for (char& b : id->internal) b = (char)rd();
  return ncclSuccess;
}

// The ranks that pass the same id form the communicator (MPI_Comm_split of MPI_COMM_WORLD on a
// hash of the id: collective over every process, as the tests call it).
ncclResult_t ncclCommInitRank(ncclComm_t* out, int nranks, ncclUniqueId id, int rank) {
  uint32_t h = 2166136261u;
  for (char b : id.internal) h = (h ^ (uint8_t)b) * 16777619u;
  auto* c = new ncclComm;
  if (MPI_Comm_split(MPI_COMM_WORLD, (int)(h & 0x7fffffff), rank, &c->mpi) != MPI_SUCCESS) {
    delete c;
    return ncclSystemError;
  }
  MPI_Comm_rank(c->mpi, &c->rank);
  MPI_Comm_size(c->mpi, &c->nranks);
  if (c->nranks != nranks || c->rank != rank) {
    MPI_Comm_free(&c->mpi);
    delete c;
    return ncclInvalidUsage;
  }
  *out = c;
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t c) { return c ? ncclSuccess : ncclInvalidArgument; }
ncclResult_t ncclCommDestroy(ncclComm_t c) {
  if (!c) return ncclInvalidArgument;
  MPI_Comm_free(&c->mpi);
  delete c;
  return ncclSuccess;
}
ncclResult_t ncclCommAbort(ncclComm_t c) {
  if (c && c == g_stuck) {  // the stuck kernel ends with its communicator
    g_stuck = nullptr;
    ::emu::event_query_hook = nullptr;
  }
  return ncclCommDestroy(c);
}
ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t* e) {
  *e = c && c == g_stuck ? g_fail : ncclSuccess;
  return c ? ncclSuccess : ncclInvalidArgument;
}

void fake_nccl_fail_next(ncclResult_t async_error) {
  g_fail = async_error;
  g_armed = true;
}

void fake_nccl_delay_next(double seconds) { g_delay_s = seconds; }

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclSystemError: return "unhandled system error";
    case ncclRemoteError: return "remote process exited or there was a network error";
    default: return "fake NCCL error";
  }
}
const char* ncclGetLastError(ncclComm_t c) { return c ? c->last_error.c_str() : ""; }

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op, ncclComm_t c,
                           cudaStream_t) {
  if (ncclResult_t r = check(c, t)) return r;
  if (strike(c)) return ncclSuccess;
  const size_t bytes = count * type_size(t);
  if (send != recv && overlap(send, bytes, recv, bytes))
    return fail(c, ncclInvalidUsage, "fake NCCL: all_reduce buffers overlap without being the same");
  std::vector<double> v = load(send, count, t);
  if (ncclResult_t r = reduce_all(c, v, op)) return r;
  store(recv, v.data(), count, t);
  return ncclSuccess;
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recvcount, ncclDataType_t t, ncclRedOp_t op,
                               ncclComm_t c, cudaStream_t) {
  if (ncclResult_t r = check(c, t)) return r;
  if (strike(c)) return ncclSuccess;
  const size_t es = type_size(t), in_bytes = recvcount * c->nranks * es, out_bytes = recvcount * es;
  const bool in_place = recv == static_cast<const char*>(send) + c->rank * out_bytes;
  if (!in_place && overlap(send, in_bytes, recv, out_bytes))
    return fail(c, ncclInvalidUsage, "fake NCCL: reduce_scatter output overlaps the input but is not rank's block");
  std::vector<double> v = load(send, recvcount * c->nranks, t);
  if (ncclResult_t r = reduce_all(c, v, op)) return r;
  store(recv, v.data() + c->rank * recvcount, recvcount, t);
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t sendcount, ncclDataType_t t, ncclComm_t c,
                           cudaStream_t) {
  if (ncclResult_t r = check(c, t)) return r;
  if (strike(c)) return ncclSuccess;
  const size_t es = type_size(t), in_bytes = sendcount * es;
  const bool in_place = send == static_cast<const char*>(recv) + c->rank * in_bytes;
  if (!in_place && overlap(send, in_bytes, recv, in_bytes * c->nranks))
    return fail(c, ncclInvalidUsage, "fake NCCL: all_gather input overlaps the output but is not rank's block");
  std::vector<char> mine(static_cast<const char*>(send), static_cast<const char*>(send) + in_bytes);
  if (MPI_Allgather(mine.data(), (int)in_bytes, MPI_BYTE, recv, (int)in_bytes, MPI_BYTE, c->mpi) != MPI_SUCCESS)
    return fail(c, ncclSystemError, "fake NCCL: MPI_Allgather failed");
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t t, int root, ncclComm_t c,
                           cudaStream_t) {
  if (ncclResult_t r = check(c, t)) return r;
  if (strike(c)) return ncclSuccess;
  if (root < 0 || root >= c->nranks) return fail(c, ncclInvalidArgument, "fake NCCL: broadcast root out of range");
  const size_t bytes = count * type_size(t);
  if (c->rank == root && send != recv) std::memmove(recv, send, bytes);
  if (MPI_Bcast(recv, (int)bytes, MPI_BYTE, root, c->mpi) != MPI_SUCCESS)
    return fail(c, ncclSystemError, "fake NCCL: MPI_Bcast failed");
  return ncclSuccess;
}

