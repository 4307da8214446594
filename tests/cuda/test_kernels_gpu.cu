// GPU kernel tests (CTest label `gpu`): every kernel in kernels/cuda against the CPU reference
// ops in kernels/cpu/ops.h, on fresh random inputs (the seed is printed; LT_TEST_SEED=<n>
// reproduces a run), over shapes that are not multiples of any tile size, with outputs poisoned
// (NaN) before each kernel, guard bytes after every device buffer, and per-dtype tolerances.
// Host code only (nvcc compiles it for the CUDA headers); without a device every test SKIPs.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_naive.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"

namespace {

namespace cpu = lt::cpu;
namespace gpu = lt::cuda;
using bf16 = __nv_bfloat16;
using gpu::DataType;
using gpu::Epilogue;
using gpu::GemmPath;
using gpu::Layout;

// Relative tolerances by the precision of the computation: anything stored or computed in bf16
// gets kTolBf16, all-fp32 paths kTolF32. See expect_close for the metric.
constexpr double kTolF32 = 1e-5;
constexpr double kTolBf16 = 1e-2;
template <class F>
constexpr double tol_for() {
  return std::is_same_v<F, float> ? kTolF32 : kTolBf16;
}

// Device errors inside helpers become exceptions, which gtest reports as a failure of the test.
void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
#define CUDA_OK(call) cuda_ok((call), #call)

// ---- Environment: device probe, seed, cuBLAS handle ------------------------------------------

bool g_have_gpu = false;
cublasHandle_t g_cublas = nullptr;
std::mt19937_64 g_rng;

class GpuEnvironment : public testing::Environment {
 public:
  void SetUp() override {
    uint64_t seed = std::random_device{}();
    if (const char* s = std::getenv("LT_TEST_SEED")) seed = std::strtoull(s, nullptr, 10);
    std::printf("[   SEED   ] LT_TEST_SEED=%llu\n", (unsigned long long)seed);
    g_rng.seed(seed);
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
      (void)cudaGetLastError();
      std::printf("[   NOTE   ] no CUDA device (%s): every GPU test is skipped\n",
                  e != cudaSuccess ? cudaGetErrorString(e) : "device count 0");
      return;
    }
    CUDA_OK(cudaSetDevice(0));
    if (cublasCreate(&g_cublas) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasCreate failed");
    g_have_gpu = true;
  }
  void TearDown() override {
    if (g_cublas) cublasDestroy(g_cublas);
    g_cublas = nullptr;
  }
};

// Each test skips itself: gtest 1.12 reports GTEST_SKIP() in a global Environment as PASSED,
// while a skip in the fixture prints "[  SKIPPED ]", which CTest's SKIP_REGULAR_EXPRESSION maps
// to a skipped test.
class Gpu : public testing::Test {
 protected:
  void SetUp() override {
    if (!g_have_gpu) GTEST_SKIP() << "no CUDA device";
  }
  void TearDown() override {
    if (g_have_gpu) CUDA_OK(cudaDeviceSynchronize());
  }
};

// ---- Host data ------------------------------------------------------------------------------

template <class F>
F to_dev(float x) {
  if constexpr (std::is_same_v<F, bf16>)
    return __float2bfloat16_rn(x);
  else
    return static_cast<F>(x);
}
template <class F>
float from_dev(F x) {
  if constexpr (std::is_same_v<F, bf16>)
    return __bfloat162float(x);
  else
    return static_cast<float>(x);
}
// The value a float takes once stored as F: inputs are rounded first so the CPU reference sees
// exactly what the GPU sees.
template <class F>
float round_to(float x) {
  return from_dev<F>(to_dev<F>(x));
}

template <class F = float>
std::vector<float> randn(size_t n, float sd = 1.f) {
  std::normal_distribution<float> dist(0.f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = round_to<F>(dist(g_rng));
  return v;
}

std::vector<int32_t> rand_ints(size_t n, int lo, int hi) {  // [lo, hi)
  std::uniform_int_distribution<int> dist(lo, hi - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(g_rng);
  return v;
}

template <class F>
std::vector<float> rounded(std::vector<float> v) {
  for (float& x : v) x = round_to<F>(x);
  return v;
}

// ---- Device buffers with guard bytes ----------------------------------------------------------

constexpr size_t kGuardBytes = 256;
constexpr int kGuardByte = 0xA5;
constexpr int kPoisonByte = 0xFF;  // all-ones: NaN in fp32 and bf16

template <class T>
class DevBuf {
 public:
  explicit DevBuf(size_t n) : n_(n) {
    CUDA_OK(cudaMalloc(&raw_, bytes() + kGuardBytes));
    CUDA_OK(cudaMemset(raw_, kGuardByte, bytes() + kGuardBytes));
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() { cudaFree(raw_); }
  T* get() const { return static_cast<T*>(raw_); }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  void poison() { CUDA_OK(cudaMemset(raw_, kPoisonByte, bytes())); }
  void upload(const std::vector<float>& h) {
    if (h.size() != n_) throw std::runtime_error("upload: size mismatch");
    std::vector<T> tmp(n_);
    for (size_t i = 0; i < n_; ++i) tmp[i] = to_dev<T>(h[i]);
    CUDA_OK(cudaMemcpy(raw_, tmp.data(), bytes(), cudaMemcpyHostToDevice));
  }
  void upload_raw(const void* h) { CUDA_OK(cudaMemcpy(raw_, h, bytes(), cudaMemcpyHostToDevice)); }
  std::vector<float> download() const {
    std::vector<T> tmp(n_);
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(tmp.data(), raw_, bytes(), cudaMemcpyDeviceToHost));
    std::vector<float> h(n_);
    for (size_t i = 0; i < n_; ++i) h[i] = from_dev<T>(tmp[i]);
    return h;
  }
  std::vector<unsigned char> download_bytes() const {
    std::vector<unsigned char> h(bytes());
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(h.data(), raw_, bytes(), cudaMemcpyDeviceToHost));
    return h;
  }
  bool guard_intact() const {
    std::vector<unsigned char> g(kGuardBytes);
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(g.data(), static_cast<char*>(raw_) + bytes(), kGuardBytes, cudaMemcpyDeviceToHost));
    for (unsigned char c : g)
      if (c != kGuardByte) return false;
    return true;
  }

 private:
  size_t n_;
  void* raw_ = nullptr;
};

#define EXPECT_GUARD(buf) EXPECT_TRUE((buf).guard_intact()) << "write past the end of " #buf

// Relative error, two ways: the whole tensor, ||got - ref|| / ||ref|| <= tol, and each element,
// |got - ref| / (|ref| + rms(ref)) <= elem_factor * tol (rms keeps elements near zero from
// dominating; a wrong element, e.g. a mis-masked row, is off by ~100%). Non-finite elements fail
// outright: outputs start as NaN, so they also flag unwritten ones. `scale`, when given, is a
// floor under rms(ref), for outputs that can cancel to nearly nothing: GELU of an input near -10
// is ~1e-34, and a lone such element (n = 1) would be judged against its own size alone.
double rms(const std::vector<float>& v) {
  double ss = 0;
  for (float f : v) ss += (double)f * f;
  return v.empty() ? 0 : std::sqrt(ss / (double)v.size());
}

void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double tol, const std::string& what,
                  double elem_factor = 4, double scale = 0) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  const size_t n = ref.size();
  double ss_ref = 0, ss_err = 0;
  size_t bad = 0, first_bad = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) {
      if (!bad++) first_bad = i;
      continue;
    }
    ss_ref += (double)ref[i] * ref[i];
    ss_err += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
  }
  ASSERT_EQ(bad, 0u) << what << ": " << bad << " non-finite or unwritten elements, first at " << first_bad
                     << " (want " << ref[first_bad] << ")";
  if (n == 0) return;
  // An all-zero reference (e.g. dq, dk at T = 1) has no scale: fall back to absolute error.
  ss_ref = std::max(ss_ref, scale * scale * (double)n);
  const double rms = ss_ref > 0 ? std::sqrt(ss_ref / n) : 1.0;
  double worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < n; ++i) {
    const double e = std::fabs((double)got[i] - ref[i]) / (std::fabs((double)ref[i]) + rms);
    if (e > worst) worst = e, wi = i;
  }
  const double rel = ss_ref > 0 ? std::sqrt(ss_err / ss_ref) : std::sqrt(ss_err);
  EXPECT_LE(rel, tol) << what << ": relative L2 error " << rel << " (tolerance " << tol << ")";
  EXPECT_LE(worst, elem_factor * tol) << what << ": element " << wi << " got " << got[wi] << " want " << ref[wi]
                            << " (relative " << worst << ")";
}

// ---- GEMM -------------------------------------------------------------------------------------

struct GemmCase {
  Layout layout;
  int M, N, K;
  int64_t lda = 0, ldb = 0;  // 0: packed
  Epilogue epi = Epilogue::None;
  float beta = 0.f;
  DataType in = DataType::BF16, out = DataType::BF16;
  GemmPath path = GemmPath::Auto;
  gpu::GemmTile tile = gpu::GemmTile::Auto;
  bool with_aux = false;       // Gelu: also store the pre-activation
  bool residual_is_c = false;  // Residual: residual aliases C (in-place residual stream)
  bool cublas = false;         // run gemm_cublas instead of gemm
};

const char* name(Layout l) { return l == Layout::NT ? "NT" : l == Layout::NN ? "NN" : "TN"; }

std::string describe(const GemmCase& c) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s M=%d N=%d K=%d lda=%lld ldb=%lld epi=%u beta=%g in=%s out=%s path=%s tile=%s%s%s%s",
                name(c.layout), c.M, c.N, c.K, (long long)c.lda, (long long)c.ldb, (unsigned)c.epi, c.beta,
                c.in == DataType::BF16 ? "bf16" : "f32", c.out == DataType::BF16 ? "bf16" : "f32",
                gpu::to_string(c.path), gpu::to_string(c.tile), c.with_aux ? " aux" : "", c.residual_is_c ? " residual=C" : "",
                c.cublas ? " cublas" : "");
  return buf;
}

// Stored operand with leading dimension ld >= cols; the padding holds NaN, so a kernel that
// reads past a row's end poisons its output.
struct Operand {
  std::vector<float> stored;   // rows x ld
  std::vector<float> compact;  // rows x cols
};
template <class F>
Operand make_operand(int64_t rows, int64_t cols, int64_t ld) {
  Operand o;
  o.compact = randn<F>(rows * cols);
  o.stored.assign(rows * ld, std::numeric_limits<float>::quiet_NaN());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) o.stored[r * ld + c] = o.compact[r * cols + c];
  return o;
}

template <class Tin, class Tout>
void run_gemm_case(const GemmCase& c) {
  SCOPED_TRACE(describe(c));
  const bool nt = c.layout == Layout::NT, tn = c.layout == Layout::TN;
  const int M = c.M, N = c.N, K = c.K;
  const int64_t a_rows = tn ? K : M, a_cols = tn ? M : K, lda = c.lda ? c.lda : a_cols;
  const int64_t b_rows = nt ? N : K, b_cols = nt ? K : N, ldb = c.ldb ? c.ldb : b_cols;
  const Operand A = make_operand<Tin>(a_rows, a_cols, lda);
  const Operand B = make_operand<Tin>(b_rows, b_cols, ldb);
  const size_t MN = (size_t)M * N;
  const auto bias = randn<Tin>(N);
  const auto residual = randn<Tout>(MN);
  const auto aux_in = randn<Tout>(MN, 2.f);  // GeluGrad's pre-activation
  const auto c0 = randn<Tout>(MN);           // C before the call (beta, residual = C)

  // CPU reference: the product through the CPU matmul ops, then the epilogue through the CPU ops.
  std::vector<float> ref(MN, 0.f);
  if (K > 0) {
    if (nt) {
      cpu::matmul_forward(ref.data(), A.compact.data(), B.compact.data(), nullptr, M, K, N);
    } else if (c.layout == Layout::NN) {
      std::vector<float> dw((size_t)K * N), zeros(MN, 0.f);  // matmul_backward also forms dw
      cpu::matmul_backward(ref.data(), dw.data(), nullptr, A.compact.data(), zeros.data(), B.compact.data(), M, N, K);
    } else {
      cpu::matmul_backward(nullptr, ref.data(), nullptr, A.compact.data(), B.compact.data(), B.compact.data(), K, N, M);
    }
  }
  std::vector<float> aux_ref;
  if (gpu::has(c.epi, Epilogue::Bias))
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) ref[(size_t)m * N + n] += bias[n];
  if (gpu::has(c.epi, Epilogue::Gelu)) {
    aux_ref = ref;
    cpu::gelu_forward(ref.data(), aux_ref.data(), MN);
  }
  if (gpu::has(c.epi, Epilogue::GeluGrad)) cpu::gelu_backward(ref.data(), aux_in.data(), ref.data(), MN);
  if (gpu::has(c.epi, Epilogue::Residual))
    cpu::residual_forward(ref.data(), ref.data(), c.residual_is_c ? c0.data() : residual.data(), MN);
  if (c.beta != 0.f)
    for (size_t i = 0; i < MN; ++i) ref[i] += c.beta * c0[i];

  DevBuf<Tin> dA(A.stored.size()), dB(B.stored.size()), dbias(N);
  DevBuf<Tout> dC(MN), dres(MN), daux(MN);
  dA.upload(A.stored);
  dB.upload(B.stored);
  dbias.upload(bias);
  dres.upload(residual);
  if (c.beta != 0.f || c.residual_is_c)
    dC.upload(c0);
  else
    dC.poison();
  if (gpu::has(c.epi, Epilogue::GeluGrad))
    daux.upload(aux_in);
  else
    daux.poison();

  gpu::GemmArgs args;
  args.layout = c.layout;
  args.M = M, args.N = N, args.K = K;
  args.A = dA.get(), args.lda = c.lda;
  args.B = dB.get(), args.ldb = c.ldb;
  args.C = dC.get();
  args.in_type = c.in, args.out_type = c.out;
  args.beta = c.beta;
  args.epilogue = c.epi;
  args.bias = dbias.get();
  args.residual = c.residual_is_c ? static_cast<const void*>(dC.get()) : dres.get();
  args.aux = (c.with_aux || gpu::has(c.epi, Epilogue::GeluGrad)) ? daux.get() : nullptr;
  args.path = c.path;
  args.tile = c.tile;
  if (c.cublas) {
    DevBuf<char> ws(std::max<size_t>(1, gpu::gemm_cublas_workspace_bytes(args)));
    gpu::gemm_cublas(args, g_cublas, ws.get(), ws.bytes(), 0);
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_GUARD(ws);
  } else {
    const bool want_mma = c.path != GemmPath::Simt && c.in == DataType::BF16 && lda % 8 == 0 && ldb % 8 == 0;
    // Wgmma: asked for by name, or Auto on a Hopper GPU (never in the emulator), when K > 0.
#ifdef LT_EMULATED
    const bool auto_wgmma = false;
#else
    const bool auto_wgmma = c.tile == gpu::GemmTile::Auto && gpu::gemm_wgmma_available();
#endif
    const bool want_wgmma = want_mma && K > 0 && gpu::gemm_wgmma_available() &&
                            (c.path == GemmPath::Wgmma || (c.path == GemmPath::Auto && auto_wgmma));
    const GemmPath ran = gpu::gemm(args, 0);
    EXPECT_EQ(ran, want_wgmma ? GemmPath::Wgmma : want_mma ? GemmPath::MmaSync : GemmPath::Simt);
  }
  CUDA_OK(cudaGetLastError());

  const double tol = (c.in == DataType::F32 && c.out == DataType::F32) ? kTolF32 : kTolBf16;
  expect_close(dC.download(), ref, tol, "C");
  if (c.with_aux && gpu::has(c.epi, Epilogue::Gelu)) expect_close(daux.download(), aux_ref, tol, "aux");
  EXPECT_GUARD(dA);
  EXPECT_GUARD(dB);
  EXPECT_GUARD(dbias);
  EXPECT_GUARD(dC);
  EXPECT_GUARD(dres);
  EXPECT_GUARD(daux);
}

void run_gemm(const GemmCase& c) {
  if (c.in == DataType::BF16 && c.out == DataType::BF16) return run_gemm_case<bf16, bf16>(c);
  if (c.in == DataType::BF16) return run_gemm_case<bf16, float>(c);
  if (c.out == DataType::BF16) return run_gemm_case<float, bf16>(c);
  return run_gemm_case<float, float>(c);
}

// Shapes around the 128x128x32 CTA tile, the 64x32 warp tile and the 16x8x16 mma: none of the
// odd ones is a multiple of any of them; K stays a multiple of 8 (16-byte rows) here.
// LT_EMULATED (the CPU emulator build, where a CUDA thread is an OS thread) keeps a subset that
// still spans several CTAs and more k-tiles than pipeline stages.
#ifndef LT_EMULATED
const int kShapes[][3] = {{1, 1, 8},      {7, 9, 16},     {16, 8, 16},     {129, 130, 40},
                          {200, 72, 264}, {256, 384, 96}, {77, 515, 1000}, {300, 257, 8}};
#else
const int kShapes[][3] = {{1, 1, 8}, {129, 130, 40}, {200, 72, 264}};
#endif

void run_layout(Layout l) {
  for (const auto& s : kShapes) {
    GemmCase c{l, s[0], s[1], s[2]};
    run_gemm(c);
    c.out = DataType::F32;
    run_gemm(c);
  }
}

TEST_F(Gpu, GemmForwardNT) { run_layout(Layout::NT); }
TEST_F(Gpu, GemmInputGradNN) { run_layout(Layout::NN); }
TEST_F(Gpu, GemmWeightGradTN) { run_layout(Layout::TN); }

// Every CTA tile gemm() can run (GemmTile), each layout: tails in M and N for the largest tile,
// more k-tiles than pipeline stages for the deepest one; a fused epilogue on one layout.
TEST_F(Gpu, GemmTiles) {
  for (gpu::GemmTile tile : gpu::kGemmTiles)
    for (Layout l : {Layout::NT, Layout::NN, Layout::TN}) {
      GemmCase c{l, 260, 136, 200};
      c.tile = tile;
      run_gemm(c);
      if (l != Layout::NT) continue;
      c.epi = Epilogue::Bias | Epilogue::Gelu;
      c.with_aux = true;
      c.out = DataType::F32;
      run_gemm(c);
    }
}

TEST_F(Gpu, GemmEpilogues) {
  const Epilogue bias_gelu = Epilogue::Bias | Epilogue::Gelu;
  const Epilogue bias_res = Epilogue::Bias | Epilogue::Residual;
  for (DataType out : {DataType::BF16, DataType::F32}) {
    GemmCase c{Layout::NT, 133, 200, 72};
    c.out = out;
    c.epi = Epilogue::Bias;
    run_gemm(c);
    c.epi = bias_gelu;  // fc layer: gelu(x W^T + b), pre-activation kept in aux
    c.with_aux = true;
    run_gemm(c);
    c.with_aux = false;
    run_gemm(c);
    c.epi = bias_res;  // projection into the residual stream, in place
    c.residual_is_c = true;
    run_gemm(c);
    c.residual_is_c = false;
    run_gemm(c);
    GemmCase g{Layout::NN, 133, 72, 200};  // dinp of the fc layer through GELU
    g.out = out;
    g.epi = Epilogue::GeluGrad;
    run_gemm(g);
    GemmCase w{Layout::TN, 72, 136, 300};  // weight gradient accumulation
    w.out = out;
    w.beta = 1.f;
    run_gemm(w);
    w.beta = 0.5f;
    run_gemm(w);
    GemmCase z{Layout::NT, 5, 9, 0};  // K = 0: the epilogue alone
    z.out = out;
    z.epi = Epilogue::Bias;
    run_gemm(z);
  }
}

TEST_F(Gpu, GemmTailsAndFallbacks) {
  for (Layout l : {Layout::NT, Layout::NN, Layout::TN}) {
    // Padded rows (ld a multiple of 8, the row itself not): tensor cores with partial chunks.
    const bool tn = l == Layout::TN, nt = l == Layout::NT;
    GemmCase c{l, 45, 37, 13};
    c.lda = tn ? 48 : 16;
    c.ldb = nt ? 16 : 40;
    run_gemm(c);
    // Rows not 16-byte aligned: Auto falls back to the SIMT kernel.
    GemmCase u{l, 33, 17, 13};
    run_gemm(u);
    u.path = GemmPath::MmaSync;  // requested but impossible: falls back too
    run_gemm(u);
    // SIMT forced on aligned bf16, and the fp32 path (SIMT, all-fp32 tolerance).
    GemmCase s{l, 129, 67, 40};
    s.path = GemmPath::Simt;
    run_gemm(s);
    s.path = GemmPath::Auto;
    s.in = DataType::F32;
    s.out = DataType::F32;
    run_gemm(s);
    s.epi = Epilogue::Bias | Epilogue::Gelu;
    s.with_aux = true;
    run_gemm(s);
  }
}

// The Hopper path (wgmma + TMA), asked for by name. Its CTA tile is 128 x 256 x 64 with 4
// stages; the shapes below are ragged in M, N and K against it, run more k-tiles than stages,
// and (the emulator runs two persistent CTAs) several output tiles per CTA, so the mbarrier
// ring wraps across tiles. K-major and MN-major operands: NT, NN, TN. On a GPU without wgmma
// the request falls back to mma.sync, which run_gemm expects.
TEST_F(Gpu, GemmWgmmaLayouts) {
#ifndef LT_EMULATED
  const int shapes[][3] = {{1, 1, 8}, {130, 260, 72}, {300, 600, 520}, {1000, 1030, 1000}, {64, 768, 8}};
#else
  const int shapes[][3] = {{1, 1, 8}, {130, 260, 72}, {300, 520, 328}};
#endif
  for (Layout l : {Layout::NT, Layout::NN, Layout::TN})
    for (const auto& s : shapes) {
      GemmCase c{l, s[0], s[1], s[2]};
      c.path = GemmPath::Wgmma;
      run_gemm(c);
      c.out = DataType::F32;
      run_gemm(c);
    }
  // Padded leading dimensions (rows longer than the matrix): the tensor map's row stride.
  for (Layout l : {Layout::NT, Layout::NN, Layout::TN}) {
    GemmCase c{l, 150, 270, 80};
    c.lda = l == Layout::TN ? 160 : 96;
    c.ldb = l == Layout::NT ? 96 : 280;
    c.path = GemmPath::Wgmma;
    run_gemm(c);
  }
  // What Wgmma cannot take falls back: K = 0 (to mma.sync) and unaligned rows (to SIMT).
  GemmCase z{Layout::NT, 5, 9, 0};
  z.path = GemmPath::Wgmma;
  z.epi = Epilogue::Bias;
  run_gemm(z);
  GemmCase u{Layout::NN, 33, 17, 13};
  u.path = GemmPath::Wgmma;
  run_gemm(u);
}

// The trainer's fused epilogues on the Wgmma path, each where the trainer uses it.
TEST_F(Gpu, GemmWgmmaEpilogues) {
  for (DataType out : {DataType::BF16, DataType::F32}) {
    GemmCase c{Layout::NT, 133, 300, 72};
    c.path = GemmPath::Wgmma;
    c.out = out;
    c.epi = Epilogue::Bias | Epilogue::Gelu;  // fc: gelu(x W^T + b), pre-activation kept in aux
    c.with_aux = true;
    run_gemm(c);
    c.epi = Epilogue::Bias | Epilogue::Residual;  // projection into the residual stream, in place
    c.with_aux = false;
    c.residual_is_c = true;
    run_gemm(c);
    GemmCase g{Layout::NN, 133, 72, 300};  // dinp of the fc layer through GELU
    g.path = GemmPath::Wgmma;
    g.out = out;
    g.epi = Epilogue::GeluGrad;
    run_gemm(g);
    GemmCase w{Layout::TN, 72, 136, 300};  // weight gradient accumulation
    w.path = GemmPath::Wgmma;
    w.out = out;
    w.beta = 1.f;
    run_gemm(w);
  }
}

// GPT-2 124M's linear layers (C = 768, 4C = 3072, 3C = 2304) in
// all three products. On a GPU: B*T = 2048 rows (the CPU reference bounds it; `bench gemm`
// checks the full shapes and the vocabulary-wide head against cuBLAS); the emulator keeps the
// layer widths but 136 rows.
TEST_F(Gpu, GemmWgmmaGpt2Shapes) {
#ifndef LT_EMULATED
  const int bt = 2048;
  const int layers[][2] = {{2304, 768}, {768, 768}, {3072, 768}, {768, 3072}};  // (OC, C)
#else
  const int bt = 136;
  const int layers[][2] = {{2304, 768}, {768, 3072}};
#endif
  for (const auto& oc_c : layers) {
    const int OC = oc_c[0], C = oc_c[1];
    for (GemmCase c : {GemmCase{Layout::NT, bt, OC, C}, GemmCase{Layout::NN, bt, C, OC}, GemmCase{Layout::TN, OC, C, bt}}) {
      c.path = GemmPath::Wgmma;
      run_gemm(c);
    }
  }
}

// On a Hopper GPU: the Wgmma path against cuBLAS at shapes too large for the CPU reference
// (4096^3 and GPT-2's vocabulary-wide head at 4096 tokens), relative L2 error of the bf16
// outputs within 1e-2. Skips elsewhere (and the emulator leaves cuBLAS tests out).
TEST_F(Gpu, GemmWgmmaVsCublasLarge) {
  if (!gpu::gemm_wgmma_available()) GTEST_SKIP() << "not a compute capability 9.0 GPU with sm_90a code";
  const int shapes[][3] = {{4096, 4096, 4096}, {4096, 50304, 768}};
  for (const auto& s : shapes)
    for (Layout l : {Layout::NT, Layout::NN, Layout::TN}) {
      const int M = s[0], N = s[1], K = s[2];
      SCOPED_TRACE(std::string(name(l)) + " " + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K));
      const size_t nA = (size_t)M * K, nB = (size_t)N * K, nC = (size_t)M * N;
      DevBuf<bf16> dA(nA), dB(nB), dC(nC), dR(nC);
      dA.upload(randn<bf16>(nA));
      dB.upload(randn<bf16>(nB));
      gpu::GemmArgs a;
      a.layout = l;
      a.M = M, a.N = N, a.K = K;
      a.A = dA.get(), a.B = dB.get();
      a.C = dR.get();
      gpu::gemm_cublas(a, g_cublas, nullptr, 0, 0);
      a.C = dC.get();
      a.path = GemmPath::Wgmma;
      EXPECT_EQ(gpu::gemm(a, 0), GemmPath::Wgmma);
      CUDA_OK(cudaDeviceSynchronize());
      const std::vector<float> got = dC.download(), ref = dR.download();
      double num = 0, den = 0;
      for (size_t i = 0; i < nC; ++i) {
        num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
        den += double(ref[i]) * ref[i];
      }
      EXPECT_LE(std::sqrt(num / den), 1e-2);
    }
}

TEST_F(Gpu, GemmCublasBaseline) {
  for (Layout l : {Layout::NT, Layout::NN, Layout::TN}) {
    GemmCase c{l, 129, 130, 40};
    c.cublas = true;
    run_gemm(c);
    c.epi = Epilogue::Bias | Epilogue::Gelu;
    c.with_aux = true;
    run_gemm(c);
    c.epi = Epilogue::Residual;
    c.with_aux = false;
    c.residual_is_c = true;
    run_gemm(c);
    GemmCase f{l, 65, 33, 24};
    f.cublas = true;
    f.in = f.out = DataType::F32;
    f.beta = 1.f;
    run_gemm(f);
  }
}

// ---- Attention --------------------------------------------------------------------------------

// Base-2 log-sum-exp of each row's scaled causal scores, the forward's saved statistic.
std::vector<float> reference_lse(const std::vector<float>& qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt((double)hs);
  std::vector<float> lse((size_t)B * NH * T);
  std::vector<double> s(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        const float* q = &qkv[((size_t)b * T + t) * 3 * C + h * hs];
        double mx = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          const float* k = &qkv[((size_t)b * T + j) * 3 * C + C + h * hs];
          double d = 0;
          for (int i = 0; i < hs; ++i) d += (double)q[i] * k[i];
          s[j] = d * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int j = 0; j <= t; ++j) sum += std::exp(s[j] - mx);
        lse[((size_t)b * NH + h) * T + t] = (float)((mx + std::log(sum)) / std::log(2.0));
      }
  return lse;
}

// hopper_bwd: the backward is attention_backward_hopper (the forward stays attention_forward,
// whose log-sum-exp interface is the same), and scratch must hold D = rowsum(dout * out).
void run_attention(int B, int T, int NH, int hs, bool hopper_bwd = false) {
  SCOPED_TRACE(std::string(hopper_bwd ? "attention (hopper backward)" : "attention") + " B=" + std::to_string(B) +
               " T=" + std::to_string(T) + " NH=" + std::to_string(NH) + " hs=" + std::to_string(hs));
  // By name, so a Hopper GPU (where attention_forward/backward are the Hopper kernels) still
  // checks the mma.sync ones.
  const auto backward = hopper_bwd ? gpu::attention_backward_hopper : gpu::attention_backward_mma_sync;
  const int C = NH * hs;
  const size_t n_qkv = (size_t)B * T * 3 * C, n_out = (size_t)B * T * C, n_lse = (size_t)B * NH * T;
  const auto qkv = randn<bf16>(n_qkv);
  const auto dout = randn<bf16>(n_out);
  std::vector<float> out_ref(n_out), att((size_t)B * NH * T * T), dqkv_ref(n_qkv);
  cpu::attention_forward(out_ref.data(), att.data(), qkv.data(), B, T, C, NH);
  cpu::attention_backward(dqkv_ref.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
  const auto lse_ref = reference_lse(qkv, B, T, C, NH);

  DevBuf<bf16> d_qkv(n_qkv), d_out(n_out), d_dout(n_out), d_dqkv(n_qkv), d_dqkv2(n_qkv);
  DevBuf<float> d_lse(n_lse);
  DevBuf<char> scratch(gpu::attention_backward_scratch_bytes(B, T, NH));
  d_qkv.upload(qkv);
  d_dout.upload(dout);
  d_out.poison();
  d_lse.poison();
  gpu::attention_forward_mma_sync(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, 0);
  CUDA_OK(cudaGetLastError());
  expect_close(d_out.download(), out_ref, kTolBf16, "out");
  // fp32 statistic of a bf16-input computation: tighter than bf16, looser than pure fp32.
  expect_close(d_lse.download(), lse_ref, 1e-4, "lse", 4, 1.0);  // log2 units: no relative error near 0

  d_dqkv.poison();
  scratch.poison();
  backward(d_dqkv.get(), scratch.get(), d_dout.get(), d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, 0);
  CUDA_OK(cudaGetLastError());
  const auto dqkv = d_dqkv.download();
  if (hopper_bwd) {  // D = rowsum(dout * out) per (b, h, t), from the forward's (bf16) out
    const auto out = d_out.download();
    std::vector<float> dvec((size_t)B * NH * T), got(dvec.size());
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t)
        for (int h = 0; h < NH; ++h) {
          double acc = 0;
          for (int i = 0; i < hs; ++i) {
            const size_t at = ((size_t)b * T + t) * C + h * hs + i;
            acc += (double)dout[at] * out[at];
          }
          dvec[((size_t)b * NH + h) * T + t] = (float)acc;
        }
    const auto bytes = scratch.download_bytes();
    std::memcpy(got.data(), bytes.data(), got.size() * sizeof(float));
    expect_close(got, dvec, kTolF32 * 10, "D");
  }
  for (int part = 0; part < 3; ++part) {  // dq, dk, dv separately: each has its own scale
    std::vector<float> got, want;
    for (size_t bt = 0; bt < (size_t)B * T; ++bt)
      for (int c = 0; c < C; ++c) {
        got.push_back(dqkv[bt * 3 * C + part * C + c]);
        want.push_back(dqkv_ref[bt * 3 * C + part * C + c]);
      }
    // P and dS pass through bf16 before their second matmul (as in FlashAttention-2), so the
    // first few positions, where single probabilities are large, carry errors of a few % of the
    // tensor's rms (seen in the emulator at hs=128: L2 3e-3, worst element 4e-2): a looser
    // element bound there, the L2 bound unchanged.
    expect_close(got, want, kTolBf16, part == 0 ? "dq" : part == 1 ? "dk" : "dv", 10);
  }
  // Deterministic: a second run is bit-identical.
  d_dqkv2.poison();
  backward(d_dqkv2.get(), scratch.get(), d_dout.get(), d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, 0);
  EXPECT_TRUE(d_dqkv.download_bytes() == d_dqkv2.download_bytes()) << "attention backward is not deterministic";
#ifndef LT_EMULATED
  if (hopper_bwd) {  // on a Hopper GPU attention_backward is this kernel: the same bits
    d_dqkv2.poison();
    gpu::attention_backward(d_dqkv2.get(), scratch.get(), d_dout.get(), d_out.get(), d_lse.get(), d_qkv.get(), B, T,
                            C, NH, 0);
    EXPECT_TRUE(d_dqkv.download_bytes() == d_dqkv2.download_bytes())
        << "attention_backward did not run the Hopper kernels";
  }
#endif
  EXPECT_GUARD(d_qkv);
  EXPECT_GUARD(d_out);
  EXPECT_GUARD(d_dout);
  EXPECT_GUARD(d_dqkv);
  EXPECT_GUARD(d_dqkv2);
  EXPECT_GUARD(d_lse);
  EXPECT_GUARD(scratch);
}

// T: below, at and across the 64-row tiles, and across the dkdv kernel's 32-row query tiles.
TEST_F(Gpu, AttentionHeadDim64) {
#ifndef LT_EMULATED
  // The last is GPT-2's context: many kv tiles per query tile, both batch entries.
  const int cases[][3] = {{1, 1, 1}, {2, 17, 3}, {1, 64, 2}, {2, 100, 2}, {1, 257, 2}, {1, 128, 1}, {2, 1024, 2}};
#else
  const int cases[][3] = {{1, 1, 1}, {2, 17, 2}, {1, 130, 1}};
#endif
  for (const auto& c : cases) run_attention(c[0], c[1], c[2], 64);
}
TEST_F(Gpu, AttentionHeadDim128) {
#ifndef LT_EMULATED
  const int cases[][3] = {{1, 1, 1}, {2, 33, 2}, {1, 64, 1}, {1, 130, 2}, {2, 200, 1}, {2, 1024, 1}};
#else
  const int cases[][3] = {{2, 33, 1}, {1, 130, 1}};
#endif
  for (const auto& c : cases) run_attention(c[0], c[1], c[2], 128);
}

// The Hopper backward (attention_wgmma_bwd.cu) on the same checks: its CTAs own 128 rows (two
// consumer warpgroups of 64) and stream 64-row tiles through a 2-stage ring, so T crosses both
// (and, at 200, wraps the ring); T = 1; B*NH > 1; both head dims. On a GPU without sm_90a code or
// compute capability 9.0 it skips (attention_backward_hopper would abort).
TEST_F(Gpu, AttentionHopperBackward) {
  if (!gpu::attention_hopper_available()) GTEST_SKIP() << "no sm_90a build or not a compute capability 9.0 device";
#ifndef LT_EMULATED
  const int cases[][4] = {{1, 1, 1, 64},   {2, 17, 3, 64},   {1, 64, 2, 64},   {2, 200, 2, 64},  {1, 257, 2, 64},
                          {2, 1024, 2, 64}, {1, 1, 1, 128}, {2, 33, 2, 128}, {1, 130, 2, 128}, {2, 1024, 1, 128}};
#else
  const int cases[][4] = {{1, 1, 1, 64},   {2, 17, 2, 64},  {1, 200, 1, 64},  {2, 257, 1, 64},
                          {1, 1, 1, 128},  {2, 33, 1, 128}, {1, 200, 1, 128}, {1, 130, 2, 128}};
#endif
  for (const auto& c : cases) run_attention(c[0], c[1], c[2], c[3], true);
}

// The Hopper forward (attention_wgmma.cu: wgmma + TMA, 128-query tiles, 128-key tiles through a
// 3-stage ring), asked for by name, against the CPU reference: out and the base-2 LSE.
void run_attention_hopper(int B, int T, int NH, int hs) {
  SCOPED_TRACE("attention (wgmma) B=" + std::to_string(B) + " T=" + std::to_string(T) + " NH=" + std::to_string(NH) +
               " hs=" + std::to_string(hs));
  const int C = NH * hs;
  const size_t n_qkv = (size_t)B * T * 3 * C, n_out = (size_t)B * T * C, n_lse = (size_t)B * NH * T;
  const auto qkv = randn<bf16>(n_qkv);
  std::vector<float> out_ref(n_out), att((size_t)B * NH * T * T);
  cpu::attention_forward(out_ref.data(), att.data(), qkv.data(), B, T, C, NH);
  const auto lse_ref = reference_lse(qkv, B, T, C, NH);
  DevBuf<bf16> d_qkv(n_qkv), d_out(n_out);
  DevBuf<float> d_lse(n_lse);
  d_qkv.upload(qkv);
  d_out.poison();
  d_lse.poison();
  gpu::attention_forward_hopper(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, 0);
  CUDA_OK(cudaGetLastError());
  expect_close(d_out.download(), out_ref, kTolBf16, "out");
  expect_close(d_lse.download(), lse_ref, 1e-4, "lse", 4, 1.0);  // log2 units: no relative error near 0
#ifndef LT_EMULATED
  // On a Hopper GPU attention_forward is this kernel (the emulator keeps mma.sync): the same bits.
  DevBuf<bf16> d_out2(n_out);
  d_out2.poison();
  gpu::attention_forward(d_out2.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, 0);
  EXPECT_TRUE(d_out.download_bytes() == d_out2.download_bytes()) << "attention_forward did not run the Hopper kernel";
  EXPECT_GUARD(d_out2);
#endif
  EXPECT_GUARD(d_qkv);
  EXPECT_GUARD(d_out);
  EXPECT_GUARD(d_lse);
}

// Head dims 64 and 128; T = 1, below, at and across the 128-row tiles; B*NH > 1 (rows past T in
// the shared tensor map belong to the next batch entry); on a GPU also GPT-2's T = 1024.
TEST_F(Gpu, AttentionHopperForward) {
  if (!gpu::attention_hopper_available()) GTEST_SKIP() << "not a compute capability 9.0 GPU with sm_90a code";
#ifndef LT_EMULATED
  const int cases[][4] = {{1, 1, 1, 64},    {2, 17, 3, 64},   {1, 128, 1, 64},  {2, 130, 2, 64},  {1, 257, 2, 64},
                          {2, 1024, 2, 64}, {1, 1, 1, 128},   {2, 33, 2, 128},  {1, 128, 1, 128}, {2, 200, 1, 128},
                          {1, 385, 2, 128}, {2, 1024, 1, 128}};
#else
  // T = 520 and 385: 5 and 4 key tiles for the last query tile, so the 3-stage ring wraps.
  const int cases[][4] = {{1, 1, 1, 64},  {2, 130, 2, 64},  {1, 520, 1, 64},
                          {1, 1, 1, 128}, {2, 200, 1, 128}, {1, 385, 2, 128}};
#endif
  for (const auto& c : cases) run_attention_hopper(c[0], c[1], c[2], c[3]);
}

// The fallback attention (attention_naive.h: any head dim, fp32 or bf16 storage, probabilities
// kept) against the CPU op, which it mirrors output for output.
template <class F>
void run_attention_naive(int B, int T, int NH, int hs) {
  SCOPED_TRACE(std::string("attention (fallback) ") + (std::is_same_v<F, bf16> ? "bf16" : "f32") +
               " B=" + std::to_string(B) + " T=" + std::to_string(T) + " NH=" + std::to_string(NH) +
               " hs=" + std::to_string(hs));
  const double tol = tol_for<F>();
  const int C = NH * hs;
  const size_t n_qkv = (size_t)B * T * 3 * C, n_out = (size_t)B * T * C, n_att = (size_t)B * NH * T * T;
  const auto qkv = randn<F>(n_qkv);
  const auto dout = randn<F>(n_out);
  std::vector<float> out_ref(n_out), att_ref(n_att), dqkv_ref(n_qkv);
  cpu::attention_forward(out_ref.data(), att_ref.data(), qkv.data(), B, T, C, NH);
  cpu::attention_backward(dqkv_ref.data(), dout.data(), qkv.data(), att_ref.data(), B, T, C, NH);

  DevBuf<F> d_qkv(n_qkv), d_out(n_out), d_dout(n_out), d_dqkv(n_qkv);
  DevBuf<float> d_att(n_att);
  DevBuf<char> scratch(gpu::attention_naive_backward_scratch_bytes(B, T, NH));
  d_qkv.upload(qkv);
  d_dout.upload(dout);
  d_out.poison();
  d_att.poison();
  d_dqkv.poison();
  gpu::attention_naive_forward<F>(d_out.get(), d_att.get(), d_qkv.get(), B, T, C, NH, 0);
  CUDA_OK(cudaGetLastError());
  expect_close(d_out.download(), out_ref, tol, "out");
  expect_close(d_att.download(), att_ref, kTolF32, "att");  // fp32 from the same (rounded) inputs
  gpu::attention_naive_backward<F>(d_dqkv.get(), scratch.get(), d_dout.get(), d_qkv.get(), d_att.get(), B, T, C, NH,
                                   0);
  CUDA_OK(cudaGetLastError());
  const auto dqkv = d_dqkv.download();
  for (int part = 0; part < 3; ++part) {
    std::vector<float> got, want;
    for (size_t bt = 0; bt < (size_t)B * T; ++bt)
      for (int c = 0; c < C; ++c) {
        got.push_back(dqkv[bt * 3 * C + part * C + c]);
        want.push_back(dqkv_ref[bt * 3 * C + part * C + c]);
      }
    expect_close(got, want, tol, part == 0 ? "dq" : part == 1 ? "dk" : "dv");
  }
  EXPECT_GUARD(d_qkv);
  EXPECT_GUARD(d_out);
  EXPECT_GUARD(d_att);
  EXPECT_GUARD(d_dqkv);
  EXPECT_GUARD(scratch);
}

TEST_F(Gpu, AttentionFallback) {
#ifndef LT_EMULATED
  const int cases[][4] = {{1, 1, 1, 32}, {2, 37, 3, 32}, {1, 100, 2, 64}, {2, 65, 1, 24}, {1, 130, 2, 128}};
#else
  const int cases[][4] = {{1, 1, 1, 32}, {2, 37, 2, 24}, {1, 40, 1, 64}};
#endif
  for (const auto& c : cases) {
    run_attention_naive<float>(c[0], c[1], c[2], c[3]);
    run_attention_naive<bf16>(c[0], c[1], c[2], c[3]);
  }
}

// ---- LayerNorm, bias gradient -----------------------------------------------------------------

template <class F>
void run_layernorm(int N, int C) {
  SCOPED_TRACE(std::string("layernorm ") + (std::is_same_v<F, bf16> ? "bf16" : "f32") + " N=" + std::to_string(N) +
               " C=" + std::to_string(C));
  const double tol = tol_for<F>();
  const size_t NC = (size_t)N * C;
  const auto inp = randn<F>(NC, 2.f), w = randn<F>(C), b = randn<F>(C), dout = randn<F>(NC);
  const auto dinp0 = randn<F>(NC), dw0 = randn<F>(C), db0 = randn<F>(C);
  std::vector<float> out(NC), mean(N), rstd(N), dinp = dinp0, dw = dw0, db = db0;
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(), N, C);
  cpu::layernorm_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), w.data(), mean.data(),
                          rstd.data(), N, C);

  DevBuf<F> d_inp(NC), d_w(C), d_b(C), d_out(NC), d_dout(NC), d_dinp(NC), d_dw(C), d_db(C);
  DevBuf<float> d_mean(N), d_rstd(N);
  DevBuf<char> scratch(gpu::layernorm_backward_scratch_bytes(N, C));
  d_inp.upload(inp), d_w.upload(w), d_b.upload(b), d_dout.upload(dout);
  d_out.poison(), d_mean.poison(), d_rstd.poison();
  gpu::layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_inp.get(), d_w.get(), d_b.get(), N, C, 0);
  expect_close(d_out.download(), out, tol, "out");
  expect_close(d_mean.download(), mean, kTolF32, "mean");
  expect_close(d_rstd.download(), rstd, kTolF32, "rstd");
  d_dinp.upload(dinp0), d_dw.upload(dw0), d_db.upload(db0);
  gpu::layernorm_backward(d_dinp.get(), d_dw.get(), d_db.get(), scratch.get(), d_dout.get(), d_inp.get(), d_w.get(),
                          d_mean.get(), d_rstd.get(), N, C, 0);
  CUDA_OK(cudaGetLastError());
  expect_close(d_dinp.download(), dinp, tol, "dinp");
  expect_close(d_dw.download(), dw, tol, "dw");
  expect_close(d_db.download(), db, tol, "db");
  EXPECT_GUARD(d_out);
  EXPECT_GUARD(d_mean);
  EXPECT_GUARD(d_rstd);
  EXPECT_GUARD(d_dinp);
  EXPECT_GUARD(d_dw);
  EXPECT_GUARD(d_db);
  EXPECT_GUARD(scratch);
}

TEST_F(Gpu, LayerNorm) {
  const int cases[][2] = {{1, 8}, {33, 200}, {300, 768}, {5, 1000}, {70, 33}};
  for (const auto& c : cases) {
    run_layernorm<float>(c[0], c[1]);
    run_layernorm<bf16>(c[0], c[1]);
  }
}

template <class F>
void run_bias_backward(int N, int OC) {
  SCOPED_TRACE(std::string("bias_backward ") + (std::is_same_v<F, bf16> ? "bf16" : "f32") + " N=" +
               std::to_string(N) + " OC=" + std::to_string(OC));
  const auto dout = randn<F>((size_t)N * OC), dbias0 = randn<F>(OC);
  std::vector<float> dbias = dbias0, dw(OC, 0.f), inp(N, 0.f), w(OC, 0.f);
  cpu::matmul_backward(nullptr, dw.data(), dbias.data(), dout.data(), inp.data(), w.data(), N, 1, OC);
  DevBuf<F> d_dout((size_t)N * OC), d_dbias(OC);
  DevBuf<char> scratch(gpu::bias_backward_scratch_bytes(N, OC));
  d_dout.upload(dout), d_dbias.upload(dbias0);
  gpu::bias_backward(d_dbias.get(), scratch.get(), d_dout.get(), N, OC, 0);
  expect_close(d_dbias.download(), dbias, tol_for<F>(), "dbias");
  EXPECT_GUARD(d_dbias);
  EXPECT_GUARD(scratch);
}

TEST_F(Gpu, BiasBackward) {
  const int cases[][2] = {{1, 1}, {31, 300}, {300, 257}, {1000, 64}};
  for (const auto& c : cases) {
    run_bias_backward<float>(c[0], c[1]);
    run_bias_backward<bf16>(c[0], c[1]);
  }
}

// ---- Embeddings -------------------------------------------------------------------------------

template <class F>
void run_encoder(int B, int T, int C, int V) {
  SCOPED_TRACE(std::string("encoder ") + (std::is_same_v<F, bf16> ? "bf16" : "f32") + " B=" + std::to_string(B) +
               " T=" + std::to_string(T) + " C=" + std::to_string(C) + " V=" + std::to_string(V));
  const double tol = tol_for<F>();
  const size_t BT = (size_t)B * T, n = BT * C;
  const auto tokens = rand_ints(BT, 0, V);  // small V: many repeats
  const auto wte = randn<F>((size_t)V * C), wpe = randn<F>((size_t)T * C), dout = randn<F>(n);
  const auto dwte0 = randn<F>((size_t)V * C), dwpe0 = randn<F>((size_t)T * C);
  std::vector<float> out(n), dwte = dwte0, dwpe = dwpe0;
  cpu::encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
  cpu::encoder_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);

  DevBuf<int32_t> d_tok(BT);
  DevBuf<F> d_wte((size_t)V * C), d_wpe((size_t)T * C), d_out(n), d_dout(n), d_dwte((size_t)V * C),
      d_dwpe((size_t)T * C);
  d_tok.upload_raw(tokens.data());
  d_wte.upload(wte), d_wpe.upload(wpe), d_dout.upload(dout), d_out.poison();
  gpu::encoder_forward(d_out.get(), d_tok.get(), d_wte.get(), d_wpe.get(), B, T, C, 0);
  expect_close(d_out.download(), out, tol, "out");

  const gpu::EncoderBackwardPlan plan = gpu::encoder_backward_plan(tokens.data(), B, T, V);
  DevBuf<int32_t> d_plan(plan.data.size());
  d_plan.upload_raw(plan.data.data());
  d_dwte.upload(dwte0), d_dwpe.upload(dwpe0);
  gpu::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_plan.get(), plan.num_buckets, B, T, C, 0);
  CUDA_OK(cudaGetLastError());
  expect_close(d_dwte.download(), dwte, tol, "dwte");
  expect_close(d_dwpe.download(), dwpe, tol, "dwpe");
  EXPECT_GUARD(d_out);
  EXPECT_GUARD(d_dwte);
  EXPECT_GUARD(d_dwpe);
}

TEST_F(Gpu, Encoder) {
  const int cases[][4] = {{1, 1, 8, 3}, {3, 17, 72, 11}, {2, 64, 300, 50}, {4, 33, 768, 1000}};
  for (const auto& c : cases) {
    run_encoder<float>(c[0], c[1], c[2], c[3]);
    run_encoder<bf16>(c[0], c[1], c[2], c[3]);
  }
}

// ---- Elementwise ------------------------------------------------------------------------------

template <class F>
void run_elementwise(int64_t n) {
  SCOPED_TRACE(std::string("elementwise ") + (std::is_same_v<F, bf16> ? "bf16" : "f32") + " n=" + std::to_string(n));
  const double tol = tol_for<F>();
  const auto x = randn<F>(n, 3.f), dout = randn<F>(n), a = randn<F>(n), b = randn<F>(n);
  std::vector<float> g(n), dg(n), r(n);
  cpu::gelu_forward(g.data(), x.data(), n);
  cpu::gelu_backward(dg.data(), x.data(), dout.data(), n);
  cpu::residual_forward(r.data(), a.data(), b.data(), n);
  DevBuf<F> d_x(n), d_dout(n), d_a(n), d_b(n), d_out(n);
  d_x.upload(x), d_dout.upload(dout), d_a.upload(a), d_b.upload(b);
  d_out.poison();
  gpu::gelu_forward(d_out.get(), d_x.get(), n, 0);
  // A floor a thousand times below the inputs' scale (x's; dout's for the gradient): far below
  // rms(gelu) on any real tensor, far above what a cancelled element's error can be.
  expect_close(d_out.download(), g, tol, "gelu", 4, 1e-3 * rms(x));
  d_out.poison();
  gpu::gelu_backward(d_out.get(), d_x.get(), d_dout.get(), n, 0);
  expect_close(d_out.download(), dg, tol, "gelu_backward", 4, 1e-3 * rms(dout));
  d_out.poison();
  gpu::residual_forward(d_out.get(), d_a.get(), d_b.get(), n, 0);
  expect_close(d_out.download(), r, tol, "residual");
  gpu::residual_forward(d_a.get(), d_a.get(), d_b.get(), n, 0);  // in place
  expect_close(d_a.download(), r, tol, "residual in place");
  EXPECT_GUARD(d_out);
  EXPECT_GUARD(d_a);
}

TEST_F(Gpu, Elementwise) {
#ifndef LT_EMULATED
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(1) << 20 | 3}) {
#else
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(70001)}) {
#endif
    run_elementwise<float>(n);
    run_elementwise<bf16>(n);
  }
}

// ---- Cross-entropy ----------------------------------------------------------------------------

template <class F>
void run_crossentropy(int N, int V, int Vp) {
  SCOPED_TRACE(std::string("crossentropy ") + (std::is_same_v<F, bf16> ? "bf16" : "f32") + " N=" +
               std::to_string(N) + " V=" + std::to_string(V) + " Vp=" + std::to_string(Vp));
  const double tol = tol_for<F>();
  const size_t n = (size_t)N * Vp;
  auto logits = randn<F>(n, 2.f);
  for (int r = 0; r < N; ++r)  // padding must never be read
    for (int v = V; v < Vp; ++v) logits[(size_t)r * Vp + v] = std::numeric_limits<float>::quiet_NaN();
  const auto targets = rand_ints(N, 0, V);
  const float dloss = 1.f / N;
  std::vector<float> losses(N), probs(n), dlogits(n);
  cpu::crossentropy_forward(losses.data(), probs.data(), logits.data(), targets.data(), N, V, Vp);
  cpu::crossentropy_backward(dlogits.data(), probs.data(), targets.data(), dloss, N, V, Vp);

  DevBuf<F> d_logits(n), d_probs(n), d_dlogits(n);
  DevBuf<float> d_losses(N);
  DevBuf<int32_t> d_targets(N);
  d_logits.upload(logits);
  d_targets.upload_raw(targets.data());
  d_probs.poison(), d_losses.poison();
  gpu::crossentropy_forward(d_losses.get(), d_probs.get(), d_logits.get(), d_targets.get(), N, V, Vp, 0);
  expect_close(d_losses.download(), losses, kTolF32, "losses");
  expect_close(d_probs.download(), probs, tol, "probs");
  d_dlogits.poison();
  gpu::crossentropy_backward(d_dlogits.get(), d_probs.get(), d_targets.get(), dloss, N, V, Vp, 0);
  expect_close(d_dlogits.download(), dlogits, tol, "dlogits");
  // Fused, in place over the logits.
  d_losses.poison();
  gpu::crossentropy_fused(d_losses.get(), d_logits.get(), d_logits.get(), d_targets.get(), dloss, N, V, Vp, 0);
  expect_close(d_losses.download(), losses, kTolF32, "fused losses");
  expect_close(d_logits.download(), dlogits, tol, "fused dlogits");
  EXPECT_GUARD(d_logits);
  EXPECT_GUARD(d_probs);
  EXPECT_GUARD(d_dlogits);
  EXPECT_GUARD(d_losses);
}

TEST_F(Gpu, CrossEntropy) {
#ifndef LT_EMULATED
  const int cases[][3] = {{1, 10, 16}, {37, 1000, 1024}, {3, 50257, 50304}, {20, 513, 513}};
#else
  const int cases[][3] = {{1, 10, 16}, {37, 1000, 1024}, {20, 513, 513}};
#endif
  for (const auto& c : cases) {
    run_crossentropy<float>(c[0], c[1], c[2]);
    run_crossentropy<bf16>(c[0], c[1], c[2]);
  }
}

// ---- Optimizer --------------------------------------------------------------------------------

template <class G>
void run_adamw(int64_t n, bool bf16_copy, bool device_scale) {
  SCOPED_TRACE(std::string("adamw grad=") + (std::is_same_v<G, bf16> ? "bf16" : "f32") + " n=" + std::to_string(n) +
               (bf16_copy ? " +bf16 copy" : "") + (device_scale ? " +device scale" : ""));
  const float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.5f, dev_gs = 0.8f;
  const int step = 7;
  const auto p0 = randn(n), g0 = randn<G>(n), m0 = randn(n, 0.1f);
  auto v0 = randn(n, 0.01f);
  for (float& x : v0) x = std::fabs(x);
  std::vector<float> p = p0, g = g0, m = m0, v = v0;
  cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, device_scale ? gs * dev_gs : gs,
                    step);
  DevBuf<float> d_p(n), d_m(n), d_v(n), d_scale(1);
  DevBuf<G> d_g(n);
  DevBuf<bf16> d_p16(n);
  d_p.upload(p0), d_g.upload(g0), d_m.upload(m0), d_v.upload(v0), d_scale.upload({dev_gs});
  d_p16.poison();
  gpu::adamw_update<G>(d_p.get(), bf16_copy ? d_p16.get() : nullptr, d_g.get(), d_m.get(), d_v.get(), n, lr, b1, b2,
                       eps, wd, gs, device_scale ? d_scale.get() : nullptr, step, 0);
  expect_close(d_p.download(), p, kTolF32, "p");
  expect_close(d_m.download(), m, kTolF32, "m");
  expect_close(d_v.download(), v, kTolF32, "v");
  const auto g_after = d_g.download();
  size_t nonzero = 0;
  for (float x : g_after) nonzero += x != 0.f;
  EXPECT_EQ(nonzero, 0u) << "gradients not zeroed";
  if (bf16_copy) expect_close(d_p16.download(), rounded<bf16>(p), kTolBf16, "p bf16 copy");
  EXPECT_GUARD(d_p);
  EXPECT_GUARD(d_g);
  EXPECT_GUARD(d_m);
  EXPECT_GUARD(d_v);
  EXPECT_GUARD(d_p16);
}

TEST_F(Gpu, AdamW) {
  for (int64_t n : {int64_t(1), int64_t(100003)}) {
    run_adamw<float>(n, false, false);
    run_adamw<float>(n, true, true);
    run_adamw<bf16>(n, true, false);
    run_adamw<bf16>(n, false, true);
  }
}

template <class F>
void run_sum_squares(int64_t n) {
  SCOPED_TRACE(std::string("sum_squares ") + (std::is_same_v<F, bf16> ? "bf16" : "f32") + " n=" + std::to_string(n));
  const auto x = randn<F>(n);
  const double ref = cpu::sum_squares(x.data(), n);
  DevBuf<F> d_x(n);
  DevBuf<double> d_sum(1);
  DevBuf<float> d_scale(1), d_norm(1);
  DevBuf<char> scratch(gpu::sum_squares_scratch_bytes(n));
  d_x.upload(x);
  gpu::sum_squares(d_sum.get(), d_x.get(), n, scratch.get(), false, 0);
  double got_d = 0;  // read as double (download() goes through float)
  CUDA_OK(cudaMemcpy(&got_d, d_sum.get(), sizeof(double), cudaMemcpyDeviceToHost));
  EXPECT_NEAR(got_d, ref, 1e-9 * ref + 1e-30);
  gpu::sum_squares(d_sum.get(), d_x.get(), n, scratch.get(), true, 0);  // accumulate: 2x
  CUDA_OK(cudaMemcpy(&got_d, d_sum.get(), sizeof(double), cudaMemcpyDeviceToHost));
  EXPECT_NEAR(got_d, 2 * ref, 2e-9 * ref + 1e-30);
  // Clipping as the CPU optimizer: max_norm at half the norm of the (doubled) sum.
  const float norm = (float)std::sqrt(2 * ref), max_norm = 0.5f * norm;
  gpu::grad_clip_scale(d_scale.get(), d_norm.get(), d_sum.get(), max_norm, 0);
  const float want_scale = std::fmin(1.f, max_norm / (norm + 1e-6f));
  EXPECT_NEAR(d_norm.download()[0], norm, 1e-6 * norm);
  EXPECT_NEAR(d_scale.download()[0], want_scale, 1e-6);
  gpu::scale_inplace(d_x.get(), n, d_scale.get(), 0);
  std::vector<float> xs(x);
  for (float& e : xs) e = round_to<F>(e * want_scale);
  expect_close(d_x.download(), xs, tol_for<F>(), "scaled");
  EXPECT_GUARD(d_x);
  EXPECT_GUARD(scratch);
}

TEST_F(Gpu, SumSquaresAndClipping) {
#ifndef LT_EMULATED
  for (int64_t n : {int64_t(1), int64_t(16384), int64_t(16385), int64_t(1000003)}) {
#else
  for (int64_t n : {int64_t(1), int64_t(16384), int64_t(16385), int64_t(100003)}) {
#endif
    run_sum_squares<float>(n);
    run_sum_squares<bf16>(n);
  }
}

TEST_F(Gpu, Convert) {
  const int64_t n = 4099;
  const auto x = randn(n, 10.f);
  DevBuf<float> d_x(n), d_back(n);
  DevBuf<bf16> d_h(n);
  d_x.upload(x), d_h.poison(), d_back.poison();
  gpu::convert(d_h.get(), d_x.get(), n, 0);
  gpu::convert(d_back.get(), d_h.get(), n, 0);
  const auto want = rounded<bf16>(x);
  EXPECT_TRUE(d_h.download() == want) << "float -> bf16 is not round-to-nearest-even";
  EXPECT_TRUE(d_back.download() == want) << "bf16 -> float is not exact";
  EXPECT_GUARD(d_h);
  EXPECT_GUARD(d_back);
}

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  testing::AddGlobalTestEnvironment(new GpuEnvironment);
  return RUN_ALL_TESTS();
}
