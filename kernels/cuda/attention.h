// Causal flash attention on the GPU (bf16 in, fp32 accumulation, mma.sync tensor cores; on
// Hopper the forward runs on wgmma + TMA, attention_wgmma.cu).
// defines: attention_supported, attention_forward, attention_forward_mma_sync, attention_forward_hopper,
//          attention_hopper_available, attention_backward(_scratch_bytes).
//
// Layout as in kernels/cpu/ops.h: qkv [B,T,3C] holds q, k, v for NH heads of C/NH each,
// out [B,T,C]. The T x T score matrix never exists in memory; forward saves one log-sum-exp per
// query row instead of the CPU op's att [B,NH,T,T], and backward recomputes the probabilities.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace lt::cuda {

// Head dims with a kernel: 64 (GPT-2) and 128. Pointers must be 16-byte aligned.
bool attention_supported(int head_dim);

// Which kernels attention_forward/backward run. Auto: the Hopper kernels on a compute capability
// 9.0 device with sm_90a code (and B*T < 2^30), the mma.sync kernels elsewhere and on the CPU
// emulator. MmaSync forces those; Wgmma asks for the Hopper kernels and falls back to mma.sync
// where they cannot run (the trainer's --attention wgmma refuses such a device up front).
enum class AttnPath { Auto, MmaSync, Wgmma };

// out [B,T,C] bf16 (assigned). lse [B,NH,T] fp32: per query row, log2 of the sum of
// exp2(score * log2(e) / sqrt(head_dim)) over its keys, i.e. the row's base-2 log-sum-exp of the
// scaled scores; only attention_backward reads it. Any T >= 1. On a compute capability 9.0
// device with sm_90a code in the build this is attention_forward_hopper, elsewhere (and on the
// CPU emulator) the mma.sync kernel.
void attention_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int T, int C, int NH,
                       cudaStream_t stream, AttnPath path = AttnPath::Auto);

// The mma.sync forward by name (what attention_forward runs off Hopper), for benchmarks that
// put it beside the Hopper kernel.
void attention_forward_mma_sync(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int T, int C,
                                int NH, cudaStream_t stream);

// The Hopper forward (wgmma + TMA, attention_wgmma.cu) by name, for tests and benchmarks: same
// arguments and results as attention_forward. Aborts with a message where it cannot run
// (attention_hopper_available() false: not a compute capability 9.0 device, or no sm_90a code).
bool attention_hopper_available();
void attention_forward_hopper(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int T, int C,
                              int NH, cudaStream_t stream);

size_t attention_backward_scratch_bytes(int B, int T, int NH);
// dqkv [B,T,3C] (assigned) from dout [B,T,C] and the forward's qkv, out and lse. `scratch`
// (attention_backward_scratch_bytes) receives D = rowsum(dout * out). Deterministic: no atomics
// (dq and dk/dv are computed by separate kernels, each output row owned by one thread or warp).
// As the forward: attention_backward_hopper on a compute capability 9.0 device with sm_90a code,
// elsewhere (and on the CPU emulator) the mma.sync kernels.
void attention_backward(__nv_bfloat16* dqkv, void* scratch, const __nv_bfloat16* dout, const __nv_bfloat16* out,
                        const float* lse, const __nv_bfloat16* qkv, int B, int T, int C, int NH, cudaStream_t stream,
                        AttnPath path = AttnPath::Auto);

// The mma.sync backward by name (what attention_backward runs off Hopper), for benchmarks.
void attention_backward_mma_sync(__nv_bfloat16* dqkv, void* scratch, const __nv_bfloat16* dout,
                                 const __nv_bfloat16* out, const float* lse, const __nv_bfloat16* qkv, int B, int T,
                                 int C, int NH, cudaStream_t stream);

// The Hopper (sm_90a) backward kernels (attention_wgmma_bwd.cu: wgmma, TMA, warp-specialised),
// with exactly attention_backward's semantics and arguments, called by name (tests, benchmarks).
// Needs a build with sm_90a code and a compute capability 9.0 device (attention_hopper_available());
// elsewhere it aborts with a message. Runs on the CPU emulator.
void attention_backward_hopper(__nv_bfloat16* dqkv, void* scratch, const __nv_bfloat16* dout,
                               const __nv_bfloat16* out, const float* lse, const __nv_bfloat16* qkv, int B, int T,
                               int C, int NH, cudaStream_t stream);

}  // namespace lt::cuda
