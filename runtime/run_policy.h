// What a training run asks of the place it runs in: which paths it may touch, how many bytes it
// may write, how long it may run. The launcher's lease guard (lease/tenancy.h) implements it
// for leased jobs; the default allows everything. Keeping it an interface here keeps the
// runtime free of the launcher (dependencies point downward).
#pragma once
#include <cstdint>
#include <string>

namespace lt {

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
};

}  // namespace lt
