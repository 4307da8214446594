// AdamW, the learning-rate schedule and gradient clipping (see optim.h).
#include "runtime/optim.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/error.h"

namespace lt {

float lr_at(const AdamWConfig& cfg, int64_t step, int64_t total_steps) {
  if (step < cfg.warmup_steps) return cfg.lr * (float)(step + 1) / (float)cfg.warmup_steps;
  // Steps run 0 .. total_steps-1, so the last one lands exactly on min_lr.
  const int64_t decay_steps = total_steps - 1 - cfg.warmup_steps;
  double progress = decay_steps > 0 ? (double)(step - cfg.warmup_steps) / (double)decay_steps : 1.0;
  if (progress > 1.0) progress = 1.0;
  double coeff = 0.5 * (1.0 + std::cos(M_PI * progress));
  return (float)(cfg.min_lr + coeff * (cfg.lr - cfg.min_lr));
}

AdamW::AdamW(const AdamWConfig& cfg, GPT& model) : cfg_(cfg), model_(&model) {
  Backend& be = model.backend();
  m_ = be.zeros(DType::F32, {model.num_params()});
  v_ = be.zeros(DType::F32, {model.num_params()});
}

AdamW::AdamW(const AdamWConfig& cfg, GPT& model, HostMoments) : cfg_(cfg), model_(&model) {
  m_ = Tensor::zeros(Device::CPU, DType::F32, {model.num_params()});
  v_ = Tensor::zeros(Device::CPU, DType::F32, {model.num_params()});
}

void AdamW::load_state_from(const AdamW& other) {
  LT_CHECK(other.m_.device() == Device::CPU, "load_state_from: the source's moments must be in host memory");
  LT_CHECK(other.m_.numel() == m_.numel() && other.v_.numel() == v_.numel() && other.sharded_ == sharded_,
           "load_state_from: different layouts");
  Backend& be = model_->backend();
  if (m_.device() == Device::CPU) {
    std::memcpy(m_.raw(), other.m_.raw(), m_.nbytes());
    std::memcpy(v_.raw(), other.v_.raw(), v_.nbytes());
  } else {
    be.from_host(m_, other.m_.raw());
    be.from_host(v_, other.v_.raw());
  }
  t_ = other.t_;
}

AdamW::AdamW(const AdamWConfig& cfg, GPT& model, std::vector<FlatRange> shard)
    : cfg_(cfg), model_(&model), sharded_(true), shard_(std::move(shard)) {
  int64_t n = 0;
  for (const FlatRange& r : shard_) {
    LT_CHECK(r.offset >= 0 && r.numel >= 0 && r.offset + r.numel <= model.flat_capacity(),
             "shard range outside the flat buffer");
    n += r.numel;
  }
  Backend& be = model.backend();
  m_ = be.zeros(DType::F32, {std::max<int64_t>(n, 1)});
  v_ = be.zeros(DType::F32, {std::max<int64_t>(n, 1)});
}

float AdamW::step(float lr) {
  LT_CHECK(!sharded_, "a sharded AdamW needs the global gradient norm: use update()");
  Backend& be = model_->backend();
  // torch.nn.utils.clip_grad_norm_ on the device: clip_ = [norm, min(1, max_norm / (norm + 1e-6))].
  if (!clip_.buf) clip_ = be.zeros(DType::F32, {2});
  be.grad_norm_clip(clip_, model_->grads(), cfg_.grad_clip);
  ++t_;
  const Tensor scale = clip_.view(1, {1});
  for (const ParamInfo& p : model_->param_info()) {
    auto view = [&](const Tensor& t) { return t.view(p.offset, {p.numel}); };
    be.adamw_update_clipped(view(model_->params()), view(model_->grads()), view(m_), view(v_), lr, cfg_.beta1,
                            cfg_.beta2, cfg_.eps, p.decay ? cfg_.weight_decay : 0.f, scale, (int)t_);
  }
  float norm = 0.f;
  be.to_host(&norm, clip_.view(0, {1}));
  return norm;
}

double AdamW::grad_sum_squares() const {
  Backend& be = model_->backend();
  if (!sharded_) return be.sum_squares(model_->grads());
  const Tensor all = model_->grads().view(0, {model_->flat_capacity()});
  double s = 0;
  for (const FlatRange& r : shard_)
    if (r.numel > 0) s += be.sum_squares(all.view(r.offset, {r.numel}));
  return s;
}

void AdamW::update(float lr, float norm) {
  Backend& be = model_->backend();
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6), never above 1.
  float scale = 1.f;
  if (cfg_.grad_clip > 0.f) scale = std::fmin(1.f, cfg_.grad_clip / (norm + 1e-6f));
  ++t_;
  if (!sharded_) {
    for (const ParamInfo& p : model_->param_info()) {
      auto view = [&](const Tensor& t) { return t.view(p.offset, {p.numel}); };
      be.adamw_update(view(model_->params()), view(model_->grads()), view(m_), view(v_), lr, cfg_.beta1,
                      cfg_.beta2, cfg_.eps, p.decay ? cfg_.weight_decay : 0.f, scale, (int)t_);
    }
    return;
  }
  // The shard's pieces of each parameter, updated elementwise exactly as the full step would.
  int64_t local = 0;
  for (const FlatRange& r : shard_) {
    for (const ParamInfo& p : model_->param_info()) {
      const int64_t lo = std::max(r.offset, p.offset), hi = std::min(r.offset + r.numel, p.offset + p.numel);
      if (lo >= hi) continue;
      const int64_t n = hi - lo, at = local + (lo - r.offset);
      be.adamw_update(model_->params().view(lo, {n}), model_->grads().view(lo, {n}), m_.view(at, {n}),
                      v_.view(at, {n}), lr, cfg_.beta1, cfg_.beta2, cfg_.eps, p.decay ? cfg_.weight_decay : 0.f,
                      scale, (int)t_);
    }
    local += r.numel;
  }
}

}  // namespace lt
