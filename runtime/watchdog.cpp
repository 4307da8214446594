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
      if (waited > timeout_s_ && !w->query()) {
        WorkPtr stalled = w;
        lock.unlock();
        on_timeout_(*stalled, waited);  // does not return
        lock.lock();
        break;
      }
    }
  }
}

}  // namespace lt
