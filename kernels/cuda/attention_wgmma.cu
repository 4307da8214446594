// Causal flash attention forward on Hopper (sm_90a): TMA, mbarriers and warpgroup MMA (wgmma),
// FlashAttention-3's structure. Same semantics as flash_fwd_kernel in attention.cu (see
// attention.h): out [B,T,C] bf16, lse [B,NH,T] fp32 base-2 log-sum-exp of the scaled scores.
//
// Design:
//   One CTA per (128-query tile, head, batch entry); the longest (last) query tiles start first.
//   384 threads = 3 warpgroups:
//     warpgroup 0, producer: setmaxnreg.dec 24; one thread loads Q once (TMA, its own mbarrier)
//       and streams K and V tiles of 128 keys through a 3-stage ring guarded by full/empty
//       mbarriers (arrive.expect_tx with the stage's bytes; waits on `empty` before reuse).
//     warpgroups 1 and 2, consumers: setmaxnreg.inc 240; each owns 64 query rows. Per key tile:
//       S = Q K^T with wgmma m64n128k16 from shared memory (A = Q and B = K both K-major),
//       online softmax in registers in the exp2 domain (row max over the quad, rescale of the
//       running sum and of O), P packed to bf16 A fragments in registers (the accumulator
//       layout of a k16 slice is the register-A layout), O += P V with wgmma m64nDk16, A from
//       registers, B = V MN-major ([key][d] boxes read with the transpose bit); then one
//       arrival per warp on the stage's `empty` barrier.
//     Within a consumer the two GEMMs are software-pipelined: S_j = Q K_j^T and O += P_{j-1}
//       V_{j-1} are issued back to back, the softmax of S_j runs while the P V group is still
//       on the tensor cores, and O is rescaled (and P_j packed) once that group has retired.
//   Causal: a query tile qb needs key tiles 0..qb only (tiles of 128 on both sides); only the
//   diagonal tile qb is masked (key > query, and keys >= T, which exist only in that tile).
//   Shared memory (1024-aligned; every tile in the 128B-swizzled layout TMA writes): Q [128][D]
//   as D/64 boxes of [128 rows][64 cols] (16 KiB each), then per stage K and V likewise:
//   D = 128: 32 + 3 x 64 = 224 KiB (+ 1 KiB alignment slack, inside the 227 KiB a block may
//   have); D = 64: 16 + 3 x 32 = 112 KiB.
//   qkv [B,T,3C] is one 2-D tensor map over [B*T][3C] with boxes of 128 rows x 64 columns: Q of
//   head h at column h*D, K at C + h*D, V at 2C + h*D. Rows past T of a batch entry are the next
//   entry's (or zeros past the end): keys >= T are masked, query rows >= T never stored.
//   Ping-pong (kHPingPong): the two consumers take turns issuing their GEMM batches through a
//   pair of mbarriers (turn[0], turn[1]), so one's softmax overlaps the other's GEMMs.
//   Not done: a persistent grid; TMA stores of O; K and V on separate barriers.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/hopper.cuh"

namespace lt::cuda {
namespace detail {

bool wgmma_available();  // gemm_wgmma.cu: a compute capability 9.0 device and sm_90a code

constexpr int kHBQ = 128;   // query rows per CTA (64 per consumer warpgroup)
constexpr int kHBKV = 128;  // keys per K/V tile
constexpr int kHStages = 3;
constexpr int kHConsumers = 2;
constexpr int kHThreads = 128 * (1 + kHConsumers);
// The two consumers take turns issuing their GEMM batches (ping-pong), so one's softmax runs
// while the other's GEMMs occupy the tensor cores; false: they issue whenever they are ready.
[[maybe_unused]] constexpr bool kHPingPong = true;
constexpr int kHBoxBytes = 128 * 64 * 2;  // one TMA box: [128 rows][64 bf16] = 16 KiB
constexpr float kHLog2e = 1.4426950408889634f;
static_assert(kHBQ == kHBKV, "causal tile count: query tile qb needs key tiles 0..qb");
static_assert(kHBQ == 64 * kHConsumers, "64 query rows per consumer warpgroup");

template <int D>
struct HopperAttnLayout {
  static constexpr int kBoxes = D / 64;                  // 64-column boxes per [128][D] tile
  static constexpr int kTileBytes = kBoxes * kHBoxBytes;  // Q, K or V tile
  static constexpr int kStageBytes = 2 * kTileBytes;      // K + V
  static constexpr size_t kSmem = 1024 /* alignment slack */ + kTileBytes + size_t(kHStages) * kStageBytes +
                                  (3 + 2 * kHStages) * 8;
  static_assert(kSmem <= 227 * 1024, "shared memory: Hopper's 227 KiB per block");
};

struct HopperAttnParams {
  bf16* out;   // [B,T,C]
  float* lse;  // [B,NH,T]
  int T, C, NH;
  float scale_log2;  // log2(e)/sqrt(D)
};

template <int D>
__global__ void __launch_bounds__(kHThreads, 1)
    flash_fwd_wgmma_kernel(const __grid_constant__ CUtensorMap map_qkv, const HopperAttnParams p) {
#if defined(LT_CUDA_EMULATED_PTX) || (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
  using L = HopperAttnLayout<D>;
  extern __shared__ __align__(128) unsigned char smem_raw[];  // align1024 rounds up at run time
  unsigned char* smem = align1024(smem_raw);
  unsigned char* sQ = smem;
  auto stage_k = [&](int s) { return smem + L::kTileBytes + s * L::kStageBytes; };
  auto stage_v = [&](int s) { return smem + L::kTileBytes + s * L::kStageBytes + L::kTileBytes; };
  uint64_t* q_full = reinterpret_cast<uint64_t*>(smem + L::kTileBytes + kHStages * L::kStageBytes);
  uint64_t* full = q_full + 1;
  uint64_t* empty = full + kHStages;
  uint64_t* turn = empty + kHStages;  // turn[c]: consumer c may issue its next GEMM batch

  const int tid = threadIdx.x, wg = tid / 128;
  const int qb = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / p.NH, h = bh % p.NH;
  const int q0 = qb * kHBQ;
  const int n_kv = qb + 1;   // key tiles 0..qb
  const int row0 = b * p.T;  // this batch entry's first row in the [B*T][3C] map

  if (tid == 0) {
    mbar_init(q_full, 1);
    for (int s = 0; s < kHStages; ++s) {
      mbar_init(&full[s], 1);                   // the producer's arrive.expect_tx (+ the bytes)
      mbar_init(&empty[s], kHConsumers * 4);  // one arrival per consumer warp
    }
    for (int k = 0; k < kHConsumers; ++k) mbar_init(&turn[k], 4);  // one arrival per warp of the other
    fence_mbarrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    setmaxnreg_dec<24>();
    if (tid != 0) return;
    mbar_arrive_expect_tx(q_full, L::kTileBytes);
    for (int i = 0; i < L::kBoxes; ++i) tma_load_2d(sQ + i * kHBoxBytes, &map_qkv, q_full, h * D + 64 * i, row0 + q0);
    for (int j = 0; j < n_kv; ++j) {
      const int s = j % kHStages;
      mbar_wait(&empty[s], ((j / kHStages) & 1) ^ 1);  // the first pass finds every stage free
      mbar_arrive_expect_tx(&full[s], L::kStageBytes);
      const int y = row0 + j * kHBKV;
      for (int i = 0; i < L::kBoxes; ++i) {
        tma_load_2d(stage_k(s) + i * kHBoxBytes, &map_qkv, &full[s], p.C + h * D + 64 * i, y);
        tma_load_2d(stage_v(s) + i * kHBoxBytes, &map_qkv, &full[s], 2 * p.C + h * D + 64 * i, y);
      }
    }
    return;
  }

  setmaxnreg_inc<240>();
  const int c = wg - 1, warp = (tid / 32) % 4, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int row_base = q0 + 64 * c + 16 * warp + g;  // this thread's rows: +0 and +8
  // Accumulator fragment (hopper.cuh): x[4j + 2r + v] = (row g + 8r, column 8j + 2t + v).
  float o[D / 2];
  float sc[kHBKV / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
#pragma unroll
  for (int i = 0; i < kHBKV / 2; ++i) sc[i] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};  // running row max (base-2 scaled scores)
  float l_run[2] = {0.f, 0.f};              // this thread's part of the running row sum

  uint32_t pa[kHBKV / 16][4];  // P of the previous key tile as bf16 A fragments

  mbar_wait(q_full, 0);
  const uint32_t q_addr = smem_u32(sQ) + 64 * c * 128;  // this warpgroup's 64 rows of each Q box

  // S = Q K_j^T into sc (one wgmma group): the k16 slice kk of the head dim lies in box kk/4 at
  // byte 32*(kk%4) of each row; A = Q and B = K both K-major. Stage j must have landed (its full
  // barrier waited on before the wgmma_fence: a spin loop between the fence and the wgmma makes
  // ptxas inject another warpgroup.arrive).
  auto issue_s = [&](int j) {
    const uint32_t k_addr = smem_u32(stage_k(j % kHStages));
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t off = (kk / 4) * kHBoxBytes + (kk % 4) * 32;
      wgmma_ss<kHBKV, 0, 0>(sc, make_smem_desc(q_addr + off, 16, 1024, WgmmaSwizzle::B128),
                            make_smem_desc(k_addr + off, 16, 1024, WgmmaSwizzle::B128), kk > 0);
    }
    wgmma_commit();
  };
  // O += P V_j (one wgmma group), A = pa from registers, B = V MN-major: keys 16kk.. start 16 rows
  // (2 KiB) on, the next 8 keys 1024 bytes on, the next 64 columns of d one box on.
  auto issue_pv = [&](int j) {
    const uint32_t v_addr = smem_u32(stage_v(j % kHStages));
#pragma unroll
    for (int kk = 0; kk < kHBKV / 16; ++kk)
      wgmma_rs<D, 1>(o, pa[kk], make_smem_desc(v_addr + kk * 2048, kHBoxBytes, 1024, WgmmaSwizzle::B128), 1);
    wgmma_commit();
  };
  // Online softmax of S_j (in sc, which becomes exp2(s - max)); alpha rescales what O and the
  // row sums held before this tile. Only the diagonal tile j = qb is masked.
  auto softmax = [&](int j, float (&alpha)[2]) {
    const int kv0 = j * kHBKV;
    const bool diag = j == n_kv - 1;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < kHBKV / 2; ++i) {
      const int r = (i >> 1) & 1;
      float x = sc[i] * p.scale_log2;
      if (diag) {
        const int key = kv0 + 8 * (i >> 2) + 2 * t + (i & 1);
        const int row = row_base + 8 * r;
        if (key > row || key >= p.T) x = -INFINITY;
      }
      sc[i] = x;
      mx[r] = fmaxf(mx[r], x);
    }
    float base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // row max over the quad (4 lanes a row)
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m_run[r], mx[r]);
      base[r] = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing unmasked yet stays at 0
      alpha[r] = exp2f(m_run[r] - base[r]);
      m_run[r] = m_new;
    }
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < kHBKV / 2; ++i) {
      const int r = (i >> 1) & 1;
      const float pv = exp2f(sc[i] - base[r]);
      sc[i] = pv;
      rs[r] += pv;
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l_run[r] = l_run[r] * alpha[r] + rs[r];
  };
  // P as bf16 A fragments: the k16 slice kk is accumulator n8 tiles 2kk and 2kk+1.
  auto pack_p = [&] {
#pragma unroll
    for (int kk = 0; kk < kHBKV / 16; ++kk) {
      pa[kk][0] = pack_bf16x2(sc[8 * kk + 0], sc[8 * kk + 1]);
      pa[kk][1] = pack_bf16x2(sc[8 * kk + 2], sc[8 * kk + 3]);
      pa[kk][2] = pack_bf16x2(sc[8 * kk + 4], sc[8 * kk + 5]);
      pa[kk][3] = pack_bf16x2(sc[8 * kk + 6], sc[8 * kk + 7]);
    }
  };

  // Ping-pong: every consumer has n_kv + 1 GEMM batches; batch k of consumer c waits for phase k
  // of turn[c], which the other consumer's warps complete once they have issued their batch k-1
  // (consumer 1 completes turn[0]'s phase 0 at the start, so consumer 0 goes first).
  int batch = 0;
  auto wait_turn = [&] {
    if constexpr (kHPingPong) mbar_wait(&turn[c], batch & 1);
  };
  auto pass_turn = [&] {
    if constexpr (kHPingPong)
      if (lane == 0) mbar_arrive(&turn[c ^ 1]);
    ++batch;
  };
  if constexpr (kHPingPong)
    if (c == 1 && lane == 0) mbar_arrive(&turn[0]);

  // Software pipeline within the warpgroup: S_j = Q K_j^T is issued together with O += P_{j-1}
  // V_{j-1}; the softmax of S_j runs while the P V group is still on the tensor cores. O is
  // rescaled and P_j packed only once that group has retired (its accumulators and A registers
  // must not change while it is in flight), and then stage j-1 goes back to the producer.
  float alpha[2];
  mbar_wait(&full[0], 0);
  wait_turn();
  wgmma_fence();
  issue_s(0);
  pass_turn();
  wgmma_wait<0>();
  softmax(0, alpha);  // O is still zero: nothing to rescale
  pack_p();
  for (int j = 1; j < n_kv; ++j) {
    mbar_wait(&full[j % kHStages], (j / kHStages) & 1);
    wait_turn();
    wgmma_fence();
    issue_s(j);
    issue_pv(j - 1);
    pass_turn();
    wgmma_wait<1>();  // S_j has landed; P_{j-1} V_{j-1} may still run
    softmax(j, alpha);
    wgmma_wait<0>();
    if (lane == 0) mbar_arrive(&empty[(j - 1) % kHStages]);  // this warp is done with stage j-1
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] *= alpha[(i >> 1) & 1];
    pack_p();
  }
  wait_turn();
  wgmma_fence();
  issue_pv(n_kv - 1);
  pass_turn();
  wgmma_wait<0>();
  if (lane == 0) mbar_arrive(&empty[(n_kv - 1) % kHStages]);

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = row_base + 8 * r;
    if (row >= p.T) continue;
    const float inv = 1.f / l;
    bf16* gO = p.out + ((int64_t)b * p.T + row) * p.C + h * D;
#pragma unroll
    for (int jn = 0; jn < D / 8; ++jn)
      *reinterpret_cast<uint32_t*>(gO + 8 * jn + 2 * t) =
          pack_bf16x2(o[4 * jn + 2 * r] * inv, o[4 * jn + 2 * r + 1] * inv);
    if (t == 0) p.lse[(int64_t)bh * p.T + row] = m_run[r] + log2f(l);
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // built without sm_90a: attention_forward never launches this kernel there
#endif
}

[[noreturn]] static void hopper_attn_fail(const char* what, int v) {
  std::fprintf(stderr, "leasetrain: internal error: attention (wgmma): %s (%d)\n", what, v);
  std::abort();
}

template <int D>
static void forward_hopper_impl(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                                cudaStream_t stream) {
  using L = HopperAttnLayout<D>;
  const CUtensorMap map =
      tensor_map_2d_or_abort("attention (wgmma)", qkv, (uint64_t)B * T, 3 * (uint64_t)C, 3 * (uint64_t)C, kHBQ, 64);
  HopperAttnParams p;
  p.out = out;
  p.lse = lse;
  p.T = T;
  p.C = C;
  p.NH = NH;
  p.scale_log2 = kHLog2e / std::sqrt((float)D);
  auto* kernel = flash_fwd_wgmma_kernel<D>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)L::kSmem));
  const dim3 grid((T + kHBQ - 1) / kHBQ, B * NH);
  kernel<<<grid, kHThreads, L::kSmem, stream>>>(map, p);
  CUDA_CHECK_LAST();
}

}  // namespace detail

bool attention_hopper_available() { return detail::wgmma_available(); }

void attention_forward_hopper(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                              cudaStream_t stream) {
  if (!detail::wgmma_available())
    detail::hopper_attn_fail("attention_forward_hopper needs a compute capability 9.0 GPU and a build with sm_90a", 0);
  if (B < 1 || T < 1 || NH < 1 || C % NH != 0) detail::hopper_attn_fail("bad shape B/T/C/NH, C", C);
  if (!attention_supported(C / NH)) detail::hopper_attn_fail("unsupported head dim", C / NH);
  if ((int64_t)B * NH > 65535) detail::hopper_attn_fail("B*NH above 65535", B * NH);
  if ((int64_t)B * T > INT32_MAX - detail::kHBQ) detail::hopper_attn_fail("B*T too large for the tensor map", T);
  if (reinterpret_cast<uintptr_t>(qkv) % 16 || reinterpret_cast<uintptr_t>(out) % 16)
    detail::hopper_attn_fail("qkv/out not 16-byte aligned", 0);
  if (C / NH == 64)
    detail::forward_hopper_impl<64>(out, lse, qkv, B, T, C, NH, stream);
  else
    detail::forward_hopper_impl<128>(out, lse, qkv, B, T, C, NH, stream);
}

}  // namespace lt::cuda
