// The CUDA backend: the Backend interface over the hand-written kernels in kernels/cuda, on one
// CUDA stream, with no host round trip inside a training step. Built only with CUDA
// (runtime/cuda_*.cpp are left out of other builds; backend.h's make_backend and
// cuda_available work everywhere).
//
// Precision (BackendOptions::precision):
//   BF16  mixed precision as in llm.c: activations, gradients and the weights the ops read
//         are bf16; the model's master weights and AdamW's moments fp32; every GEMM, attention
//         and reduction accumulates in fp32 (sums of squares in fp64).
//   F32   everything fp32, for testing against the CPU backend: the GEMM takes its SIMT path
//         (fp32 FMA), attention its fallback kernels.
// GEMM: gemm() (wgmma on Hopper, mma.sync elsewhere on bf16, SIMT on fp32), one path forced with
// gemm = "mma.sync" or "wgmma", or, with gemm = "cublas", the cuBLAS baseline.
// Attention: the flash kernels (bf16, head dim 64 or 128; the state is a log-sum-exp
// [B,NH,T]); otherwise attention_naive.h, which keeps the probabilities [B,NH,T,T].
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"

namespace lt {

class Communicator;

struct CudaBackendOptions {
  int device_index = 0;
  DType precision = DType::BF16;
  std::string gemm = "mma";  // "mma" (hand-written, best path), "mma.sync", "wgmma" or "cublas"
  std::string attention = "auto";  // flash attention: "auto" (wgmma on Hopper), "mma.sync" or "wgmma"
};
std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& opt);

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  std::string uuid;  // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
  int cc_major = 0, cc_minor = 0, sm_count = 0;
  size_t memory_bytes = 0, l2_bytes = 0;
  int driver_version = 0, runtime_version = 0;  // e.g. 13000
  std::string cuda_version() const;              // runtime version as "13.0"
};
int cuda_device_count();  // 0 without a driver or device
CudaDeviceInfo cuda_device_info(int index);

// The CUDA backend's stream (a cudaStream_t), for a communicator that must order its work
// after the backend's. nullptr if `backend` is not a CUDA backend.
void* cuda_backend_stream(Backend& backend);

// A one-process communicator over CUDA buffers (every collective is the identity), so the
// data-parallel layer runs unchanged on one GPU without NCCL.
std::unique_ptr<Communicator> make_cuda_self_comm();

}  // namespace lt
