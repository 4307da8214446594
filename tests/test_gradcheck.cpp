// Finite-difference checks of every CPU reference op in kernels/cpu/ops.h and of the whole tiny
// model: each backward against central differences of a scalar L = sum(out * R), R fixed and
// random, L summed in double. Also each forward against a double-precision reference, and the
// ops' gradient conventions (parameter grads +=, layernorm dinp +=, other dinp assigned).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "runtime/backend.h"
#include "runtime/model.h"
#include "runtime/rng.h"

namespace {

using Vec = std::vector<float>;
using DVec = std::vector<double>;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Small shapes, deliberately not multiples of anything a kernel might tile by.
constexpr int B = 2, T = 5, C = 12, NH = 3, OC = 7, V = 13, Vp = 16;
constexpr int N = B * T;

// fp32 ops, so the step is large enough that rounding in L stays well below the signal; on
// inputs of magnitude ~1 the truncation error is ~eps^2. Measured worst errors are ~2e-5 for
// single ops and ~2.5e-3 for the model (its fp32 loss rounds at ~1e-6), so these leave margin.
constexpr double kEps = 1e-2;
constexpr double kTolFD = 1e-3;     // single ops: max|a - fd| / max|fd| per tensor
constexpr double kTolModel = 1e-2;  // the model, per element (see TinyModel)
// The whole model's loss goes through ~20 fp32 ops with a polynomial exp, so it rounds at ~1 ulp
// (~2.4e-7 at L ~ 3.4) in a way that depends on the CPU's vector width (-march=native): at
// eps = 1e-2 one element on an AVX-512 machine came out 1.4e-2 off from rounding alone. A
// wider step halves that noise while the eps^2 truncation stays small: measured worst 1.9e-3
// at 2e-2 against 6.7e-3 at 5e-3 and 1.4e-2 at 1e-2 (same elements, AMD EPYC, AVX-512).
constexpr double kEpsModel = 2e-2;
constexpr double kTolFwd = 1e-5;  // forward against the double reference

Vec randn(lt::Rng& rng, size_t n, double std = 1.0, double mean = 0.0) {
  Vec v(n);
  for (float& x : v) x = (float)(mean + std * rng.normal());
  return v;
}

double dot(const Vec& a, const Vec& r) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); i++) s += (double)a[i] * r[i];
  return s;
}

// max_i |a_i - ref_i| / max_i |ref_i|: the error relative to the tensor's scale.
template <class A, class R>
double rel_err(const A& a, const R& ref) {
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < ref.size(); i++) {
    diff = std::max(diff, std::fabs((double)a[i] - (double)ref[i]));
    scale = std::max(scale, std::fabs((double)ref[i]));
    if (std::isnan((double)a[i])) return std::numeric_limits<double>::infinity();
  }
  return scale > 0.0 ? diff / scale : diff;
}

template <class A, class R>
void expect_close(const std::string& what, const A& a, const R& ref, double tol) {
  ASSERT_EQ(a.size(), ref.size()) << what;
  const double e = rel_err(a, ref);
  std::printf("  %-36s rel err %.2e\n", what.c_str(), e);
  EXPECT_LE(e, tol) << what;
}

// Central differences of f with respect to every element of x. The denominator is the step
// actually taken after rounding x +- eps to fp32.
DVec numeric_grad(Vec& x, const std::function<double()>& f, double eps = kEps) {
  DVec g(x.size());
  for (size_t i = 0; i < x.size(); i++) {
    const float x0 = x[i], xp = (float)(x0 + eps), xm = (float)(x0 - eps);
    x[i] = xp;
    const double fp = f();
    x[i] = xm;
    const double fm = f();
    x[i] = x0;
    g[i] = (fp - fm) / ((double)xp - (double)xm);
  }
  return g;
}

Vec minus(const Vec& a, const Vec& b) {
  Vec d(a.size());
  for (size_t i = 0; i < a.size(); i++) d[i] = a[i] - b[i];
  return d;
}

// An accumulating gradient: after two identical backward calls from g0, g - g0 must be twice
// what one call added.
void expect_doubled(const std::string& what, const Vec& g0, const Vec& once, const Vec& twice) {
  Vec d1 = minus(once, g0), d2 = minus(twice, g0);
  DVec want(d1.size());
  for (size_t i = 0; i < d1.size(); i++) want[i] = 2.0 * d1[i];
  expect_close(what + " accumulates (x2)", d2, want, 1e-5);
}

std::vector<int32_t> tokens_with_repeats(lt::Rng& rng, int n, int vocab) {
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = (int32_t)rng.below(vocab);
  t[3] = t[0];  // a repeated token: its embedding row receives two gradients
  t[n - 1] = vocab - 1;
  return t;
}

TEST(GradCheck, Encoder) {
  lt::Rng rng(1);
  auto tokens = tokens_with_repeats(rng, N, V);
  tokens[7] = tokens[2];
  Vec wte = randn(rng, V * C), wpe = randn(rng, T * C), R = randn(rng, N * C);
  Vec out(N * C, kNaN);
  auto loss = [&] {
    lt::cpu::encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    return dot(out, R);
  };
  loss();
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      ASSERT_EQ(out[n * C + c], wte[tokens[n] * C + c] + wpe[(n % T) * C + c]) << n << "," << c;

  // Parameter grads accumulate: start from random values, not zeros.
  const Vec dwte0 = randn(rng, V * C), dwpe0 = randn(rng, T * C);
  Vec dwte = dwte0, dwpe = dwpe0;
  lt::cpu::encoder_backward(dwte.data(), dwpe.data(), R.data(), tokens.data(), B, T, C);
  const Vec dwte1 = dwte, dwpe1 = dwpe;
  expect_close("encoder dwte", minus(dwte1, dwte0), numeric_grad(wte, loss), kTolFD);
  expect_close("encoder dwpe", minus(dwpe1, dwpe0), numeric_grad(wpe, loss), kTolFD);
  lt::cpu::encoder_backward(dwte.data(), dwpe.data(), R.data(), tokens.data(), B, T, C);
  expect_doubled("encoder dwte", dwte0, dwte1, dwte);
  expect_doubled("encoder dwpe", dwpe0, dwpe1, dwpe);
}

TEST(GradCheck, LayerNorm) {
  lt::Rng rng(2);
  Vec inp = randn(rng, N * C, 1.0, 0.5), w = randn(rng, C, 0.5, 1.0), b = randn(rng, C, 0.5);
  Vec R = randn(rng, N * C);
  Vec out(N * C, kNaN), mean(N, kNaN), rstd(N, kNaN);
  auto loss = [&] {
    lt::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(), N, C);
    return dot(out, R);
  };
  loss();
  DVec ref_out(N * C), ref_mean(N), ref_rstd(N);
  for (int n = 0; n < N; n++) {
    double m = 0.0, var = 0.0;
    for (int c = 0; c < C; c++) m += inp[n * C + c];
    m /= C;
    for (int c = 0; c < C; c++) var += (inp[n * C + c] - m) * (inp[n * C + c] - m);
    var /= C;
    const double s = 1.0 / std::sqrt(var + 1e-5);
    for (int c = 0; c < C; c++) ref_out[n * C + c] = (inp[n * C + c] - m) * s * w[c] + b[c];
    ref_mean[n] = m;
    ref_rstd[n] = s;
  }
  expect_close("layernorm out", out, ref_out, kTolFwd);
  expect_close("layernorm mean", mean, ref_mean, kTolFwd);
  expect_close("layernorm rstd", rstd, ref_rstd, kTolFwd);

  // All three gradients accumulate (dinp is the residual stream's gradient).
  const Vec dinp0 = randn(rng, N * C), dw0 = randn(rng, C), db0 = randn(rng, C);
  Vec dinp = dinp0, dw = dw0, db = db0;
  auto bwd = [&] {
    lt::cpu::layernorm_backward(dinp.data(), dw.data(), db.data(), R.data(), inp.data(), w.data(), mean.data(),
                                rstd.data(), N, C);
  };
  bwd();
  const Vec dinp1 = dinp, dw1 = dw, db1 = db;
  expect_close("layernorm dinp", minus(dinp1, dinp0), numeric_grad(inp, loss), kTolFD);
  expect_close("layernorm dw", minus(dw1, dw0), numeric_grad(w, loss), kTolFD);
  expect_close("layernorm db", minus(db1, db0), numeric_grad(b, loss), kTolFD);
  loss();  // restore mean/rstd of the unperturbed input
  bwd();
  expect_doubled("layernorm dinp", dinp0, dinp1, dinp);
  expect_doubled("layernorm dw", dw0, dw1, dw);
  expect_doubled("layernorm db", db0, db1, db);
}

void check_matmul(bool with_bias) {
  const std::string tag = with_bias ? "matmul+bias " : "matmul ";
  lt::Rng rng(with_bias ? 3 : 4);
  Vec inp = randn(rng, N * C), w = randn(rng, OC * C, 0.3), bias = randn(rng, OC), R = randn(rng, N * OC);
  Vec out(N * OC, kNaN);  // poisoned: with no bias the output must still be fully written
  float* bias_p = with_bias ? bias.data() : nullptr;
  auto loss = [&] {
    lt::cpu::matmul_forward(out.data(), inp.data(), w.data(), bias_p, N, C, OC);
    return dot(out, R);
  };
  loss();
  DVec ref(N * OC);
  for (int n = 0; n < N; n++)
    for (int o = 0; o < OC; o++) {
      double s = with_bias ? bias[o] : 0.0;
      for (int c = 0; c < C; c++) s += (double)inp[n * C + c] * w[o * C + c];
      ref[n * OC + o] = s;
    }
  expect_close(tag + "out", out, ref, kTolFwd);

  // dinp is assigned (poisoned first), dw and dbias accumulate.
  Vec dinp(N * C, kNaN);
  const Vec dw0 = randn(rng, OC * C), db0 = randn(rng, OC);
  Vec dw = dw0, db = db0;
  float* db_p = with_bias ? db.data() : nullptr;
  lt::cpu::matmul_backward(dinp.data(), dw.data(), db_p, R.data(), inp.data(), w.data(), N, C, OC);
  const Vec dinp1 = dinp, dw1 = dw, db1 = db;
  expect_close(tag + "dinp", dinp1, numeric_grad(inp, loss), kTolFD);
  expect_close(tag + "dw", minus(dw1, dw0), numeric_grad(w, loss), kTolFD);
  if (with_bias) expect_close(tag + "dbias", minus(db1, db0), numeric_grad(bias, loss), kTolFD);
  else EXPECT_EQ(db, db0) << "dbias must not be touched when null";

  lt::cpu::matmul_backward(dinp.data(), dw.data(), db_p, R.data(), inp.data(), w.data(), N, C, OC);
  EXPECT_EQ(dinp, dinp1) << tag << "dinp must be assigned, not accumulated";
  expect_doubled(tag + "dw", dw0, dw1, dw);
  if (with_bias) expect_doubled(tag + "dbias", db0, db1, db);

  // A null dinp (the first layer's input needs no gradient) still accumulates dw.
  Vec dw_only = dw0;
  lt::cpu::matmul_backward(nullptr, dw_only.data(), nullptr, R.data(), inp.data(), w.data(), N, C, OC);
  EXPECT_EQ(dw_only, dw1) << tag << "dw with dinp == nullptr";
}

TEST(GradCheck, MatmulWithBias) { check_matmul(true); }
TEST(GradCheck, MatmulNoBias) { check_matmul(false); }

TEST(GradCheck, Attention) {
  lt::Rng rng(5);
  const int hs = C / NH;
  Vec qkv = randn(rng, N * 3 * C), R = randn(rng, N * C);
  Vec out(N * C, kNaN), att(B * NH * T * T, kNaN);
  auto loss = [&] {
    lt::cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
    return dot(out, R);
  };
  loss();
  // Double reference: causal softmax(q k^T / sqrt(hs)) v per head.
  DVec ref_out(N * C), ref_att(B * NH * T * T, 0.0);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++)
      for (int t = 0; t < T; t++) {
        const float* q = &qkv[(b * T + t) * 3 * C + h * hs];
        DVec s(t + 1);
        double mx = -1e300, sum = 0.0;
        for (int t2 = 0; t2 <= t; t2++) {
          const float* k = &qkv[(b * T + t2) * 3 * C + C + h * hs];
          double d = 0.0;
          for (int i = 0; i < hs; i++) d += (double)q[i] * k[i];
          s[t2] = d / std::sqrt((double)hs);
          mx = std::max(mx, s[t2]);
        }
        for (int t2 = 0; t2 <= t; t2++) sum += (s[t2] = std::exp(s[t2] - mx));
        double* a = &ref_att[((b * NH + h) * T + t) * T];
        for (int t2 = 0; t2 <= t; t2++) a[t2] = s[t2] / sum;
        for (int i = 0; i < hs; i++) {
          double o = 0.0;
          for (int t2 = 0; t2 <= t; t2++) o += a[t2] * qkv[(b * T + t2) * 3 * C + 2 * C + h * hs + i];
          ref_out[(b * T + t) * C + h * hs + i] = o;
        }
      }
  expect_close("attention out", out, ref_out, kTolFwd);
  expect_close("attention att", att, ref_att, kTolFwd);
  for (int bh = 0; bh < B * NH; bh++)
    for (int t = 0; t < T; t++)
      for (int t2 = t + 1; t2 < T; t2++)
        ASSERT_EQ(att[(bh * T + t) * T + t2], 0.f) << "future position " << t2 << " of query " << t;

  Vec dqkv(N * 3 * C, kNaN);  // assigned: poison shows anything unwritten
  lt::cpu::attention_backward(dqkv.data(), R.data(), qkv.data(), att.data(), B, T, C, NH);
  const Vec dqkv1 = dqkv;
  expect_close("attention dqkv", dqkv1, numeric_grad(qkv, loss), kTolFD);
  loss();
  lt::cpu::attention_backward(dqkv.data(), R.data(), qkv.data(), att.data(), B, T, C, NH);
  EXPECT_EQ(dqkv, dqkv1) << "dqkv must be assigned, not accumulated";
}

TEST(GradCheck, Gelu) {
  lt::Rng rng(6);
  const int n = 41;
  Vec inp(n), R = randn(rng, n);
  for (int i = 0; i < n; i++) inp[i] = -4.f + 8.f * (float)i / (n - 1) + (float)(0.01 * rng.normal());
  Vec out(n, kNaN);
  auto loss = [&] {
    lt::cpu::gelu_forward(out.data(), inp.data(), n);
    return dot(out, R);
  };
  loss();
  DVec ref(n);
  for (int i = 0; i < n; i++) {
    const double x = inp[i];
    ref[i] = 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  }
  expect_close("gelu out", out, ref, kTolFwd);
  Vec dinp(n, kNaN);
  lt::cpu::gelu_backward(dinp.data(), inp.data(), R.data(), n);
  const Vec dinp1 = dinp;
  expect_close("gelu dinp", dinp1, numeric_grad(inp, loss), kTolFD);
  lt::cpu::gelu_backward(dinp.data(), inp.data(), R.data(), n);
  EXPECT_EQ(dinp, dinp1) << "gelu dinp must be assigned, not accumulated";
}

TEST(GradCheck, CrossEntropy) {
  lt::Rng rng(7);
  Vec logits = randn(rng, N * Vp, 2.0);
  for (int n = 0; n < N; n++)
    for (int v = V; v < Vp; v++) logits[n * Vp + v] = 50.f;  // padding: would dominate if read
  auto targets = tokens_with_repeats(rng, N, V);
  const float dloss = 0.37f;
  Vec losses(N, kNaN), probs(N * Vp, kNaN);
  auto loss = [&] {
    lt::cpu::crossentropy_forward(losses.data(), probs.data(), logits.data(), targets.data(), N, V, Vp);
    double s = 0.0;
    for (float l : losses) s += l;
    return s * dloss;
  };
  loss();
  DVec ref_loss(N), ref_probs(N * Vp, 0.0);
  for (int n = 0; n < N; n++) {
    double mx = -1e300, sum = 0.0;
    for (int v = 0; v < V; v++) mx = std::max(mx, (double)logits[n * Vp + v]);
    for (int v = 0; v < V; v++) sum += std::exp(logits[n * Vp + v] - mx);
    for (int v = 0; v < V; v++) ref_probs[n * Vp + v] = std::exp(logits[n * Vp + v] - mx) / sum;
    ref_loss[n] = std::log(sum) + mx - logits[n * Vp + targets[n]];
  }
  expect_close("crossentropy losses", losses, ref_loss, kTolFwd);
  expect_close("crossentropy probs", probs, ref_probs, kTolFwd);
  for (int n = 0; n < N; n++)
    for (int v = V; v < Vp; v++) ASSERT_EQ(probs[n * Vp + v], 0.f) << "padded column " << v;

  // In place, as the model runs it: probs over the logits, then dlogits over the probs.
  Vec inplace = logits, losses2(N, kNaN);
  lt::cpu::crossentropy_forward(losses2.data(), inplace.data(), inplace.data(), targets.data(), N, V, Vp);
  EXPECT_EQ(losses2, losses) << "in-place forward must read the target logit before overwriting it";
  EXPECT_EQ(inplace, probs);

  Vec dlogits(N * Vp, kNaN);
  lt::cpu::crossentropy_backward(dlogits.data(), probs.data(), targets.data(), dloss, N, V, Vp);
  const Vec dlogits1 = dlogits;
  expect_close("crossentropy dlogits", dlogits1, numeric_grad(logits, loss), kTolFD);
  for (int n = 0; n < N; n++)
    for (int v = V; v < Vp; v++) ASSERT_EQ(dlogits1[n * Vp + v], 0.f) << "padded column " << v;
  loss();
  lt::cpu::crossentropy_backward(dlogits.data(), probs.data(), targets.data(), dloss, N, V, Vp);
  EXPECT_EQ(dlogits, dlogits1) << "dlogits must be assigned, not accumulated";
  lt::cpu::crossentropy_backward(inplace.data(), inplace.data(), targets.data(), dloss, N, V, Vp);
  EXPECT_EQ(inplace, dlogits1) << "in-place backward";
}

TEST(GradCheck, ResidualAndSumSquares) {
  lt::Rng rng(8);
  const int n = 40000;  // more than one of sum_squares' fixed-size chunks
  Vec a = randn(rng, n), b = randn(rng, n), out(n, kNaN);
  lt::cpu::residual_forward(out.data(), a.data(), b.data(), n);
  for (int i = 0; i < n; i++) ASSERT_EQ(out[i], a[i] + b[i]) << i;
  double ref = 0.0;
  for (float x : a) ref += (double)x * x;
  EXPECT_NEAR(lt::cpu::sum_squares(a.data(), n), ref, 1e-12 * ref);
}

// The whole model: central differences of the mean loss over a random subset of parameters.
TEST(GradCheck, TinyModel) {
  const lt::GPTConfig cfg{2, 2, 16, 8, 30};
  const int Bm = 2, Tm = 6;
  auto be = lt::make_cpu_backend();
  lt::GPT model(cfg, *be);
  lt::Rng rng(9);

  // Random weights everywhere (biases and LayerNorm too, so every path carries gradient);
  // the vocabulary padding rows of wte stay zero.
  Vec p(model.num_params(), 0.f);
  for (const lt::ParamInfo& pi : model.param_info()) {
    const bool ln_gain = pi.name.find("ln_") != std::string::npos && pi.name.ends_with(".weight");
    const int64_t n = pi.name == "wte.weight" ? (int64_t)cfg.vocab_size * cfg.n_embd : pi.numel;
    for (int64_t i = 0; i < n; i++) p[pi.offset + i] = (float)((ln_gain ? 1.0 : 0.0) + 0.1 * rng.normal());
  }
  std::vector<int32_t> tokens = tokens_with_repeats(rng, Bm * Tm, cfg.vocab_size);
  std::vector<int32_t> targets = tokens_with_repeats(rng, Bm * Tm, cfg.vocab_size);

  auto loss = [&] {  // the mean loss, summed in double from the per-position losses
    be->from_host(model.params(), p.data());
    model.forward(tokens.data(), targets.data(), Bm, Tm);
    Vec l(Bm * Tm);
    be->to_host(l.data(), model.losses());
    double s = 0.0;
    for (float x : l) s += x;
    return s / (Bm * Tm);
  };
  auto grads = [&] {
    Vec g(model.num_params());
    be->to_host(g.data(), model.grads());
    return g;
  };

  be->fill_zero(model.grads());
  loss();
  model.backward();
  const Vec g1 = grads();

  // The analytic gradient of a random subset: one element of every tensor, then more at random.
  std::vector<int64_t> idx;
  for (const lt::ParamInfo& pi : model.param_info()) {
    // wte: a real vocabulary row; wpe: a position inside T (the rest get no gradient).
    const int64_t n = pi.name == "wte.weight"   ? (int64_t)cfg.vocab_size * cfg.n_embd
                      : pi.name == "wpe.weight" ? (int64_t)Tm * cfg.n_embd
                                                : pi.numel;
    idx.push_back(pi.offset + (int64_t)rng.below(n));
  }
  const lt::ParamInfo& wte = model.param_info()[0];
  const int64_t wte_pad_begin = wte.offset + (int64_t)cfg.vocab_size * cfg.n_embd, wte_pad_end = wte.offset + wte.numel;
  while (idx.size() < 56) {
    const int64_t i = (int64_t)rng.below(model.num_params());
    if (i < wte_pad_begin || i >= wte_pad_end) idx.push_back(i);
  }
  auto where = [&](int64_t i) {
    for (const lt::ParamInfo& pi : model.param_info())
      if (i >= pi.offset && i < pi.offset + pi.numel) return pi.name + "[" + std::to_string(i - pi.offset) + "]";
    return std::string("?");
  };
  double gscale = 0.0;
  for (float g : g1) gscale = std::max(gscale, (double)std::fabs(g));
  // The loss is fp32 through ~20 ops, so its rounding (~1e-6) limits the numeric gradient;
  // each element is judged relative to itself plus a floor at 1e-3 of the largest gradient
  // (some are exactly zero: the key bias cannot change a softmax over keys).
  int bad = 0;
  double worst = 0.0;
  for (int64_t i : idx) {
    const float p0 = p[i], pp = (float)(p0 + kEpsModel), pm = (float)(p0 - kEpsModel);
    p[i] = pp;
    const double lp = loss();
    p[i] = pm;
    const double lm = loss();
    p[i] = p0;
    const double num = (lp - lm) / ((double)pp - (double)pm);
    const double err = std::fabs(g1[i] - num) / (std::fabs(num) + 1e-3 * gscale);
    worst = std::max(worst, err);
    if (err > kTolModel) {
      ++bad;
      ADD_FAILURE() << where(i) << ": backward " << g1[i] << " vs numeric " << num;
    }
  }
  std::printf("  tiny model: %zu params checked, worst err %.2e (floor %.1e), %d bad\n", idx.size(), worst,
              1e-3 * gscale, bad);

  // Vocabulary padding rows never receive gradient.
  for (int64_t i = wte_pad_begin; i < wte_pad_end; i++) ASSERT_EQ(g1[i], 0.f) << where(i);

  // backward() accumulates, scaled by loss_scale.
  loss();
  model.backward(0.5f);
  const Vec g15 = grads();
  DVec want(g1.size());
  for (size_t i = 0; i < g1.size(); i++) want[i] = 1.5 * g1[i];
  expect_close("model grads accumulate (1 + 0.5)", g15, want, 1e-5);
}

}  // namespace
