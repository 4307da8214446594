// `leasetrain train`, `eval` and `sample`.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "launcher/cli_checks.h"
#include "launcher/commands.h"
#include "lease/tenancy.h"
#include "runtime/checkpoint.h"
#include "runtime/data.h"
#include "runtime/dist_env.h"
#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/memory.h"
#include "runtime/trainer.h"

#ifdef LEASETRAIN_HAVE_CUDA
#include "runtime/cuda_backend.h"
#endif

namespace lt::cli {

namespace {

// --device, --precision, --gemm and --attention, shared by train, eval and sample.
struct DeviceArgs {
  std::string device = "auto", precision = "bf16", gemm = "mma", attention = "auto";
  bool precision_given = false, gemm_given = false, attention_given = false;

  void add_to(CLI::App* c) {
    c->add_option("--device", device,
                  "cuda, cpu, or auto: cuda when this binary has CUDA and the machine a usable GPU, else the CPU "
                  "(saying so in one line)")
        ->check(CLI::IsMember({"auto", "cuda", "cpu"}))
        ->capture_default_str();
    c->add_option("--precision", precision,
                  "CUDA: bf16 (mixed precision: bf16 activations and gradients, fp32 master weights and AdamW "
                  "state) or fp32 (for testing). The CPU always computes in fp32")
        ->check(CLI::IsMember({"bf16", "fp32"}))
        ->capture_default_str();
    c->add_option("--gemm", gemm,
                  "CUDA: mma (the hand-written GEMM: wgmma/TMA on Hopper, mma.sync elsewhere), mma.sync or wgmma "
                  "(force one hand-written path; wgmma needs an H100/H200), or cublas (the cuBLAS baseline)")
        ->check(CLI::IsMember({"mma", "mma.sync", "wgmma", "cublas"}))
        ->capture_default_str();
    c->add_option("--attention", attention,
                  "CUDA, bf16: the flash-attention kernels: auto (wgmma/TMA on Hopper, mma.sync elsewhere), mma.sync or "
                  "wgmma (force one; wgmma needs an H100/H200)")
        ->check(CLI::IsMember({"auto", "mma.sync", "wgmma"}))
        ->capture_default_str();
  }
  void read_counts(const CLI::App* c) {
    precision_given = c->count("--precision") > 0;
    gemm_given = c->count("--gemm") > 0;
    attention_given = c->count("--attention") > 0;
  }
};

// What --device resolves to on this rank. auto without a usable GPU falls back to the CPU, in a
// CUDA build with one line on `note` (train: stdout, rank 0; eval and sample pass null and fall
// back quietly: their stdout is their answer, their stderr one line on error). Must run after
// the lease has set this rank's environment (CUDA_VISIBLE_DEVICES is read when CUDA starts).
struct ResolvedDevice {
  BackendOptions backend;
  std::vector<std::string> uuids;  // the CUDA device's, for the lease
  std::string cuda_version;
};

ResolvedDevice resolve_device(const DeviceArgs& a, int rank, int local_rank, std::FILE* note) {
  ResolvedDevice r;
  r.backend.precision = a.precision == "fp32" ? DType::F32 : DType::BF16;
  r.backend.gemm = a.gemm;
  r.backend.attention = a.attention;
  if (a.device == "cpu") {
    if (a.precision_given && a.precision != "fp32")
      throw UserError("--precision " + a.precision + ": the CPU backend computes in fp32");
    if (a.gemm_given) throw UserError("--gemm: only for --device cuda");
    if (a.attention_given) throw UserError("--attention: only for --device cuda");
    return r;
  }
  std::string why;
  if (!cuda_available(&why)) {
    if (a.device == "cuda") throw UserError("--device cuda: " + why);
#ifdef LEASETRAIN_HAVE_CUDA
    if (rank == 0 && note) {
      std::fprintf(note, "device: %s, so this runs on the CPU (fp32); --device cpu chooses the CPU without this line\n",
                   why.c_str());
      std::fflush(note);
    }
#endif
    return r;
  }
#ifdef LEASETRAIN_HAVE_CUDA
  const int count = cuda_device_count();
  r.backend.device = Device::CUDA;
  r.backend.device_index = local_rank % count;
  const CudaDeviceInfo info = cuda_device_info(r.backend.device_index);
  r.uuids = {info.uuid};
  r.cuda_version = info.cuda_version();
#endif
  return r;
}

// A model with the weights of the newest checkpoint under `dir` (a run or checkpoint dir).
struct LoadedModel {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<GPT> model;
  std::string checkpoint;
};

// The plan for a model on `backend` running batch x seq tokens (memory.h).
MemoryPlan memory_plan(const BackendOptions& backend, int64_t batch, int64_t seq, bool training, int64_t micro_steps = 1) {
  MemoryPlan p;
  p.batch = batch;
  p.seq = seq;
  p.micro_steps = micro_steps;
  p.training = training;
  p.device = backend.device;
  p.compute = backend.device == Device::CPU ? DType::F32 : backend.precision;
  p.extra_host_bytes = (uint64_t)batch * (uint64_t)seq * 16;  // host token and target batches
  // Ranks that mpirun started on this host share its memory. A malformed count is ignored here;
  // read_dist_env reports malformed launcher variables.
  if (const char* v = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) {
    int64_t n = 0;
    const char* end = v + std::strlen(v);
    if (std::from_chars(v, end, n).ptr == end && n >= 1 && n <= 1 << 20) p.host_ranks = n;
  }
  return p;
}

// `plan` sees the checkpoint's model shape before anything is allocated for it (it may refuse a
// shape that cannot run) and says what will run on it, which check_model_memory checks.
LoadedModel load_model(const std::string& dir, const DeviceArgs& dev, const char* what,
                       const std::function<MemoryPlan(const GPTConfig&, const BackendOptions&)>& plan) {
  LoadedModel m;
  m.checkpoint = require_checkpoint(dir);
  const DistEnv env = read_dist_env();
  const BackendOptions opts = resolve_device(dev, env.rank, env.local_rank, nullptr).backend;
  const GPTConfig cfg = read_checkpoint_config(m.checkpoint);
  check_model_memory(cfg, plan(cfg, opts), std::string(what) + " of " + m.checkpoint, opts.device_index);
  m.backend = make_backend(opts);
  m.model = std::make_unique<GPT>(cfg, *m.backend);
  load_model_weights(m.checkpoint, *m.model);
  return m;
}

// Before a run starts: the config parses, --out can hold a run directory, and the model (the
// config's, or the checkpoint's it resumes or starts from) fits this machine with its
// optimizer and a micro-batch of activations.
void preflight_train(const TrainOptions& o) {
  const TrainConfig cfg = load_train_config(o.config_path);
  check_output_directory(o.out_dir, "--out");
  GPTConfig model = cfg.model;
  std::string ckpt;
  if (o.resume) ckpt = latest_checkpoint(o.out_dir);
  if (ckpt.empty() && !o.init_dir.empty()) ckpt = latest_checkpoint(o.init_dir);
  if (!ckpt.empty()) model = read_checkpoint_config(ckpt);
  check_model_memory(model, memory_plan(o.backend, cfg.micro_batch, cfg.seq_len, true, cfg.grad_accum),
                     "train (" + cfg.source + (ckpt.empty() ? "" : ", " + ckpt) + ")", o.backend.device_index);
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
  void record_progress(const RunProgress& p) const override { guard_.record_progress(p); }
  void record_exit(int rank, int exit_code, const std::string& error) const override {
    guard_.record_exit(rank, exit_code, error);
  }
  const lease::LeaseGuard& guard() const { return guard_; }

 private:
  lease::LeaseGuard guard_;
};

// Fail closed before anything else: the lease window, the rank quota, this node's P_Key index
// and device fencing, then the device this rank trains on. Without LEASETRAIN_* variables
// this is the embedded local lease.
std::unique_ptr<LeasePolicy> enter_lease(const DeviceArgs& dev, BackendOptions* backend) {
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
  const ResolvedDevice d = resolve_device(dev, env.rank, env.local_rank, stdout);
  *backend = d.backend;
  if (g.local() && !d.uuids.empty()) {
    // The embedded local lease lists the GPUs of /proc/driver/nvidia/gpus; a VM or container
    // may not show them there. It is this machine's own lease, so warn instead of refusing.
    try {
      g.check_devices(d.uuids);
    } catch (const UserError& e) {
      if (env.rank == 0) std::fprintf(stderr, "lease: local: %s (running anyway: no lease was given)\n", e.what());
    }
  } else {
    g.check_devices(d.uuids);  // empty for a CPU rank
  }
  g.record_runtime(env.rank, d.uuids, "", d.cuda_version);
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
      "log_interval, seed, mtbf_hours, node_mtbf_hours, preempt_grace), and optionally [dist] (zero, bucket_mb, first_bucket_mb, overlap, checksum_interval, "
      "watchdog_timeout, progress). Unknown keys are errors. With --init, [model] may be omitted (the checkpoint's "
      "shape is used) and keys it sets must agree with the checkpoint's config.json. See configs/tiny.toml.\n"
      "Data parallel: start it under mpirun or srun (e.g. mpirun -np 2 leasetrain train ...); each rank takes "
      "micro_batch sequences of every micro-step, rank 0 logs and writes checkpoints, and checkpoints resume on any "
      "number of ranks.\n"
      "Writes OUT/metrics.jsonl (one JSON object per step) and OUT/checkpoints/step-NNNNNNNN/.\n"
      "The global batch (micro_batch x ranks x grad_accum) is the run's: a --resume on another number of ranks "
      "keeps it, changing grad_accum (and lowering micro_batch where it must), and refuses only when the rank count "
      "does not divide it. checkpoint_interval = \"auto\" chooses the interval from the measured save time and the "
      "mean time between failures (sqrt(2 x save x MTBF)).\n"
      "Exit status: 0 finished (or checkpointed and stopped for the lease's end), 1 failure, 2 bad input, 3 the "
      "watchdog aborted a stalled job, 75 preempted: on SIGTERM, SIGUSR1 (mpirun forwards it to every rank) or a "
      "first SIGINT every rank stops at the same step and checkpoints if the save fits in train.preempt_grace "
      "seconds (default 30); resume with --resume. A second SIGINT ends it at once; a repeated SIGTERM is one more "
      "notice. A rank that cannot reach a step boundary with its peers after a notice exits 3.\n"
      "Devices: --device auto (the default) trains on the GPU when this binary was built with CUDA and the machine "
      "has a usable one (each rank takes local rank mod device count), else on the CPU with one line saying why. On "
      "CUDA, --precision bf16 is llm.c's mixed precision; checkpoints are fp32 either way and resume on any device.");
  t->add_option("--config", train->config_path, "TOML training config")->required()->check(CLI::ExistingFile);
  t->add_option("--out", train->out_dir, "Run directory for metrics and checkpoints")->capture_default_str();
  auto steps_opt = std::make_shared<int64_t>(0);
  auto seed_opt = std::make_shared<uint64_t>(0);
  t->add_option("--steps", *steps_opt, "Total optimizer steps (overrides train.steps)")
      ->check(in_range<int64_t>(1, kMaxSteps));
  t->add_option("--seed", *seed_opt, "Seed for initialisation and data order (overrides train.seed)")
      ->check(in_range<uint64_t>(0, kMaxSeed));
  auto* resume = t->add_flag("--resume", train->resume, "Continue from the newest complete checkpoint in --out");
  auto train_dev = std::make_shared<DeviceArgs>();
  train_dev->add_to(t);
  t->add_option("--init", train->init_dir,
                "Start from the weights of this checkpoint (a directory with config.json and model.safetensors, or "
                "model.safetensors.index.json and its shards, e.g. Hugging Face GPT-2 from save_pretrained); the "
                "model's shape is the checkpoint's, so the config's [model] may be omitted (keys it sets must agree)")
      ->excludes(resume);
  auto shard_size = std::make_shared<std::string>("50GB");
  t->add_option("--max-shard-size", *shard_size,
                "Write each checkpoint's weights as shards of at most this size (5GB, 500MB, 100KB or bytes; units "
                "are powers of ten) with model.safetensors.index.json, as transformers' save_pretrained does; one "
                "model.safetensors when they fit")
      ->capture_default_str();
  t->callback([train, t, steps_opt, seed_opt, train_dev, shard_size] {
    train->max_shard_bytes = parse_shard_size(*shard_size, "--max-shard-size");
    if (t->count("--steps")) train->steps = *steps_opt;
    if (t->count("--seed")) train->seed = *seed_opt;
    train_dev->read_counts(t);
    std::unique_ptr<LeasePolicy> policy = enter_lease(*train_dev, &train->backend);
    train->policy = policy.get();
    try {
      preflight_train(*train);
    } catch (const UserError& e) {  // every rank fails alike, before any communicator: say which (as run_train)
      const DistEnv env = read_dist_env();
      if (env.world == 1) throw;
      throw UserError("rank " + std::to_string(env.rank) + "/" + std::to_string(env.world) + ": " + e.what());
    }
    const TrainResult r = run_train(*train);
    if (r.preempted_by) throw CommandFailed("", kExitPreempted);  // the trainer said why on stdout
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
  e->add_option("--batch", ea->batch, "Sequences per batch")->capture_default_str()->check(in_range(1, 1 << 20));
  e->add_option("--seq", ea->seq, "Tokens per sequence")->capture_default_str()->check(in_range(1, kMaxBlockSize));
  e->add_option("--batches", ea->batches,
                "Batches to average (0: every whole batch in the shard; more than it holds is an error)")
      ->capture_default_str()
      ->check(in_range(0, 1 << 20));
  auto eval_dev = std::make_shared<DeviceArgs>();
  eval_dev->add_to(e);
  e->callback([ea, e, eval_dev] {
    eval_dev->read_counts(e);
    if ((int64_t)ea->batch * ea->seq > std::numeric_limits<int32_t>::max())
      throw UserError("--batch x --seq: expected at most 2147483647 tokens per batch, got " +
                      std::to_string((int64_t)ea->batch * ea->seq));
    LoadedModel m = load_model(ea->checkpoint, *eval_dev, "eval", [&](const GPTConfig& c, const BackendOptions& b) {
      return memory_plan(b, ea->batch, std::min<int64_t>(ea->seq, c.block_size), false);
    });
    if (ea->seq > m.model->config().block_size)
      throw UserError("--seq: expected at most the model's context " + std::to_string(m.model->config().block_size) +
                      ", got " + std::to_string(ea->seq));
    EvalResult r = evaluate(*m.model, ea->data, ea->batch, ea->seq, ea->batches);
    // NaN or Inf weights (or activations that overflow) give a loss that is no measurement: say
    // so and fail, rather than print {"loss": null} with exit status 0.
    if (!std::isfinite(r.loss))
      throw CommandFailed("eval: the loss over " + std::to_string(r.batches) + " batches of " + ea->data + " is " +
                          (std::isnan(r.loss) ? "NaN" : "infinite") + ": " + m.checkpoint +
                          " holds non-finite weights or its activations overflow; no result");
    nlohmann::json j{{"loss", r.loss}, {"batches", r.batches}, {"tokens", r.tokens}, {"checkpoint", m.checkpoint}};
    std::printf("%s\n", j.dump().c_str());
  });

  // sample
  struct SampleArgs {
    std::string checkpoint, prompt, tokenizer;
    int tokens = 200, top_k = 40;
    float temperature = 0.8f;
    uint64_t seed = 1;
  };
  auto sa = std::make_shared<SampleArgs>();
  CLI::App* s = app.add_subcommand("sample", "Generate text from a checkpoint");
  s->footer("The prompt is encoded and the output decoded with --tokenizer, else the checkpoint's tokenizer.json "
            "(train copies the data's into every checkpoint), else bytewise (which needs vocab_size 256).");
  s->add_option("--checkpoint", sa->checkpoint, "Run or checkpoint directory")->required();
  s->add_option("--prompt", sa->prompt, "Text to continue")->capture_default_str();
  s->add_option("--tokenizer", sa->tokenizer, "tokenizer.json to encode and decode with (default: the checkpoint's)")
      ->type_name("FILE");
  s->add_option("--tokens", sa->tokens, "Tokens to generate")->capture_default_str()->check(in_range(1, 1 << 20));
  s->add_option("--temperature", sa->temperature, "Softmax temperature (0: greedy)")->capture_default_str()
      ->check(in_range(0.0f, 100.0f));
  s->add_option("--top-k", sa->top_k, "Sample among the k likeliest tokens (0: all)")->capture_default_str()
      ->check(in_range(0, kMaxVocab));
  s->add_option("--seed", sa->seed, "Sampling seed")->capture_default_str()->check(in_range<uint64_t>(0, kMaxSeed));
  auto sample_dev = std::make_shared<DeviceArgs>();
  sample_dev->add_to(s);
  s->callback([sa, s, sample_dev] {
    sample_dev->read_counts(s);
    const std::string ckpt = require_checkpoint(sa->checkpoint);
    const std::optional<Tokenizer> tok =
        sa->tokenizer.empty() ? read_checkpoint_tokenizer(ckpt) : Tokenizer::from_file(sa->tokenizer);
    const std::string tok_name = sa->tokenizer.empty() ? ckpt + "/tokenizer.json" : sa->tokenizer;
    LoadedModel m = load_model(ckpt, *sample_dev, "sample", [&](const GPTConfig& c, const BackendOptions& b) {
      if (tok && tok->vocab_size() > c.vocab_size)
        throw UserError(tok_name + ": the tokenizer has " + std::to_string(tok->vocab_size()) +
                        " tokens, more than the model's vocab_size " + std::to_string(c.vocab_size) + " (" + ckpt +
                        "/config.json)");
      if (!tok && c.vocab_size != kByteVocab)
        throw UserError(ckpt + "/config.json: vocab_size: text sampling without a tokenizer (--tokenizer, or a "
                               "tokenizer.json in the checkpoint) expects the byte-level vocabulary (256), got " +
                        std::to_string(c.vocab_size));
      return memory_plan(b, 1, c.block_size, false);
    });
    std::vector<int32_t> prompt;
    if (tok) tok->encode(sa->prompt, prompt, "--prompt");
    else prompt = encode_bytes(sa->prompt);
    // Non-finite logits would sample garbage that looks like text: check the first step's.
    {
      std::vector<int32_t> ctx = prompt.empty() ? std::vector<int32_t>{0} : prompt;
      const int T = std::min<int>((int)ctx.size(), m.model->config().block_size);
      m.model->forward(ctx.data() + ctx.size() - T, nullptr, 1, T);
      const std::vector<float> logits = m.model->backend().to_host_f32(m.model->logits());
      for (float x : logits)
        if (!std::isfinite(x))
          throw CommandFailed("sample: " + m.checkpoint +
                              " gives non-finite logits (non-finite weights or activations that overflow); no text");
    }
    std::vector<int32_t> out = generate(*m.model, prompt, sa->tokens, sa->temperature, sa->top_k, sa->seed);
    const std::string text = tok ? tok->decode(out.data(), out.size()) : decode_bytes(out.data(), (int)out.size());
    std::printf("%s\n", text.c_str());
  });
}

}  // namespace lt::cli
