// A small-matrix fp32 GEMM for the CPU backend: C[M,N] = (C or bias or 0) + A[M,K] B[K,N].
// defines: MatView, GemmInit, gemm, Causal, gemm_serial, GemmProduct, gemm_scratch, gemm_team,
//          gemm_use_blas.
//
// The training step's matrices are small (the tiny model multiplies 256 rows by 128-512
// columns over K = 128-512), where OpenBLAS's per-call setup (packing both operands) is a
// large share and a second thread buys it little (measured: ~75 GFLOP/s on 1 or 2 threads).
// This one packs B into 16-column panels (cheap: every packed element is used M times),
// reads A in place where its rows are contiguous, runs an AVX2/FMA register-blocked
// micro-kernel of 6 rows x 16 columns, and splits the tiles over the threads (see gemm.cpp).
// Operands are strided views, so one routine covers every layout the step uses:
//   forward   out  = inp  W^T  A = inp [N,C],   B = W^T  (W [OC,C] read by column)
//   backward  dinp = dout W    A = dout [N,OC], B = W [OC,C]
//             dW  += dout^T inp A = dout^T (dout [N,OC] read by column), B = inp [N,C]
//   attention q k^T, p v, and their gradients per head (gemm_serial, skipping masked zeros)
// Every element of C is summed in the same order (k = 0, 1, ..., K-1, one FMA chain per
// element) whatever the thread count, so results do not depend on it.
#pragma once
#include <cstdint>

namespace lt::cpu {

// Element (r, c) of a matrix view is p[r * rs + c * cs]: a row-major [R, L] matrix is
// {p, L, 1}, its transpose {p, 1, L}.
struct MatView {
  const float* p;
  int64_t rs, cs;
  float at(int64_t r, int64_t c) const { return p[r * rs + c * cs]; }
};

// What C starts from before A B is added.
enum class GemmInit {
  Zero,        // C = A B
  Bias,        // C = A B + bias[j] (bias has N entries)
  Accumulate,  // C += A B
};

// C (row-major, leading dimension ldc) over the OpenMP threads; one parallel region.
void gemm(int M, int N, int K, MatView A, MatView B, float* C, int64_t ldc, GemmInit init,
          const float* bias = nullptr);

// Known zeros of a causal-attention product, skipped by gemm_serial (M = N or M = K there):
enum class Causal {
  None,
  Lower,   // only C(i, j) with j <= i is wanted: tiles wholly above the diagonal are not
           // computed (C keeps what it held there); tiles crossing it are computed in full
  AUpper,  // A(i, k) = 0 for k > i: a tile of rows [i0, i1) sums k < i1 only
  ALower,  // A(i, k) = 0 for k < i: a tile of rows [i0, i1) sums k >= i0 only
};
// The same on the calling thread only (for use inside a parallel region). Skipping A's zeros
// leaves every sum as it would be in full (adding exact zeros changes nothing).
void gemm_serial(int M, int N, int K, MatView A, MatView B, float* C, int64_t ldc, GemmInit init,
                 const float* bias = nullptr, Causal causal = Causal::None);

// Several independent products in one parallel region, e.g. dinp and dW of a linear layer:
//   float* scratch = gemm_scratch(products, n);   // outside the region, by one thread
//   #pragma omp parallel
//   { gemm_team(products, n, scratch); ... }
// Every thread of the team must call gemm_team (it splits the work and holds barriers; C is
// complete when it returns). No product's C may overlap another's operands. At most 4.
struct GemmProduct {
  int M, N, K;
  MatView A, B;
  float* C;
  int64_t ldc;
  GemmInit init;
  const float* bias = nullptr;
};
// The calling thread's packing buffer, grown to fit these products (valid until its next call).
float* gemm_scratch(const GemmProduct* products, int count);
void gemm_team(const GemmProduct* products, int count, float* scratch);

// Whether a product of this size is better left to OpenBLAS: when A or B is large (the 124M LM
// head), where OpenBLAS's blocking for the caches pays off and its call overhead does not
// matter.
bool gemm_use_blas(int M, int N, int K);

}  // namespace lt::cpu
