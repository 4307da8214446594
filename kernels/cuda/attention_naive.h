// Causal attention that keeps the probabilities, for any head dim and fp32 or bf16 storage:
// the CUDA backend's fallback where the flash kernels (attention.h) do not apply (head dims
// other than 64 and 128, and the fp32 testing mode). defines: attention_naive_supported,
// attention_naive_forward, attention_naive_backward(_scratch_bytes).
//
// Same layouts and conventions as the CPU reference op (kernels/cpu/ops.h): qkv [B,T,3C],
// out [B,T,C], att [B,NH,T,T] fp32 probabilities (0 above the diagonal), dqkv assigned. fp32
// arithmetic; one warp per row, no atomics (deterministic). O(T^2) memory and plain loads: a
// correctness path, not a fast one.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace lt::cuda {

// Head dims 1..kNaiveMaxHeadDim and T up to kNaiveMaxT (the backward keeps two rows of T
// floats in shared memory).
constexpr int kNaiveMaxHeadDim = 1024;
constexpr int kNaiveMaxT = 6144;
bool attention_naive_supported(int head_dim, int T);

// out [B,T,C] (assigned), att [B,NH,T,T] (assigned, every element).
template <class F>
void attention_naive_forward(F* out, float* att, const F* qkv, int B, int T, int C, int NH, cudaStream_t stream);

// `scratch` receives D = rowsum(att * (dout . v)) per query row (B*NH*T floats).
size_t attention_naive_backward_scratch_bytes(int B, int T, int NH);
// dqkv [B,T,3C] (assigned) from dout [B,T,C], the forward's qkv and att.
template <class F>
void attention_naive_backward(F* dqkv, void* scratch, const F* dout, const F* qkv, const float* att, int B, int T,
                              int C, int NH, cudaStream_t stream);

}  // namespace lt::cuda
