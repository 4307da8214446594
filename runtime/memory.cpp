// The memory estimate and check (see memory.h). The formula mirrors what GPT, AdamW and
// GPT::ensure_activations allocate; keep them in step when either changes.
#include "runtime/memory.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "runtime/error.h"

namespace lt {

namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

uint64_t mul(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_mul_overflow(a, b, &r) ? kMax : r;
}
uint64_t add(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_add_overflow(a, b, &r) ? kMax : r;
}
uint64_t pos(int64_t v) { return v > 0 ? (uint64_t)v : 0; }

// Parameter elements, as GPT's constructor lays them out:
//   wte [Vp, C] + wpe [block, C] + L x (12 C^2 + 13 C) + ln_f 2C,
// where a layer holds ln_1 (2C), c_attn (3C^2 + 3C), attn c_proj (C^2 + C), ln_2 (2C),
// c_fc (4C^2 + 4C) and mlp c_proj (4C^2 + C).
uint64_t param_count(const GPTConfig& c) {
  const uint64_t C = pos(c.n_embd), L = pos(c.n_layer);
  const uint64_t Vp = (pos(c.vocab_size) + 63) / 64 * 64;
  uint64_t n = add(mul(Vp, C), mul(pos(c.block_size), C));
  n = add(n, mul(L, add(mul(12, mul(C, C)), mul(13, C))));
  return add(n, mul(2, C));
}

}  // namespace

uint64_t activation_bytes(const GPTConfig& c, int64_t B, int64_t T, int64_t micro_steps, Device device,
                          DType compute) {
  const uint64_t C = pos(c.n_embd), L = pos(c.n_layer), NH = pos(c.n_head);
  const uint64_t Vp = (pos(c.vocab_size) + 63) / 64 * 64;
  const uint64_t tokens = mul(pos(B), pos(T));
  const uint64_t cdt = dtype_size(compute);
  // Per token, in the compute dtype: per layer ln1 C, qkv 3C, atty C, res2 C, ln2 C, fch 4C,
  // fch_gelu 4C, res3 C (16C); once: encoded, lnf, dres, dln, datty C each, dqkv 3C, dfch 4C
  // (12C) and the logits Vp.
  const uint64_t wide = mul(cdt, add(add(mul(L, mul(16, C)), mul(12, C)), Vp));
  // Per token, fp32: per layer the two LayerNorms' mean and rstd (4) and the attention state,
  // which the CPU keeps as probabilities (NH x T per token: B x NH x T x T) and CUDA's flash
  // kernels as a log-sum-exp (NH per token); once ln_f's mean and rstd (2) and the losses of
  // every micro-step until the step ends (1 each); plus int32 tokens and targets (2).
  const uint64_t att = device == Device::CPU ? mul(NH, pos(T)) : NH;
  const uint64_t narrow = mul(4, add(add(mul(L, add(4, att)), 2), add(pos(micro_steps), 2)));
  return mul(tokens, add(wide, narrow));
}

MemoryEstimate estimate_memory(const GPTConfig& c, const MemoryPlan& p) {
  MemoryEstimate e;
  const uint64_t P = param_count(c);
  const uint64_t cdt = dtype_size(p.compute);
  e.params = P;
  // fp32 master weights (4P), plus a compute-dtype copy the ops read when that is not fp32.
  e.weights = add(mul(4, P), p.compute == DType::F32 ? 0 : mul(cdt, P));
  e.grads = mul(cdt, P);
  // AdamW's first and second moments, fp32 (8P); the full set is the upper bound of ZeRO-1's shard.
  e.optimizer = p.training ? mul(8, P) : 0;
  e.activations = activation_bytes(c, p.batch, p.seq, p.micro_steps, p.device, p.compute);
  // init_weights and the checkpoint loader build the weights in a host vector first (4P).
  e.staging = mul(4, P);
  const uint64_t model = add(add(add(e.weights, e.grads), e.optimizer), e.activations);
  if (p.device == Device::CPU) {
    e.host = add(add(model, e.staging), p.extra_host_bytes);
  } else {
    e.device = model;  // each rank has a device of its own
    e.host = add(e.staging, p.extra_host_bytes);
  }
  e.host = mul(e.host, pos(std::max<int64_t>(p.host_ranks, 1)));
  return e;
}

std::optional<uint64_t> host_memory_available() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (f >> key >> kb) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return mul(kb, 1024);
  }
  return std::nullopt;
}

std::optional<uint64_t> device_memory_available(int /*device_index*/) { return std::nullopt; }

std::string format_bytes(uint64_t b) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = (double)b;
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[48];
  if (b == kMax) return "more than 16 EiB";
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

void require_memory(uint64_t bytes, Device device, int device_index, const std::string& what,
                    const std::string& detail) {
  const bool host = device == Device::CPU;
  const std::optional<uint64_t> avail = host ? host_memory_available() : device_memory_available(device_index);
  // A saturated estimate is refused even when the free memory is unknown: no machine holds it.
  if (bytes != kMax && (!avail || bytes <= *avail)) return;
  std::string msg = what + " needs about " + format_bytes(bytes) + " of " +
                    (host ? std::string("host") : "device " + std::to_string(device_index)) + " memory";
  if (!detail.empty()) msg += " (" + detail + ")";
  if (avail) msg += ", but " + format_bytes(*avail) + " is available" + (host ? " (MemAvailable in /proc/meminfo)" : "");
  throw UserError(msg);
}

void check_model_memory(const GPTConfig& c, const MemoryPlan& p, const std::string& what, int device_index) {
  const MemoryEstimate e = estimate_memory(c, p);
  std::ostringstream d;
  if (p.host_ranks > 1) d << p.host_ranks << " ranks on this host, each with ";
  d << "model n_layer " << c.n_layer << ", n_head " << c.n_head << ", n_embd " << c.n_embd << ", block_size "
    << c.block_size << ", vocab_size " << c.vocab_size << ": " << e.params << " parameters; batch "
    << p.batch << " x " << p.seq << " tokens; weights " << format_bytes(e.weights) << ", gradients "
    << format_bytes(e.grads);
  if (p.training) d << ", AdamW " << format_bytes(e.optimizer);
  d << ", activations " << format_bytes(e.activations) << ", staging " << format_bytes(e.staging);
  require_memory(e.host, Device::CPU, 0, what, d.str());
  if (p.device != Device::CPU) require_memory(e.device, p.device, device_index, what, d.str());
}

}  // namespace lt
