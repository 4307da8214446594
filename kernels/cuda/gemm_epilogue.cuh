// The GEMM epilogue (bias, GELU, GELU gradient, residual, beta*C), shared by the hand-written
// kernels in gemm.cu and the cuBLAS baseline in gemm_cublas.cu so both compute the same thing.
// defines: grouped_tile, EpilogueParams, make_epilogue_params, epilogue_value, epilogue_store_pair.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm.h"

namespace lt::cuda::detail {

// Grouped rasterisation of output tiles: tile index `pid` of a grid_m x grid_n tiling to (tile
// row, tile column), so that kGroupM tile rows sweep the columns together and the CTAs running
// at once share their A rows and B columns in L2.
constexpr int kGroupM = 8;
struct TileRC {
  int m, n;
};
__device__ __forceinline__ TileRC grouped_tile(int pid, int grid_m, int grid_n) {
  const int per_group = kGroupM * grid_n;
  const int first_m = (pid / per_group) * kGroupM;
  const int group_rows = min(grid_m - first_m, kGroupM);
  return {first_m + (pid % per_group) % group_rows, (pid % per_group) / group_rows};
}

// Everything the epilogue needs, with leading dimensions already resolved.
struct EpilogueParams {
  void* C;
  int64_t ldc;
  int M, N;
  uint32_t epi;  // Epilogue bits
  float beta;
  bool out_bf16;   // C, residual, aux
  bool bias_bf16;  // bias has the input dtype
  bool c_pairs;    // C can be written two columns at a time (even ldc, aligned base)
  const void* bias;
  const void* residual;
  int64_t ldr;
  void* aux;
  int64_t ld_aux;
};

inline EpilogueParams make_epilogue_params(const GemmArgs& a) {
  EpilogueParams e{};
  e.C = a.C;
  e.ldc = a.ldc;
  e.M = a.M;
  e.N = a.N;
  e.epi = uint32_t(a.epilogue);
  e.beta = a.beta;
  e.out_bf16 = a.out_type == DataType::BF16;
  e.bias_bf16 = a.in_type == DataType::BF16;
  const uintptr_t pair_bytes = e.out_bf16 ? 4 : 8;
  e.c_pairs = (a.ldc % 2 == 0) && (reinterpret_cast<uintptr_t>(a.C) % pair_bytes == 0);
  e.bias = a.bias;
  e.residual = a.residual;
  e.ldr = a.ldr;
  e.aux = a.aux;
  e.ld_aux = a.ld_aux;
  return e;
}

__device__ __forceinline__ float ld_f32(const void* p, int64_t i, bool is_bf16) {
  return is_bf16 ? __bfloat162float(static_cast<const bf16*>(p)[i]) : static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void st_f32(void* p, int64_t i, float v, bool is_bf16) {
  if (is_bf16)
    static_cast<bf16*>(p)[i] = __float2bfloat16_rn(v);
  else
    static_cast<float*>(p)[i] = v;
}

// The epilogue of one element (m < M, n < N), in gemm.h's order. Writes aux for Gelu.
__device__ __forceinline__ float epilogue_value(const EpilogueParams& e, int m, int n, float v) {
  if (e.epi & uint32_t(Epilogue::Bias)) v += ld_f32(e.bias, n, e.bias_bf16);
  if (e.epi & uint32_t(Epilogue::Gelu)) {
    if (e.aux) st_f32(e.aux, (int64_t)m * e.ld_aux + n, v, e.out_bf16);
    v = gelu_f(v);
  }
  if (e.epi & uint32_t(Epilogue::GeluGrad)) v *= gelu_grad_f(ld_f32(e.aux, (int64_t)m * e.ld_aux + n, e.out_bf16));
  if (e.epi & uint32_t(Epilogue::Residual)) v += ld_f32(e.residual, (int64_t)m * e.ldr + n, e.out_bf16);
  if (e.beta != 0.f) v += e.beta * ld_f32(e.C, (int64_t)m * e.ldc + n, e.out_bf16);
  return v;
}

// Columns n and n+1 of row m (n even, n < N; n+1 may be out of range).
__device__ __forceinline__ void epilogue_store_pair(const EpilogueParams& e, int m, int n, float v0, float v1) {
  const bool both = n + 1 < e.N;
  v0 = epilogue_value(e, m, n, v0);
  if (both) v1 = epilogue_value(e, m, n + 1, v1);
  const int64_t i = (int64_t)m * e.ldc + n;
  if (both && e.c_pairs) {
    if (e.out_bf16)
      *reinterpret_cast<__nv_bfloat162*>(static_cast<bf16*>(e.C) + i) = __floats2bfloat162_rn(v0, v1);
    else
      *reinterpret_cast<float2*>(static_cast<float*>(e.C) + i) = make_float2(v0, v1);
  } else {
    st_f32(e.C, i, v0, e.out_bf16);
    if (both) st_f32(e.C, i + 1, v1, e.out_bf16);
  }
}

}  // namespace lt::cuda::detail
