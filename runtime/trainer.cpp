// The training loop, evaluation and sampling (see trainer.h).
#include "runtime/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/checkpoint.h"
#include "runtime/data.h"
#include "runtime/error.h"
#include "runtime/optim.h"
#include "runtime/rng.h"

namespace lt {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string format_duration(double seconds) {
  const int64_t s = (int64_t)std::llround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(s / 3600), (long long)(s / 60 % 60));
  else
    std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

std::string format_rate(double tokens_per_s) {
  char buf[32];
  if (tokens_per_s >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fM", tokens_per_s / 1e6);
  else if (tokens_per_s >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1fk", tokens_per_s / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", tokens_per_s);
  return buf;
}

bool run_dir_in_use(const std::string& out) {
  if (fs::exists(fs::path(out) / "metrics.jsonl")) return true;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(out) / "checkpoints", ec))
    if (e.path().filename().string().starts_with("step-")) return true;
  return false;
}

// On resume, metrics.jsonl may hold steps past the checkpoint (the run that died wrote them);
// keep only the lines up to the checkpoint, replacing the file atomically.
void truncate_metrics(const fs::path& file, int64_t last_step) {
  std::ifstream in(file);
  if (!in) return;
  const fs::path tmp = file.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    std::string line;
    while (std::getline(in, line)) {
      json j = json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.value("step", int64_t(0)) <= last_step) out << line << '\n';
    }
    if (!out) throw UserError(tmp.string() + ": cannot write");
  }
  fs::rename(tmp, file);
}

}  // namespace

EvalResult evaluate(GPT& model, const std::string& data_glob, int B, int T, int batches) {
  EvalLoader loader(data_glob, model.config().vocab_size);
  const int available = (int)loader.num_batches(B, T);
  if (available == 0)
    throw UserError(loader.shard().path() + ": token count: too few tokens for one batch of " + std::to_string(B) +
                    " x " + std::to_string(T + 1));
  EvalResult r;
  std::vector<int32_t> in((size_t)B * T), tgt((size_t)B * T);
  double sum = 0;
  for (int i = 0; i < std::min(batches, available); i++) {
    loader.next_batch(in.data(), tgt.data(), B, T);
    sum += model.forward(in.data(), tgt.data(), B, T);
    r.batches++;
  }
  r.loss = sum / r.batches;
  r.tokens = (int64_t)r.batches * B * T;
  return r;
}

std::vector<int32_t> generate(GPT& model, std::vector<int32_t> tokens, int n_tokens, float temperature, int top_k,
                              uint64_t seed) {
  const GPTConfig& c = model.config();
  const int Vp = c.padded_vocab();
  Rng rng(seed);
  std::vector<float> row(Vp);
  std::vector<std::pair<float, int>> cand;
  if (tokens.empty()) tokens.push_back(0);
  for (int i = 0; i < n_tokens; i++) {
    const int T = std::min<int>((int)tokens.size(), c.block_size);
    model.forward(tokens.data() + tokens.size() - T, nullptr, 1, T);
    const Tensor last = model.logits().view((int64_t)(T - 1) * Vp, {Vp});
    model.backend().to_host(row.data(), last);
    int next = 0;
    if (temperature <= 0.f) {
      next = (int)(std::max_element(row.begin(), row.begin() + c.vocab_size) - row.begin());
    } else {
      cand.clear();
      for (int v = 0; v < c.vocab_size; v++) cand.emplace_back(row[v] / temperature, v);
      if (top_k > 0 && top_k < (int)cand.size()) {
        std::partial_sort(cand.begin(), cand.begin() + top_k, cand.end(), std::greater<>());
        cand.resize(top_k);
      }
      float maxv = -INFINITY;
      for (auto& [l, v] : cand) maxv = std::max(maxv, l);
      double sum = 0;
      for (auto& [l, v] : cand) sum += std::exp(l - maxv);
      double u = rng.uniform() * sum, acc = 0;
      next = cand.back().second;
      for (auto& [l, v] : cand) {
        acc += std::exp(l - maxv);
        if (u < acc) {
          next = v;
          break;
        }
      }
    }
    tokens.push_back(next);
  }
  return tokens;
}

TrainResult run_train(const TrainOptions& o) {
  TrainConfig cfg = load_train_config(o.config_path);
  if (o.steps) cfg.steps = *o.steps;
  if (o.seed) cfg.seed = *o.seed;
  const fs::path out(o.out_dir);

  std::string resume_from;
  if (o.resume) {
    resume_from = latest_checkpoint(o.out_dir);
    if (resume_from.empty() && !o.quiet)
      std::printf("resume: no complete checkpoint under %s, starting from scratch\n", o.out_dir.c_str());
  }
  if (resume_from.empty() && run_dir_in_use(o.out_dir))
    throw UserError(o.out_dir + ": already holds a run (metrics.jsonl or checkpoints); pass --resume to continue "
                                "it or choose another --out");

  GPTConfig mcfg = cfg.model;
  std::string init_ckpt;
  if (!resume_from.empty()) {
    mcfg = read_checkpoint_config(resume_from);  // --init is moot once the run has its own checkpoint
  } else if (!o.init_dir.empty()) {
    init_ckpt = latest_checkpoint(o.init_dir);
    if (init_ckpt.empty()) throw UserError(o.init_dir + ": no checkpoint (expected model.safetensors and config.json)");
    mcfg = read_checkpoint_config(init_ckpt);
  }
  if (resume_from.empty() && init_ckpt.empty()) mcfg = cfg.model;
  if (cfg.seq_len > mcfg.block_size)
    throw UserError(cfg.source + ": train.seq_len: expected at most the model's context " +
                    std::to_string(mcfg.block_size) + ", got " + std::to_string(cfg.seq_len));

  auto backend = make_cpu_backend();
  GPT model(mcfg, *backend);
  AdamW optim(cfg.optim, model);
  DataLoader train(cfg.train_data, cfg.seq_len, mcfg.vocab_size, cfg.seed);
  if (!cfg.val_data.empty()) EvalLoader check(cfg.val_data, mcfg.vocab_size);  // fail before training

  int64_t start = 0;
  if (!resume_from.empty()) {
    load_model_weights(resume_from, model);
    json st = load_training_state(resume_from, optim);
    start = st.at("step").get<int64_t>();
    train.load_state(st.at("data"));
    if (st.value("init", std::string()).empty() && !(mcfg == cfg.model))
      throw UserError(cfg.source + ": [model]: differs from the checkpoint " + resume_from +
                      "/config.json being resumed; resume with the run's own config");
    if (!o.quiet) std::printf("resume: %s (step %lld)\n", resume_from.c_str(), (long long)start);
  } else if (!init_ckpt.empty()) {
    load_model_weights(init_ckpt, model);
    if (!o.quiet) std::printf("init: weights from %s\n", init_ckpt.c_str());
  } else {
    model.init_weights(cfg.seed);
  }

  fs::create_directories(out);
  const fs::path metrics_path = out / "metrics.jsonl";
  if (start > 0) truncate_metrics(metrics_path, start);
  std::FILE* metrics = std::fopen(metrics_path.c_str(), "a");
  if (!metrics) throw UserError(metrics_path.string() + ": cannot open for writing");

  const int B = cfg.micro_batch, T = cfg.seq_len;
  const int64_t tokens_per_step = (int64_t)B * T * cfg.grad_accum;
  if (!o.quiet)
    std::printf("model: %d layers, %d heads, %d wide, context %d, vocab %d (%.2fM parameters) | batch %d x %d x %d "
                "accum = %lld tokens/step | %lld steps | data %llu tokens, %llu windows/epoch\n",
                mcfg.n_layer, mcfg.n_head, mcfg.n_embd, mcfg.block_size, mcfg.vocab_size,
                (double)(model.num_params() - (int64_t)(mcfg.padded_vocab() - mcfg.vocab_size) * mcfg.n_embd) / 1e6, B,
                T, cfg.grad_accum, (long long)tokens_per_step, (long long)cfg.steps,
                (unsigned long long)train.num_tokens(), (unsigned long long)train.samples_per_epoch());

  TrainResult result;
  std::vector<int32_t> in((size_t)B * T), tgt((size_t)B * T);
  using clock = std::chrono::steady_clock;
  double total_s = 0;
  auto save = [&](int64_t step) {
    json st{{"step", step}, {"seed", cfg.seed}, {"total_steps", cfg.steps}, {"data", train.state()},
            {"init", init_ckpt}};
    result.last_checkpoint = save_checkpoint(o.out_dir, model, optim, st);
    if (!o.quiet) std::printf("checkpoint: %s\n", result.last_checkpoint.c_str());
  };
  for (int64_t step = start; step < cfg.steps; step++) {
    const auto t0 = clock::now();
    double loss = 0;
    for (int micro = 0; micro < cfg.grad_accum; micro++) {
      train.next_batch(in.data(), tgt.data(), B);
      loss += model.forward(in.data(), tgt.data(), B, T) / cfg.grad_accum;
      model.backward(1.f / (float)cfg.grad_accum);
    }
    const float lr = lr_at(cfg.optim, step, cfg.steps);
    const float norm = optim.step(lr);
    const double secs = std::chrono::duration<double>(clock::now() - t0).count();
    if (!std::isfinite(loss))
      throw UserError(cfg.source + ": training diverged at step " + std::to_string(step + 1) +
                      " (loss is not finite); lower optim.lr or raise optim.warmup_steps");
    const int64_t done = step + 1;
    total_s += secs;
    result.losses.push_back((float)loss);
    json line{{"step", done}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens_per_s", tokens_per_step / secs},
              {"ms", secs * 1e3}};
    const bool last = done == cfg.steps;
    if (!cfg.val_data.empty() && ((cfg.eval_interval > 0 && done % cfg.eval_interval == 0) || last)) {
      EvalResult ev = evaluate(model, cfg.val_data, B, T, cfg.eval_batches);
      line["val_loss"] = ev.loss;
      result.last_val_loss = (float)ev.loss;
    }
    std::fprintf(metrics, "%s\n", line.dump().c_str());
    std::fflush(metrics);
    if (!o.quiet && (done % cfg.log_interval == 0 || last || line.contains("val_loss"))) {
      const double eta = total_s / (double)(done - start) * (double)(cfg.steps - done);
      std::printf("step %*lld/%lld | loss %.4f | lr %.2e | norm %.3f | %s tok/s | %.1f ms | ETA %s",
                  (int)std::to_string(cfg.steps).size(), (long long)done, (long long)cfg.steps, loss, lr, norm,
                  format_rate(tokens_per_step / secs).c_str(), secs * 1e3, format_duration(eta).c_str());
      if (line.contains("val_loss")) std::printf(" | val_loss %.4f", line["val_loss"].get<double>());
      std::printf("\n");
      std::fflush(stdout);
    }
    if (last || (cfg.checkpoint_interval > 0 && done % cfg.checkpoint_interval == 0)) save(done);
    result.steps_done = done;
  }
  std::fclose(metrics);
  return result;
}

}  // namespace lt
