// Checkpoints: a directory per step holding the model in Hugging Face GPT-2 layout
// (model.safetensors + config.json), the AdamW moments, and the trainer's state with checksums.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "runtime/model.h"
#include "runtime/optim.h"
#include "runtime/tokenizer.h"

namespace lt {

class WriteRoot;

// transformers' save_pretrained default max_shard_size ("50GB" since transformers 5; it was "5GB").
inline constexpr uint64_t kDefaultMaxShardBytes = 50'000'000'000ull;

// A shard size in Hugging Face's spellings: a byte count ("100000000") or a number with one of
// huggingface_hub's units KB, MB, GB, TB (powers of ten: "500MB" is 500,000,000 bytes; "1.5GB" is
// allowed). UserError naming `what` unless it is a positive size.
uint64_t parse_shard_size(const std::string& text, const std::string& what);

// Writes <run_dir>/checkpoints/step-NNNNNNNN/ (N = trainer_state["step"], 8 digits):
//   model.safetensors      HF names and layouts (Conv1D weights [in,out], wte unpadded [V,C]);
//                          when the weights exceed `max_shard_bytes`, instead the shards
//                          model-00001-of-0000N.safetensors and model.safetensors.index.json,
//                          split as transformers' save_pretrained splits them (see checkpoint.cpp)
//   config.json            a GPT2Config that transformers' GPT2LMHeadModel.from_pretrained reads
//   optimizer.safetensors  "adamw.m" and "adamw.v" in our flat padded layout, metadata "step"
//   tokenizer.json         when `tokenizer` is given: the run's tokenizer, with tokenizer_config.json
//                          and generation_config.json (bos/eos: its <|endoftext|>, or null) for
//                          transformers' AutoTokenizer and pipeline; config.json's bos/eos agree
//   trainer.json           trainer_state plus "files": {name: sha256} of every file above
//   trainer.json.sha256    the seal, written last: trainer.json's SHA-256 in sha256sum's format
// Built in a temporary sibling directory (.tmp-step-N-PID), fsynced, then renamed into place;
// re-saving a step swaps the new directory in so a complete checkpoint exists at every moment.
// Every path is resolved beneath `root` (safe_path.h: no symlink leads a write elsewhere) and
// every write is checked: a failure removes only the temporary directory and throws (IoError
// for the disk's troubles, UserError for the user's). Returns the final path. `before_seal`, when
// given, is called once every file but the seal is durable (tests kill a save there).
std::string save_checkpoint(const WriteRoot& root, const GPT& model, const AdamW& opt,
                            const nlohmann::json& trainer_state, const std::function<void()>& before_seal = {},
                            uint64_t max_shard_bytes = kDefaultMaxShardBytes, const Tokenizer* tokenizer = nullptr);
// The same with `run_dir` opened as the root.
std::string save_checkpoint(const std::string& run_dir, const GPT& model, const AdamW& opt,
                            const nlohmann::json& trainer_state, uint64_t max_shard_bytes = kDefaultMaxShardBytes);

// A checkpoint is complete and trusted only when sealed: trainer.json.sha256 matches trainer.json,
// trainer.json's fields have their types, and its step is the directory's step-NNNNNNNN.
// Checkpoints written before seals existed have none and are refused (the error says how to seal
// one by hand after checking it); nothing converts them silently.
struct CheckpointSearch {
  std::string path;                  // the newest sealed checkpoint; "" when none
  std::vector<std::string> skipped;  // one line per newer step-* directory passed over, and why
  std::string legacy;                // the newest unsealed step-* with trainer.json passed over
};
// Given a checkpoint directory (has trainer.json, model.safetensors or model.safetensors.index.json):
// that directory (the loaders check its seal). Given a run directory or its checkpoints/: the newest sealed
// checkpoints/step-*, never a temporary (.tmp-*) or set-aside (.old-*) directory.
CheckpointSearch find_checkpoint(const std::string& run_dir_or_ckpt_dir);
std::string latest_checkpoint(const std::string& run_dir_or_ckpt_dir);  // find_checkpoint().path
// find_checkpoint().path, or a UserError saying why there is none: no checkpoint at all (naming
// what was expected), weights in a format we do not read (pytorch_model.bin is a pickle: it says
// how to convert it), an unsealed (pre-seal) one and how to accept it, or the first reason one
// did not verify.
std::string require_checkpoint(const std::string& run_dir_or_ckpt_dir);
// UserError, one line, unless `ckpt_dir` is sealed as above (for a legacy checkpoint it says how
// to seal one by hand).
void verify_checkpoint(const std::string& ckpt_dir);

// The checkpoint's tokenizer.json (checked against the seal in a checkpoint of ours; a bare
// Hugging Face export's as it is), or nullopt when it has none.
std::optional<Tokenizer> read_checkpoint_tokenizer(const std::string& ckpt_dir);

// The model shape from <ckpt_dir>/config.json; also accepts Hugging Face's own gpt2 configs.
// Keys that change what the model computes are refused in one line (scale_attn_weights false,
// scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn, n_inner, untied embeddings, ...).
GPTConfig read_checkpoint_config(const std::string& ckpt_dir);

// One line warning that config.json asks for dropout (resid_pdrop, embd_pdrop, attn_pdrop above
// zero), which leasetrain does not apply when it trains; "" when it asks for none.
std::string checkpoint_dropout_warning(const std::string& ckpt_dir);

// Loads <ckpt_dir>/model.safetensors, or the shards model.safetensors.index.json names, into
// model.params(), checking the seal and every file's sha256 against trainer.json when there is one
// (a bare Hugging Face export has none). The index is checked whole: every shard a plain file name
// in the directory (no '/', no '..', no symbolic link), every tensor in exactly one shard, each
// shard holding exactly the tensors the index assigns it, metadata.total_size (when given) the sum
// of the tensors' bytes. The weight files are opened beneath ckpt_dir without following a link. A NaN or Inf
// weight is a UserError naming the file and tensor. Accepts names with or without "transformer.", ignores HF's
// attention-mask buffers and the tied lm_head.weight, widens F16/BF16 to f32, and zero-fills
// the vocabulary padding rows. Any missing tensor or shape mismatch is a UserError.
void load_model_weights(const std::string& ckpt_dir, GPT& model);

// Loads the AdamW moments and step count (after checking the seal and checksums; NaN, Inf or a
// negative second moment is a UserError naming the tensor) and returns the trainer state saved
// with them, without the "files" map. Its "step" is validated; the caller validates the rest.
nlohmann::json load_training_state(const std::string& ckpt_dir, AdamW& opt);

}  // namespace lt
