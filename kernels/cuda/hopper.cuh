// Hopper (sm_90a) primitives for the wgmma/TMA kernels: shared-memory mbarriers with
// transaction counts, the tensor copy engine (TMA) loading 2-D boxes, warpgroup MMA (wgmma)
// with shared-memory matrix descriptors, and register reallocation (setmaxnreg).
// defines: smem_u32, align1024, mbar_*, fence_proxy_async, fence_mbarrier_init, tma_load_2d,
//          WgmmaSwizzle, make_smem_desc, wgmma_fence/commit/wait, wgmma_ss, wgmma_rs,
//          setmaxnreg_inc/dec, make_tensor_map_2d, tensor_map_2d_or_abort (host).
//
// Like common.cuh's cp.async/ldmatrix/mma.sync wrappers, every function that is one PTX
// instruction is defined here only for the GPU (#ifndef LT_CUDA_EMULATED_PTX); the CPU emulator
// (tests/cuda/emulator_hopper.h) defines the same names from the PTX ISA, independently of the
// kernels that call them. The emulated shared window does not start at a 1024-byte boundary,
// so a kernel that forgets to align its swizzled tiles fails there as it would on a GPU.
//
// PTX references (ISA 8.x, "Parallel Synchronization and Communication Instructions: mbarrier",
// "Data Movement: cp.async.bulk.tensor", "Asynchronous Warpgroup Level Matrix Multiply-
// Accumulate Instructions"):
//   mbarrier: a 64-bit object in shared memory with a phase, a pending-arrival count and a
//     transaction (tx) count. A phase completes when both reach zero; then the phase flips and
//     the pending count is reset to the init count. try_wait.parity(P) is true once the phase
//     with parity P has completed, i.e. while the current phase's parity is !P.
//   cp.async.bulk.tensor: one thread copies a box described by a tensor map (made on the host
//     with cuTensorMapEncodeTiled) into shared memory; the bytes written (the whole box, the
//     out-of-bounds part zero-filled) complete_tx on the given mbarrier.
//   wgmma.mma_async: a warpgroup (4 consecutive warps, the first warp index a multiple of 4)
//     computes D[64 x N] (+)= A[64 x 16] * B[16 x N]; operands may be read any time until the
//     wgmma.wait_group that retires it. wgmma.fence orders prior register accesses (and the
//     accumulators) before it; commit_group closes a group; wait_group N waits until at most N
//     groups are pending.
#pragma once
#include <cuda.h>  // CUtensorMap and its enums (types only: nothing links libcuda)
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace lt::cuda {

#ifndef LT_CUDA_EMULATED_PTX

// ---- mbarrier -----------------------------------------------------------------------------------

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}
// Makes mbarrier.init visible to the async proxy (the copy engine) and the other threads.
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("{ .reg .b64 st; mbarrier.arrive.shared::cta.b64 st, [%0]; }\n" ::"r"(smem_u32(bar))
               : "memory");
}
// Arrives and adds `bytes` to the phase's expected transaction count.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("{ .reg .b64 st; mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1; }\n" ::"r"(
                   smem_u32(bar)),
               "r"(bytes)
               : "memory");
}
// True when the phase with parity `parity` has completed (acquire: its writes are visible).
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }\n"
      : "=r"(done)
      : "r"(smem_u32(bar)), "r"(parity)
      : "memory");
  return done != 0;
}

// Orders this thread's generic-proxy shared-memory accesses before later async-proxy ones
// (TMA, wgmma operand reads) and the reverse.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// ---- TMA ----------------------------------------------------------------------------------------

// Loads the box at element coordinates (x = innermost, y) of `map` into shared memory at
// `dst` (aligned as the map's swizzle requires: 1024 bytes for 128B), completing the box's
// bytes on `bar`.
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, uint64_t* bar, int x, int y) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], "
      "[%2];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(x), "r"(y)
      : "memory");
}

// ---- wgmma --------------------------------------------------------------------------------------

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

template <int R>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}

#endif  // LT_CUDA_EMULATED_PTX

// Spins on try_wait until the phase with parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  while (!mbar_try_wait(bar, parity)) {
  }
}

// The first 1024-byte boundary (in shared addresses) at or after `raw`: where swizzled tiles
// start, since the 128B swizzle is a function of absolute shared-address bits (callers reserve
// 1024 bytes of slack in their dynamic shared memory).
__device__ __forceinline__ unsigned char* align1024(unsigned char* raw) {
  return raw + ((1024 - (smem_u32(raw) & 1023)) & 1023);
}

// ---- Shared-memory matrix descriptors (plain arithmetic: the same on GPU and emulator) ----------

// The descriptor's swizzle field (bits 62-63).
enum class WgmmaSwizzle : uint64_t { None = 0, B128 = 1, B64 = 2, B32 = 3 };

// A wgmma operand descriptor for the matrix starting at shared address `smem`: start address,
// leading- and stride-dimension byte offsets (multiples of 16) and swizzle mode. Base offset 0:
// the swizzle atoms of the matrix must start on the swizzle's repeat boundary (1024 bytes for
// 128B). For the 128B swizzle of our tiles (rows of 64 bf16 = 128 bytes, 8-row atoms):
//   K-major  (tile [rows][64 k]):       SBO = 1024 (next 8 rows), LBO unused (16)
//   MN-major (tile [k][64 m/n] boxes):  SBO = 1024 (next 8 k), LBO = bytes between 64-wide boxes
__device__ __forceinline__ uint64_t make_smem_desc(uint32_t smem_addr, uint32_t lbo_bytes, uint32_t sbo_bytes,
                                                   WgmmaSwizzle swizzle) {
  uint64_t d = 0;
  d |= uint64_t((smem_addr & 0x3FFFF) >> 4);
  d |= uint64_t((lbo_bytes & 0x3FFFF) >> 4) << 16;
  d |= uint64_t((sbo_bytes & 0x3FFFF) >> 4) << 32;
  d |= uint64_t(swizzle) << 62;
  return d;
}

// ---- Tensor maps (host) --------------------------------------------------------------------------

// A 2-D bf16 tensor map over row-major storage [rows][cols] with leading dimension `ld`
// elements (ld % 8 == 0, base 16-byte aligned), loading boxes of box_rows x box_cols elements
// (box_cols * 2 <= 128 bytes for the 128B swizzle), 128B swizzle, out-of-bounds elements
// zero-filled. cuTensorMapEncodeTiled comes from the driver through the runtime
// (cudaGetDriverEntryPointByVersion), so nothing links libcuda. Returns false (and `why`) when
// the driver refuses the map.
inline bool make_tensor_map_2d(CUtensorMap* map, const void* base, uint64_t rows, uint64_t cols, uint64_t ld,
                               uint32_t box_rows, uint32_t box_cols, const char** why) {
  using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                              const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                              CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  static Encode encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      fn = nullptr;
    return reinterpret_cast<Encode>(fn);
  }();
  if (!encode) {
    *why = "the driver has no cuTensorMapEncodeTiled";
    return false;
  }
  const cuuint64_t dims[2] = {cols, rows};
  const cuuint64_t strides[1] = {ld * 2};  // bytes between rows; the innermost stride is implied
  const cuuint32_t box[2] = {box_cols, box_rows};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base), dims, strides, box,
                            elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    *why = "cuTensorMapEncodeTiled refused the map";
    return false;
  }
  return true;
}

// make_tensor_map_2d for the kernels' launchers, where a refused map is a caller bug: one line
// naming `who` and the driver's reason, then abort (as CUDA_CHECK does).
inline CUtensorMap tensor_map_2d_or_abort(const char* who, const void* base, uint64_t rows, uint64_t cols,
                                          uint64_t ld, uint32_t box_rows, uint32_t box_cols) {
  CUtensorMap map;
  const char* why = nullptr;
  if (!make_tensor_map_2d(&map, base, rows, cols, ld, box_rows, box_cols, &why)) {
    std::fprintf(stderr, "leasetrain: internal error: %s: %s\n", who, why);
    std::abort();
  }
  return map;
}

}  // namespace lt::cuda

// wgmma.mma_async m64nNk16 f32 += bf16 * bf16, the forms the kernels use; the fragment of D
// in each thread (ISA figure "WGMMA .m64nNk16 register fragment layout for accumulator matrix
// D"): warp w of the warpgroup owns rows 16w..16w+15; with g = lane/4, t = lane%4, registers
// d[4j..4j+3] hold (row g, col 8j+2t), (g, 8j+2t+1), (g+8, 8j+2t), (g+8, 8j+2t+1).
//   wgmma_ss<N, TransA, TransB>(d, desc_a, desc_b, scale_d): A and B from shared memory;
//     Trans = 0: K-major, 1: MN-major ("transposed"). scale_d = 0: D = A*B (ignores d's value).
//   wgmma_rs<N, TransB>(d, a, desc_b, scale_d): A from registers, mma.m16n8k16's A fragment
//     layout within each warp's 16 rows (a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] =
//     (g, 2t+8..), a[3] = (g+8, 2t+8..)).
#include "kernels/cuda/wgmma_ops.cuh"
