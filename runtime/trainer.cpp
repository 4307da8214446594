// The training loop, evaluation and sampling (see trainer.h).
#include "runtime/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "runtime/checkpoint.h"
#include "runtime/comm.h"
#include "runtime/data.h"
#include "runtime/ddp.h"
#include "runtime/dist_env.h"
#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/optim.h"
#include "runtime/rng.h"
#include "runtime/safe_path.h"
#include "runtime/tokenizer.h"
#include "runtime/watchdog.h"

#ifdef LEASETRAIN_HAVE_CUDA
#include "runtime/cuda_backend.h"
#endif

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

// What an earlier run left in `out`: metrics.jsonl and anything under checkpoints/ (finished,
// unfinished or set aside). Relative names, for messages.
std::vector<std::string> run_leftovers(const fs::path& out) {
  std::vector<std::string> found;
  std::error_code ec;
  if (fs::exists(fs::symlink_status(out / "metrics.jsonl", ec))) found.push_back("metrics.jsonl");
  for (const auto& e : fs::directory_iterator(out / "checkpoints", ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("step-") || name.starts_with(".tmp-step-") || name.starts_with(".old-step-"))
      found.push_back("checkpoints/" + name);
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::string list_some(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < 3; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > 3) s += " and " + std::to_string(names.size() - 3) + " more";
  return s;
}

// metrics.jsonl, appended one whole line per step by rank 0. Every write is checked; a failed one
// cuts the file back to its last whole line and throws (the run stops), so no half record stays.
class MetricsLog {
 public:
  MetricsLog(const WriteRoot& root, const std::string& rel) : shown_(root.display(rel)) {
    // O_NONBLOCK: a FIFO planted here fails to open instead of blocking; regular files ignore it.
    fd_ = root.open_file(rel, O_WRONLY | O_CREAT | O_APPEND | O_NONBLOCK, 0644);
    struct stat st;
    if (::fstat(fd_.get(), &st) != 0) throw_write_error(shown_, "cannot stat", errno);
    if (!S_ISREG(st.st_mode)) throw UserError(shown_ + ": must be a regular file");
    size_ = st.st_size;
  }
  void append(const std::string& line) {
    const std::string text = line + "\n";
    try {
      write_all_or_throw(fd_.get(), text.data(), text.size(), shown_, false);
    } catch (...) {
      if (::ftruncate(fd_.get(), size_) != 0) {  // best effort; a resume drops a torn line anyway
      }
      throw;
    }
    size_ += (off_t)text.size();
  }
  // Durable up to here: done before each checkpoint, so the log covers what the checkpoint does.
  void sync() {
    if (::fsync(fd_.get()) != 0) throw_write_error(shown_, "fsync failed", errno);
  }
  void close() {
    sync();
    fd_.close_checked(shown_);
  }

 private:
  std::string shown_;
  Fd fd_;
  off_t size_ = 0;
};

// On resume, metrics.jsonl may hold steps past the checkpoint (the run that died wrote them) and
// a torn last line (it died, or the disk filled, mid-write): keep only whole, valid lines up to
// the checkpoint's step (none when restarting from step 0), replacing the file atomically.
void truncate_metrics(const WriteRoot& root, const std::string& rel, int64_t last_step) {
  if (!root.exists(rel)) return;
  const std::string shown = root.display(rel);
  Fd in = root.open_file(rel, O_RDONLY | O_NONBLOCK);
  struct stat st;
  if (::fstat(in.get(), &st) != 0 || !S_ISREG(st.st_mode)) throw UserError(shown + ": must be a regular file");
  std::string text, kept;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(in.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_write_error(shown, "cannot read", errno);
    if (n == 0) break;
    text.append(buf, (size_t)n);
    if (text.size() > kMaxTextInputBytes) throw UserError(shown + ": larger than the " + std::to_string(kMaxTextInputBytes) + " bytes accepted");
  }
  size_t at = 0;
  for (size_t nl; (nl = text.find('\n', at)) != std::string::npos; at = nl + 1) {  // a line without '\n' is torn
    const std::string line = text.substr(at, nl - at);
    try {
      const json j = parse_json(line, shown);
      if (j.is_object() && JsonFields(j, shown).integer("step", 1) <= last_step) kept += line + "\n";
    } catch (const UserError&) {
    }
  }
  write_file_atomic(root, rel, kept);
}

}  // namespace

EvalResult evaluate(GPT& model, const std::string& data_glob, int B, int T, int batches, DataParallel* dp, int rows) {
  const int world = dp ? dp->world() : 1, rank = dp ? dp->rank() : 0;
  const int GB = rows > 0 ? rows : B * world;  // rows of one global batch
  EvalLoader loader(data_glob, model.config().vocab_size);
  const int available = (int)loader.num_batches(GB, T);
  if (available == 0)
    throw UserError(loader.shard().path() + ": token count: too few tokens for one batch of " + std::to_string(GB) +
                    " x " + std::to_string(T + 1));
  // A loss over fewer batches than asked would be reported as if it were the one asked for.
  if (batches > available)
    throw UserError(loader.shard().path() + ": holds " + std::to_string(available) + " batches of " +
                    std::to_string(GB) + " x " + std::to_string(T) + " tokens, fewer than the " +
                    std::to_string(batches) + " asked for (ask for fewer, or 0 for all)");
  if (batches == 0) batches = available;
  EvalResult r;
  std::vector<int32_t> in((size_t)GB * T), tgt((size_t)GB * T);
  // This rank's rows of each batch: an even share (the first GB % world ranks take one more),
  // in equal chunks of at most B rows, so the activations are sized once.
  const int mine = GB / world + (rank < GB % world), first = rank * (GB / world) + std::min(rank, GB % world);
  int chunk = std::min(B, std::max(mine, 1));
  while (mine % chunk) chunk--;
  double sum = 0;  // over this rank's rows, of each row's mean token loss
  for (int i = 0; i < batches; i++) {
    loader.next_batch(in.data(), tgt.data(), GB, T);
    for (int r0 = 0; r0 < mine; r0 += chunk) {
      const size_t at = (size_t)(first + r0) * T;
      sum += (double)model.forward(in.data() + at, tgt.data() + at, chunk, T) * chunk;
    }
    r.batches++;
  }
  if (world > 1) sum = dp->sum({(float)sum})[0];
  r.loss = sum / ((double)r.batches * GB);
  r.tokens = (int64_t)r.batches * GB * T;
  return r;
}

std::optional<BatchSplit> split_global_batch(int64_t global_batch, int world, int max_micro_batch) {
  if (global_batch < 1 || world < 1 || global_batch % world != 0) return std::nullopt;
  const int64_t share = global_batch / world;
  for (int64_t b = std::min<int64_t>(max_micro_batch, share); b >= 1; b--)
    if (share % b == 0) {
      // The largest micro batch gives the fewest steps; more than the config allows (and an int
      // holds) is no split.
      if (share / b > kMaxGradAccum) return std::nullopt;
      return BatchSplit{(int)b, (int)(share / b)};
    }
  return std::nullopt;
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
    row = model.backend().to_host_f32(last);
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

namespace {

// Test-only faults, from LEASETRAIN_TEST_FAULT="KIND:RANK:STEP[:ATTEMPT]": at the start of step
// STEP (1-based) rank RANK stalls forever ("stall": its peers wait in a collective until the
// watchdog fires), kills itself with SIGKILL ("kill"), throws ("throw"; STEP 0: while setting
// up its device, after MPI is up), or sends itself a preemption notice ("sigterm", "sigusr1",
// "sigint"; STEP 0: during set-up, as "throw" does); "perturb" changes one of its parameters after that step (the checksum must
// notice); "kill-in-save" SIGKILLs it while the checkpoint of step STEP is written (rank 0:
// with every file written but the seal; another rank: as rank 0 starts writing). With ATTEMPT
// the fault fires only when LEASETRAIN_ATTEMPT (set by `launch`) equals it.
struct Fault {
  std::string kind;
  int rank = -1;
  int64_t step = -1;
};

Fault test_fault() {
  Fault f;
  const char* v = std::getenv("LEASETRAIN_TEST_FAULT");
  if (!v || !*v) return f;
  const std::string s(v);
  const size_t a = s.find(':'), b = s.find(':', a + 1);
  if (a == std::string::npos || b == std::string::npos)
    throw UserError("environment: LEASETRAIN_TEST_FAULT: expected KIND:RANK:STEP[:ATTEMPT], got '" + s + "'");
  const size_t c = s.find(':', b + 1);
  f.kind = s.substr(0, a);
  f.rank = std::atoi(s.substr(a + 1, b - a - 1).c_str());
  f.step = std::atoll(s.substr(b + 1, c == std::string::npos ? std::string::npos : c - b - 1).c_str());
  static const char* const kinds[] = {"stall", "kill", "throw", "perturb", "sigterm", "sigusr1", "sigint", "kill-in-save"};
  if (std::find(std::begin(kinds), std::end(kinds), f.kind) == std::end(kinds))
    throw UserError("environment: LEASETRAIN_TEST_FAULT: expected stall, kill, throw, perturb, sigterm, sigusr1, sigint "
                    "or kill-in-save, got '" + f.kind + "'");
  if (c != std::string::npos) {
    const char* attempt = std::getenv("LEASETRAIN_ATTEMPT");
    if (!attempt || s.substr(c + 1) != attempt) return Fault{};
  }
  return f;
}

// The signal faults: a notice to the process, as a scheduler sends it.
void send_fault_signal(const std::string& kind) {
  if (kind == "sigterm") ::kill(::getpid(), SIGTERM);
  if (kind == "sigusr1") ::kill(::getpid(), SIGUSR1);
  if (kind == "sigint") ::kill(::getpid(), SIGINT);
}

// Preemption notices. SIGTERM (a scheduler or an operator draining a node), SIGUSR1 (Slurm's
// --signal; OpenMPI's mpirun forwards it to every rank, while SIGTERM to mpirun kills the job)
// and a first SIGINT only set a flag, read at the next step boundary, so a save in progress
// always finishes. The first notice restores the default action of SIGINT: a second SIGINT
// (a person at a terminal) ends the process at once. A repeated SIGTERM is one more notice: a
// scheduler may send it twice for one stop (Slurm cancelling a job signals each task from its
// step daemon and again through srun's own termination of the step), and its hard stop is
// SIGKILL after its grace period (Slurm's KillWait).
std::atomic<int> g_notice{0};           // the first signal received, 0: none
std::atomic<int64_t> g_notice_ns{0};    // when (CLOCK_MONOTONIC)
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<int64_t>::is_always_lock_free);

int64_t monotonic_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

extern "C" void on_preemption_notice(int sig) {
  int none = 0;
  if (g_notice.compare_exchange_strong(none, sig)) g_notice_ns.store(monotonic_ns());
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGINT, &dfl, nullptr);
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGINT: return "SIGINT";
    default: return "a signal";
  }
}

// Installs the handlers for one run and puts the previous ones back when it ends.
class PreemptionNotices {
 public:
  PreemptionNotices() {
    g_notice = 0;
    struct sigaction sa {};
    sa.sa_handler = on_preemption_notice;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // blocking calls continue: the flag is read at the step boundary
    for (size_t i = 0; i < 3; i++) ::sigaction(kSignals[i], &sa, &old_[i]);
  }
  ~PreemptionNotices() {
    for (size_t i = 0; i < 3; i++) ::sigaction(kSignals[i], &old_[i], nullptr);
  }
  PreemptionNotices(const PreemptionNotices&) = delete;
  PreemptionNotices& operator=(const PreemptionNotices&) = delete;

  static int signal() { return g_notice.load(); }
  static double seconds_since() { return g_notice ? (double)(monotonic_ns() - g_notice_ns.load()) / 1e9 : 0.0; }

 private:
  static constexpr int kSignals[3] = {SIGTERM, SIGUSR1, SIGINT};
  struct sigaction old_[3];
};

TrainResult train_with(const TrainOptions& o, TrainConfig cfg, Communicator& comm, Backend& backend);

// The communicator over the backend's device buffers: none for the CPU (the host one serves);
// on CUDA a one-process communicator, or NCCL bootstrapped over `host` for several ranks.
std::unique_ptr<Communicator> make_device_comm(Backend& backend, Communicator& host, int device_index) {
  if (backend.device() == Device::CPU) return nullptr;
#ifdef LEASETRAIN_HAVE_CUDA
  if (host.world() == 1) return make_cuda_self_comm();
#ifdef LEASETRAIN_HAVE_NCCL
  NcclCommOptions nopt;
  nopt.device_index = device_index;
  nopt.compute_stream = cuda_backend_stream(backend);
  return make_nccl_comm(&host, host.rank(), host.world(), nopt);
#else
  throw UserError("data parallel training on CUDA needs NCCL, and this build has none (NCCL was not found when it "
                  "was configured)");
#endif
#else
  throw UserError("this build has no CUDA");
#endif
}

}  // namespace

TrainResult run_train(const TrainOptions& o) {
  // Past a file size limit (RLIMIT_FSIZE) write(2) then fails with EFBIG and the run stops with
  // a line naming the file, instead of the default SIGXFSZ killing it with a core dump.
  std::signal(SIGXFSZ, SIG_IGN);
  // From the start: a notice during set-up (MPI, the config, the checkpoint and data loading)
  // must not kill the rank; the run stops at its first step boundary.
  const PreemptionNotices notices;
  auto load = [&o] {
    TrainConfig cfg = load_train_config(o.config_path);
    if (o.steps) cfg.steps = *o.steps;
    if (o.seed) cfg.seed = *o.seed;
    return cfg;
  };
  if (o.comm) {
    const TrainConfig cfg = load();
    std::unique_ptr<Backend> backend = make_backend(o.backend);
    return train_with(o, cfg, *o.comm, *backend);
  }

  const DistEnv env = read_dist_env();
  TrainConfig cfg;
  std::unique_ptr<Backend> backend;  // declared first, so it outlives the communicators using its stream
  std::unique_ptr<Communicator> comm, device_comm;
  try {
    cfg = load();
    comm = make_cpu_communicator(env, cfg.dist);
    backend = make_backend(o.backend);
    const Fault fault = test_fault();  // at step 0: one rank's device set-up fails, or it gets a notice
    if (fault.step == 0 && fault.rank == env.rank) {
      if (fault.kind == "throw") throw UserError("LEASETRAIN_TEST_FAULT: injected set-up failure");
      send_fault_signal(fault.kind);
    }
    device_comm = make_device_comm(*backend, *comm, o.backend.device_index);
  } catch (const std::exception& e) {
    if (env.world == 1) throw;
    // Before the host communicator exists every rank fails alike (the same config): each says
    // so and exits. After it, a failure can be this rank's alone (its GPU, NCCL's set-up)
    // while the others wait in a collective: take the whole job down.
    if (!comm) throw UserError("rank " + std::to_string(env.rank) + "/" + std::to_string(env.world) + ": " + e.what());
    std::fprintf(stderr, "leasetrain: %s: error: %s\n", comm->who().c_str(), e.what());
    comm->abort(dynamic_cast<const UserError*>(&e) ? kExitBadInput : kExitFailure);
  }
  Communicator& run_comm = device_comm ? *device_comm : *comm;
  // A failing rank says so with its rank, leaves its last words in the job dir, and takes the
  // whole job down: peers blocked in a collective would otherwise wait for it until the
  // watchdog fires.
  try {
    return train_with(o, cfg, run_comm, *backend);
  } catch (const std::exception& e) {
    const int code = dynamic_cast<const UserError*>(&e) ? kExitBadInput : kExitFailure;
    if (o.policy) o.policy->record_exit(comm->rank(), code, e.what());
    if (comm->world() == 1) throw;
    std::fprintf(stderr, "leasetrain: %s: error: %s\n", comm->who().c_str(), e.what());
    comm->abort(code);
  }
  std::abort();  // not reached: abort() ends the process
}

namespace {

// The checkpoint a run resumes from ("" for step 0), decided from what --out holds before
// anything is written: refuses a directory in use without --resume, says why it passes over a
// checkpoint that does not verify, and restarts a run that never completed a checkpoint.
std::string choose_start(const TrainOptions& o, bool log) {
  const fs::path out(o.out_dir);
  const std::vector<std::string> leftovers = run_leftovers(out);
  CheckpointSearch found;
  if (o.resume || !leftovers.empty()) found = find_checkpoint((out / "checkpoints").string());
  if (o.resume) {
    if (log)
      for (const std::string& why : found.skipped) std::printf("resume: skipping %s\n", why.c_str());
    // Passing over an unsealed checkpoint would silently lose its steps: say how to accept it.
    if (!found.legacy.empty()) verify_checkpoint(found.legacy);
    // Damaged checkpoints are passed over for an older good one, but never silently for step 0.
    if (found.path.empty() && !found.skipped.empty())
      throw UserError(o.out_dir + ": no checkpoint verifies (" + found.skipped.front() +
                      "); move the damaged checkpoints/step-* aside to start again from step 0, or choose another --out");
    if (found.path.empty() && log)
      std::printf("resume: no complete checkpoint under %s, starting from step 0%s\n", o.out_dir.c_str(),
                  leftovers.empty() ? "" : " (its metrics.jsonl and unfinished checkpoints are dropped)");
    return found.path;
  }
  if (leftovers.empty()) return "";
  if (!found.path.empty())
    throw UserError(o.out_dir + ": already holds a run (newest checkpoint " + fs::path(found.path).filename().string() +
                    "); pass --resume to continue it or choose another --out");
  if (!found.skipped.empty())
    throw UserError(o.out_dir + ": holds a run whose checkpoints do not verify (" + found.skipped.front() +
                    "); choose another --out");
  throw UserError(o.out_dir + ": holds what a run left before completing any checkpoint (" + list_some(leftovers) +
                  "); pass --resume to start it again from step 0 (removing those), or choose another --out");
}

// Rank 0's first writes: --out opened (beneath LEASETRAIN_WRITE_ROOTS when set) into `root`,
// leftovers of killed saves removed, metrics.jsonl cut back to the step resumed from, opened.
std::unique_ptr<MetricsLog> open_outputs(const TrainOptions& o, int64_t start, bool log, WriteRoot& root) {
  root = WriteRoot::open_out_dir(o.out_dir);
  // Killed saves leave .tmp-step-* (and a fallback swap .old-step-*): never trusted, removed
  // before this run's first save.
  if (root.exists("checkpoints"))
    for (const std::string& name : root.list("checkpoints"))
      if (name.starts_with(".tmp-step-") || name.starts_with(".old-step-")) {
        const std::string rel = "checkpoints/" + name;
        if (!root.remove_all(rel)) throw_write_error(root.display(rel), "cannot remove an unfinished checkpoint", errno);
        if (log) std::printf("cleanup: removed unfinished checkpoint %s\n", root.display(rel).c_str());
      }
  if (o.resume) truncate_metrics(root, "metrics.jsonl", start);
  root.open_dir("checkpoints", true);  // a link here is refused now, not at the first save
  return std::make_unique<MetricsLog>(root, "metrics.jsonl");
}

// One training run, in the phases a reader looks for: set-up (everything checked and loaded
// before the first write), then per step train_step, evaluate_into and checkpoint, and the
// lease's deadline check. train_with builds one and runs it.
class TrainingRun {
 public:
  TrainingRun(const TrainOptions& o, TrainConfig cfg, Communicator& comm, Backend& backend)
      : o_(o), cfg_(std::move(cfg)), comm_(comm), backend_(backend), rank_(comm.rank()), world_(comm.world()),
        log_(!o.quiet && rank_ == 0), policy_(o.policy ? *o.policy : unrestricted()), out_(o.out_dir),
        fault_(test_fault()), unwatch_{comm} {
    set_up();
  }

  TrainResult run() {
    for (int64_t step = start_; step < cfg_.steps; step++) {
      comm_.set_step(step + 1);
      inject_fault_before(step + 1);
      in_step_ = true;  // until the agreement: the waits a preemption notice bounds (start_watchdog)
      json line = train_step(step);
      in_step_ = false;
      const int64_t done = step + 1;
      const bool last = done == cfg_.steps;
      if (!cfg_.val_data.empty() && ((cfg_.eval_interval > 0 && done % cfg_.eval_interval == 0) || last))
        evaluate_into(line);
      if (metrics_) metrics_->append(line.dump());
      print_progress(line, done, last);
      const double step_s = line["ms"].get<double>() / 1e3;
      if (done > start_ + 1) timed_s_ += step_s, timed_steps_++;  // the attempt's first step warms up
      longest_step_s_ = std::max(longest_step_s_.load(), step_s);
      in_step_ = true;
      const Boundary b = agree_at_boundary(done, step_s);
      in_step_ = false;
      const bool saved = last || b.checkpoint;
      if (saved) checkpoint(done);
      result_.steps_done = done;
      if (done == start_ + 1 && !saved) report_progress(done);
      if (last) break;
      if (b.preempted) {
        stop_for_preemption(done, saved, b);
        break;
      }
      if (b.deadline) {
        stop_for_deadline(done, saved);
        break;
      }
    }
    if (metrics_) metrics_->close();
    return result_;
  }

 private:
  static const RunPolicy& unrestricted() {
    static const RunPolicy p;
    return p;
  }

  // ---- set-up: every check and every load happens here, before rank 0's first write --------
  void set_up() {
    // Everything the run reads or writes must be inside what the policy (the lease) allows.
    policy_.check_path(o_.out_dir, true);
    for (const std::string* pattern : {&cfg_.train_data, &cfg_.val_data})
      if (!pattern->empty())
        for (const std::string& f : glob_files(*pattern)) policy_.check_path(f, false);

    resume_from_ = choose_start(o_, log_);
    mcfg_ = cfg_.model;
    if (!resume_from_.empty()) {
      mcfg_ = read_checkpoint_config(resume_from_);  // --init is moot once the run has its own checkpoint
    } else if (!o_.init_dir.empty()) {
      init_ckpt_ = require_checkpoint(o_.init_dir);
      mcfg_ = read_checkpoint_config(init_ckpt_);
      // The shape is the checkpoint's; a [model] that says otherwise is a mistake, not a wish.
      const std::pair<const char*, int> ckpt_values[] = {{"n_layer", mcfg_.n_layer}, {"n_head", mcfg_.n_head},
                                                         {"n_embd", mcfg_.n_embd}, {"block_size", mcfg_.block_size},
                                                         {"vocab_size", mcfg_.vocab_size}};
      for (const auto& [key, value] : ckpt_values)
        if (auto it = cfg_.model_given.find(key); it != cfg_.model_given.end() && it->second != value)
          throw UserError(cfg_.source + ": model." + key + " = " + std::to_string(it->second) + " but " + init_ckpt_ +
                          "/config.json has " + (std::string(key) == "block_size" ? "n_positions" : key) + " = " +
                          std::to_string(value) + " (--init takes the model's shape from the checkpoint: omit [model] "
                          "or make them agree)");
      if (log_)
        if (const std::string w = checkpoint_dropout_warning(init_ckpt_); !w.empty())
          std::fprintf(stderr, "warning: %s\n", w.c_str());
    }
    if (cfg_.seq_len > mcfg_.block_size)
      throw UserError(cfg_.source + ": train.seq_len: expected at most the model's context " +
                      std::to_string(mcfg_.block_size) + ", got " + std::to_string(cfg_.seq_len));

    start_watchdog();
    model_ = std::make_unique<GPT>(mcfg_, backend_);
    dp_ = std::make_unique<DataParallel>(*model_, comm_, cfg_.dist);
    optim_ = dp_->make_optimizer(cfg_.optim);
    find_tokenizer();  // before the shards' ids are checked against the vocabulary: the better message
    train_ = std::make_unique<DataLoader>(cfg_.train_data, cfg_.seq_len, mcfg_.vocab_size, cfg_.seed);
    global_batch_ = (int64_t)cfg_.micro_batch * world_ * cfg_.grad_accum;
    eval_rows_ = (int64_t)cfg_.micro_batch * world_;
    load_start_state();
    check_validation_data();
    if (cfg_.checkpoint_auto) nodes_ = nodes_from_env();
    dp_->broadcast_parameters(0);

    // The first writes, rank 0 only: everything below resolves beneath --out (safe_path.h).
    if (rank_ == 0) metrics_ = open_outputs(o_, start_, log_, root_);
    print_plan();
  }

  void start_watchdog() {
    if (world_ == 1) return;
    const double timeout = cfg_.dist.watchdog_timeout;
    Communicator& comm = comm_;
    const RunPolicy* policy = &policy_;
    watchdog_ = std::make_shared<Watchdog>(timeout, [&comm, timeout, policy](const Work& w, double waited) {
      char what[512];
      std::snprintf(what, sizeof what,
                    "watchdog: %s not done %.1f s after it was issued (timeout %g s, dist.watchdog_timeout): "
                    "another rank is stalled or dead; aborting the job",
                    w.describe().c_str(), waited, timeout);
      std::fprintf(stderr, "leasetrain: %s: %s\n", comm.who().c_str(), what);
      policy->record_exit(comm.rank(), kExitWatchdog, what);
      comm.abort(kExitWatchdog);
    });
    // After a preemption notice a rank waits for its peers only as long as a step can take: a
    // collective of the step (or of the agreement after it) still pending 5 longest steps (at
    // least 10 s, at most train.preempt_grace) after both the notice and its issue means a peer
    // is gone or stalled, and the notice cannot be honoured by all: the watchdog's exit (3). Under srun a lost rank is
    // exactly this: --kill-on-bad-exit sends the survivors SIGTERM while they wait for it, and
    // they would otherwise wait until the scheduler's SIGKILL (Slurm's KillWait). Set-up,
    // evaluation and checkpoints are not bounded so: a healthy rank may wait long there.
    watchdog_->set_due(
        [this](double waited) {
          if (!in_step_.load() || !PreemptionNotices::signal()) return false;
          const double bound = std::min(cfg_.preempt_grace, std::max(10.0, 5 * longest_step_s_.load()));
          return std::min(waited, PreemptionNotices::seconds_since()) > bound;
        },
        [&comm, policy](const Work& w, double waited) {
          // Not exit 75: the notice could not be honoured because a rank failed, and launch must
          // see that failure (leave the rank's slot out, count the restart), as after a watchdog.
          char what[512];
          std::snprintf(what, sizeof what,
                        "preempted by %s, but %s has waited %.1f s for the other ranks: a rank is gone or "
                        "stalled; stopping without a checkpoint (exit %d)",
                        signal_name(PreemptionNotices::signal()), w.describe().c_str(), waited, kExitWatchdog);
          std::fprintf(stderr, "leasetrain: %s: %s\n", comm.who().c_str(), what);
          policy->record_exit(comm.rank(), kExitWatchdog, what);
          comm.abort(kExitWatchdog);
        });
    comm_.set_watchdog(watchdog_);
    // Every rank has looked at the run directory before rank 0 writes into it.
    comm_.set_step(0);
    comm_.set_tag("start-up barrier");
    comm_.barrier()->wait();
  }

  // The tokenizer the shards were made with (data prepare writes PREFIX_tokenizer.json beside
  // them), copied into every checkpoint. Shards without one take the tokenizer of the checkpoint
  // resumed or started from (--init), else bytes when the vocabulary is 256; shards of unknown
  // ids (llm.c's GPT-2 shards) leave the checkpoint without one.
  void find_tokenizer() {
    const std::string& prev = !resume_from_.empty() ? resume_from_ : init_ckpt_;
    std::optional<Tokenizer> prev_tok;
    if (!prev.empty()) {
      try {
        prev_tok = read_checkpoint_tokenizer(prev);
      } catch (const UserError& e) {
        // A Hugging Face export's tokenizer we cannot read does not stop training its weights.
        if (fs::exists(fs::path(prev) / "trainer.json")) throw;  // ours, sealed: damaged
        if (log_) std::printf("init: its tokenizer is not copied into checkpoints: %s\n", e.what());
      }
    }
    std::vector<std::string> shards = glob_files(cfg_.train_data);
    if (!cfg_.val_data.empty())
      for (std::string& f : glob_files(cfg_.val_data)) shards.push_back(std::move(f));
    std::string source;
    if (std::optional<ShardsTokenizer> found = find_shards_tokenizer(shards)) {
      tokenizer_ = Tokenizer::from_json(found->json_text, found->path);
      source = found->path;
      if (prev_tok && !tokenizer_->encodes_like(*prev_tok))
        throw UserError(found->path + ": encodes text differently from " + prev +
                        "/tokenizer.json, so the shards' ids would not mean what the model learnt (prepare the data "
                        "with that tokenizer.json)");
    } else if (prev_tok) {
      tokenizer_ = std::move(prev_tok);
      source = prev + "/tokenizer.json";
    } else if (mcfg_.vocab_size == kByteVocab) {
      tokenizer_ = Tokenizer::from_json(Tokenizer::byte_level_json(), "the byte-level tokenizer");
    }
    if (tokenizer_ && tokenizer_->vocab_size() > mcfg_.vocab_size) {
      const std::string vocab_source = !prev.empty() ? prev + "/config.json: vocab_size" : cfg_.source + ": model.vocab_size";
      throw UserError(vocab_source + ": expected at least the tokenizer's " + std::to_string(tokenizer_->vocab_size()) +
                      " tokens (" + source + "), got " + std::to_string(mcfg_.vocab_size));
    }
  }

  // Fail now, not at the first evaluation after files are written.
  void check_validation_data() const {
    if (cfg_.val_data.empty()) return;
    EvalLoader check(cfg_.val_data, mcfg_.vocab_size);
    const int GB = (int)eval_rows_;
    const size_t have = check.num_batches(GB, cfg_.seq_len);
    if (have < (size_t)cfg_.eval_batches)
      throw UserError(check.shard().path() + ": validation shard holds " + std::to_string(check.shard().size()) +
                      " tokens, " + std::to_string(have) + " batches of " + std::to_string(GB) + " x " +
                      std::to_string(cfg_.seq_len + 1) + ", but " + cfg_.source + " asks for train.eval_batches = " +
                      std::to_string(cfg_.eval_batches) + " (lower it or use a larger validation shard)");
  }

  // Weights and optimizer state from the checkpoint resumed (or the --init weights, or a fresh
  // initialisation), and the step and data position to continue from.
  void load_start_state() {
    if (resume_from_.empty()) {
      if (!init_ckpt_.empty()) {
        load_model_weights(init_ckpt_, *model_);
        if (log_) std::printf("init: weights from %s\n", init_ckpt_.c_str());
      } else {
        model_->init_weights(cfg_.seed);
      }
      return;
    }
    load_model_weights(resume_from_, *model_);
    // The checkpoint reader fills host-resident moments; device moments go through a host copy.
    auto load_state = [&](AdamW& dst) {
      if (dst.m().device() == Device::CPU) return load_training_state(resume_from_, dst);
      AdamW host(cfg_.optim, *model_, AdamW::HostMoments{});
      json s = load_training_state(resume_from_, host);
      dst.load_state_from(host);
      return s;
    };
    json st;
    if (optim_->sharded()) {  // checkpoints hold the full state; keep this rank's blocks
      AdamW full(cfg_.optim, *model_);
      st = load_state(full);
      dp_->scatter_optimizer(full, *optim_);
    } else {
      st = load_state(*optim_);
    }
    // Every field through the validated reader: a wrong type or range is one line naming it.
    const JsonFields f(st, resume_from_ + "/trainer.json");
    start_ = f.integer("step", 0, int64_t(1) << 53);  // load_training_state checked it
    train_->load_state(f.object("data").json(), f.source(), "data.");
    const std::string init = f.opt_string("init").value_or("");
    const int64_t saved_world = f.opt_integer("world", 1, 1 << 24).value_or(1);
    if (init.empty() && !(mcfg_ == cfg_.model))
      throw UserError(cfg_.source + ": [model]: differs from the checkpoint " + resume_from_ +
                      "/config.json being resumed; resume with the run's own config");
    if (log_) {
      std::printf("resume: %s (step %lld", resume_from_.c_str(), (long long)start_);
      if (saved_world != world_)
        std::printf(", written by %lld rank%s, resumed on %d", (long long)saved_world, saved_world == 1 ? "" : "s",
                    world_);
      std::printf(")\n");
    }
    last_checkpoint_step_ = start_;
    keep_global_batch(f, saved_world);
  }

  // The global batch is the run's, not the config's: a resume on another rank count keeps it
  // (and the rows of an evaluation batch), re-splitting it into micro_batch x grad_accum. A
  // checkpoint from before it was recorded implies it: its ranks x the config's micro_batch x
  // grad_accum (the config it ran with is the one being resumed).
  void keep_global_batch(const JsonFields& f, int64_t saved_world) {
    const int64_t was_micro = cfg_.micro_batch, was_accum = cfg_.grad_accum;
    global_batch_ = f.opt_integer("global_batch", 1, int64_t(1) << 40).value_or(saved_world * was_micro * was_accum);
    eval_rows_ = f.opt_integer("eval_rows", 1, int64_t(1) << 30).value_or(saved_world * was_micro);
    const int64_t saved_micro = f.opt_integer("micro_batch", 1, 1 << 20).value_or(was_micro);
    const std::optional<BatchSplit> split = split_global_batch(global_batch_, world_, cfg_.micro_batch);
    if (!split || split->grad_accum > (1 << 20))
      throw UserError(resume_from_ + "/trainer.json: global_batch: " + std::to_string(global_batch_) +
                      " sequences per step cannot be split evenly over " + std::to_string(world_) +
                      " ranks; resume on a rank count that divides " + std::to_string(global_batch_));
    cfg_.micro_batch = split->micro_batch;
    cfg_.grad_accum = split->grad_accum;
    if (log_ && (cfg_.micro_batch != saved_micro || saved_world != world_ || cfg_.grad_accum != was_accum)) {
      std::printf("resume: global batch %lld kept on %d rank%s: micro_batch %d x grad_accum %d", (long long)global_batch_,
                  world_, world_ == 1 ? "" : "s", cfg_.micro_batch, cfg_.grad_accum);
      if (global_batch_ % (saved_micro * saved_world) == 0)
        std::printf(" (was %lld x %lld on %lld)", (long long)saved_micro,
                    (long long)(global_batch_ / (saved_micro * saved_world)), (long long)saved_world);
      std::printf("\n");
    }
  }

  void print_plan() const {
    if (!log_) return;
    const GPTConfig& m = mcfg_;
    std::printf("model: %d layers, %d heads, %d wide, context %d, vocab %d (%.2fM parameters) | batch %d x %d x %d "
                "accum",
                m.n_layer, m.n_head, m.n_embd, m.block_size, m.vocab_size,
                (double)(model_->num_params() - (int64_t)(m.padded_vocab() - m.vocab_size) * m.n_embd) / 1e6,
                cfg_.micro_batch, cfg_.seq_len, cfg_.grad_accum);
    if (world_ > 1) std::printf(" x %d ranks", world_);
    std::printf(" = %lld tokens/step | %lld steps | data %llu tokens, %llu windows/epoch\n",
                (long long)tokens_per_step(), (long long)cfg_.steps, (unsigned long long)train_->num_tokens(),
                (unsigned long long)train_->samples_per_epoch());
    if (backend_.device() != Device::CPU) std::printf("device: %s\n", backend_.name().c_str());
    if (world_ > 1)
      std::printf("dist: %d ranks (%s%s) | %s%s | %s | checksum every %lld steps | watchdog %g s\n", world_,
                  comm_.backend().c_str(), comm_.backend() == "mpi" ? (", progress " + cfg_.dist.progress).c_str() : "",
                  dp_->zero() ? "ZeRO-1 | " : "", dp_->describe_buckets().c_str(),
                  cfg_.dist.overlap ? "overlapped with backward" : "after backward",
                  (long long)cfg_.dist.checksum_interval, cfg_.dist.watchdog_timeout);
    std::fflush(stdout);
  }

  int64_t tokens_per_step() const {
    return (int64_t)cfg_.micro_batch * cfg_.seq_len * cfg_.grad_accum * world_;
  }

  // ---- step ---------------------------------------------------------------------------------
  void inject_fault_before(int64_t step) const {
    if (fault_.rank != rank_ || fault_.step != step) return;
    if (fault_.kind == "stall")
      for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
    if (fault_.kind == "kill") std::raise(SIGKILL);
    send_fault_signal(fault_.kind);
    if (fault_.kind == "throw") throw UserError("LEASETRAIN_TEST_FAULT: injected failure at step " + std::to_string(step));
  }

  // One optimizer step (grad_accum micro-steps, the gradient reduction, AdamW); returns the
  // step's metrics line.
  json train_step(int64_t step) {
    const int B = cfg_.micro_batch, T = cfg_.seq_len;
    in_.resize((size_t)B * T);
    tgt_.resize((size_t)B * T);
    const auto t0 = clock::now();
    double loss = 0;
    // The whole step is queued before anything is read back: the losses stay on the device
    // until take_losses(), and the gradient norm until the optimizer step is queued.
    for (int micro = 0; micro < cfg_.grad_accum; micro++) {
      train_->next_batch(in_.data(), tgt_.data(), B, rank_, world_);
      dp_->begin_micro_step(micro == cfg_.grad_accum - 1);
      model_->forward_async(in_.data(), tgt_.data(), B, T);
      model_->backward(1.f / (float)cfg_.grad_accum);
    }
    dp_->finish_gradients();
    const float lr = lr_at(cfg_.optim, step, cfg_.steps);
    const float norm = dp_->step(*optim_, lr);
    for (float micro_loss : model_->take_losses()) loss += micro_loss / cfg_.grad_accum;
    if (world_ > 1) loss = dp_->average({(float)loss})[0];
    const double secs = std::chrono::duration<double>(clock::now() - t0).count();
    if (!std::isfinite(loss))
      throw UserError(cfg_.source + ": training diverged at step " + std::to_string(step + 1) +
                      " (loss is not finite); lower optim.lr or raise optim.warmup_steps");
    const int64_t done = step + 1;
    if (fault_.kind == "perturb" && fault_.rank == rank_ && fault_.step == done) {
      float p0 = 0;
      backend_.to_host(&p0, model_->params().view(0, {1}));
      p0 += 1e-3f;
      backend_.from_host(model_->params().view(0, {1}), &p0);
    }
    if (world_ > 1 && cfg_.dist.checksum_interval > 0 && done % cfg_.dist.checksum_interval == 0)
      dp_->check_parameters(done);
    if (o_.on_step) o_.on_step(done, *model_);
    total_s_ += secs;
    result_.losses.push_back((float)loss);
    json line{{"step", done},      {"loss", loss},
              {"lr", lr},          {"grad_norm", norm},
              {"tokens_per_s", (double)tokens_per_step() / secs}, {"ms", secs * 1e3}};
    if (world_ > 1) {
      const ReduceStats& rs = dp_->last_stats();
      line["comm_exposed_ms"] = rs.exposed_ms + rs.step_comm_ms;
    }
    return line;
  }

  void print_progress(const json& line, int64_t done, bool last) const {
    if (!log_ || !(done % cfg_.log_interval == 0 || last || line.contains("val_loss"))) return;
    const double secs = line["ms"].get<double>() / 1e3;
    const double eta = total_s_ / (double)(done - start_) * (double)(cfg_.steps - done);
    std::printf("step %*lld/%lld | loss %.4f | lr %.2e | norm %.3f | %s tok/s | %.1f ms | ETA %s",
                (int)std::to_string(cfg_.steps).size(), (long long)done, (long long)cfg_.steps,
                line["loss"].get<double>(), line["lr"].get<double>(), line["grad_norm"].get<double>(),
                format_rate((double)tokens_per_step() / secs).c_str(), secs * 1e3, format_duration(eta).c_str());
    if (line.contains("val_loss")) std::printf(" | val_loss %.4f", line["val_loss"].get<double>());
    std::printf("\n");
    std::fflush(stdout);
  }

  // ---- eval ---------------------------------------------------------------------------------
  void evaluate_into(json& line) {
    comm_.set_tag("evaluation");
    EvalResult ev =
        evaluate(*model_, cfg_.val_data, cfg_.micro_batch, cfg_.seq_len, cfg_.eval_batches, dp_.get(), (int)eval_rows_);
    line["val_loss"] = ev.loss;
    result_.last_val_loss = (float)ev.loss;
  }

  // ---- checkpoint ---------------------------------------------------------------------------
  void checkpoint(int64_t step) {
    const auto s0 = clock::now();
    if (rank_ == 0) policy_.reserve_bytes(checkpoint_bytes() + (1 << 20));
    json st{{"step", step},
            {"seed", cfg_.seed},
            {"total_steps", cfg_.steps},
            {"data", train_->state()},
            {"init", init_ckpt_},
            {"global_batch", global_batch_},
            {"micro_batch", cfg_.micro_batch},
            {"eval_rows", eval_rows_}};
    if (world_ > 1) st["world"] = world_;
    const bool killed_here = fault_.kind == "kill-in-save" && fault_.rank == rank_ && fault_.step == step;
    if (killed_here && rank_ != 0) std::raise(SIGKILL);
    // ZeRO-1: every rank sends its blocks to rank 0; the checkpoint holds the full state either way.
    std::unique_ptr<AdamW> full = optim_->sharded() ? dp_->gather_optimizer(*optim_, cfg_.optim) : nullptr;
    if (rank_ == 0) {
      metrics_->sync();
      const std::function<void()> before_seal = [killed_here] {
        if (killed_here) std::raise(SIGKILL);
      };
      result_.last_checkpoint = save_checkpoint(root_, *model_, full ? *full : *optim_, st, before_seal,
                                                o_.max_shard_bytes, tokenizer_ ? &*tokenizer_ : nullptr);
      if (log_) std::printf("checkpoint: %s\n", result_.last_checkpoint.c_str());
    } else {
      char name[32];
      std::snprintf(name, sizeof name, "step-%08lld", (long long)step);
      result_.last_checkpoint = (out_ / "checkpoints" / name).string();
    }
    save_s_ = std::chrono::duration<double>(clock::now() - s0).count();
    // Every rank takes rank 0's time (the one that wrote): the deadline margin, the preemption
    // estimate and the automatic interval must agree across ranks.
    if (world_ > 1) save_s_ = dp_->max({(float)save_s_})[0];
    last_checkpoint_step_ = step;
    if (cfg_.checkpoint_auto && rank_ == 0 && auto_steps_ > 0) choose_auto_interval();
    report_progress(step);
  }

  // Weights and both moments, and the tokenizer's copy (GPT-2's tokenizer.json is 1.4 MB).
  uint64_t checkpoint_bytes() const {
    return (uint64_t)model_->num_params() * sizeof(float) * 3 + (tokenizer_ ? tokenizer_->json_text().size() : 0);
  }

  // How long a save will take: the last one's time, or before any, its bytes at a conservative
  // 200 MB/s.
  double save_estimate() const { return save_s_ > 0 ? save_s_ : (double)checkpoint_bytes() / kAssumedSaveBytesPerS; }
  static constexpr double kAssumedSaveBytesPerS = 200e6;

  // progress.json in the job dir (rank 0), for a supervisor.
  void report_progress(int64_t step) const {
    if (rank_ != 0) return;
    RunProgress p;
    p.step = step;
    p.start_step = start_;
    p.checkpoint_step = last_checkpoint_step_;
    p.checkpoint_seconds = save_s_;
    p.global_batch = global_batch_;
    p.world = world_;
    policy_.record_progress(p);
  }

  // ---- the step boundary: one agreement for every reason to checkpoint or stop -------------
  struct Boundary {
    bool deadline = false;    // the lease ends soon (any rank's view)
    bool checkpoint = false;  // the interval says so (rank 0 decides)
    int preempted = 0;        // the largest signal number any rank received (0: none)
    bool save_too_late = false;  // some rank's notice leaves too little grace for a save
  };

  // Every rank must take the same branch, or one would wait for the others in a collective:
  // the reasons travel in one small all-reduce (max) per step.
  Boundary agree_at_boundary(int64_t done, double step_s) {
    const double margin = 2 * step_s + std::max(save_s_, 1.0);
    const int sig = PreemptionNotices::signal();
    std::vector<float> v{(double)policy_.seconds_until_deadline() <= margin ? 1.f : 0.f,
                         rank_ == 0 && checkpoint_due(done) ? 1.f : 0.f, (float)sig,
                         sig && PreemptionNotices::seconds_since() + save_estimate() > cfg_.preempt_grace ? 1.f : 0.f};
    if (world_ > 1) v = dp_->max(v);
    return Boundary{v[0] > 0, v[1] > 0, (int)v[2], v[3] > 0};
  }

  // A preemption notice: checkpoint unless this step was just saved or a save would not finish
  // within train.preempt_grace of the notice, then stop; `train` exits with kExitPreempted.
  void stop_for_preemption(int64_t done, bool saved, const Boundary& b) {
    const bool save = !saved && !b.save_too_late;
    if (save) checkpoint(done);
    else report_progress(done);
    result_.preempted_by = b.preempted;
    if (rank_ != 0) return;
    const int own = PreemptionNotices::signal();
    const std::string by = own ? signal_name(own) : std::string(signal_name(b.preempted)) + " (to another rank)";
    if (saved || save)
      std::printf("preempted by %s at step %lld: checkpointed step %lld (%.1f s); exit %d, resume with --resume\n",
                  by.c_str(), (long long)done, (long long)done, save_s_, kExitPreempted);
    else
      std::printf("preempted by %s at step %lld: no checkpoint (a save takes about %.1f s, more than what is left of "
                  "train.preempt_grace = %g s); exit %d, resume with --resume from step %lld\n",
                  by.c_str(), (long long)done, save_estimate(), cfg_.preempt_grace, kExitPreempted,
                  (long long)last_checkpoint_step_);
    std::fflush(stdout);
  }

  // The lease ends soon: checkpoint (there is time for two more steps and a save), then stop
  // cleanly.
  void stop_for_deadline(int64_t done, bool saved) {
    if (!saved) checkpoint(done);
    else report_progress(done);
    result_.stopped_for_deadline = true;
    if (rank_ == 0)
      std::printf("lease: %s; checkpointed step %lld and stopped (continue with --resume)\n",
                  policy_.deadline_message().c_str(), (long long)done);
  }

  // ---- checkpoint interval ------------------------------------------------------------------
  // Rank 0's decision (carried to the others by agree_at_boundary).
  bool checkpoint_due(int64_t done) {
    if (!cfg_.checkpoint_auto) return cfg_.checkpoint_interval > 0 && done % cfg_.checkpoint_interval == 0;
    if (timed_steps_ < kAutoTimedSteps) return false;  // no step time measured yet
    if (auto_steps_ == 0) choose_auto_interval();
    return done - last_checkpoint_step_ >= auto_steps_;
  }
  static constexpr int64_t kAutoTimedSteps = 3;

  // checkpoint_interval = "auto": Young's first-order optimum (J. W. Young, CACM 1974; Daly,
  // FGCS 2006), interval = sqrt(2 x C x MTBF) for a save of C seconds, which balances the time
  // spent saving against the work lost to a failure (half an interval on average). C is the last
  // save's measured time (before the first, its bytes at 200 MB/s). Chosen once the mean step
  // time is known, recomputed after every save; said again when it moves by more than 20%.
  void choose_auto_interval() {
    const bool measured = save_s_ > 0;
    const double C = save_estimate();
    const double mtbf_h = cfg_.mtbf_hours > 0 ? cfg_.mtbf_hours : cfg_.node_mtbf_hours / nodes_;
    const double interval_s = std::sqrt(2 * C * mtbf_h * 3600);
    const double step_s = timed_s_ / (double)timed_steps_;
    const int64_t steps = std::max<int64_t>(1, std::llround(std::min(interval_s / step_s, 1e15)));
    const bool changed = auto_steps_ == 0 || std::fabs((double)(steps - auto_steps_)) > 0.2 * (double)auto_steps_;
    auto_steps_ = steps;
    if (!changed || !log_) return;
    char save[96], mtbf[128];
    if (measured)
      std::snprintf(save, sizeof save, "%.3g s save (measured)", C);
    else
      std::snprintf(save, sizeof save, "%.3g s save (estimated: %.3g MB at %.0f MB/s)", C,
                    (double)checkpoint_bytes() / 1e6, kAssumedSaveBytesPerS / 1e6);
    if (cfg_.mtbf_hours > 0)
      std::snprintf(mtbf, sizeof mtbf, "%.3g h MTBF (train.mtbf_hours)", mtbf_h);
    else
      std::snprintf(mtbf, sizeof mtbf, "%.3g h MTBF (train.node_mtbf_hours %g / %d node%s)", mtbf_h,
                    cfg_.node_mtbf_hours, nodes_, nodes_ == 1 ? "" : "s");
    std::printf("checkpoint: every %lld step%s (auto: sqrt(2 x %s x %s) = %.3g s at %.3g s/step)\n",
                (long long)steps, steps == 1 ? "" : "s", save, mtbf, interval_s, step_s);
    std::fflush(stdout);
  }

  // Nodes in this attempt (LEASETRAIN_NODES, set by `launch`; 1 without it).
  static int nodes_from_env() {
    const char* v = std::getenv("LEASETRAIN_NODES");
    if (!v || !*v) return 1;
    int n = 0;
    const char* end = v + std::strlen(v);
    if (std::from_chars(v, end, n).ptr != end || n < 1 || n > (1 << 20))
      throw UserError(std::string("environment: LEASETRAIN_NODES: expected a node count, got '") + v + "'");
    return n;
  }

  using clock = std::chrono::steady_clock;
  struct Unwatch {  // a borrowed communicator must not keep calling into this run's watchdog
    Communicator& c;
    ~Unwatch() { c.set_watchdog(nullptr); }
  };

  const TrainOptions& o_;
  TrainConfig cfg_;  // micro_batch and grad_accum: the split of the run's global batch on this world
  Communicator& comm_;
  Backend& backend_;
  const int rank_, world_;
  const bool log_;  // progress, metrics and checkpoints: rank 0 only
  const RunPolicy& policy_;
  const fs::path out_;
  const Fault fault_;
  // Read by the watchdog's thread (start_watchdog), so declared before it: they outlive it.
  std::atomic<bool> in_step_{false};        // in a step or its agreement
  std::atomic<double> longest_step_s_{0};   // the longest step of this attempt so far

  std::string resume_from_, init_ckpt_;  // the checkpoint continued, or the --init weights
  std::optional<Tokenizer> tokenizer_;    // the data's, copied into checkpoints (find_tokenizer)
  GPTConfig mcfg_;
  std::shared_ptr<Watchdog> watchdog_;
  Unwatch unwatch_;  // declared before the model: it outlives everything that reaches the watchdog
  std::unique_ptr<GPT> model_;
  std::unique_ptr<DataParallel> dp_;
  std::unique_ptr<AdamW> optim_;
  std::unique_ptr<DataLoader> train_;
  WriteRoot root_;
  std::unique_ptr<MetricsLog> metrics_;
  int64_t start_ = 0;

  TrainResult result_;
  std::vector<int32_t> in_, tgt_;
  double total_s_ = 0;
  double save_s_ = 0;  // how long the last checkpoint took (rank 0's): the deadline margin needs it
  int64_t global_batch_ = 0;  // sequences per optimizer step: the run's, kept across resumes
  int64_t eval_rows_ = 0;     // rows of one evaluation batch: the run's, kept across resumes
  int64_t last_checkpoint_step_ = 0;  // the newest complete checkpoint's step (0: none)
  double timed_s_ = 0;        // step times of this attempt after its first step
  int64_t timed_steps_ = 0;
  int64_t auto_steps_ = 0;    // checkpoint_interval = "auto": the interval chosen (0: not yet)
  int nodes_ = 1;
};

TrainResult train_with(const TrainOptions& o, TrainConfig cfg, Communicator& comm, Backend& backend) {
  return TrainingRun(o, std::move(cfg), comm, backend).run();
}

}  // namespace

}  // namespace lt
