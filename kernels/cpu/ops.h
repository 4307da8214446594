// The CPU reference ops of the GPT-2 training step, forward and backward, in fp32.
// defines: encoder_*, layernorm_*, matmul_*, attention_*, gelu_*, crossentropy_*, adamw_update,
//          sum_squares. Plain loops (OpenMP across rows); matmuls and attention's products
//          through the small GEMM in gemm.h (OpenBLAS for products too large for it).
// These are the truth every CUDA kernel is tested against.
//
// Conventions (llm.c's): activations are row-major [N = B*T, C]; a linear layer's weight is
// [OC, C] (out = inp @ W^T + bias). Parameter gradients are ACCUMULATED (+=) so micro-batches
// add up; activation gradients are assigned (=) except where noted, so no scratch zeroing is
// needed between layers.
#pragma once
#include <cstdint>

namespace lt::cpu {

// out[B,T,C] = wte[tokens[b,t]] + wpe[t]
void encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                     int B, int T, int C);
// dwte[tok] += dout, dwpe[t] += dout (deterministic: no two threads touch one row)
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                      int B, int T, int C);

// out = (inp - mean) * rstd * w + b over the last dim; mean/rstd [N] saved for backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                       const float* b, int N, int C);
// dinp += ..., dw += ..., db += ...  (dinp accumulates: it is the residual stream's gradient)
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                        const float* w, const float* mean, const float* rstd, int N, int C);

// out[N,OC] = inp[N,C] @ w[OC,C]^T + bias[OC]   (bias may be null)
void matmul_forward(float* out, const float* inp, const float* w, const float* bias, int N, int C,
                    int OC);
// dinp[N,C] = dout @ w (assigned; skipped when dinp is null), dw[OC,C] += dout^T @ inp,
// dbias[OC] += sum_n dout (skipped when null)
void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                     const float* w, int N, int C, int OC);

// Causal multi-head self-attention. qkv[B,T,3C] holds q, k, v for NH heads of C/NH each;
// out[B,T,C]; att[B,NH,T,T] keeps the softmax probabilities for backward.
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH);
// dqkv[B,T,3C] is assigned.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B,
                        int T, int C, int NH);

// GELU, tanh approximation (GPT-2's "gelu_new").
void gelu_forward(float* out, const float* inp, int64_t n);
// dinp = gelu'(inp) * dout (assigned)
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);

// out = a + b
void residual_forward(float* out, const float* a, const float* b, int64_t n);

// Row-wise softmax over the first V of Vp logits (the rest is vocabulary padding) and the
// cross-entropy loss against targets. probs may alias logits. Padded columns get prob 0.
void crossentropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets,
                          int N, int V, int Vp);
// dlogits = (probs - onehot(target)) * dloss (assigned; may alias probs); padding gets 0.
void crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float dloss,
                           int N, int V, int Vp);

// One AdamW step with PyTorch's semantics (torch.optim.AdamW, amsgrad off): decoupled weight
// decay p *= 1 - lr*wd, then the bias-corrected Adam update. The gradient is multiplied by
// grad_scale first (global-norm clipping) and then ZEROED, ready for the next accumulation.
void adamw_update(float* p, float* g, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float grad_scale, int step);

// sum of x^2 in double precision (for the global gradient norm)
double sum_squares(const float* x, int64_t n);

}  // namespace lt::cpu
