// Causal attention with materialised probabilities (see attention_naive.h). One 32-thread
// block (one warp) per query row (forward, dq) or key row (dk, dv); lanes split the keys when
// scoring and the head dim when summing. Versions (what changed): v1.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/attention_naive.h"
#include "kernels/cuda/common.cuh"

namespace lt::cuda {
namespace {

constexpr int kLanes = 32;

[[noreturn]] void naive_fail(const char* what, long long v) {
  std::fprintf(stderr, "leasetrain: internal error: attention (naive): %s (%lld)\n", what, v);
  std::abort();
}

template <class F>
__device__ __forceinline__ float dot_f32(const F* a, const F* b, int n) {
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += to_f32(a[i]) * to_f32(b[i]);
  return s;
}

// grid (T, B*NH): row t of head (b, h).
template <class F>
__global__ void __launch_bounds__(kLanes) naive_attn_fwd_kernel(F* out, float* att, const F* qkv, int T, int C, int NH,
                                                                float scale) {
  const int t = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH, lane = threadIdx.x;
  const int hs = C / NH;
  const int64_t C3 = 3 * (int64_t)C;
  const F* base = qkv + (int64_t)b * T * C3 + h * hs;  // q of row 0 of this head
  const F* q = base + t * C3;
  float* a = att + ((int64_t)bh * T + t) * T;
  float mx = -INFINITY;
  for (int j = lane; j <= t; j += kLanes) {
    const float s = dot_f32(q, base + j * C3 + C, hs) * scale;
    a[j] = s;
    mx = fmaxf(mx, s);
  }
  mx = warp_max(mx);
  float sum = 0.f;
  for (int j = lane; j <= t; j += kLanes) {
    const float e = expf(a[j] - mx);
    a[j] = e;
    sum += e;
  }
  const float inv = 1.f / warp_sum(sum);
  for (int j = lane; j < T; j += kLanes) a[j] = j <= t ? a[j] * inv : 0.f;
  __syncthreads();  // the row's probabilities, written lane by lane, are read by every lane
  F* o = out + ((int64_t)b * T + t) * C + h * hs;
  for (int i = lane; i < hs; i += kLanes) {
    float acc = 0.f;
    for (int j = 0; j <= t; ++j) acc += a[j] * to_f32(base[j * C3 + 2 * C + i]);
    o[i] = from_f32<F>(acc);
  }
}

// grid (T, B*NH), dynamic shared memory T floats. Query row t: D = sum_j a_j (dO . v_j),
// dS_j = a_j (dO . v_j - D) * scale, dq = sum_j dS_j k_j.
template <class F>
__global__ void __launch_bounds__(kLanes) naive_attn_bwd_dq_kernel(F* dqkv, float* dvec, const F* dout, const F* qkv,
                                                                   const float* att, int T, int C, int NH,
                                                                   float scale) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* ds = reinterpret_cast<float*>(smem_raw);  // [T]
  const int t = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH, lane = threadIdx.x;
  const int hs = C / NH;
  const int64_t C3 = 3 * (int64_t)C;
  const F* base = qkv + (int64_t)b * T * C3 + h * hs;
  const F* dO = dout + ((int64_t)b * T + t) * C + h * hs;
  const float* a = att + ((int64_t)bh * T + t) * T;
  float dsum = 0.f;
  for (int j = lane; j <= t; j += kLanes) {
    const float s = dot_f32(dO, base + j * C3 + 2 * C, hs);
    ds[j] = s;
    dsum += a[j] * s;
  }
  const float D = warp_sum(dsum);
  if (lane == 0) dvec[(int64_t)bh * T + t] = D;
  for (int j = lane; j <= t; j += kLanes) ds[j] = a[j] * (ds[j] - D) * scale;
  __syncthreads();
  F* dq = dqkv + ((int64_t)b * T + t) * C3 + h * hs;
  for (int i = lane; i < hs; i += kLanes) {
    float acc = 0.f;
    for (int j = 0; j <= t; ++j) acc += ds[j] * to_f32(base[j * C3 + C + i]);
    dq[i] = from_f32<F>(acc);
  }
}

// grid (T, B*NH), dynamic shared memory 2T floats. Key row j: dk = sum_{t>=j} dS_tj q_t,
// dv = sum_{t>=j} a_tj dO_t, with D_t from the dq kernel.
template <class F>
__global__ void __launch_bounds__(kLanes) naive_attn_bwd_dkdv_kernel(F* dqkv, const float* dvec, const F* dout,
                                                                     const F* qkv, const float* att, int T, int C,
                                                                     int NH, float scale) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* ds = reinterpret_cast<float*>(smem_raw);  // [T]: dS_tj
  float* p = ds + T;                               // [T]: a_tj
  const int j = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH, lane = threadIdx.x;
  const int hs = C / NH;
  const int64_t C3 = 3 * (int64_t)C;
  const F* base = qkv + (int64_t)b * T * C3 + h * hs;
  const F* dO0 = dout + (int64_t)b * T * C + h * hs;  // dO of row 0 of this head
  const F* v = base + j * C3 + 2 * C;
  for (int t = j + lane; t < T; t += kLanes) {
    const float a = att[((int64_t)bh * T + t) * T + j];
    const float s = dot_f32(dO0 + (int64_t)t * C, v, hs);
    p[t] = a;
    ds[t] = a * (s - dvec[(int64_t)bh * T + t]) * scale;
  }
  __syncthreads();
  F* dk = dqkv + ((int64_t)b * T + j) * C3 + C + h * hs;
  F* dv = dk + C;
  for (int i = lane; i < hs; i += kLanes) {
    float acc_k = 0.f, acc_v = 0.f;
    for (int t = j; t < T; ++t) {
      acc_k += ds[t] * to_f32(base[t * C3 + i]);
      acc_v += p[t] * to_f32(dO0[(int64_t)t * C + i]);
    }
    dk[i] = from_f32<F>(acc_k);
    dv[i] = from_f32<F>(acc_v);
  }
}

void check(int B, int T, int C, int NH) {
  if (B < 1 || T < 1 || NH < 1 || C % NH != 0) naive_fail("bad shape B/T/C/NH, C", C);
  if (!attention_naive_supported(C / NH, T)) naive_fail("head dim or T out of range, T", T);
  if ((int64_t)B * NH > 65535) naive_fail("B*NH above 65535", (long long)B * NH);
}

}  // namespace

bool attention_naive_supported(int head_dim, int T) {
  return head_dim >= 1 && head_dim <= kNaiveMaxHeadDim && T >= 1 && T <= kNaiveMaxT;
}

template <class F>
void attention_naive_forward(F* out, float* att, const F* qkv, int B, int T, int C, int NH, cudaStream_t stream) {
  check(B, T, C, NH);
  const float scale = 1.f / std::sqrt((float)(C / NH));
  naive_attn_fwd_kernel<F><<<dim3(T, B * NH), kLanes, 0, stream>>>(out, att, qkv, T, C, NH, scale);
  CUDA_CHECK_LAST();
}

size_t attention_naive_backward_scratch_bytes(int B, int T, int NH) { return (size_t)B * NH * T * sizeof(float); }

template <class F>
void attention_naive_backward(F* dqkv, void* scratch, const F* dout, const F* qkv, const float* att, int B, int T,
                              int C, int NH, cudaStream_t stream) {
  check(B, T, C, NH);
  const float scale = 1.f / std::sqrt((float)(C / NH));
  float* dvec = static_cast<float*>(scratch);
  const size_t smem1 = (size_t)T * sizeof(float), smem2 = 2 * smem1;
  if (smem2 > 48 * 1024) {
    CUDA_CHECK(cudaFuncSetAttribute(naive_attn_bwd_dkdv_kernel<F>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)smem2));
  }
  naive_attn_bwd_dq_kernel<F><<<dim3(T, B * NH), kLanes, smem1, stream>>>(dqkv, dvec, dout, qkv, att, T, C, NH, scale);
  CUDA_CHECK_LAST();
  naive_attn_bwd_dkdv_kernel<F><<<dim3(T, B * NH), kLanes, smem2, stream>>>(dqkv, dvec, dout, qkv, att, T, C, NH,
                                                                            scale);
  CUDA_CHECK_LAST();
}

template void attention_naive_forward<float>(float*, float*, const float*, int, int, int, int, cudaStream_t);
template void attention_naive_forward<bf16>(bf16*, float*, const bf16*, int, int, int, int, cudaStream_t);
template void attention_naive_backward<float>(float*, void*, const float*, const float*, const float*, int, int, int,
                                              int, cudaStream_t);
template void attention_naive_backward<bf16>(bf16*, void*, const bf16*, const bf16*, const float*, int, int, int, int,
                                             cudaStream_t);

}  // namespace lt::cuda
