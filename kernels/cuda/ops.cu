// The non-GEMM, non-attention ops of the training step on the GPU (see ops.h). Memory-bound,
// so the kernels are plain: one element (or one row, or one column) per thread/warp/block,
// fp32 arithmetic, reductions in fixed trees. Versions (what changed): v1.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace lt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerWarpBlock = kThreads / 32;  // row kernels: one warp per row
constexpr int kColPartialRows = 32;               // rows per column partial (layernorm, bias)
constexpr int64_t kSqChunk = 16384;               // elements per sum-of-squares partial

[[noreturn]] void ops_fail(const char* what, long long v) {
  std::fprintf(stderr, "leasetrain: internal error: cuda ops: %s (%lld)\n", what, v);
  std::abort();
}

// Blocks for a grid-stride loop over n elements.
unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>(b, 1 << 30));
}
#define GRID_STRIDE(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct Sum {
  template <class X>
  __device__ X operator()(X a, X b) const { return a + b; }
};

// ---- Embeddings -------------------------------------------------------------------------------

template <class F>
__global__ void encoder_forward_kernel(F* out, const int32_t* tokens, const F* wte, const F* wpe, int T, int C,
                                       int64_t n) {
  GRID_STRIDE(i, n) {
    const int64_t bt = i / C;
    const int c = (int)(i % C);
    const int t = (int)(bt % T);
    out[i] = from_f32<F>(to_f32(wte[(int64_t)tokens[bt] * C + c]) + to_f32(wpe[(int64_t)t * C + c]));
  }
}

// grid (num_buckets, ceil(C / kThreads)): one thread per (token, channel), positions in order.
template <class F>
__global__ void encoder_backward_wte_kernel(F* dwte, const F* dout, const int32_t* plan, int nb, int C) {
  const int bucket = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int32_t tok = plan[bucket];
  const int32_t begin = plan[nb + bucket], end = plan[nb + bucket + 1];
  const int32_t* pos = plan + 2 * nb + 1;
  float acc = 0.f;
  for (int32_t i = begin; i < end; ++i) acc += to_f32(dout[(int64_t)pos[i] * C + c]);
  F* dst = dwte + (int64_t)tok * C + c;
  *dst = from_f32<F>(to_f32(*dst) + acc);
}

// grid (T, ceil(C / kThreads)): one thread per (position, channel), batches in order.
template <class F>
__global__ void encoder_backward_wpe_kernel(F* dwpe, const F* dout, int B, int T, int C) {
  const int t = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.f;
  for (int b = 0; b < B; ++b) acc += to_f32(dout[((int64_t)b * T + t) * C + c]);
  F* dst = dwpe + (int64_t)t * C + c;
  *dst = from_f32<F>(to_f32(*dst) + acc);
}

// ---- LayerNorm --------------------------------------------------------------------------------

template <class F>
__global__ void layernorm_forward_kernel(F* out, float* mean, float* rstd, const F* inp, const F* w, const F* b,
                                         int N, int C) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kRowsPerWarpBlock + (threadIdx.x >> 5);
  if (row >= N) return;
  const F* x = inp + (int64_t)row * C;
  float sum = 0.f;
  for (int c = lane; c < C; c += 32) sum += to_f32(x[c]);
  const float m = warp_sum(sum) / C;
  float var = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float d = to_f32(x[c]) - m;
    var += d * d;
  }
  const float s = 1.f / sqrtf(warp_sum(var) / C + 1e-5f);
  F* o = out + (int64_t)row * C;
  for (int c = lane; c < C; c += 32) o[c] = from_f32<F>((to_f32(x[c]) - m) * s * to_f32(w[c]) + to_f32(b[c]));
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

// dinp += (w*d - mean(w*d) - norm * mean(w*d*norm)) * rstd, one warp per row.
template <class F>
__global__ void layernorm_backward_dinp_kernel(F* dinp, const F* dout, const F* inp, const F* w, const float* mean,
                                               const float* rstd, int N, int C) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kRowsPerWarpBlock + (threadIdx.x >> 5);
  if (row >= N) return;
  const F* d = dout + (int64_t)row * C;
  const F* x = inp + (int64_t)row * C;
  const float m = mean[row], s = rstd[row];
  float a = 0.f, bsum = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float dn = to_f32(w[c]) * to_f32(d[c]);
    a += dn;
    bsum += dn * (to_f32(x[c]) - m) * s;
  }
  const float dnorm_mean = warp_sum(a) / C;
  const float dnorm_norm_mean = warp_sum(bsum) / C;
  F* di = dinp + (int64_t)row * C;
  for (int c = lane; c < C; c += 32) {
    const float norm = (to_f32(x[c]) - m) * s;
    const float g = (to_f32(w[c]) * to_f32(d[c]) - dnorm_mean - norm * dnorm_norm_mean) * s;
    di[c] = from_f32<F>(to_f32(di[c]) + g);
  }
}

// Column partials over a fixed slice of kColPartialRows rows: grid (ceil(C/kThreads), P).
// With inp (layernorm): part[p][0][c] = sum norm*dout, part[p][1][c] = sum dout.
// Without (bias):       part[p][0][c] = sum dout.
template <class F>
__global__ void column_partials_kernel(float* part, const F* dout, const F* inp, const float* mean,
                                       const float* rstd, int N, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int p = blockIdx.y;
  const int r0 = p * kColPartialRows, r1 = min(N, r0 + kColPartialRows);
  float sw = 0.f, sb = 0.f;
  for (int r = r0; r < r1; ++r) {
    const float d = to_f32(dout[(int64_t)r * C + c]);
    sb += d;
    if (inp) sw += (to_f32(inp[(int64_t)r * C + c]) - mean[r]) * rstd[r] * d;
  }
  if (inp) {
    part[((int64_t)p * 2 + 0) * C + c] = sw;
    part[((int64_t)p * 2 + 1) * C + c] = sb;
  } else {
    part[(int64_t)p * C + c] = sb;
  }
}

// out0[c] += sum_p part[p][0][c] (and out1[c] += sum_p part[p][1][c] when nvals == 2), p in order.
template <class F>
__global__ void column_finalize_kernel(F* out0, F* out1, const float* part, int P, int C, int nvals) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s0 = 0.f, s1 = 0.f;
  for (int p = 0; p < P; ++p) {
    s0 += part[((int64_t)p * nvals) * C + c];
    if (nvals == 2) s1 += part[((int64_t)p * nvals + 1) * C + c];
  }
  out0[c] = from_f32<F>(to_f32(out0[c]) + s0);
  if (nvals == 2) out1[c] = from_f32<F>(to_f32(out1[c]) + s1);
}

int column_partial_count(int N) { return (N + kColPartialRows - 1) / kColPartialRows; }

// ---- Elementwise ------------------------------------------------------------------------------

template <class F>
__global__ void gelu_forward_kernel(F* out, const F* inp, int64_t n) {
  GRID_STRIDE(i, n) out[i] = from_f32<F>(gelu_f(to_f32(inp[i])));
}
template <class F>
__global__ void gelu_backward_kernel(F* dinp, const F* inp, const F* dout, int64_t n) {
  GRID_STRIDE(i, n) dinp[i] = from_f32<F>(gelu_grad_f(to_f32(inp[i])) * to_f32(dout[i]));
}
template <class F>
__global__ void residual_forward_kernel(F* out, const F* a, const F* b, int64_t n) {
  GRID_STRIDE(i, n) out[i] = from_f32<F>(to_f32(a[i]) + to_f32(b[i]));
}
template <class F>
__global__ void scale_inplace_kernel(F* x, int64_t n, const float* scale) {
  const float s = *scale;
  GRID_STRIDE(i, n) x[i] = from_f32<F>(to_f32(x[i]) * s);
}
template <class To, class From>
__global__ void convert_kernel(To* out, const From* in, int64_t n) {
  GRID_STRIDE(i, n) out[i] = from_f32<To>(to_f32(in[i]));
}

// ---- Cross-entropy ----------------------------------------------------------------------------

constexpr int kCeThreads = 512;
enum CeMode { kCeProbs = 0, kCeGrad = 1 };

// One block per row. Pass 1: per-thread online (max, sum of exp), then two block reductions.
// Pass 2: write probabilities (kCeProbs) or (p - onehot) * dloss (kCeGrad). out may alias logits:
// each element is read and then written by the same thread, and the target's logit is read by
// every thread before the reductions' barriers, i.e. before any write.
template <class F>
__global__ void __launch_bounds__(kCeThreads) crossentropy_kernel(float* losses, F* out, const F* logits,
                                                                 const int32_t* targets, float dloss, int V, int Vp,
                                                                 int mode) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const F* l = logits + row * Vp;
  F* o = out + row * Vp;
  const int tgt = targets[row];
  const float logit_t = to_f32(l[tgt]);
  float m = -INFINITY, s = 0.f;
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    const float x = to_f32(l[v]);
    if (x > m) {
      s = s * expf(m - x) + 1.f;
      m = x;
    } else {
      s += expf(x - m);
    }
  }
  const float M = block_reduce(m, red, Max{});
  const float S = block_reduce(m == -INFINITY ? 0.f : s * expf(m - M), red, Sum{});
  if (threadIdx.x == 0 && losses) losses[row] = logf(S) + M - logit_t;
  const float inv = 1.f / S;
  for (int v = threadIdx.x; v < Vp; v += blockDim.x) {
    float r = 0.f;
    if (v < V) {
      const float pv = expf(to_f32(l[v]) - M) * inv;
      r = mode == kCeProbs ? pv : (pv - (v == tgt ? 1.f : 0.f)) * dloss;
    }
    o[v] = from_f32<F>(r);
  }
}

template <class F>
__global__ void crossentropy_backward_kernel(F* dlogits, const F* probs, const int32_t* targets, float dloss, int V,
                                             int Vp, int64_t n) {
  GRID_STRIDE(i, n) {
    const int64_t row = i / Vp;
    const int v = (int)(i % Vp);
    float r = 0.f;
    if (v < V) r = (to_f32(probs[i]) - (v == targets[row] ? 1.f : 0.f)) * dloss;
    dlogits[i] = from_f32<F>(r);
  }
}

// ---- Optimizer --------------------------------------------------------------------------------

template <class G>
__global__ void adamw_kernel(float* p, bf16* p_bf16, G* g, float* m, float* v, int64_t n, float beta1, float beta2,
                             float eps, float step_size, float decay, float bc2_sqrt, float grad_scale,
                             const float* grad_scale_dev) {
  const float gs = grad_scale_dev ? grad_scale * *grad_scale_dev : grad_scale;
  GRID_STRIDE(i, n) {
    const float grad = to_f32(g[i]) * gs;
    g[i] = from_f32<G>(0.f);
    const float mi = beta1 * m[i] + (1.f - beta1) * grad;
    const float vi = beta2 * v[i] + (1.f - beta2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    const float pi = p[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    p[i] = pi;
    if (p_bf16) p_bf16[i] = __float2bfloat16_rn(pi);
  }
}

template <class F>
__global__ void sumsq_partial_kernel(double* part, const F* x, int64_t n) {
  __shared__ double red[32];
  const int64_t lo = (int64_t)blockIdx.x * kSqChunk;
  const int64_t hi = lo + kSqChunk < n ? lo + kSqChunk : n;
  double acc = 0.0;
  for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    const double xi = to_f32(x[i]);
    acc += xi * xi;
  }
  acc = block_reduce(acc, red, Sum{});
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

// One block: thread i sums partials i, i+blockDim, ... in order, then a fixed tree.
__global__ void sum_partials_kernel(double* out, const double* part, int64_t count, int accumulate) {
  __shared__ double red[32];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += part[i];
  acc = block_reduce(acc, red, Sum{});
  if (threadIdx.x == 0) out[0] = accumulate ? out[0] + acc : acc;
}

__global__ void grad_clip_scale_kernel(float* scale, float* norm_out, const double* sumsq, float max_norm) {
  const float norm = (float)sqrt(sumsq[0]);
  if (norm_out) norm_out[0] = norm;
  if (scale) scale[0] = max_norm > 0.f ? fminf(1.f, max_norm / (norm + 1e-6f)) : 1.f;
}

}  // namespace

// ---- Host entry points ------------------------------------------------------------------------

template <class F>
void encoder_forward(F* out, const int32_t* tokens, const F* wte, const F* wpe, int B, int T, int C,
                     cudaStream_t stream) {
  const int64_t n = (int64_t)B * T * C;
  if (n == 0) return;
  encoder_forward_kernel<F><<<grid_for(n), kThreads, 0, stream>>>(out, tokens, wte, wpe, T, C, n);
  CUDA_CHECK_LAST();
}

EncoderBackwardPlan encoder_backward_plan(const int32_t* tokens, int B, int T, int V) {
  const int BT = B * T;
  std::vector<int32_t> count(V, 0);
  for (int i = 0; i < BT; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V) ops_fail("encoder_backward_plan: token outside the vocabulary", tokens[i]);
    ++count[tokens[i]];
  }
  EncoderBackwardPlan plan;
  for (int v = 0; v < V; ++v) plan.num_buckets += count[v] > 0;
  const int nb = plan.num_buckets;
  plan.data.assign(2 * (size_t)nb + 1 + BT, 0);
  std::vector<int32_t> next(V, 0);  // next free slot of each token's bucket
  int bucket = 0, offset = 0;
  for (int v = 0; v < V; ++v) {
    if (!count[v]) continue;
    plan.data[bucket] = v;
    plan.data[nb + bucket] = offset;
    next[v] = offset;
    offset += count[v];
    ++bucket;
  }
  plan.data[2 * nb] = offset;
  int32_t* pos = plan.data.data() + 2 * nb + 1;
  for (int i = 0; i < BT; ++i) pos[next[tokens[i]]++] = i;  // stable: increasing positions
  return plan;
}

template <class F>
void encoder_backward(F* dwte, F* dwpe, const F* dout, const int32_t* plan_dev, int num_buckets, int B, int T, int C,
                      cudaStream_t stream) {
  if (B * T == 0 || C == 0) return;
  const unsigned cblocks = (C + kThreads - 1) / kThreads;
  if (num_buckets > 0) {
    encoder_backward_wte_kernel<F><<<dim3(num_buckets, cblocks), kThreads, 0, stream>>>(dwte, dout, plan_dev,
                                                                                         num_buckets, C);
    CUDA_CHECK_LAST();
  }
  encoder_backward_wpe_kernel<F><<<dim3(T, cblocks), kThreads, 0, stream>>>(dwpe, dout, B, T, C);
  CUDA_CHECK_LAST();
}

template <class F>
void layernorm_forward(F* out, float* mean, float* rstd, const F* inp, const F* w, const F* b, int N, int C,
                       cudaStream_t stream) {
  if (N == 0) return;
  layernorm_forward_kernel<F><<<(N + kRowsPerWarpBlock - 1) / kRowsPerWarpBlock, kThreads, 0, stream>>>(
      out, mean, rstd, inp, w, b, N, C);
  CUDA_CHECK_LAST();
}

size_t layernorm_backward_scratch_bytes(int N, int C) {
  return (size_t)column_partial_count(N) * 2 * C * sizeof(float);
}

template <class F>
void layernorm_backward(F* dinp, F* dw, F* db, void* scratch, const F* dout, const F* inp, const F* w,
                        const float* mean, const float* rstd, int N, int C, cudaStream_t stream) {
  if (N == 0 || C == 0) return;
  layernorm_backward_dinp_kernel<F><<<(N + kRowsPerWarpBlock - 1) / kRowsPerWarpBlock, kThreads, 0, stream>>>(
      dinp, dout, inp, w, mean, rstd, N, C);
  CUDA_CHECK_LAST();
  const int P = column_partial_count(N);
  if (P > 65535) ops_fail("layernorm_backward: too many rows", N);
  float* part = static_cast<float*>(scratch);
  const unsigned cblocks = (C + kThreads - 1) / kThreads;
  column_partials_kernel<F><<<dim3(cblocks, P), kThreads, 0, stream>>>(part, dout, inp, mean, rstd, N, C);
  CUDA_CHECK_LAST();
  column_finalize_kernel<F><<<cblocks, kThreads, 0, stream>>>(dw, db, part, P, C, 2);
  CUDA_CHECK_LAST();
}

size_t bias_backward_scratch_bytes(int N, int OC) { return (size_t)column_partial_count(N) * OC * sizeof(float); }

template <class F>
void bias_backward(F* dbias, void* scratch, const F* dout, int N, int OC, cudaStream_t stream) {
  if (N == 0 || OC == 0) return;
  const int P = column_partial_count(N);
  if (P > 65535) ops_fail("bias_backward: too many rows", N);
  float* part = static_cast<float*>(scratch);
  const unsigned cblocks = (OC + kThreads - 1) / kThreads;
  column_partials_kernel<F><<<dim3(cblocks, P), kThreads, 0, stream>>>(part, dout, nullptr, nullptr, nullptr, N, OC);
  CUDA_CHECK_LAST();
  column_finalize_kernel<F><<<cblocks, kThreads, 0, stream>>>(dbias, nullptr, part, P, OC, 1);
  CUDA_CHECK_LAST();
}

template <class F>
void gelu_forward(F* out, const F* inp, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_forward_kernel<F><<<grid_for(n), kThreads, 0, stream>>>(out, inp, n);
  CUDA_CHECK_LAST();
}

template <class F>
void gelu_backward(F* dinp, const F* inp, const F* dout, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_backward_kernel<F><<<grid_for(n), kThreads, 0, stream>>>(dinp, inp, dout, n);
  CUDA_CHECK_LAST();
}

template <class F>
void residual_forward(F* out, const F* a, const F* b, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  residual_forward_kernel<F><<<grid_for(n), kThreads, 0, stream>>>(out, a, b, n);
  CUDA_CHECK_LAST();
}

template <class F>
void crossentropy_forward(float* losses, F* probs, const F* logits, const int32_t* targets, int N, int V, int Vp,
                          cudaStream_t stream) {
  if (N == 0) return;
  crossentropy_kernel<F><<<N, kCeThreads, 0, stream>>>(losses, probs, logits, targets, 0.f, V, Vp, kCeProbs);
  CUDA_CHECK_LAST();
}

template <class F>
void crossentropy_backward(F* dlogits, const F* probs, const int32_t* targets, float dloss, int N, int V, int Vp,
                           cudaStream_t stream) {
  const int64_t n = (int64_t)N * Vp;
  if (n == 0) return;
  crossentropy_backward_kernel<F><<<grid_for(n), kThreads, 0, stream>>>(dlogits, probs, targets, dloss, V, Vp, n);
  CUDA_CHECK_LAST();
}

template <class F>
void crossentropy_fused(float* losses, F* dlogits, const F* logits, const int32_t* targets, float dloss, int N, int V,
                        int Vp, cudaStream_t stream) {
  if (N == 0) return;
  crossentropy_kernel<F><<<N, kCeThreads, 0, stream>>>(losses, dlogits, logits, targets, dloss, V, Vp, kCeGrad);
  CUDA_CHECK_LAST();
}

template <class G>
void adamw_update(float* p, bf16* p_bf16, G* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, float grad_scale, const float* grad_scale_dev, int step,
                  cudaStream_t stream) {
  if (n == 0) return;
  // Same float expressions as the CPU op, so the step constants agree bit for bit.
  const float bc1 = 1.f - std::pow(beta1, (float)step);
  const float bc2_sqrt = std::sqrt(1.f - std::pow(beta2, (float)step));
  const float step_size = lr / bc1;
  const float decay = 1.f - lr * weight_decay;
  adamw_kernel<G><<<grid_for(n), kThreads, 0, stream>>>(p, p_bf16, g, m, v, n, beta1, beta2, eps, step_size, decay,
                                                       bc2_sqrt, grad_scale, grad_scale_dev);
  CUDA_CHECK_LAST();
}

size_t sum_squares_scratch_bytes(int64_t n) {
  return (size_t)std::max<int64_t>(1, (n + kSqChunk - 1) / kSqChunk) * sizeof(double);
}

template <class F>
void sum_squares(double* out_dev, const F* x, int64_t n, void* scratch, bool accumulate, cudaStream_t stream) {
  const int64_t chunks = (n + kSqChunk - 1) / kSqChunk;
  if (chunks > INT32_MAX) ops_fail("sum_squares: too many elements", n);
  double* part = static_cast<double*>(scratch);
  if (chunks > 0) {
    sumsq_partial_kernel<F><<<(unsigned)chunks, kThreads, 0, stream>>>(part, x, n);
    CUDA_CHECK_LAST();
  }
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(out_dev, part, chunks, accumulate ? 1 : 0);
  CUDA_CHECK_LAST();
}

void grad_clip_scale(float* scale_dev, float* norm_dev, const double* sumsq_dev, float max_norm, cudaStream_t stream) {
  grad_clip_scale_kernel<<<1, 1, 0, stream>>>(scale_dev, norm_dev, sumsq_dev, max_norm);
  CUDA_CHECK_LAST();
}

template <class F>
void scale_inplace(F* x, int64_t n, const float* scale_dev, cudaStream_t stream) {
  if (n == 0) return;
  scale_inplace_kernel<F><<<grid_for(n), kThreads, 0, stream>>>(x, n, scale_dev);
  CUDA_CHECK_LAST();
}

template <class To, class From>
void convert(To* out, const From* in, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  convert_kernel<To, From><<<grid_for(n), kThreads, 0, stream>>>(out, in, n);
  CUDA_CHECK_LAST();
}

// ---- Explicit instantiations: float and bf16 storage ----------------------------------------

#define LT_CUDA_OPS_INSTANTIATE(F)                                                                                   \
  template void encoder_forward<F>(F*, const int32_t*, const F*, const F*, int, int, int, cudaStream_t);            \
  template void encoder_backward<F>(F*, F*, const F*, const int32_t*, int, int, int, int, cudaStream_t);            \
  template void layernorm_forward<F>(F*, float*, float*, const F*, const F*, const F*, int, int, cudaStream_t);     \
  template void layernorm_backward<F>(F*, F*, F*, void*, const F*, const F*, const F*, const float*, const float*, \
                                      int, int, cudaStream_t);                                                      \
  template void bias_backward<F>(F*, void*, const F*, int, int, cudaStream_t);                                      \
  template void gelu_forward<F>(F*, const F*, int64_t, cudaStream_t);                                               \
  template void gelu_backward<F>(F*, const F*, const F*, int64_t, cudaStream_t);                                    \
  template void residual_forward<F>(F*, const F*, const F*, int64_t, cudaStream_t);                                 \
  template void crossentropy_forward<F>(float*, F*, const F*, const int32_t*, int, int, int, cudaStream_t);         \
  template void crossentropy_backward<F>(F*, const F*, const int32_t*, float, int, int, int, cudaStream_t);         \
  template void crossentropy_fused<F>(float*, F*, const F*, const int32_t*, float, int, int, int, cudaStream_t);    \
  template void adamw_update<F>(float*, bf16*, F*, float*, float*, int64_t, float, float, float, float, float,      \
                                float, const float*, int, cudaStream_t);                                            \
  template void sum_squares<F>(double*, const F*, int64_t, void*, bool, cudaStream_t);                              \
  template void scale_inplace<F>(F*, int64_t, const float*, cudaStream_t);

LT_CUDA_OPS_INSTANTIATE(float)
LT_CUDA_OPS_INSTANTIATE(bf16)
#undef LT_CUDA_OPS_INSTANTIATE

template void convert<bf16, float>(bf16*, const float*, int64_t, cudaStream_t);
template void convert<float, bf16>(float*, const bf16*, int64_t, cudaStream_t);

}  // namespace lt::cuda
