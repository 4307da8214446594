// Saving and loading checkpoint directories (see checkpoint.h): HF GPT-2 layout conversion,
// durable writes (fsync + rename), checksums, and finding the newest complete checkpoint.
#include "runtime/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/safe_path.h"
#include "runtime/safetensors.h"
#include "runtime/sha256.h"

namespace lt {
namespace fs = std::filesystem;

namespace {

constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kConfigFile = "config.json";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kTrainerFile = "trainer.json";
constexpr const char* kSealFile = "trainer.json.sha256";
// The tokenizer files a checkpoint carries when its run knew its tokenizer (tokenizer_files()).
constexpr const char* kTokenizerFile = "tokenizer.json";
constexpr const char* kTokenizerConfigFile = "tokenizer_config.json";
constexpr const char* kGenerationConfigFile = "generation_config.json";
// Larger steps cannot be a real run; the bound keeps every step arithmetic far from overflow.
constexpr int64_t kMaxStep = int64_t(1) << 53;

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", (long long)step);
  return buf;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string config_string(const GPTConfig& c) {
  return "n_layer=" + std::to_string(c.n_layer) + " n_head=" + std::to_string(c.n_head) +
         " n_embd=" + std::to_string(c.n_embd) + " n_positions=" + std::to_string(c.block_size) +
         " vocab_size=" + std::to_string(c.vocab_size);
}

// Checkpoint JSON is untrusted (a checkpoint may come from anywhere): read it through the
// validated reader (regular file, bounded size and nesting).
nlohmann::json read_json_file(const fs::path& path) { return lt::read_json_file(path.string(), "checkpoint file"); }

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// Whether anything is at `p` (not following a final symlink). Files that are present are then
// opened through the validated reader, which names a FIFO, a directory or a device as such
// instead of calling it missing or skipping it.
bool present(const fs::path& p) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(p, ec));
}

// The tensor's shape as Hugging Face stores it: Conv1D weights transposed to [in, out], and
// the embedding without our vocabulary padding rows.
std::vector<int64_t> hf_shape(const ParamInfo& p, const GPTConfig& cfg) {
  if (p.name == "wte.weight") return {cfg.vocab_size, p.shape[1]};
  if (p.hf_transposed) {
    LT_CHECK(p.shape.size() == 2, p.name + " is marked transposed but is not 2-D");
    return {p.shape[1], p.shape[0]};
  }
  return p.shape;
}

// dst[c][r] = src[r][c] for a rows x cols src. Blocked so both sides stay in cache.
void transpose(float* dst, const float* src, int64_t rows, int64_t cols) {
  constexpr int64_t kB = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kB)
    for (int64_t c0 = 0; c0 < cols; c0 += kB)
      for (int64_t r = r0; r < std::min(rows, r0 + kB); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + kB); ++c) dst[c * rows + r] = src[r * cols + c];
}

// Older HF exports (the original gpt2 files among them) saved the causal-mask buffers
// "h.N.attn.bias" and "h.N.attn.masked_bias" alongside the weights; they are not parameters.
bool is_hf_buffer(const std::string& name) {
  if (!name.starts_with("h.")) return false;
  size_t i = 2;
  while (i < name.size() && std::isdigit((unsigned char)name[i])) ++i;
  if (i == 2) return false;
  const std::string rest = name.substr(i);
  return rest == ".attn.bias" || rest == ".attn.masked_bias";
}

// The step NNNNNNNN of a directory named step-NNNNNNNN; nullopt for any other name.
std::optional<int64_t> dir_step(const fs::path& dir) {
  std::string fname = dir.filename().string();
  if (fname.empty()) fname = dir.parent_path().filename().string();  // "step-00000010/"
  if (!fname.starts_with("step-") || fname.size() == 5 || fname.size() > 5 + 18) return std::nullopt;
  int64_t step = 0;
  auto [end, err] = std::from_chars(fname.data() + 5, fname.data() + fname.size(), step);
  if (err != std::errc() || end != fname.data() + fname.size() || step < 0) return std::nullopt;
  return step;
}

// trainer.json of a checkpoint, trusted only when sealed: trainer.json.sha256 (written last,
// after everything else is durable) holds its SHA-256, its fields have their types, and its step
// is the directory's. Every other file is then checked against trainer.json's "files".
struct Sealed {
  nlohmann::json trainer;
  std::map<std::string, std::string> files;
};

// Why the checkpoint `dir` cannot be trusted ("" when it can); fills *out when it can.
// *legacy is set when it has trainer.json but no seal: written before checkpoints were sealed.
std::string seal_problem(const fs::path& dir, Sealed* out, bool* legacy = nullptr) {
  const fs::path trainer_path = dir / kTrainerFile, seal_path = dir / kSealFile;
  if (!present(seal_path)) {
    if (present(trainer_path)) {
      if (legacy) *legacy = true;
      return seal_path.string() + ": missing, so trainer.json is not covered by a checksum (a checkpoint written "
                                  "before checkpoints were sealed, or a damaged one)";
    }
    return trainer_path.string() + ": missing (an unfinished or damaged checkpoint)";
  }
  try {
    const std::string seal = read_regular_file(seal_path.string(), "checkpoint seal", 4096);
    // sha256sum's format, so `sha256sum -c trainer.json.sha256` checks it by hand too.
    const std::string want = seal.substr(0, std::min<size_t>(64, seal.size()));
    if (seal != want + "  " + kTrainerFile + "\n" ||
        !std::all_of(want.begin(), want.end(), [](char c) { return std::isxdigit((unsigned char)c) && !std::isupper((unsigned char)c); }) ||
        want.size() != 64)
      return seal_path.string() + ": expected one line '<64 hex digits>  trainer.json'";
    const std::string text = read_regular_file(trainer_path.string(), "checkpoint trainer state");
    const std::string got = sha256_hex(text);
    if (got != want)
      return trainer_path.string() + ": checksum mismatch (trainer.json.sha256 says " + want + ", got " + got + ")";
    Sealed s;
    s.trainer = parse_json(text, trainer_path.string());
    const JsonFields f(s.trainer, trainer_path.string());
    const int64_t step = f.integer("step", 0, kMaxStep);
    if (const std::optional<int64_t> named = dir_step(dir); named && *named != step)
      return trainer_path.string() + ": field 'step' is " + std::to_string(step) + " but the directory is " +
             dir.filename().string();
    const JsonFields files = f.object("files");
    for (const char* name : {kModelFile, kConfigFile, kOptimizerFile}) {
      const std::string h = files.string(name);
      if (h.size() != 64) files.fail(name, "a SHA-256 (64 hex digits)");
      s.files[name] = h;
    }
    // Nothing in a checkpoint goes unchecked: the files it vouches for are exactly ours, and the
    // fields only recorded for people (seed, total_steps) still have their types.
    for (const char* name : {kTokenizerFile, kTokenizerConfigFile, kGenerationConfigFile})
      if (files.has(name)) {
        const std::string h = files.string(name);
        if (h.size() != 64) files.fail(name, "a SHA-256 (64 hex digits)");
        s.files[name] = h;
      }
    for (const auto& [name, _] : files.json().items())
      if (!s.files.count(name))
        files.fail(name, "absent (a checkpoint lists model.safetensors, config.json, optimizer.safetensors and "
                         "optionally tokenizer.json, tokenizer_config.json and generation_config.json)");
    f.opt_integer("seed", 0, std::numeric_limits<int64_t>::max());
    f.opt_integer("total_steps", 0, kMaxStep);
    f.opt_string("init");
    f.opt_integer("world", 1, 1 << 24);
    f.opt_integer("global_batch", 1, int64_t(1) << 40);  // sequences per step, kept across resumes
    f.opt_integer("micro_batch", 1, 1 << 20);
    f.opt_integer("eval_rows", 1, int64_t(1) << 30);
    if (out) *out = std::move(s);
    return "";
  } catch (const UserError& e) {
    return e.what();
  }
}

Sealed read_sealed(const fs::path& dir) {
  Sealed s;
  bool legacy = false;
  const std::string problem = seal_problem(dir, &s, &legacy);
  if (problem.empty()) return s;
  if (legacy)
    throw UserError(problem + "; leasetrain trusts only sealed checkpoints: check the files against trainer.json's "
                              "\"files\" and seal it with 'sha256sum trainer.json > trainer.json.sha256' in " +
                    dir.string() + " to use it");
  throw UserError(problem);
}

// Checks one file against the sha256 recorded in the sealed trainer.json.
void verify_checksum(const fs::path& dir, const Sealed& sealed, const std::string& file) {
  const std::string& want = sealed.files.at(file);
  // Regular files only: hashing a FIFO planted in its place would block forever.
  ::close(open_regular_file((dir / file).string(), "checkpoint file"));
  const std::string got = sha256_file((dir / file).string());
  if (got != want)
    throw UserError((dir / file).string() + ": checksum mismatch (expected " + want + ", got " + got + ")");
}

// One line naming the first NaN or Inf in a tensor just read: such a checkpoint would train or
// evaluate to garbage that looks like a result.
void require_finite(const float* v, int64_t n, const std::string& file, const std::string& tensor) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i]))
      throw UserError(file + ": tensor '" + tensor + "' holds " + (std::isnan(v[i]) ? "NaN" : "Inf") + " at index " +
                      std::to_string(i) + "; the checkpoint is unusable (resume from an earlier one)");
}

nlohmann::ordered_json make_hf_config(const GPTConfig& c) {
  // Ordered so the file reads like the gpt2 configs on the Hugging Face Hub.
  return nlohmann::ordered_json{
      {"model_type", "gpt2"},
      {"architectures", {"GPT2LMHeadModel"}},
      {"n_embd", c.n_embd},
      {"n_layer", c.n_layer},
      {"n_head", c.n_head},
      {"n_positions", c.block_size},
      {"n_ctx", c.block_size},
      {"vocab_size", c.vocab_size},
      {"n_inner", nullptr},  // HF's default of 4 * n_embd, which is what the model uses
      {"activation_function", "gelu_new"},
      {"layer_norm_epsilon", 1e-5},
      {"tie_word_embeddings", true},
      {"resid_pdrop", 0.0},
      {"embd_pdrop", 0.0},
      {"attn_pdrop", 0.0},
      {"torch_dtype", "float32"},
  };
}

// write_safetensors takes a path; it is given /proc/self/fd/N of a file this process created
// beneath the checkpoint's directory fd (O_EXCL, no links), so the path cannot lead elsewhere.
// Its errors are rethrown naming the real file, as an IoError when the disk is at fault.
void write_safetensors_at(int dirfd, const fs::path& shown, const char* name, const std::vector<StEntry>& entries,
                          const std::map<std::string, std::string>& metadata) {
  Fd f(::openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (f.get() < 0) throw_write_error(shown.string(), "cannot create", errno);
  const std::string proc = "/proc/self/fd/" + std::to_string(f.get());
  try {
    write_safetensors(proc, entries, metadata);
  } catch (const UserError& e) {
    std::string msg = e.what();
    if (msg.starts_with(proc)) msg = shown.string() + msg.substr(proc.size());
    for (int err : {ENOSPC, EIO, EFBIG, EDQUOT})
      if (msg.ends_with(std::string("(") + std::strerror(err) + ")")) throw IoError(msg);
    throw UserError(msg);
  }
  f.close_checked(shown.string());
}

void write_model_file(int dirfd, const fs::path& shown, const GPT& model) {
  const GPTConfig& cfg = model.config();
  std::vector<float> host((size_t)model.num_params());
  model.backend().to_host(host.data(), model.params());

  std::vector<std::vector<float>> transposed;  // owns the HF-layout copies until the write
  transposed.reserve(model.param_info().size());
  std::vector<StEntry> entries;
  for (const ParamInfo& p : model.param_info()) {
    // wte's real rows are a prefix of its padded rows, so its plain pointer already works.
    StEntry e{p.name, StDType::F32, hf_shape(p, cfg), host.data() + p.offset};
    if (p.hf_transposed) {
      transposed.emplace_back((size_t)p.numel);
      transpose(transposed.back().data(), host.data() + p.offset, p.shape[0], p.shape[1]);
      e.data = transposed.back().data();
    }
    entries.push_back(std::move(e));
  }
  // transformers refuses safetensors files whose metadata lacks a recognised "format".
  write_safetensors_at(dirfd, shown, kModelFile, entries, {{"format", "pt"}});
}

void write_optimizer_file(int dirfd, const fs::path& shown, Backend& be, const AdamW& opt) {
  const size_t n = (size_t)opt.m().numel();
  std::vector<float> m(n), v(n);
  be.to_host(m.data(), opt.m());
  be.to_host(v.data(), opt.v());
  const std::vector<int64_t> shape = {(int64_t)n};
  write_safetensors_at(dirfd, shown, kOptimizerFile,
                       {{"adamw.m", StDType::F32, shape, m.data()}, {"adamw.v", StDType::F32, shape, v.data()}},
                       {{"step", std::to_string(opt.steps_taken())}});
}

void write_text_at(int dirfd, const fs::path& shown, const char* name, const std::string& text) {
  Fd f(::openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (f.get() < 0) throw_write_error(shown.string(), "cannot create", errno);
  write_all_or_throw(f.get(), text.data(), text.size(), shown.string(), true);
  f.close_checked(shown.string());
}

// The files that let transformers' AutoTokenizer and pipeline("text-generation") use the
// checkpoint: the run's tokenizer.json, a tokenizer_config.json naming the fast tokenizer class
// (so transformers does not assume GPT-2's own vocabulary and add its <|endoftext|>), and
// generation_config.json with bos and eos set to the tokenizer's end-of-text token, null where it
// has none. Returns {name: text}.
std::map<std::string, std::string> tokenizer_files(const Tokenizer& tok, const GPTConfig& c) {
  const std::optional<int32_t> eos = tok.eos_id();
  const nlohmann::ordered_json eos_id = eos ? nlohmann::ordered_json(*eos) : nlohmann::ordered_json(nullptr);
  const nlohmann::ordered_json eos_token = eos ? nlohmann::ordered_json("<|endoftext|>") : nlohmann::ordered_json(nullptr);
  const nlohmann::ordered_json tok_config = {
      {"tokenizer_class", "PreTrainedTokenizerFast"},
      {"model_max_length", c.block_size},
      {"bos_token", eos_token},
      {"eos_token", eos_token},
      {"unk_token", nullptr},
      {"pad_token", nullptr},
      // Decoding must give back the text exactly (GPT-2's own tokenizer does not clean up either).
      {"clean_up_tokenization_spaces", false},
  };
  const nlohmann::ordered_json gen_config = {{"bos_token_id", eos_id}, {"eos_token_id", eos_id}};
  return {{kTokenizerFile, tok.json_text()},
          {kTokenizerConfigFile, tok_config.dump(2) + "\n"},
          {kGenerationConfigFile, gen_config.dump(2) + "\n"}};
}

// Puts the finished directory `tmp` at `final_dir` (both beneath `root`). When `final_dir` exists
// (the same step saved again) the two are swapped atomically with renameat2(RENAME_EXCHANGE), so
// the step's name always points at a complete checkpoint; filesystems without it fall back to
// moving the old one aside first, leaving it complete under `.old-...` for the instant between
// renames (a later run removes such leftovers at its start).
void install_dir(const WriteRoot& root, const std::string& tmp, const std::string& final_dir) {
  const std::string parent = "checkpoints";
  if (!root.exists(final_dir)) {
    root.rename(tmp, final_dir);
    root.sync_dir(parent);
    return;
  }
  if (root.rename(tmp, final_dir, true)) {
    root.sync_dir(parent);
    root.remove_all(tmp);  // now the previous checkpoint; failing to delete it is harmless
    return;
  }
  const std::string aside =
      parent + "/.old-" + fs::path(final_dir).filename().string() + "-" + std::to_string(::getpid());
  root.remove_all(aside);
  root.rename(final_dir, aside);
  try {
    root.rename(tmp, final_dir);
  } catch (...) {
    try {
      root.rename(aside, final_dir);  // put the old one back
    } catch (...) {
    }
    throw;
  }
  root.sync_dir(parent);
  root.remove_all(aside);
}

// A model dimension from config.json, under `key` or HF's older `fallback` name, in [1, hi].
int config_int(const JsonFields& f, const char* key, const char* fallback, int hi) {
  const char* name = !f.has(key) && fallback && f.has(fallback) ? fallback : key;
  return (int)f.integer(name, 1, hi);
}

}  // namespace

std::string save_checkpoint(const WriteRoot& root, const GPT& model, const AdamW& opt,
                            const nlohmann::json& trainer_state, const std::function<void()>& before_seal,
                            const Tokenizer* tokenizer) {
  LT_CHECK(trainer_state.is_object() && trainer_state.contains("step") &&
               trainer_state["step"].is_number_integer() && trainer_state["step"].get<int64_t>() >= 0 &&
               trainer_state["step"].get<int64_t>() <= kMaxStep,
           "trainer_state needs a non-negative integer \"step\"");
  const std::string name = step_dir_name(trainer_state["step"].get<int64_t>());
  const std::string final_dir = "checkpoints/" + name;
  const std::string tmp = "checkpoints/.tmp-" + name + "-" + std::to_string(::getpid());
  const fs::path shown = fs::path(root.display(tmp));

  const bool created = !root.exists("checkpoints");
  root.open_dir("checkpoints", true);
  if (created) root.sync_dir(".");  // make checkpoints/ itself durable
  // A leftover with our own pid can only be an earlier failed attempt of this process.
  root.remove_all(tmp);
  try {
    const Fd dir = root.open_dir(tmp, true);
    write_model_file(dir.get(), shown / kModelFile, model);
    nlohmann::ordered_json hf_config = make_hf_config(model.config());
    std::map<std::string, std::string> tok_files;
    if (tokenizer) {
      tok_files = tokenizer_files(*tokenizer, model.config());
      // GPT2Config's defaults (50256, GPT-2's end of text) would name a token this vocabulary lacks.
      const std::optional<int32_t> eos = tokenizer->eos_id();
      hf_config["bos_token_id"] = hf_config["eos_token_id"] = eos ? nlohmann::ordered_json(*eos) : nullptr;
    }
    const std::string config_text = hf_config.dump(2) + "\n";
    write_text_at(dir.get(), shown / kConfigFile, kConfigFile, config_text);
    write_optimizer_file(dir.get(), shown / kOptimizerFile, model.backend(), opt);

    nlohmann::json trainer = trainer_state;
    const std::string proc = "/proc/self/fd/" + std::to_string(dir.get()) + "/";
    trainer["files"] = {{kModelFile, sha256_file(proc + kModelFile)},
                        {kConfigFile, sha256_hex(config_text)},
                        {kOptimizerFile, sha256_file(proc + kOptimizerFile)}};
    for (const auto& [file, text] : tok_files) {
      write_text_at(dir.get(), shown / file, file.c_str(), text);
      trainer["files"][file] = sha256_hex(text);
    }
    const std::string trainer_text = trainer.dump(2) + "\n";
    write_text_at(dir.get(), shown / kTrainerFile, kTrainerFile, trainer_text);
    if (before_seal) before_seal();
    // The seal goes last, once everything it vouches for is durable: its presence, with a
    // matching trainer.json, is what marks a checkpoint complete.
    write_text_at(dir.get(), shown / kSealFile, kSealFile, sha256_hex(trainer_text) + "  " + kTrainerFile + "\n");
    if (::fsync(dir.get()) != 0) throw_write_error(shown.string(), "fsync failed", errno);
    install_dir(root, tmp, final_dir);
  } catch (...) {
    root.remove_all(tmp);
    throw;
  }
  return root.display(final_dir);
}

std::string save_checkpoint(const std::string& run_dir, const GPT& model, const AdamW& opt,
                            const nlohmann::json& trainer_state) {
  return save_checkpoint(WriteRoot(run_dir), model, opt, trainer_state);
}

CheckpointSearch find_checkpoint(const std::string& run_dir_or_ckpt_dir) {
  CheckpointSearch r;
  const fs::path p(run_dir_or_ckpt_dir);
  std::error_code ec;
  if (!fs::is_directory(p, ec)) return r;
  if (is_file(p / kTrainerFile) || is_file(p / kModelFile)) {
    r.path = p.string();  // a checkpoint directory names itself; its loader checks it
    return r;
  }
  // A run directory, or its checkpoints/ directory given directly.
  const fs::path dir = fs::is_directory(p / "checkpoints", ec) ? p / "checkpoints" : p;
  std::vector<std::pair<int64_t, fs::path>> steps;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    // Temporary (.tmp-step-*) and set-aside (.old-step-*) directories are never candidates.
    const std::optional<int64_t> step = dir_step(e.path());
    if (step && e.is_directory(ec) && !e.is_symlink(ec)) steps.emplace_back(*step, e.path());
  }
  std::sort(steps.begin(), steps.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [step, path] : steps) {
    bool legacy = false;
    const std::string problem = seal_problem(path, nullptr, &legacy);
    if (problem.empty()) {
      r.path = path.string();
      return r;
    }
    r.skipped.push_back(problem);
    if (legacy && r.legacy.empty()) r.legacy = path.string();
  }
  return r;
}

std::string latest_checkpoint(const std::string& run_dir_or_ckpt_dir) {
  return find_checkpoint(run_dir_or_ckpt_dir).path;
}

void verify_checkpoint(const std::string& ckpt_dir) { read_sealed(fs::path(ckpt_dir)); }

std::string require_checkpoint(const std::string& run_dir_or_ckpt_dir) {
  const CheckpointSearch s = find_checkpoint(run_dir_or_ckpt_dir);
  if (!s.legacy.empty()) verify_checkpoint(s.legacy);
  if (!s.path.empty()) return s.path;
  if (!s.skipped.empty()) throw UserError(run_dir_or_ckpt_dir + ": no checkpoint verifies (" + s.skipped.front() + ")");
  throw UserError(run_dir_or_ckpt_dir + ": no checkpoint (expected model.safetensors and config.json)");
}

std::optional<Tokenizer> read_checkpoint_tokenizer(const std::string& ckpt_dir) {
  const fs::path dir(ckpt_dir), path = dir / kTokenizerFile;
  if (present(dir / kTrainerFile)) {
    const Sealed sealed = read_sealed(dir);
    if (!sealed.files.count(kTokenizerFile)) return std::nullopt;  // a run that knew no tokenizer
    verify_checksum(dir, sealed, kTokenizerFile);
  } else if (!present(path)) {
    return std::nullopt;
  }
  return Tokenizer::from_file(path.string());
}

GPTConfig read_checkpoint_config(const std::string& ckpt_dir) {
  const fs::path path = fs::path(ckpt_dir) / kConfigFile;
  if (!present(path)) throw UserError(path.string() + ": missing (not a checkpoint directory?)");
  const nlohmann::json j = read_json_file(path);
  const JsonFields f(j, path.string());
  auto check_string = [&](const char* key, std::initializer_list<const char*> allowed) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    for (const char* a : allowed)
      if (it->is_string() && it->get<std::string>() == a) return;
    std::string want;
    for (const char* a : allowed) want += (want.empty() ? "\"" : " or \"") + std::string(a) + "\"";
    throw UserError(path.string() + ": key '" + key + "' is " + json_excerpt(*it) + ", expected " + want);
  };
  check_string("model_type", {"gpt2"});
  // Both names are the tanh-approximated GELU our kernels implement.
  check_string("activation_function", {"gelu_new", "gelu_pytorch_tanh"});

  GPTConfig c;
  c.n_layer = config_int(f, "n_layer", nullptr, kMaxLayers);
  c.n_head = config_int(f, "n_head", nullptr, kMaxHeads);
  c.n_embd = config_int(f, "n_embd", nullptr, kMaxEmbd);
  c.block_size = config_int(f, "n_positions", "n_ctx", kMaxBlockSize);
  c.vocab_size = config_int(f, "vocab_size", nullptr, kMaxVocab);
  if (c.n_embd % c.n_head != 0)
    throw UserError(path.string() + ": key 'n_head' (" + std::to_string(c.n_head) + ") must divide n_embd (" +
                    std::to_string(c.n_embd) + ")");

  // Options that change the architecture away from what the model computes.
  if (auto it = j.find("n_inner"); it != j.end() && !it->is_null() &&
                                   !(it->is_number_integer() && it->get<int64_t>() == 4 * (int64_t)c.n_embd))
    throw UserError(path.string() + ": key 'n_inner' is " + json_excerpt(*it) + ", expected null or " +
                    std::to_string(4 * c.n_embd));
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !(it->is_boolean() && it->get<bool>()))
    throw UserError(path.string() + ": key 'tie_word_embeddings' is " + json_excerpt(*it) + ", expected true");
  if (auto it = j.find("layer_norm_epsilon");
      it != j.end() && !(it->is_number() && std::fabs(it->get<double>() - 1e-5) <= 1e-12))
    throw UserError(path.string() + ": key 'layer_norm_epsilon' is " + json_excerpt(*it) + ", expected 1e-05");
  for (const char* key : {"scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"})
    if (auto it = j.find(key); it != j.end() && !(it->is_boolean() && !it->get<bool>()))
      throw UserError(path.string() + ": key '" + key + "' is " + json_excerpt(*it) + ", expected false");
  return c;
}

void load_model_weights(const std::string& ckpt_dir, GPT& model) {
  const fs::path dir(ckpt_dir);
  const fs::path path = dir / kModelFile;
  if (!present(path)) throw UserError(path.string() + ": missing");
  // A checkpoint of ours (it has trainer.json) is trusted only sealed; a bare export has none.
  if (present(dir / kTrainerFile) || present(dir / kSealFile)) {
    const Sealed sealed = read_sealed(dir);
    verify_checksum(dir, sealed, kConfigFile);  // it decides the model's shape
    verify_checksum(dir, sealed, kModelFile);
  }
  const GPTConfig& cfg = model.config();
  if (present(dir / kConfigFile)) {
    GPTConfig saved = read_checkpoint_config(ckpt_dir);
    if (!(saved == cfg))
      throw UserError((dir / kConfigFile).string() + ": checkpoint config (" + config_string(saved) +
                      ") does not match the model (" + config_string(cfg) + ")");
  }

  SafetensorsReader reader(path.string());
  std::map<std::string, const StTensorInfo*> by_name;  // our name (no "transformer.") -> tensor
  for (const StTensorInfo& t : reader.tensors()) {
    std::string name = t.name;
    if (name.starts_with("transformer.")) name = name.substr(12);
    if (name == "lm_head.weight" || is_hf_buffer(name)) continue;  // tied to wte / not parameters
    if (!by_name.emplace(name, &t).second)
      throw UserError(path.string() + ": tensor '" + t.name + "' appears twice (with and without 'transformer.')");
  }

  std::vector<float> host((size_t)model.num_params(), 0.f);  // zeros stay in wte's padding rows
  std::vector<float> scratch;
  for (const ParamInfo& p : model.param_info()) {
    const std::vector<int64_t> want = hf_shape(p, cfg);
    auto it = by_name.find(p.name);
    if (it == by_name.end())
      throw UserError(path.string() + ": missing tensor '" + p.name + "' (expected shape " + shape_string(want) + ")");
    const StTensorInfo& t = *it->second;
    if (t.shape != want)
      throw UserError(path.string() + ": tensor '" + t.name + "' has shape " + t.shape_str() + ", expected " +
                      shape_string(want));
    if (p.hf_transposed) {
      scratch.resize((size_t)t.numel());
      reader.read_f32(t, scratch.data());
      require_finite(scratch.data(), t.numel(), path.string(), t.name);
      transpose(host.data() + p.offset, scratch.data(), want[0], want[1]);
    } else {
      reader.read_f32(t, host.data() + p.offset);
      require_finite(host.data() + p.offset, t.numel(), path.string(), t.name);
    }
    by_name.erase(it);
  }
  if (!by_name.empty())
    throw UserError(path.string() + ": unexpected tensor '" + by_name.begin()->second->name +
                    "' (not a GPT-2 parameter)");
  model.backend().from_host(model.params(), host.data());
}

nlohmann::json load_training_state(const std::string& ckpt_dir, AdamW& opt) {
  const fs::path dir(ckpt_dir);
  if (!is_file(dir / kTrainerFile))
    throw UserError((dir / kTrainerFile).string() + ": missing (weights-only checkpoints cannot resume training)");
  const Sealed sealed = read_sealed(dir);
  nlohmann::json state = sealed.trainer;
  // model.safetensors is verified by load_model_weights, which reads it anyway.
  verify_checksum(dir, sealed, kConfigFile);
  verify_checksum(dir, sealed, kOptimizerFile);

  const fs::path path = dir / kOptimizerFile;
  SafetensorsReader reader(path.string());
  // Everything is validated before the optimizer is touched, so a bad file leaves it as it was.
  const std::vector<int64_t> want = {opt.m().numel()};
  const StTensorInfo* tensors[2];
  const char* names[2] = {"adamw.m", "adamw.v"};
  for (int i = 0; i < 2; ++i) {
    const StTensorInfo& t = reader.at(names[i]);
    if (t.dtype != StDType::F32)
      throw UserError(path.string() + ": tensor '" + t.name + "' has dtype " + to_string(t.dtype) + ", expected F32");
    if (t.shape != want)
      throw UserError(path.string() + ": tensor '" + t.name + "' has shape " + t.shape_str() + ", expected " +
                      shape_string(want) + " (the model's parameter count, padding included)");
    tensors[i] = &t;
  }
  int64_t step = -1;
  if (auto it = reader.metadata().find("step"); it != reader.metadata().end()) {
    const std::string& s = it->second;
    auto [end, err] = std::from_chars(s.data(), s.data() + s.size(), step);
    if (err != std::errc() || end != s.data() + s.size()) step = -1;
  }
  if (step < 0)
    throw UserError(path.string() + ": field '__metadata__.step' missing or not a non-negative integer");

  const Tensor* dst[2] = {&opt.m(), &opt.v()};
  std::vector<float> moments[2];
  for (int i = 0; i < 2; ++i) {
    // AdamW does not expose its backend, so only host-resident moments can be filled here.
    LT_CHECK(dst[i]->device() == Device::CPU,
             "load_training_state needs a backend to fill device-resident AdamW state");
    moments[i].resize((size_t)tensors[i]->numel());
    reader.read_raw(*tensors[i], moments[i].data());
    require_finite(moments[i].data(), tensors[i]->numel(), path.string(), names[i]);
  }
  // A negative second moment would make the update's square root NaN.
  for (size_t j = 0; j < moments[1].size(); ++j)
    if (moments[1][j] < 0.f)
      throw UserError(path.string() + ": tensor 'adamw.v' holds a negative value at index " + std::to_string(j) +
                      " (a second moment is never negative); the checkpoint is unusable");
  for (int i = 0; i < 2; ++i) std::memcpy(dst[i]->raw(), moments[i].data(), moments[i].size() * sizeof(float));
  opt.set_steps_taken(step);
  state.erase("files");
  return state;
}

}  // namespace lt
