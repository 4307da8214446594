// The GPT-2 model: parameters, gradients and activations in flat buffers on one backend,
// forward (loss) and backward written once against the Backend op interface.
//
// Precision follows the backend's compute_dtype(): params() are always the fp32 master
// weights (what the optimizer steps, checkpoints save and data parallelism broadcasts);
// grads() and every activation are compute_dtype() tensors. When that is not fp32 (bf16 on
// CUDA), forward() first refreshes a compute_dtype() copy of the weights from params(), and
// the ops read that copy, so anything that writes params() (a checkpoint load, a broadcast,
// the optimizer) takes effect at the next forward.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/backend.h"

namespace lt {

// The largest shapes any config (TOML or a checkpoint's config.json) may declare. Token ids are
// uint16, so no vocabulary exceeds 65536. These bound the types, not the machine: what it cannot
// hold is refused by the memory estimate (memory.h) before anything is allocated.
inline constexpr int kMaxLayers = 1 << 30, kMaxHeads = 1024, kMaxEmbd = 65536, kMaxBlockSize = 1 << 20,
                     kMaxVocab = 65536;

struct GPTConfig {
  int n_layer = 4;
  int n_head = 4;
  int n_embd = 128;
  int block_size = 128;  // context length (n_positions)
  int vocab_size = 256;  // real vocabulary; the embedding is padded to padded_vocab() rows
  int padded_vocab() const { return (vocab_size + 63) / 64 * 64; }
  bool operator==(const GPTConfig&) const = default;
};

// One parameter tensor inside the flat parameter buffer.
struct ParamInfo {
  std::string name;            // Hugging Face GPT-2 name, e.g. "h.0.attn.c_attn.weight"
  std::vector<int64_t> shape;  // our layout; linear weights are [out, in]
  int64_t offset = 0;          // elements into the flat buffer
  int64_t numel = 0;
  bool hf_transposed = false;  // HF stores this weight as [in, out] (Conv1D)
  bool decay = false;          // weight decay applies (2-D tensors only)
  int layer = -1;              // transformer block index, -1 for embeddings and ln_f
};

// UserError unless every shape is positive, within the limits above, and n_embd a multiple of
// n_head (what GPT's constructor checks first).
void check_gpt_config(const GPTConfig& cfg);
// The flat parameter buffer's layout for a config, without allocating it: what GPT holds as
// param_info(), and what plan_buckets and the step-time model (benchmarks/predict.h) read.
std::vector<ParamInfo> gpt_param_layout(const GPTConfig& cfg);
// GPT::flops_per_step without a model instance.
double gpt_flops_per_step(const GPTConfig& cfg, int B, int T);

class GPT {
 public:
  GPT(const GPTConfig& cfg, Backend& backend);

  const GPTConfig& config() const { return cfg_; }
  Backend& backend() const { return *be_; }
  const std::vector<ParamInfo>& param_info() const { return infos_; }
  int64_t num_params() const { return n_params_; }  // includes vocabulary padding rows
  const Tensor& params() const { return params_; }  // flat [num_params] fp32 master weights
  const Tensor& grads() const { return grads_; }    // flat [num_params] compute dtype, accumulated by backward
  Tensor param(const std::string& name) const;      // a view into params()
  Tensor grad(const std::string& name) const;
  // The weights the ops read: params() itself in fp32, else the compute-dtype copy.
  const Tensor& compute_params() const { return wparams_; }

  // GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer),
  // biases 0, LayerNorm weights 1. Deterministic in seed.
  void init_weights(uint64_t seed);

  // Runs the forward pass on tokens [B,T] (host int32) and returns the mean loss against
  // targets [B,T]; with targets == nullptr only logits are computed (see logits()).
  float forward(const int32_t* tokens, const int32_t* targets, int B, int T);
  // forward() with targets that leaves the loss on the device: nothing waits for the device
  // here. take_losses() then returns the mean loss of every forward_async() since its last
  // call, in order (one wait, at the end of the training step).
  void forward_async(const int32_t* tokens, const int32_t* targets, int B, int T);
  std::vector<float> take_losses();
  // Backpropagates the last forward's loss, ACCUMULATING into grads() with the mean loss
  // scaled by loss_scale (1/grad_accum for accumulation).
  void backward(float loss_scale = 1.f);
  // After forward(): logits [B,T,padded_vocab] (probabilities after a forward with targets).
  const Tensor& logits() const { return logits_; }
  // After forward() with targets: per-position losses [B,T].
  const Tensor& losses() const { return losses_; }

  // Called by backward() each time a contiguous range of gradients is final, i.e. nothing
  // later in this backward writes it: ln_f first, then layer L-1 .. 0, then wte and wpe
  // together (wte also gets the lm-head gradient at the start). Ranges arrive in
  // decreasing offset order and together cover [0, num_params). Data parallelism starts a
  // bucket's reduction from here. On a device backend "final" means "queued".
  using GradReadyHook = std::function<void(int64_t offset, int64_t numel)>;
  void set_grad_ready_hook(GradReadyHook hook) { grad_hook_ = std::move(hook); }

  // Grows the flat parameter and gradient buffers to `elems` elements (>= num_params);
  // elements past num_params are zero padding that nothing here reads or writes (ZeRO-1
  // pads its shards there). params() and grads() still span num_params.
  void reserve_flat(int64_t elems);
  int64_t flat_capacity() const { return (int64_t)(params_.buf->bytes() / sizeof(float)); }

  // FLOPs of one forward+backward on B x T tokens: 6*N_matmul*tokens + attention's
  // 6*L*T*C*tokens (llm.c's causal-halved count).
  double flops_per_step(int B, int T) const;

 private:
  void ensure_activations(int B, int T);
  void run_forward(const int32_t* tokens, const int32_t* targets, int B, int T, const Tensor& losses);
  float mean_loss(const Tensor& losses);

  GPTConfig cfg_;
  Backend* be_;
  DType cdt_;  // the backend's compute dtype
  std::vector<ParamInfo> infos_;
  int64_t n_params_ = 0;
  Tensor params_, grads_;
  Tensor wparams_;  // the weights the ops read: params_ (fp32) or its compute-dtype copy

  // Activations for the current (B, T), see ensure_activations for shapes.
  int B_ = 0, T_ = 0;
  Tensor tokens_, targets_;
  Tensor encoded_;                 // [B,T,C]
  std::vector<Tensor> ln1_, ln1_mean_, ln1_rstd_, qkv_, atty_, att_, res2_, ln2_, ln2_mean_, ln2_rstd_,
      fch_, fch_gelu_, res3_;
  Tensor lnf_, lnf_mean_, lnf_rstd_, logits_, losses_;
  Tensor sync_losses_;                 // forward()'s losses [B,T]
  std::vector<Tensor> async_losses_;   // forward_async()'s, one [B,T] per call until take_losses()
  size_t pending_losses_ = 0;
  // Gradient scratch, reused by every layer.
  Tensor dres_, dln_, dqkv_, datty_, dfch_;
  bool have_targets_ = false;
  GradReadyHook grad_hook_;
};

}  // namespace lt
