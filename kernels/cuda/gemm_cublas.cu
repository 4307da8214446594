// The cuBLAS baseline for gemm.h's GemmArgs: cublasGemmEx with fp32 compute, and the same
// epilogue as the hand-written kernels applied in a separate elementwise pass. Used by the
// tests, the GEMM benchmark and `--gemm cublas`; never by default.
#include <cublas_v2.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemm_epilogue.cuh"

#define CUBLAS_CHECK(call)                                                                     \
  do {                                                                                         \
    cublasStatus_t lt_cublas_st_ = (call);                                                     \
    if (lt_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                                              \
      std::fprintf(stderr, "leasetrain: cuBLAS error at %s:%d: %s (%s)\n", __FILE__, __LINE__, \
                   cublasGetStatusString(lt_cublas_st_), #call);                               \
      std::abort();                                                                            \
    }                                                                                          \
  } while (0)

namespace lt::cuda {
namespace detail {

// acc [M,N] fp32 (the raw product) -> epilogue -> C.
__global__ void gemm_epilogue_kernel(const float* acc, const EpilogueParams e) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (int64_t)e.M * e.N) return;
  const int m = (int)(i / e.N), n = (int)(i % e.N);
  st_f32(e.C, (int64_t)m * e.ldc + n, epilogue_value(e, m, n, acc[i]), e.out_bf16);
}

}  // namespace detail

size_t gemm_cublas_workspace_bytes(const GemmArgs& a) {
  return a.epilogue == Epilogue::None ? 0 : (size_t)a.M * a.N * sizeof(float);
}

void gemm_cublas(const GemmArgs& args, void* cublas_handle, void* workspace, size_t workspace_bytes,
                 cudaStream_t stream) {
  GemmArgs a = args;
  const bool tn = a.layout == Layout::TN, nt = a.layout == Layout::NT;
  if (a.lda == 0) a.lda = tn ? a.M : a.K;
  if (a.ldb == 0) a.ldb = nt ? a.K : a.N;
  if (a.ldc == 0) a.ldc = a.N;
  if (a.ldr == 0) a.ldr = a.N;
  if (a.ld_aux == 0) a.ld_aux = a.N;
  if (a.M == 0 || a.N == 0) return;
  const bool fused = a.epilogue != Epilogue::None;
  if (fused && workspace_bytes < gemm_cublas_workspace_bytes(a)) {
    std::fprintf(stderr, "leasetrain: internal error: gemm_cublas: workspace of %zu bytes, need %zu\n",
                 workspace_bytes, gemm_cublas_workspace_bytes(a));
    std::abort();
  }

  auto handle = static_cast<cublasHandle_t>(cublas_handle);
  CUBLAS_CHECK(cublasSetStream(handle, stream));
  // cuBLAS is column-major: a row-major [R][L] buffer is the column-major L x R matrix, its
  // transpose. Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so B goes
  // first and each operand's transpose flag flips relative to the row-major view.
  const cublasOperation_t op_b = nt ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = tn ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cudaDataType_t in_t = a.in_type == DataType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  const cudaDataType_t out_t = fused ? CUDA_R_32F : (a.out_type == DataType::BF16 ? CUDA_R_16BF : CUDA_R_32F);
  void* out = fused ? workspace : a.C;
  const int64_t ldo = fused ? a.N : a.ldc;
  const float alpha = 1.f, beta = fused ? 0.f : a.beta;
  auto ld = [](int64_t v) { return (int)(v > 0 ? v : 1); };
  CUBLAS_CHECK(cublasGemmEx(handle, op_b, op_a, a.N, a.M, a.K, &alpha, a.B, in_t, ld(a.ldb), a.A, in_t, ld(a.lda),
                            &beta, out, out_t, ld(ldo), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  if (fused) {
    const int64_t n = (int64_t)a.M * a.N;
    const int threads = 256;
    detail::gemm_epilogue_kernel<<<(unsigned)((n + threads - 1) / threads), threads, 0, stream>>>(
        static_cast<const float*>(workspace), detail::make_epilogue_params(a));
    CUDA_CHECK_LAST();
  }
}

}  // namespace lt::cuda
