// The collective watchdog: a thread that watches every collective a communicator issues and,
// when one is not done `timeout` seconds after it was issued, calls on_timeout (which prints
// and aborts the job: MPI_Abort / ncclCommAbort) instead of letting the job hang forever.
#pragma once
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/comm.h"

namespace lt {

class Watchdog {
 public:
  // on_timeout gets the stalled collective's description (Work::describe()) and the seconds
  // it has waited; it must not return (it aborts the job).
  using OnTimeout = std::function<void(const Work& stalled, double waited_s)>;
  Watchdog(double timeout_s, OnTimeout on_timeout);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void watch(WorkPtr w);
  // An end sooner than the timeout: `due` is asked about each pending collective (how long it
  // has waited) on every check; when it says yes, on_due is called with that collective and it
  // must not return either. The trainer uses it after a preemption notice.
  using Due = std::function<bool(double waited_s)>;
  void set_due(Due due, OnTimeout on_due);
  double timeout() const { return timeout_s_; }
  size_t pending();  // collectives watched and not yet done

 private:
  void loop();
  double timeout_s_;
  OnTimeout on_timeout_;
  Due due_;
  OnTimeout on_due_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<WorkPtr> works_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace lt
