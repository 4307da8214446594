// What a training run asks of the place it runs in: which paths it may touch, how many bytes it
// may write, how long it may run. The launcher's lease guard (lease/tenancy.h) implements it
// for leased jobs; the default allows everything. Keeping it an interface here keeps the
// runtime free of the launcher (dependencies point downward).
#pragma once
#include <cstdint>
#include <string>

namespace lt {

// What rank 0 reports after the first step of an attempt, after every checkpoint and when it
// stops: a supervisor restarting the job reads it (job-dir progress.json).
struct RunProgress {
  int64_t step = 0;              // the last completed step
  int64_t start_step = 0;        // the step this attempt resumed from
  int64_t checkpoint_step = 0;   // the newest complete checkpoint's step (0: none)
  double checkpoint_seconds = 0; // the last save's duration (0: none)
  int64_t global_batch = 0;      // sequences per optimizer step (micro_batch x world x grad_accum)
  int world = 1;
};

class RunPolicy {
 public:
  virtual ~RunPolicy() = default;
  // The path to open (resolved), or a UserError when the run may not read/write it.
  virtual std::string check_path(const std::string& path, bool for_write) const { return path; }
  // UserError when writing n more bytes would exceed the storage quota.
  virtual void reserve_bytes(uint64_t n) const {}
  // Seconds until the run must have checkpointed and stopped (<= 0: now).
  virtual int64_t seconds_until_deadline() const { return INT64_MAX; }
  // One line for the log when the run stops for its deadline.
  virtual std::string deadline_message() const { return "deadline reached"; }
  // Job-directory reports for a supervisor (nothing without one). Best effort: a failure to
  // write is one line on stderr and never changes how the run ends.
  virtual void record_progress(const RunProgress& p) const {}
  // A failing rank's last words, written before it takes the job down.
  virtual void record_exit(int rank, int exit_code, const std::string& error) const {}
};

}  // namespace lt
