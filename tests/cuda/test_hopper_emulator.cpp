// The Hopper instructions of the CPU emulator (tests/cuda/emulator_hopper.h) against references
// built here from the PTX ISA's definitions, and the bugs the emulator exists to catch, planted
// one at a time into a small TMA -> wgmma producer/consumer pipeline.
//
// Compiled as C++ with tests/cuda/emulator.h force-included (the test_hopper_emulated target);
// kernels are launched with emu::Launcher directly (what `<<<...>>>` becomes after emulate.cmake).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "kernels/cuda/hopper.cuh"

using namespace lt::cuda;

namespace {

constexpr uint32_t kBase = emu::hopper::kSharedBase;

uint16_t bf16_bits(float f) {  // exact for the small dyadic values used here
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}
float bf16_value(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Small multiples of 1/4: every product and every sum below is exact in fp32, so results compare
// exactly whatever the order of summation.
std::vector<float> small_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(-4, 4);
  std::vector<float> v(n);
  for (float& x : v) x = 0.25f * float(d(rng));
  return v;
}

// ---- The ISA's canonical layouts, evaluated as written ------------------------------------------
//
// PTX ISA "Shared Memory Matrix Layout" > "Canonical Layouts": a CuTe layout (shape):(stride)
// in elements, T = 128 / 16 = 8 for bf16, then Swizzle<B,4,3> on the byte address. One mode per
// coordinate (MN, K); a hierarchical mode maps its index colexicographically.
struct Mode {
  std::vector<int> shape, stride;
  int operator()(int i) const {
    int off = 0;
    for (size_t j = 0; j < shape.size(); ++j) {
      off += (i % shape[j]) * stride[j];
      i /= shape[j];
    }
    return off;
  }
};
// Swizzle<B,M,S>(x) = x ^ ((x & (((1 << B) - 1) << (M + S))) >> S).
uint32_t cute_swizzle(int B, int M, int S, uint32_t x) {
  const uint32_t yyy = ((1u << B) - 1) << (M + S);
  return x ^ ((x & yyy) >> S);
}
enum class Sw { None, B32, B64, B128 };
int sw_bits(Sw s) { return s == Sw::None ? 0 : s == Sw::B32 ? 1 : s == Sw::B64 ? 2 : 3; }
WgmmaSwizzle sw_desc(Sw s) {
  return s == Sw::None ? WgmmaSwizzle::None
         : s == Sw::B32 ? WgmmaSwizzle::B32
         : s == Sw::B64 ? WgmmaSwizzle::B64
                        : WgmmaSwizzle::B128;
}
const char* sw_name(Sw s) { return s == Sw::None ? "none" : s == Sw::B32 ? "32B" : s == Sw::B64 ? "64B" : "128B"; }

// An operand of extent `mn` (64 for A, N for B) x 16 k, major-ness `trans` (0 K-major, 1 MN-major),
// with LBO/SBO of a dense tiling; addr(mn, k) is its element's byte address from the table.
struct Canonical {
  int trans;
  Sw sw;
  uint32_t start, lbo, sbo;  // bytes
  Mode mn_mode, k_mode;
  Canonical(int trans_, Sw sw_, uint32_t start_, int extent) : trans(trans_), sw(sw_), start(start_) {
    const int T = 8, W = 1 << sw_bits(sw);  // W: 16-byte chunks per swizzle row
    if (trans == 0) {
      if (sw == Sw::None) {  // ((8,m),(T,2k)):((1T,SBO),(1,LBO))
        lbo = 128, sbo = 256;
        mn_mode = {{8, extent / 8}, {T, int(sbo / 2)}};
        k_mode = {{T, 2}, {1, int(lbo / 2)}};
      } else {  // ((8,m),(T,2k)):((W*T,SBO),(1,T))
        lbo = 16, sbo = 8 * 16 * W;
        mn_mode = {{8, extent / 8}, {W * T, int(sbo / 2)}};
        k_mode = {{T, 2}, {1, T}};
      }
    } else {
      if (sw == Sw::None) {  // ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
        sbo = 128, lbo = uint32_t(extent / 8) * 128;
        mn_mode = {{T, 1, extent / T}, {1, T, int(sbo / 2)}};
        k_mode = {{8, 2}, {T, int(lbo / 2)}};
      } else {  // ((T,W,m),(8,k)):((1,T,LBO),(W*T,SBO))
        const int per_row = W * T;
        lbo = uint32_t(8 * 16 * W);                            // the next swizzle atom along MN
        sbo = uint32_t(std::max(1, extent / per_row)) * lbo;  // the next 8 k, after all MN atoms
        mn_mode = {{T, W, std::max(1, extent / per_row)}, {1, T, int(lbo / 2)}};
        k_mode = {{8, 2}, {W * T, int(sbo / 2)}};
      }
    }
  }
  uint32_t addr(int mn, int k) const {
    const uint32_t linear = start + 2u * uint32_t(mn_mode(mn) + k_mode(k));
    return cute_swizzle(sw_bits(sw), 4, 3, linear);
  }
  uint64_t desc() const { return make_smem_desc(start, lbo, sbo, sw_desc(sw)); }
};

// The accumulator fragment (ISA figure "WGMMA .m64nNk16 register fragment layout for accumulator
// matrix D"), as hopper.cuh states it: thread t = 32w + 4g + q, register 4j + 2h + v.
void d_coord(int t, int r, int* row, int* col) {
  const int w = t / 32, g = (t % 32) / 4, q = t % 4, j = r / 4, h = (r / 2) % 2, v = r % 2;
  *row = 16 * w + g + 8 * h;
  *col = 8 * j + 2 * q + v;
}

template <class K, class... A>
void launch1(K kernel, int threads, size_t smem, A... args) {
  emu::Launcher(kernel, dim3(1), dim3(threads), smem)(args...);
}

TEST(HopperEmulator, SharedWindowIsNot1024Aligned) {
  static uint32_t got;
  launch1(
      +[](int) {
        if (threadIdx.x == 0) got = smem_u32(emu::dyn_smem());
      },
      32, 4096, 0);
  EXPECT_EQ(got, kBase);
  EXPECT_EQ(got % 128, 0u);
  EXPECT_NE(got % 1024, 0u);
}

TEST(HopperEmulatorDeath, SmemU32OutsideDynamicSharedMemory) {
  EXPECT_DEATH(launch1(
                   +[](int) {
                     static int s;
                     smem_u32(&s);
                   },
                   1, 1024, 0),
               "emulator: smem_u32 of a pointer outside");
}

// ---- Descriptor decode ---------------------------------------------------------------------------

TEST(HopperEmulator, DescriptorDecodeMatchesCanonicalLayouts) {
  for (int trans = 0; trans < 2; ++trans)
    for (Sw sw : {Sw::None, Sw::B32, Sw::B64, Sw::B128})
      for (int extent : {64, 256}) {
        const Canonical c(trans, sw, 0x2000, extent);
        std::set<uint32_t> seen;
        for (int mn = 0; mn < extent; ++mn)
          for (int k = 0; k < 16; ++k) {
            const uint32_t want = c.addr(mn, k);
            ASSERT_EQ(emu::hopper::descriptor_element_address(c.desc(), trans, mn, k), want)
                << (trans ? "MN" : "K") << "-major " << sw_name(sw) << " mn " << mn << " k " << k;
            ASSERT_TRUE(seen.insert(want).second) << "the reference layout is not one-to-one";
          }
      }
  // hopper.cuh's 128B tiles: K-major [rows][64 k] (the k-step kk starts 32 bytes further), and
  // MN-major [k][64 mn] boxes (LBO = one box, SBO = 1024 per 8 k).
  const uint32_t tile = 0x4000;
  for (int kk = 0; kk < 4; ++kk) {
    const uint64_t d = make_smem_desc(tile + 32 * kk, 16, 1024, WgmmaSwizzle::B128);
    for (int m = 0; m < 64; ++m)
      for (int k = 0; k < 16; ++k) {
        const int kg = 16 * kk + k;  // the tile's k column
        const uint32_t chunk = uint32_t(kg / 8) ^ uint32_t(m % 8);
        ASSERT_EQ(emu::hopper::descriptor_element_address(d, 0, m, k), tile + m * 128 + chunk * 16 + (kg % 8) * 2);
      }
  }
  const uint32_t box_bytes = 64 * 128;  // a [64 k][64 n] box
  for (int kk = 0; kk < 4; ++kk) {
    const uint64_t d = make_smem_desc(tile + 2048 * kk, box_bytes, 1024, WgmmaSwizzle::B128);
    for (int n = 0; n < 256; ++n)
      for (int k = 0; k < 16; ++k) {
        const int kg = 16 * kk + k, box = n / 64, col = n % 64;
        const uint32_t chunk = uint32_t(col / 8) ^ uint32_t(kg % 8);
        ASSERT_EQ(emu::hopper::descriptor_element_address(d, 1, n, k),
                  tile + box * box_bytes + kg * 128 + chunk * 16 + (col % 8) * 2);
      }
  }
}

// ---- wgmma numerics ------------------------------------------------------------------------------

constexpr size_t kImage = 96 * 1024;  // dynamic shared memory of the wgmma kernels
constexpr uint32_t kAStart = kBase + 0x380;          // 0x800: 1024-aligned
constexpr uint32_t kBStart = kBase + 0x380 + 0x4000;  // 0x4800

// Each thread copies the host-built image of shared memory (thread 0), then the warpgroup runs
// one wgmma and each thread stores its N/2 accumulators, d[r] of thread t at out[t * N/2 + r].
template <int N, int TA, int TB>
void k_ss(const unsigned char* image, uint64_t da, uint64_t db, int scale_d, float init, float* out) {
  if (threadIdx.x == 0) std::memcpy(emu::dyn_smem(), image, kImage);
  __syncthreads();
  float d[N / 2];
  for (float& x : d) x = init;
  wgmma_fence();
  wgmma_ss<N, TA, TB>(d, da, db, scale_d);
  wgmma_commit();
  wgmma_wait<0>();
  for (int r = 0; r < N / 2; ++r) out[threadIdx.x * (N / 2) + r] = d[r];
}
template <int N, int TB>
void k_rs(const unsigned char* image, const uint32_t* afrag, uint64_t db, float* out) {
  if (threadIdx.x == 0) std::memcpy(emu::dyn_smem(), image, kImage);
  __syncthreads();
  float d[N / 2] = {};
  uint32_t a[4];
  for (int i = 0; i < 4; ++i) a[i] = afrag[threadIdx.x * 4 + i];
  wgmma_fence();
  wgmma_rs<N, TB>(d, a, db, 0);
  wgmma_commit();
  wgmma_wait<0>();
  for (int r = 0; r < N / 2; ++r) out[threadIdx.x * (N / 2) + r] = d[r];
}

struct MmaCase {
  int n;
  std::vector<float> A, B;  // A[64][16], B[16][n]
  std::vector<unsigned char> image = std::vector<unsigned char>(kImage, 0xFF);
  void put(uint32_t addr, float v) {
    const uint16_t h = bf16_bits(v);
    std::memcpy(&image[addr - kBase], &h, 2);
  }
  explicit MmaCase(int n_, uint32_t seed) : n(n_), A(small_values(64 * 16, seed)), B(small_values(16 * n_, seed + 1)) {}
  float ref(int m, int c) const {
    float s = 0;
    for (int k = 0; k < 16; ++k) s += A[m * 16 + k] * B[k * n + c];
    return s;
  }
};

template <int N, int TA, int TB>
std::vector<float> run_ss(const MmaCase& mc, uint64_t da, uint64_t db, int scale_d = 0, float init = 0) {
  std::vector<float> out(128 * N / 2);
  launch1(k_ss<N, TA, TB>, 128, kImage, mc.image.data(), da, db, scale_d, init, out.data());
  return out;
}

// Compares thread t's register r with D[row][col] through the accumulator layout.
::testing::AssertionResult matches(const MmaCase& mc, const std::vector<float>& out, float add = 0) {
  for (int t = 0; t < 128; ++t)
    for (int r = 0; r < mc.n / 2; ++r) {
      int row, col;
      d_coord(t, r, &row, &col);
      const float want = mc.ref(row, col) + add, got = out[t * (mc.n / 2) + r];
      if (got != want)
        return ::testing::AssertionFailure() << "thread " << t << " d[" << r << "] = D[" << row << "][" << col
                                             << "]: got " << got << ", want " << want;
    }
  return ::testing::AssertionSuccess();
}

template <int N, int TA, int TB>
void check_ss_all_swizzles() {
  for (Sw sa : {Sw::None, Sw::B32, Sw::B64, Sw::B128})
    for (Sw sb : {Sw::None, Sw::B128, Sw::B64, Sw::B32}) {
      if (N > 64 && sa != sb) continue;  // the cross product once, at N = 64
      MmaCase mc(N, 7 + N + 3 * TA + 5 * TB + sw_bits(sa));
      const Canonical ca(TA, sa, kAStart, 64), cb(TB, sb, kBStart, N);
      for (int m = 0; m < 64; ++m)
        for (int k = 0; k < 16; ++k) mc.put(ca.addr(m, k), mc.A[m * 16 + k]);
      for (int k = 0; k < 16; ++k)
        for (int c = 0; c < N; ++c) mc.put(cb.addr(c, k), mc.B[k * N + c]);
      EXPECT_TRUE(matches(mc, run_ss<N, TA, TB>(mc, ca.desc(), cb.desc())))
          << "N " << N << " A " << (TA ? "MN" : "K") << "-major " << sw_name(sa) << ", B " << (TB ? "MN" : "K")
          << "-major " << sw_name(sb);
    }
}

TEST(HopperEmulator, WgmmaSsN64AllLayouts) {
  check_ss_all_swizzles<64, 0, 0>();
  check_ss_all_swizzles<64, 0, 1>();
  check_ss_all_swizzles<64, 1, 0>();
  check_ss_all_swizzles<64, 1, 1>();
}
TEST(HopperEmulator, WgmmaSsN128) {
  check_ss_all_swizzles<128, 0, 1>();
  check_ss_all_swizzles<128, 1, 0>();
}
TEST(HopperEmulator, WgmmaSsN256) {
  check_ss_all_swizzles<256, 0, 0>();
  check_ss_all_swizzles<256, 1, 1>();
}

template <int N, int TB>
void check_rs() {
  MmaCase mc(N, 99 + N + TB);
  const Canonical cb(TB, Sw::B128, kBStart, N);
  for (int k = 0; k < 16; ++k)
    for (int c = 0; c < N; ++c) mc.put(cb.addr(c, k), mc.B[k * N + c]);
  // A's fragment as hopper.cuh states it (mma.m16n8k16's A within each warp's 16 rows).
  std::vector<uint32_t> frag(128 * 4);
  for (int t = 0; t < 128; ++t) {
    const int w = t / 32, g = (t % 32) / 4, q = t % 4;
    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * q, 2 * q, 2 * q + 8, 2 * q + 8};
    for (int i = 0; i < 4; ++i) {
      const int m = 16 * w + rows[i], k = cols[i];
      frag[t * 4 + i] = uint32_t(bf16_bits(mc.A[m * 16 + k])) | uint32_t(bf16_bits(mc.A[m * 16 + k + 1])) << 16;
    }
  }
  std::vector<float> out(128 * N / 2);
  launch1(k_rs<N, TB>, 128, kImage, mc.image.data(), frag.data(), cb.desc(), out.data());
  EXPECT_TRUE(matches(mc, out)) << "wgmma_rs N " << N << " TransB " << TB;
}
TEST(HopperEmulator, WgmmaRs) {
  check_rs<64, 0>();
  check_rs<64, 1>();
  check_rs<128, 1>();
  check_rs<256, 0>();
}

// D = A * B with A[m][k] = (k == 0) * (m + 1) and B[0][n] = n + 1: every accumulator holds
// (row + 1) * (col + 1), so thread t's register r names its (row, col) uniquely.
TEST(HopperEmulator, AccumulatorLayout) {
  MmaCase mc(128, 1);
  for (float& x : mc.A) x = 0;
  for (float& x : mc.B) x = 0;
  for (int m = 0; m < 64; ++m) mc.A[m * 16] = float(m + 1);
  for (int c = 0; c < 128; ++c) mc.B[c] = float(c + 1);
  const Canonical ca(0, Sw::B128, kAStart, 64), cb(1, Sw::B128, kBStart, 128);
  for (int m = 0; m < 64; ++m)
    for (int k = 0; k < 16; ++k) mc.put(ca.addr(m, k), mc.A[m * 16 + k]);
  for (int k = 0; k < 16; ++k)
    for (int c = 0; c < 128; ++c) mc.put(cb.addr(c, k), mc.B[k * 128 + c]);
  const std::vector<float> out = run_ss<128, 0, 1>(mc, ca.desc(), cb.desc());
  for (int t = 0; t < 128; ++t)
    for (int r = 0; r < 64; ++r) {
      int row, col;
      d_coord(t, r, &row, &col);
      ASSERT_EQ(out[t * 64 + r], float((row + 1) * (col + 1))) << "thread " << t << " register " << r;
    }
  // scale_d = 1 adds to the registers' values; scale_d = 0 ignores them.
  EXPECT_TRUE(matches(mc, run_ss<128, 0, 1>(mc, ca.desc(), cb.desc(), 1, 1000.f), 1000.f));
  EXPECT_TRUE(matches(mc, run_ss<128, 0, 1>(mc, ca.desc(), cb.desc(), 0, 1000.f)));
}

// The same data read with a different swizzle, LBO or SBO than it was written with, or with the
// tile 128 bytes off the 1024-byte pattern boundary, gives wrong numbers.
TEST(HopperEmulator, WrongDescriptorsGiveWrongResults) {
  MmaCase mc(128, 5);
  const Canonical ca(0, Sw::B128, kAStart, 64), cb(1, Sw::B128, kBStart, 128);
  for (int m = 0; m < 64; ++m)
    for (int k = 0; k < 16; ++k) mc.put(ca.addr(m, k), mc.A[m * 16 + k]);
  for (int k = 0; k < 16; ++k)
    for (int c = 0; c < 128; ++c) mc.put(cb.addr(c, k), mc.B[k * 128 + c]);
  const uint64_t da = ca.desc(), db = cb.desc();
  ASSERT_TRUE(matches(mc, run_ss<128, 0, 1>(mc, da, db)));
  EXPECT_FALSE(matches(mc, run_ss<128, 0, 1>(mc, make_smem_desc(kAStart, 16, 1024, WgmmaSwizzle::B64), db)));
  EXPECT_FALSE(matches(mc, run_ss<128, 0, 1>(mc, make_smem_desc(kAStart, 16, 512, WgmmaSwizzle::B128), db)));
  EXPECT_FALSE(matches(mc, run_ss<128, 0, 1>(mc, da, make_smem_desc(kBStart, cb.lbo * 2, cb.sbo, WgmmaSwizzle::B128))));
  EXPECT_FALSE(matches(mc, run_ss<128, 0, 1>(mc, da, make_smem_desc(kBStart, cb.lbo, cb.sbo / 2, WgmmaSwizzle::B128))));
  EXPECT_FALSE(matches(mc, run_ss<128, 0, 1>(mc, da, make_smem_desc(kBStart, cb.lbo, cb.sbo, WgmmaSwizzle::None))));
  // Misaligned: the kernel laid its tile out as if it started on a 1024-byte boundary, but it
  // starts 128 bytes later; the hardware swizzles on the absolute address.
  MmaCase mis(128, 5);
  const Canonical ca_rel(0, Sw::B128, 0, 64);
  for (int m = 0; m < 64; ++m)
    for (int k = 0; k < 16; ++k) mis.put(kAStart + 128 + ca_rel.addr(m, k), mis.A[m * 16 + k]);
  for (int k = 0; k < 16; ++k)
    for (int c = 0; c < 128; ++c) mis.put(cb.addr(c, k), mis.B[k * 128 + c]);
  EXPECT_FALSE(matches(mis, run_ss<128, 0, 1>(mis, make_smem_desc(kAStart + 128, 16, 1024, WgmmaSwizzle::B128), db)));
}

// ---- wgmma rules ---------------------------------------------------------------------------------

void k_no_fence(float* out) {
  float d[32] = {};
  const uint32_t s = smem_u32(emu::dyn_smem()) + 0x380;
  wgmma_ss<64, 0, 0>(d, make_smem_desc(s, 16, 1024, WgmmaSwizzle::B128),
                     make_smem_desc(s + 8192, 16, 1024, WgmmaSwizzle::B128), 0);
  wgmma_commit();
  wgmma_wait<0>();
  out[threadIdx.x] = d[0];
}
void k_fence_then_two_waits(float* out) {  // fence, mma, wait, mma without a new fence
  float d[32] = {};
  const uint32_t s = smem_u32(emu::dyn_smem()) + 0x380;
  const uint64_t da = make_smem_desc(s, 16, 1024, WgmmaSwizzle::B128), db = make_smem_desc(s + 8192, 16, 1024, WgmmaSwizzle::B128);
  wgmma_fence();
  wgmma_ss<64, 0, 0>(d, da, db, 0);
  wgmma_commit();
  wgmma_wait<0>();
  wgmma_ss<64, 0, 0>(d, da, db, 1);
  wgmma_commit();
  wgmma_wait<0>();
  out[threadIdx.x] = d[0];
}
void k_touch_acc(float* out) {  // changes the accumulators while the wgmma is in flight
  float d[32] = {};
  const uint32_t s = smem_u32(emu::dyn_smem()) + 0x380;
  std::memset(emu::dyn_smem(), 0, 32768);
  __syncthreads();
  wgmma_fence();
  wgmma_ss<64, 0, 0>(d, make_smem_desc(s, 16, 1024, WgmmaSwizzle::B128),
                     make_smem_desc(s + 8192, 16, 1024, WgmmaSwizzle::B128), 1);
  wgmma_commit();
  d[0] = 1;
  wgmma_wait<0>();
  out[threadIdx.x] = d[0];
}
void k_overwrite_operand(float* out) {  // a thread writes a stage that an in-flight wgmma reads
  float d[32] = {};
  const uint32_t s = smem_u32(emu::dyn_smem()) + 0x380;
  std::memset(emu::dyn_smem(), 0, 32768);
  __syncthreads();
  wgmma_fence();
  wgmma_ss<64, 0, 0>(d, make_smem_desc(s, 16, 1024, WgmmaSwizzle::B128),
                     make_smem_desc(s + 8192, 16, 1024, WgmmaSwizzle::B128), 0);
  wgmma_commit();
  __syncthreads();
  if (threadIdx.x == 0) emu::dyn_smem()[0x380 + 5] = 0x3F;
  __syncthreads();
  wgmma_wait<0>();
  out[threadIdx.x] = d[0];
}
void k_exit_in_flight(float* out) {
  float d[32] = {};
  const uint32_t s = smem_u32(emu::dyn_smem()) + 0x380;
  wgmma_fence();
  wgmma_ss<64, 0, 0>(d, make_smem_desc(s, 16, 1024, WgmmaSwizzle::B128),
                     make_smem_desc(s + 8192, 16, 1024, WgmmaSwizzle::B128), 0);
  wgmma_commit();
  out[threadIdx.x] = 0;
}
void k_fence_only(float*) { wgmma_fence(); }
void k_half_fence(float*) {
  if (threadIdx.x < 64) wgmma_fence();
  else wgmma_commit();
}
void k_regs_bad(float*) { setmaxnreg_inc<20>(); }
void k_regs_mixed(float*) {
  if (threadIdx.x < 32) setmaxnreg_dec<40>();
  else setmaxnreg_dec<48>();
}
void k_regs_ok(float* out) {
  if (threadIdx.x < 128) setmaxnreg_dec<40>();
  else setmaxnreg_inc<232>();
  out[threadIdx.x] = 1;
}

TEST(HopperEmulator, WgmmaFenceRuleAndSetmaxnreg) {
  std::vector<float> out(256);
  launch1(k_regs_ok, 256, 1024, out.data());
  EXPECT_EQ(out[255], 1.f);
}
TEST(HopperEmulatorDeath, WgmmaWithoutFence) {
  std::vector<float> out(128);
  EXPECT_DEATH(launch1(k_no_fence, 128, 32768, out.data()), "emulator: wgmma without wgmma.fence");
  EXPECT_DEATH(launch1(k_fence_then_two_waits, 128, 32768, out.data()), "emulator: wgmma without wgmma.fence");
}
TEST(HopperEmulatorDeath, WgmmaInFlightRules) {
  std::vector<float> out(128);
  EXPECT_DEATH(launch1(k_touch_acc, 128, 32768, out.data()), "emulator: wgmma accumulator registers were changed");
  EXPECT_DEATH(launch1(k_overwrite_operand, 128, 32768, out.data()),
               "emulator: a wgmma operand in shared memory changed");
  EXPECT_DEATH(launch1(k_exit_in_flight, 128, 32768, out.data()), "emulator: a thread exited with wgmma still in flight");
}
TEST(HopperEmulatorDeath, WarpgroupCollectives) {
  std::vector<float> out(128);
  EXPECT_DEATH(launch1(k_fence_only, 96, 1024, out.data()), "emulator: .*incomplete warpgroup");
  EXPECT_DEATH(launch1(k_half_fence, 128, 1024, out.data()), "emulator: threads of one warpgroup reached different");
  EXPECT_DEATH(launch1(k_regs_bad, 128, 1024, out.data()), "emulator: setmaxnreg count");
  EXPECT_DEATH(launch1(k_regs_mixed, 128, 1024, out.data()), "emulator: threads of one warpgroup passed different");
}

// ---- TMA -----------------------------------------------------------------------------------------

using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                            const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                            CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
Encode encoder() {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult q{};
  EXPECT_EQ(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q), cudaSuccess);
  EXPECT_EQ(q, cudaDriverEntryPointSuccess);
  return reinterpret_cast<Encode>(fn);
}
bool encode_map(CUtensorMap* map, const void* base, uint64_t rows, uint64_t cols, uint32_t box_rows,
                uint32_t box_cols, CUtensorMapSwizzle sw) {
  const cuuint64_t dims[2] = {cols, rows}, strides[1] = {cols * 2};
  const cuuint32_t box[2] = {box_cols, box_rows}, es[2] = {1, 1};
  return encoder()(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base), dims, strides, box, es,
                   CU_TENSOR_MAP_INTERLEAVE_NONE, sw, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                   CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

struct TmaArgs {
  int x, y, box_bytes, dst_off, bug;
  unsigned char* out;   // the shared bytes after the wait
  unsigned char* early; // the first bytes right after the issue, before any wait
  int* flags;
};
// 32 threads; thread 0 inits the barrier, fences, issues one box; everyone waits on phase 0.
void k_tma(__grid_constant__ const CUtensorMap map, TmaArgs a) {
  unsigned char* smem = emu::dyn_smem();
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem);
  unsigned char* dst = smem + a.dst_off;
  if (threadIdx.x == 0) {
    mbar_init(bar, 1);
    if (a.bug != 1) fence_mbarrier_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    a.flags[0] = mbar_try_wait(bar, 0);  // phase 0 not complete yet
    a.flags[1] = mbar_try_wait(bar, 1);  // "the phase before" counts as complete
    mbar_arrive_expect_tx(bar, uint32_t(a.box_bytes) - (a.bug == 2 ? 2 : 0));
    tma_load_2d(dst, &map, bar, a.x, a.y);
    std::memcpy(a.early, dst, 64);  // not landed: nobody waited
    if (a.bug == 3) {
      uint32_t r[4];
      ldmatrix_x4(r, dst);  // warp collective: only fine as a death test
    }
  }
  __syncthreads();
  while (!mbar_try_wait(bar, 0)) {
  }
  if (threadIdx.x == 0) {
    a.flags[2] = mbar_try_wait(bar, 0);
    a.flags[3] = mbar_try_wait(bar, 1);
    std::memcpy(a.out, dst, size_t(a.box_bytes));
  }
}

TEST(HopperEmulator, TmaBoxOobAndSwizzle) {
  const int rows = 40, cols = 96;
  std::vector<uint16_t> g(rows * cols);
  for (int i = 0; i < rows * cols; ++i) g[i] = uint16_t(i + 1);
  struct Case {
    CUtensorMapSwizzle sw;
    int span, box_cols, box_rows, x, y;
  };
  const Case cases[] = {
      {CU_TENSOR_MAP_SWIZZLE_128B, 128, 64, 16, 8, 4},    // inside
      {CU_TENSOR_MAP_SWIZZLE_128B, 128, 64, 16, 48, 30},  // right and bottom out of bounds
      {CU_TENSOR_MAP_SWIZZLE_128B, 128, 64, 8, -8, -3},   // left and top out of bounds
      {CU_TENSOR_MAP_SWIZZLE_64B, 64, 32, 16, 70, 2},
      {CU_TENSOR_MAP_SWIZZLE_32B, 32, 16, 16, 3 * 16, 33},
      {CU_TENSOR_MAP_SWIZZLE_NONE, 0, 24, 8, 80, 1},
  };
  for (const Case& c : cases) {
    CUtensorMap map;
    ASSERT_TRUE(encode_map(&map, g.data(), rows, cols, c.box_rows, c.box_cols, c.sw));
    const int bytes = c.box_rows * c.box_cols * 2;
    std::vector<unsigned char> out(bytes), early(64);
    int flags[4] = {};
    // dst: shared 0x480 + 0x380 = 0x800, 1024-aligned.
    launch1(k_tma, 32, 0x380 + 16384, map, TmaArgs{c.x, c.y, bytes, 0x380, 0, out.data(), early.data(), flags});
    EXPECT_EQ(flags[0], 0);
    EXPECT_EQ(flags[1], 1);
    EXPECT_EQ(flags[2], 1);
    EXPECT_EQ(flags[3], 0);
    for (unsigned char b : early) ASSERT_EQ(b, 0xFF) << "the copy landed before anyone waited";
    // The driver's swizzle by rows (destination aligned to the pattern): the 16-byte chunk j of
    // row r goes to chunk j ^ (the row's index within the span*8-byte pattern / rows per line).
    const int row_bytes = c.box_cols * 2;
    for (int r = 0; r < c.box_rows; ++r)
      for (int e = 0; e < c.box_cols; ++e) {
        const int gy = c.y + r, gx = c.x + e;
        const uint16_t want = (gx >= 0 && gx < cols && gy >= 0 && gy < rows) ? g[gy * cols + gx] : 0;
        int off = r * row_bytes + e * 2;
        if (c.span) {
          const int line = off / 128 % 8;  // which 128-byte line of the pattern
          const int chunks = c.span / 16;
          off = (off & ~(16 * (chunks - 1))) | ((((off / 16) % chunks) ^ (line % chunks)) * 16);
        }
        uint16_t got;
        std::memcpy(&got, &out[off], 2);
        ASSERT_EQ(got, want) << "swizzle " << c.span << " row " << r << " col " << e;
      }
  }
}

TEST(HopperEmulator, TensorMapEncodeChecks) {
  std::vector<uint16_t> g(64 * 64);
  CUtensorMap map;
  EXPECT_TRUE(encode_map(&map, g.data(), 64, 64, 64, 64, CU_TENSOR_MAP_SWIZZLE_128B));
  EXPECT_FALSE(encode_map(&map, g.data(), 64, 64, 64, 128, CU_TENSOR_MAP_SWIZZLE_128B));  // 256 B > 128 B span
  EXPECT_FALSE(encode_map(&map, g.data(), 64, 64, 64, 64, CU_TENSOR_MAP_SWIZZLE_64B));
  EXPECT_FALSE(encode_map(&map, g.data(), 64, 64, 300, 64, CU_TENSOR_MAP_SWIZZLE_128B));  // box > 256
  EXPECT_FALSE(encode_map(&map, reinterpret_cast<char*>(g.data()) + 2, 64, 60, 8, 8, CU_TENSOR_MAP_SWIZZLE_NONE));
  EXPECT_FALSE(encode_map(&map, g.data(), 64, 60, 8, 4, CU_TENSOR_MAP_SWIZZLE_NONE));  // 8-byte inner box
  const char* why = nullptr;
  EXPECT_TRUE(make_tensor_map_2d(&map, g.data(), 64, 64, 64, 64, 64, &why));
  EXPECT_FALSE(make_tensor_map_2d(&map, g.data(), 64, 64, 60, 64, 64, &why));  // row stride 120 B
}

TEST(HopperEmulatorDeath, TmaRules) {
  std::vector<uint16_t> g(64 * 64, 1);
  CUtensorMap map;
  ASSERT_TRUE(encode_map(&map, g.data(), 64, 64, 8, 64, CU_TENSOR_MAP_SWIZZLE_128B));
  std::vector<unsigned char> out(1024), early(64);
  int flags[4];
  auto run = [&](int dst_off, int bug) {
    launch1(k_tma, 32, 8192, map, TmaArgs{0, 0, 1024, dst_off, bug, out.data(), early.data(), flags});
  };
  EXPECT_DEATH(run(0x380 + 128, 0), "emulator: TMA destination 0x880 not 1024-byte aligned for the 128B swizzle");
  EXPECT_DEATH(run(0x380 + 64, 0), "emulator: TMA destination not 128-byte aligned");
  EXPECT_DEATH(run(0x380, 1), "emulator: mbarrier.init not fenced before the async proxy used it");
  EXPECT_DEATH(run(0x380, 2), "emulator: mbarrier tx-count underflow");
  EXPECT_DEATH(run(0x380, 3), "emulator: a read of shared memory that a TMA copy still in flight writes");
}

// ---- mbarrier ------------------------------------------------------------------------------------

void k_mbar(int* flags) {
  uint64_t* bar = reinterpret_cast<uint64_t*>(emu::dyn_smem());
  if (threadIdx.x == 0) mbar_init(bar, 2);
  __syncthreads();
  if (threadIdx.x == 0) {
    flags[0] = mbar_try_wait(bar, 0);
    mbar_arrive(bar);
    flags[1] = mbar_try_wait(bar, 0);
    mbar_arrive(bar);  // phase 0 completes: 2 arrivals, no transactions
    flags[2] = mbar_try_wait(bar, 0);
    flags[3] = mbar_try_wait(bar, 1);
    mbar_arrive(bar);
    mbar_arrive(bar);  // phase 1 completes
    flags[4] = mbar_try_wait(bar, 1);
    flags[5] = mbar_try_wait(bar, 0);
    mbar_arrive_expect_tx(bar, 0);  // expect_tx of 0 bytes is a plain arrive
    mbar_arrive(bar);
    flags[6] = mbar_try_wait(bar, 0);
  }
}
void k_mbar_bug(int bug) {
  uint64_t* bar = reinterpret_cast<uint64_t*>(emu::dyn_smem());
  if (bug == 0) mbar_arrive(bar);  // before init
  mbar_init(bar, 1);
  fence_mbarrier_init();
  if (bug == 1) {  // the phase waits for 64 bytes; a second arrival overruns it
    mbar_arrive_expect_tx(bar, 64);
    mbar_arrive(bar);
  }
  if (bug == 2) {  // nobody will ever arrive
    emu::hopper::deadlock_seconds = 0.3;
    while (!mbar_try_wait(bar, 0)) {
    }
  }
}

TEST(HopperEmulator, MbarrierPhases) {
  int flags[7] = {};
  launch1(k_mbar, 32, 1024, flags);
  EXPECT_EQ(flags[0], 0);
  EXPECT_EQ(flags[1], 0);
  EXPECT_EQ(flags[2], 1);
  EXPECT_EQ(flags[3], 0);
  EXPECT_EQ(flags[4], 1);
  EXPECT_EQ(flags[5], 0);
  EXPECT_EQ(flags[6], 1);
}
TEST(HopperEmulatorDeath, MbarrierRules) {
  EXPECT_DEATH(launch1(k_mbar_bug, 1, 1024, 0), "emulator: mbarrier.arrive on mbarrier 0x480 before mbarrier.init");
  EXPECT_DEATH(launch1(k_mbar_bug, 1, 1024, 1), "emulator: mbarrier.arrive with no pending arrivals .*phase overrun");
  EXPECT_DEATH(launch1(k_mbar_bug, 1, 1024, 2), "emulator: deadlock: mbarrier.try_wait.parity");
}

// TMA into a stage that an issued, not yet retired wgmma reads.
void k_tma_over_wgmma(__grid_constant__ const CUtensorMap map) {
  unsigned char* smem = emu::dyn_smem();
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem);
  const uint32_t s = smem_u32(smem) + 0x380;
  if (threadIdx.x == 0) {
    mbar_init(bar, 1);
    fence_mbarrier_init();
  }
  __syncthreads();
  float d[32] = {};
  wgmma_fence();
  wgmma_ss<64, 0, 0>(d, make_smem_desc(s, 16, 1024, WgmmaSwizzle::B128),
                     make_smem_desc(s + 8192, 16, 1024, WgmmaSwizzle::B128), 0);
  wgmma_commit();
  if (threadIdx.x == 0) {
    mbar_arrive_expect_tx(bar, 1024);
    tma_load_2d(smem + 0x380, &map, bar, 0, 0);
  }
  wgmma_wait<0>();
}
TEST(HopperEmulatorDeath, TmaOverInFlightWgmma) {
  std::vector<uint16_t> g(64 * 64, 1);
  CUtensorMap map;
  ASSERT_TRUE(encode_map(&map, g.data(), 64, 64, 8, 64, CU_TENSOR_MAP_SWIZZLE_128B));
  EXPECT_DEATH(launch1(k_tma_over_wgmma, 128, 32768, map), "emulator: producer overwrote a stage still being read");
}

// ---- A producer/consumer pipeline with planted bugs ----------------------------------------------
//
// C[M][N] (fp32) = A[M][K] (bf16, row-major: K-major) * B[K][N] (bf16, row-major: N-major).
// A block computes a 128 x 128 tile: warpgroup 0 is the producer (one thread issues TMA), warpgroups
// 1 and 2 consume 64 rows each with wgmma m64n128k16. Two stages of 64 k, each A [128][64] (one
// box, 128B swizzle) and B as two [64 k][64 n] boxes; full barriers (1 arrival + tx) and empty
// barriers (one arrival per consumer warpgroup).
enum Bug {
  kNoBug,
  kWrongSwizzle,     // A's descriptor says 64B, the tiles are 128B-swizzled
  kWrongSbo,         // A's SBO 512 instead of 1024
  kWrongLbo,         // B's LBO 1024 instead of one box (8192)
  kNoWgmmaFence,     // consumers skip wgmma_fence
  kNoInitFence,      // the barriers' initialiser skips fence_mbarrier_init
  kWrongPhase,       // consumers wait on the full barrier's other parity
  kNoFullWait,       // consumers read a stage without waiting on its full barrier
  kNoEmptyWait,      // the producer refills a stage without waiting on its empty barrier
  kMisaligned,       // the stages start 128 bytes past a 1024-byte boundary
  kEarlyRelease,     // consumers release a stage (arrive on empty) before wgmma_wait retired its reads
};
constexpr int kBM = 128, kBN = 128, kBK = 64, kStages = 2;
constexpr uint32_t kATile = kBM * kBK * 2, kBBox = kBK * 64 * 2, kStageBytes = kATile + 2 * kBBox;
constexpr size_t kPipeSmem = kStages * kStageBytes + 1024 + 128;

void k_pipeline(__grid_constant__ const CUtensorMap map_a, __grid_constant__ const CUtensorMap map_b, float* c,
                int M, int N, int K, int bug) {
  unsigned char* raw = emu::dyn_smem();
  // The stages on a 1024-byte boundary of the shared window, the barriers after them.
  unsigned char* tiles = raw + ((1024 - smem_u32(raw) % 1024) % 1024) + (bug == kMisaligned ? 128 : 0);
  uint64_t* full = reinterpret_cast<uint64_t*>(tiles + kStages * kStageBytes);
  uint64_t* empty = full + kStages;
  const int wg = threadIdx.x / 128, t = threadIdx.x % 128;
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN, ktiles = (K + kBK - 1) / kBK;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], 2);
    }
    if (bug != kNoInitFence) fence_mbarrier_init();
  }
  __syncthreads();
  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (t != 0) return;
    for (int kt = 0; kt < ktiles; ++kt) {
      const int s = kt % kStages;
      if (kt >= kStages && bug != kNoEmptyWait)
        while (!mbar_try_wait(&empty[s], uint32_t((kt / kStages - 1) & 1))) {
        }
      unsigned char* st = tiles + s * kStageBytes;
      mbar_arrive_expect_tx(&full[s], kStageBytes);
      tma_load_2d(st, &map_a, &full[s], kt * kBK, m0);
      tma_load_2d(st + kATile, &map_b, &full[s], n0, kt * kBK);
      tma_load_2d(st + kATile + kBBox, &map_b, &full[s], n0 + 64, kt * kBK);
    }
    return;
  }
  setmaxnreg_inc<232>();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the producer run ahead
  const int cw = wg - 1;
  float acc[kBN / 2] = {};
  for (int kt = 0; kt < ktiles; ++kt) {
    const int s = kt % kStages;
    const uint32_t parity = uint32_t((kt / kStages) & 1) ^ (bug == kWrongPhase ? 1u : 0u);
    if (bug != kNoFullWait)
      while (!mbar_try_wait(&full[s], parity)) {
      }
    const uint32_t sa = smem_u32(tiles + s * kStageBytes) + uint32_t(cw) * 64 * 128, sb = smem_u32(tiles + s * kStageBytes) + kATile;
    if (bug != kNoWgmmaFence) wgmma_fence();
    for (int kk = 0; kk < kBK / 16; ++kk) {
      const uint64_t da = make_smem_desc(sa + 32 * kk, 16, bug == kWrongSbo ? 512 : 1024,
                                         bug == kWrongSwizzle ? WgmmaSwizzle::B64 : WgmmaSwizzle::B128);
      const uint64_t db = make_smem_desc(sb + 2048 * kk, bug == kWrongLbo ? 1024 : kBBox, 1024, WgmmaSwizzle::B128);
      wgmma_ss<kBN, 0, 1>(acc, da, db, (kt > 0 || kk > 0) ? 1 : 0);
    }
    wgmma_commit();
    if (bug == kEarlyRelease && t == 0) mbar_arrive(&empty[s]);
    // The tensor cores take their time: the wgmma stays in flight a while before the wait.
    std::this_thread::sleep_for(std::chrono::milliseconds(bug == kEarlyRelease ? 20 : 2));
    wgmma_wait<0>();
    if (bug != kEarlyRelease && t == 0) mbar_arrive(&empty[s]);
  }
  for (int r = 0; r < kBN / 2; ++r) {
    int row, col;
    d_coord(t, r, &row, &col);
    row += m0 + 64 * cw;
    col += n0;
    if (row < M && col < N) c[size_t(row) * N + col] = acc[r];
  }
}

struct Pipeline {
  int M = 200, N = 160, K = 200;
  std::vector<float> a = small_values(size_t(M) * K, 11), b = small_values(size_t(K) * N, 12);
  std::vector<uint16_t> a16, b16;
  std::vector<float> ref;
  Pipeline() {
    for (float x : a) a16.push_back(bf16_bits(x));
    for (float x : b) b16.push_back(bf16_bits(x));
    ref.assign(size_t(M) * N, 0.f);
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        float s = 0;
        for (int k = 0; k < K; ++k) s += bf16_value(a16[size_t(i) * K + k]) * bf16_value(b16[size_t(k) * N + j]);
        ref[size_t(i) * N + j] = s;
      }
  }
  std::vector<float> run(int bug) const {
    CUtensorMap ma, mb;
    const char* why = "";
    EXPECT_TRUE(make_tensor_map_2d(&ma, a16.data(), M, K, K, kBM, kBK, &why)) << why;
    EXPECT_TRUE(make_tensor_map_2d(&mb, b16.data(), K, N, N, kBK, 64, &why)) << why;
    std::vector<float> c(size_t(M) * N, -1.f);
    emu::Launcher(k_pipeline, dim3((N + kBN - 1) / kBN, (M + kBM - 1) / kBM), dim3(384), kPipeSmem)(
        ma, mb, c.data(), M, N, K, bug);
    return c;
  }
  // For a death test's child: exit 0 when right, print "wrong result" and exit 1 otherwise.
  void run_and_exit(int bug) const {
    const bool ok = run(bug) == ref;
    if (!ok) std::fprintf(stderr, "wrong result\n");
    std::exit(ok ? 0 : 1);
  }
};
const Pipeline& pipeline() {
  static const Pipeline p;
  return p;
}

TEST(HopperEmulator, PipelineCorrect) {
  const std::vector<float> c = pipeline().run(kNoBug);
  EXPECT_EQ(c, pipeline().ref);
}
TEST(HopperEmulator, PipelineWrongDescriptorsGiveWrongResults) {
  for (int bug : {kWrongSwizzle, kWrongSbo, kWrongLbo}) EXPECT_NE(pipeline().run(bug), pipeline().ref) << "bug " << bug;
}
TEST(HopperEmulatorDeath, PipelinePlantedBugs) {
  const Pipeline& p = pipeline();
  EXPECT_DEATH(p.run(kNoWgmmaFence), "emulator: wgmma without wgmma.fence");
  EXPECT_DEATH(p.run(kNoInitFence), "emulator: mbarrier.init not fenced before the async proxy used it");
  EXPECT_DEATH(p.run(kWrongPhase), "emulator: wgmma reads shared address 0x[0-9a-f]+ while a TMA copy");
  EXPECT_DEATH(p.run(kNoFullWait), "emulator: wgmma reads shared address 0x[0-9a-f]+ while a TMA copy");
  EXPECT_DEATH(p.run(kMisaligned), "emulator: TMA destination 0x[0-9a-f]+ not 1024-byte aligned");
  // The producer waits on the empty barrier as it should, but the consumers released the stage
  // with their wgmma still in flight: its refill lands on a stage being read.
  EXPECT_DEATH(p.run(kEarlyRelease), "emulator: producer overwrote a stage still being read");
  // Caught whichever way the threads interleave: the producer's second arrival on a full barrier
  // overruns its phase, or its copy lands on a stage a wgmma still reads.
  EXPECT_EXIT(p.run_and_exit(kNoEmptyWait), [](int st) { return !(WIFEXITED(st) && WEXITSTATUS(st) == 0); },
              "emulator: (mbarrier.arrive with no pending arrivals|producer overwrote a stage|TMA copy into shared "
              "memory that another)|wrong result");
}

}  // namespace
