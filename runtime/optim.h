// AdamW with PyTorch's semantics over the model's flat parameters, the learning-rate
// schedule (linear warm-up, cosine decay to a floor) and global-norm gradient clipping.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/model.h"

namespace lt {

struct AdamWConfig {
  float lr = 1e-3f;
  float min_lr = 1e-4f;  // the cosine floor
  int warmup_steps = 0;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0.1f;  // decoupled; applied to 2-D tensors only
  float grad_clip = 1.0f;     // max global L2 norm; <= 0 disables clipping
};

// lr at step (0-based) of total_steps: linear warm-up from lr/warmup to lr, cosine to min_lr.
float lr_at(const AdamWConfig& cfg, int64_t step, int64_t total_steps);

// A range of the flat parameter buffer.
struct FlatRange {
  int64_t offset = 0, numel = 0;
};

class AdamW {
 public:
  // Moments for every parameter.
  AdamW(const AdamWConfig& cfg, GPT& model);
  // Moments for every parameter in host memory whatever the model's backend: a staging
  // optimizer to read a checkpoint into, then load_state_from() into the real one.
  struct HostMoments {};
  AdamW(const AdamWConfig& cfg, GPT& model, HostMoments);
  // ZeRO-1: moments only for `shard`, ranges of the flat buffer (padding past num_params
  // allowed), stored back to back in that order. update() steps only those elements.
  AdamW(const AdamWConfig& cfg, GPT& model, std::vector<FlatRange> shard);
  const AdamWConfig& config() const { return cfg_; }
  // Clips by global norm, takes one step at learning rate lr, and zeroes the gradients.
  // Returns the gradient norm before clipping. Not for a sharded optimizer (its norm spans ranks).
  // The norm and clip scale stay on the device until every update is queued; reading the
  // norm back is the only wait.
  float step(float lr);
  // The sum of squared gradients this optimizer steps (all of them, or the shard's).
  double grad_sum_squares() const;
  // One step with the global gradient norm given: clip, update, zero the gradients stepped.
  void update(float lr, float grad_norm);
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  // Copies the moments and step count of `other` (same layout, moments in host memory).
  void load_state_from(const AdamW& other);
  // Full: flat, same layout as GPT::params(). Sharded: the shard's ranges back to back.
  const Tensor& m() const { return m_; }
  const Tensor& v() const { return v_; }
  bool sharded() const { return sharded_; }
  const std::vector<FlatRange>& shard() const { return shard_; }

 private:
  AdamWConfig cfg_;
  GPT* model_;
  Tensor m_, v_;
  Tensor clip_;  // [norm, clip scale] on the model's device (step())
  int64_t t_ = 0;
  bool sharded_ = false;
  std::vector<FlatRange> shard_;
};

}  // namespace lt
