// Causal flash attention backward on Hopper (sm_90a): wgmma for every product, TMA + mbarrier
// rings, warp-specialised warpgroups. Same semantics and arguments as attention_backward
// (attention.h); entry point attention_backward_hopper.
//
// Design (v1):
//   D = rowsum(dO * O) into `scratch`: attention.cu's kernel (detail::attention_backward_dot).
//   attn_bwd_dkdv_wgmma_kernel   one CTA per (128 keys, head, batch), looping over the 64-query
//                                tiles at or after its first key. Per consumer warpgroup (64 keys):
//                                  S^T  = K Q^T         wgmma_ss m64n64, K and Q K-major
//                                  dP^T = V dO^T        wgmma_ss m64n64
//                                  P^T  = exp2(S^T * scale_log2 - lse[q]), masked key > q, q >= T
//                                  dS^T = P^T (dP^T - D[q])
//                                  dV  += P^T dO        wgmma_rs m64nD, dO MN-major ([q][d], TransB)
//                                  dK  += dS^T Q        wgmma_rs m64nD, Q MN-major
//                                dK scaled by 1/sqrt(D) at the end. K and V are loaded once (TMA);
//                                Q, dO (TMA) and lse, D (plain loads by a producer warp) stream
//                                through a 2-stage ring.
//   attn_bwd_dq_wgmma_kernel     one CTA per (128 queries, head, batch), looping over the 64-key
//                                tiles up to the diagonal: S = Q K^T, dP = dO V^T (wgmma_ss),
//                                P = exp2(S * scale_log2 - lse), dS = P (dP - D), dQ += dS K
//                                (wgmma_rs, K MN-major), scaled at the end. Q, dO loaded once;
//                                K, V stream through the ring.
//   384 threads = 3 warpgroups, as the Hopper GEMM: warpgroup 0 is the producer (setmaxnreg.dec
//   40; warp 0 lane 0 issues the TMA loads, waiting on the stage's `empty` barrier and arming its
//   `full` barrier with the stage's bytes; in dkdv warp 1 writes the stage's lse and D and
//   arrives on `full` too), warpgroups 1 and 2 are consumers (setmaxnreg.inc 232) of 64 rows each.
//   A consumer waits on `full`, runs the two wgmma_ss groups, the elementwise part in registers,
//   the wgmma_rs group(s), waits for them and releases the stage (lane 0 of each consumer warp
//   arrives on `empty`). Deterministic: every output row is owned by one thread, no atomics.
//   Shared memory: operand tiles in the 128B-swizzled layout TMA writes, a row of D bf16 split into
//   D/64 boxes of [rows][64] (128-byte rows, 8-row atoms of 1024 bytes). The same tile is K-major
//   for one product (S^T = K Q^T reads Q as [q][d]) and MN-major for another (dK += dS^T Q reads Q
//   as [k = q][n = d], next 64 d one box on: LBO = box bytes, SBO = 1024 per 8 k).
//   A consumer warpgroup skips the products of a streamed tile that its causal mask empties
//   entirely (keys all after the tile's queries) and of every tile when its own 64 rows start at
//   or past T; it still releases the stage.
//   Tensor maps are 2-D over [B*T][3C] (qkv) and [B*T][C] (dout): rows past T of a batch are the
//   next batch's (or zero fill after the last): masked (key <= q < T) and never stored.
//
// Versions (what changed): v1 as above.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/hopper.cuh"

namespace lt::cuda {
namespace detail {

// attention.cu: D = rowsum(dout * out) into dvec [B,NH,T].
void attention_backward_dot(float* dvec, const bf16* dout, const bf16* out, int B, int T, int C, int NH,
                            cudaStream_t stream);

namespace attn90 {

constexpr int kRows = 64;                      // rows per consumer warpgroup (wgmma M)
constexpr int kConsumers = 2;                  // consumer warpgroups
constexpr int kBlock = kRows * kConsumers;     // rows a CTA owns: keys (dkdv), queries (dq)
constexpr int kStream = 64;                    // rows per streamed tile: queries (dkdv), keys (dq)
constexpr int kStages = 2;
constexpr int kThreads = 128 * (1 + kConsumers);
[[maybe_unused]] constexpr int kProducerRegs = 40, kConsumerRegs = 232;  // 128*40 + 256*232 <= 64K registers
constexpr float kLog2e = 1.4426950408889634f;
static_assert(kBlock % kStream == 0, "a CTA's first row starts a streamed tile");

struct Params {
  const bf16* dout;  // [B,T,C]   (the dot kernel)
  const bf16* o;     // [B,T,C]
  const float* lse;  // [B,NH,T]
  float* dvec;       // [B,NH,T]  rowsum(dO * O)
  bf16* dqkv;        // [B,T,3C]
  int T, C, NH;
  float scale;       // 1/sqrt(D)
  float scale_log2;  // log2(e)/sqrt(D)
};

template <int D>
struct Smem {
  static constexpr int kBoxes = D / 64;                  // 64-column boxes per row
  static constexpr int kBlockBytes = kBlock * D * 2;     // a CTA's own [128][D] tile
  static constexpr int kTileBytes = kStream * D * 2;     // a streamed [64][D] tile
  // dkdv: K, V | stages of (Q, dO) | lse, D per stage | barriers. dq: Q, dO | stages of (K, V) | barriers.
  static constexpr int kRing = 2 * kBlockBytes;
  static constexpr int kSide = kRing + kStages * 2 * kTileBytes;
  static constexpr int kBars = kSide + 2 * kStages * kStream * 4;
  static constexpr size_t kBytes = 1024 /* alignment slack */ + kBars + (1 + 2 * kStages) * 8;
  static_assert(kBytes <= 227 * 1024, "shared memory: Hopper's 227 KiB per block");
};

// Descriptor of a K-major operand: rows row0.. of a tile of D/64 boxes [box_rows][64], the k16
// slice kk over its D columns (box kk/4, 32 bytes per k16 within the 128-byte row).
__device__ __forceinline__ uint64_t desc_kmajor(uint32_t tile, int box_rows, int row0, int kk) {
  return make_smem_desc(tile + (kk / 4) * box_rows * 128 + row0 * 128 + (kk % 4) * 32, 16, 1024, WgmmaSwizzle::B128);
}
// Descriptor of an MN-major B operand [k][n = D]: the same tile read with its rows as k, the k16
// slice kk (16 rows of 128 bytes); the next 64 n one box (box_rows * 128 bytes) on.
__device__ __forceinline__ uint64_t desc_mnmajor(uint32_t tile, int box_rows, int kk) {
  return make_smem_desc(tile + kk * 16 * 128, box_rows * 128, 1024, WgmmaSwizzle::B128);
}

// The wgmma_rs A fragment of the k16 slice kk from an m64 accumulator: d[4j + 2h + v] holds
// (g + 8h, 8j + 2t + v), so columns 16kk.. are j = 2kk (a[0], a[1]) and j = 2kk + 1 (a[2], a[3]).
template <int NACC>
__device__ __forceinline__ void acc_a_frag(uint32_t (&a)[4], const float (&acc)[NACC], int kk) {
  a[0] = pack_bf16x2(acc[8 * kk + 0], acc[8 * kk + 1]);
  a[1] = pack_bf16x2(acc[8 * kk + 2], acc[8 * kk + 3]);
  a[2] = pack_bf16x2(acc[8 * kk + 4], acc[8 * kk + 5]);
  a[3] = pack_bf16x2(acc[8 * kk + 6], acc[8 * kk + 7]);
}

template <int N>
__device__ __forceinline__ void zero(float (&a)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) a[i] = 0.f;
}

// The two products each kernel starts a streamed tile with, as one wgmma group, retired before
// returning: x = X[row0..row0+63] Y^T and y = Z[row0..] W^T, X and Z the CTA's own [kBlock][D]
// tiles, Y and W the streamed [kStream][D] tiles, all K-major (dK/dV: S^T = K Q^T, dP^T = V dO^T;
// dQ: S = Q K^T, dP = dO V^T).
template <int D>
__device__ __forceinline__ void two_products(float (&x)[kStream / 2], float (&y)[kStream / 2], uint32_t X, uint32_t Y,
                                             uint32_t Z, uint32_t W, int row0) {
  zero(x);
  zero(y);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wgmma_ss<kStream, 0, 0>(x, desc_kmajor(X, kBlock, row0, kk), desc_kmajor(Y, kStream, 0, kk), 1);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wgmma_ss<kStream, 0, 0>(y, desc_kmajor(Z, kBlock, row0, kk), desc_kmajor(W, kStream, 0, kk), 1);
  wgmma_commit();
  wgmma_wait<0>();
}

// map_block: qkv, boxes [128][64] (K, V once); map_q: qkv, boxes [64][64]; map_do: dout, [64][64].
template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    attn_bwd_dkdv_wgmma_kernel(const __grid_constant__ CUtensorMap map_block, const __grid_constant__ CUtensorMap map_q,
                               const __grid_constant__ CUtensorMap map_do, const Params p) {
#if defined(LT_CUDA_EMULATED_PTX) || (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
  using L = Smem<D>;
  extern __shared__ __align__(128) unsigned char smem_raw[];  // align1024 rounds up at run time
  unsigned char* smem = align1024(smem_raw);
  unsigned char* sK = smem;
  unsigned char* sV = smem + L::kBlockBytes;
  auto sQ = [&](int s) { return smem + L::kRing + s * 2 * L::kTileBytes; };
  auto sdO = [&](int s) { return smem + L::kRing + s * 2 * L::kTileBytes + L::kTileBytes; };
  float* sL = reinterpret_cast<float*>(smem + L::kSide);  // [kStages][kStream] lse
  float* sDv = sL + kStages * kStream;                    // [kStages][kStream] D
  uint64_t* kv_full = reinterpret_cast<uint64_t*>(smem + L::kBars);
  uint64_t* full = kv_full + 1;
  uint64_t* empty = full + kStages;

  const int tid = threadIdx.x, wg = tid / 128;
  const int bh = blockIdx.y, b = bh / p.NH, h = bh % p.NH;
  const int kv0 = blockIdx.x * kBlock;  // the first key blocks have the most query tiles: they start first
  const int row_b = b * p.T;            // this batch's first row in the [B*T] tensor maps
  const int qt0 = kv0 / kStream, n_qt = (p.T + kStream - 1) / kStream;

  if (tid == 0) {
    mbar_init(kv_full, 1);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1 + 32);               // the TMA thread's arrive.expect_tx + warp 1's lse/D
      mbar_init(&empty[s], kConsumers * 4);     // one arrival per consumer warp
    }
    fence_mbarrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    setmaxnreg_dec<kProducerRegs>();
    const int warp = tid / 32, lane = tid % 32;
    if (warp == 0 && lane == 0) {
      mbar_arrive_expect_tx(kv_full, 2 * L::kBlockBytes);
      for (int i = 0; i < L::kBoxes; ++i) {
        tma_load_2d(sK + i * kBlock * 128, &map_block, kv_full, p.C + h * D + 64 * i, row_b + kv0);
        tma_load_2d(sV + i * kBlock * 128, &map_block, kv_full, 2 * p.C + h * D + 64 * i, row_b + kv0);
      }
      for (int qt = qt0, it = 0; qt < n_qt; ++qt, ++it) {
        const int s = it % kStages;
        mbar_wait(&empty[s], ((it / kStages) & 1) ^ 1);  // the first pass finds every stage free
        mbar_arrive_expect_tx(&full[s], 2 * L::kTileBytes);
        for (int i = 0; i < L::kBoxes; ++i) {
          tma_load_2d(sQ(s) + i * kStream * 128, &map_q, &full[s], h * D + 64 * i, row_b + qt * kStream);
          tma_load_2d(sdO(s) + i * kStream * 128, &map_do, &full[s], h * D + 64 * i, row_b + qt * kStream);
        }
      }
    } else if (warp == 1) {
      const float* gL = p.lse + (int64_t)bh * p.T;
      const float* gD = p.dvec + (int64_t)bh * p.T;
      for (int qt = qt0, it = 0; qt < n_qt; ++qt, ++it) {
        const int s = it % kStages;
        mbar_wait(&empty[s], ((it / kStages) & 1) ^ 1);
        for (int c = lane; c < kStream; c += 32) {
          const int q = qt * kStream + c;
          sL[s * kStream + c] = q < p.T ? gL[q] : 0.f;
          sDv[s * kStream + c] = q < p.T ? gD[q] : 0.f;
        }
        mbar_arrive(&full[s]);  // release: the stores above are visible to whoever waits on full[s]
      }
    }
    return;
  }

  setmaxnreg_inc<kConsumerRegs>();
  const int c = wg - 1, warp = (tid / 32) % 4, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int key_lo = kv0 + kRows * c + 16 * warp + g;  // this thread's keys: key_lo, key_lo + 8
  const uint32_t k_tile = smem_u32(sK), v_tile = smem_u32(sV);
  float dk[D / 2], dv[D / 2];
  zero(dk);
  zero(dv);
  mbar_wait(kv_full, 0);

  for (int qt = qt0, it = 0; qt < n_qt; ++qt, ++it) {
    const int s = it % kStages;
    mbar_wait(&full[s], (it / kStages) & 1);
    // A warpgroup whose 64 keys all lie past this tile's last query, or past T, has nothing to
    // add: it only releases the stage (the condition is uniform over the warpgroup).
    const int wg_key0 = kv0 + kRows * c;
    if (wg_key0 > qt * kStream + kStream - 1 || wg_key0 >= p.T) {
      if (lane == 0) mbar_arrive(&empty[s]);
      continue;
    }
    const uint32_t q_tile = smem_u32(sQ(s)), do_tile = smem_u32(sdO(s));
    float st[kStream / 2], dpt[kStream / 2];
    two_products<D>(st, dpt, k_tile, q_tile, v_tile, do_tile, kRows * c);

    // P^T (in st) and dS^T = P^T (dP^T - D) (in dpt); columns are queries.
    const float* l_s = sL + s * kStream;
    const float* d_s = sDv + s * kStream;
    const int q_base = qt * kStream;
#pragma unroll
    for (int r = 0; r < kStream / 2; ++r) {
      const int col = 8 * (r / 4) + 2 * t + (r % 2);
      const int q = q_base + col, key = key_lo + 8 * ((r / 2) % 2);
      const bool live = key <= q && q < p.T;  // key <= q < T: key < T too
      const float pv = live ? exp2f(st[r] * p.scale_log2 - l_s[col]) : 0.f;
      st[r] = pv;
      dpt[r] = pv * (dpt[r] - d_s[col]);
    }
    uint32_t pa[kStream / 16][4], dsa[kStream / 16][4];
#pragma unroll
    for (int kq = 0; kq < kStream / 16; ++kq) {
      acc_a_frag(pa[kq], st, kq);
      acc_a_frag(dsa[kq], dpt, kq);
    }
    wgmma_fence();
#pragma unroll
    for (int kq = 0; kq < kStream / 16; ++kq) wgmma_rs<D, 1>(dv, pa[kq], desc_mnmajor(do_tile, kStream, kq), 1);
#pragma unroll
    for (int kq = 0; kq < kStream / 16; ++kq) wgmma_rs<D, 1>(dk, dsa[kq], desc_mnmajor(q_tile, kStream, kq), 1);
    wgmma_commit();
    wgmma_wait<0>();
    if (lane == 0) mbar_arrive(&empty[s]);  // this warp is done with the stage (smem and lse/D)
  }

#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int key = key_lo + 8 * hh;
    if (key >= p.T) continue;
    bf16* g_dk = p.dqkv + (int64_t)(row_b + key) * (3 * (int64_t)p.C) + p.C + h * D;
    bf16* g_dv = g_dk + p.C;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int r = 4 * j + 2 * hh;
      *reinterpret_cast<uint32_t*>(g_dk + 8 * j + 2 * t) = pack_bf16x2(dk[r] * p.scale, dk[r + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(g_dv + 8 * j + 2 * t) = pack_bf16x2(dv[r], dv[r + 1]);
    }
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // built without sm_90a: attention_backward_hopper refuses to launch it
#endif
}

// map_q: qkv, boxes [128][64] (Q once); map_do: dout, [128][64] (dO once); map_kv: qkv, [64][64].
template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    attn_bwd_dq_wgmma_kernel(const __grid_constant__ CUtensorMap map_q, const __grid_constant__ CUtensorMap map_do,
                             const __grid_constant__ CUtensorMap map_kv, const Params p) {
#if defined(LT_CUDA_EMULATED_PTX) || (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
  using L = Smem<D>;
  extern __shared__ __align__(128) unsigned char smem_raw[];  // align1024 rounds up at run time
  unsigned char* smem = align1024(smem_raw);
  unsigned char* sQ = smem;
  unsigned char* sdO = smem + L::kBlockBytes;
  auto sK = [&](int s) { return smem + L::kRing + s * 2 * L::kTileBytes; };
  auto sV = [&](int s) { return smem + L::kRing + s * 2 * L::kTileBytes + L::kTileBytes; };
  uint64_t* q_full = reinterpret_cast<uint64_t*>(smem + L::kBars);
  uint64_t* full = q_full + 1;
  uint64_t* empty = full + kStages;

  const int tid = threadIdx.x, wg = tid / 128;
  const int bh = blockIdx.y, b = bh / p.NH, h = bh % p.NH;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBlock;  // the longest (last) query blocks start first
  const int row_b = b * p.T;
  const int n_kv = min(q0 + kBlock - 1, p.T - 1) / kStream + 1;  // key tiles up to the last query

  if (tid == 0) {
    mbar_init(q_full, 1);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumers * 4);
    }
    fence_mbarrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    setmaxnreg_dec<kProducerRegs>();
    if (tid != 0) return;
    mbar_arrive_expect_tx(q_full, 2 * L::kBlockBytes);
    for (int i = 0; i < L::kBoxes; ++i) {
      tma_load_2d(sQ + i * kBlock * 128, &map_q, q_full, h * D + 64 * i, row_b + q0);
      tma_load_2d(sdO + i * kBlock * 128, &map_do, q_full, h * D + 64 * i, row_b + q0);
    }
    for (int j = 0; j < n_kv; ++j) {
      const int s = j % kStages;
      mbar_wait(&empty[s], ((j / kStages) & 1) ^ 1);
      mbar_arrive_expect_tx(&full[s], 2 * L::kTileBytes);
      for (int i = 0; i < L::kBoxes; ++i) {
        tma_load_2d(sK(s) + i * kStream * 128, &map_kv, &full[s], p.C + h * D + 64 * i, row_b + j * kStream);
        tma_load_2d(sV(s) + i * kStream * 128, &map_kv, &full[s], 2 * p.C + h * D + 64 * i, row_b + j * kStream);
      }
    }
    return;
  }

  setmaxnreg_inc<kConsumerRegs>();
  const int c = wg - 1, warp = (tid / 32) % 4, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int row_lo = q0 + kRows * c + 16 * warp + g;  // this thread's queries: row_lo, row_lo + 8
  float lse_r[2], d_r[2];
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int row = row_lo + 8 * hh;
    lse_r[hh] = row < p.T ? p.lse[(int64_t)bh * p.T + row] : 0.f;
    d_r[hh] = row < p.T ? p.dvec[(int64_t)bh * p.T + row] : 0.f;
  }
  const uint32_t q_tile = smem_u32(sQ), do_tile = smem_u32(sdO);
  float dq[D / 2];
  zero(dq);
  mbar_wait(q_full, 0);

  for (int j = 0; j < n_kv; ++j) {
    const int s = j % kStages;
    mbar_wait(&full[s], (j / kStages) & 1);
    // Keys all past this warpgroup's last query, or queries all past T: nothing to add.
    const int wg_row0 = q0 + kRows * c;
    if (j * kStream > wg_row0 + kRows - 1 || wg_row0 >= p.T) {
      if (lane == 0) mbar_arrive(&empty[s]);
      continue;
    }
    const uint32_t k_tile = smem_u32(sK(s)), v_tile = smem_u32(sV(s));
    float sc[kStream / 2], dp[kStream / 2];
    two_products<D>(sc, dp, q_tile, k_tile, do_tile, v_tile, kRows * c);

    // dS = P (dP - D), P recomputed from the saved log-sum-exp; kept in sc.
    const int kv0 = j * kStream;
#pragma unroll
    for (int r = 0; r < kStream / 2; ++r) {
      const int hh = (r / 2) % 2;
      const int key = kv0 + 8 * (r / 4) + 2 * t + (r % 2), row = row_lo + 8 * hh;
      const bool live = key <= row && row < p.T;
      const float pv = live ? exp2f(sc[r] * p.scale_log2 - lse_r[hh]) : 0.f;
      sc[r] = pv * (dp[r] - d_r[hh]);
    }
    uint32_t dsa[kStream / 16][4];
#pragma unroll
    for (int kk = 0; kk < kStream / 16; ++kk) acc_a_frag(dsa[kk], sc, kk);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kStream / 16; ++kk) wgmma_rs<D, 1>(dq, dsa[kk], desc_mnmajor(k_tile, kStream, kk), 1);
    wgmma_commit();
    wgmma_wait<0>();
    if (lane == 0) mbar_arrive(&empty[s]);
  }

#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int row = row_lo + 8 * hh;
    if (row >= p.T) continue;
    bf16* g_dq = p.dqkv + (int64_t)(row_b + row) * (3 * (int64_t)p.C) + h * D;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int r = 4 * j + 2 * hh;
      *reinterpret_cast<uint32_t*>(g_dq + 8 * j + 2 * t) = pack_bf16x2(dq[r] * p.scale, dq[r + 1] * p.scale);
    }
  }
#elif defined(__CUDA_ARCH__)
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

[[noreturn]] static void fail(const char* what, int v) {
  std::fprintf(stderr, "leasetrain: internal error: attention_backward_hopper: %s (%d)\n", what, v);
  std::abort();
}


// A map over packed rows [rows][cols] in boxes of box_rows x 64.
static CUtensorMap tensor_map(const void* base, int64_t rows, int64_t cols, uint32_t box_rows) {
  return tensor_map_2d_or_abort("attention_backward_hopper", base, (uint64_t)rows, (uint64_t)cols, (uint64_t)cols,
                                box_rows, 64);
}

template <int D>
static void backward_hopper_impl(const Params& p, const bf16* qkv, int B, cudaStream_t stream) {
  detail::attention_backward_dot(p.dvec, p.dout, p.o, B, p.T, p.C, p.NH, stream);

  const int64_t bt = (int64_t)B * p.T;
  const CUtensorMap qkv_block = tensor_map(qkv, bt, 3 * (int64_t)p.C, kBlock);
  const CUtensorMap qkv_stream = tensor_map(qkv, bt, 3 * (int64_t)p.C, kStream);
  const CUtensorMap do_block = tensor_map(p.dout, bt, p.C, kBlock);
  const CUtensorMap do_stream = tensor_map(p.dout, bt, p.C, kStream);
  const dim3 grid((p.T + kBlock - 1) / kBlock, B * p.NH);
  constexpr size_t smem = Smem<D>::kBytes;

  auto* dq_kernel = attn_bwd_dq_wgmma_kernel<D>;
  CUDA_CHECK(cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  dq_kernel<<<grid, kThreads, smem, stream>>>(qkv_block, do_block, qkv_stream, p);
  CUDA_CHECK_LAST();
  auto* dkdv_kernel = attn_bwd_dkdv_wgmma_kernel<D>;
  CUDA_CHECK(cudaFuncSetAttribute(dkdv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  dkdv_kernel<<<grid, kThreads, smem, stream>>>(qkv_block, qkv_stream, do_stream, p);
  CUDA_CHECK_LAST();
}

}  // namespace attn90
}  // namespace detail

void attention_backward_hopper(bf16* dqkv, void* scratch, const bf16* dout, const bf16* out, const float* lse,
                               const bf16* qkv, int B, int T, int C, int NH, cudaStream_t stream) {
  using namespace detail::attn90;
  if (B < 1 || T < 1 || NH < 1 || C % NH != 0) fail("bad shape B/T/C/NH, C", C);
  const int D = C / NH;
  if (D != 64 && D != 128) fail("unsupported head dim", D);
  if ((int64_t)B * NH > 65535) fail("B*NH above 65535", B * NH);
  if ((int64_t)B * T > INT32_MAX / 2) fail("B*T too large for the tensor maps' row coordinate", T);
  if (!aligned16(qkv) || !aligned16(dout) || !aligned16(out) || !aligned16(dqkv))
    fail("qkv/dout/out/dqkv not 16-byte aligned", 0);
  // The kernels exist only in sm_90a code and run only on compute capability 9.0.
  if (!attention_hopper_available()) {
    std::fprintf(stderr,
                 "leasetrain: attention_backward_hopper needs a build with sm_90a code and a compute capability 9.0 "
                 "device (use attention_backward elsewhere)\n");
    std::abort();
  }
  Params p{};
  p.dout = dout;
  p.o = out;
  p.lse = lse;
  p.dvec = static_cast<float*>(scratch);
  p.dqkv = dqkv;
  p.T = T;
  p.C = C;
  p.NH = NH;
  p.scale = 1.f / std::sqrt((float)D);
  p.scale_log2 = p.scale * kLog2e;
  if (D == 64)
    backward_hopper_impl<64>(p, qkv, B, stream);
  else
    backward_hopper_impl<128>(p, qkv, B, stream);
}

}  // namespace lt::cuda
