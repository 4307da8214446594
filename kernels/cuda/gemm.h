// The hand-written GEMM for training: bf16 (or fp32) row-major inputs, fp32 accumulation,
// fused epilogues. defines: Layout, Epilogue, GemmPath, DataType, GemmArgs, gemm,
// gemm_mma_eligible, gemm_cublas, gemm_cublas_workspace_bytes.
//
// One entry point, `gemm(args, stream)`, picks a kernel path (GemmPath) behind the same
// arguments (mma.sync on Ampere, wgmma/TMA on Hopper), so no caller knows which kernel ran. `gemm_cublas` runs the same arguments through cuBLAS: the baseline for
// tests, benchmarks and `--gemm cublas`.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace lt::cuda {

// The three products of a linear layer, all on row-major storage (C is always [M,N]):
//   NT: C[M,N] = A[M,K] @ B[N,K]^T   forward:          out = inp @ W^T
//   NN: C[M,N] = A[M,K] @ B[K,N]     input gradient:   dinp = dout @ W
//   TN: C[M,N] = A[K,M]^T @ B[K,N]   weight gradient:  dW = dout^T @ inp (usually beta = 1)
// For a linear layer inp [BT,C], W [OC,C], dout [BT,OC] (kernels/cpu/ops.h conventions):
//   forward  NT  M=BT N=OC K=C   A=inp  B=W
//   dinp     NN  M=BT N=C  K=OC  A=dout B=W
//   dW       TN  M=OC N=C  K=BT  A=dout B=inp   (dbias: ops.h bias_backward)
enum class Layout { NT, NN, TN };

enum class DataType { F32, BF16 };

// Epilogue steps, applied in this order to each fp32 result v = (A.B)[m,n]:
//   Bias:     v += bias[n]
//   Gelu:     aux[m,n] = v (when aux is set: the pre-activation backward needs), v = gelu(v)
//   GeluGrad: v *= gelu'(aux[m,n])  (aux holds the pre-activation; fuses gelu_backward)
//   Residual: v += residual[m,n]
//   then      v += beta * C[m,n]    (beta != 0 accumulates, e.g. weight gradients)
// residual and C may alias (each element is read, then written, by one thread); aux may alias
// C only for GeluGrad.
enum class Epilogue : uint32_t { None = 0, Bias = 1, Gelu = 2, GeluGrad = 4, Residual = 8 };
constexpr Epilogue operator|(Epilogue a, Epilogue b) { return Epilogue(uint32_t(a) | uint32_t(b)); }
constexpr bool has(Epilogue set, Epilogue e) { return (uint32_t(set) & uint32_t(e)) != 0; }

// Which kernel runs. Auto: the tensor-core paths when inputs are bf16 with 16-byte aligned rows
// (base pointers 16-byte aligned, leading dimensions multiples of 8): Wgmma on a compute
// capability 9.0 device when the build has sm_90a code (and K > 0), else MmaSync; the SIMT
// path for everything else. A path asked for by name that cannot run falls back the same way
// (Wgmma -> MmaSync -> Simt); gemm() returns the path that ran.
enum class GemmPath {
  Auto,
  MmaSync,  // mma.sync m16n8k16 + ldmatrix + cp.async pipeline (sm_80 and newer)
  Simt,     // plain fp32 FMA tiles: any alignment, bf16 or fp32 inputs
  Wgmma,    // Hopper: TMA + mbarrier ring, wgmma m64n256k16, warp-specialised, persistent (sm_90a)
};
const char* to_string(GemmPath p);

// The MmaSync path's CTA tile, BM x BN x BK (kernels/cuda/gemm.cu lists each one's warps and
// pipeline depth). Auto picks one from the shape (gemm_tile); the others force it, so a
// benchmark can time every variant the trainer could run.
enum class GemmTile { Auto, T128x128x32, T128x256x32, T256x128x32, T128x128x64 };
const char* to_string(GemmTile t);  // "128x128x32", ...
inline constexpr GemmTile kGemmTiles[] = {GemmTile::T128x128x32, GemmTile::T128x256x32, GemmTile::T256x128x32,
                                          GemmTile::T128x128x64};

struct GemmArgs {
  Layout layout = Layout::NT;
  int M = 0, N = 0, K = 0;  // C is [M,N]; K is the reduction length (may be 0)
  // Leading dimensions in elements; 0 means packed: A is [M,K] (NT, NN) or [K,M] (TN),
  // B is [N,K] (NT) or [K,N] (NN, TN), C/residual/aux are [M,N].
  const void* A = nullptr;
  int64_t lda = 0;
  const void* B = nullptr;
  int64_t ldb = 0;
  void* C = nullptr;
  int64_t ldc = 0;
  DataType in_type = DataType::BF16;   // A, B and bias
  DataType out_type = DataType::BF16;  // C, residual and aux
  float beta = 0.f;
  Epilogue epilogue = Epilogue::None;
  const void* bias = nullptr;  // [N]
  const void* residual = nullptr;
  int64_t ldr = 0;
  void* aux = nullptr;
  int64_t ld_aux = 0;
  GemmPath path = GemmPath::Auto;
  GemmTile tile = GemmTile::Auto;  // MmaSync only
};

// Enqueues C = epilogue(op(A) op(B)) + beta*C on `stream`; any M, N, K >= 0. Returns the path
// that ran (MmaSync requested on inputs it cannot take falls back to Simt: check the result
// where that matters, e.g. in a benchmark). Invalid arguments abort with a message.
GemmPath gemm(const GemmArgs& args, cudaStream_t stream);

// True when `args` can take the MmaSync path (dtype and alignment).
bool gemm_mma_eligible(const GemmArgs& args);

// True when this process can run the Wgmma path on the current device (sm_90a code built, a
// compute capability 9.0 device), whatever the arguments.
bool gemm_wgmma_available();

// The tile the MmaSync path runs for `args`: args.tile, or for Auto the one chosen by shape.
GemmTile gemm_tile(const GemmArgs& args);

// The same product through cuBLAS (cublasGemmEx, fp32 compute: no TF32), for every GemmArgs.
// Without an epilogue it is one cuBLAS call (beta included). With one, cuBLAS writes the fp32
// product to `workspace` (gemm_cublas_workspace_bytes) and the epilogue above runs as a
// separate pass, so the baseline computes exactly what gemm() computes. `cublas_handle` is a
// cublasHandle_t (void* keeps cublas_v2.h out of this header); its stream is set to `stream`.
size_t gemm_cublas_workspace_bytes(const GemmArgs& args);
void gemm_cublas(const GemmArgs& args, void* cublas_handle, void* workspace, size_t workspace_bytes,
                 cudaStream_t stream);

}  // namespace lt::cuda
