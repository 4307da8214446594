// The hand-written GEMM (see gemm.h): the tensor-core kernel gemm_mma_kernel (mma.sync
// m16n8k16 bf16, ldmatrix, multi-stage cp.async pipeline, XOR-swizzled shared memory, 8 warps
// on a CTA tile) and the SIMT fallback gemm_simt_kernel.
//
// Versions (what changed): v1 the two kernels above, 128x128x32 tile, 4 stages, 64x32 warp
// tiles; three instantiations of the tensor-core kernel, one per Layout, with the epilogue
// chosen at run time (it is off the inner loop). v2 the tile is a template parameter
// (TileShape): 128x128x32 (v1, Auto's choice), 128x256x32 and 256x128x32 (4 stages, 64x64 warp
// tiles) and 128x128x64 (3 stages), each selectable through GemmArgs::tile, so `bench gemm
// --tiles` can time them all on a device before Auto's rule is set from measurements. (A
// 128x256x64 tile spilled registers on sm_90a in the TN layout; the ptxas check refused it.)
#include <climits>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemm_epilogue.cuh"

namespace lt::cuda {

const char* to_string(GemmTile t) {
  switch (t) {
    case GemmTile::Auto: return "auto";
    case GemmTile::T128x128x32: return "128x128x32";
    case GemmTile::T128x256x32: return "128x256x32";
    case GemmTile::T256x128x32: return "256x128x32";
    case GemmTile::T128x128x64: return "128x128x64";
  }
  return "?";
}

const char* to_string(GemmPath p) {
  switch (p) {
    case GemmPath::Auto: return "auto";
    case GemmPath::MmaSync: return "mma.sync";
    case GemmPath::Simt: return "simt";
    case GemmPath::Wgmma: return "wgmma";
  }
  return "?";
}

namespace detail {

// ---------------------------------------------------------------------------------------------
// Tensor-core kernel
// ---------------------------------------------------------------------------------------------

// A CTA tile shape: BM x BN outputs, BK of the reduction per pipeline stage, Stages stages in
// flight, WarpsM x WarpsN warps each owning a (BM/WarpsM) x (BN/WarpsN) warp tile.
template <int BM, int BN, int BK, int Stages, int WarpsM, int WarpsN>
struct TileShape {
  static constexpr int kBM = BM, kBN = BN, kBK = BK, kStages = Stages;
  static constexpr int kWarpsM = WarpsM, kWarpsN = WarpsN;
  static constexpr int kThreads = 32 * WarpsM * WarpsN;
  static constexpr int kWM = BM / WarpsM, kWN = BN / WarpsN;  // warp tile
  static constexpr int kMT = kWM / 16, kNT = kWN / 8;         // mma tiles per warp
  static constexpr int kATile = BM * BK, kBTile = BN * BK;    // elements per stage
  static constexpr size_t kSmemBytes = size_t(Stages) * (kATile + kBTile) * sizeof(bf16);

  static_assert(BK % 16 == 0, "BK: whole k16 mma steps");
  static_assert(kWM % 16 == 0 && kWN % 16 == 0, "warp tile: whole m16 tiles and n-tile pairs");
  static_assert(BK / 8 == 4 || BK / 8 >= 8, "K-major tile rows: 4 chunks or a power of 2 >= 8");
  static_assert((BM / 8) % 8 == 0 && (BN / 8) % 8 == 0, "MN-major tile rows: >= 8 chunks");
  static_assert((BM * BK / 8) % kThreads == 0 && (BN * BK / 8) % kThreads == 0,
                "each thread copies whole 16-byte chunks of every stage");
  static_assert(Stages >= 2, "pipeline");
  static_assert(kSmemBytes <= 160 * 1024, "shared memory: must fit sm_80's 163 KiB per block");
};

// The shapes gemm() can run (GemmTile in gemm.h). 128x128x32 has 64x32 warp tiles and leaves
// room for two CTAs per SM; 128x128x64 halves the barriers per K; 128x256 and 256x128 have
// 64x64 warp tiles (more mma per ldmatrix) and run one CTA per SM.
using Tile128x128x32 = TileShape<128, 128, 32, 4, 2, 4>;  // 64 KiB
using Tile128x256x32 = TileShape<128, 256, 32, 4, 2, 4>;  // 96 KiB
using Tile256x128x32 = TileShape<256, 128, 32, 4, 4, 2>;  // 96 KiB
using Tile128x128x64 = TileShape<128, 128, 64, 3, 2, 4>;  // 96 KiB

struct MmaParams {
  const bf16* A;
  const bf16* B;
  int64_t lda, ldb;
  int M, N, K;
  EpilogueParams epi;
};

// Number of bytes of a 16-byte (8-element) chunk that lie inside a row of `len` elements,
// starting at element `start`: 16, a partial count, or 0.
__device__ __forceinline__ int chunk_bytes(int start, int len) {
  const int rem = len - start;
  return rem <= 0 ? 0 : (rem >= 8 ? 16 : rem * 2);
}

// Copies one operand tile of a stage. Rows of the operand (m for A, n for B) are r0..r0+BR-1
// of R, reduction indices k0..k0+BK-1 of K. Out-of-range parts arrive as zeros.
//   kKMajor:  global [R][K] (ld), shared [BR][BK]   (W = BK/8 chunks per row)
//   !kKMajor: global [K][R] (ld), shared [BK][BR]   (W = BR/8 chunks per row)
template <class T, int BR, bool kKMajor>
__device__ __forceinline__ void load_tile_async(bf16* sT, const bf16* g, int64_t ld, int r0, int R, int k0,
                                                int K, int tid) {
  constexpr int W = kKMajor ? T::kBK / 8 : BR / 8;
  constexpr int kPerThread = BR * T::kBK / 8 / T::kThreads;
#pragma unroll
  for (int it = 0; it < kPerThread; ++it) {
    const int i = tid + it * T::kThreads;
    const int r = i / W, c = i % W;
    int bytes;
    const bf16* src;
    if constexpr (kKMajor) {
      const int gr = r0 + r, gk = k0 + c * 8;
      bytes = gr < R ? chunk_bytes(gk, K) : 0;
      src = g + (int64_t)gr * ld + gk;
    } else {
      const int gk = k0 + r, gr = r0 + c * 8;
      bytes = gk < K ? chunk_bytes(gr, R) : 0;
      src = g + (int64_t)gk * ld + gr;
    }
    cp_async_16(swz_ptr<W>(sT, r, c), bytes > 0 ? src : g, bytes);
  }
}

// One CTA computes a T::kBM x T::kBN tile of C. A is K-major ([M][K]) or M-major ([K][M]); B is
// K-major ([N][K]) or N-major ([K][N]). NT = <true,true>, NN = <true,false>, TN = <false,false>.
template <class T, bool kAKMajor, bool kBKMajor>
__global__ void __launch_bounds__(T::kThreads) gemm_mma_kernel(const MmaParams p) {
  constexpr int kBM = T::kBM, kBN = T::kBN, kBK = T::kBK, kStages = T::kStages;
  constexpr int kMT = T::kMT, kNT = T::kNT;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sA = reinterpret_cast<bf16*>(smem_raw);  // (kStages, kATile): [BM][BK] or [BK][BM]
  bf16* sB = sA + kStages * T::kATile;           // (kStages, kBTile): [BN][BK] or [BK][BN]
  constexpr int kWA = kAKMajor ? kBK / 8 : kBM / 8;  // chunks per shared row
  constexpr int kWB = kBKMajor ? kBK / 8 : kBN / 8;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  // Grouped rasterisation of the 1-D grid onto (tile row, tile column).
  const TileRC rc = grouped_tile(blockIdx.x, (p.M + kBM - 1) / kBM, (p.N + kBN - 1) / kBN);
  const int m_blk = rc.m * kBM, n_blk = rc.n * kBN;
  const int wm0 = (warp % T::kWarpsM) * T::kWM, wn0 = (warp / T::kWarpsM) * T::kWN;  // warp tile in CTA tile

  float acc[kMT][kNT][4];  // (m16 tile, n8 tile, C fragment)
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int ni = 0; ni < kNT; ++ni)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[mi][ni][j] = 0.f;

  const int ktiles = (p.K + kBK - 1) / kBK;
  auto load_stage = [&](int stage, int kt) {
    const int k0 = kt * kBK;
    load_tile_async<T, kBM, kAKMajor>(sA + stage * T::kATile, p.A, p.lda, m_blk, p.M, k0, p.K, tid);
    load_tile_async<T, kBN, kBKMajor>(sB + stage * T::kBTile, p.B, p.ldb, n_blk, p.N, k0, p.K, tid);
  };

  // Prologue: stages 0..kStages-2 in flight. One commit per stage even when empty, so the
  // group count stays uniform and wait_group<kStages-2> always means "tile kt has landed".
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) load_stage(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<kStages - 2>();
    // Makes tile kt visible to all warps, and ends every warp's reads of tile kt-1, whose
    // stage the next load overwrites.
    __syncthreads();
    const int next = kt + kStages - 1;
    if (next < ktiles) load_stage(next % kStages, next);
    cp_async_commit();

    bf16* a_st = sA + (kt % kStages) * T::kATile;
    bf16* b_st = sB + (kt % kStages) * T::kBTile;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t af[kMT][4];       // A fragments, one per m16 tile
      uint32_t bfr[kNT / 2][4];  // B fragments, one ldmatrix.x4 per pair of n8 tiles
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi) {
        if constexpr (kAKMajor)
          load_a_kmajor<kWA>(af[mi], a_st, wm0 + mi * 16, kk, lane);
        else
          load_a_mmajor<kWA>(af[mi], a_st, wm0 + mi * 16, kk, lane);
      }
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        if constexpr (kBKMajor)
          load_b2_kmajor<kWB>(bfr[np], b_st, wn0 + np * 16, kk, lane);
        else
          load_b2_nmajor<kWB>(bfr[np], b_st, wn0 + np * 16, kk, lane);
      }
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
        for (int ni = 0; ni < kNT; ++ni)
          mma_bf16_16816(acc[mi][ni], af[mi], bfr[ni / 2][(ni & 1) * 2], bfr[ni / 2][(ni & 1) * 2 + 1]);
    }
  }
  cp_async_wait<0>();  // only empty groups can be left; drain them before exit

  // Epilogue straight from the accumulators: row g / g+8, columns 2t, 2t+1 of each tile.
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = m_blk + wm0 + mi * 16 + g + half * 8;
      if (m >= p.M) continue;
#pragma unroll
      for (int ni = 0; ni < kNT; ++ni) {
        const int n = n_blk + wn0 + ni * 8 + 2 * t;
        if (n < p.N) epilogue_store_pair(p.epi, m, n, acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1]);
      }
    }
}

// ---------------------------------------------------------------------------------------------
// SIMT fallback: 64x64 CTA tile, 16x16 threads with 4x4 outputs each, fp32 FMA. Any strides.
// ---------------------------------------------------------------------------------------------

constexpr int kSimtTile = 64, kSimtBK = 16, kSimtThreads = 256;

struct SimtParams {
  const void* A;
  const void* B;
  int64_t a_sm, a_sk;  // element (m, k) of A is A[m*a_sm + k*a_sk]
  int64_t b_sn, b_sk;  // element (n, k) of B is B[n*b_sn + k*b_sk]
  int M, N, K;
  EpilogueParams epi;
};

template <class Tin>
__global__ void __launch_bounds__(kSimtThreads) gemm_simt_kernel(const SimtParams p) {
  __shared__ float sA[kSimtBK][kSimtTile + 1];  // [k][m]; +1: the k-fastest fill is conflict-free
  __shared__ float sB[kSimtBK][kSimtTile + 1];  // [k][n]
  const Tin* A = static_cast<const Tin*>(p.A);
  const Tin* B = static_cast<const Tin*>(p.B);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int m_blk = blockIdx.y * kSimtTile, n_blk = blockIdx.x * kSimtTile;
  const bool a_k_fast = p.a_sk == 1, b_k_fast = p.b_sk == 1;  // pick the coalescing direction
  float acc[4][4] = {};
  for (int k0 = 0; k0 < p.K; k0 += kSimtBK) {
#pragma unroll
    for (int it = 0; it < kSimtTile * kSimtBK / kSimtThreads; ++it) {
      const int e = tid + it * kSimtThreads;
      int kk = a_k_fast ? e % kSimtBK : e / kSimtTile;
      int rr = a_k_fast ? e / kSimtBK : e % kSimtTile;
      int gr = m_blk + rr, gk = k0 + kk;
      sA[kk][rr] = (gr < p.M && gk < p.K) ? to_f32(A[gr * p.a_sm + gk * p.a_sk]) : 0.f;
      kk = b_k_fast ? e % kSimtBK : e / kSimtTile;
      rr = b_k_fast ? e / kSimtBK : e % kSimtTile;
      gr = n_blk + rr;
      gk = k0 + kk;
      sB[kk][rr] = (gr < p.N && gk < p.K) ? to_f32(B[gr * p.b_sn + gk * p.b_sk]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSimtBK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = sA[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = sB[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m_blk + ty + 16 * i;
    if (m >= p.M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n_blk + tx + 16 * j;
      if (n < p.N) st_f32(p.epi.C, (int64_t)m * p.epi.ldc + n, epilogue_value(p.epi, m, n, acc[i][j]), p.epi.out_bf16);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

[[noreturn]] static void bad_args(const char* what) {
  std::fprintf(stderr, "leasetrain: internal error: gemm: %s\n", what);
  std::abort();
}

// Fills packed leading dimensions and checks the arguments; aborts on a caller bug.
static GemmArgs resolve(const GemmArgs& in) {
  GemmArgs a = in;
  const bool tn = a.layout == Layout::TN, nt = a.layout == Layout::NT;
  const int64_t a_row = tn ? a.M : a.K;  // length of one stored row of A
  const int64_t b_row = nt ? a.K : a.N;
  if (a.lda == 0) a.lda = a_row;
  if (a.ldb == 0) a.ldb = b_row;
  if (a.ldc == 0) a.ldc = a.N;
  if (a.ldr == 0) a.ldr = a.N;
  if (a.ld_aux == 0) a.ld_aux = a.N;
  if (a.M < 0 || a.N < 0 || a.K < 0) bad_args("negative dimension");
  if (a.lda < a_row || a.ldb < b_row || a.ldc < a.N || a.ldr < a.N || a.ld_aux < a.N)
    bad_args("leading dimension shorter than a row");
  if (!a.C && a.M > 0 && a.N > 0) bad_args("C is null");
  if ((!a.A || !a.B) && a.K > 0 && a.M > 0 && a.N > 0) bad_args("A or B is null");
  if (has(a.epilogue, Epilogue::Bias) && !a.bias) bad_args("Bias epilogue without bias");
  if (has(a.epilogue, Epilogue::Residual) && !a.residual) bad_args("Residual epilogue without residual");
  if (has(a.epilogue, Epilogue::GeluGrad) && !a.aux) bad_args("GeluGrad epilogue without aux");
  if (has(a.epilogue, Epilogue::Gelu) && has(a.epilogue, Epilogue::GeluGrad))
    bad_args("Gelu and GeluGrad both set (they share aux)");
  if (has(a.epilogue, Epilogue::Gelu) && a.aux && a.aux == a.C) bad_args("Gelu aux aliases C");
  return a;
}


static bool mma_eligible(const GemmArgs& a) {
  if (a.in_type != DataType::BF16) return false;
  if (!aligned16(a.A) || !aligned16(a.B) || a.lda % 8 != 0 || a.ldb % 8 != 0) return false;
  // Tiles are 1-D grid indices (int): the smallest tile bounds the count.
  const int64_t tiles = (int64_t)((a.M + 127) / 128) * ((a.N + 127) / 128);
  return tiles <= INT_MAX / 2;
}

// Auto's choice. Until a device has measured the variants (bench gemm --tiles), every shape
// takes the 128x128 tile: it keeps two CTAs per SM and wastes least on GPT-2's narrow shapes.
static GemmTile choose_tile(const GemmArgs& a) { return a.tile != GemmTile::Auto ? a.tile : GemmTile::T128x128x32; }

template <class T, bool kAKMajor, bool kBKMajor>
void launch_mma(const GemmArgs& a, cudaStream_t stream) {
  MmaParams p;
  p.A = static_cast<const bf16*>(a.A);
  p.B = static_cast<const bf16*>(a.B);
  p.lda = a.lda;
  p.ldb = a.ldb;
  p.M = a.M;
  p.N = a.N;
  p.K = a.K;
  p.epi = make_epilogue_params(a);
  auto* kernel = gemm_mma_kernel<T, kAKMajor, kBKMajor>;
  // Above the 48 KiB default: must be raised before each launch's first use on a device;
  // cheap enough to do every time, which also covers several devices per process.
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)T::kSmemBytes));
  const int64_t tiles = (int64_t)((a.M + T::kBM - 1) / T::kBM) * ((a.N + T::kBN - 1) / T::kBN);
  kernel<<<(unsigned)tiles, T::kThreads, T::kSmemBytes, stream>>>(p);
  CUDA_CHECK_LAST();
}

template <class T>
void launch_mma_layout(const GemmArgs& a, cudaStream_t stream) {
  switch (a.layout) {
    case Layout::NT: launch_mma<T, true, true>(a, stream); break;
    case Layout::NN: launch_mma<T, true, false>(a, stream); break;
    case Layout::TN: launch_mma<T, false, false>(a, stream); break;
  }
}

static void launch_mma_tile(const GemmArgs& a, cudaStream_t stream) {
  switch (choose_tile(a)) {
    case GemmTile::Auto:
    case GemmTile::T128x128x32: launch_mma_layout<Tile128x128x32>(a, stream); break;
    case GemmTile::T128x256x32: launch_mma_layout<Tile128x256x32>(a, stream); break;
    case GemmTile::T256x128x32: launch_mma_layout<Tile256x128x32>(a, stream); break;
    case GemmTile::T128x128x64: launch_mma_layout<Tile128x128x64>(a, stream); break;
  }
}

static void launch_simt(const GemmArgs& a, cudaStream_t stream) {
  SimtParams p;
  p.A = a.A;
  p.B = a.B;
  p.M = a.M;
  p.N = a.N;
  p.K = a.K;
  switch (a.layout) {
    case Layout::NT: p.a_sm = a.lda, p.a_sk = 1, p.b_sn = a.ldb, p.b_sk = 1; break;
    case Layout::NN: p.a_sm = a.lda, p.a_sk = 1, p.b_sn = 1, p.b_sk = a.ldb; break;
    case Layout::TN: p.a_sm = 1, p.a_sk = a.lda, p.b_sn = 1, p.b_sk = a.ldb; break;
  }
  p.epi = make_epilogue_params(a);
  const int64_t gy = (a.M + kSimtTile - 1) / kSimtTile, gx = (a.N + kSimtTile - 1) / kSimtTile;
  if (gy > 65535 || gx > INT_MAX) bad_args("SIMT path: M above 4M rows");
  const dim3 grid((unsigned)gx, (unsigned)gy);
  if (a.in_type == DataType::BF16)
    gemm_simt_kernel<bf16><<<grid, kSimtThreads, 0, stream>>>(p);
  else
    gemm_simt_kernel<float><<<grid, kSimtThreads, 0, stream>>>(p);
  CUDA_CHECK_LAST();
}

// gemm_wgmma.cu
bool wgmma_eligible(const GemmArgs& a);
bool wgmma_available();
bool wgmma_auto();
void launch_wgmma(const GemmArgs& a, cudaStream_t stream);

}  // namespace detail

bool gemm_wgmma_available() { return detail::wgmma_available(); }

bool gemm_mma_eligible(const GemmArgs& args) { return detail::mma_eligible(detail::resolve(args)); }

GemmTile gemm_tile(const GemmArgs& args) { return detail::choose_tile(args); }

GemmPath gemm(const GemmArgs& args, cudaStream_t stream) {
  const GemmArgs a = detail::resolve(args);
  GemmPath path = a.path;
  // Auto prefers Wgmma on Hopper unless an mma.sync tile was asked for (bench gemm --tiles).
  if (path == GemmPath::Auto && a.tile == GemmTile::Auto && detail::wgmma_auto()) path = GemmPath::Wgmma;
  if (path == GemmPath::Wgmma && !(detail::mma_eligible(a) && detail::wgmma_eligible(a) && detail::wgmma_available()))
    path = GemmPath::MmaSync;
  if (path == GemmPath::Auto || path == GemmPath::MmaSync)
    path = detail::mma_eligible(a) ? GemmPath::MmaSync : GemmPath::Simt;
  if (a.M == 0 || a.N == 0) return path;
  switch (path) {
    case GemmPath::Wgmma: detail::launch_wgmma(a, stream); break;
    case GemmPath::MmaSync: detail::launch_mma_tile(a, stream); break;
    default: detail::launch_simt(a, stream); break;
  }
  return path;
}

}  // namespace lt::cuda
