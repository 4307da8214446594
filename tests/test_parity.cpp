// Parity of the CPU reference model with PyTorch: logits, loss, every gradient and two AdamW
// steps of GPT(GPTConfig{2,2,32,16,70}) against tests/fixtures/gpt_tiny_parity.safetensors, which
// tests/make_fixtures.py writes (Hugging Face GPT-2 semantics; forward/backward in float64,
// AdamW in float32). Errors are per tensor: max|ours - torch| / max|torch|.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/model.h"
#include "runtime/optim.h"
#include "runtime/safetensors.h"

namespace {

// Must match make_fixtures.py.
const lt::GPTConfig kCfg{/*n_layer=*/2, /*n_head=*/2, /*n_embd=*/32, /*block_size=*/16, /*vocab_size=*/70};
constexpr int B = 2, T = 12;
constexpr float kLr = 1e-2f;
constexpr int kAdamSteps = 2;
// fp32 against exact math: ~1e-6 is typical; 1e-4 leaves room for BLAS and thread-count
// differences in summation order.
constexpr double kTol = 1e-4;

std::string fixture_path() { return std::string(LT_SOURCE_DIR) + "/tests/fixtures/gpt_tiny_parity.safetensors"; }

std::vector<float> read_f32(const lt::SafetensorsReader& r, const std::string& name,
                            const std::vector<int64_t>& shape) {
  const lt::StTensorInfo& t = r.at(name);
  EXPECT_EQ(t.dtype, lt::StDType::F32) << name;
  EXPECT_EQ(t.shape, shape) << name << " has shape " << t.shape_str();
  std::vector<float> v(t.numel());
  r.read_f32(t, v.data());
  return v;
}

std::vector<int32_t> read_i32(const lt::SafetensorsReader& r, const std::string& name) {
  const lt::StTensorInfo& t = r.at(name);
  EXPECT_EQ(t.dtype, lt::StDType::I32) << name;
  EXPECT_EQ(t.shape, (std::vector<int64_t>{B, T})) << name;
  std::vector<int32_t> v(t.numel());
  r.read_raw(t, v.data());
  return v;
}

// The Hugging Face shape of one of our parameters: Conv1D weights are [in, out], and wte has
// only the real vocabulary rows.
std::vector<int64_t> hf_shape(const lt::ParamInfo& p) {
  if (p.hf_transposed) return {p.shape[1], p.shape[0]};
  if (p.name == "wte.weight") return {kCfg.vocab_size, p.shape[1]};
  return p.shape;
}

// ours (our layout, p.numel floats) -> Hugging Face layout.
std::vector<float> to_hf(const lt::ParamInfo& p, const float* ours) {
  if (!p.hf_transposed) {
    int64_t n = 1;
    for (int64_t s : hf_shape(p)) n *= s;
    return std::vector<float>(ours, ours + n);  // wte: drop the padding rows
  }
  const int64_t out = p.shape[0], in = p.shape[1];
  std::vector<float> hf(p.numel);
  for (int64_t o = 0; o < out; o++)
    for (int64_t i = 0; i < in; i++) hf[i * out + o] = ours[o * in + i];
  return hf;
}

// Hugging Face layout -> ours, into dst (p.numel floats; wte's padding rows are zeroed).
void from_hf(const lt::ParamInfo& p, const std::vector<float>& hf, float* dst) {
  std::fill(dst, dst + p.numel, 0.f);
  if (!p.hf_transposed) {
    std::copy(hf.begin(), hf.end(), dst);
    return;
  }
  const int64_t out = p.shape[0], in = p.shape[1];
  for (int64_t o = 0; o < out; o++)
    for (int64_t i = 0; i < in; i++) dst[o * in + i] = hf[i * out + o];
}

double rel_err(const std::vector<float>& a, const std::vector<float>& ref) {
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < ref.size(); i++) {
    if (std::isnan(a[i])) return INFINITY;
    diff = std::max(diff, std::fabs((double)a[i] - ref[i]));
    scale = std::max(scale, std::fabs((double)ref[i]));
  }
  return scale > 0.0 ? diff / scale : diff;
}

// Compares one tensor, prints its error and keeps the worst.
struct Report {
  double worst = 0.0;
  std::string worst_name;
  void check(const std::string& name, const std::vector<float>& ours, const std::vector<float>& ref) {
    ASSERT_EQ(ours.size(), ref.size()) << name;
    const double e = rel_err(ours, ref);
    std::printf("  %-40s rel err %.2e\n", name.c_str(), e);
    EXPECT_LE(e, kTol) << name;
    if (e >= worst) worst = e, worst_name = name;
  }
  void summary(const char* what) const {
    std::printf("  worst %s: %.2e (%s)\n", what, worst, worst_name.c_str());
  }
};

class Parity : public ::testing::Test {
 protected:
  void SetUp() override {
    reader_ = std::make_unique<lt::SafetensorsReader>(fixture_path());
    tokens_ = read_i32(*reader_, "input.tokens");
    targets_ = read_i32(*reader_, "input.targets");
    be_ = lt::make_cpu_backend();
    model_ = std::make_unique<lt::GPT>(kCfg, *be_);
    load_weights(*model_);
  }

  void load_weights(lt::GPT& model) {
    std::vector<float> host(model.num_params());
    for (const lt::ParamInfo& p : model.param_info())
      from_hf(p, read_f32(*reader_, p.name, hf_shape(p)), host.data() + p.offset);
    be_->from_host(model.params(), host.data());
  }

  std::vector<float> host(const lt::Tensor& t) {
    std::vector<float> v(t.numel());
    be_->to_host(v.data(), t);
    return v;
  }

  std::unique_ptr<lt::SafetensorsReader> reader_;
  std::vector<int32_t> tokens_, targets_;
  std::unique_ptr<lt::Backend> be_;
  std::unique_ptr<lt::GPT> model_;
};

TEST_F(Parity, Logits) {
  const int V = kCfg.vocab_size, Vp = kCfg.padded_vocab();
  model_->forward(tokens_.data(), nullptr, B, T);  // no targets: logits() keeps the logits
  const std::vector<float> all = host(model_->logits());
  ASSERT_EQ(all.size(), (size_t)B * T * Vp);
  std::vector<float> real;
  for (int n = 0; n < B * T; n++) {
    real.insert(real.end(), all.begin() + (int64_t)n * Vp, all.begin() + (int64_t)n * Vp + V);
    for (int v = V; v < Vp; v++) ASSERT_EQ(all[(int64_t)n * Vp + v], 0.f) << "padded logit " << v << " of row " << n;
  }
  Report r;
  r.check("logits", real, read_f32(*reader_, "expected.logits", {B, T, V}));
}

TEST_F(Parity, LossAndGradients) {
  const float loss = model_->forward(tokens_.data(), targets_.data(), B, T);
  const float want = read_f32(*reader_, "expected.loss", {1})[0];
  std::printf("  loss %.7f, torch %.7f, rel err %.2e\n", loss, want, std::fabs(loss - want) / want);
  EXPECT_NEAR(loss, want, kTol * want);

  model_->backward();
  const std::vector<float> g = host(model_->grads());
  Report r;
  for (const lt::ParamInfo& p : model_->param_info())
    r.check("grad " + p.name, to_hf(p, g.data() + p.offset), read_f32(*reader_, "expected.grad." + p.name, hf_shape(p)));
  r.summary("gradient");

  const lt::ParamInfo& wte = model_->param_info().front();
  ASSERT_EQ(wte.name, "wte.weight");
  for (int64_t i = (int64_t)kCfg.vocab_size * kCfg.n_embd; i < wte.numel; i++)
    ASSERT_EQ(g[wte.offset + i], 0.f) << "padded wte row " << i / kCfg.n_embd << " has a gradient";
}

// Two AdamW steps on the same batch: clip_grad_norm_(1.0) then torch.optim.AdamW(lr 1e-2,
// betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on 2-D tensors only).
TEST_F(Parity, AdamWTwoSteps) {
  lt::AdamWConfig cfg;
  cfg.lr = kLr;
  cfg.min_lr = kLr;
  cfg.warmup_steps = 0;
  cfg.beta1 = 0.9f;
  cfg.beta2 = 0.95f;
  cfg.eps = 1e-8f;
  cfg.weight_decay = 0.1f;
  cfg.grad_clip = 1.0f;
  lt::AdamW opt(cfg, *model_);
  const std::vector<float> want_norms = read_f32(*reader_, "expected.grad_norm", {kAdamSteps});
  for (int s = 0; s < kAdamSteps; s++) {
    model_->forward(tokens_.data(), targets_.data(), B, T);
    model_->backward();
    const float norm = opt.step(kLr);
    std::printf("  step %d grad norm %.6f, torch %.6f\n", s + 1, norm, want_norms[s]);
    EXPECT_NEAR(norm, want_norms[s], kTol * want_norms[s]) << "step " << s + 1;
  }
  EXPECT_EQ(opt.steps_taken(), kAdamSteps);

  // Adam turns a gradient into a step of about lr * sign(g), so where the gradient is rounding
  // noise both sides take arbitrary steps of up to ~lr. That is so for the key bias (its exact
  // gradient is zero: a softmax over keys ignores a shift shared by all keys) and for a few
  // weights whose gradient is ~1e-6 of the largest. Those elements, |torch's first gradient| <
  // kNoise * the largest, are only bounded; every other element is compared strictly.
  constexpr double kNoise = 1e-5;
  std::vector<std::vector<float>> want_grad;
  double gmax = 0.0;
  for (const lt::ParamInfo& pi : model_->param_info()) {
    want_grad.push_back(read_f32(*reader_, "expected.grad." + pi.name, hf_shape(pi)));
    for (float g : want_grad.back()) gmax = std::max(gmax, (double)std::fabs(g));
  }
  const std::vector<float> p = host(model_->params());
  Report r;
  int n_noise = 0;
  double noise_diff = 0.0;
  for (size_t k = 0; k < model_->param_info().size(); k++) {
    const lt::ParamInfo& pi = model_->param_info()[k];
    std::vector<float> ours = to_hf(pi, p.data() + pi.offset);
    const std::vector<float> want = read_f32(*reader_, "expected.adamw." + pi.name, hf_shape(pi));
    for (size_t i = 0; i < ours.size(); i++) {
      if (std::fabs(want_grad[k][i]) >= kNoise * gmax) continue;
      ++n_noise;
      noise_diff = std::max(noise_diff, (double)std::fabs(ours[i] - want[i]));
      ours[i] = want[i];  // excluded from the strict comparison, bounded below
    }
    r.check("adamw " + pi.name, ours, want);
  }
  std::printf("  %d noise-gradient elements: max abs diff %.2e (bound %.0e)\n", n_noise, noise_diff,
              2.0 * kAdamSteps * kLr);
  EXPECT_LE(noise_diff, 2.0 * kAdamSteps * kLr);
  EXPECT_LT(n_noise, 400) << "the fixture should have few noise-driven gradients";
  r.summary("parameter after AdamW");

  const lt::ParamInfo& wte = model_->param_info().front();
  for (int64_t i = (int64_t)kCfg.vocab_size * kCfg.n_embd; i < wte.numel; i++)
    ASSERT_EQ(p[wte.offset + i], 0.f) << "padded wte row " << i / kCfg.n_embd << " moved";
}

}  // namespace
