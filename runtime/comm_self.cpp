// The communicator front (Work, Communicator: validation, labels, the watchdog hook) and
// SelfComm, the one-process backend that needs no MPI.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "runtime/comm.h"
#include "runtime/watchdog.h"

namespace lt {

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
  }
  return "?";
}

// ---- Work ----

Work::Work(std::string op, std::string tag, int64_t step, int64_t seq, size_t bytes)
    : op_(std::move(op)), tag_(std::move(tag)), step_(step), seq_(seq), bytes_(bytes), issued_(Clock::now()),
      started_(issued_), arrived_(issued_), finished_(issued_) {}

std::string Work::describe() const {
  char size[32];
  if (bytes_ >= 1000000)
    std::snprintf(size, sizeof size, "%.2f MB", bytes_ / 1e6);
  else if (bytes_ >= 10000)
    std::snprintf(size, sizeof size, "%.1f kB", bytes_ / 1e3);
  else
    std::snprintf(size, sizeof size, "%zu bytes", bytes_);
  std::string s = op_ + " #" + std::to_string(seq_) + " (";
  if (!tag_.empty()) s += tag_ + ", ";
  s += size;
  if (step_ >= 0) s += ", step " + std::to_string(step_);
  return s + ")";
}

void Work::finish(const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = error;
    finished_ = Clock::now();
    state_.store(error.empty() ? kDone : kFailed, std::memory_order_release);
  }
  cv_.notify_all();
}

void Work::block() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return completed(); });
}

bool Work::poll() {
  if (!completed()) progress();
  if (!completed()) return false;
  if (state_.load(std::memory_order_acquire) == kFailed) throw CommError(describe() + ": " + error_);
  return true;
}

void Work::wait() {
  if (!completed()) block();
  if (state_.load(std::memory_order_acquire) == kFailed) throw CommError(describe() + ": " + error_);
}

// ---- Communicator ----

Communicator::~Communicator() = default;

WorkPtr Communicator::new_work_base(const std::string& op, size_t bytes) {
  return std::make_shared<Work>(op, tag_, step_, seq_++, bytes);
}

WorkPtr Communicator::make_work(const std::string& op, size_t bytes) { return new_work_base(op, bytes); }

void Communicator::check_tensor(const char* op, const Tensor& t) const {
  if (!t.buf) throw CommError(backend() + ": " + op + ": the tensor has no buffer");
  if (t.device() != device())
    throw CommError(backend() + ": " + op + ": the tensor is on " + to_string(t.device()) + ", this backend needs " +
                    to_string(device()) + " buffers");
}

// Watched from before the backend takes it, so a backend call that blocks (NCCL connecting to
// a dead peer, a blocking MPI call) is covered too. One the backend refuses (it threw) is
// finished as failed, so it is not pending anywhere.
template <class F>
WorkPtr Communicator::issue(WorkPtr w, F&& run) {
  if (watchdog_) watchdog_->watch(w);
  try {
    run();
  } catch (const std::exception& e) {
    w->finish(std::string("not issued: ") + e.what());
    throw;
  }
  return w;
}

WorkPtr Communicator::all_reduce(const Tensor& t, ReduceOp op) {
  check_tensor("all_reduce", t);
  WorkPtr w = make_work("all_reduce", t.nbytes());
  return issue(w, [&] { do_all_reduce(w, t, op); });
}

WorkPtr Communicator::reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) {
  check_tensor("reduce_scatter", out);
  check_tensor("reduce_scatter", in);
  if (in.dtype != out.dtype || in.numel() != out.numel() * world_)
    throw CommError(backend() + ": reduce_scatter: input has " + std::to_string(in.numel()) +
                    " elements, expected world (" + std::to_string(world_) + ") x output (" +
                    std::to_string(out.numel()) + ") of the same dtype");
  WorkPtr w = make_work("reduce_scatter", in.nbytes());
  return issue(w, [&] { do_reduce_scatter(w, out, in, op); });
}

WorkPtr Communicator::all_gather(const Tensor& out, const Tensor& in) {
  check_tensor("all_gather", out);
  check_tensor("all_gather", in);
  if (in.dtype != out.dtype || out.numel() != in.numel() * world_)
    throw CommError(backend() + ": all_gather: output has " + std::to_string(out.numel()) +
                    " elements, expected world (" + std::to_string(world_) + ") x input (" +
                    std::to_string(in.numel()) + ") of the same dtype");
  WorkPtr w = make_work("all_gather", out.nbytes());
  return issue(w, [&] { do_all_gather(w, out, in); });
}

WorkPtr Communicator::broadcast(const Tensor& t, int root) {
  check_tensor("broadcast", t);
  if (root < 0 || root >= world_)
    throw CommError(backend() + ": broadcast: root " + std::to_string(root) + " is not a rank of " +
                    std::to_string(world_));
  WorkPtr w = make_work("broadcast", t.nbytes());
  return issue(w, [&] { do_broadcast(w, t, root); });
}

WorkPtr Communicator::barrier() {
  WorkPtr w = make_work("barrier", 0);
  return issue(w, [&] { do_barrier(w); });
}

void Communicator::do_all_reduce(const WorkPtr&, const Tensor&, ReduceOp) {
  throw CommError(backend() + ": all_reduce is not implemented");
}
void Communicator::do_reduce_scatter(const WorkPtr&, const Tensor&, const Tensor&, ReduceOp) {
  throw CommError(backend() + ": reduce_scatter is not implemented");
}
void Communicator::do_all_gather(const WorkPtr&, const Tensor&, const Tensor&) {
  throw CommError(backend() + ": all_gather is not implemented");
}
void Communicator::do_broadcast(const WorkPtr&, const Tensor&, int) {
  throw CommError(backend() + ": broadcast is not implemented");
}
void Communicator::do_barrier(const WorkPtr&) { throw CommError(backend() + ": barrier is not implemented"); }

// ---- SelfComm ----

namespace {

// One process: every collective is the identity (a copy where in and out differ). The same
// class serves host and device buffers; only the copy differs.
class SelfComm final : public Communicator {
 public:
  SelfComm(Device dev, SelfCopy copy) : Communicator(0, 1), dev_(dev), copy_(copy) {}
  std::string backend() const override { return "self"; }
  Device device() const override { return dev_; }
  [[noreturn]] void abort(int code) noexcept override {
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(code);
  }

 protected:
  // Sum, Avg (x / 1), Max and Min of one value are the value itself.
  void do_all_reduce(const WorkPtr& w, const Tensor&, ReduceOp) override { w->finish(); }
  void do_reduce_scatter(const WorkPtr& w, const Tensor& out, const Tensor& in, ReduceOp) override { copy(w, out, in); }
  void do_all_gather(const WorkPtr& w, const Tensor& out, const Tensor& in) override { copy(w, out, in); }
  void do_broadcast(const WorkPtr& w, const Tensor&, int) override { w->finish(); }
  void do_barrier(const WorkPtr& w) override { w->finish(); }

 private:
  void copy(const WorkPtr& w, const Tensor& out, const Tensor& in) {
    std::string err;
    if (out.raw() != in.raw()) err = copy_(out.raw(), in.raw(), out.nbytes());
    w->finish(err);
  }
  Device dev_;
  SelfCopy copy_;
};

}  // namespace

std::unique_ptr<Communicator> make_self_comm(Device dev, SelfCopy copy) {
  return std::make_unique<SelfComm>(dev, copy);
}

std::unique_ptr<Communicator> make_self_comm() {
  return make_self_comm(Device::CPU, [](void* dst, const void* src, size_t n) {
    std::memmove(dst, src, n);
    return std::string();
  });
}

}  // namespace lt
