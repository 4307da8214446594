// Whole-model tests of the CUDA backend (CTest label `gpu`; every test SKIPs without a CUDA
// device): one training step of the same GPT-2 on the CUDA and the CPU backends, from the
// same weights and tokens: the loss, every parameter's gradient, the clipped gradient norm and
// the AdamW update agree within the precision's tolerance; and a 50-step run on the GPU whose
// loss falls. Host code over the runtime (model.h, optim.h, backend.h).
//
// LT_EMULATED: the same file built against tests/cuda/emulator.h, with the CUDA backend, the
// runtime's tensors and every kernel running on the CPU emulator (label cuda-emulated): small
// shapes, fewer steps. That runs the backend's host glue (dtype dispatch, GEMM layouts,
// attention paths, clipping on the device, the encoder plan) on machines without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/gemm.h"
#include "runtime/backend.h"
#include "runtime/model.h"
#include "runtime/optim.h"
#include "runtime/rng.h"

namespace {

using lt::Backend;
using lt::BackendOptions;
using lt::Device;
using lt::DType;
using lt::GPT;
using lt::GPTConfig;

bool g_have_gpu = false;

class ModelGpu : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string why;
    g_have_gpu = lt::cuda_available(&why);
    if (!g_have_gpu) std::printf("[   NOTE   ] no CUDA device (%s): every GPU test is skipped\n", why.c_str());
  }
  void SetUp() override {
    if (!g_have_gpu) GTEST_SKIP() << "no CUDA device";
  }
};

struct Case {
  std::string name;
  GPTConfig cfg;
  int B = 2, T = 16;
  DType precision = DType::BF16;
  std::string gemm = "mma";
  std::string attention = "auto";
  // Relative tolerances: the loss; each parameter's gradient (relative L2 over the tensor); the
  // AdamW update (relative L2 of p_after - p_before over all parameters).
  double tol_loss = 1e-2, tol_grad = 5e-2, tol_update = 0.25;
};

GPTConfig config(int L, int NH, int C, int V, int ctx) {
  GPTConfig c;
  c.n_layer = L;
  c.n_head = NH;
  c.n_embd = C;
  c.vocab_size = V;
  c.block_size = ctx;
  return c;
}

std::unique_ptr<Backend> cuda_backend(DType precision, const std::string& gemm, const std::string& attention = "auto") {
  BackendOptions o;
  o.device = Device::CUDA;
  o.precision = precision;
  o.gemm = gemm;
  o.attention = attention;
  return lt::make_backend(o);
}

std::vector<int32_t> random_tokens(int n, int V, uint64_t seed) {
  lt::Rng rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = (int32_t)(rng.next() % (uint64_t)V);
  return t;
}

double rel_l2(const float* got, const float* ref, int64_t n, double* worst_abs = nullptr) {
  double e = 0, r = 0, w = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = (double)got[i] - ref[i];
    e += d * d;
    r += (double)ref[i] * ref[i];
    w = std::max(w, std::fabs(d));
  }
  if (worst_abs) *worst_abs = w;
  return r > 0 ? std::sqrt(e / r) : std::sqrt(e);
}

// One forward + backward + AdamW step on each backend from identical weights and tokens.
void compare_step(const Case& c) {
  SCOPED_TRACE(c.name);
  if ((c.gemm == "wgmma" || c.attention == "wgmma") && !lt::cuda::gemm_wgmma_available()) {
    std::printf("[   INFO   ] %s: not run (the wgmma kernels need an H100/H200)\n", c.name.c_str());
    return;
  }
  const int B = c.B, T = c.T, V = c.cfg.vocab_size;
  const auto tokens = random_tokens(B * T, V, 11), targets = random_tokens(B * T, V, 12);
  lt::AdamWConfig ocfg;
  ocfg.grad_clip = 0.5f;  // small enough to clip: exercises the device-side scale

  auto cpu_be = lt::make_cpu_backend();
  GPT cpu(c.cfg, *cpu_be);
  cpu.init_weights(7);
  const float cpu_loss = cpu.forward(tokens.data(), targets.data(), B, T);
  cpu.backward(1.f);
  const std::vector<float> cpu_grads = cpu_be->to_host_f32(cpu.grads());
  const std::vector<float> p0 = cpu_be->to_host_f32(cpu.params());
  lt::AdamW cpu_opt(ocfg, cpu);
  const float cpu_norm = cpu_opt.step(1e-3f);
  const std::vector<float> cpu_p1 = cpu_be->to_host_f32(cpu.params());

  auto be = cuda_backend(c.precision, c.gemm, c.attention);
  ASSERT_EQ(be->device(), Device::CUDA);
  ASSERT_EQ(be->compute_dtype(), c.precision);
  GPT gpu(c.cfg, *be);
  gpu.init_weights(7);
  const float gpu_loss = gpu.forward(tokens.data(), targets.data(), B, T);
  gpu.backward(1.f);
  ASSERT_EQ(gpu.grads().dtype, c.precision);
  const std::vector<float> gpu_grads = be->to_host_f32(gpu.grads());
  lt::AdamW gpu_opt(ocfg, gpu);
  const float gpu_norm = gpu_opt.step(1e-3f);
  const std::vector<float> gpu_p1 = be->to_host_f32(gpu.params());

  EXPECT_TRUE(std::isfinite(gpu_loss));
  EXPECT_NEAR(gpu_loss, cpu_loss, c.tol_loss * std::fabs(cpu_loss)) << "loss";
  double worst = 0;
  std::string worst_name;
  for (const lt::ParamInfo& p : cpu.param_info()) {
    double abs_err = 0;
    const double e = rel_l2(gpu_grads.data() + p.offset, cpu_grads.data() + p.offset, p.numel, &abs_err);
    EXPECT_LE(e, c.tol_grad) << "gradient of " << p.name << ": relative L2 error " << e << " (max abs " << abs_err
                             << ")";
    if (e > worst) worst = e, worst_name = p.name;
  }
  EXPECT_NEAR(gpu_norm, cpu_norm, c.tol_loss * cpu_norm) << "gradient norm";
  std::vector<float> du_cpu(p0.size()), du_gpu(p0.size());
  for (size_t i = 0; i < p0.size(); i++) du_cpu[i] = cpu_p1[i] - p0[i], du_gpu[i] = gpu_p1[i] - p0[i];
  const double eu = rel_l2(du_gpu.data(), du_cpu.data(), (int64_t)du_cpu.size());
  EXPECT_LE(eu, c.tol_update) << "AdamW update";
  // The optimizer zeroed the gradients on the device.
  const std::vector<float> after = be->to_host_f32(gpu.grads());
  double gsum = 0;
  for (float g : after) gsum += std::fabs(g);
  EXPECT_EQ(gsum, 0.0) << "gradients not zeroed by the optimizer step";
  std::printf("[   INFO   ] %s: loss cpu %.6f gpu %.6f | worst gradient %s rel %.2e | norm cpu %.5f gpu %.5f | "
              "update rel %.2e\n",
              c.name.c_str(), cpu_loss, gpu_loss, worst_name.c_str(), worst, cpu_norm, gpu_norm, eu);

  // forward_async + take_losses give what forward() gives, and the step is repeatable.
  gpu.forward_async(tokens.data(), targets.data(), B, T);
  gpu.forward_async(tokens.data(), targets.data(), B, T);
  const std::vector<float> l = gpu.take_losses();
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0], l[1]);
  EXPECT_EQ(l[0], gpu.forward(tokens.data(), targets.data(), B, T));
  EXPECT_TRUE(gpu.take_losses().empty());
}

#ifndef LT_EMULATED
const std::vector<Case> kCases = [] {
  std::vector<Case> v;
  // Flash attention (head dim 64), T and the vocabulary off every tile size.
  v.push_back({"bf16 flash hd64", config(2, 2, 128, 300, 128), 3, 97});
  v.push_back({"bf16 flash hd128", config(1, 2, 256, 256, 160), 2, 130});
  // The tiny config's head dim 32: the fallback attention kernels in bf16.
  v.push_back({"bf16 fallback hd32", config(2, 4, 128, 256, 128), 4, 64});
  // The cuBLAS baseline behind --gemm cublas.
  Case cb{"bf16 cublas hd64", config(2, 2, 128, 300, 128), 3, 97};
  cb.gemm = "cublas";
  v.push_back(cb);
  // The Hopper GEMM forced (--gemm wgmma; on a Hopper the cases above take it through Auto).
  Case wg{"bf16 wgmma hd64", config(2, 2, 128, 300, 128), 3, 97};
  wg.gemm = "wgmma";
  v.push_back(wg);
  // Off Hopper-by-default: the mma.sync GEMM and attention forced (on a Hopper the cases above
  // run the wgmma kernels through Auto), and the Hopper attention at head dim 128.
  Case ms{"bf16 mma.sync gemm and attention hd64", config(2, 2, 128, 300, 128), 3, 97};
  ms.gemm = ms.attention = "mma.sync";
  v.push_back(ms);
  Case wa{"bf16 wgmma gemm and attention hd128", config(1, 2, 256, 256, 160), 2, 130};
  wa.gemm = wa.attention = "wgmma";
  v.push_back(wa);
  // fp32 mode: SIMT GEMM and the fallback attention, against the fp32 CPU reference.
  Case f{"fp32 hd64", config(2, 2, 128, 300, 128), 3, 97, DType::F32};
  f.tol_loss = 1e-5, f.tol_grad = 1e-4, f.tol_update = 1e-3;
  v.push_back(f);
  Case fc = f;
  fc.name = "fp32 cublas hd64";
  fc.gemm = "cublas";
  v.push_back(fc);
  return v;
}();
constexpr int kTrainSteps = 50;
constexpr float kTrainLr = 3e-3f;
const DType kTrainPrecisions[] = {DType::BF16, DType::F32};
#else
const std::vector<Case> kCases = [] {
  std::vector<Case> v;
  v.push_back({"bf16 flash hd64", config(1, 1, 64, 64, 32), 2, 20});
  v.push_back({"bf16 fallback hd32", config(1, 2, 64, 64, 32), 2, 20});
  Case wg{"bf16 wgmma hd64", config(1, 1, 64, 64, 32), 2, 20};  // the Hopper kernels: --gemm/--attention wgmma
  wg.gemm = wg.attention = "wgmma";
  v.push_back(wg);
  Case f{"fp32 hd64", config(1, 1, 64, 64, 32), 2, 20, DType::F32};
  f.tol_loss = 1e-5, f.tol_grad = 1e-4, f.tol_update = 1e-3;
  v.push_back(f);
  return v;
}();
constexpr int kTrainSteps = 4;  // each emulated step takes seconds
constexpr float kTrainLr = 1e-2f;
const DType kTrainPrecisions[] = {DType::BF16};  // fp32 is covered by StepMatchesCpu
#endif

TEST_F(ModelGpu, StepMatchesCpu) {
  for (const Case& c : kCases) compare_step(c);
}

// Training on the GPU: a fixed batch of B x T tokens drawn from a small alphabet, repeated, so
// the loss must fall well below its starting point (ln V) within the steps.
TEST_F(ModelGpu, LossFalls) {
#ifndef LT_EMULATED
  const GPTConfig cfg = config(2, 2, 128, 256, 128);
  const int B = 4, T = 64;
#else
  const GPTConfig cfg = config(1, 1, 64, 64, 32);
  const int B = 2, T = 16;
#endif
  for (DType precision : kTrainPrecisions) {
    SCOPED_TRACE(precision == DType::BF16 ? "bf16" : "fp32");
    auto be = cuda_backend(precision, "mma");
    GPT model(cfg, *be);
    model.init_weights(3);
    lt::AdamWConfig ocfg;
    ocfg.lr = kTrainLr;
    ocfg.weight_decay = 0.f;
    lt::AdamW opt(ocfg, model);
    const auto seq = random_tokens(B * (T + 1), 8, 5);  // 8 distinct tokens
    std::vector<int32_t> in(B * T), tgt(B * T);
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) {
        in[b * T + t] = seq[b * (T + 1) + t];
        tgt[b * T + t] = seq[b * (T + 1) + t + 1];
      }
    std::vector<float> losses;
    for (int step = 0; step < kTrainSteps; step++) {
      model.forward_async(in.data(), tgt.data(), B, T);
      model.backward(1.f);
      const float norm = opt.step(ocfg.lr);
      const float loss = model.take_losses().at(0);
      ASSERT_TRUE(std::isfinite(loss) && std::isfinite(norm)) << "step " << step;
      losses.push_back(loss);
    }
    std::printf("[   INFO   ] %s: loss %.4f -> %.4f in %d steps\n", precision == DType::BF16 ? "bf16" : "fp32",
                losses.front(), losses.back(), kTrainSteps);
    EXPECT_NEAR(losses.front(), std::log((float)cfg.vocab_size), 0.5);
    EXPECT_LT(losses.back(), 0.75 * losses.front()) << "the loss did not fall";
  }
}

}  // namespace
