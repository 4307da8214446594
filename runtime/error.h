// Errors: UserError is bad input a user or operator can fix (one line, exit code 2);
// LT_CHECK guards internal invariants and aborts with file:line context.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace lt {

// Exit codes of `leasetrain train` (a supervisor restarting jobs reads them): 0 finished, or
// stopped and checkpointed for the lease's deadline; 1 failure (I/O, internal); 2 bad input;
// 3 the watchdog aborted a stalled job; 75 (sysexits' EX_TEMPFAIL) preempted by SIGTERM,
// SIGUSR1 or a first SIGINT: every rank stopped at the same step, checkpointed when the save
// fit in [train] preempt_grace; resume with --resume.
inline constexpr int kExitFailure = 1, kExitBadInput = 2, kExitWatchdog = 3, kExitPreempted = 75;

// Thrown for bad input (config, data, checkpoint, flags). The message names the file and
// field and says what was expected; the CLI prints it on one line and exits with code 2.
struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Thrown when a write the run needs fails for a reason that is not bad input (disk full, I/O
// error, file size limit): one line naming the file, exit code 1. Nothing written is trusted.
struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail_internal(const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "leasetrain: internal error at %s:%d: %s\n", file, line, msg.c_str());
  std::abort();
}

}  // namespace lt

#define LT_CHECK(cond, msg)                                                      \
  do {                                                                           \
    if (!(cond)) ::lt::fail_internal(__FILE__, __LINE__, std::string(#cond ": ") + (msg)); \
  } while (0)
