// The collective watchdog (see watchdog.h).
#include "runtime/watchdog.h"

#include <algorithm>
#include <chrono>

namespace lt {

Watchdog::Watchdog(double timeout_s, OnTimeout on_timeout)
    : timeout_s_(timeout_s), on_timeout_(std::move(on_timeout)), thread_([this] { loop(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Watchdog::watch(WorkPtr w) {
  std::lock_guard<std::mutex> lock(mu_);
  works_.push_back(std::move(w));
}

void Watchdog::set_due(Due due, OnTimeout on_due) {
  std::lock_guard<std::mutex> lock(mu_);
  due_ = std::move(due);
  on_due_ = std::move(on_due);
}

size_t Watchdog::pending() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::count_if(works_.begin(), works_.end(), [](const WorkPtr& w) { return !w->query(); });
}

void Watchdog::loop() {
  // Checks a few times per timeout (at most every 0.5 s): a stall is reported within
  // timeout * 1.25 (or timeout + 0.5 s) of the collective's issue.
  const auto period = std::chrono::duration<double>(std::min(0.5, timeout_s_ / 4));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, period, [this] { return stop_; });
    if (stop_) break;
    std::erase_if(works_, [](const WorkPtr& w) { return w->query(); });
    const auto now = Work::Clock::now();
    for (const WorkPtr& w : works_) {
      const double waited = std::chrono::duration<double>(now - w->issued()).count();
      const bool timed_out = waited > timeout_s_, due = !timed_out && due_ && due_(waited);
      if ((timed_out || due) && !w->query()) {
        WorkPtr stalled = w;
        const OnTimeout& call = timed_out ? on_timeout_ : on_due_;
        lock.unlock();
        call(*stalled, waited);  // does not return
        lock.lock();
        break;
      }
    }
  }
}

}  // namespace lt
