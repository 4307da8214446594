// CPU reference ops (see ops.h). Every parallel loop writes disjoint outputs and every
// reduction runs in a fixed order, so results are bit-identical run to run for a given
// thread count: --resume relies on that.
#include "kernels/cpu/ops.h"

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/vecmath.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace lt::cpu {

namespace {
constexpr int kColBlock = 16;  // columns per task in column-parallel reductions (one cache line)
}

void encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                     int T, int C) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      float* o = out + ((int64_t)b * T + t) * C;
      const float* e = wte + (int64_t)tokens[b * T + t] * C;
      const float* p = wpe + (int64_t)t * C;
      for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
    }
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                      int T, int C) {
  // Several positions may hold the same token, so split the work by channel, not by position.
#pragma omp parallel for schedule(static)
  for (int c0 = 0; c0 < C; c0 += kColBlock) {
    int c1 = std::min(C, c0 + kColBlock);
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) {
        const float* d = dout + ((int64_t)b * T + t) * C;
        float* e = dwte + (int64_t)tokens[b * T + t] * C;
        float* p = dwpe + (int64_t)t * C;
        for (int c = c0; c < c1; c++) {
          e[c] += d[c];
          p[c] += d[c];
        }
      }
  }
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                       const float* b, int N, int C) {
  const float eps = 1e-5f;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* x = inp + (int64_t)n * C;
    float m = 0.f;
#pragma omp simd reduction(+ : m)
    for (int c = 0; c < C; c++) m += x[c];
    m /= C;
    float var = 0.f;
#pragma omp simd reduction(+ : var)
    for (int c = 0; c < C; c++) var += (x[c] - m) * (x[c] - m);
    var /= C;
    float s = 1.f / std::sqrt(var + eps);
    float* o = out + (int64_t)n * C;
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                        const float* w, const float* mean, const float* rstd, int N, int C) {
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int n = 0; n < N; n++) {
      const float* d = dout + (int64_t)n * C;
      const float* x = inp + (int64_t)n * C;
      float m = mean[n], s = rstd[n];
      // dnorm = dout * w; dx = s * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
      float dnorm_mean = 0.f, dnorm_norm_mean = 0.f;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_norm_mean)
      for (int c = 0; c < C; c++) {
        float dn = w[c] * d[c];
        dnorm_mean += dn;
        dnorm_norm_mean += dn * (x[c] - m) * s;
      }
      dnorm_mean /= C;
      dnorm_norm_mean /= C;
      float* di = dinp + (int64_t)n * C;
      for (int c = 0; c < C; c++) {
        float norm = (x[c] - m) * s;
        di[c] += (w[c] * d[c] - dnorm_mean - norm * dnorm_norm_mean) * s;
      }
    }
#pragma omp for schedule(static)
    for (int c0 = 0; c0 < C; c0 += kColBlock) {
      int c1 = std::min(C, c0 + kColBlock);
      float sw[kColBlock] = {}, sb[kColBlock] = {};  // in registers across the rows
      for (int n = 0; n < N; n++) {
        const float* d = dout + (int64_t)n * C;
        const float* x = inp + (int64_t)n * C;
        for (int c = c0; c < c1; c++) {
          sw[c - c0] += (x[c] - mean[n]) * rstd[n] * d[c];
          sb[c - c0] += d[c];
        }
      }
      for (int c = c0; c < c1; c++) {
        dw[c] += sw[c - c0];
        db[c] += sb[c - c0];
      }
    }
  }
}

// Linear layers go through our small GEMM (gemm.h) unless a product is large enough for
// OpenBLAS's cache blocking to pay (the 124M LM head).
void matmul_forward(float* out, const float* inp, const float* w, const float* bias, int N, int C,
                    int OC) {
  if (!gemm_use_blas(N, OC, C)) {
    // out[N, OC] = inp[N, C] . w^T (+ bias): w^T is w read by column
    gemm(N, OC, C, {inp, C, 1}, {w, 1, C}, out, OC, bias ? GemmInit::Bias : GemmInit::Zero, bias);
    return;
  }
  if (bias) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) std::memcpy(out + (int64_t)n * OC, bias, sizeof(float) * OC);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.f, inp, C, w, C,
              bias ? 1.f : 0.f, out, OC);
}

void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                     const float* w, int N, int C, int OC) {
  // dinp[N, C] = dout[N, OC] . w[OC, C] and dw[OC, C] += dout^T . inp (dout^T is dout read by
  // column): both products and the bias gradient share one parallel region.
  GemmProduct products[2];
  int n = 0;
  const bool dinp_blas = dinp && gemm_use_blas(N, C, OC), dw_blas = gemm_use_blas(OC, C, N);
  if (dinp && !dinp_blas)
    products[n++] = {N, C, OC, {dout, OC, 1}, {w, C, 1}, dinp, C, GemmInit::Zero};
  if (!dw_blas)
    products[n++] = {OC, C, N, {dout, 1, OC}, {inp, C, 1}, dw, C, GemmInit::Accumulate};
  float* scratch = gemm_scratch(products, n);
#pragma omp parallel
  {
    if (dbias) {
#pragma omp for schedule(static) nowait
      for (int o0 = 0; o0 < OC; o0 += kColBlock) {
        const int o1 = std::min(OC, o0 + kColBlock);
        float sum[kColBlock] = {};  // in registers across the rows
        for (int r = 0; r < N; r++) {
          const float* d = dout + (int64_t)r * OC;
          for (int o = o0; o < o1; o++) sum[o - o0] += d[o];
        }
        for (int o = o0; o < o1; o++) dbias[o] += sum[o - o0];
      }
    }
    gemm_team(products, n, scratch);
  }
  if (dinp_blas)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.f, dout, OC, w, C, 0.f,
                dinp, C);
  if (dw_blas)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.f, dout, OC, inp, C, 1.f, dw,
                C);
}

// Attention runs per (batch, head), one task each, as small matrix products on gemm_serial
// (gemm.h) that skip what the causal mask makes zero (Causal::Lower / AUpper / ALower).

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const float scale = 1.f / std::sqrt((float)hs);
  const int64_t C3 = 3 * (int64_t)C;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++) {
      const float* q = qkv + (int64_t)b * T * C3 + h * hs;  // row t at q + t * C3
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* a = att + ((int64_t)b * NH + h) * T * T;  // [T, T]
      float* o = out + (int64_t)b * T * C + h * hs;    // row t at o + t * C
      // scores a[t, t2] = q_t . k_t2 on and below the diagonal (B = K^T)
      gemm_serial(T, T, hs, {q, C3, 1}, {k, 1, C3}, a, T, GemmInit::Zero, nullptr, Causal::Lower);
      for (int t = 0; t < T; t++) {
        float* at = a + (int64_t)t * T;
        float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
        for (int t2 = 0; t2 <= t; t2++) {
          at[t2] *= scale;
          maxv = std::max(maxv, at[t2]);
        }
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int t2 = 0; t2 <= t; t2++) {
          at[t2] = exp_approx(at[t2] - maxv);
          sum += at[t2];
        }
        const float inv = 1.f / sum;
        for (int t2 = 0; t2 < T; t2++) at[t2] = t2 <= t ? at[t2] * inv : 0.f;
      }
      // o_t = sum_{t2 <= t} a[t, t2] v_t2
      gemm_serial(T, hs, T, {a, T, 1}, {v, C3, 1}, o, C, GemmInit::Zero, nullptr, Causal::AUpper);
    }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B,
                        int T, int C, int NH) {
  const int hs = C / NH;
  const float scale = 1.f / std::sqrt((float)hs);
  const int64_t C3 = 3 * (int64_t)C;
#pragma omp parallel
  {
    std::vector<float> dpre((size_t)T * T);  // dL/d(scores), one [T, T] per thread
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
      for (int h = 0; h < NH; h++) {
        const int64_t base = (int64_t)b * T * C3 + h * hs;
        const float *q = qkv + base, *k = q + C, *v = q + 2 * C;
        float *dq = dqkv + base, *dk = dq + C, *dv = dq + 2 * C;
        const float* a = att + ((int64_t)b * NH + h) * T * T;
        const float* d = dout + (int64_t)b * T * C + h * hs;  // row t at d + t * C
        float* dp = dpre.data();
        // datt[t, t2] = dout_t . v_t2 (B = V^T), then through the softmax in place:
        // dpre = a * (datt - sum_t2 a * datt) * scale, 0 above the diagonal.
        gemm_serial(T, T, hs, {d, C, 1}, {v, 1, C3}, dp, T, GemmInit::Zero, nullptr, Causal::Lower);
        for (int t = 0; t < T; t++) {
          const float* at = a + (int64_t)t * T;
          float* pt = dp + (int64_t)t * T;
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int t2 = 0; t2 <= t; t2++) dot += at[t2] * pt[t2];
          for (int t2 = 0; t2 < T; t2++) pt[t2] = t2 <= t ? at[t2] * (pt[t2] - dot) * scale : 0.f;
        }
        // dq_t = sum_{t2 <= t} dpre[t, t2] k_t2
        gemm_serial(T, hs, T, {dp, T, 1}, {k, C3, 1}, dq, C3, GemmInit::Zero, nullptr,
                    Causal::AUpper);
        // keys and values gather from the queries after them (A transposed, zero for t < t2):
        // dk_t2 = sum_{t >= t2} dpre[t, t2] q_t,  dv_t2 = sum_{t >= t2} a[t, t2] dout_t
        gemm_serial(T, hs, T, {dp, 1, T}, {q, C3, 1}, dk, C3, GemmInit::Zero, nullptr,
                    Causal::ALower);
        gemm_serial(T, hs, T, {a, 1, T}, {d, C, 1}, dv, C3, GemmInit::Zero, nullptr,
                    Causal::ALower);
      }
  }
}

namespace {
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2/pi)
}

// Elementwise loops run in chunks: threads split the chunks, the compiler vectorises inside.
constexpr int64_t kChunk = 4096;
// Elementwise loops shorter than this run on one thread (a few microseconds of work).
constexpr int64_t kMinParallel = 8192;

// GELU written as x * sigmoid(2u) (the same function as 0.5 x (1 + tanh u)): 1 + tanh(u)
// cancels catastrophically in the negative tail, 1 / (1 + e^(-2u)) does not.
// The forward clamps u itself and calls the unclamped exp: with exp_approx's own clamp GCC
// splits the loop at it and, vectorised, computes the clamped branch x / (1 + e^88.3) for every
// lane, a denormal quotient that costs a microcode assist per vector (3.5x slower on Zen 3).
// Past |u| = 40 the sigmoid is 1, or e^-80 and below: gelu is then x, or under 1e-33.
void gelu_forward(float* out, const float* inp, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t lo = 0; lo < n; lo += kChunk) {
    const int64_t hi = std::min(n, lo + kChunk);
    for (int64_t i = lo; i < hi; i++) {
      float x = inp[i];
      float u = kGeluScale * (x + 0.044715f * x * x * x);
      u = std::min(std::max(u, -40.f), 40.f);
      out[i] = x / (1.f + exp_approx_core(-2.f * u));
    }
  }
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t lo = 0; lo < n; lo += kChunk) {
    const int64_t hi = std::min(n, lo + kChunk);
    for (int64_t i = lo; i < hi; i++) {
      float x = inp[i];
      float u = kGeluScale * (x + 0.044715f * x * x * x);
      float du = kGeluScale * (1.f + 3.f * 0.044715f * x * x);
      float t = exp_approx(-2.f * u);
      float s = 1.f / (1.f + t);  // sigmoid(2u); 1 - s = t * s
      dinp[i] = (s + 2.f * x * du * (t * s) * s) * dout[i];  // t * s <= 1: no overflow
    }
  }
}

void residual_forward(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void crossentropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets,
                          int N, int V, int Vp) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* l = logits + (int64_t)n * Vp;
    float* p = probs + (int64_t)n * Vp;
    const float logit_t = l[targets[n]];  // read before an in-place overwrite
    float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
    for (int v = 0; v < V; v++) maxv = std::max(maxv, l[v]);
    float sum = 0.f;  // every term is in (0, 1] and one of them is 1: float is plenty
#pragma omp simd reduction(+ : sum)
    for (int v = 0; v < V; v++) {
      p[v] = exp_approx(l[v] - maxv);
      sum += p[v];
    }
    float inv = 1.f / sum;
    for (int v = 0; v < V; v++) p[v] *= inv;
    for (int v = V; v < Vp; v++) p[v] = 0.f;
    losses[n] = (float)(std::log(sum) + maxv - logit_t);
  }
}

void crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float dloss,
                           int N, int V, int Vp) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* p = probs + (int64_t)n * Vp;
    float* d = dlogits + (int64_t)n * Vp;
    for (int v = 0; v < V; v++) d[v] = p[v] * dloss;
    for (int v = V; v < Vp; v++) d[v] = 0.f;
    d[targets[n]] -= dloss;
  }
}

void adamw_update(float* p, float* g, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float grad_scale, int step) {
  const float bc1 = 1.f - std::pow(beta1, (float)step);
  const float inv_bc2_sqrt = 1.f / std::sqrt(1.f - std::pow(beta2, (float)step));
  const float step_size = lr / bc1;
  const float decay = 1.f - lr * weight_decay;
  // Small tensors (biases, LayerNorm weights) on one thread: a parallel region costs more.
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; i++) {
    float grad = g[i] * grad_scale;
    g[i] = 0.f;
    float mi = beta1 * m[i] + (1.f - beta1) * grad;
    float vi = beta2 * v[i] + (1.f - beta2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv_bc2_sqrt + eps);
  }
}

double sum_squares(const float* x, int64_t n) {
  // Fixed-size chunks summed in order: the result does not depend on the thread count.
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(chunks);
#pragma omp parallel for schedule(static)
  for (int64_t ci = 0; ci < chunks; ci++) {
    const int64_t lo = ci * kChunk, hi = std::min(n, lo + kChunk);
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
    part[ci] = s;
  }
  double total = 0.0;
  for (double s : part) total += s;
  return total;
}

}  // namespace lt::cpu
