// A small training job for the data-parallel tests: English-like byte shards and a TOML config
// with a 2-layer model, written into a directory the caller owns.
#pragma once
#include <chrono>
#include <string>
#include <vector>

#include "runtime/dist_env.h"
#include "tests/corpus.h"
#include "tests/util.h"

namespace lt::test {

struct DpJobSpec {
  int n_embd = 32, n_head = 2, n_layer = 2, T = 32;
  int micro_batch = 4, grad_accum = 1, steps = 20;
  int checkpoint_interval = 0, eval_interval = 0;
  std::string train = "";  // extra [train] lines
  std::string dist = "";   // extra [dist] lines
};

// Writes dir/NAME.toml for the shards in dir and returns its path.
inline std::string dp_write_config(const std::string& dir, const std::string& name, const DpJobSpec& s) {
  const std::string path = dir + "/" + name + ".toml";
  write_file(path, "[model]\nn_layer = " + std::to_string(s.n_layer) + "\nn_head = " + std::to_string(s.n_head) +
                       "\nn_embd = " + std::to_string(s.n_embd) + "\nblock_size = " + std::to_string(s.T) +
                       "\nvocab_size = 256\n[data]\ntrain = \"" + dir + "/d_train_*.bin\"\nval = \"" + dir +
                       "/d_val_*.bin\"\n[optim]\nlr = 1e-2\nwarmup_steps = 5\n[train]\nmicro_batch = " +
                       std::to_string(s.micro_batch) + "\nseq_len = " + std::to_string(s.T) +
                       "\ngrad_accum = " + std::to_string(s.grad_accum) + "\nsteps = " + std::to_string(s.steps) +
                       "\neval_interval = " + std::to_string(s.eval_interval) +
                       "\neval_batches = 2\ncheckpoint_interval = " + std::to_string(s.checkpoint_interval) +
                       "\nlog_interval = 5\n" + s.train + "[dist]\n" + s.dist + "\n");
  return path;
}

struct Timed {
  RunResult r;
  double seconds = 0;
};

// mpirun -np NP (this host's flags) COMMAND with extra environment, bounded by `timeout`.
inline Timed mpirun(int np, const std::string& command, const std::vector<std::string>& env = {}, int limit_s = 120) {
  std::vector<std::string> argv = local_mpirun_argv(np);
  for (const std::string& e : env) {
    argv.push_back("-x");
    argv.push_back(e);
  }
  TempDir io;
  const std::string out = io / "stdout", err = io / "stderr";
  const std::string cmd = "timeout -k 5 " + std::to_string(limit_s) + " " + shell_join(argv) + " " + command + " >'" +
                          out + "' 2>'" + err + "' </dev/null";
  const auto t0 = std::chrono::steady_clock::now();
  const int status = std::system(cmd.c_str());
  Timed t;
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  t.r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  t.r.out = read_file(out);
  t.r.err = read_file(err);
  return t;
}

}  // namespace lt::test
