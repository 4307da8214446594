// The optimizer (runtime/optim.h): the learning-rate schedule, global-norm clipping with
// torch.nn.utils.clip_grad_norm_'s formula, weight decay on 2-D tensors only, AdamW's update
// against a double-precision rendering of torch.optim.AdamW, and gradients zeroed by a step.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "runtime/backend.h"
#include "runtime/model.h"
#include "runtime/optim.h"
#include "runtime/rng.h"

namespace {

using Vec = std::vector<float>;

Vec randn(lt::Rng& rng, size_t n, double std) {
  Vec v(n);
  for (float& x : v) x = (float)(std * rng.normal());
  return v;
}

// torch.optim.AdamW's update of one element, in double: decoupled decay, then bias-corrected
// Adam with eps added to sqrt(v_hat).
struct RefAdamW {
  double lr, b1, b2, eps;
  void step(double& p, double g, double& m, double& v, double wd, int t) const {
    p *= 1.0 - lr * wd;
    m = b1 * m + (1.0 - b1) * g;
    v = b2 * v + (1.0 - b2) * g * g;
    const double denom = std::sqrt(v) / std::sqrt(1.0 - std::pow(b2, t)) + eps;
    p -= lr / (1.0 - std::pow(b1, t)) * m / denom;
  }
};

// torch.nn.utils.clip_grad_norm_: grads *= clamp(max_norm / (norm + 1e-6), max=1).
double torch_clip_coef(double norm, double max_norm) { return std::min(1.0, max_norm / (norm + 1e-6)); }

lt::AdamWConfig test_config() {
  lt::AdamWConfig c;
  c.lr = 6e-4f;
  c.min_lr = 6e-5f;
  c.warmup_steps = 10;
  c.beta1 = 0.9f;
  c.beta2 = 0.95f;
  c.eps = 1e-8f;
  c.weight_decay = 0.1f;
  c.grad_clip = 1.0f;
  return c;
}

TEST(LrSchedule, WarmupIsLinear) {
  const lt::AdamWConfig c = test_config();
  for (int s = 0; s < c.warmup_steps; s++)
    EXPECT_FLOAT_EQ(lr_at(c, s, 100), c.lr * (s + 1) / c.warmup_steps) << "step " << s;
  EXPECT_FLOAT_EQ(lr_at(c, 0, 100), c.lr / c.warmup_steps);  // never zero: step 0 must move
  EXPECT_FLOAT_EQ(lr_at(c, c.warmup_steps - 1, 100), c.lr);
}

TEST(LrSchedule, NoWarmupStartsAtPeak) {
  lt::AdamWConfig c = test_config();
  c.warmup_steps = 0;
  EXPECT_FLOAT_EQ(lr_at(c, 0, 100), c.lr);
}

// Steps are 0-based, so a run of total steps ends at step total - 1, and that step's lr is the
// floor. The cosine spans steps warmup .. total - 1.
TEST(LrSchedule, CosineReachesMinAtLastStep) {
  const lt::AdamWConfig c = test_config();
  const int64_t total = 101;                         // cosine over steps 10..100: 90 intervals
  const double span = (double)(total - 1 - c.warmup_steps);
  auto cosine = [&](int64_t s) {
    const double progress = (s - c.warmup_steps) / span;
    return c.min_lr + 0.5 * (1.0 + std::cos(M_PI * progress)) * (c.lr - c.min_lr);
  };
  EXPECT_FLOAT_EQ(lr_at(c, c.warmup_steps, total), c.lr) << "the first step after warm-up is the peak";
  EXPECT_FLOAT_EQ(lr_at(c, 55, total), (float)cosine(55)) << "half-way";
  EXPECT_FLOAT_EQ(lr_at(c, 55, total), 0.5f * (c.lr + c.min_lr));
  EXPECT_FLOAT_EQ(lr_at(c, 32, total), (float)cosine(32)) << "a quarter of the way (22.5 of 90 is not integral)";
  EXPECT_FLOAT_EQ(lr_at(c, 77, total), (float)cosine(77));
  EXPECT_FLOAT_EQ(lr_at(c, total - 1, total), c.min_lr) << "the last step runs at min_lr";
  EXPECT_FLOAT_EQ(lr_at(c, total + 5, total), c.min_lr) << "past the end it stays at the floor";
  float prev = lr_at(c, c.warmup_steps, total);
  for (int64_t s = c.warmup_steps + 1; s < total; s++) {
    const float cur = lr_at(c, s, total);
    EXPECT_LE(cur, prev) << "the cosine must not rise, step " << s;
    EXPECT_GE(cur, c.min_lr) << "step " << s;
    prev = cur;
  }
}

// A tiny model whose parameters and gradients the tests set directly.
struct Tiny {
  std::unique_ptr<lt::Backend> be = lt::make_cpu_backend();
  lt::GPT model{lt::GPTConfig{1, 2, 8, 4, 10}, *be};
  Vec p, g;
  explicit Tiny(uint64_t seed, double grad_std) {
    lt::Rng rng(seed);
    p = randn(rng, model.num_params(), 0.5);
    g = randn(rng, model.num_params(), grad_std);
    be->from_host(model.params(), p.data());
    be->from_host(model.grads(), g.data());
  }
  Vec host(const lt::Tensor& t) const {
    Vec v(t.numel());
    be->to_host(v.data(), t);
    return v;
  }
  double grad_norm() const {
    double s = 0.0;
    for (float x : g) s += (double)x * x;
    return std::sqrt(s);
  }
};

// The first AdamW step from m = 0 leaves m = (1 - beta1) * clip_coef * g: that exposes the
// clipping factor directly.
void check_clip(double grad_std, float grad_clip) {
  Tiny t(1, grad_std);
  lt::AdamWConfig c = test_config();
  c.grad_clip = grad_clip;
  lt::AdamW opt(c, t.model);
  const double norm = t.grad_norm();
  const double coef = grad_clip > 0.f ? torch_clip_coef(norm, grad_clip) : 1.0;
  const float got_norm = opt.step(1e-3f);
  EXPECT_NEAR(got_norm, norm, 1e-6 * norm) << "step() returns the norm before clipping";
  const Vec m = t.host(opt.m()), v = t.host(opt.v());
  for (size_t i = 0; i < m.size(); i++) {
    const double g = t.g[i] * coef;
    ASSERT_NEAR(m[i], (1.0 - c.beta1) * g, 1e-6 * std::fabs(g) + 1e-12) << "element " << i;
    ASSERT_NEAR(v[i], (1.0 - c.beta2) * g * g, 1e-5 * g * g + 1e-20) << "element " << i;
  }
}

TEST(AdamW, ClipsLargeGradientsLikeTorch) {
  check_clip(0.5, 1.0f);  // norm ~ 0.5 * sqrt(n) >> 1
}
TEST(AdamW, LeavesSmallGradientsUnclipped) { check_clip(1e-3, 1.0f); }
TEST(AdamW, ClipDisabledByNonPositiveMax) { check_clip(0.5, 0.f); }

TEST(AdamW, ClipCoefficientIsTorchs) {
  // Just above and at the threshold, torch's +1e-6 matters: the coefficient is slightly < 1.
  Tiny t(2, 1.0);
  const double norm = t.grad_norm();
  for (float& x : t.g) x = (float)(x / norm);  // norm 1: coef = 1 / (1 + 1e-6)
  t.be->from_host(t.model.grads(), t.g.data());
  lt::AdamW opt(test_config(), t.model);
  opt.step(1e-3f);
  const Vec m = t.host(opt.m());
  const double coef = torch_clip_coef(t.grad_norm(), 1.0);
  EXPECT_LT(coef, 1.0);
  size_t imax = 0;
  for (size_t i = 0; i < t.g.size(); i++)
    if (std::fabs(t.g[i]) > std::fabs(t.g[imax])) imax = i;
  EXPECT_NEAR(m[imax] / ((1.0 - 0.9) * t.g[imax]), coef, 3e-7);
}

TEST(AdamW, WeightDecayOnlyOnMatrices) {
  Tiny t(3, 0.0);  // zero gradients: the step is decay alone
  lt::AdamWConfig c = test_config();
  c.weight_decay = 0.1f;
  lt::AdamW opt(c, t.model);
  const float lr = 0.1f;
  opt.step(lr);
  const Vec p = t.host(t.model.params());
  int decayed = 0, kept = 0;
  for (const lt::ParamInfo& pi : t.model.param_info()) {
    EXPECT_EQ(pi.decay, pi.shape.size() == 2) << pi.name;
    const bool is_matrix = pi.name == "wte.weight" || pi.name == "wpe.weight" ||
                           (pi.name.ends_with(".weight") && pi.name.find("ln_") == std::string::npos);
    EXPECT_EQ(pi.decay, is_matrix) << pi.name << ": linear and embedding weights decay, biases and LayerNorm do not";
    const float factor = pi.decay ? 1.f - lr * c.weight_decay : 1.f;
    for (int64_t i = 0; i < pi.numel; i++)
      ASSERT_FLOAT_EQ(p[pi.offset + i], t.p[pi.offset + i] * factor) << pi.name << "[" << i << "]";
    (pi.decay ? decayed : kept)++;
  }
  EXPECT_GT(decayed, 0);
  EXPECT_GT(kept, 0);
}

TEST(AdamW, StepZeroesGradients) {
  Tiny t(4, 0.3);
  lt::AdamW opt(test_config(), t.model);
  opt.step(1e-3f);
  for (float x : t.host(t.model.grads())) ASSERT_EQ(x, 0.f);
  EXPECT_EQ(opt.steps_taken(), 1);
}

// Three steps with fresh gradients each, clipping and per-tensor decay, against the double
// reference; then a resumed optimizer (steps_taken restored) continues the same bias correction.
TEST(AdamW, StepsMatchTorchFormula) {
  Tiny t(5, 0.05);
  lt::AdamWConfig c = test_config();
  lt::AdamW opt(c, t.model);
  const RefAdamW ref{0, c.beta1, c.beta2, c.eps};
  const size_t n = t.p.size();
  std::vector<double> p(t.p.begin(), t.p.end()), m(n, 0.0), v(n, 0.0);
  std::vector<double> wd(n);
  for (const lt::ParamInfo& pi : t.model.param_info())
    for (int64_t i = 0; i < pi.numel; i++) wd[pi.offset + i] = pi.decay ? c.weight_decay : 0.0;
  lt::Rng rng(6);
  const float lrs[] = {1e-2f, 5e-3f, 2e-3f};
  for (int s = 0; s < 3; s++) {
    if (s > 0) {  // fresh gradients; step 0 uses the ones Tiny set
      t.g = randn(rng, n, s == 1 ? 0.2 : 0.01);  // clipped, then not
      t.be->from_host(t.model.grads(), t.g.data());
    }
    const double coef = torch_clip_coef(t.grad_norm(), c.grad_clip);
    RefAdamW r = ref;
    r.lr = lrs[s];
    for (size_t i = 0; i < n; i++) r.step(p[i], t.g[i] * coef, m[i], v[i], wd[i], s + 1);
    opt.step(lrs[s]);
  }
  const Vec got = t.host(t.model.params());
  double worst = 0.0, scale = 0.0;
  for (size_t i = 0; i < n; i++) {
    worst = std::max(worst, std::fabs(got[i] - p[i]));
    scale = std::max(scale, std::fabs(p[i]));
  }
  EXPECT_LE(worst / scale, 1e-5) << "max abs diff " << worst;

  // Resume: a fresh AdamW with the saved moments and step count must take the same 4th step.
  lt::AdamW resumed(c, t.model);
  t.be->from_host(resumed.m(), t.host(opt.m()).data());
  t.be->from_host(resumed.v(), t.host(opt.v()).data());
  resumed.set_steps_taken(opt.steps_taken());
  const Vec before = t.host(t.model.params());
  t.g = randn(rng, n, 0.05);
  t.be->from_host(t.model.grads(), t.g.data());
  resumed.step(1e-3f);
  const Vec after_resumed = t.host(t.model.params());
  t.be->from_host(t.model.params(), before.data());
  t.be->from_host(t.model.grads(), t.g.data());
  opt.step(1e-3f);
  EXPECT_EQ(t.host(t.model.params()), after_resumed);
  EXPECT_EQ(resumed.steps_taken(), 4);
}

// The op itself, without the model: several steps against the reference, grad_scale applied
// before the moments, the gradient zeroed.
TEST(AdamW, UpdateOpMatchesReference) {
  lt::Rng rng(7);
  const int n = 1000;
  Vec p = randn(rng, n, 1.0), m(n, 0.f), v(n, 0.f);
  std::vector<double> rp(p.begin(), p.end()), rm(n, 0.0), rv(n, 0.0);
  const RefAdamW ref{3e-3, 0.9, 0.95, 1e-8};
  for (int t = 1; t <= 4; t++) {
    Vec g = randn(rng, n, 0.1);
    const float scale = 0.5f;
    for (int i = 0; i < n; i++) ref.step(rp[i], (double)g[i] * scale, rm[i], rv[i], 0.1, t);
    lt::cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), n, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, scale, t);
    for (float x : g) ASSERT_EQ(x, 0.f);
  }
  for (int i = 0; i < n; i++) ASSERT_NEAR(p[i], rp[i], 1e-5 * (1.0 + std::fabs(rp[i]))) << i;
}

}  // namespace
