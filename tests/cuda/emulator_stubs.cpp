// The cuBLAS baseline is not emulated: the emulated test binary filters out its tests, and
// these stand-ins fail loudly should one run anyway.
#include <stdexcept>

#include "kernels/cuda/gemm.h"

namespace lt::cuda {
size_t gemm_cublas_workspace_bytes(const GemmArgs&) { return 0; }
void gemm_cublas(const GemmArgs&, void*, void*, size_t, cudaStream_t) {
  throw std::runtime_error("cuBLAS is not emulated");
}
}  // namespace lt::cuda
