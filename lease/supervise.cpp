// The supervised run of a job (supervise.h): attempts, failure attribution, node probes,
// restarts on what is left, one usage record per attempt.
#include "lease/supervise.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <regex>

#include "lease/audit.h"
#include "lease/storage.h"
#include "lease/tenancy.h"
#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/safe_path.h"

namespace lt::lease {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- signals to launch ----------------------------------------------------------------------
// SIGTERM, SIGUSR1 and a first SIGINT ask the job to checkpoint and stop (SIGUSR1 to the
// launcher: mpirun passes SIGUSR1 to every rank, while SIGTERM would kill the job at once); a
// second SIGINT/SIGTERM is forwarded as SIGTERM. SIGHUP re-probes with --grow, else is forwarded.
volatile sig_atomic_t g_child = 0;  // the running launcher's pid, 0 between attempts
volatile sig_atomic_t g_stops = 0;  // stop requests so far
volatile sig_atomic_t g_hup = 0;
volatile sig_atomic_t g_grow = 0;

void on_signal(int sig) {
  const pid_t child = pid_t(g_child);
  if (sig == SIGHUP) {
    if (g_grow) g_hup = 1;
    else if (child > 0) ::kill(child, SIGHUP);
    return;
  }
  const bool again = g_stops > 0 && sig != SIGUSR1;
  if (g_stops < 2) g_stops = g_stops + 1;
  if (child > 0) ::kill(child, again ? SIGTERM : SIGUSR1);
}

struct SignalScope {
  struct sigaction old[4];
  static constexpr int kSigs[4] = {SIGINT, SIGTERM, SIGUSR1, SIGHUP};
  explicit SignalScope(bool grow) {
    g_stops = 0;
    g_hup = 0;
    g_grow = grow ? 1 : 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 4; ++i) ::sigaction(kSigs[i], &sa, &old[i]);
  }
  ~SignalScope() {
    for (int i = 0; i < 4; ++i) ::sigaction(kSigs[i], &old[i], nullptr);
  }
};

void say(const std::string& line) {
  std::fprintf(stderr, "leasetrain: %s\n", line.c_str());
  std::fflush(stderr);
}

// ---- running the launcher -------------------------------------------------------------------

struct RunIo {
  bool job = false;         // the job itself: g_child is set so signals reach it
  bool capture_out = false; // stdout into Ran::out (a probe), else inherited
  int log_fd = -1;          // stderr is also copied here
  bool echo_err = true;     // stderr copied to ours
  int timeout_s = 0;        // 0: none; else SIGTERM to its process group, SIGKILL 2 s later
                            // (a probe is also ended so when launch is asked to stop)
  std::function<void()> on_hup;  // called from the loop after SIGHUP (with --grow)
  int grow_every_s = 0;          // and every so many seconds (0: only on SIGHUP)
};

struct Ran {
  int status = 0;  // exit code, or 128 + signal
  std::string out, err_tail;
  bool timed_out = false;
  bool stopped = false;  // not the job, and ended because launch was asked to stop
};

constexpr size_t kTail = 256 * 1024;  // stderr kept for parsing: the launcher's report is at its end

// Starts cmd (its own process group, stdin /dev/null: a terminal's Ctrl-C reaches launch only,
// which decides what the job gets), copies its stderr while it runs, and waits.
Ran run_child(const LaunchCommand& cmd, const RunIo& io) {
  std::vector<std::string> envs;
  for (const auto& [k, v] : cmd.exec_env) envs.push_back(k + "=" + v);
  std::vector<char*> envp, argv;
  for (std::string& s : envs) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = cmd.argv;
  for (std::string& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  int err_pipe[2], out_pipe[2] = {-1, -1};
  if (::pipe2(err_pipe, O_CLOEXEC) != 0 || (io.capture_out && ::pipe2(out_pipe, O_CLOEXEC) != 0))
    throw IoError(std::string("launch: pipe: ") + std::strerror(errno));
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw IoError(std::string("cannot start ") + cmd.launcher + ": " + std::strerror(errno));
  if (pid == 0) {
    ::setpgid(0, 0);
    int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    ::dup2(err_pipe[1], 2);
    if (io.capture_out) ::dup2(out_pipe[1], 1);
    ::execvpe(argv[0], argv.data(), envp.data());
    std::fprintf(stderr, "leasetrain: error: cannot run %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here: whichever of the two runs first
  if (io.job) g_child = pid;
  // A stop asked for between the check before this attempt and now found no launcher to tell.
  if (io.job && g_stops) ::kill(pid, g_stops > 1 ? SIGTERM : SIGUSR1);
  ::close(err_pipe[1]);
  if (io.capture_out) ::close(out_pipe[1]);
  int fds[2] = {err_pipe[0], out_pipe[0]};
  for (int fd : fds)
    if (fd >= 0) ::fcntl(fd, F_SETFL, O_NONBLOCK);
  Ran r;
  auto drain = [&](int i) {
    char buf[8192];
    for (;;) {
      ssize_t n = ::read(fds[i], buf, sizeof buf);
      if (n > 0) {
        if (i == 1) {
          if (r.out.size() < (1 << 20)) r.out.append(buf, size_t(n));
          continue;
        }
        if (io.echo_err) (void)!::write(2, buf, size_t(n));
        if (io.log_fd >= 0) write_all_or_throw(io.log_fd, buf, size_t(n), "the attempt's launcher log", false);
        r.err_tail.append(buf, size_t(n));
        if (r.err_tail.size() > 2 * kTail) r.err_tail.erase(0, r.err_tail.size() - kTail);
        continue;
      }
      if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        ::close(fds[i]);
        fds[i] = -1;
      }
      if (n < 0 && errno == EINTR) continue;
      return;
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  auto last_grow = t0;
  auto secs_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  int status = 0, term_sent = 0;
  double t_end = 0;  // when it was told to end (timed out, or launch stopped)
  for (;;) {
    pollfd p[2];
    int np = 0;
    for (int i = 0; i < 2; ++i)
      if (fds[i] >= 0) p[np++] = {fds[i], POLLIN, 0};
    if (np) ::poll(p, nfds_t(np), 100);
    else ::usleep(100 * 1000);
    for (int i = 0; i < 2; ++i)
      if (fds[i] >= 0) drain(i);
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) throw IoError(std::string("waitpid: ") + std::strerror(errno));
    const bool grow_due = io.grow_every_s > 0 && secs_since(last_grow) >= io.grow_every_s;
    if (io.job && (g_hup || grow_due) && io.on_hup) {
      g_hup = 0;
      last_grow = std::chrono::steady_clock::now();
      io.on_hup();
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!io.job && g_stops && !r.timed_out && !r.stopped) {
      r.stopped = true;
      t_end = secs;
    }
    if (!r.stopped && io.timeout_s > 0 && secs > io.timeout_s && !r.timed_out) {
      r.timed_out = true;
      t_end = secs;
    }
    if ((r.timed_out || r.stopped) && secs >= t_end + 2.0 * term_sent) {
      ::kill(-pid, term_sent ? SIGKILL : SIGTERM);
      ++term_sent;
    }
  }
  if (io.job) g_child = 0;
  for (int i = 0; i < 2; ++i)  // what the launcher wrote last; a daemon it left behind may hold the pipe
    if (fds[i] >= 0) {
      drain(i);
      if (fds[i] >= 0) ::close(fds[i]);
    }
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
  return r;
}

// ---- what the job left in its directory -----------------------------------------------------

bool present(const std::string& path) {
  std::error_code ec;
  return fs::symlink_status(path, ec).type() != fs::file_type::not_found;
}

struct Progress {
  bool known = false;
  int64_t step = 0, start_step = 0;
  std::optional<int64_t> global_batch;
};

// rank 0's progress.json (the trainer's; absent: unknown). Read as the tenant's file it is.
Progress read_progress(const std::string& job_dir) {
  Progress pr;
  const std::string path = job_dir + "/progress.json";
  if (!present(path)) return pr;
  try {
    json j = read_json_file(path, "progress record");
    JsonFields f(j, path);
    pr.step = f.integer("step", 0);
    pr.start_step = f.integer("start_step", 0);
    pr.global_batch = f.opt_integer("global_batch", 1, int64_t(1) << 40);
    pr.known = true;
  } catch (const UserError& e) {
    say(std::string("warning: ") + e.what() + " (taken as no progress)");
  }
  return pr;
}

struct Failure {
  int rank = -1;
  std::string host;
  int signal = 0;
  int exit_code = -1;
  std::string error;  // the rank's own last words, when it left them
};

// rank-<r>.exit.json files: {"rank", "host", "exit_code", "error"} by rank.
std::map<int, Failure> read_exit_records(const std::string& job_dir, int ranks) {
  std::map<int, Failure> out;
  for (int r = 0; r < ranks; ++r) {
    const std::string path = job_dir + "/rank-" + std::to_string(r) + ".exit.json";
    if (!present(path)) continue;
    try {
      json j = read_json_file(path, "rank exit record");
      JsonFields f(j, path);
      Failure x;
      x.rank = int(f.integer("rank", 0, ranks - 1));
      x.host = f.string("host");
      x.exit_code = int(f.integer("exit_code", 0, 255));
      x.error = f.string("error");
      x.error = x.error.substr(0, x.error.find('\n')).substr(0, 300);
      out[r] = x;
    } catch (const UserError& e) {
      say(std::string("warning: ") + e.what());
    }
  }
  return out;
}

// The launcher's stderr with every line longer than a launcher's own report dropped. The
// ranks' output passes through it too: a tenant's endless line must not reach std::regex, whose
// backtracking recurses once per character matched (a 200 kB match overflows the stack).
std::string short_lines(const std::string& err) {
  constexpr size_t kMaxReportLine = 1024;
  std::string out;
  for (size_t pos = 0; pos < err.size();) {
    size_t end = err.find('\n', pos);
    if (end == std::string::npos) end = err.size();
    if (end - pos <= kMaxReportLine) out.append(err, pos, end - pos).push_back('\n');
    pos = end + 1;
  }
  return out;
}

// The last match of `re` in `text` (the launcher's report comes after anything a rank printed).
bool last_match(const std::string& text, const std::regex& re, std::smatch& m) {
  bool found = false;
  for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) m = *it, found = true;
  return found;
}

// Who failed: the launcher's own report of a rank killed by a signal first (a rank that is
// killed leaves no last words, and the survivors' are about losing it), then of a node whose
// daemon it lost (no rank named: the node's ranks went with it), then the rank the launcher
// names as the first non-zero exit, then a node whose MPI processes hung up on their peers (a
// node lost while the launcher only saw its daemon end), then the ranks' exit records. OpenMPI 4
// prints "mpirun noticed that process rank 2 with PID 0 on node X exited on signal 9
// (Killed).", "Remote daemon: [[29721,0],1] on node X" (after "ORTE has lost communication
// with a remote daemon."), "Process name: [[29721,1],2]\n  Exit code:    7", and from a rank's
// TCP transport "An MPI communication peer process has unexpectedly disconnected. ... Peer
// host:  X". srun (Slurm 22.05) prints "srun: error: X: task 2: Exited with exit code 7", or the
// signal's strsignal() name ("task 2: Killed", "Segmentation fault (core dumped)"), its first
// line about the task that ended first; the tasks it then terminated follow ("tasks 0-1,3:
// Terminated"). A watchdog's exit (3) only says that another rank stopped answering: the ranks'
// records name that one. The patterns match within a line or two of the short lines only (the
// last match wins: the launcher's report comes after anything a rank printed), and the host of
// a rank named is the plan's.
Failure find_failure(const std::string& err_tail, const std::map<int, Failure>& records, const Plan& p) {
  Failure f;
  std::smatch m;
  static const std::regex kOmpiSignal(R"(process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+))");
  static const std::regex kOmpiDaemon(R"(Remote daemon: \[\[\d+,\d+\],\d+\] on node (\S+))");
  static const std::regex kOmpiPeer(R"(Peer host:[ \t]*(\S+))");
  static const std::regex kOmpiExit(R"(Process name: \[\[\d+,\d+\],(\d+)\][ \t]*\n[ \t]*Exit code:[ \t]*(\d+))");
  static const std::regex kSrun(R"(srun: error: (\S+): task (\d+): (Exited with exit code (\d+)|([A-Z][^\n(]*[a-z])))");
  const std::string err = short_lines(err_tail);
  const size_t at = err.find("An MPI communication peer process has unexpectedly disconnected");
  const std::string hung_up = at == std::string::npos ? "" : err.substr(at, 2000);
  auto small = [](const std::string& s) { return s.size() <= 9 ? std::atoi(s.c_str()) : -1; };  // \d+ only
  auto rank_of = [&](const std::string& s) {
    int r = small(s);
    return r >= 0 && size_t(r) < p.ranks.size() ? r : -1;
  };
  if (last_match(err, kOmpiSignal, m)) {
    f.rank = rank_of(m[1]), f.host = m[2], f.signal = std::max(0, small(m[3]));
  } else if (last_match(err, kSrun, m) &&
             !(m[4].matched && small(m[4]) == kExitWatchdog && !records.empty())) {
    f.rank = rank_of(m[2]), f.host = m[1];
    if (m[4].matched) f.exit_code = small(m[4]);
    for (int sig = 1; sig < NSIG && m[5].matched && !f.signal; ++sig)
      if (const char* name = strsignal(sig); name && m[5] == name) f.signal = sig;
    if (m[5].matched && !f.signal) f.error = m[5];  // a name this libc does not use: quoted as srun said it
  } else if (last_match(err, kOmpiDaemon, m)) {
    f.host = m[1], f.error = "lost communication with its daemon on node " + f.host;
  } else if (last_match(err, kOmpiExit, m)) {
    f.rank = rank_of(m[1]), f.exit_code = small(m[2]);
  } else if (!hung_up.empty() && std::regex_search(hung_up, m, kOmpiPeer)) {
    f.host = m[1], f.error = "an MPI process on node " + f.host + " hung up on its peers";
  } else if (!records.empty()) {
    // A rank's own error names the cause. A watchdog's abort (exit 3) only says that another
    // rank stopped answering: when every record is a watchdog's and exactly one rank left none,
    // that rank is the one that stalled (a hung GPU, a rank stopped by the kernel).
    auto own = std::find_if(records.begin(), records.end(),
                            [](const auto& kv) { return kv.second.exit_code != kExitWatchdog; });
    if (own != records.end()) {
      f = own->second;
    } else if (records.size() + 1 == p.ranks.size()) {
      for (int r = 0; r < int(p.ranks.size()) && f.rank < 0; ++r)
        if (!records.count(r)) f.rank = r;
      f.error = "stopped answering: every other rank's watchdog fired";
    } else {
      f = records.begin()->second;
    }
  }
  if (f.rank >= 0) {
    if (auto it = records.find(f.rank); it != records.end() && f.signal == 0) {
      f.error = it->second.error;
      if (f.exit_code < 0) f.exit_code = it->second.exit_code;
    }
    f.host = p.ranks[size_t(f.rank)].host;
  }
  return f;
}

// The launcher's most telling line when no rank is named ("ssh: Could not resolve hostname ...").
std::string first_telling_line(const std::string& err) {
  size_t pos = 0;
  while (pos < err.size()) {
    size_t end = err.find('\n', pos);
    std::string line = err.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    pos = end == std::string::npos ? err.size() : end + 1;
    // OpenMPI's banner on any non-zero exit says nothing of the cause.
    if (line.find_first_not_of("- \t\r") == std::string::npos || line.rfind("Primary job", 0) == 0 ||
        line.rfind("a non-zero exit code.", 0) == 0)
      continue;
    if (line.rfind("leasetrain: ", 0) == 0) line = line.substr(12);
    return line.substr(0, 200);
  }
  return "";
}

std::string describe_failure(const Failure& f, const std::string& launcher, int status, const std::string& err) {
  if (f.rank < 0) {
    if (!f.host.empty()) return launcher + " exited with " + std::to_string(status) + ": " + f.error;
    std::string line = first_telling_line(err);
    return launcher + " exited with " + std::to_string(status) + (line.empty() ? "; no rank named a cause" : ": " + line);
  }
  std::string s = "rank " + std::to_string(f.rank) + " on " + f.host;
  if (f.signal) s += " was killed by signal " + std::to_string(f.signal) + " (" + strsignal(f.signal) + ")";
  else if (f.exit_code >= 0) s += " exited with " + std::to_string(f.exit_code);
  else s += " failed";
  if (!f.error.empty()) s += ": " + f.error;
  return s;
}

std::string outcome_of(int status) {
  switch (status) {
    case 0: return "completed";
    case kExitBadInput: return "bad-input";
    case kExitWatchdog: return "watchdog";
    case kExitPreempted: return "preempted";
    default: return "failed";
  }
}

// Moves what the previous attempt's ranks wrote (progress, last words, devices seen) into
// attempt-<n>/, so this attempt's files are its own.
void archive_attempt(const WriteRoot& jd, int n) {
  const std::string dir = "attempt-" + std::to_string(n);
  bool made = false;
  for (const std::string& name : jd.list("")) {
    const bool ours = name == "progress.json" ||
                      (name.rfind("rank-", 0) == 0 && name.size() > 10 && name.compare(name.size() - 5, 5, ".json") == 0);
    if (!ours) continue;
    if (!made) jd.open_dir(dir, true), made = true;
    if (!jd.rename(name, dir + "/" + name))
      throw_write_error(jd.display(name), "move into " + dir + "/", errno);
  }
}

// What an earlier launch with the same job dir left (its attempts.json, attempt-<n>.log and
// attempt-<n>/, and its last attempt's progress.json and rank records) moves into
// earlier-<k>/, so this launch's first attempt is not judged by another run's progress or last
// words (the crash-loop rule, the global batch, the failed rank) and overwrites none of it.
void set_aside_earlier_launch(const WriteRoot& jd) {
  std::vector<std::string> names;
  for (const std::string& name : jd.list("")) {
    const bool ours = name == "progress.json" || name == "attempts.json" || name.rfind("attempt-", 0) == 0 ||
                      (name.rfind("rank-", 0) == 0 && name.size() > 10 && name.compare(name.size() - 5, 5, ".json") == 0);
    if (ours) names.push_back(name);
  }
  if (names.empty()) return;
  int k = 1;
  while (jd.exists("earlier-" + std::to_string(k))) ++k;
  const std::string dir = "earlier-" + std::to_string(k);
  jd.open_dir(dir, true);
  for (const std::string& name : names)
    if (!jd.rename(name, dir + "/" + name)) throw_write_error(jd.display(name), "move into " + dir + "/", errno);
  say("launch: the job dir held an earlier launch's attempts; moved them into " + jd.display(dir) + "/");
}

// The usage record of one attempt (see audit.h for the fields).
json usage_record(const Plan& p, const LaunchCommand& c, const std::string& job_dir, TimePoint start, TimePoint end,
                  int status, int attempt, const std::string& outcome, const std::string& reason) {
  json ranks = json::array();
  std::string nccl = "unknown", cuda = "unknown";
  int device_ranks = 0;
  for (const RankPlan& r : p.ranks) {
    json jr = {{"rank", r.rank}, {"host", r.host}, {"devices", r.devices}};
    // Written by the rank, so the tenant's: read like any untrusted file, and a bad one must
    // never cost the usage record (that would make a job unaccounted).
    const std::string rank_file = job_dir + "/rank-" + std::to_string(r.rank) + ".json";
    if (present(rank_file)) {
      try {
        json seen = parse_json(read_regular_file(rank_file, "rank record", 1 << 20), rank_file);
        JsonFields f(seen, rank_file);
        const json& devices = f.array("devices");
        for (const auto& d : devices)
          if (!d.is_string()) f.fail("devices", "an array of strings");
        jr["devices_seen"] = devices;
        nccl = f.opt_string("nccl_version").value_or(nccl);
        cuda = f.opt_string("cuda_version").value_or(cuda);
      } catch (const UserError& e) {
        jr["devices_seen"] = "unreadable";
        say(e.what());
      }
    }
    device_ranks += r.devices.empty() ? 0 : 1;
    ranks.push_back(jr);
  }
  const double secs = double((end - start).count());
  return {{"kind", "job"},
          {"lease", p.lease_id},
          {"tenant", p.tenant},
          {"operator", p.operator_id},
          {"manifest_sha256", p.manifest_sha256},
          {"job_id", p.job_id},
          {"ranks", ranks},
          {"start", format_time(start)},
          {"end", format_time(end)},
          {"gpu_seconds", secs * device_ranks},
          {"nccl_version", nccl},
          {"cuda_version", cuda},
          {"env_sha256", c.env_sha256},
          {"launcher", c.launcher},
          {"exit_status", status},
          {"attempt", attempt},
          {"outcome", outcome},
          {"reason", reason}};
}

std::string nodes_text(const Plan& p) {
  std::string s;
  for (const NodePlan& n : p.nodes) s += (s.empty() ? "" : ", ") + n.host + " (" + std::to_string(n.slots) + ")";
  return s;
}

bool has_arg(const std::vector<std::string>& v, const std::string& a) {
  return std::any_of(v.begin(), v.end(), [&](const std::string& s) { return s == a || s.rfind(a + "=", 0) == 0; });
}

// ---- probes -------------------------------------------------------------------------------

struct ProbeResult {
  bool ok = false;
  std::string why;                   // why not, or what it found
  std::set<std::string> missing;     // leased devices whose /dev/nvidia<minor> is gone
  bool stopped = false;              // ended because launch was asked to stop: says nothing of the node
};

ProbeResult probe_node(const Manifest& m, const Allocation& a, const Plan& p, const SuperviseOptions& o) {
  const Node& node = *m.find_node(a.node);
  std::map<int, std::vector<std::string>> by_minor;  // minor -> leased devices on it
  std::vector<std::string> devices = a.gpus;
  devices.insert(devices.end(), a.mig.begin(), a.mig.end());
  for (const std::string& d : devices) {
    const Gpu* g = node.find_gpu(d);
    if (!g)
      if (const MigSlice* s = node.find_mig(d)) g = node.find_gpu(s->parent);
    if (g && g->minor >= 0) by_minor[g->minor].push_back(d);
  }
  std::vector<std::string> argv = o.probe_argv;
  for (const auto& [minor, _] : by_minor) argv.insert(argv.end(), {"--minor", std::to_string(minor)});
  LaunchCommand c = build_probe(node.hostname, argv, p, o.env, o.launch);
  RunIo io;
  io.capture_out = true;
  io.echo_err = false;
  io.timeout_s = o.probe_timeout_s;
  Ran r = run_child(c, io);
  ProbeResult pr;
  if (r.stopped) {
    pr.why = "stopped: launch was asked to stop";
    pr.stopped = true;
    return pr;
  }
  if (r.timed_out) {
    pr.why = "no answer within " + std::to_string(o.probe_timeout_s) + " s";
    return pr;
  }
  if (r.status != 0) {
    std::string line = first_telling_line(r.err_tail);
    pr.why = c.launcher + " exited with " + std::to_string(r.status) + (line.empty() ? "" : ": " + line);
    return pr;
  }
  try {
    size_t brace = r.out.rfind("\n{");
    json j = parse_json(r.out.substr(brace == std::string::npos ? 0 : brace + 1), "probe of " + node.hostname);
    JsonFields f(j, "probe of " + node.hostname);
    const int64_t cpus = f.integer("cpus", 0);
    JsonFields dev = f.object("devices");
    for (const auto& [minor, uuids] : by_minor)
      if (!dev.has(std::to_string(minor)) || !dev.boolean(std::to_string(minor))) pr.missing.insert(uuids.begin(), uuids.end());
    if (cpus < 1) {
      pr.why = "no CPU online";
      return pr;
    }
    pr.ok = pr.missing.size() < devices.size() || devices.empty();
    pr.why = std::to_string(cpus) + " CPUs online";
    if (!by_minor.empty()) pr.why += ", " + std::to_string(devices.size() - pr.missing.size()) + " of " +
                                     std::to_string(devices.size()) + " leased devices present";
    if (!pr.ok) pr.why += " (none usable)";
  } catch (const UserError& e) {
    pr.why = std::string("unreadable answer: ") + e.what();
  }
  return pr;
}

}  // namespace

json probe_this_node(const std::vector<int>& minors, const std::string& dev_root) {
  json devices = json::object();
  for (int m : minors) {
    struct stat st {};
    const std::string path = dev_root + "/nvidia" + std::to_string(m);
    devices[std::to_string(m)] = ::stat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode);
  }
  return {{"host", local_hostname()}, {"cpus", ::sysconf(_SC_NPROCESSORS_ONLN)}, {"devices", devices}};
}

namespace {

// The attempts of one launch, in phases a reader can find: plan (the lease again, minus what
// is left out), run (start the launcher, copy its stderr, wait), judge (outcome, reason, who
// failed), record (usage record, attempts.json), then next (give up, or leave out and restart).
class Supervisor {
 public:
  explicit Supervisor(const SuperviseOptions& o)
      : o_(o), m_(*o.manifest), lease_(m_.lease(o.lease_id)), job_dir_(o.launch.job_dir), signals_(o.grow) {
    const std::vector<std::string>& cmd = o.launch.command;
    is_train_ = !o.probe_argv.empty() && cmd.size() > 1 && cmd[0] == o.probe_argv[0] && cmd[1] == "train" &&
                !has_arg(cmd, "--resume") && !has_arg(cmd, "--init");
  }

  int run() {
    for (int n = 1;; ++n) {
      if (g_stops) {
        say("launch: stopped by a signal before attempt " + std::to_string(n));
        return kExitPreempted;
      }
      Attempt a;
      a.n = n;
      if (std::optional<int> stop = plan(a)) return *stop;
      run_attempt(a);
      judge(a);
      record(a);
      if (std::optional<int> stop = next(a)) return *stop;
      resume_ = is_train_;
    }
  }

 private:
  struct Attempt {
    int n = 0;
    Plan plan;
    LaunchCommand cmd;
    TimePoint start{}, end{};
    Ran ran;
    bool stopped = false;       // launch was asked to stop while it ran
    bool grow_restart = false;  // preempted by us (SIGHUP with --grow) to restart larger
    Progress progress;
    Failure failure;
    std::string outcome, reason, log_name;
  };

  int give_up(int n, const std::string& why) const {
    say("launch: giving up after attempt " + std::to_string(n) + ": " + why);
    return last_status_;
  }

  // ---- plan: the lease again (window, quota, users), without what is left out ---------------
  std::optional<int> plan(Attempt& a) {
    PlanRequest req = o_.request;
    req.now = system_now();
    req.attempt = a.n;
    req.exclude = excl_;
    if (a.n > 1) {
      int left = 0;
      for (const Allocation& al : lease_.alloc) left += usable_slots(al, excl_);
      int np = std::min(left, first_np_);
      // The trainer keeps the global batch by changing grad_accum: it needs a world size that divides it.
      if (global_batch_)
        while (np > 1 && *global_batch_ % np != 0) --np;
      if (np < 1) return give_up(a.n - 1, "no usable slot is left in lease " + lease_.id);
      req.np = np;
    }
    try {
      a.plan = make_plan(m_, o_.lease_id, req);
    } catch (const UserError& e) {
      if (a.n == 1) throw;
      return give_up(a.n - 1, e.what());
    }
    a.plan.signature_note = o_.signature_note;
    if (a.n == 1) first_np_ = a.plan.np;
    LaunchOptions lo = o_.launch;
    if (resume_) lo.command.push_back("--resume");
    a.cmd = build_launch(a.plan, o_.env, lo);
    a.cmd.files.emplace_back(job_dir_ + "/plan.json", plan_json(a.plan).dump(2) + "\n");
    return std::nullopt;
  }

  // ---- run: the job dir made this attempt's, the launcher started and waited for -------------
  void run_attempt(Attempt& a) {
    if (jd_) archive_attempt(*jd_, a.n - 1);
    for (const auto& [path, content] : a.cmd.files) write_file_atomic(path, content);
    if (!jd_) {
      jd_.emplace(job_dir_);
      set_aside_earlier_launch(*jd_);
    }
    if (o_.restarts > 0 || a.n > 1)
      say("launch: attempt " + std::to_string(a.n) + " of at most " +
          std::to_string(o_.restarts + 1 + (a.n - 1 - restarts_used_)) + ": " + std::to_string(a.plan.np) +
          (a.plan.np == 1 ? " rank on " : " ranks on ") + nodes_text(a.plan) + (resume_ ? ", resuming" : ""));
    say(command_line(a.cmd));
    a.log_name = "attempt-" + std::to_string(a.n) + ".log";
    Fd log = jd_->open_file(a.log_name, O_WRONLY | O_CREAT | O_TRUNC);
    RunIo io;
    io.job = true;
    io.log_fd = log.get();
    io.grow_every_s = o_.grow ? o_.grow_every_s : 0;
    io.on_hup = [&] {
      if (!anything_left_out()) return;
      say("launch: probing the left-out nodes and slots (--grow)");
      if (probe_all(a.plan, true, true)) {
        say("launch: asking the job to checkpoint and stop, to restart it larger");
        a.grow_restart = true;
        if (g_child > 0) ::kill(pid_t(g_child), SIGUSR1);
      }
    };
    a.start = system_now();
    a.ran = run_child(a.cmd, io);
    a.end = system_now();
    log.close_checked(jd_->display(a.log_name));
    last_status_ = a.ran.status;
    a.stopped = g_stops > 0;
  }

  // ---- judge: how it ended, and who failed --------------------------------------------------
  void judge(Attempt& a) {
    a.progress = read_progress(job_dir_);
    if (a.progress.global_batch) global_batch_ = a.progress.global_batch;
    const int status = a.ran.status;
    a.outcome = outcome_of(status);
    if (status == 0) {
      a.reason = "finished";
    } else if (a.stopped && g_stops < 2) {
      a.outcome = "preempted", a.reason = "launch was asked to stop; the job was sent SIGUSR1";
    } else if (status == kExitPreempted) {
      a.reason = a.grow_restart ? "preempted to restart on more slots" : "the job was preempted";
    } else {
      a.failure = find_failure(a.ran.err_tail, read_exit_records(job_dir_, a.plan.np), a.plan);
      a.reason = describe_failure(a.failure, a.cmd.launcher, status, a.ran.err_tail);
    }
  }

  // ---- record: one usage record per attempt, and attempts.json -------------------------------
  void record(const Attempt& a) {
    if (!a.plan.usage_log.empty()) {
      std::string hash = append_record(a.plan.usage_log, usage_record(a.plan, a.cmd, job_dir_, a.start, a.end,
                                                                      a.ran.status, a.n, a.outcome, a.reason));
      say("usage record " + hash + " appended to " + a.plan.usage_log);
    }
    json hosts = json::array();
    for (const NodePlan& np : a.plan.nodes) hosts.push_back(np.host);
    json aj = {{"attempt", a.n},        {"start", format_time(a.start)}, {"end", format_time(a.end)},
               {"ranks", a.plan.np},    {"hosts", hosts},                {"resumed", resume_},
               {"exit_status", a.ran.status}, {"outcome", a.outcome},    {"reason", a.reason},
               {"log", a.log_name}};
    if (a.failure.rank >= 0) aj["failed_rank"] = a.failure.rank;
    if (!a.failure.host.empty()) aj["failed_host"] = a.failure.host;
    if (a.progress.known) aj["progress"] = {{"step", a.progress.step}, {"start_step", a.progress.start_step}};
    attempts_.push_back(aj);
    // Replacement for bytes that are not UTF-8: a reason quotes the ranks' words, cut to a length.
    write_file_atomic(*jd_, "attempts.json", attempts_.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
  }

  // ---- next: stop with an exit status, or leave out what failed and restart ------------------
  std::optional<int> next(const Attempt& a) {
    const int status = a.ran.status;
    if (status == 0) {
      if (a.n > 1) say("launch: completed on attempt " + std::to_string(a.n));
      return 0;
    }
    if (a.stopped) {
      if (g_stops >= 2) return status;
      say("launch: stopped by a signal: attempt " + std::to_string(a.n) +
          " recorded as preempted; run the same launch again to resume");
      return kExitPreempted;
    }
    if (status == kExitPreempted) say("launch: attempt " + std::to_string(a.n) + ": " + a.reason);
    else say("launch: attempt " + std::to_string(a.n) + " failed (exit " + std::to_string(status) + "): " + a.reason);
    if (status == kExitBadInput)
      return o_.restarts > 0 ? give_up(a.n, "bad input (exit 2); a restart cannot fix it") : kExitBadInput;
    if (o_.restarts == 0) return status;
    // Stopped by us to grow is no crash, whatever it managed before.
    const bool no_progress = !a.grow_restart && (!a.progress.known || a.progress.step <= a.progress.start_step);
    if (no_progress && prev_no_progress_)
      return give_up(a.n, "crash loop: attempts " + std::to_string(a.n - 1) + " and " + std::to_string(a.n) +
                              " both ended before completing their first step");
    prev_no_progress_ = no_progress;
    if (status != kExitPreempted) {
      if (restarts_used_ >= o_.restarts)
        return give_up(a.n, std::to_string(o_.restarts) + " restart" + (o_.restarts == 1 ? "" : "s") + " used");
      ++restarts_used_;
      leave_out_failed_slot(a);
      probe_all(a.plan, false, false);  // what this failure left out is not taken back by its own restart
    } else if (!a.grow_restart && o_.grow) {
      probe_all(a.plan, true, true);
    }
    return std::nullopt;
  }

  bool anything_left_out() const {
    return std::any_of(excl_.begin(), excl_.end(), [](const auto& kv) {
      return kv.second.whole_node || kv.second.cpu_slots > 0 || !kv.second.devices.empty();
    });
  }

  void leave_out_failed_slot(const Attempt& a) {
    if (a.failure.rank < 0) return;
    const RankPlan& rp = a.plan.ranks[size_t(a.failure.rank)];
    PlanRequest::Exclusion& ex = excl_[rp.host];
    if (rp.devices.empty()) ++ex.cpu_slots;
    else ex.devices.insert(rp.devices[0]);
    say("launch: leaving out rank " + std::to_string(a.failure.rank) + "'s slot (" + rp.host + ", " +
        (rp.devices.empty() ? std::string("one CPU slot") : rp.devices[0]) + ")");
  }

  // Probes every node (only those with something left out when `only_left_out`; a node left out
  // whole only when `readmit`) and leaves out those that fail, and leased devices that are gone.
  // With --grow and `readmit`, what passes is taken back. Returns whether anything was.
  bool probe_all(const Plan& p, bool only_left_out, bool readmit) {
    readmit = readmit && o_.grow;
    bool readmitted = false;
    for (const Allocation& al : lease_.alloc) {
      PlanRequest::Exclusion& ex = excl_[al.node];
      const bool left_out = ex.whole_node || ex.cpu_slots > 0 || !ex.devices.empty();
      if (only_left_out && !left_out) continue;
      if (ex.whole_node && !readmit) {
        say("launch: node " + al.node + " stays left out");
        continue;
      }
      if (g_stops) break;  // launch was asked to stop: no more probes, nothing concluded
      ProbeResult r = probe_node(m_, al, p, o_);
      if (r.stopped) break;
      if (!r.ok) {
        say("launch: probe of " + al.node + " failed (" + r.why + "); leaving it out");
        ex.whole_node = true;
        continue;
      }
      std::string msg = "launch: probe of " + al.node + ": " + r.why;
      if (readmit && left_out) {
        readmitted = true;
        ex = PlanRequest::Exclusion{};
        msg += "; admitted again";
      }
      for (const std::string& d : r.missing)
        if (ex.devices.insert(d).second) msg += "; leaving out " + d + " (its device node is gone)";
      say(msg);
    }
    return readmitted;
  }

  const SuperviseOptions& o_;
  const Manifest& m_;
  const Lease& lease_;
  const std::string& job_dir_;
  SignalScope signals_;
  bool is_train_ = false;   // `train` without --resume/--init: restarts add --resume
  std::map<std::string, PlanRequest::Exclusion> excl_;  // left out, by node
  std::optional<int64_t> global_batch_;  // the run's, from progress.json
  std::optional<WriteRoot> jd_;          // the job dir, once the first attempt made it
  json attempts_ = json::array();
  int restarts_used_ = 0, first_np_ = 0, last_status_ = 0;
  bool prev_no_progress_ = false, resume_ = false;
};

}  // namespace

int supervise(const SuperviseOptions& o) { return Supervisor(o).run(); }

}  // namespace lt::lease
