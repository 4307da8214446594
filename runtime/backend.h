// The op interface: every op of the training step, on Tensors that live on the backend's
// device. The model (model.h) is written once against it; the CPU backend runs the reference
// ops in kernels/cpu, the CUDA backend (later) runs kernels/cuda.
#pragma once
#include <memory>

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
  virtual void adamw_update(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, float lr,
                            float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                            int step) = 0;
  virtual double sum_squares(const Tensor& x) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace lt
