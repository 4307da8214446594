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
#include <sstream>

#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/safetensors.h"
#include "runtime/sha256.h"

namespace lt {
namespace fs = std::filesystem;

namespace {

constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kConfigFile = "config.json";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kTrainerFile = "trainer.json";

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

// A directory's entries (creations, renames) are only durable once the directory is fsynced.
void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw UserError(dir.string() + ": cannot open directory to sync (" + std::strerror(errno) + ")");
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) throw UserError(dir.string() + ": fsync failed (" + std::strerror(err) + ")");
}

void write_file_synced(const fs::path& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw UserError(path.string() + ": cannot create (" + std::strerror(errno) + ")");
  const char* p = text.data();
  size_t left = text.size();
  bool ok = true;
  while (ok && left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) ok = false;
    else {
      p += w;
      left -= (size_t)w;
    }
  }
  ok = ok && ::fsync(fd) == 0;
  int err = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) throw UserError(path.string() + ": write failed (" + std::strerror(err) + ")");
}

// Checkpoint JSON is untrusted (a checkpoint may come from anywhere): read it through the
// validated reader (regular file, bounded size and nesting).
nlohmann::json read_json_file(const fs::path& path) { return lt::read_json_file(path.string(), "checkpoint file"); }

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
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

// Checks one file against the sha256 recorded in trainer.json's "files" map.
void verify_checksum(const fs::path& dir, const nlohmann::json& trainer, const std::string& file) {
  const fs::path trainer_path = dir / kTrainerFile;
  auto files = trainer.find("files");
  if (files == trainer.end() || !files->is_object())
    throw UserError(trainer_path.string() + ": key 'files' missing or not an object");
  auto want = files->find(file);
  if (want == files->end() || !want->is_string())
    throw UserError(trainer_path.string() + ": key 'files." + file + "' missing or not a string");
  const std::string got = sha256_file((dir / file).string());
  if (got != want->get<std::string>())
    throw UserError((dir / file).string() + ": checksum mismatch (expected " + want->get<std::string>() + ", got " +
                    got + ")");
}

nlohmann::json read_trainer_json(const fs::path& dir) {
  nlohmann::json t = read_json_file(dir / kTrainerFile);
  if (!t.is_object()) throw UserError((dir / kTrainerFile).string() + ": expected a JSON object");
  return t;
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

void write_model_file(const fs::path& path, const GPT& model) {
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
  write_safetensors(path.string(), entries, {{"format", "pt"}});
}

void write_optimizer_file(const fs::path& path, Backend& be, const AdamW& opt) {
  const size_t n = (size_t)opt.m().numel();
  std::vector<float> m(n), v(n);
  be.to_host(m.data(), opt.m());
  be.to_host(v.data(), opt.v());
  const std::vector<int64_t> shape = {(int64_t)n};
  write_safetensors(path.string(),
                    {{"adamw.m", StDType::F32, shape, m.data()}, {"adamw.v", StDType::F32, shape, v.data()}},
                    {{"step", std::to_string(opt.steps_taken())}});
}

void rename_or_throw(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    throw UserError(from.string() + ": cannot rename to " + to.string() + " (" + std::strerror(errno) + ")");
}

// Puts the finished directory `tmp` at `final_dir`. When `final_dir` exists (the same step
// saved again) the two are swapped atomically with renameat2(RENAME_EXCHANGE), so the step's
// name always points at a complete checkpoint; filesystems without it fall back to moving the
// old one aside first, leaving it complete under `.old-...` for the instant between renames.
void install_dir(const fs::path& tmp, const fs::path& final_dir, const fs::path& parent) {
  std::error_code ec;
  if (!fs::exists(final_dir, ec)) {
    rename_or_throw(tmp, final_dir);
    fsync_dir(parent);
    return;
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    fsync_dir(parent);
    fs::remove_all(tmp, ec);  // now the previous checkpoint; failing to delete it is harmless
    return;
  }
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    throw UserError(final_dir.string() + ": cannot swap in the new checkpoint (" + std::strerror(errno) + ")");
  const fs::path aside = parent / (".old-" + final_dir.filename().string() + "-" + std::to_string(::getpid()));
  fs::remove_all(aside, ec);
  rename_or_throw(final_dir, aside);
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    int err = errno;
    ::rename(aside.c_str(), final_dir.c_str());  // put the old one back
    throw UserError(tmp.string() + ": cannot rename to " + final_dir.string() + " (" + std::strerror(err) + ")");
  }
  fsync_dir(parent);
  fs::remove_all(aside, ec);
}

// A model dimension from config.json, under `key` or HF's older `fallback` name, in [1, hi].
int config_int(const JsonFields& f, const char* key, const char* fallback, int hi) {
  const char* name = !f.has(key) && fallback && f.has(fallback) ? fallback : key;
  return (int)f.integer(name, 1, hi);
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, const GPT& model, const AdamW& opt,
                            const nlohmann::json& trainer_state) {
  LT_CHECK(trainer_state.is_object() && trainer_state.contains("step") &&
               trainer_state["step"].is_number_integer() && trainer_state["step"].get<int64_t>() >= 0,
           "trainer_state needs a non-negative integer \"step\"");
  const std::string name = step_dir_name(trainer_state["step"].get<int64_t>());
  const fs::path parent = fs::path(run_dir) / "checkpoints";
  const fs::path final_dir = parent / name;
  const fs::path tmp = parent / (".tmp-" + name + "-" + std::to_string(::getpid()));

  std::error_code ec;
  const bool created = fs::create_directories(parent, ec);
  if (ec || !fs::is_directory(parent))
    throw UserError(parent.string() + ": cannot create checkpoint directory (" +
                    (ec ? ec.message() : std::string("not a directory")) + ")");
  if (created) fsync_dir(parent.parent_path());  // make checkpoints/ itself durable
  try {
    // A leftover with our own pid can only be an earlier failed attempt of this process.
    fs::remove_all(tmp, ec);
    if (!fs::create_directory(tmp, ec) || ec)
      throw UserError(tmp.string() + ": cannot create (" + (ec ? ec.message() : std::string("exists")) + ")");

    write_model_file(tmp / kModelFile, model);
    const std::string config_text = make_hf_config(model.config()).dump(2) + "\n";
    write_file_synced(tmp / kConfigFile, config_text);
    write_optimizer_file(tmp / kOptimizerFile, model.backend(), opt);

    nlohmann::json trainer = trainer_state;
    trainer["files"] = {{kModelFile, sha256_file((tmp / kModelFile).string())},
                        {kConfigFile, sha256_hex(config_text)},
                        {kOptimizerFile, sha256_file((tmp / kOptimizerFile).string())}};
    // trainer.json goes last: its presence is what marks a checkpoint complete.
    write_file_synced(tmp / kTrainerFile, trainer.dump(2) + "\n");
    fsync_dir(tmp);
    install_dir(tmp, final_dir, parent);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return final_dir.string();
}

std::string latest_checkpoint(const std::string& run_dir_or_ckpt_dir) {
  const fs::path p(run_dir_or_ckpt_dir);
  std::error_code ec;
  if (!fs::is_directory(p, ec)) return "";
  if (is_file(p / kTrainerFile) || is_file(p / kModelFile)) return p.string();
  // A run directory, or its checkpoints/ directory given directly.
  const fs::path dir = fs::is_directory(p / "checkpoints", ec) ? p / "checkpoints" : p;
  int64_t best_step = -1;
  fs::path best;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string fname = e.path().filename().string();
    if (!fname.starts_with("step-") || fname.size() == 5 || fname.size() > 5 + 18) continue;
    int64_t step = 0;
    auto [end, err] = std::from_chars(fname.data() + 5, fname.data() + fname.size(), step);
    if (err != std::errc() || end != fname.data() + fname.size()) continue;
    // Without trainer.json the directory was never finished (or was damaged): skip it.
    if (!e.is_directory(ec) || !is_file(e.path() / kTrainerFile)) continue;
    if (step > best_step) {
      best_step = step;
      best = e.path();
    }
  }
  return best_step < 0 ? "" : best.string();
}

GPTConfig read_checkpoint_config(const std::string& ckpt_dir) {
  const fs::path path = fs::path(ckpt_dir) / kConfigFile;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(path, ec))) throw UserError(path.string() + ": missing (not a checkpoint directory?)");
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
  if (!is_file(path)) throw UserError(path.string() + ": missing");
  if (is_file(dir / kTrainerFile)) verify_checksum(dir, read_trainer_json(dir), kModelFile);
  const GPTConfig& cfg = model.config();
  if (is_file(dir / kConfigFile)) {
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
      transpose(host.data() + p.offset, scratch.data(), want[0], want[1]);
    } else {
      reader.read_f32(t, host.data() + p.offset);
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
  nlohmann::json state = read_trainer_json(dir);
  // model.safetensors is verified by load_model_weights, which reads it anyway.
  verify_checksum(dir, state, kConfigFile);
  verify_checksum(dir, state, kOptimizerFile);

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
  for (int i = 0; i < 2; ++i) {
    // AdamW does not expose its backend, so only host-resident moments can be filled here.
    LT_CHECK(dst[i]->device() == Device::CPU,
             "load_training_state needs a backend to fill device-resident AdamW state");
    reader.read_raw(*tensors[i], dst[i]->raw());
  }
  opt.set_steps_taken(step);
  state.erase("files");
  return state;
}

}  // namespace lt
