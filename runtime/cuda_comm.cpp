// The one-process communicator over CUDA buffers (see cuda_backend.h): comm_self.cpp's SelfComm
// with a device-to-device copy. Lets the data-parallel layer run unchanged on one GPU without
// NCCL.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "runtime/comm.h"
#include "runtime/cuda_backend.h"

namespace lt {

std::unique_ptr<Communicator> make_cuda_self_comm() {
  return make_self_comm(Device::CUDA, [](void* dst, const void* src, size_t n) {
    const cudaError_t e = cudaMemcpy(dst, src, n, cudaMemcpyDeviceToDevice);
    if (e == cudaSuccess) return std::string();
    (void)cudaGetLastError();
    return std::string("cudaMemcpy: ") + cudaGetErrorString(e);
  });
}

}  // namespace lt
