// The CPU backend: the Backend interface over the reference ops in kernels/cpu.
#include <cstring>

#include "kernels/cpu/ops.h"
#include "runtime/backend.h"
#include "runtime/error.h"

namespace lt {
namespace {

float* f(const Tensor& t) { return t.buf ? t.f32() : nullptr; }
const int32_t* i32(const Tensor& t) { return t.data<int32_t>(); }
int rows(const Tensor& t) { return (int)(t.numel() / t.dim(-1)); }

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::CPU; }
  std::string name() const override { return "cpu"; }
  void fill_zero(const Tensor& t) override { std::memset(t.raw(), 0, t.nbytes()); }
  void to_host(void* dst, const Tensor& src) override { std::memcpy(dst, src.raw(), src.nbytes()); }
  void from_host(const Tensor& dst, const void* src) override { std::memcpy(dst.raw(), src, dst.nbytes()); }

  void encoder_forward(const Tensor& out, const Tensor& tokens, const Tensor& wte, const Tensor& wpe) override {
    cpu::encoder_forward(f(out), i32(tokens), f(wte), f(wpe), tokens.dim(0), tokens.dim(1), wte.dim(1));
  }
  void encoder_backward(const Tensor& dwte, const Tensor& dwpe, const Tensor& dout, const Tensor& tokens) override {
    cpu::encoder_backward(f(dwte), f(dwpe), f(dout), i32(tokens), tokens.dim(0), tokens.dim(1), dwte.dim(1));
  }
  void layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& inp,
                         const Tensor& w, const Tensor& b) override {
    cpu::layernorm_forward(f(out), f(mean), f(rstd), f(inp), f(w), f(b), rows(inp), inp.dim(-1));
  }
  void layernorm_backward(const Tensor& dinp, const Tensor& dw, const Tensor& db, const Tensor& dout,
                          const Tensor& inp, const Tensor& w, const Tensor& mean, const Tensor& rstd) override {
    cpu::layernorm_backward(f(dinp), f(dw), f(db), f(dout), f(inp), f(w), f(mean), f(rstd), rows(inp),
                            inp.dim(-1));
  }
  void matmul_forward(const Tensor& out, const Tensor& inp, const Tensor& w, const Tensor& bias) override {
    cpu::matmul_forward(f(out), f(inp), f(w), f(bias), rows(inp), inp.dim(-1), w.dim(0));
  }
  void matmul_backward(const Tensor& dinp, const Tensor& dw, const Tensor& dbias, const Tensor& dout,
                       const Tensor& inp, const Tensor& w) override {
    cpu::matmul_backward(f(dinp), f(dw), f(dbias), f(dout), f(inp), f(w), rows(inp), inp.dim(-1), w.dim(0));
  }
  void attention_forward(const Tensor& out, const Tensor& att, const Tensor& qkv, int n_head) override {
    cpu::attention_forward(f(out), f(att), f(qkv), qkv.dim(0), qkv.dim(1), out.dim(-1), n_head);
  }
  void attention_backward(const Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& att,
                          int n_head) override {
    cpu::attention_backward(f(dqkv), f(dout), f(qkv), f(att), qkv.dim(0), qkv.dim(1), dout.dim(-1), n_head);
  }
  void gelu_forward(const Tensor& out, const Tensor& inp) override { cpu::gelu_forward(f(out), f(inp), inp.numel()); }
  void gelu_backward(const Tensor& dinp, const Tensor& inp, const Tensor& dout) override {
    cpu::gelu_backward(f(dinp), f(inp), f(dout), inp.numel());
  }
  void residual_forward(const Tensor& out, const Tensor& a, const Tensor& b) override {
    cpu::residual_forward(f(out), f(a), f(b), a.numel());
  }
  void crossentropy_forward(const Tensor& losses, const Tensor& probs, const Tensor& logits, const Tensor& targets,
                            int V) override {
    cpu::crossentropy_forward(f(losses), f(probs), f(logits), i32(targets), rows(logits), V, logits.dim(-1));
  }
  void crossentropy_backward(const Tensor& dlogits, const Tensor& probs, const Tensor& targets, float dloss,
                             int V) override {
    cpu::crossentropy_backward(f(dlogits), f(probs), i32(targets), dloss, rows(probs), V, probs.dim(-1));
  }
  void adamw_update(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, float lr, float beta1,
                    float beta2, float eps, float weight_decay, float grad_scale, int step) override {
    cpu::adamw_update(f(p), f(g), f(m), f(v), p.numel(), lr, beta1, beta2, eps, weight_decay, grad_scale, step);
  }
  double sum_squares(const Tensor& x) override { return cpu::sum_squares(f(x), x.numel()); }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace lt
