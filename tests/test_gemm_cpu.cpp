// The CPU small-matrix GEMM (kernels/cpu/gemm.h) against a double-precision triple loop: every
// operand layout (the three the linear layers use and general strides), every way C starts
// (zero, bias, accumulate), shapes that are not multiples of the 6 x 16 tile, the 24-row work
// unit or the 8-float vector (1 included), C with a leading dimension wider than N (nothing
// past N may be written), the parallel result bit-identical to the serial one at any thread
// count, several products in one parallel region, the causal-attention modes, and
// matmul_forward / matmul_backward on both sides of the OpenBLAS threshold.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "runtime/rng.h"

namespace {

using lt::cpu::GemmInit;
using lt::cpu::MatView;
using Vec = std::vector<float>;

// How an operand of R rows and L columns lies in memory.
enum class Layout { RowMajor, Transposed, Strided };
const char* name(Layout l) {
  return l == Layout::RowMajor ? "row-major" : l == Layout::Transposed ? "transposed" : "strided";
}

// Storage for an R x L operand in layout l, filled with N(0, 1), and its view.
struct Operand {
  Vec data;
  MatView view;
  Operand(lt::Rng& rng, int R, int L, Layout l) {
    // Strided: rows 2L + 3 apart, columns 2 apart (neither stride is 1).
    const int64_t rs = l == Layout::RowMajor ? L : l == Layout::Transposed ? 1 : 2 * L + 3;
    const int64_t cs = l == Layout::RowMajor ? 1 : l == Layout::Transposed ? R : 2;
    data.resize((size_t)std::max<int64_t>(1, (R - 1) * rs + (L - 1) * cs + 1));
    for (float& x : data) x = (float)rng.normal();
    view = {data.data(), rs, cs};
  }
};

const char* name(GemmInit init) {
  return init == GemmInit::Zero ? "zero" : init == GemmInit::Bias ? "bias" : "accumulate";
}

// Runs one case through gemm (at 1 and 2 threads) and gemm_serial and checks each element
// against the double reference within 4 K eps of sum_k |a b| + |c0| (the fp32 error bound
// with margin): one dropped or doubled term of a tail is ~1/K of that sum, far outside it.
void check(int M, int N, int K, Layout la, Layout lb, GemmInit init, uint64_t seed) {
  SCOPED_TRACE("M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
               " A " + name(la) + " B " + name(lb) + " init " + name(init));
  lt::Rng rng(seed);
  Operand A(rng, M, K, la), B(rng, K, N, lb);
  Vec bias(N);
  for (float& x : bias) x = (float)rng.normal();
  const int64_t ldc = N + 3;  // 3 padding columns per row must stay untouched
  const float kPad = -12345.f;
  Vec c0((size_t)M * ldc, kPad);
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) c0[i * ldc + j] = (float)rng.normal();

  std::vector<double> ref((size_t)M * N), scale((size_t)M * N);
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double s = init == GemmInit::Accumulate ? c0[i * ldc + j]
                 : init == GemmInit::Bias     ? bias[j]
                                              : 0.0;
      double mag = std::fabs(s);
      for (int k = 0; k < K; k++) {
        const double p = (double)A.view.at(i, k) * B.view.at(k, j);
        s += p;
        mag += std::fabs(p);
      }
      ref[i * N + j] = s;
      scale[i * N + j] = mag;
    }

  auto run = [&](const char* how, int threads) {
    Vec c = c0;
    const float* b = init == GemmInit::Bias ? bias.data() : nullptr;
    if (threads == 0) {
      lt::cpu::gemm_serial(M, N, K, A.view, B.view, c.data(), ldc, init, b);
    } else {
      const int before = omp_get_max_threads();
      omp_set_num_threads(threads);
      lt::cpu::gemm(M, N, K, A.view, B.view, c.data(), ldc, init, b);
      omp_set_num_threads(before);
    }
    int bad = 0;
    double worst = 0.0;
    for (int i = 0; i < M; i++) {
      for (int j = 0; j < N; j++) {
        const double err = std::fabs(c[i * ldc + j] - ref[i * N + j]);
        const double tol = 4.0 * (K + 1) * FLT_EPSILON * scale[i * N + j] + 1e-30;
        worst = std::max(worst, err / tol);
        if (!(err <= tol) && bad++ < 3)
          ADD_FAILURE() << how << ": C[" << i << "," << j << "] = " << c[i * ldc + j]
                        << ", expected " << ref[i * N + j];
      }
      for (int j = N; j < ldc; j++)
        if (c[i * ldc + j] != kPad && bad++ < 3)
          ADD_FAILURE() << how << ": wrote padding C[" << i << "," << j << "]";
    }
    EXPECT_EQ(bad, 0) << how << " (worst error " << worst << " x tolerance)";
    return c;
  };
  const Vec serial = run("gemm_serial", 0);
  // Every element is summed in the same order however the work is split (2 and 3 threads on
  // every fourth case: the suite runs on 2 busy cores).
  EXPECT_EQ(run("gemm, 1 thread", 1), serial);
  if (seed % 4 == 0) {
    EXPECT_EQ(run("gemm, 2 threads", 2), serial);
    EXPECT_EQ(run("gemm, 3 threads", 3), serial);
  }
}

// Sizes around the tile (6 x 16), the 24-row unit and the 8-float vector.
const int kSizes[] = {1, 2, 5, 6, 7, 8, 9, 13, 16, 17, 23, 25, 31, 47, 49, 97};

// The three layouts of the linear layers, every init, every combination of sizes above.
TEST(GemmCpu, LinearLayerLayouts) {
  uint64_t seed = 1;
  struct Case {
    Layout a, b;
    GemmInit init;
  };
  // forward: A = inp (row-major), B = W^T (transposed), C = bias or zero;
  // dinp: A = dout, B = W, both row-major; dW: A = dout^T (transposed), B = inp, accumulate.
  const Case cases[] = {{Layout::RowMajor, Layout::Transposed, GemmInit::Bias},
                        {Layout::RowMajor, Layout::Transposed, GemmInit::Zero},
                        {Layout::RowMajor, Layout::RowMajor, GemmInit::Zero},
                        {Layout::Transposed, Layout::RowMajor, GemmInit::Accumulate}};
  for (const Case& cs : cases)
    for (int M : kSizes)
      for (int N : {1, 17, 33})
        for (int K : {1, 31}) check(M, N, K, cs.a, cs.b, cs.init, seed++);
  for (const Case& cs : cases)
    for (int N : kSizes) check(50, N, 9, cs.a, cs.b, cs.init, seed++);
}

// Every pair of layouts (general strides included) and every init, at a few odd shapes.
TEST(GemmCpu, AllLayoutsAndInits) {
  uint64_t seed = 1000;
  const Layout layouts[] = {Layout::RowMajor, Layout::Transposed, Layout::Strided};
  for (Layout la : layouts)
    for (Layout lb : layouts)
      for (GemmInit init : {GemmInit::Zero, GemmInit::Bias, GemmInit::Accumulate})
        for (auto [M, N, K] :
             {std::tuple{1, 1, 1}, {13, 29, 7}, {61, 35, 40}, {6, 16, 1}, {97, 3, 130}})
          check(M, N, K, la, lb, init, seed++);
}

// gemm_serial's causal modes against the full product with the known zeros written out:
// Lower computes at least every C(i, j <= i) (and leaves tiles wholly above the diagonal as
// they were), AUpper / ALower skip A's zeros above / below the diagonal.
TEST(GemmCpu, CausalModes) {
  using lt::cpu::Causal;
  uint64_t seed = 5000;
  for (int T : {1, 5, 6, 7, 13, 17, 31, 64, 70})
    for (int n : {1, 16, 19, 32}) {
      SCOPED_TRACE("T=" + std::to_string(T) + " n=" + std::to_string(n));
      lt::Rng rng(seed++);
      // Lower: C[T, T] = A[T, n] B[n, T], B transposed as in q k^T
      Operand a(rng, T, n, Layout::RowMajor), bt(rng, T, n, Layout::RowMajor);
      const MatView b{bt.view.p, 1, n};
      const float kUntouched = 777.f;
      Vec c((size_t)T * T, kUntouched);
      lt::cpu::gemm_serial(T, T, n, a.view, b, c.data(), T, GemmInit::Zero, nullptr, Causal::Lower);
      for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) {
          double r = 0, mag = 0;
          for (int k = 0; k < n; k++) {
            r += (double)a.view.at(i, k) * b.at(k, j);
            mag += std::fabs((double)a.view.at(i, k) * b.at(k, j));
          }
          const float got = c[i * T + j];
          // above the diagonal only tiles crossing it are computed, and then must be right
          if (j <= i || got != kUntouched) {
            EXPECT_NEAR(got, r, 4.0 * (n + 1) * FLT_EPSILON * mag)
                << "Lower C[" << i << "," << j << "]";
          }
        }
      // AUpper / ALower: C[T, n] = A[T, T] B[T, n] with A zero above / below the diagonal, A
      // row-major (as P in P V) and transposed (as dS^T in dS^T Q)
      for (Causal mode : {Causal::AUpper, Causal::ALower})
        for (Layout la : {Layout::RowMajor, Layout::Transposed}) {
          Operand A(rng, T, T, la), B(rng, T, n, Layout::RowMajor);
          for (int i = 0; i < T; i++)
            for (int k = 0; k < T; k++)
              if (mode == Causal::AUpper ? k > i : k < i)
                A.data[i * A.view.rs + k * A.view.cs] = 0.f;
          Vec got((size_t)T * n, kUntouched), full((size_t)T * n, kUntouched);
          lt::cpu::gemm_serial(T, n, T, A.view, B.view, got.data(), n, GemmInit::Zero, nullptr,
                               mode);
          lt::cpu::gemm_serial(T, n, T, A.view, B.view, full.data(), n, GemmInit::Zero);
          EXPECT_EQ(got, full) << (mode == Causal::AUpper ? "AUpper " : "ALower ") << name(la);
        }
    }
}

// K = 0 leaves C at its initial value; M = 0 or N = 0 touches nothing.
TEST(GemmCpu, EmptyProducts) {
  Vec c = {1.f, 2.f, 3.f}, bias = {7.f, 8.f, 9.f};
  const float a = 5.f, b = 6.f;
  lt::cpu::gemm(1, 3, 0, {&a, 1, 1}, {&b, 1, 1}, c.data(), 3, GemmInit::Accumulate);
  EXPECT_EQ(c, (Vec{1.f, 2.f, 3.f}));
  lt::cpu::gemm(1, 3, 0, {&a, 1, 1}, {&b, 1, 1}, c.data(), 3, GemmInit::Bias, bias.data());
  EXPECT_EQ(c, bias);
  lt::cpu::gemm_serial(1, 3, 0, {&a, 1, 1}, {&b, 1, 1}, c.data(), 3, GemmInit::Zero);
  EXPECT_EQ(c, (Vec{0.f, 0.f, 0.f}));
  c = {1.f, 2.f, 3.f};
  lt::cpu::gemm(0, 3, 4, {&a, 1, 1}, {&b, 1, 1}, c.data(), 3, GemmInit::Zero);
  lt::cpu::gemm(1, 0, 4, {&a, 1, 1}, {&b, 1, 1}, c.data(), 3, GemmInit::Zero);
  EXPECT_EQ(c, (Vec{1.f, 2.f, 3.f}));
}

// Several products in one parallel region (gemm_team), of different sizes and layouts and one
// with K = 0, give exactly gemm_serial's results at any thread count.
TEST(GemmCpu, TeamOfProducts) {
  lt::Rng rng(77);
  Operand a1(rng, 50, 70, Layout::RowMajor), b1(rng, 70, 33, Layout::RowMajor);
  Operand a2(rng, 130, 20, Layout::Transposed), b2(rng, 20, 17, Layout::RowMajor);
  Operand a3(rng, 9, 31, Layout::RowMajor), b3(rng, 31, 40, Layout::Transposed);
  Vec bias(40);
  for (float& x : bias) x = (float)rng.normal();
  auto run = [&](int threads) {
    std::vector<Vec> c = {Vec(50 * 33, 1.f), Vec(130 * 17, 2.f), Vec(9 * 40, 3.f), Vec(4 * 5, 4.f)};
    const lt::cpu::GemmProduct g[4] = {
        {50, 33, 70, a1.view, b1.view, c[0].data(), 33, GemmInit::Zero},
        {130, 17, 20, a2.view, b2.view, c[1].data(), 17, GemmInit::Accumulate},
        {9, 40, 31, a3.view, b3.view, c[2].data(), 40, GemmInit::Bias, bias.data()},
        {4, 5, 0, a3.view, b3.view, c[3].data(), 5, GemmInit::Bias, bias.data()}};
    if (threads == 0) {
      for (const auto& p : g)
        lt::cpu::gemm_serial(p.M, p.N, p.K, p.A, p.B, p.C, p.ldc, p.init, p.bias);
    } else {
      float* scratch = lt::cpu::gemm_scratch(g, 4);
#pragma omp parallel num_threads(threads)
      lt::cpu::gemm_team(g, 4, scratch);
    }
    return c;
  };
  const auto serial = run(0);
  for (int i = 0; i < 4; i++)  // K = 0 with a bias: every row is the bias
    for (int j = 0; j < 5; j++) EXPECT_EQ(serial[3][i * 5 + j], bias[j]);
  for (int threads : {1, 2, 3}) EXPECT_EQ(run(threads), serial) << threads << " threads";
  // and the serial results are right (the single-product checks cover the rest)
  for (int i = 0; i < 50; i += 7)
    for (int j = 0; j < 33; j += 5) {
      double r = 0, mag = 0;
      for (int k = 0; k < 70; k++) {
        r += (double)a1.view.at(i, k) * b1.view.at(k, j);
        mag += std::fabs((double)a1.view.at(i, k) * b1.view.at(k, j));
      }
      EXPECT_NEAR(serial[0][i * 33 + j], r, 4.0 * 71 * FLT_EPSILON * mag);
    }
}

// matmul_forward / matmul_backward at the tiny model's shapes (through our GEMM) and at one
// shape past gemm_use_blas's threshold (through OpenBLAS) agree with the double reference.
TEST(GemmCpu, MatmulOpsBothPaths) {
  struct Shape {
    int N, C, OC;
  };
  for (Shape s : {Shape{256, 128, 384}, Shape{37, 19, 23}, Shape{16, 64, 70000}}) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) +
                 " OC=" + std::to_string(s.OC));
    EXPECT_EQ(lt::cpu::gemm_use_blas(s.N, s.OC, s.C), s.OC == 70000);
    lt::Rng rng(s.OC);
    auto randn = [&](size_t n) {
      Vec v(n);
      for (float& x : v) x = (float)rng.normal();
      return v;
    };
    const Vec inp = randn((size_t)s.N * s.C), w = randn((size_t)s.OC * s.C), bias = randn(s.OC),
              dout = randn((size_t)s.N * s.OC), dw0 = randn((size_t)s.OC * s.C);
    Vec out((size_t)s.N * s.OC), dinp((size_t)s.N * s.C), dw = dw0, dbias(s.OC, 0.f);
    lt::cpu::matmul_forward(out.data(), inp.data(), w.data(), bias.data(), s.N, s.C, s.OC);
    lt::cpu::matmul_backward(dinp.data(), dw.data(), dbias.data(), dout.data(), inp.data(),
                             w.data(), s.N, s.C, s.OC);
    // Spot-check rows and columns spread over the outputs (a full double loop at OC = 70000
    // would dominate the suite's time).
    auto near = [](double got, double ref, double mag, int K) {
      return std::fabs(got - ref) <= 4.0 * (K + 1) * FLT_EPSILON * mag + 1e-30;
    };
    int bad = 0;
    for (int n = 0; n < s.N; n += 1 + s.N / 7)
      for (int o = 0; o < s.OC; o += 1 + s.OC / 11) {
        double r = bias[o], mag = std::fabs(bias[o]);
        for (int c = 0; c < s.C; c++) {
          r += (double)inp[n * s.C + c] * w[(int64_t)o * s.C + c];
          mag += std::fabs((double)inp[n * s.C + c] * w[(int64_t)o * s.C + c]);
        }
        if (!near(out[(int64_t)n * s.OC + o], r, mag, s.C) && bad++ < 3)
          ADD_FAILURE() << "out[" << n << "," << o << "]";
      }
    for (int n = 0; n < s.N; n += 1 + s.N / 7)
      for (int c = 0; c < s.C; c++) {
        double r = 0, mag = 0;
        for (int o = 0; o < s.OC; o++) {
          r += (double)dout[(int64_t)n * s.OC + o] * w[(int64_t)o * s.C + c];
          mag += std::fabs((double)dout[(int64_t)n * s.OC + o] * w[(int64_t)o * s.C + c]);
        }
        if (!near(dinp[n * s.C + c], r, mag, s.OC) && bad++ < 3)
          ADD_FAILURE() << "dinp[" << n << "," << c << "]";
      }
    for (int o = 0; o < s.OC; o += 1 + s.OC / 11)
      for (int c = 0; c < s.C; c++) {
        double r = dw0[(int64_t)o * s.C + c], mag = std::fabs(r), rb = 0, magb = 0;
        for (int n = 0; n < s.N; n++) {
          r += (double)dout[(int64_t)n * s.OC + o] * inp[n * s.C + c];
          mag += std::fabs((double)dout[(int64_t)n * s.OC + o] * inp[n * s.C + c]);
          rb += dout[(int64_t)n * s.OC + o];
          magb += std::fabs(dout[(int64_t)n * s.OC + o]);
        }
        if (!near(dw[(int64_t)o * s.C + c], r, mag, s.N) && bad++ < 3)
          ADD_FAILURE() << "dw[" << o << "," << c << "]";
        if (c == 0 && !near(dbias[o], rb, magb, s.N) && bad++ < 3)
          ADD_FAILURE() << "dbias[" << o << "]";
      }
    EXPECT_EQ(bad, 0);
  }
}

}  // namespace
