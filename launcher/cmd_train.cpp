// `leasetrain train`, `eval` and `sample`.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "launcher/commands.h"
#include "launcher/tenancy.h"
#include "runtime/checkpoint.h"
#include "runtime/data.h"
#include "runtime/dist_env.h"
#include "runtime/error.h"
#include "runtime/trainer.h"

namespace lt::cli {

namespace {

// A model with the weights of the newest checkpoint under `dir` (a run or checkpoint dir).
struct LoadedModel {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<GPT> model;
  std::string checkpoint;
};

LoadedModel load_model(const std::string& dir) {
  LoadedModel m;
  m.checkpoint = latest_checkpoint(dir);
  if (m.checkpoint.empty()) throw UserError(dir + ": no checkpoint (expected model.safetensors and config.json)");
  m.backend = make_cpu_backend();
  m.model = std::make_unique<GPT>(read_checkpoint_config(m.checkpoint), *m.backend);
  load_model_weights(m.checkpoint, *m.model);
  return m;
}

// The lease, as the trainer's RunPolicy: paths under the tenant's storage roots, the byte
// quota, and the deadline (not_after - grace, or the GPU-hours budget).
class LeasePolicy final : public RunPolicy {
 public:
  explicit LeasePolicy(lease::LeaseGuard g) : guard_(std::move(g)) {}
  std::string check_path(const std::string& path, bool for_write) const override {
    return guard_.check_path(path, for_write);
  }
  void reserve_bytes(uint64_t n) const override { guard_.reserve_bytes(n); }
  int64_t seconds_until_deadline() const override { return guard_.seconds_until_deadline(); }
  std::string deadline_message() const override { return guard_.deadline_message(lease::system_now()); }
  const lease::LeaseGuard& guard() const { return guard_; }

 private:
  lease::LeaseGuard guard_;
};

// Fail closed before anything else: the lease window, the rank quota, this node's P_Key index
// and device fencing. Without LEASETRAIN_* variables this is the embedded local lease.
std::unique_ptr<LeasePolicy> enter_lease() {
  auto policy = std::make_unique<LeasePolicy>(lease::LeaseGuard::from_env());
  const lease::LeaseGuard& g = policy->guard();
  const DistEnv env = read_dist_env();
  g.check_start();
  // The embedded local lease (no LEASETRAIN_* variables, e.g. a plain `mpirun -np 2 leasetrain
  // train`) sizes itself to this machine, not to the job: it limits no rank count.
  if (!g.local()) g.check_ranks(env.world);
  const std::string pkey_note = g.apply_rank_env();
  if (!pkey_note.empty() && env.rank == 0) std::fprintf(stderr, "lease: %s\n", pkey_note.c_str());
  g.enforce_isolation();
  g.check_devices({});  // the CPU backend holds no device; the CUDA backend passes its UUIDs
  g.record_runtime(env.rank, {}, "", "");
  return policy;
}

}  // namespace

void add_train_commands(CLI::App& app) {
  // train
  auto train = std::make_shared<TrainOptions>();
  CLI::App* t = app.add_subcommand("train", "Train a GPT-2 model from a TOML config");
  t->footer(
      "The config has four tables: [model] (n_layer, n_head, n_embd, block_size, vocab_size), [data] (train, val: "
      "globs of llm.c token shards), [optim] (lr, min_lr, warmup_steps, beta1, beta2, eps, weight_decay, grad_clip) and "
      "[train] (micro_batch, seq_len, grad_accum, steps, eval_interval, eval_batches, checkpoint_interval, "
      "log_interval, seed), and optionally [dist] (zero, bucket_mb, first_bucket_mb, overlap, checksum_interval, "
      "watchdog_timeout, progress). Unknown keys are errors. See configs/tiny.toml.\n"
      "Data parallel: start it under mpirun or srun (e.g. mpirun -np 2 leasetrain train ...); each rank takes "
      "micro_batch sequences of every micro-step, rank 0 logs and writes checkpoints, and checkpoints resume on any "
      "number of ranks.\n"
      "Writes OUT/metrics.jsonl (one JSON object per step) and OUT/checkpoints/step-NNNNNNNN/.");
  t->add_option("--config", train->config_path, "TOML training config")->required()->check(CLI::ExistingFile);
  t->add_option("--out", train->out_dir, "Run directory for metrics and checkpoints")->capture_default_str();
  auto steps_opt = std::make_shared<int64_t>(0);
  auto seed_opt = std::make_shared<uint64_t>(0);
  t->add_option("--steps", *steps_opt, "Total optimizer steps (overrides train.steps)")->check(CLI::PositiveNumber);
  t->add_option("--seed", *seed_opt, "Seed for initialisation and data order (overrides train.seed)");
  auto* resume = t->add_flag("--resume", train->resume, "Continue from the newest complete checkpoint in --out");
  t->add_option("--init", train->init_dir,
                "Start from the weights of this checkpoint (a directory with model.safetensors and config.json, "
                "e.g. Hugging Face GPT-2)")
      ->excludes(resume);
  t->callback([train, t, steps_opt, seed_opt] {
    if (t->count("--steps")) train->steps = *steps_opt;
    if (t->count("--seed")) train->seed = *seed_opt;
    std::unique_ptr<LeasePolicy> policy = enter_lease();
    train->policy = policy.get();
    run_train(*train);
  });

  // eval
  struct EvalArgs {
    std::string checkpoint, data;
    int batch = 8, seq = 128, batches = 20;
  };
  auto ea = std::make_shared<EvalArgs>();
  CLI::App* e = app.add_subcommand("eval", "Evaluate a checkpoint's loss on token shards (prints one JSON line)");
  e->footer("Reads sequential non-overlapping windows from the start of the first shard matching --data "
            "(llm.c's validation convention).");
  e->add_option("--checkpoint", ea->checkpoint, "Run or checkpoint directory")->required();
  e->add_option("--data", ea->data, "Glob of llm.c token shards")->required();
  e->add_option("--batch", ea->batch, "Sequences per batch")->capture_default_str()->check(CLI::PositiveNumber);
  e->add_option("--seq", ea->seq, "Tokens per sequence")->capture_default_str()->check(CLI::PositiveNumber);
  e->add_option("--batches", ea->batches, "Batches to average")->capture_default_str()->check(CLI::PositiveNumber);
  e->callback([ea] {
    LoadedModel m = load_model(ea->checkpoint);
    if (ea->seq > m.model->config().block_size)
      throw UserError("--seq: expected at most the model's context " + std::to_string(m.model->config().block_size) +
                      ", got " + std::to_string(ea->seq));
    EvalResult r = evaluate(*m.model, ea->data, ea->batch, ea->seq, ea->batches);
    nlohmann::json j{{"loss", r.loss}, {"batches", r.batches}, {"tokens", r.tokens}, {"checkpoint", m.checkpoint}};
    std::printf("%s\n", j.dump().c_str());
  });

  // sample
  struct SampleArgs {
    std::string checkpoint, prompt;
    int tokens = 200, top_k = 40;
    float temperature = 0.8f;
    uint64_t seed = 1;
  };
  auto sa = std::make_shared<SampleArgs>();
  CLI::App* s = app.add_subcommand("sample", "Generate text from a checkpoint");
  s->footer("The prompt is tokenized bytewise, so text sampling needs the byte-level vocabulary (vocab_size 256).");
  s->add_option("--checkpoint", sa->checkpoint, "Run or checkpoint directory")->required();
  s->add_option("--prompt", sa->prompt, "Text to continue")->capture_default_str();
  s->add_option("--tokens", sa->tokens, "Tokens to generate")->capture_default_str()->check(CLI::PositiveNumber);
  s->add_option("--temperature", sa->temperature, "Softmax temperature (0: greedy)")->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  s->add_option("--top-k", sa->top_k, "Sample among the k likeliest tokens (0: all)")->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  s->add_option("--seed", sa->seed, "Sampling seed")->capture_default_str();
  s->callback([sa] {
    LoadedModel m = load_model(sa->checkpoint);
    if (m.model->config().vocab_size != kByteVocab)
      throw UserError(m.checkpoint + "/config.json: vocab_size: text sampling expects the byte-level vocabulary (256), got " +
                      std::to_string(m.model->config().vocab_size));
    std::vector<int32_t> prompt = encode_bytes(sa->prompt);
    std::vector<int32_t> out = generate(*m.model, prompt, sa->tokens, sa->temperature, sa->top_k, sa->seed);
    std::printf("%s\n", decode_bytes(out.data(), (int)out.size()).c_str());
  });
}

}  // namespace lt::cli
