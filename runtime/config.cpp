// TOML training configuration (see config.h). Parsing is strict: a typo in a key must not
// silently train with a default.
#include "runtime/config.h"

#include <toml++/toml.h>

#include <functional>
#include <limits>
#include <map>
#include <sstream>

#include "runtime/error.h"
#include "runtime/input.h"

namespace lt {

namespace {

struct Reader {
  std::string file;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw UserError(file + ": " + key + ": " + what);
  }

  // Applies `setters` to the keys of one table; any other key is an error.
  void table(const toml::table& root, const std::string& section,
             const std::map<std::string, std::function<void(const toml::node&, const std::string&)>>& setters,
             bool required = false) const {
    const toml::node* n = root.get(section);
    if (!n) {
      if (required) fail(section, "missing section [" + section + "]");
      return;
    }
    const toml::table* t = n->as_table();
    if (!t) fail(section, "expected a table [" + section + "]");
    for (const auto& [k, v] : *t) {
      const std::string key = section + "." + std::string(k.str());
      auto it = setters.find(std::string(k.str()));
      if (it == setters.end()) {
        std::string known;
        for (const auto& [name, _] : setters) known += (known.empty() ? "" : ", ") + name;
        fail(key, "unknown key (expected one of: " + known + ")");
      }
      it->second(v, key);
    }
  }

  // An integer in [lo, hi] stored into T: the range must fit T, so nothing is truncated.
  template <class T>
  T as(const toml::node& v, const std::string& key, int64_t lo, int64_t hi) const {
    static_assert(std::is_integral_v<T>);
    LT_CHECK(lo >= (int64_t)std::numeric_limits<T>::min() && (uint64_t)hi <= (uint64_t)std::numeric_limits<T>::max(),
             key + ": the accepted range does not fit the field's type");
    return (T)integer(v, key, lo, hi);
  }

  int64_t integer(const toml::node& v, const std::string& key, int64_t lo, int64_t hi) const {
    // Type first: value<int64_t>() converts a float node, and 1e28 overflows that conversion.
    if (!v.is_integer()) fail(key, std::string("expected an integer, got ") + type_name(v));
    auto i = v.value<int64_t>();
    if (!i) fail(key, std::string("expected an integer, got ") + type_name(v));
    if (*i < lo || *i > hi)
      fail(key, "expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                    std::to_string(*i));
    return *i;
  }

  float number(const toml::node& v, const std::string& key, double lo, double hi) const {
    if (!v.is_number()) fail(key, std::string("expected a number, got ") + type_name(v));
    double d = *v.value<double>();
    // Fields are stored as float: a nonzero value that rounds to 0 would silently change meaning.
    const bool underflows = d != 0 && (float)d == 0;
    if (!(d >= lo && d <= hi) || underflows) {
      std::ostringstream s;
      s << "expected a number in [" << lo << ", " << hi << "]" << (underflows ? " that a 32-bit float can hold" : "")
        << ", got " << d;
      fail(key, s.str());
    }
    return (float)d;
  }

  bool boolean(const toml::node& v, const std::string& key) const {
    if (!v.is_boolean()) fail(key, std::string("expected true or false, got ") + type_name(v));
    return *v.value<bool>();
  }

  std::string string(const toml::node& v, const std::string& key) const {
    if (!v.is_string()) fail(key, std::string("expected a string, got ") + type_name(v));
    return *v.value<std::string>();
  }

  static const char* type_name(const toml::node& v) {
    switch (v.type()) {
      case toml::node_type::string: return "a string";
      case toml::node_type::integer: return "an integer";
      case toml::node_type::floating_point: return "a float";
      case toml::node_type::boolean: return "a boolean";
      case toml::node_type::array: return "an array";
      case toml::node_type::table: return "a table";
      default: return "a date/time";
    }
  }
};

}  // namespace

TrainConfig load_train_config(const std::string& path) {
  toml::table root = parse_toml_file(path, "config");
  Reader r{path};
  TrainConfig c;
  c.source = path;
  const int64_t big = kMaxSteps;
  bool min_lr_set = false, mtbf_set = false;
  for (const auto& [k, v] : root)
    if (!v.is_table())
      r.fail(std::string(k.str()),
             "unknown top-level key (expected the tables [model], [data], [optim], [train], [dist])");
  const std::map<std::string, bool> sections{{"model", 1}, {"data", 1}, {"optim", 1}, {"train", 1}, {"dist", 1}};
  for (const auto& [k, v] : root)
    if (!sections.count(std::string(k.str())))
      r.fail(std::string(k.str()), "unknown section (expected [model], [data], [optim], [train] or [dist])");

  r.table(root, "model",
          {{"n_layer", [&](auto& v, auto& k) { c.model_given["n_layer"] = c.model.n_layer = r.as<int>(v, k, 1, kMaxLayers); }},
           {"n_head", [&](auto& v, auto& k) { c.model_given["n_head"] = c.model.n_head = r.as<int>(v, k, 1, kMaxHeads); }},
           {"n_embd", [&](auto& v, auto& k) { c.model_given["n_embd"] = c.model.n_embd = r.as<int>(v, k, 1, kMaxEmbd); }},
           {"block_size", [&](auto& v, auto& k) { c.model_given["block_size"] = c.model.block_size = r.as<int>(v, k, 1, kMaxBlockSize); }},
           {"vocab_size", [&](auto& v, auto& k) { c.model_given["vocab_size"] = c.model.vocab_size = r.as<int>(v, k, 2, kMaxVocab); }}});
  r.table(root, "data",
          {{"train", [&](auto& v, auto& k) { c.train_data = r.string(v, k); }},
           {"val", [&](auto& v, auto& k) { c.val_data = r.string(v, k); }}},
          true);
  r.table(root, "optim",
          {{"lr", [&](auto& v, auto& k) { c.optim.lr = r.number(v, k, 0, 10); }},
           {"min_lr", [&](auto& v, auto& k) { c.optim.min_lr = r.number(v, k, 0, 10), min_lr_set = true; }},
           {"warmup_steps", [&](auto& v, auto& k) { c.optim.warmup_steps = r.as<int>(v, k, 0, std::numeric_limits<int>::max()); }},
           {"beta1", [&](auto& v, auto& k) { c.optim.beta1 = r.number(v, k, 0, 0.999999); }},
           {"beta2", [&](auto& v, auto& k) { c.optim.beta2 = r.number(v, k, 0, 0.999999); }},
           {"eps", [&](auto& v, auto& k) { c.optim.eps = r.number(v, k, 0, 1); }},
           {"weight_decay", [&](auto& v, auto& k) { c.optim.weight_decay = r.number(v, k, 0, 10); }},
           {"grad_clip", [&](auto& v, auto& k) { c.optim.grad_clip = r.number(v, k, 0, 1e9); }}});
  r.table(root, "train",
          {{"micro_batch", [&](auto& v, auto& k) { c.micro_batch = r.as<int>(v, k, 1, 1 << 20); }},
           {"seq_len", [&](auto& v, auto& k) { c.seq_len = r.as<int>(v, k, 1, 1 << 20); }},
           {"grad_accum", [&](auto& v, auto& k) { c.grad_accum = r.as<int>(v, k, 1, 1 << 20); }},
           {"steps", [&](auto& v, auto& k) { c.steps = r.as<int64_t>(v, k, 1, big); }},
           {"eval_interval", [&](auto& v, auto& k) { c.eval_interval = r.as<int64_t>(v, k, 0, big); }},
           {"eval_batches", [&](auto& v, auto& k) { c.eval_batches = r.as<int>(v, k, 1, 1 << 20); }},
           {"checkpoint_interval", [&](auto& v, auto& k) {
              if (v.is_string()) {
                if (r.string(v, k) != "auto")
                  r.fail(k, "expected a step count or \"auto\", got \"" + r.string(v, k) + "\"");
                c.checkpoint_auto = true;
                return;
              }
              if (!v.is_integer()) r.fail(k, std::string("expected a step count or \"auto\", got ") + Reader::type_name(v));
              c.checkpoint_interval = r.as<int64_t>(v, k, 0, big);
            }},
           {"mtbf_hours", [&](auto& v, auto& k) { c.mtbf_hours = r.number(v, k, 1e-9, 1e9), mtbf_set = true; }},
           {"node_mtbf_hours", [&](auto& v, auto& k) { c.node_mtbf_hours = r.number(v, k, 1e-9, 1e9), mtbf_set = true; }},
           {"preempt_grace", [&](auto& v, auto& k) { c.preempt_grace = r.number(v, k, 0, 86400); }},
           {"log_interval", [&](auto& v, auto& k) { c.log_interval = r.as<int64_t>(v, k, 1, big); }},
           {"seed", [&](auto& v, auto& k) { c.seed = r.as<uint64_t>(v, k, 0, kMaxSeed); }}});
  r.table(root, "dist",
          {{"zero", [&](auto& v, auto& k) { c.dist.zero = r.as<int>(v, k, 0, 1); }},
           {"bucket_mb", [&](auto& v, auto& k) { c.dist.bucket_mb = r.number(v, k, 1e-3, 1e6); }},
           {"first_bucket_mb", [&](auto& v, auto& k) { c.dist.first_bucket_mb = r.number(v, k, 1e-3, 1e6); }},
           {"overlap", [&](auto& v, auto& k) { c.dist.overlap = r.boolean(v, k); }},
           {"checksum_interval", [&](auto& v, auto& k) { c.dist.checksum_interval = r.as<int64_t>(v, k, 0, big); }},
           {"watchdog_timeout", [&](auto& v, auto& k) { c.dist.watchdog_timeout = r.number(v, k, 0.1, 1e7); }},
           {"progress", [&](auto& v, auto& k) {
              c.dist.progress = r.string(v, k);
              if (c.dist.progress != "thread" && c.dist.progress != "poll")
                r.fail(k, "expected \"thread\" or \"poll\", got \"" + c.dist.progress + "\"");
            }}});

  if (c.model.n_embd % c.model.n_head != 0)
    r.fail("model.n_embd", "expected a multiple of model.n_head (" + std::to_string(c.model.n_head) + "), got " +
                               std::to_string(c.model.n_embd));
  // Without model.block_size the context may be a checkpoint's (--init); the trainer checks then.
  if (c.model_given.count("block_size") && c.seq_len > c.model.block_size)
    r.fail("train.seq_len", "expected at most model.block_size (" + std::to_string(c.model.block_size) +
                                "), got " + std::to_string(c.seq_len));
  if (c.train_data.empty()) r.fail("data.train", "missing (a glob of token shards)");
  // Tokens of one micro-batch index int buffers and kernels; keep the product inside int.
  if ((int64_t)c.micro_batch * c.seq_len > std::numeric_limits<int32_t>::max())
    r.fail("train.micro_batch", "expected micro_batch x seq_len (" + std::to_string(c.micro_batch) + " x " +
                                    std::to_string(c.seq_len) + ") to be at most 2147483647 tokens");
  // A failure rate that would silently do nothing is a mistake in the config.
  if (mtbf_set && !c.checkpoint_auto)
    r.fail(c.mtbf_hours > 0 ? "train.mtbf_hours" : "train.node_mtbf_hours",
           "only used with train.checkpoint_interval = \"auto\"");
  if (!min_lr_set) c.optim.min_lr = c.optim.lr * 0.1f;  // the usual floor: a tenth of the peak
  if (c.optim.min_lr > c.optim.lr) r.fail("optim.min_lr", "expected at most optim.lr");
  return c;
}

}  // namespace lt
