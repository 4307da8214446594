// Saving and loading checkpoint directories (see checkpoint.h): HF GPT-2 layout conversion,
// durable writes (fsync + rename), checksums, and finding the newest complete checkpoint.
#include "runtime/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
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
#include <memory>
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
constexpr const char* kIndexFile = "model.safetensors.index.json";  // a sharded model's weight map
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

// model-00001-of-00003.safetensors: transformers' name for shard 1 of 3 (and ours).
std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

bool is_shard_name(const std::string& name) {
  auto digits = [&](size_t at) {
    return std::all_of(name.begin() + at, name.begin() + at + 5, [](char c) { return c >= '0' && c <= '9'; });
  };
  return name.size() == 32 && name.starts_with("model-") && digits(6) && name.compare(11, 4, "-of-") == 0 &&
         digits(15) && name.ends_with(".safetensors");
}

// Why `name`, from an index, cannot be a shard ("" when it can): shards are plain .safetensors
// files in the checkpoint's own directory, so no name may lead anywhere else.
std::string shard_name_problem(const std::string& name) {
  if (name.find('/') != std::string::npos || name.find('\\') != std::string::npos)
    return "expected a plain file name in the checkpoint's directory, without '/'";
  if (name.find("..") != std::string::npos) return "expected a plain file name in the checkpoint's directory, without '..'";
  if (name.find('\0') != std::string::npos || name.starts_with(".") || !name.ends_with(".safetensors"))
    return "expected the name of a .safetensors file in the checkpoint's directory";
  if (name == kModelFile || name == kOptimizerFile) return "expected a shard, not " + name;
  return "";
}

// Weights in a format we do not read, with why and what to do instead ("" when there are none).
std::string foreign_weights_problem(const fs::path& dir) {
  static constexpr std::pair<const char*, const char*> kForeign[] = {
      {"pytorch_model.bin.index.json", "the index of sharded PyTorch pickles"},
      {"pytorch_model.bin", "a PyTorch pickle"},
      {"tf_model.h5", "TensorFlow (HDF5) weights"},
      {"flax_model.msgpack", "Flax (msgpack) weights"},
  };
  for (const auto& [name, what] : kForeign)
    if (present(dir / name)) {
      const bool pickle = std::string(name).starts_with("pytorch_model");
      return (dir / name).string() + ": " + what + ", " +
             (pickle ? "which leasetrain does not load (unpickling executes code from the file)"
                     : "a format leasetrain does not read") +
             "; convert it to safetensors with transformers: GPT2LMHeadModel.from_pretrained(DIR) then "
             "model.save_pretrained(DIR, safe_serialization=True)";
    }
  return "";
}

// Where a checkpoint's weights are: model.safetensors alone, or the shards its index names.
struct ModelFiles {
  std::vector<std::string> files;                 // names in the directory, in name order
  bool sharded = false;                           // from model.safetensors.index.json
  std::map<std::string, std::string> weight_map;  // tensor -> shard (sharded only)
  std::optional<uint64_t> total_size;             // the index's metadata.total_size, when it has one
};

// The index transformers writes: {"metadata": {"total_size": N, ...}, "weight_map": {tensor: shard}}.
// metadata is optional (transformers' own loader does not need it); total_size is checked when given.
ModelFiles read_model_index(const fs::path& dir) {
  const fs::path path = dir / kIndexFile;
  const nlohmann::json j = read_json_file(path);
  const JsonFields f(j, path.string());
  ModelFiles m;
  m.sharded = true;
  const JsonFields wm = f.object("weight_map");
  if (wm.json().empty()) f.fail("weight_map", "a non-empty object mapping each tensor to its shard file");
  for (const auto& [tensor, v] : wm.json().items()) {
    if (!v.is_string()) wm.fail(tensor, "a shard file name");
    const std::string shard = v.get<std::string>();
    if (const std::string why = shard_name_problem(shard); !why.empty())
      throw UserError(path.string() + ": field 'weight_map." + tensor + "' is " + json_excerpt(v) + ": " + why);
    m.weight_map[tensor] = shard;
    if (std::find(m.files.begin(), m.files.end(), shard) == m.files.end()) m.files.push_back(shard);
  }
  std::sort(m.files.begin(), m.files.end());
  if (f.has("metadata")) {
    const JsonFields md = f.object("metadata");
    if (md.has("total_size")) m.total_size = md.unsigned_integer("total_size");
    md.opt_integer("total_parameters", 0);
  }
  return m;
}

// The weight files of the checkpoint in `dir`, or a UserError saying what is there instead.
ModelFiles locate_model_files(const fs::path& dir) {
  const bool single = present(dir / kModelFile), index = present(dir / kIndexFile);
  if (single && index)
    throw UserError(dir.string() + ": holds both model.safetensors and model.safetensors.index.json; expected "
                                   "one of them (remove the stale one)");
  if (single) {
    ModelFiles m;
    m.files = {kModelFile};
    return m;
  }
  if (index) return read_model_index(dir);
  if (const std::string p = foreign_weights_problem(dir); !p.empty()) throw UserError(p);
  throw UserError((dir / kModelFile).string() +
                  ": missing (expected model.safetensors, or model.safetensors.index.json and the shards it names)");
}

// A weight file of the checkpoint in `dir`, checked to be a regular file. A link is followed: a
// Hugging Face cache snapshot (what `--init ~/.cache/huggingface/hub/.../snapshots/X` names) is a
// folder of links into its blobs, and reading through one writes nothing anywhere. What a link
// could change is caught where it matters: our own checkpoints' weights are checked against the
// sealed SHA-256 of every file, wherever the link points.
Fd open_model_file(const fs::path& dir, const std::string& name) {
  const fs::path p = dir / name;
  std::error_code ec;
  if (!fs::exists(p, ec))  // a dangling link too
    throw UserError(p.string() + ": missing" + (name == kModelFile ? "" : " (model.safetensors.index.json names it)"));
  Fd fd(::open(p.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) throw UserError(p.string() + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    throw UserError(p.string() + ": a weight file must be a regular file (or a link to one)");
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);  // plain reads from here on
  return fd;
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
    // The weights are model.safetensors or, sharded, the index and its shards (whose names the
    // loader checks against the index); config.json and optimizer.safetensors always.
    const bool sharded = files.has(kIndexFile);
    for (const auto& [name, _] : files.json().items()) {
      const bool known = name == kConfigFile || name == kOptimizerFile || name == (sharded ? kIndexFile : kModelFile) ||
                         (sharded && is_shard_name(name)) || name == kTokenizerFile || name == kTokenizerConfigFile ||
                         name == kGenerationConfigFile;
      // Nothing in a checkpoint goes unchecked: the files it vouches for are exactly ours.
      if (!known)
        files.fail(name, std::string(sharded ? "absent (a sharded checkpoint lists model.safetensors.index.json, its "
                                               "model-NNNNN-of-NNNNN.safetensors shards"
                                             : "absent (a checkpoint lists model.safetensors") +
                             ", config.json, optimizer.safetensors and optionally tokenizer.json, "
                             "tokenizer_config.json and generation_config.json)");
    }
    for (const auto& [name, _] : files.json().items()) s.files[name] = "";
    for (const char* name : {sharded ? kIndexFile : kModelFile, kConfigFile, kOptimizerFile}) s.files[name] = "";
    for (auto& [name, h] : s.files) {
      h = files.string(name);
      if (h.size() != 64) files.fail(name, "a SHA-256 (64 hex digits)");
    }
    // The fields only recorded for people (seed, total_steps) still have their types.
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

// Checks one file against the sha256 recorded in the sealed trainer.json. With `fd` (the file as
// the loader opened it) the bytes hashed are the bytes read.
void verify_checksum(const fs::path& dir, const Sealed& sealed, const std::string& file, int fd = -1) {
  auto it = sealed.files.find(file);
  if (it == sealed.files.end())
    throw UserError((dir / kTrainerFile).string() + ": field 'files' lacks '" + file +
                    "' (every weight file must be covered by a checksum)");
  const std::string& want = it->second;
  std::string got;
  if (fd >= 0) {
    got = sha256_file("/proc/self/fd/" + std::to_string(fd));
  } else {
    // Regular files only: hashing a FIFO planted in its place would block forever.
    ::close(open_regular_file((dir / file).string(), "checkpoint file"));
    got = sha256_file((dir / file).string());
  }
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

// The shards of tensors of `bytes` sizes (in order) under a limit of `max` bytes each, as
// huggingface_hub's split_state_dict_into_shards_factory (what save_pretrained calls) makes them:
// tensors in order, a new shard when the next tensor would take the current one past the limit,
// and a tensor larger than the limit alone in a shard of its own, placed where it is met.
std::vector<std::vector<size_t>> plan_shards(const std::vector<uint64_t>& bytes, uint64_t max) {
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> cur;
  uint64_t cur_bytes = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] > max) {
      shards.push_back({i});
      continue;
    }
    if (cur_bytes + bytes[i] > max) {
      shards.push_back(std::move(cur));
      cur.clear();
      cur_bytes = 0;
    }
    cur.push_back(i);
    cur_bytes += bytes[i];
  }
  if (!cur.empty()) shards.push_back(std::move(cur));
  return shards;
}

// Writes the weights as model.safetensors, or as shards of at most `max_shard_bytes` of tensor
// data plus model.safetensors.index.json (transformers' layout). Returns {file: sha256} of each.
std::map<std::string, std::string> write_model_files(int dirfd, const fs::path& shown_dir, const GPT& model,
                                                     uint64_t max_shard_bytes) {
  const GPTConfig& cfg = model.config();
  std::vector<float> host((size_t)model.num_params());
  model.backend().to_host(host.data(), model.params());

  std::vector<std::vector<float>> transposed;  // owns the HF-layout copies until the write
  transposed.reserve(model.param_info().size());
  std::vector<StEntry> entries;
  std::vector<uint64_t> bytes;
  for (const ParamInfo& p : model.param_info()) {
    // wte's real rows are a prefix of its padded rows, so its plain pointer already works.
    StEntry e{p.name, StDType::F32, hf_shape(p, cfg), host.data() + p.offset};
    if (p.hf_transposed) {
      transposed.emplace_back((size_t)p.numel);
      transpose(transposed.back().data(), host.data() + p.offset, p.shape[0], p.shape[1]);
      e.data = transposed.back().data();
    }
    uint64_t n = sizeof(float);
    for (int64_t d : e.shape) n *= (uint64_t)d;
    bytes.push_back(n);
    entries.push_back(std::move(e));
  }
  // transformers refuses safetensors files whose metadata lacks a recognised "format".
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  const std::string proc = "/proc/self/fd/" + std::to_string(dirfd) + "/";
  std::map<std::string, std::string> files;
  const std::vector<std::vector<size_t>> shards = plan_shards(bytes, max_shard_bytes);
  if (shards.size() <= 1) {
    write_safetensors_at(dirfd, shown_dir / kModelFile, kModelFile, entries, metadata);
    files[kModelFile] = sha256_file(proc + kModelFile);
    return files;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t total_size = 0, total_parameters = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = shard_name(s, shards.size());
    std::vector<StEntry> part;
    for (size_t i : shards[s]) {
      part.push_back(entries[i]);
      weight_map[entries[i].name] = name;
      total_size += bytes[i];
      total_parameters += bytes[i] / sizeof(float);
    }
    write_safetensors_at(dirfd, shown_dir / name, name.c_str(), part, metadata);
    files[name] = sha256_file(proc + name);
  }
  // As transformers writes it (json.dumps(index, indent=2, sort_keys=True)).
  const nlohmann::json index = {{"metadata", {{"total_parameters", total_parameters}, {"total_size", total_size}}},
                                {"weight_map", weight_map}};
  const std::string text = index.dump(2) + "\n";
  write_text_at(dirfd, shown_dir / kIndexFile, kIndexFile, text);
  files[kIndexFile] = sha256_hex(text);
  return files;
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
                            uint64_t max_shard_bytes, const Tokenizer* tokenizer) {
  LT_CHECK(max_shard_bytes > 0, "max_shard_bytes must be positive");
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
    std::map<std::string, std::string> files = write_model_files(dir.get(), shown, model, max_shard_bytes);
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
    files[kConfigFile] = sha256_hex(config_text);
    files[kOptimizerFile] = sha256_file(proc + kOptimizerFile);
    for (const auto& [file, text] : tok_files) {
      write_text_at(dir.get(), shown / file, file.c_str(), text);
      files[file] = sha256_hex(text);
    }
    trainer["files"] = files;
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
                            const nlohmann::json& trainer_state, uint64_t max_shard_bytes) {
  return save_checkpoint(WriteRoot(run_dir), model, opt, trainer_state, {}, max_shard_bytes);
}

uint64_t parse_shard_size(const std::string& text, const std::string& what) {
  // huggingface_hub's parse_size_to_int: the last two characters, in any case, name the unit.
  static constexpr std::pair<const char*, double> kUnits[] = {{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}};
  std::string num = text;
  double unit = 1;
  if (text.size() > 2) {
    std::string u = text.substr(text.size() - 2);
    for (char& c : u) c = (char)std::toupper((unsigned char)c);
    for (const auto& [name, mult] : kUnits)
      if (u == name) {
        num = text.substr(0, text.size() - 2);
        while (!num.empty() && num.back() == ' ') num.pop_back();
        unit = mult;
      }
  }
  double v = 0;
  const bool digits = !num.empty() && std::all_of(num.begin(), num.end(), [](char c) { return std::isdigit((unsigned char)c) || c == '.'; });
  auto [end, err] = std::from_chars(num.data(), num.data() + num.size(), v, std::chars_format::fixed);
  const double bytes = v * unit;
  if (!digits || err != std::errc() || end != num.data() + num.size() || !(bytes >= 1) || bytes > 1e18 ||
      (unit == 1 && num.find('.') != std::string::npos))
    throw UserError(what + ": expected a size such as 5GB, 500MB, 100KB or a byte count, got '" + text + "'");
  return (uint64_t)bytes;
}

CheckpointSearch find_checkpoint(const std::string& run_dir_or_ckpt_dir) {
  CheckpointSearch r;
  const fs::path p(run_dir_or_ckpt_dir);
  std::error_code ec;
  if (!fs::is_directory(p, ec)) return r;
  if (is_file(p / kTrainerFile) || is_file(p / kModelFile) || is_file(p / kIndexFile)) {
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
  if (const std::string p = foreign_weights_problem(run_dir_or_ckpt_dir); !p.empty()) throw UserError(p);
  throw UserError(run_dir_or_ckpt_dir +
                  ": no checkpoint (expected a directory with config.json and model.safetensors, or "
                  "model.safetensors.index.json and its shards; or a run directory with checkpoints/step-*)");
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
  // false drops attention's 1/sqrt(head size): a different model, not a variant we compute.
  if (auto it = j.find("scale_attn_weights"); it != j.end() && !(it->is_boolean() && it->get<bool>()))
    throw UserError(path.string() + ": key 'scale_attn_weights' is " + json_excerpt(*it) +
                    ", expected true (leasetrain's attention always scales by 1/sqrt(head size))");
  // Dropout only matters when training (checkpoint_dropout_warning says so); its type is checked here.
  for (const char* key : {"resid_pdrop", "embd_pdrop", "attn_pdrop"}) f.opt_number(key, 0, 1);
  return c;
}

std::string checkpoint_dropout_warning(const std::string& ckpt_dir) {
  const fs::path path = fs::path(ckpt_dir) / kConfigFile;
  const nlohmann::json j = read_json_file(path);
  const JsonFields f(j, path.string());
  std::string set;
  for (const char* key : {"resid_pdrop", "embd_pdrop", "attn_pdrop"})
    if (const std::optional<double> p = f.opt_number(key, 0, 1); p && *p > 0) {
      std::ostringstream v;
      v << key << " = " << *p;
      set += (set.empty() ? "" : ", ") + v.str();
    }
  if (set.empty()) return "";
  return path.string() + ": " + set + ": leasetrain trains without dropout, so these are ignored";
}

void load_model_weights(const std::string& ckpt_dir, GPT& model) {
  const fs::path dir(ckpt_dir);
  // A checkpoint of ours (it has trainer.json) is trusted only sealed; a bare export has none.
  std::optional<Sealed> sealed;
  if (present(dir / kTrainerFile) || present(dir / kSealFile)) {
    sealed = read_sealed(dir);
    verify_checksum(dir, *sealed, kConfigFile);  // it decides the model's shape
    if (present(dir / kIndexFile)) verify_checksum(dir, *sealed, kIndexFile);  // it decides which files are read
  }
  const ModelFiles mf = locate_model_files(dir);
  if (sealed && mf.sharded)
    for (const auto& [name, _] : sealed->files)
      if (is_shard_name(name) && std::find(mf.files.begin(), mf.files.end(), name) == mf.files.end())
        throw UserError((dir / kTrainerFile).string() + ": field 'files' lists '" + name + "', which " + kIndexFile +
                        " does not name");
  const GPTConfig& cfg = model.config();
  if (present(dir / kConfigFile)) {
    GPTConfig saved = read_checkpoint_config(ckpt_dir);
    if (!(saved == cfg))
      throw UserError((dir / kConfigFile).string() + ": checkpoint config (" + config_string(saved) +
                      ") does not match the model (" + config_string(cfg) + ")");
  }

  // One reader for both layouts: a single file is a set of one shard without an index.
  std::vector<std::unique_ptr<SafetensorsReader>> readers;
  for (const std::string& name : mf.files) {
    Fd fd = open_model_file(dir, name);
    if (sealed) verify_checksum(dir, *sealed, name, fd.get());
    readers.push_back(std::make_unique<SafetensorsReader>(fd.release(), (dir / name).string()));
  }
  if (mf.sharded) {
    const std::string index = (dir / kIndexFile).string();
    std::map<std::string, std::string> found;  // tensor -> the shard holding it
    uint64_t total = 0;
    for (size_t i = 0; i < readers.size(); ++i)
      for (const StTensorInfo& t : readers[i]->tensors()) {
        if (auto [it, fresh] = found.emplace(t.name, mf.files[i]); !fresh)
          throw UserError(readers[i]->path() + ": tensor '" + t.name + "' is also in " + it->second +
                          " (every tensor must be in exactly one shard)");
        total += t.end - t.begin;
      }
    for (size_t i = 0; i < readers.size(); ++i)
      for (const StTensorInfo& t : readers[i]->tensors()) {
        auto w = mf.weight_map.find(t.name);
        if (w == mf.weight_map.end())
          throw UserError(readers[i]->path() + ": tensor '" + t.name + "' is not in " + index + " (field 'weight_map')");
        if (w->second != mf.files[i])
          throw UserError(readers[i]->path() + ": tensor '" + t.name + "' is assigned to " + w->second + " by " + index +
                          " (field 'weight_map." + t.name + "')");
      }
    for (const auto& [tensor, shard] : mf.weight_map)
      if (!found.count(tensor))
        throw UserError((dir / shard).string() + ": missing tensor '" + tensor + "', which " + index +
                        " assigns to it (field 'weight_map." + tensor + "')");
    if (mf.total_size && *mf.total_size != total)
      throw UserError(index + ": field 'metadata.total_size' is " + std::to_string(*mf.total_size) +
                      ", expected " + std::to_string(total) + " (the bytes of the shards' tensors)");
  }

  struct Found {
    const StTensorInfo* tensor;
    const SafetensorsReader* reader;
  };
  std::map<std::string, Found> by_name;  // our name (no "transformer.") -> tensor
  for (const auto& reader : readers)
    for (const StTensorInfo& t : reader->tensors()) {
      std::string name = t.name;
      if (name.starts_with("transformer.")) name = name.substr(12);
      if (name == "lm_head.weight" || is_hf_buffer(name)) continue;  // tied to wte / not parameters
      if (!by_name.emplace(name, Found{&t, reader.get()}).second)
        throw UserError(reader->path() + ": tensor '" + t.name + "' appears twice (with and without 'transformer.')");
    }
  // Where a missing tensor was expected: the file, or the set of shards.
  const std::string where = mf.sharded ? (dir / kIndexFile).string() + "'s shards" : readers.front()->path();

  std::vector<float> host((size_t)model.num_params(), 0.f);  // zeros stay in wte's padding rows
  std::vector<float> scratch;
  for (const ParamInfo& p : model.param_info()) {
    const std::vector<int64_t> want = hf_shape(p, cfg);
    auto it = by_name.find(p.name);
    if (it == by_name.end())
      throw UserError(where + ": missing tensor '" + p.name + "' (expected shape " + shape_string(want) + ")");
    const StTensorInfo& t = *it->second.tensor;
    const SafetensorsReader& reader = *it->second.reader;
    if (t.shape != want)
      throw UserError(reader.path() + ": tensor '" + t.name + "' has shape " + t.shape_str() + ", expected " +
                      shape_string(want));
    if (p.hf_transposed) {
      scratch.resize((size_t)t.numel());
      reader.read_f32(t, scratch.data());
      require_finite(scratch.data(), t.numel(), reader.path(), t.name);
      transpose(host.data() + p.offset, scratch.data(), want[0], want[1]);
    } else {
      reader.read_f32(t, host.data() + p.offset);
      require_finite(host.data() + p.offset, t.numel(), reader.path(), t.name);
    }
    by_name.erase(it);
  }
  if (!by_name.empty())
    throw UserError(by_name.begin()->second.reader->path() + ": unexpected tensor '" +
                    by_name.begin()->second.tensor->name + "' (not a GPT-2 parameter)");
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
