// GPT-2 forward and backward over the Backend op interface (see model.h for the layout).
#include "runtime/model.h"

#include <cmath>
#include <vector>

#include "runtime/error.h"
#include "runtime/memory.h"
#include "runtime/rng.h"

namespace lt {

namespace {
// Per-layer parameter tensors, in storage order. Grouping by layer (not by kind, as llm.c
// does) keeps each block's gradients contiguous, which is what gradient buckets want.
enum LayerParam { LN1W, LN1B, QKVW, QKVB, PROJW, PROJB, LN2W, LN2B, FCW, FCB, FCPW, FCPB, kPerLayer };
}  // namespace

void check_gpt_config(const GPTConfig& cfg) {
  if (cfg.n_layer < 1 || cfg.n_head < 1 || cfg.n_embd < 1 || cfg.block_size < 1 || cfg.vocab_size < 1 ||
      cfg.n_layer > kMaxLayers || cfg.n_head > kMaxHeads || cfg.n_embd > kMaxEmbd || cfg.block_size > kMaxBlockSize ||
      cfg.vocab_size > kMaxVocab || cfg.n_embd % cfg.n_head != 0)
    throw UserError("model: n_layer, n_head, n_embd, block_size, vocab_size must be positive and within the limits "
                    "of runtime/model.h, and n_embd a multiple of n_head");
}

std::vector<ParamInfo> gpt_param_layout(const GPTConfig& cfg) {
  const int64_t C = cfg.n_embd, L = cfg.n_layer;
  std::vector<ParamInfo> out;
  int64_t n = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool transposed, int layer) {
    ParamInfo p;
    p.name = std::move(name);
    p.shape = std::move(shape);
    p.numel = 1;
    for (int64_t s : p.shape) p.numel *= s;
    p.offset = n;
    p.hf_transposed = transposed;
    p.decay = p.shape.size() == 2;
    p.layer = layer;
    n += p.numel;
    out.push_back(std::move(p));
  };
  add("wte.weight", {cfg.padded_vocab(), C}, false, -1);
  add("wpe.weight", {cfg.block_size, C}, false, -1);
  for (int l = 0; l < L; l++) {
    const std::string h = "h." + std::to_string(l) + ".";
    add(h + "ln_1.weight", {C}, false, l);
    add(h + "ln_1.bias", {C}, false, l);
    add(h + "attn.c_attn.weight", {3 * C, C}, true, l);
    add(h + "attn.c_attn.bias", {3 * C}, false, l);
    add(h + "attn.c_proj.weight", {C, C}, true, l);
    add(h + "attn.c_proj.bias", {C}, false, l);
    add(h + "ln_2.weight", {C}, false, l);
    add(h + "ln_2.bias", {C}, false, l);
    add(h + "mlp.c_fc.weight", {4 * C, C}, true, l);
    add(h + "mlp.c_fc.bias", {4 * C}, false, l);
    add(h + "mlp.c_proj.weight", {C, 4 * C}, true, l);
    add(h + "mlp.c_proj.bias", {C}, false, l);
  }
  add("ln_f.weight", {C}, false, -1);
  add("ln_f.bias", {C}, false, -1);
  return out;
}

GPT::GPT(const GPTConfig& cfg, Backend& backend) : cfg_(cfg), be_(&backend), cdt_(backend.compute_dtype()) {
  check_gpt_config(cfg);
  // Callers check the whole job up front (check_model_memory); this catches any other path to
  // a model too large for the machine before the allocation aborts.
  {
    MemoryPlan plan;
    plan.batch = 0;
    plan.device = backend.device();
    plan.compute = cdt_;
    const MemoryEstimate e = estimate_memory(cfg, plan);
    require_memory(plan.device == Device::CPU ? e.host : e.device, plan.device, 0, "the model",
                   std::to_string(e.params) + " parameters");
  }
  infos_ = gpt_param_layout(cfg);
  n_params_ = infos_.back().offset + infos_.back().numel;
  params_ = be_->zeros(DType::F32, {n_params_});
  grads_ = be_->zeros(cdt_, {n_params_});
  wparams_ = cdt_ == DType::F32 ? params_ : be_->zeros(cdt_, {n_params_});
}

Tensor GPT::param(const std::string& name) const {
  for (const ParamInfo& p : infos_)
    if (p.name == name) return params_.view(p.offset, p.shape);
  LT_CHECK(false, "no parameter " + name);
}

Tensor GPT::grad(const std::string& name) const {
  for (const ParamInfo& p : infos_)
    if (p.name == name) return grads_.view(p.offset, p.shape);
  LT_CHECK(false, "no parameter " + name);
}

void GPT::reserve_flat(int64_t elems) {
  if (elems <= flat_capacity()) return;
  const bool aliased = wparams_.buf == params_.buf;
  for (Tensor* t : {&params_, &grads_, &wparams_}) {
    if (t == &wparams_ && aliased) continue;
    Tensor bigger = be_->zeros(t->dtype, {elems});
    std::vector<unsigned char> host(t->nbytes());
    be_->to_host(host.data(), *t);
    Tensor view = bigger.view(0, {n_params_});
    be_->from_host(view, host.data());
    *t = view;
  }
  if (aliased) wparams_ = params_;
}

void GPT::init_weights(uint64_t seed) {
  Rng rng(seed);
  std::vector<float> host(n_params_, 0.f);
  const double proj_std = 0.02 / std::sqrt(2.0 * cfg_.n_layer);
  for (const ParamInfo& p : infos_) {
    float* w = host.data() + p.offset;
    const bool is_weight = p.name.ends_with(".weight");
    if (p.name.find("ln_") != std::string::npos) {
      for (int64_t i = 0; i < p.numel; i++) w[i] = is_weight ? 1.f : 0.f;
    } else if (is_weight) {
      const bool residual_proj = p.name.ends_with("c_proj.weight");
      const double std = residual_proj ? proj_std : 0.02;
      // wte: only the real vocabulary rows; padding rows stay zero forever.
      const int64_t n = p.name == "wte.weight" ? (int64_t)cfg_.vocab_size * cfg_.n_embd : p.numel;
      for (int64_t i = 0; i < n; i++) w[i] = (float)(rng.normal() * std);
    }
  }
  be_->from_host(params_, host.data());
  be_->fill_zero(grads_);
}

void GPT::ensure_activations(int B, int T) {
  if (B == B_ && T == T_) return;
  const int64_t C = cfg_.n_embd, L = cfg_.n_layer, NH = cfg_.n_head;
  LT_CHECK(pending_losses_ == 0, "the batch shape changed before take_losses()");
  require_memory(activation_bytes(cfg_, B, T, 1, be_->device(), cdt_), be_->device(), 0,
                 "activations for a batch of " + std::to_string(B) + " x " + std::to_string(T) + " tokens");
  auto act = [&](int64_t width) { return be_->empty(cdt_, {B, T, width}); };
  auto stat = [&]() { return be_->empty(DType::F32, {(int64_t)B * T}); };
  tokens_ = be_->empty(DType::I32, {B, T});
  targets_ = be_->empty(DType::I32, {B, T});
  encoded_ = act(C);
  for (auto* v : {&ln1_, &ln1_mean_, &ln1_rstd_, &qkv_, &atty_, &att_, &res2_, &ln2_, &ln2_mean_, &ln2_rstd_,
                  &fch_, &fch_gelu_, &res3_})
    v->assign(L, Tensor{});
  for (int64_t l = 0; l < L; l++) {
    ln1_[l] = act(C);
    ln1_mean_[l] = stat();
    ln1_rstd_[l] = stat();
    qkv_[l] = act(3 * C);
    atty_[l] = act(C);
    att_[l] = be_->attention_state(B, (int)NH, T, (int)C);
    res2_[l] = act(C);
    ln2_[l] = act(C);
    ln2_mean_[l] = stat();
    ln2_rstd_[l] = stat();
    fch_[l] = act(4 * C);
    fch_gelu_[l] = act(4 * C);
    res3_[l] = act(C);
  }
  lnf_ = act(C);
  lnf_mean_ = stat();
  lnf_rstd_ = stat();
  logits_ = act(cfg_.padded_vocab());
  sync_losses_ = be_->empty(DType::F32, {B, T});
  async_losses_.clear();
  losses_ = sync_losses_;
  dres_ = act(C);
  dln_ = act(C);
  dqkv_ = act(3 * C);
  datty_ = act(C);
  dfch_ = act(4 * C);
  B_ = B;
  T_ = T;
}

float GPT::forward(const int32_t* tokens, const int32_t* targets, int B, int T) {
  LT_CHECK(B > 0 && T > 0 && T <= cfg_.block_size, "sequence length exceeds the context");
  ensure_activations(B, T);
  run_forward(tokens, targets, B, T, sync_losses_);
  return targets ? mean_loss(sync_losses_) : NAN;
}

void GPT::forward_async(const int32_t* tokens, const int32_t* targets, int B, int T) {
  LT_CHECK(B > 0 && T > 0 && T <= cfg_.block_size, "sequence length exceeds the context");
  LT_CHECK(targets != nullptr, "forward_async needs targets");
  ensure_activations(B, T);
  if (pending_losses_ == async_losses_.size()) async_losses_.push_back(be_->empty(DType::F32, {B, T}));
  run_forward(tokens, targets, B, T, async_losses_[pending_losses_++]);
}

std::vector<float> GPT::take_losses() {
  std::vector<float> out;
  for (size_t i = 0; i < pending_losses_; i++) out.push_back(mean_loss(async_losses_[i]));
  pending_losses_ = 0;
  return out;
}

float GPT::mean_loss(const Tensor& losses) {
  std::vector<float> host((size_t)losses.numel());
  be_->to_host(host.data(), losses);
  double sum = 0.0;
  for (float v : host) sum += v;
  return (float)(sum / (double)losses.numel());
}

void GPT::run_forward(const int32_t* tokens, const int32_t* targets, int B, int T, const Tensor& losses) {
  Backend& be = *be_;
  if (wparams_.buf != params_.buf) be.convert(wparams_, params_);  // the compute copy of the weights
  be.upload_tokens(tokens_, tokens, cfg_.vocab_size);
  const int L = cfg_.n_layer, NH = cfg_.n_head;
  auto P = [&](int l, int k) {
    const ParamInfo& p = infos_[2 + l * kPerLayer + k];
    return wparams_.view(p.offset, p.shape);
  };
  auto W = [&](int i) { return wparams_.view(infos_[i].offset, infos_[i].shape); };  // by index in infos_
  const int lnf_w = 2 + L * kPerLayer, lnf_b = lnf_w + 1;
  const Tensor wte = W(0), wpe = W(1);
  be.encoder_forward(encoded_, tokens_, wte, wpe);
  Tensor x = encoded_;
  for (int l = 0; l < L; l++) {
    be.layernorm_forward(ln1_[l], ln1_mean_[l], ln1_rstd_[l], x, P(l, LN1W), P(l, LN1B));
    be.matmul_forward(qkv_[l], ln1_[l], P(l, QKVW), P(l, QKVB));
    be.attention_forward(atty_[l], att_[l], qkv_[l], NH);
    be.matmul_forward_residual(res2_[l], atty_[l], P(l, PROJW), P(l, PROJB), x);
    be.layernorm_forward(ln2_[l], ln2_mean_[l], ln2_rstd_[l], res2_[l], P(l, LN2W), P(l, LN2B));
    be.matmul_forward_gelu(fch_[l], fch_gelu_[l], ln2_[l], P(l, FCW), P(l, FCB));
    be.matmul_forward_residual(res3_[l], fch_gelu_[l], P(l, FCPW), P(l, FCPB), res2_[l]);
    x = res3_[l];
  }
  be.layernorm_forward(lnf_, lnf_mean_, lnf_rstd_, x, W(lnf_w), W(lnf_b));
  be.matmul_forward(logits_, lnf_, wte, Tensor{});
  have_targets_ = targets != nullptr;
  if (!have_targets_) return;
  be.from_host(targets_, targets);
  losses_ = losses;
  be.crossentropy_forward(losses_, logits_, logits_, targets_, cfg_.vocab_size);
}

void GPT::backward(float loss_scale) {
  LT_CHECK(have_targets_, "backward() needs a forward() with targets");
  Backend& be = *be_;
  const int L = cfg_.n_layer, NH = cfg_.n_head;
  auto P = [&](int l, int k) {
    const ParamInfo& p = infos_[2 + l * kPerLayer + k];
    return wparams_.view(p.offset, p.shape);
  };
  auto G = [&](int l, int k) {
    const ParamInfo& p = infos_[2 + l * kPerLayer + k];
    return grads_.view(p.offset, p.shape);
  };
  const int lnf_w = 2 + L * kPerLayer;
  const Tensor wte = wparams_.view(infos_[0].offset, infos_[0].shape);
  const Tensor lnf_weight = wparams_.view(infos_[lnf_w].offset, infos_[lnf_w].shape);
  const float dloss = loss_scale / (float)((int64_t)B_ * T_);
  // logits_ holds the probabilities; the logits' gradient overwrites them in place.
  be.crossentropy_backward(logits_, logits_, targets_, dloss, cfg_.vocab_size);
  be.matmul_backward(dln_, grad("wte.weight"), Tensor{}, logits_, lnf_, wte);
  be.fill_zero(dres_);
  be.layernorm_backward(dres_, grad("ln_f.weight"), grad("ln_f.bias"), dln_, res3_[L - 1], lnf_weight, lnf_mean_,
                        lnf_rstd_);
  const int64_t lnf_offset = infos_[2 + L * kPerLayer].offset;
  if (grad_hook_) grad_hook_(lnf_offset, n_params_ - lnf_offset);
  // dres_ carries the residual stream's gradient down the layers; layernorm_backward adds to it.
  for (int l = L - 1; l >= 0; l--) {
    const Tensor& x = l == 0 ? encoded_ : res3_[l - 1];
    be.matmul_backward_gelu(dfch_, G(l, FCPW), G(l, FCPB), dres_, fch_gelu_[l], P(l, FCPW), fch_[l]);
    be.matmul_backward(dln_, G(l, FCW), G(l, FCB), dfch_, ln2_[l], P(l, FCW));
    be.layernorm_backward(dres_, G(l, LN2W), G(l, LN2B), dln_, res2_[l], P(l, LN2W), ln2_mean_[l], ln2_rstd_[l]);
    be.matmul_backward(datty_, G(l, PROJW), G(l, PROJB), dres_, atty_[l], P(l, PROJW));
    be.attention_backward_saved(dqkv_, datty_, qkv_[l], atty_[l], att_[l], NH);
    be.matmul_backward(dln_, G(l, QKVW), G(l, QKVB), dqkv_, ln1_[l], P(l, QKVW));
    be.layernorm_backward(dres_, G(l, LN1W), G(l, LN1B), dln_, x, P(l, LN1W), ln1_mean_[l], ln1_rstd_[l]);
    if (grad_hook_) {
      const int64_t lo = infos_[2 + l * kPerLayer].offset, hi = infos_[2 + (l + 1) * kPerLayer].offset;
      grad_hook_(lo, hi - lo);
    }
  }
  be.encoder_backward(grad("wte.weight"), grad("wpe.weight"), dres_, tokens_);
  if (grad_hook_) grad_hook_(0, infos_[2].offset);
  have_targets_ = false;  // the probabilities are gone
}

double GPT::flops_per_step(int B, int T) const {
  // llm.c's count: 6 FLOPs per parameter per token (forward 2 + backward 4) plus the
  // attention scores and weighted sums, 6*L*C*T per token with the causal mask's halving.
  return gpt_flops_per_step(cfg_, B, T);
}

double gpt_flops_per_step(const GPTConfig& cfg, int B, int T) {
  const std::vector<ParamInfo> layout = gpt_param_layout(cfg);
  const double n = (double)(layout.back().offset + layout.back().numel) -
                   (double)(cfg.padded_vocab() - cfg.vocab_size) * cfg.n_embd;
  const double per_token = 6.0 * n + 6.0 * cfg.n_layer * cfg.n_embd * (double)T;
  return per_token * B * T;
}

}  // namespace lt
