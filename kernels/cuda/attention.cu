// Causal flash attention (see attention.h): FlashAttention-2 structure on mma.sync m16n8k16.
//   flash_fwd_kernel       one CTA per (64 query rows, batch*head); 4 warps x 16 rows; K/V
//                          tiles of 64 keys double-buffered through cp.async; online softmax
//                          in base 2; O and the row log-sum-exp written at the end.
//   flash_bwd_dot_kernel   D = rowsum(dO * O), one warp per (token, head).
//   flash_bwd_dq_kernel    one CTA per query block: recompute P from the LSE, dP = dO V^T,
//                          dS = P (dP - D), dQ = scale * dS K.
//   flash_bwd_dkdv_kernel  one CTA per key block, looping over the query blocks at or after it:
//                          P^T = exp2(K Q^T - lse), dV = P^T dO, dS^T = P^T (V dO^T - D),
//                          dK = scale * dS^T Q.
// Splitting dQ from dK/dV recomputes S and dP once more (8 matmuls instead of FA2's 5) but
// needs no fp32 atomics, so gradients are bit-identical run to run.
//
// Versions (what changed): v1 as above. Masks: key > query (causal) and rows/keys >= T.
// v2: attention_forward runs the Hopper forward (attention_wgmma.cu) on a compute capability
// 9.0 device when the build has sm_90a code; these kernels everywhere else and for the backward.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/common.cuh"

namespace lt::cuda {
namespace detail {

bool wgmma_auto();  // gemm_wgmma.cu: a Hopper device with sm_90a code, never in the emulator

constexpr int kAttnThreads = 128;  // 4 warps, 16 rows each
constexpr int kBQ = 64;            // query rows per CTA (forward, dq)
constexpr int kBKV = 64;           // keys per tile (forward, dq) and per CTA (dkdv)
constexpr float kLog2e = 1.4426950408889634f;
static_assert(kBQ == 16 * (kAttnThreads / 32) && kBKV == 16 * (kAttnThreads / 32),
              "one m16 tile of rows per warp");
static_assert(kBQ == kBKV, "causal tile count: query block qb needs key tiles 0..qb");

// dkdv inner query tile: smaller at D=128 so dK, dV (2 x 64 fp32 per thread) plus S^T and dP^T fit
// in registers without spilling.
template <int D>
constexpr int kDkdvBQ = D == 128 ? 32 : 64;

struct AttnParams {
  const bf16* qkv;   // [B,T,3C]
  bf16* out;         // [B,T,C]   forward output
  float* lse;        // [B,NH,T]  forward output, backward input
  const bf16* dout;  // [B,T,C]
  const bf16* o;     // [B,T,C]   forward output, read by backward
  float* dvec;       // [B,NH,T]  rowsum(dO * O)
  bf16* dqkv;        // [B,T,3C]
  int T, C, NH;
  float scale;       // 1/sqrt(D)
  float scale_log2;  // log2(e)/sqrt(D): scores go straight to the exp2 domain
};

// Copies rows row0..row0+ROWS-1 (of T) of one head's D columns into a swizzled [ROWS][D] tile;
// g points at row 0 of the head slice, rows are ld elements apart. Rows >= T arrive as zeros.
template <int ROWS, int D>
__device__ __forceinline__ void load_rows_async(bf16* s, const bf16* g, int64_t ld, int row0, int T, int tid) {
  constexpr int W = D / 8;
  static_assert((ROWS * W) % kAttnThreads == 0, "whole chunks per thread");
#pragma unroll
  for (int it = 0; it < ROWS * W / kAttnThreads; ++it) {
    const int i = tid + it * kAttnThreads;
    const int r = i / W, c = i % W;
    const bool ok = row0 + r < T;
    cp_async_16(swz_ptr<W>(s, r, c), ok ? g + (int64_t)(row0 + r) * ld + c * 8 : g, ok ? 16 : 0);
  }
}

template <int NT>
__device__ __forceinline__ void zero(float (&a)[NT][4]) {
#pragma unroll
  for (int i = 0; i < NT; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) a[i][j] = 0.f;
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

template <int D>
__global__ void __launch_bounds__(kAttnThreads) flash_fwd_kernel(const AttnParams p) {
  constexpr int W = D / 8;      // 16-byte chunks per row
  constexpr int kDK = D / 16;   // k16 steps over the head dim
  constexpr int kDT = D / 8;    // n8 tiles over the head dim (O)
  constexpr int kST = kBKV / 8; // n8 tiles over the keys (S)
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [kBQ][D]
  bf16* sK = sQ + kBQ * D;                       // (2, [kBKV][D])
  bf16* sV = sK + 2 * kBKV * D;                  // (2, [kBKV][D])

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int qb = gridDim.x - 1 - blockIdx.x;  // the longest (last) query blocks start first
  const int bh = blockIdx.y, b = bh / p.NH, h = bh % p.NH;
  const int q0 = qb * kBQ;
  const int64_t ld = 3 * (int64_t)p.C;
  const bf16* gQ = p.qkv + (int64_t)b * p.T * ld + h * D;
  const bf16* gK = gQ + p.C;
  const bf16* gV = gQ + 2 * p.C;
  const int n_kv = min(q0 + kBQ - 1, p.T - 1) / kBKV + 1;  // key tiles up to the last query
  const int row_base = q0 + warp * 16 + g;                  // this thread's rows: +0 and +8

  load_rows_async<kBQ, D>(sQ, gQ, ld, q0, p.T, tid);
  load_rows_async<kBKV, D>(sK, gK, ld, 0, p.T, tid);
  load_rows_async<kBKV, D>(sV, gV, ld, 0, p.T, tid);
  cp_async_commit();

  uint32_t qf[kDK][4];  // this warp's 16 query rows as A fragments, loaded once
  float o[kDT][4];      // (d n8 tile, C fragment) unnormalised output
  zero(o);
  float m_run[2] = {-INFINITY, -INFINITY};  // running row max (base-2 scaled scores)
  float l_run[2] = {0.f, 0.f};              // this thread's part of the running row sum

  for (int j = 0; j < n_kv; ++j) {
    cp_async_wait<0>();  // tile j (and Q) landed for this thread...
    __syncthreads();     // ...for all threads; and every warp is done with tile j-1's buffer
    if (j + 1 < n_kv) {
      const int nb = (j + 1) & 1;
      load_rows_async<kBKV, D>(sK + nb * kBKV * D, gK, ld, (j + 1) * kBKV, p.T, tid);
      load_rows_async<kBKV, D>(sV + nb * kBKV * D, gV, ld, (j + 1) * kBKV, p.T, tid);
    }
    cp_async_commit();
    if (j == 0) {
#pragma unroll
      for (int dk = 0; dk < kDK; ++dk) load_a_kmajor<W>(qf[dk], sQ, warp * 16, dk * 16, lane);
    }
    bf16* k_st = sK + (j & 1) * kBKV * D;
    bf16* v_st = sV + (j & 1) * kBKV * D;

    // S = Q K^T: (16 rows, 64 keys) per warp. K tile is [key][d] = K-major B.
    float s[kST][4];
    zero(s);
#pragma unroll
    for (int dk = 0; dk < kDK; ++dk)
#pragma unroll
      for (int np = 0; np < kST / 2; ++np) {
        uint32_t kb[4];
        load_b2_kmajor<W>(kb, k_st, np * 16, dk * 16, lane);
        mma_bf16_16816(s[2 * np], qf[dk], kb[0], kb[1]);
        mma_bf16_16816(s[2 * np + 1], qf[dk], kb[2], kb[3]);
      }

    // Scale into the exp2 domain, mask, and take the row max over the quad (4 lanes per row).
    const int kv0 = j * kBKV;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int ni = 0; ni < kST; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = kv0 + ni * 8 + 2 * t + (e & 1);
        const int row = row_base + (e >> 1) * 8;
        float x = s[ni][e] * p.scale_log2;
        if (key > row || key >= p.T) x = -INFINITY;
        s[ni][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    float base[2], alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m_run[r], mx[r]);
      base[r] = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing unmasked yet stays at 0
      alpha[r] = exp2f(m_run[r] - base[r]);        // rescales what was accumulated so far
      m_run[r] = m_new;
    }
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int ni = 0; ni < kST; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pv = exp2f(s[ni][e] - base[e >> 1]);
        s[ni][e] = pv;
        rs[e >> 1] += pv;
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) l_run[r] = l_run[r] * alpha[r] + rs[r];
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      o[dt][0] *= alpha[0];
      o[dt][1] *= alpha[0];
      o[dt][2] *= alpha[1];
      o[dt][3] *= alpha[1];
    }

    // O += P V: P comes straight from the S accumulators; V tile is [key][d] = N-major B.
#pragma unroll
    for (int kk = 0; kk < kBKV / 16; ++kk) {
      uint32_t pa[4];
      acc_to_a_frag<kST>(pa, s, kk);
#pragma unroll
      for (int dp = 0; dp < kDT / 2; ++dp) {
        uint32_t vb[4];
        load_b2_nmajor<W>(vb, v_st, dp * 16, kk * 16, lane);
        mma_bf16_16816(o[2 * dp], pa, vb[0], vb[1]);
        mma_bf16_16816(o[2 * dp + 1], pa, vb[2], vb[3]);
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = row_base + r * 8;
    if (row >= p.T) continue;
    const float inv = 1.f / l;
    bf16* gO = p.out + ((int64_t)b * p.T + row) * p.C + h * D;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
      *reinterpret_cast<uint32_t*>(gO + dt * 8 + 2 * t) = pack_bf16x2(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
    if (t == 0) p.lse[(int64_t)bh * p.T + row] = m_run[r] + log2f(l);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

// dvec[b,h,t] = sum_d dO[b,t,h,d] * O[b,t,h,d]; one warp per (b, t, h).
template <int D>
__global__ void __launch_bounds__(kAttnThreads) flash_bwd_dot_kernel(const AttnParams p, int rows) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int r = blockIdx.x * (kAttnThreads / 32) + warp;  // (b*T + t)*NH + h
  if (r >= rows) return;
  const int bt = r / p.NH, h = r % p.NH;
  const bf16* dO = p.dout + (int64_t)bt * p.C + h * D;
  const bf16* O = p.o + (int64_t)bt * p.C + h * D;
  float acc = 0.f;
#pragma unroll
  for (int i = lane; i < D; i += 32) acc += __bfloat162float(dO[i]) * __bfloat162float(O[i]);
  acc = warp_sum(acc);
  const int b = bt / p.T, tt = bt % p.T;
  if (lane == 0) p.dvec[((int64_t)b * p.NH + h) * p.T + tt] = acc;
}

template <int D>
__global__ void __launch_bounds__(kAttnThreads) flash_bwd_dq_kernel(const AttnParams p) {
  constexpr int W = D / 8, kDK = D / 16, kDT = D / 8, kST = kBKV / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [kBQ][D]
  bf16* sdO = sQ + kBQ * D;                      // [kBQ][D]
  bf16* sK = sdO + kBQ * D;                      // (2, [kBKV][D])
  bf16* sV = sK + 2 * kBKV * D;                  // (2, [kBKV][D])

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int qb = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / p.NH, h = bh % p.NH;
  const int q0 = qb * kBQ;
  const int64_t ld = 3 * (int64_t)p.C;
  const bf16* gQ = p.qkv + (int64_t)b * p.T * ld + h * D;
  const bf16* gK = gQ + p.C;
  const bf16* gV = gQ + 2 * p.C;
  const bf16* gdO = p.dout + (int64_t)b * p.T * p.C + h * D;
  const int n_kv = min(q0 + kBQ - 1, p.T - 1) / kBKV + 1;
  const int row_base = q0 + warp * 16 + g;

  load_rows_async<kBQ, D>(sQ, gQ, ld, q0, p.T, tid);
  load_rows_async<kBQ, D>(sdO, gdO, p.C, q0, p.T, tid);
  load_rows_async<kBKV, D>(sK, gK, ld, 0, p.T, tid);
  load_rows_async<kBKV, D>(sV, gV, ld, 0, p.T, tid);
  cp_async_commit();

  float lse_r[2], d_r[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_base + r * 8;
    lse_r[r] = row < p.T ? p.lse[(int64_t)bh * p.T + row] : 0.f;
    d_r[r] = row < p.T ? p.dvec[(int64_t)bh * p.T + row] : 0.f;
  }
  float dq[kDT][4];
  zero(dq);

  for (int j = 0; j < n_kv; ++j) {
    cp_async_wait<0>();
    __syncthreads();
    if (j + 1 < n_kv) {
      const int nb = (j + 1) & 1;
      load_rows_async<kBKV, D>(sK + nb * kBKV * D, gK, ld, (j + 1) * kBKV, p.T, tid);
      load_rows_async<kBKV, D>(sV + nb * kBKV * D, gV, ld, (j + 1) * kBKV, p.T, tid);
    }
    cp_async_commit();
    bf16* k_st = sK + (j & 1) * kBKV * D;
    bf16* v_st = sV + (j & 1) * kBKV * D;

    // S = Q K^T and dP = dO V^T, (16 rows, 64 keys) per warp; K and V tiles are K-major B.
    float s[kST][4], dp[kST][4];
    zero(s);
    zero(dp);
    // Partly unrolled: fully unrolled, the hoisted ldmatrix results spill at D = 128.
#pragma unroll(D == 128 ? 2 : kDK)
    for (int dk = 0; dk < kDK; ++dk) {
      uint32_t qa[4], da[4];
      load_a_kmajor<W>(qa, sQ, warp * 16, dk * 16, lane);
      load_a_kmajor<W>(da, sdO, warp * 16, dk * 16, lane);
#pragma unroll
      for (int np = 0; np < kST / 2; ++np) {
        uint32_t kb[4], vb[4];
        load_b2_kmajor<W>(kb, k_st, np * 16, dk * 16, lane);
        load_b2_kmajor<W>(vb, v_st, np * 16, dk * 16, lane);
        mma_bf16_16816(s[2 * np], qa, kb[0], kb[1]);
        mma_bf16_16816(s[2 * np + 1], qa, kb[2], kb[3]);
        mma_bf16_16816(dp[2 * np], da, vb[0], vb[1]);
        mma_bf16_16816(dp[2 * np + 1], da, vb[2], vb[3]);
      }
    }
    // dS = P (dP - D), P recomputed from the saved log-sum-exp; kept in s.
    const int kv0 = j * kBKV;
#pragma unroll
    for (int ni = 0; ni < kST; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = kv0 + ni * 8 + 2 * t + (e & 1);
        const int row = row_base + (e >> 1) * 8;
        const bool live = key <= row && key < p.T && row < p.T;
        const float pv = live ? exp2f(s[ni][e] * p.scale_log2 - lse_r[e >> 1]) : 0.f;
        s[ni][e] = pv * (dp[ni][e] - d_r[e >> 1]);
      }
    // dQ += dS K: K tile read as [key][d] = N-major B.
#pragma unroll
    for (int kk = 0; kk < kBKV / 16; ++kk) {
      uint32_t a[4];
      acc_to_a_frag<kST>(a, s, kk);
#pragma unroll
      for (int dn = 0; dn < kDT / 2; ++dn) {
        uint32_t kb[4];
        load_b2_nmajor<W>(kb, k_st, dn * 16, kk * 16, lane);
        mma_bf16_16816(dq[2 * dn], a, kb[0], kb[1]);
        mma_bf16_16816(dq[2 * dn + 1], a, kb[2], kb[3]);
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_base + r * 8;
    if (row >= p.T) continue;
    bf16* g_dq = p.dqkv + ((int64_t)b * p.T + row) * (3 * (int64_t)p.C) + h * D;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
      *reinterpret_cast<uint32_t*>(g_dq + dt * 8 + 2 * t) =
          pack_bf16x2(dq[dt][2 * r] * p.scale, dq[dt][2 * r + 1] * p.scale);
  }
}

template <int D>
__global__ void __launch_bounds__(kAttnThreads) flash_bwd_dkdv_kernel(const AttnParams p) {
  constexpr int W = D / 8, kDK = D / 16, kDT = D / 8;
  constexpr int BQ = kDkdvBQ<D>;  // query rows per inner tile
  constexpr int kQT = BQ / 8;     // n8 tiles over those queries
  static_assert(kBKV % BQ == 0, "the first query tile starts at the key block's first key");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);  // [kBKV][D]
  bf16* sV = sK + kBKV * D;                      // [kBKV][D]
  bf16* sQ = sV + kBKV * D;                      // (2, [BQ][D])
  bf16* sdO = sQ + 2 * BQ * D;                   // (2, [BQ][D])
  float* sL = reinterpret_cast<float*>(sdO + 2 * BQ * D);  // (2, [BQ]) lse
  float* sD = sL + 2 * BQ;                                  // (2, [BQ]) rowsum(dO*O)

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y, b = bh / p.NH, h = bh % p.NH;
  const int kv0 = blockIdx.x * kBKV;
  const int64_t ld = 3 * (int64_t)p.C;
  const bf16* gQ = p.qkv + (int64_t)b * p.T * ld + h * D;
  const bf16* gK = gQ + p.C;
  const bf16* gV = gQ + 2 * p.C;
  const bf16* gdO = p.dout + (int64_t)b * p.T * p.C + h * D;
  const float* gL = p.lse + (int64_t)bh * p.T;
  const float* gD = p.dvec + (int64_t)bh * p.T;
  const int qt0 = kv0 / BQ;                 // queries before the block's first key see none of it
  const int n_qt = (p.T + BQ - 1) / BQ;
  const int key_base = kv0 + warp * 16 + g;  // this thread's keys: +0 and +8

  auto load_q_tile = [&](int qt, int buf) {
    const int r0 = qt * BQ;
    load_rows_async<BQ, D>(sQ + buf * BQ * D, gQ, ld, r0, p.T, tid);
    load_rows_async<BQ, D>(sdO + buf * BQ * D, gdO, p.C, r0, p.T, tid);
    if (tid < BQ) {
      const bool ok = r0 + tid < p.T;
      cp_async_4(sL + buf * BQ + tid, ok ? gL + r0 + tid : gL, ok ? 4 : 0);
      cp_async_4(sD + buf * BQ + tid, ok ? gD + r0 + tid : gD, ok ? 4 : 0);
    }
  };
  load_rows_async<kBKV, D>(sK, gK, ld, kv0, p.T, tid);
  load_rows_async<kBKV, D>(sV, gV, ld, kv0, p.T, tid);
  load_q_tile(qt0, 0);
  cp_async_commit();

  float dk[kDT][4], dv[kDT][4];
  zero(dk);
  zero(dv);

  for (int qt = qt0; qt < n_qt; ++qt) {
    const int buf = (qt - qt0) & 1;
    cp_async_wait<0>();
    __syncthreads();
    if (qt + 1 < n_qt) load_q_tile(qt + 1, buf ^ 1);
    cp_async_commit();
    bf16* q_st = sQ + buf * BQ * D;
    bf16* do_st = sdO + buf * BQ * D;
    const float* l_st = sL + buf * BQ;
    const float* d_st = sD + buf * BQ;

    // S^T = K Q^T and dP^T = V dO^T, (16 keys, BQ queries) per warp. Q, dO tiles: K-major B.
    float st[kQT][4], dpt[kQT][4];
    zero(st);
    zero(dpt);
#pragma unroll(D == 128 ? 2 : kDK)  // as in the dq kernel: full unrolling spills at D = 128
    for (int dd = 0; dd < kDK; ++dd) {
      uint32_t ka[4], va[4];
      load_a_kmajor<W>(ka, sK, warp * 16, dd * 16, lane);
      load_a_kmajor<W>(va, sV, warp * 16, dd * 16, lane);
#pragma unroll
      for (int np = 0; np < kQT / 2; ++np) {
        uint32_t qb[4], ob[4];
        load_b2_kmajor<W>(qb, q_st, np * 16, dd * 16, lane);
        load_b2_kmajor<W>(ob, do_st, np * 16, dd * 16, lane);
        mma_bf16_16816(st[2 * np], ka, qb[0], qb[1]);
        mma_bf16_16816(st[2 * np + 1], ka, qb[2], qb[3]);
        mma_bf16_16816(dpt[2 * np], va, ob[0], ob[1]);
        mma_bf16_16816(dpt[2 * np + 1], va, ob[2], ob[3]);
      }
    }
    // P^T (in st) and dS^T = P^T (dP^T - D) (in dpt); columns are queries.
    const int q_base = qt * BQ;
#pragma unroll
    for (int ni = 0; ni < kQT; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = ni * 8 + 2 * t + (e & 1);
        const int q = q_base + col;
        const int key = key_base + (e >> 1) * 8;
        const bool live = key <= q && q < p.T && key < p.T;
        const float pv = live ? exp2f(st[ni][e] * p.scale_log2 - l_st[col]) : 0.f;
        st[ni][e] = pv;
        dpt[ni][e] = pv * (dpt[ni][e] - d_st[col]);
      }
    // dV += P^T dO and dK += dS^T Q; dO and Q tiles read as [query][d] = N-major B.
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk) {
      uint32_t pa[4], dsa[4];
      acc_to_a_frag<kQT>(pa, st, kk);
      acc_to_a_frag<kQT>(dsa, dpt, kk);
#pragma unroll
      for (int dn = 0; dn < kDT / 2; ++dn) {
        uint32_t ob[4], qb[4];
        load_b2_nmajor<W>(ob, do_st, dn * 16, kk * 16, lane);
        load_b2_nmajor<W>(qb, q_st, dn * 16, kk * 16, lane);
        mma_bf16_16816(dv[2 * dn], pa, ob[0], ob[1]);
        mma_bf16_16816(dv[2 * dn + 1], pa, ob[2], ob[3]);
        mma_bf16_16816(dk[2 * dn], dsa, qb[0], qb[1]);
        mma_bf16_16816(dk[2 * dn + 1], dsa, qb[2], qb[3]);
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = key_base + r * 8;
    if (key >= p.T) continue;
    bf16* g_dk = p.dqkv + ((int64_t)b * p.T + key) * (3 * (int64_t)p.C) + p.C + h * D;
    bf16* g_dv = g_dk + p.C;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      *reinterpret_cast<uint32_t*>(g_dk + dt * 8 + 2 * t) =
          pack_bf16x2(dk[dt][2 * r] * p.scale, dk[dt][2 * r + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(g_dv + dt * 8 + 2 * t) = pack_bf16x2(dv[dt][2 * r], dv[dt][2 * r + 1]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

template <int D>
constexpr size_t kFwdSmem = size_t(kBQ + 4 * kBKV) * D * sizeof(bf16);
template <int D>
constexpr size_t kDqSmem = size_t(2 * kBQ + 4 * kBKV) * D * sizeof(bf16);
template <int D>
constexpr size_t kDkdvSmem = size_t(2 * kBKV + 4 * kDkdvBQ<D>) * D * sizeof(bf16) + 4 * kDkdvBQ<D> * sizeof(float);

[[noreturn]] static void attn_fail(const char* what, int v) {
  std::fprintf(stderr, "leasetrain: internal error: attention: %s (%d)\n", what, v);
  std::abort();
}


static void check_shapes(int B, int T, int C, int NH) {
  if (B < 1 || T < 1 || NH < 1 || C % NH != 0) attn_fail("bad shape B/T/C/NH, C", C);
  if (!attention_supported(C / NH)) attn_fail("unsupported head dim", C / NH);
  if ((int64_t)B * NH > 65535) attn_fail("B*NH above 65535", B * NH);
}

template <class Kernel>
void raise_smem(Kernel kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

template <int D>
void forward_impl(const AttnParams& p, int B, cudaStream_t stream) {
  raise_smem(flash_fwd_kernel<D>, kFwdSmem<D>);
  const dim3 grid((p.T + kBQ - 1) / kBQ, B * p.NH);
  flash_fwd_kernel<D><<<grid, kAttnThreads, kFwdSmem<D>, stream>>>(p);
  CUDA_CHECK_LAST();
}

template <int D>
void dot_impl(const AttnParams& p, int B, cudaStream_t stream) {
  const int rows = B * p.T * p.NH;
  const int warps_per_block = kAttnThreads / 32;
  flash_bwd_dot_kernel<D><<<(rows + warps_per_block - 1) / warps_per_block, kAttnThreads, 0, stream>>>(p, rows);
  CUDA_CHECK_LAST();
}

template <int D>
void backward_impl(const AttnParams& p, int B, cudaStream_t stream) {
  dot_impl<D>(p, B, stream);
  raise_smem(flash_bwd_dq_kernel<D>, kDqSmem<D>);
  const dim3 grid_q((p.T + kBQ - 1) / kBQ, B * p.NH);
  flash_bwd_dq_kernel<D><<<grid_q, kAttnThreads, kDqSmem<D>, stream>>>(p);
  CUDA_CHECK_LAST();
  raise_smem(flash_bwd_dkdv_kernel<D>, kDkdvSmem<D>);
  const dim3 grid_kv((p.T + kBKV - 1) / kBKV, B * p.NH);
  flash_bwd_dkdv_kernel<D><<<grid_kv, kAttnThreads, kDkdvSmem<D>, stream>>>(p);
  CUDA_CHECK_LAST();
}

static AttnParams make_params(int T, int C, int NH) {
  AttnParams p{};
  p.T = T;
  p.C = C;
  p.NH = NH;
  const int D = C / NH;
  p.scale = 1.f / std::sqrt((float)D);
  p.scale_log2 = p.scale * kLog2e;
  return p;
}

// D = rowsum(dout * out) per (b, h, t) into dvec [B,NH,T]: the first step of both backwards
// (attention_wgmma_bwd.cu calls it too).
void attention_backward_dot(float* dvec, const bf16* dout, const bf16* out, int B, int T, int C, int NH,
                            cudaStream_t stream) {
  AttnParams p = make_params(T, C, NH);
  p.dout = dout;
  p.o = out;
  p.dvec = dvec;
  if (C / NH == 64)
    dot_impl<64>(p, B, stream);
  else
    dot_impl<128>(p, B, stream);
}

}  // namespace detail

bool attention_supported(int head_dim) { return head_dim == 64 || head_dim == 128; }

namespace detail {
// Whether attention_forward/backward take the Hopper kernels (attention.h, AttnPath).
static bool use_hopper(AttnPath path, int B, int T) {
  if (path == AttnPath::MmaSync || (int64_t)B * T >= (int64_t(1) << 30)) return false;
  return path == AttnPath::Wgmma ? attention_hopper_available() : wgmma_auto();
}
}  // namespace detail

void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH, cudaStream_t stream,
                       AttnPath path) {
  detail::check_shapes(B, T, C, NH);
  if (detail::use_hopper(path, B, T))  // Hopper: the wgmma + TMA kernel (attention_wgmma.cu)
    attention_forward_hopper(out, lse, qkv, B, T, C, NH, stream);
  else
    attention_forward_mma_sync(out, lse, qkv, B, T, C, NH, stream);
}

void attention_forward_mma_sync(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                                cudaStream_t stream) {
  detail::check_shapes(B, T, C, NH);
  // Loads are 16-byte chunks, stores 4-byte pairs: a misaligned view faults only on a device.
  if (!aligned16(qkv) || !aligned16(out)) detail::attn_fail("qkv/out not 16-byte aligned", 0);
  detail::AttnParams p = detail::make_params(T, C, NH);
  p.qkv = qkv;
  p.out = out;
  p.lse = lse;
  if (C / NH == 64)
    detail::forward_impl<64>(p, B, stream);
  else
    detail::forward_impl<128>(p, B, stream);
}

size_t attention_backward_scratch_bytes(int B, int T, int NH) { return (size_t)B * NH * T * sizeof(float); }

void attention_backward(bf16* dqkv, void* scratch, const bf16* dout, const bf16* out, const float* lse,
                        const bf16* qkv, int B, int T, int C, int NH, cudaStream_t stream, AttnPath path) {
  detail::check_shapes(B, T, C, NH);
  if (detail::use_hopper(path, B, T))  // Hopper: the wgmma + TMA kernels (attention_wgmma_bwd.cu)
    attention_backward_hopper(dqkv, scratch, dout, out, lse, qkv, B, T, C, NH, stream);
  else
    attention_backward_mma_sync(dqkv, scratch, dout, out, lse, qkv, B, T, C, NH, stream);
}

void attention_backward_mma_sync(bf16* dqkv, void* scratch, const bf16* dout, const bf16* out, const float* lse,
                                 const bf16* qkv, int B, int T, int C, int NH, cudaStream_t stream) {
  detail::check_shapes(B, T, C, NH);
  if (!aligned16(qkv) || !aligned16(dout) || !aligned16(out) || !aligned16(dqkv))
    detail::attn_fail("qkv/dout/out/dqkv not 16-byte aligned", 0);
  detail::AttnParams p = detail::make_params(T, C, NH);
  p.qkv = qkv;
  p.lse = const_cast<float*>(lse);
  p.dout = dout;
  p.o = out;
  p.dvec = static_cast<float*>(scratch);
  p.dqkv = dqkv;
  if (C / NH == 64)
    detail::backward_impl<64>(p, B, stream);
  else
    detail::backward_impl<128>(p, B, stream);
}

}  // namespace lt::cuda
