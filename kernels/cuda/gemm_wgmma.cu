// The Hopper GEMM path (GemmPath::Wgmma, sm_90a): TMA loads into a shared-memory ring guarded
// by mbarriers, warpgroup MMA (wgmma) from shared-memory descriptors, warp specialisation and a
// persistent grid. Same arguments, layouts and fused epilogues as the mma.sync path (gemm.h).
//
// Design (v1):
//   CTA tile 128 x 256 x 64, 4 stages of 48 KiB (A 16 KiB + B 32 KiB), 192 KiB in all.
//   384 threads = 3 warpgroups. Warpgroup 0 is the producer: it gives registers back
//   (setmaxnreg.dec 24) and one thread issues the TMA loads of every stage, waiting on the
//   stage's `empty` barrier before overwriting it and arming its `full` barrier with the
//   stage's bytes (arrive.expect_tx). Warpgroups 1 and 2 are consumers (setmaxnreg.inc 240):
//   each owns 64 rows of the tile, 128 fp32 accumulators per thread (m64 n256), waits on
//   `full`, issues four wgmma m64n256k16 (one per k16 of the stage), keeps one wgmma group in
//   flight and releases the previous stage (one arrival per consumer warp on `empty`).
//   The epilogue runs from the accumulators straight to global memory (the shared epilogue of
//   gemm_epilogue.cuh), while the producer already streams the next tile's stages.
//   Persistent grid: min(tiles, SMs) CTAs walk the output tiles in the grouped order of the
//   mma.sync path (8 tile rows sweep the columns together, for L2 reuse).
//   Shared memory: every operand tile in the 128B-swizzled layout TMA writes (rows of 64 bf16
//   = 128 bytes, 8-row atoms of 1024 bytes); K-major operands (A of NT/NN, B of NT) are one
//   box [rows][64 k]; MN-major operands (A of TN, B of NN/TN) are 64-wide boxes [64 k][64 mn]
//   side by side, read by wgmma with the transpose bit. Out-of-range rows, columns and the K
//   tail arrive as zeros (TMA's out-of-bounds fill), so ragged shapes need no special case.
//   Seam for later: thread-block clusters with TMA multicast (the tensor maps and barriers
//   would gain a cluster dimension; nothing else changes).
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemm_epilogue.cuh"
#include "kernels/cuda/hopper.cuh"

namespace lt::cuda::detail {

constexpr int kWgBM = 128, kWgBN = 256, kWgBK = 64, kWgStages = 4;
constexpr int kWgConsumers = 2;                  // consumer warpgroups, 64 rows each
constexpr int kWgThreads = 128 * (1 + kWgConsumers);
constexpr int kWgABytes = kWgBM * kWgBK * 2;     // 16 KiB
constexpr int kWgBBytes = kWgBN * kWgBK * 2;     // 32 KiB
constexpr int kWgStageBytes = kWgABytes + kWgBBytes;
[[maybe_unused]] constexpr int kWgBox = 8192;                  // one [64][64] bf16 box
constexpr size_t kWgSmemBytes = 1024 /* alignment slack */ + size_t(kWgStages) * kWgStageBytes + 2 * kWgStages * 8;
static_assert(kWgSmemBytes <= 227 * 1024, "shared memory: Hopper's 227 KiB per block");

struct WgmmaParams {
  int M, N, K;
  EpilogueParams epi;
};

// Descriptor of the k16 slice `kk` (0..3) of an operand tile at shared address `tile`, `rows`
// rows (m or n) of which this wgmma reads starting at `row0` (a multiple of 64).
template <bool kKMajor>
__device__ __forceinline__ uint64_t operand_desc(uint32_t tile, int row0, int kk) {
  if constexpr (kKMajor)  // [rows][64 k], 128-byte rows: next 8 rows 1024 bytes on, k16 = 32 bytes
    return make_smem_desc(tile + row0 * 128 + kk * 32, 16, 1024, WgmmaSwizzle::B128);
  else  // boxes [64 k][64 mn]: next 8 k 1024 bytes on, k16 = 2048 bytes, next 64 mn one box on
    return make_smem_desc(tile + (row0 / 64) * kWgBox + kk * 2048, kWgBox, 1024, WgmmaSwizzle::B128);
}

// A is K-major ([M][K]) or M-major ([K][M]); B is K-major ([N][K]) or N-major ([K][N]).
// NT = <true,true>, NN = <true,false>, TN = <false,false>.
template <bool kAKMajor, bool kBKMajor>
__global__ void __launch_bounds__(kWgThreads, 1)
    gemm_wgmma_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                      const WgmmaParams p) {
#if defined(LT_CUDA_EMULATED_PTX) || (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
  extern __shared__ __align__(128) unsigned char smem_raw[];  // align1024 rounds up at run time
  unsigned char* smem = align1024(smem_raw);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kWgStages * kWgStageBytes);
  uint64_t* empty = full + kWgStages;
  auto stage_a = [&](int s) { return smem + s * kWgStageBytes; };
  auto stage_b = [&](int s) { return smem + s * kWgStageBytes + kWgABytes; };

  const int tid = threadIdx.x, wg = tid / 128;
  if (tid == 0) {
    for (int s = 0; s < kWgStages; ++s) {
      mbar_init(&full[s], 1);                   // the producer's arrive.expect_tx (+ the bytes)
      mbar_init(&empty[s], kWgConsumers * 4);  // one arrival per consumer warp
    }
    fence_mbarrier_init();
  }
  __syncthreads();

  const int grid_m = (p.M + kWgBM - 1) / kWgBM, grid_n = (p.N + kWgBN - 1) / kWgBN;
  const int tiles = grid_m * grid_n, ktiles = (p.K + kWgBK - 1) / kWgBK;

  if (wg == 0) {
    setmaxnreg_dec<24>();
    if (tid != 0) return;
    int it = 0;  // stage uses across all of this CTA's tiles: stage it % S, phase (it / S) & 1
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      const TileRC rc = grouped_tile(tile, grid_m, grid_n);
      const int m0 = rc.m * kWgBM, n0 = rc.n * kWgBN;
      for (int kt = 0; kt < ktiles; ++kt, ++it) {
        const int s = it % kWgStages;
        mbar_wait(&empty[s], ((it / kWgStages) & 1) ^ 1);  // the first pass finds every stage free
        mbar_arrive_expect_tx(&full[s], kWgStageBytes);
        const int k0 = kt * kWgBK;
        if constexpr (kAKMajor) {
          tma_load_2d(stage_a(s), &map_a, &full[s], k0, m0);
        } else {
          for (int j = 0; j < kWgBM / 64; ++j) tma_load_2d(stage_a(s) + j * kWgBox, &map_a, &full[s], m0 + 64 * j, k0);
        }
        if constexpr (kBKMajor) {
          tma_load_2d(stage_b(s), &map_b, &full[s], k0, n0);
        } else {
          for (int j = 0; j < kWgBN / 64; ++j) tma_load_2d(stage_b(s) + j * kWgBox, &map_b, &full[s], n0 + 64 * j, k0);
        }
      }
    }
    return;
  }

  setmaxnreg_inc<240>();
  const int c = wg - 1, warp = (tid / 32) % 4, lane = tid % 32;
  constexpr int kAcc = kWgBN / 2;  // m64 n256: 128 fp32 per thread
  int it = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const TileRC rc = grouped_tile(tile, grid_m, grid_n);
    const int m0 = rc.m * kWgBM, n0 = rc.n * kWgBN;
    float acc[kAcc];
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;
    int held = -1;  // the stage whose wgmma group may still be reading it
    for (int kt = 0; kt < ktiles; ++kt, ++it) {
      const int s = it % kWgStages;
      mbar_wait(&full[s], (it / kWgStages) & 1);
      const uint32_t a = smem_u32(stage_a(s)), b = smem_u32(stage_b(s));
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kWgBK / 16; ++kk)
        wgmma_ss<kWgBN, kAKMajor ? 0 : 1, kBKMajor ? 0 : 1>(acc, operand_desc<kAKMajor>(a, 64 * c, kk),
                                                             operand_desc<kBKMajor>(b, 0, kk), 1);
      wgmma_commit();
      wgmma_wait<1>();  // the previous stage's group has retired: give that stage back
      if (held >= 0 && lane == 0) mbar_arrive(&empty[held]);
      held = s;
    }
    wgmma_wait<0>();
    if (held >= 0 && lane == 0) mbar_arrive(&empty[held]);

    // Accumulator fragment: warp `warp` owns rows 16*warp.., (g, g+8) x (8j+2t, 8j+2t+1).
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = m0 + 64 * c + 16 * warp + g + 8 * h;
      if (m >= p.M) continue;
#pragma unroll
      for (int j = 0; j < kWgBN / 8; ++j) {
        const int n = n0 + 8 * j + 2 * t;
        if (n < p.N) epilogue_store_pair(p.epi, m, n, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
      }
    }
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // built without sm_90a: gemm() never launches this path there
#endif
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

// What the Wgmma path needs beyond the MmaSync path's dtype and alignment (gemm.cu checks both):
// a non-empty product and a tile count an int holds.
bool wgmma_eligible(const GemmArgs& a) {
  if (a.M <= 0 || a.N <= 0 || a.K <= 0) return false;
  const int64_t tiles = (int64_t)((a.M + kWgBM - 1) / kWgBM) * ((a.N + kWgBN - 1) / kWgBN);
  return tiles <= INT_MAX / 2;
}

// Per current device, computed once: 0 unknown, else the computed value (> 0). The device's
// model cannot change under a process, so mixed-GPU machines get each device's own answer.
constexpr int kMaxDevices = 64;
template <class F>
static int per_device(std::atomic<int> (&cache)[kMaxDevices], F compute) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return compute();
  int v = cache[dev].load(std::memory_order_relaxed);
  if (v == 0) cache[dev].store(v = compute(), std::memory_order_relaxed);
  return v;
}

// True when this process can run the Wgmma path on the current device: the build has sm_90a
// code and the device is compute capability 9.0 (the emulator models the instructions).
bool wgmma_available() {
#if defined(LT_CUDA_EMULATED_PTX)
  return true;
#elif defined(LEASETRAIN_HAVE_SM90A)
  static std::atomic<int> cache[kMaxDevices];
  return per_device(cache, [] {
           int dev = 0, major = 0, minor = 0;
           if (cudaGetDevice(&dev) != cudaSuccess ||
               cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
               cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
             return 1;
           return major == 9 && minor == 0 ? 2 : 1;
         }) == 2;
#else
  return false;
#endif
}

// Whether Auto takes the Wgmma path: on a Hopper device, never in the emulator (whose other
// tests keep the mma.sync path; the Wgmma tests ask for it by name).
bool wgmma_auto() {
#if defined(LT_CUDA_EMULATED_PTX)
  return false;
#else
  return wgmma_available();
#endif
}

// The current device's SM count, the persistent grid's size.
static int sm_count() {
#if defined(LT_CUDA_EMULATED_PTX)
  return 2;  // the emulator: two CTAs, so each walks several tiles and the ring wraps across them
#else
  static std::atomic<int> cache[kMaxDevices];
  return per_device(cache, [] {
    int dev = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n > 0 ? n : 1;
  });
#endif
}

template <bool kAKMajor, bool kBKMajor>
static void launch_wgmma_layout(const GemmArgs& a, cudaStream_t stream) {
  // A: K-major [M][K] boxes 128 x 64, or M-major [K][M] boxes 64 x 64; B likewise with N.
  constexpr const char* who = "gemm (wgmma)";
  const CUtensorMap map_a = kAKMajor ? tensor_map_2d_or_abort(who, a.A, a.M, a.K, a.lda, kWgBM, 64)
                                     : tensor_map_2d_or_abort(who, a.A, a.K, a.M, a.lda, 64, 64);
  const CUtensorMap map_b = kBKMajor ? tensor_map_2d_or_abort(who, a.B, a.N, a.K, a.ldb, kWgBN, 64)
                                     : tensor_map_2d_or_abort(who, a.B, a.K, a.N, a.ldb, 64, 64);
  WgmmaParams p;
  p.M = a.M;
  p.N = a.N;
  p.K = a.K;
  p.epi = make_epilogue_params(a);
  auto* kernel = gemm_wgmma_kernel<kAKMajor, kBKMajor>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kWgSmemBytes));
  const int sms = sm_count();
  const int64_t tiles = (int64_t)((a.M + kWgBM - 1) / kWgBM) * ((a.N + kWgBN - 1) / kWgBN);
  const unsigned grid = (unsigned)(tiles < sms ? tiles : sms);
  kernel<<<grid, kWgThreads, kWgSmemBytes, stream>>>(map_a, map_b, p);
  CUDA_CHECK_LAST();
}

void launch_wgmma(const GemmArgs& a, cudaStream_t stream) {
  switch (a.layout) {
    case Layout::NT: launch_wgmma_layout<true, true>(a, stream); break;
    case Layout::NN: launch_wgmma_layout<true, false>(a, stream); break;
    case Layout::TN: launch_wgmma_layout<false, false>(a, stream); break;
  }
}

}  // namespace lt::cuda::detail
