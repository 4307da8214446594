// Shared device helpers for the hand-written CUDA kernels.
// defines: CUDA_CHECK, CUDA_CHECK_LAST, aligned16, bf16 conversion/packing, gelu math, warp/block
//          reductions, and inline-PTX wrappers for cp.async, ldmatrix and mma.sync m16n8k16.
// Only included from .cu files (device code); the host APIs are in the matching .h files.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

// Reports file:line and the CUDA runtime's message, then aborts: a failed CUDA call inside a
// step leaves the device in an unknown state, so there is nothing sensible to continue with.
#define CUDA_CHECK(call)                                                                \
  do {                                                                                  \
    cudaError_t lt_cuda_err_ = (call);                                                  \
    if (lt_cuda_err_ != cudaSuccess) {                                                  \
      std::fprintf(stderr, "leasetrain: CUDA error at %s:%d: %s (%s)\n", __FILE__,      \
                   __LINE__, cudaGetErrorString(lt_cuda_err_), #call);                  \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

// After a kernel launch: catches bad launch configurations (not asynchronous faults).
#define CUDA_CHECK_LAST() CUDA_CHECK(cudaGetLastError())

namespace lt::cuda {

using bf16 = __nv_bfloat16;

// Host: the 16-byte alignment every tensor-core path needs of its base pointers (16-byte loads,
// cp.async chunks, TMA tensor maps).
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ---------------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }

// Two floats as one bf16x2 register: `lo` in bits 0..15. In mma fragments the element with
// the lower column index lives in the low half, so pack(c[0], c[1]) is the natural order.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// GELU, tanh approximation, in the CPU reference's form x * sigmoid(2u) (= 0.5 x (1 + tanh u)
// without the cancellation of 1 + tanh u in the negative tail). The exponent is capped so
// e^(-2u) stays finite and t * s never meets inf * 0.
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2/pi)
__device__ __forceinline__ float gelu_f(float x) {
  const float u = kGeluScale * (x + 0.044715f * x * x * x);
  return x / (1.f + expf(fminf(-2.f * u, 88.f)));
}
__device__ __forceinline__ float gelu_grad_f(float x) {
  const float u = kGeluScale * (x + 0.044715f * x * x * x);
  const float du = kGeluScale * (1.f + 3.f * 0.044715f * x * x);
  const float t = expf(fminf(-2.f * u, 88.f)), s = 1.f / (1.f + t);  // s = sigmoid(2u), 1 - s = t s
  return s + 2.f * x * du * (t * s) * s;
}

// ---------------------------------------------------------------------------------------------
// Reductions. Fixed shuffle trees: the result does not depend on timing (deterministic).
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block-wide reduction; every thread gets the result. `scratch` holds >= 32 values; the
// leading and trailing barriers make back-to-back calls with one scratch array safe.
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T v, T* scratch, Op op) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < nwarps; w++) r = op(r, scratch[w]);
  return r;
}

// The inline-PTX wrappers below (cp.async, ldmatrix, mma.sync) are the only device code that
// cannot run on a CPU. tests/cuda/emulator.h defines LT_CUDA_EMULATED_PTX and host versions of
// them, which is how the kernels' index math is exercised on machines without a GPU.
#ifndef LT_CUDA_EMULATED_PTX

// ---------------------------------------------------------------------------------------------
// cp.async (sm_80+): global -> shared without a register round trip.
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Copies 16 bytes; only the first `src_bytes` (0..16) are read from global, the rest of the
// 16 shared bytes are zero-filled. This is how every tile tail is handled: out-of-range rows
// and columns arrive as zeros and contribute nothing to a dot product. With src_bytes == 0
// nothing is read, but `gsrc` must still be a valid address (callers pass the tensor base).
__device__ __forceinline__ void cp_async_16(void* sdst, const void* gsrc, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(sdst)), "l"(gsrc),
               "r"(src_bytes));
}
// 4-byte variant (for fp32 side vectors whose rows are not 16-byte aligned); .ca: 4 < 16.
__device__ __forceinline__ void cp_async_4(void* sdst, const void* gsrc, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(sdst)), "l"(gsrc),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's committed groups are still in flight. Other
// threads' copies become visible only after a following __syncthreads().
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");  // no plain load moves above it
}

// ---------------------------------------------------------------------------------------------
// ldmatrix: four 8x8 b16 matrices from shared memory into registers, warp-wide.
// Lanes 8i..8i+7 give the row addresses (16 contiguous bytes each) of matrix i; register i
// receives matrix i. Without .trans, lane l holds row l/4, columns 2(l%4), 2(l%4)+1 of each
// matrix; with .trans it holds the transpose: column l/4, rows 2(l%4), 2(l%4)+1.
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem_row)));
}

// ---------------------------------------------------------------------------------------------
// mma.sync m16n8k16, bf16 inputs, fp32 accumulators: D[16x8] = A[16x16] * B[16x8] + D.
// g = lane/4 (group), t = lane%4 (thread in group). Fragments (each b32 holds 2 bf16, the
// lower column/k index in the low half):
//   A (row-major 16x16): a0 = (row g,   k 2t..2t+1)   a1 = (row g+8, k 2t..2t+1)
//                        a2 = (row g,   k 2t+8..+9)   a3 = (row g+8, k 2t+8..+9)
//   B (col-major 16x8):  b0 = (k 2t..2t+1, col g)    b1 = (k 2t+8..+9, col g)
//   C/D (fp32 16x8):     d0,d1 = (row g, col 2t, 2t+1)   d2,d3 = (row g+8, col 2t, 2t+1)
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#endif  // LT_CUDA_EMULATED_PTX

// An fp32 accumulator tile acc[NT][4] of shape 16 x (8*NT) becomes the A fragment of the
// k-step kk (columns 16kk..16kk+15) of a following mma, without touching shared memory: the
// C layout of n-tiles 2kk and 2kk+1 is exactly the A layout of that 16x16 block.
template <int NT>
__device__ __forceinline__ void acc_to_a_frag(uint32_t (&a)[4], const float (&acc)[NT][4], int kk) {
  a[0] = pack_bf16x2(acc[2 * kk][0], acc[2 * kk][1]);
  a[1] = pack_bf16x2(acc[2 * kk][2], acc[2 * kk][3]);
  a[2] = pack_bf16x2(acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
  a[3] = pack_bf16x2(acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
}

// ---------------------------------------------------------------------------------------------
// Swizzled shared-memory tiles of bf16, addressed in 16-byte chunks (8 elements).
// A tile has ROWS rows of W chunks. ldmatrix reads one chunk from each of 8 consecutive rows;
// without a swizzle those land in the same banks (rows are a multiple of 128 bytes apart, or
// 64 for W == 4). XOR-ing the chunk index with bits of the row index spreads the 8 reads over
// all 32 banks; cp.async writes whole chunks, so the permutation costs nothing to apply.
//   W >= 8: chunk c of row r is stored at chunk c ^ (r % 8)
//   W == 4: rows are 64 bytes, two rows share a 128-byte bank line: c ^ ((r / 2) % 4)
// ---------------------------------------------------------------------------------------------

template <int W>
__device__ __forceinline__ int swz_chunk(int r, int c) {
  static_assert(W == 4 || (W >= 8 && (W & (W - 1)) == 0), "tile width: 4 or a power of 2 >= 8 chunks");
  if constexpr (W == 4)
    return r * 4 + (c ^ ((r >> 1) & 3));
  else
    return r * W + (c ^ (r & 7));
}
// Element pointer of (row r, chunk c) in a swizzled tile.
template <int W>
__device__ __forceinline__ bf16* swz_ptr(bf16* tile, int r, int c) {
  return tile + swz_chunk<W>(r, c) * 8;
}

// Fragment loads from swizzled tiles. "K-major" tiles store [row = m or n][k] (k contiguous),
// "MN-major" tiles store [k][m or n]. Coordinates are tile-local; k0 and the row/column
// offsets are multiples of 16 (of 8 for the chunk math).

// A fragment (16 x 16 at rows m0.., k0..) from a K-major tile [m][k].
template <int W>
__device__ __forceinline__ void load_a_kmajor(uint32_t (&a)[4], bf16* tile, int m0, int k0, int lane) {
  ldmatrix_x4(a, swz_ptr<W>(tile, m0 + (lane & 15), (k0 >> 3) + (lane >> 4)));
}
// A fragment from an M-major tile [k][m] (the transpose is done by ldmatrix.trans).
template <int W>
__device__ __forceinline__ void load_a_mmajor(uint32_t (&a)[4], bf16* tile, int m0, int k0, int lane) {
  ldmatrix_x4_trans(a, swz_ptr<W>(tile, k0 + (lane & 7) + ((lane >> 4) << 3),
                                 (m0 >> 3) + ((lane >> 3) & 1)));
}
// B fragments of two adjacent n-tiles (n0..n0+7 -> b[0], b[1]; n0+8..n0+15 -> b[2], b[3])
// from a K-major tile [n][k].
template <int W>
__device__ __forceinline__ void load_b2_kmajor(uint32_t (&b)[4], bf16* tile, int n0, int k0, int lane) {
  ldmatrix_x4(b, swz_ptr<W>(tile, n0 + (lane & 7) + ((lane >> 4) << 3), (k0 >> 3) + ((lane >> 3) & 1)));
}
// The same from an N-major tile [k][n].
template <int W>
__device__ __forceinline__ void load_b2_nmajor(uint32_t (&b)[4], bf16* tile, int n0, int k0, int lane) {
  ldmatrix_x4_trans(b, swz_ptr<W>(tile, k0 + (lane & 7) + (((lane >> 3) & 1) << 3),
                                 (n0 >> 3) + (lane >> 4)));
}

}  // namespace lt::cuda
