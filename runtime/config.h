// The training job's TOML configuration: [model], [data], [optim], [train], [dist]. Unknown keys,
// wrong types and out-of-range values are UserErrors naming the file and the key.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "runtime/model.h"
#include "runtime/optim.h"

namespace lt {

// The largest step count (train.steps, --steps) and seed (train.seed, --seed) accepted anywhere.
// Seeds stay within int64 so every JSON reader of a saved state reads them back unchanged.
inline constexpr int64_t kMaxSteps = int64_t(1) << 40;
inline constexpr uint64_t kMaxSeed = (uint64_t)INT64_MAX;

// [dist]: data parallelism across ranks (ignored by a single-rank run). See runtime/ddp.h.
struct DistConfig {
  int zero = 0;                     // 1: ZeRO-1 (optimizer state sharded across ranks)
  double bucket_mb = 25.0;          // gradient bucket cap, MB (1e6 bytes)
  double first_bucket_mb = 1.0;     // the first bucket (the last layers) is small so it starts early
  bool overlap = true;              // reduce buckets during backward (false: all after backward)
  int64_t checksum_interval = 100;  // cross-rank parameter checksum every N steps (0: off)
  // Seconds a collective may wait before the job is aborted. It must exceed the longest gap
  // between ranks reaching a collective: rank 0 writing a checkpoint while the others wait.
  double watchdog_timeout = 300.0;
  std::string progress = "thread";  // MPI progress: "thread" (a communication thread) or "poll"
};

struct TrainConfig {
  GPTConfig model;
  // The [model] keys the file sets, with their values: `train --init` checks them against the
  // checkpoint (an omitted [model] takes the checkpoint's shape).
  std::map<std::string, int> model_given;
  std::string train_data;  // glob of llm.c token shards
  std::string val_data;    // glob; empty disables evaluation
  AdamWConfig optim;
  int micro_batch = 16;      // sequences per micro-step (per rank)
  int seq_len = 128;         // tokens per sequence, <= model.block_size
  int grad_accum = 1;        // micro-steps per optimizer step
  int64_t steps = 1000;      // optimizer steps (also the schedule's horizon)
  int64_t eval_interval = 100;  // 0: evaluate only at the end
  int eval_batches = 20;
  int64_t checkpoint_interval = 0;  // 0: checkpoint only at the end
  // checkpoint_interval = "auto": the interval from the measured save time and the mean time
  // between failures (Young/Daly, see trainer.cpp); checkpoint_interval is then 0.
  bool checkpoint_auto = false;
  double mtbf_hours = 0;           // the job's MTBF; 0: node_mtbf_hours / nodes (LEASETRAIN_NODES)
  // Per node. Large-cluster failure reports (e.g. Meta's Llama 3 run, ~419 interruptions in 54
  // days on 16k GPUs = 2k nodes) put a GPU node's MTBF in the thousands of hours.
  double node_mtbf_hours = 5000;
  double preempt_grace = 30;       // seconds after SIGTERM/SIGUSR1/SIGINT a final save may end by
  int64_t log_interval = 10;        // progress line every N steps (metrics.jsonl gets every step)
  uint64_t seed = 1337;
  DistConfig dist;
  std::string source;  // the file it was read from, for messages
};

TrainConfig load_train_config(const std::string& path);

}  // namespace lt
