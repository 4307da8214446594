// The Backend interface's default ops (built from the required ones, as the CPU backend needs
// them), the backend factory, and host bf16 conversions.
#include "runtime/backend.h"

#include <cmath>
#include <cstring>

#include "runtime/error.h"
#include "runtime/safetensors.h"

#ifdef LEASETRAIN_HAVE_CUDA
#include "runtime/cuda_backend.h"
#endif

namespace lt {

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if (std::isnan(f)) return (uint16_t)((u >> 16) | 0x40);  // keep it a (quiet) NaN
  u += 0x7fff + ((u >> 16) & 1);                          // round to nearest, ties to even
  return (uint16_t)(u >> 16);
}

std::vector<float> Backend::to_host_f32(const Tensor& t) {
  std::vector<float> out((size_t)t.numel());
  if (t.dtype == DType::F32) {
    to_host(out.data(), t);
  } else {
    LT_CHECK(t.dtype == DType::BF16, std::string("to_host_f32: a ") + to_string(t.dtype) + " tensor");
    std::vector<uint16_t> raw((size_t)t.numel());
    to_host(raw.data(), t);
    for (size_t i = 0; i < raw.size(); i++) out[i] = bf16_to_f32(raw[i]);
  }
  return out;
}

void Backend::convert(const Tensor& dst, const Tensor& src) {
  LT_CHECK(dst.numel() == src.numel(), "convert: element counts differ");
  const std::vector<float> v = to_host_f32(src);
  if (dst.dtype == DType::F32) {
    from_host(dst, v.data());
    return;
  }
  LT_CHECK(dst.dtype == DType::BF16, std::string("convert: to ") + to_string(dst.dtype));
  std::vector<uint16_t> raw(v.size());
  for (size_t i = 0; i < v.size(); i++) raw[i] = f32_to_bf16(v[i]);
  from_host(dst, raw.data());
}

void Backend::matmul_forward_gelu(const Tensor& pre, const Tensor& out, const Tensor& inp, const Tensor& w,
                                  const Tensor& bias) {
  matmul_forward(pre, inp, w, bias);
  gelu_forward(out, pre);
}

void Backend::matmul_forward_residual(const Tensor& out, const Tensor& inp, const Tensor& w, const Tensor& bias,
                                      const Tensor& residual) {
  matmul_forward(out, inp, w, bias);
  residual_forward(out, residual, out);  // elementwise: in place is fine
}

void Backend::matmul_backward_gelu(const Tensor& dinp, const Tensor& dw, const Tensor& dbias, const Tensor& dout,
                                   const Tensor& inp, const Tensor& w, const Tensor& pre) {
  matmul_backward(dinp, dw, dbias, dout, inp, w);
  gelu_backward(dinp, pre, dinp);  // elementwise: in place is fine
}

void Backend::grad_norm_clip(const Tensor& out, const Tensor& grads, float max_norm) {
  const float norm = (float)std::sqrt(sum_squares(grads));
  const float scale = max_norm > 0.f ? std::fmin(1.f, max_norm / (norm + 1e-6f)) : 1.f;
  const float host[2] = {norm, scale};
  from_host(out, host);
}

void Backend::adamw_update_clipped(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, float lr,
                                   float beta1, float beta2, float eps, float weight_decay, const Tensor& grad_scale,
                                   int step) {
  float scale = 1.f;
  to_host(&scale, grad_scale);
  adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, scale, step);
}

std::unique_ptr<Backend> make_backend(const BackendOptions& opt) {
  if (opt.device == Device::CPU) return make_cpu_backend();
#ifdef LEASETRAIN_HAVE_CUDA
  CudaBackendOptions c;
  c.device_index = opt.device_index;
  c.precision = opt.precision;
  c.gemm = opt.gemm;
  c.attention = opt.attention;
  return make_cuda_backend(c);
#else
  throw UserError("--device cuda: this build has no CUDA (the CUDA toolkit was not found when it was configured)");
#endif
}

#ifndef LEASETRAIN_HAVE_CUDA
bool cuda_available(std::string* why) {
  if (why) *why = "this build has no CUDA";
  return false;
}
#endif

}  // namespace lt
