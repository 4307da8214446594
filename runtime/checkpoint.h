// Checkpoints: a directory per step holding the model in Hugging Face GPT-2 layout
// (model.safetensors + config.json), the AdamW moments, and the trainer's state with checksums.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/model.h"
#include "runtime/optim.h"

namespace lt {

// Writes <run_dir>/checkpoints/step-NNNNNNNN/ (N = trainer_state["step"], 8 digits):
//   model.safetensors      HF names and layouts (Conv1D weights [in,out], wte unpadded [V,C])
//   config.json            a GPT2Config that transformers' GPT2LMHeadModel.from_pretrained reads
//   optimizer.safetensors  "adamw.m" and "adamw.v" in our flat padded layout, metadata "step"
//   trainer.json           trainer_state plus "files": {name: sha256} of the three files above
// Built in a temporary sibling directory, fsynced, then renamed into place; re-saving a step
// swaps the new directory in so a complete checkpoint exists at every moment. On failure only
// the temporary directory is removed and the exception propagates. Returns the final path.
std::string save_checkpoint(const std::string& run_dir, const GPT& model, const AdamW& opt,
                            const nlohmann::json& trainer_state);

// Given a checkpoint directory (has trainer.json or model.safetensors): that directory. Given
// a run directory: its newest complete checkpoints/step-* (one with trainer.json), ignoring
// temporary directories. "" when there is none.
std::string latest_checkpoint(const std::string& run_dir_or_ckpt_dir);

// The model shape from <ckpt_dir>/config.json; also accepts Hugging Face's own gpt2 configs.
GPTConfig read_checkpoint_config(const std::string& ckpt_dir);

// Loads <ckpt_dir>/model.safetensors into model.params(), checking its sha256 against
// trainer.json when there is one. Accepts names with or without "transformer.", ignores HF's
// attention-mask buffers and the tied lm_head.weight, widens F16/BF16 to f32, and zero-fills
// the vocabulary padding rows. Any missing tensor or shape mismatch is a UserError.
void load_model_weights(const std::string& ckpt_dir, GPT& model);

// Loads the AdamW moments and step count (after checking checksums) and returns the trainer
// state saved with them, without the "files" map.
nlohmann::json load_training_state(const std::string& ckpt_dir, AdamW& opt);

}  // namespace lt
