// AdamW, the learning-rate schedule and gradient clipping (see optim.h).
#include "runtime/optim.h"

#include <cmath>

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

float AdamW::step(float lr) {
  Backend& be = model_->backend();
  const float norm = (float)std::sqrt(be.sum_squares(model_->grads()));
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6), never above 1.
  float scale = 1.f;
  if (cfg_.grad_clip > 0.f) scale = std::fmin(1.f, cfg_.grad_clip / (norm + 1e-6f));
  ++t_;
  for (const ParamInfo& p : model_->param_info()) {
    auto view = [&](const Tensor& t) { return t.view(p.offset, {p.numel}); };
    be.adamw_update(view(model_->params()), view(model_->grads()), view(m_), view(v_), lr, cfg_.beta1,
                    cfg_.beta2, cfg_.eps, p.decay ? cfg_.weight_decay : 0.f, scale, (int)t_);
  }
  return norm;
}

}  // namespace lt
