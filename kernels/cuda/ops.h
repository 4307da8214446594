// The rest of the training step on the GPU (everything but GEMM and attention), matching the
// CPU reference ops in kernels/cpu/ops.h: same layouts, same assign/accumulate conventions.
// defines: encoder_*, layernorm_*, bias_backward, gelu_*, residual_forward, crossentropy_*,
//          adamw_update, sum_squares, grad_clip_scale, scale_inplace, convert.
//
// Every op is a template over the storage type F = float or __nv_bfloat16 (explicitly
// instantiated for both in ops.cu); arithmetic and every reduction run in fp32 (sums of squares
// in fp64). All reductions are deterministic: fixed-shape trees and per-block partials summed
// in a fixed order, never float atomics. All calls are asynchronous on `stream`.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lt::cuda {

// ---- Embeddings -----------------------------------------------------------------------------

// out[B,T,C] = wte[tokens[b,t]] + wpe[t]   (tokens on the device)
template <class F>
void encoder_forward(F* out, const int32_t* tokens, const F* wte, const F* wpe, int B, int T, int C,
                     cudaStream_t stream);

// encoder_backward needs the positions of each token. They are bucketed on the host (the
// tokens come from the host data loader anyway), by a stable counting sort, so each bucket
// lists its positions in increasing order and the sums run in a fixed order.
// data = [bucket token ids (num_buckets)] [bucket starts (num_buckets + 1)] [positions (B*T)];
// copy `data` to the device as is. Aborts on a token outside [0, V).
struct EncoderBackwardPlan {
  std::vector<int32_t> data;
  int num_buckets = 0;
};
EncoderBackwardPlan encoder_backward_plan(const int32_t* tokens_host, int B, int T, int V);
// dwte[tok] += sum of dout over the token's positions, dwpe[t] += sum over b of dout[b,t].
// One thread owns one (token or position, channel) and sums in order: no atomics.
template <class F>
void encoder_backward(F* dwte, F* dwpe, const F* dout, const int32_t* plan_dev, int num_buckets, int B, int T,
                      int C, cudaStream_t stream);

// ---- LayerNorm --------------------------------------------------------------------------------

// out = (inp - mean) * rstd * w + b over the last dim (eps 1e-5); mean/rstd [N] fp32 saved.
template <class F>
void layernorm_forward(F* out, float* mean, float* rstd, const F* inp, const F* w, const F* b, int N, int C,
                       cudaStream_t stream);
// dinp += ..., dw += ..., db += ... (as the CPU op). dw/db: per-block column partials of a fixed
// 32 rows each into `scratch`, then one ordered sum per column.
size_t layernorm_backward_scratch_bytes(int N, int C);
template <class F>
void layernorm_backward(F* dinp, F* dw, F* db, void* scratch, const F* dout, const F* inp, const F* w,
                        const float* mean, const float* rstd, int N, int C, cudaStream_t stream);

// dbias[OC] += sum over rows of dout[N,OC] (the bias part of matmul_backward; same scheme).
size_t bias_backward_scratch_bytes(int N, int OC);
template <class F>
void bias_backward(F* dbias, void* scratch, const F* dout, int N, int OC, cudaStream_t stream);

// ---- Elementwise ------------------------------------------------------------------------------

template <class F>
void gelu_forward(F* out, const F* inp, int64_t n, cudaStream_t stream);
// dinp = gelu'(inp) * dout (assigned; dinp may alias dout)
template <class F>
void gelu_backward(F* dinp, const F* inp, const F* dout, int64_t n, cudaStream_t stream);
// out = a + b (out may alias a or b)
template <class F>
void residual_forward(F* out, const F* a, const F* b, int64_t n, cudaStream_t stream);

// ---- Softmax + cross-entropy over a padded vocabulary (logits [N,Vp], first V real) -----------

// losses[N] fp32; probs = softmax (padding 0); probs may alias logits.
template <class F>
void crossentropy_forward(float* losses, F* probs, const F* logits, const int32_t* targets, int N, int V, int Vp,
                          cudaStream_t stream);
// dlogits = (probs - onehot(target)) * dloss (assigned; may alias probs); padding 0.
template <class F>
void crossentropy_backward(F* dlogits, const F* probs, const int32_t* targets, float dloss, int N, int V, int Vp,
                           cudaStream_t stream);
// Both in one pass over the logits, never storing the probabilities: losses (may be null) and
// dlogits = (softmax(logits) - onehot) * dloss. dlogits may alias logits.
template <class F>
void crossentropy_fused(float* losses, F* dlogits, const F* logits, const int32_t* targets, float dloss, int N,
                        int V, int Vp, cudaStream_t stream);

// ---- Optimizer --------------------------------------------------------------------------------

// One AdamW step with the CPU op's (PyTorch's) semantics on fp32 master weights `p` and fp32
// moments; the gradient (G = float or bf16) is multiplied by grad_scale, and by *grad_scale_dev
// when that is non-null (clipping without a host round trip), then zeroed. When `p_bf16` is
// non-null the updated weights are also written there, rounded to bf16 (the model's copy).
template <class G>
void adamw_update(float* p, __nv_bfloat16* p_bf16, G* g, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float grad_scale, const float* grad_scale_dev,
                  int step, cudaStream_t stream);

// Sum of x^2 in fp64 into *out_dev (+= when accumulate, so several tensors add up on the
// device). Two passes: fixed 16384-element chunks -> partials in `scratch`, then one ordered
// sum; the result does not depend on the GPU or the launch.
size_t sum_squares_scratch_bytes(int64_t n);
template <class F>
void sum_squares(double* out_dev, const F* x, int64_t n, void* scratch, bool accumulate, cudaStream_t stream);

// From a device sum of squares: *norm_dev = sqrt(sum) and *scale_dev = min(1, max_norm /
// (norm + 1e-6)) (1 when max_norm <= 0), as torch.nn.utils.clip_grad_norm_ and the CPU
// optimizer. Either output may be null.
void grad_clip_scale(float* scale_dev, float* norm_dev, const double* sumsq_dev, float max_norm, cudaStream_t stream);

// x *= *scale_dev
template <class F>
void scale_inplace(F* x, int64_t n, const float* scale_dev, cudaStream_t stream);

// out = in, converting the dtype (float <-> bf16, rounding to nearest even).
template <class To, class From>
void convert(To* out, const From* in, int64_t n, cudaStream_t stream);

}  // namespace lt::cuda
