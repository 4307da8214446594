// The small-matrix GEMM (see gemm.h).
//
// Blocking. C is cut into tiles of kMR = 6 rows by kNR = 16 columns. One tile's 96 sums live
// in 12 ymm registers (6 rows x 2 vectors of 8) for the whole K loop; each step k loads one
// row of the B panel (2 vectors), broadcasts A(i, k) for the 6 rows and issues 12 FMAs. That
// leaves 4 of the 16 ymm registers for the B row and the broadcast, and 12 independent FMA
// chains, enough to keep both FMA pipes busy through the FMA latency. C is read and written
// once per tile.
//
// B is packed first: panel p holds columns [16p, 16p + 16) as K rows of 16 contiguous floats
// (zero-padded past N), so the kernel's B loads are sequential whatever B's layout, and the
// transposed weight of the forward pass is transposed once per call instead of gathered per
// tile. A with contiguous rows is read where it lies (its 6 rows are 6 sequential streams).
// Any other A (dout^T in dW) is packed too, into tiles of K x 6 floats: read in place, each
// step would touch a new cache line at a stride of OC floats, and strides of 512 B or more
// map those lines onto a few L1 sets, so every tile would refetch them from L2.
//
// Work split: packing is cut into tasks (16 rows of k, or one transposed panel), split among the
// threads by cost; computing into units (one panel x a block of kRowBlock rows), numbered
// panel-major and taken from the two ends of the list (UnitQueue), so a thread keeps one B
// panel in cache while it runs down the rows. Several products can share one parallel region
// (gemm_team: dinp and dW of a linear layer): their tasks and units are concatenated. Which
// thread computes a tile never changes its sums.
#include "kernels/cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LT_GEMM_AVX2 1
#else
#define LT_GEMM_AVX2 0
#endif

#define LT_GEMM_CHECK(cond)                                     \
  do {                                                          \
    if (!(cond)) throw std::logic_error("gemm: failed " #cond); \
  } while (0)

namespace lt::cpu {

namespace {

constexpr int kMR = 6;           // rows per micro-tile
constexpr int kNR = 16;          // columns per micro-tile (= per packed B panel)
constexpr int kRowBlock = 24;    // rows per unit of work (4 micro-tiles)
constexpr int kDirectMaxK = 64;  // B is read unpacked up to this K (see Plan::b_direct)

// ---- Scratch for the packed operands -------------------------------------------------------

// A growing 64-byte-aligned buffer, one per thread, kept between calls so the step does not
// allocate. gemm() packs into the calling thread's buffer and shares it with its team.
struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  ~Scratch() { std::free(p); }
  float* get(size_t want) {
    if (want > n) {
      std::free(p);
      n = std::max(want, n * 2);
      p = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
      if (!p) throw std::bad_alloc();
    }
    return p;
  }
};
thread_local Scratch tls_scratch;

int num_panels(int N) { return (N + kNR - 1) / kNR; }

#if LT_GEMM_AVX2
// In-register transpose of an 8 x 8 block: r[j] holds row j on entry, column j on exit.
inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);      // r_i[0] r_i+1[0] r_i[1] r_i+1[1] (per lane)
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);  // r_i[2] r_i+1[2] r_i[3] r_i+1[3]
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));      // column 0 (and 4)
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));  // column 1 (and 5)
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; i++) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);      // low halves: columns 0-3
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);  // high halves: columns 4-7
  }
}
#endif

// B packed: panel p (columns [16p, 16p + 16)) at dst + p * K * 16 as [K][16], zeros past
// column N. Two ways to fill it, chosen by B's layout so that B is read sequentially.

// Rows k in [k0, k1) of every panel: B's rows are read front to back (B with contiguous rows:
// W in dinp = dout W, inp in dW = dout^T inp; also the general strided case).
void pack_b_rows(float* dst, MatView B, int K, int N, int k0, int k1) {
  const int np = num_panels(N);
  for (int k = k0; k < k1; k++) {
    for (int p = 0; p < np; p++) {
      const int j0 = p * kNR, nc = std::min(kNR, N - j0);
      float* d = dst + ((int64_t)p * K + k) * kNR;
      if (nc == kNR && B.cs == 1) {
        std::memcpy(d, B.p + k * B.rs + j0, sizeof(float) * kNR);
      } else {
        for (int j = 0; j < nc; j++) d[j] = B.at(k, j0 + j);
        for (int j = nc; j < kNR; j++) d[j] = 0.f;
      }
    }
  }
}

// One whole panel of a B with contiguous columns (W^T in the forward pass): a transpose, where
// column j of the panel is W's row j0 + j.
void pack_b_panel_transposed(float* dst, MatView B, int K, int N, int p) {
  const int j0 = p * kNR, nc = std::min(kNR, N - j0);
  dst += (int64_t)p * K * kNR;
  int k = 0;
#if LT_GEMM_AVX2
  // 8 k at a time: load 8 k of 8 columns, transpose, store 8 rows of 8 (columns past N are 0).
  for (; k + 8 <= K; k += 8)
    for (int h = 0; h < kNR; h += 8) {
      __m256 r[8];
      for (int j = 0; j < 8; j++)
        r[j] = h + j < nc ? _mm256_loadu_ps(B.p + (int64_t)(j0 + h + j) * B.cs + k)
                          : _mm256_setzero_ps();
      transpose8(r);
      for (int kk = 0; kk < 8; kk++) _mm256_store_ps(dst + (int64_t)(k + kk) * kNR + h, r[kk]);
    }
#endif
  for (; k < K; k++)
    for (int j = 0; j < kNR; j++)
      dst[(int64_t)k * kNR + j] = j < nc ? B.p[(int64_t)(j0 + j) * B.cs + k] : 0.f;
}

// Packing B is split into tasks: rows of kPackRows k, or single panels for a transposed B.
constexpr int kPackRows = 16;
bool b_packs_by_panel(MatView B) { return B.rs == 1 && B.cs != 1; }
int b_pack_tasks(MatView B, int K, int N) {
  return b_packs_by_panel(B) ? num_panels(N) : (K + kPackRows - 1) / kPackRows;
}
void pack_b_task(float* dst, MatView B, int K, int N, int task) {
  if (b_packs_by_panel(B))
    pack_b_panel_transposed(dst, B, K, N, task);
  else
    pack_b_rows(dst, B, K, N, task * kPackRows, std::min(K, (task + 1) * kPackRows));
}

// Packs rows k in [k0, k1) of A's tiles (rows [6t, 6t + 6)) into dst + t * K * 6, each tile as
// [K][6] (zero rows past M). Tile by tile, so the writes are sequential: packed tiles lie
// 24 K bytes apart, and writing one k of every tile in turn would hit a few L1 sets only.
void pack_a_rows(float* dst, MatView A, int K, int M, int k0, int k1) {
  const int tiles = (M + kMR - 1) / kMR;
  const int full = A.rs == 1 ? M / kMR : 0;  // tiles copied as 6 contiguous floats
  for (int t = 0; t < tiles; t++) {
    float* d = dst + ((int64_t)t * K + k0) * kMR;
    for (int k = k0; k < k1; k++, d += kMR) {
      if (t < full) {
        std::memcpy(d, A.p + k * A.cs + t * kMR, sizeof(float) * kMR);
      } else {
        for (int i = 0; i < kMR; i++) {
          const int r = t * kMR + i;
          d[i] = r < M ? A.at(r, k) : 0.f;
        }
      }
    }
  }
}
bool a_needs_packing(MatView A) { return A.cs != 1; }
// Floats for packed A, rounded up to 64 bytes so packed B after it stays aligned.
int64_t packed_a_size(int M, int K) {
  return ((int64_t)((M + kMR - 1) / kMR) * kMR * K + 15) / 16 * 16;
}

// ---- The micro-kernel ----------------------------------------------------------------------

// C[MR, nc] (rows of stride ldc) = init + sum_k A(i, k) * bp[k * ldb + j] for one tile, MR <= 6
// and nc <= 16. a is the tile's A: rows lda apart, or packed [K][6] when lda == 0; bp the B
// panel: packed (ldb = 16) or, for short K, B itself (ldb = its row stride).
#if LT_GEMM_AVX2
template <int MR>
void micro_kernel(int K, const float* a, int64_t lda, const float* bp, int64_t ldb, float* c,
                  int64_t ldc, int nc, GemmInit init, const float* bias) {
  // Lane masks for a partial tile (nc < 16): lane l of vector h is on when 8h + l < nc.
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nc), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nc - 8), lane);
  const bool full = nc == kNR;

  __m256 c0[MR], c1[MR];
  if (init == GemmInit::Accumulate) {
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
      const float* ci = c + i * ldc;
      c0[i] = full ? _mm256_loadu_ps(ci) : _mm256_maskload_ps(ci, m0);
      c1[i] = full ? _mm256_loadu_ps(ci + 8) : _mm256_maskload_ps(ci + 8, m1);
    }
  } else {
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
    if (init == GemmInit::Bias) {
      b0 = full ? _mm256_loadu_ps(bias) : _mm256_maskload_ps(bias, m0);
      b1 = full ? _mm256_loadu_ps(bias + 8) : _mm256_maskload_ps(bias + 8, m1);
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
      c0[i] = b0;
      c1[i] = b1;
    }
  }

  // One step of k: a row of the panel times a column of A's tile, 12 FMAs.
  auto step = [&](const float* bk, auto a_at) {
    const __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
      const __m256 ai = _mm256_broadcast_ss(a_at(i));
      c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
    }
  };
  if (lda != 0) {
    // A's rows contiguous (a points at row 0, rows lda apart): MR row pointers, one running k.
    const float* ar[MR];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) ar[i] = a + i * lda;
#pragma GCC unroll 4
    for (int k = 0; k < K; k++) step(bp + k * ldb, [&](int i) { return ar[i] + k; });
  } else {
    // A packed as [K][6]: one pointer.
#pragma GCC unroll 4
    for (int k = 0; k < K; k++) step(bp + k * ldb, [&](int i) { return a + k * kMR + i; });
  }

#pragma GCC unroll 6
  for (int i = 0; i < MR; i++) {
    float* ci = c + i * ldc;
    if (full) {
      _mm256_storeu_ps(ci, c0[i]);
      _mm256_storeu_ps(ci + 8, c1[i]);
    } else {
      _mm256_maskstore_ps(ci, m0, c0[i]);
      _mm256_maskstore_ps(ci + 8, m1, c1[i]);
    }
  }
}
#else
// Portable fallback (no AVX2/FMA at compile time): the same tile, plain loops.
template <int MR>
void micro_kernel(int K, const float* a, int64_t lda, const float* bp, int64_t ldb, float* c,
                  int64_t ldc, int nc, GemmInit init, const float* bias) {
  float acc[MR][kNR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < kNR; j++)
      acc[i][j] = j >= nc                        ? 0.f
                  : init == GemmInit::Accumulate ? c[i * ldc + j]
                  : init == GemmInit::Bias       ? bias[j]
                                                 : 0.f;
  for (int k = 0; k < K; k++, bp += ldb)
    for (int i = 0; i < MR; i++) {
      const float ai = lda != 0 ? a[i * lda + k] : a[k * kMR + i];
      for (int j = 0; j < kNR; j++) acc[i][j] = std::fma(ai, bp[j], acc[i][j]);
    }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < nc; j++) c[i * ldc + j] = acc[i][j];
}
#endif

// Rows [r0, r1) of panel p (r0 a multiple of 6): full 6-row tiles, then one shorter tile. A is
// read in place when its rows are contiguous, else from `apacked` (pack_a_rows). `causal`
// narrows each tile's work (see Causal in gemm.h).
void run_unit(int r0, int r1, int p, int N, int K, MatView A, const float* apacked,
              const float* bpanel, int64_t ldb, float* C, int64_t ldc, GemmInit init,
              const float* bias, Causal causal = Causal::None) {
  const int j0 = p * kNR, nc = std::min(kNR, N - j0);
  const float* pb = bias ? bias + j0 : nullptr;
  const int64_t lda = apacked ? 0 : A.rs;
  for (int i = r0; i < r1; i += kMR) {
    const int mr = std::min(kMR, r1 - i);
    if (causal == Causal::Lower && j0 > i + mr - 1) continue;  // tile above the diagonal
    // the tile's range of k
    int k0 = 0, k1 = K;
    if (causal == Causal::AUpper) k1 = std::min(K, i + mr);
    if (causal == Causal::ALower) k0 = std::min(K, i);
    const float* a = apacked ? apacked + ((int64_t)(i / kMR) * K + k0) * kMR : A.p + i * A.rs + k0;
    const float* bp = bpanel + k0 * ldb;
    const int kk = k1 - k0;
    float* c = C + i * ldc + j0;
    switch (mr) {
      case 6: micro_kernel<6>(kk, a, lda, bp, ldb, c, ldc, nc, init, pb); break;
      case 5: micro_kernel<5>(kk, a, lda, bp, ldb, c, ldc, nc, init, pb); break;
      case 4: micro_kernel<4>(kk, a, lda, bp, ldb, c, ldc, nc, init, pb); break;
      case 3: micro_kernel<3>(kk, a, lda, bp, ldb, c, ldc, nc, init, pb); break;
      case 2: micro_kernel<2>(kk, a, lda, bp, ldb, c, ldc, nc, init, pb); break;
      default: micro_kernel<1>(kk, a, lda, bp, ldb, c, ldc, nc, init, pb); break;
    }
  }
}

// K == 0: C is just its initial value.
void init_only(int M, int N, float* C, int64_t ldc, GemmInit init, const float* bias) {
  if (init == GemmInit::Accumulate) return;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) C[i * ldc + j] = init == GemmInit::Bias ? bias[j] : 0.f;
}

// ---- Driving one or several products -------------------------------------------------------

// How one product is cut into packing tasks and compute units, and where its packed operands
// go in the scratch. Every thread derives the same plan from the same arguments.
struct Plan {
  const GemmProduct* g = nullptr;
  int np = 0, row_blocks = 0;
  int a_tasks = 0, b_tasks = 0;  // packing tasks (A: kPackRows rows of k each)
  int units = 0;                 // compute units (panel, row block); 1 when K == 0
  int64_t a_size = 0, panel_size = 0;
  float* apacked = nullptr;
  float* bpacked = nullptr;
  // B read in place: rows contiguous, whole panels only, and K short enough that a panel's K
  // cache lines stay in L1 whatever B's row stride (attention's products, K = T <= 64).
  bool b_direct = false;

  Plan() = default;
  // Sizes only; place() then puts the packed operands at a cursor into the scratch.
  explicit Plan(const GemmProduct& gp) : g(&gp) {
    if (g->M <= 0 || g->N <= 0) return;
    if (g->K <= 0) {
      units = 1;
      return;
    }
    np = num_panels(g->N);
    row_blocks = (g->M + kRowBlock - 1) / kRowBlock;
    units = np * row_blocks;
    panel_size = (int64_t)g->K * kNR;
    if (a_needs_packing(g->A)) {
      a_size = packed_a_size(g->M, g->K);
      a_tasks = (g->K + kPackRows - 1) / kPackRows;
    }
    b_direct = g->B.cs == 1 && g->N % kNR == 0 && g->K <= kDirectMaxK;
    b_tasks = b_direct ? 0 : b_pack_tasks(g->B, g->K, g->N);
  }
  void place(float*& cursor) {
    apacked = a_size ? cursor : nullptr;
    bpacked = cursor + a_size;
    cursor += scratch_floats();
  }
  int64_t scratch_floats() const { return a_size + (b_direct ? 0 : np * panel_size); }
  const float* bpanel(int p) const {
    return b_direct ? g->B.p + p * kNR : bpacked + p * panel_size;
  }
  int64_t ldb() const { return b_direct ? g->B.rs : kNR; }

  // Packing task t (A's tasks first, then B's) and its cost in floats moved.
  int pack_tasks() const { return a_tasks + b_tasks; }
  int64_t pack_cost(int t) const {
    if (t < a_tasks) return (int64_t)kPackRows * g->M;
    return b_packs_by_panel(g->B) ? panel_size : (int64_t)kPackRows * g->N;
  }
  void pack(int t) const {
    if (t < a_tasks)
      pack_a_rows(apacked, g->A, g->K, g->M, t * kPackRows, std::min(g->K, (t + 1) * kPackRows));
    else
      pack_b_task(bpacked, g->B, g->K, g->N, t - a_tasks);
  }

  // Compute unit u (numbered panel-major).
  void run(int u, Causal causal = Causal::None) const {
    if (g->K <= 0) return init_only(g->M, g->N, g->C, g->ldc, g->init, g->bias);
    const int p = u / row_blocks, r0 = (u % row_blocks) * kRowBlock;
    run_unit(r0, std::min(g->M, r0 + kRowBlock), p, g->N, g->K, g->A, apacked, bpanel(p), ldb(),
             g->C, g->ldc, g->init, g->bias, causal);
  }
};

// This thread's share of a sequence of packing tasks: the tasks whose cost midpoint falls in
// the thread's equal slice [t, t + 1) * total / T of the summed cost. The slices meet exactly
// (the same integer expressions on every thread), so each task runs on exactly one thread.
class Share {
 public:
  explicit Share(int64_t total) {
    const int64_t T = omp_get_num_threads(), t = omp_get_thread_num();
    lo_ = 2 * total * t / T;
    hi_ = 2 * total * (t + 1) / T;
  }
  bool take(int64_t cost) {
    const int64_t mid2 = 2 * at_ + cost;  // twice the midpoint
    at_ += cost;
    return mid2 >= lo_ && mid2 < hi_;
  }

 private:
  int64_t lo_ = 0, hi_ = 0, at_ = 0;
};

// The compute units of a team, handed out from both ends of the unit list: thread 0 (and any
// but the last) takes units from the front, the last thread from the back, until they meet.
// Each thread still works through contiguous panels (as with a static split), but a thread
// that is slowed down (another process on its core, a colder cache) leaves its remaining
// units to the other instead of holding it at the closing barrier. Front and back share one
// 64-bit word so that no unit is taken twice. Units are claimed in chunks of a quarter of
// what is left per thread (guided scheduling): a unit is ~1 us of work, and one claim per
// unit had the two cores passing the word's cache line back and forth ~250 times per product.
class UnitQueue {
 public:
  void reset(int units) { ends_.store((uint64_t)units << 32, std::memory_order_relaxed); }
  // Claims the next units for this thread: [*first, *first + count); count 0 when none is left.
  int take(bool from_back, int threads, int* first) {
    uint64_t e = ends_.load(std::memory_order_relaxed);
    for (;;) {
      const uint32_t front = (uint32_t)e, back = (uint32_t)(e >> 32);
      if (front >= back) return 0;
      const uint32_t n = std::max<uint32_t>(1, (back - front) / (4 * (uint32_t)threads));
      const uint64_t want =
          from_back ? (uint64_t)(back - n) << 32 | front : (uint64_t)back << 32 | (front + n);
      if (ends_.compare_exchange_weak(e, want, std::memory_order_relaxed)) {
        *first = (int)(from_back ? back - n : front);
        return (int)n;
      }
    }
  }

 private:
  std::atomic<uint64_t> ends_{0};
};
static_assert(sizeof(UnitQueue) <= 16 * sizeof(float));

constexpr int kMaxProducts = 4;
constexpr int kHeader = 16;  // floats at the start of the scratch: the team's UnitQueue

}  // namespace

float* gemm_scratch(const GemmProduct* products, int count) {
  LT_GEMM_CHECK(count <= kMaxProducts);
  int64_t n = kHeader, units = 0;
  for (int i = 0; i < count; i++) {
    const Plan plan(products[i]);
    n += plan.scratch_floats();
    units += plan.units;
  }
  float* scratch = tls_scratch.get((size_t)n);
  (new (scratch) UnitQueue)->reset((int)units);
  return scratch;
}

void gemm_team(const GemmProduct* products, int count, float* scratch) {
  LT_GEMM_CHECK(count <= kMaxProducts);
  Plan plans[kMaxProducts];  // built by every thread alike
  UnitQueue& queue = *reinterpret_cast<UnitQueue*>(scratch);
  float* cursor = scratch + kHeader;
  for (int i = 0; i < count; i++) {
    plans[i] = Plan(products[i]);
    plans[i].place(cursor);
  }

  int64_t total = 0;
  for (int i = 0; i < count; i++)
    for (int t = 0; t < plans[i].pack_tasks(); t++) total += plans[i].pack_cost(t);
  Share pack_share(total);
  for (int i = 0; i < count; i++)
    for (int t = 0; t < plans[i].pack_tasks(); t++)
      if (pack_share.take(plans[i].pack_cost(t))) plans[i].pack(t);
#pragma omp barrier

  const int threads = omp_get_num_threads();
  const bool from_back = threads > 1 && omp_get_thread_num() == threads - 1;
  int first = 0;
  for (int n = queue.take(from_back, threads, &first); n > 0; n = queue.take(from_back, threads, &first)) {
    // From the back, run the claimed units last to first: the thread keeps walking towards
    // the front, through the panels it just had.
    for (int j = 0; j < n; j++) {
      int u = from_back ? first + n - 1 - j : first + j;
      int i = 0;  // the product that unit u belongs to
      while (u >= plans[i].units) u -= plans[i++].units;
      plans[i].run(u);
    }
  }
#pragma omp barrier
}

void gemm(int M, int N, int K, MatView A, MatView B, float* C, int64_t ldc, GemmInit init,
          const float* bias) {
  const GemmProduct g{M, N, K, A, B, C, ldc, init, bias};
  float* scratch = gemm_scratch(&g, 1);
#pragma omp parallel
  gemm_team(&g, 1, scratch);
}

void gemm_serial(int M, int N, int K, MatView A, MatView B, float* C, int64_t ldc, GemmInit init,
                 const float* bias, Causal causal) {
  // The same plan run in order on this thread (no worksharing: callers are inside a
  // parallel region running other work on the other threads).
  const GemmProduct g{M, N, K, A, B, C, ldc, init, bias};
  float* cursor = gemm_scratch(&g, 1) + kHeader;
  Plan plan(g);
  plan.place(cursor);
  for (int t = 0; t < plan.pack_tasks(); t++) plan.pack(t);
  for (int u = 0; u < plan.units; u++) plan.run(u, causal);
}

bool gemm_use_blas(int M, int N, int K) {
  // Ours streams all of A once per 16-column panel and packs all of B up front: fine while
  // both fit the caches. The 124M LM head (A or B 50304 x 768) is left to OpenBLAS.
  constexpr int64_t kMaxOperand = (int64_t)4 << 20;  // floats (16 MB)
  return (int64_t)M * K > kMaxOperand || (int64_t)K * N > kMaxOperand;
}

}  // namespace lt::cpu
