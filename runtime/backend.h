// The op interface: every op of the training step, on Tensors that live on the backend's
// device. The model (model.h) is written once against it; the CPU backend runs the reference
// ops in kernels/cpu, the CUDA backend (cuda_backend.h) runs kernels/cuda.
//
// Precision: a backend computes in compute_dtype() (F32 on the CPU; BF16 or F32 on CUDA).
// The model keeps fp32 master weights, the optimizer fp32 moments; activations, gradients and
// the weights the ops read are compute_dtype() tensors. LayerNorm statistics, losses and the
// attention state are always fp32. Ops take the dtype from their tensors.
//
// The ops below the "defaults" line were added for device backends; each has a default built
// from the ops above it (host round trips included), which is exactly what the CPU backend
// needs, so a backend that does not override them behaves as before.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace lt {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;

  Tensor empty(DType dt, std::vector<int64_t> shape) const { return Tensor::empty(device(), dt, std::move(shape)); }
  Tensor zeros(DType dt, std::vector<int64_t> shape) const { return Tensor::zeros(device(), dt, std::move(shape)); }
  virtual void fill_zero(const Tensor& t) = 0;
  // Byte copies of the whole tensor (nbytes()); to_host waits for the work queued before it.
  virtual void to_host(void* dst, const Tensor& src) = 0;
  virtual void from_host(const Tensor& dst, const void* src) = 0;
  virtual void synchronize() {}

  // Shapes: tokens [B,T] i32; activations [B,T,C] or [N,C]; weights [OC,C] (see kernels/cpu/ops.h).
  virtual void encoder_forward(const Tensor& out, const Tensor& tokens, const Tensor& wte, const Tensor& wpe) = 0;
  virtual void encoder_backward(const Tensor& dwte, const Tensor& dwpe, const Tensor& dout, const Tensor& tokens) = 0;
  virtual void layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& inp,
                                 const Tensor& w, const Tensor& b) = 0;
  virtual void layernorm_backward(const Tensor& dinp, const Tensor& dw, const Tensor& db, const Tensor& dout,
                                  const Tensor& inp, const Tensor& w, const Tensor& mean, const Tensor& rstd) = 0;
  // bias / dbias / dinp may be empty Tensors (no buffer) to skip them.
  virtual void matmul_forward(const Tensor& out, const Tensor& inp, const Tensor& w, const Tensor& bias) = 0;
  virtual void matmul_backward(const Tensor& dinp, const Tensor& dw, const Tensor& dbias, const Tensor& dout,
                               const Tensor& inp, const Tensor& w) = 0;
  // att: the attention state from attention_state() (the CPU keeps the probabilities).
  virtual void attention_forward(const Tensor& out, const Tensor& att, const Tensor& qkv, int n_head) = 0;
  virtual void attention_backward(const Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& att,
                                  int n_head) = 0;
  virtual void gelu_forward(const Tensor& out, const Tensor& inp) = 0;
  virtual void gelu_backward(const Tensor& dinp, const Tensor& inp, const Tensor& dout) = 0;
  virtual void residual_forward(const Tensor& out, const Tensor& a, const Tensor& b) = 0;
  // logits/probs [N,Vp]; the first V columns are real, the rest vocabulary padding.
  virtual void crossentropy_forward(const Tensor& losses, const Tensor& probs, const Tensor& logits,
                                    const Tensor& targets, int V) = 0;
  virtual void crossentropy_backward(const Tensor& dlogits, const Tensor& probs, const Tensor& targets,
                                     float dloss, int V) = 0;
  // p, m, v fp32; g in the compute dtype (multiplied by grad_scale, then zeroed).
  virtual void adamw_update(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, float lr,
                            float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                            int step) = 0;
  virtual double sum_squares(const Tensor& x) = 0;

  // ---- defaults: overridden by device backends ----------------------------------------------

  // The dtype of activations, gradients and the weights the ops read.
  virtual DType compute_dtype() const { return DType::F32; }
  // A linear layer with the elementwise op after it fused into the GEMM's epilogue, so the
  // activation does not make a round trip through memory. The defaults run the two ops (what
  // the CPU uses: fusing them into its GEMM's tiles measured slower than a separate pass over
  // the L2-resident activation).
  //   pre = inp W^T + bias, out = gelu(pre)   (pre is what gelu_backward reads)
  virtual void matmul_forward_gelu(const Tensor& pre, const Tensor& out, const Tensor& inp, const Tensor& w,
                                   const Tensor& bias);
  //   out = residual + inp W^T + bias         (the block's residual adds)
  virtual void matmul_forward_residual(const Tensor& out, const Tensor& inp, const Tensor& w, const Tensor& bias,
                                       const Tensor& residual);
  //   matmul_backward with dinp = gelu'(pre) * (dout W): the input gradient of gelu(pre) when
  //   inp = gelu(pre) (dinp may alias nothing else)
  virtual void matmul_backward_gelu(const Tensor& dinp, const Tensor& dw, const Tensor& dbias, const Tensor& dout,
                                    const Tensor& inp, const Tensor& w, const Tensor& pre);
  // What attention_forward saves for backward, for a [B,T,C] input of n_head heads. Default:
  // the probabilities [B,NH,T,T] fp32 (the CUDA flash kernels keep a log-sum-exp [B,NH,T]).
  virtual Tensor attention_state(int B, int n_head, int T, int C) const {
    return empty(DType::F32, {B, n_head, T, T});
  }
  // attention_backward with the forward's output `out` too (flash attention needs it).
  virtual void attention_backward_saved(const Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                        const Tensor& att, int n_head) {
    attention_backward(dqkv, dout, qkv, att, n_head);
  }
  // dst = src, converting between F32 and BF16 (same element count).
  virtual void convert(const Tensor& dst, const Tensor& src);
  // Uploads tokens [B,T] from the host; `vocab_size` bounds them. Device backends also prepare
  // what encoder_backward needs from the host copy here (no device-to-host read later).
  virtual void upload_tokens(const Tensor& dst, const int32_t* host, int vocab_size) { from_host(dst, host); }
  // Global-norm clipping without a host round trip: out [2] fp32 receives the L2 norm of
  // `grads` and the clip scale min(1, max_norm / (norm + 1e-6)) (1 when max_norm <= 0), as
  // torch.nn.utils.clip_grad_norm_.
  virtual void grad_norm_clip(const Tensor& out, const Tensor& grads, float max_norm);
  // adamw_update with the gradient scale read from a device scalar (grad_norm_clip's out[1]).
  virtual void adamw_update_clipped(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, float lr,
                                    float beta1, float beta2, float eps, float weight_decay, const Tensor& grad_scale,
                                    int step);

  // The tensor's values as floats on the host (F32 or BF16; waits for the device).
  std::vector<float> to_host_f32(const Tensor& t);
};

std::unique_ptr<Backend> make_cpu_backend();

// ---- Choosing a backend ---------------------------------------------------------------------

struct BackendOptions {
  Device device = Device::CPU;
  DType precision = DType::BF16;  // CUDA only: BF16 (mixed precision) or F32 (testing)
  std::string gemm = "mma";       // CUDA only: "mma" (hand-written), "mma.sync", "wgmma" or "cublas" (the baseline)
  std::string attention = "auto";  // CUDA only: flash attention "auto" (wgmma on Hopper), "mma.sync" or "wgmma"
  int device_index = 0;           // CUDA only
};
// The backend for `opt`; a UserError when it cannot be made (e.g. no CUDA device).
std::unique_ptr<Backend> make_backend(const BackendOptions& opt);

// Whether this binary has CUDA and this machine a usable device (driver included). When not,
// `why` (if given) says why in a few words, e.g. "no CUDA driver (CUDA driver version is
// insufficient for CUDA runtime version)" or "this build has no CUDA".
bool cuda_available(std::string* why = nullptr);

// fp32 -> bf16 on the host (round to nearest even; NaN stays NaN). The way back is
// safetensors.h's bf16_to_f32.
uint16_t f32_to_bf16(float f);

}  // namespace lt
