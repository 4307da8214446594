// Communicators in the shape of PyTorch's c10d: one interface, asynchronous collectives that
// return Work handles, backends behind it (SelfComm: one process; MpiComm: host buffers;
// NcclComm: device buffers). A backend that lacks a collective throws CommError naming both.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include "runtime/tensor.h"

namespace lt {

// A collective failed, was misused (wrong device, shapes), or the backend does not have it.
struct CommError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Avg is the sum divided by the world size in fp32 (x / N, correctly rounded), the same
// arithmetic on every backend and every rank.
enum class ReduceOp { Sum, Avg, Max, Min };
const char* to_string(ReduceOp op);

class Watchdog;

// The handle of one collective. poll() and wait() are for the thread that issued it;
// completed() is safe from any thread (the watchdog reads it).
class Work {
 public:
  using Clock = std::chrono::steady_clock;
  Work(std::string op, std::string tag, int64_t step, int64_t seq, size_t bytes);
  virtual ~Work() = default;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;

  // true once the result is usable; throws CommError if the collective failed.
  bool poll();
  // Blocks until the result is usable; throws CommError if the collective failed.
  void wait();
  bool completed() const noexcept { return state_.load(std::memory_order_acquire) != kPending; }
  // Whether it has finished by now, from any thread without side effects (the watchdog):
  // completed(), or for stream-ordered backends whether the device has finished it.
  virtual bool query() const noexcept { return completed(); }

  const std::string& op() const { return op_; }    // "all_reduce", ...
  const std::string& tag() const { return tag_; }  // what it carries, e.g. "grad bucket 2/5"
  int64_t step() const { return step_; }
  int64_t seq() const { return seq_; }  // position in this communicator's collective order
  size_t bytes() const { return bytes_; }
  // "all_reduce #37 (grad bucket 2/5, 1.25 MB, step 12)"
  std::string describe() const;
  // When it was issued, began executing, had every rank present (backends that wait for
  // the others first; else = started) and finished (only once completed()).
  Clock::time_point issued() const { return issued_; }
  Clock::time_point started() const { return started_; }
  Clock::time_point all_arrived() const { return arrived_; }
  Clock::time_point finished() const { return finished_; }

  // For backends: mark started (and all arrived), then succeeded ("" error) or failed.
  void mark_started() { started_ = arrived_ = Clock::now(); }
  void mark_all_arrived() { arrived_ = Clock::now(); }
  void finish(const std::string& error = "");

 protected:
  // Poll-driven backends test their request here (called by poll/wait on the issuing thread).
  virtual void progress() {}
  // Blocks until completed(); the default waits for finish() from another thread.
  virtual void block();

 private:
  static constexpr int kPending = 0, kDone = 1, kFailed = 2;
  std::string op_, tag_;
  int64_t step_, seq_;
  size_t bytes_;
  Clock::time_point issued_, started_, arrived_, finished_;
  std::atomic<int> state_{kPending};
  std::string error_;
  std::mutex mu_;
  std::condition_variable cv_;
};
using WorkPtr = std::shared_ptr<Work>;

class Communicator {
 public:
  virtual ~Communicator();
  virtual std::string backend() const = 0;  // "self", "mpi", "nccl"
  virtual Device device() const = 0;        // where its buffers must live
  int rank() const { return rank_; }
  int world() const { return world_; }

  // In place: t becomes the reduction of every rank's t.
  WorkPtr all_reduce(const Tensor& t, ReduceOp op = ReduceOp::Sum);
  // in [world * n] -> out [n]: rank r gets the reduction of block r. out may be the block
  // in[r*n, (r+1)*n) itself (in place), or a separate buffer.
  WorkPtr reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op = ReduceOp::Sum);
  // in [n] -> out [world * n]: block r of out is rank r's in. in may be out's own block r.
  WorkPtr all_gather(const Tensor& out, const Tensor& in);
  // In place: every rank's t becomes root's t.
  WorkPtr broadcast(const Tensor& t, int root);
  WorkPtr barrier();

  // Poll-driven backends advance outstanding collectives here; call it often (the data-
  // parallel reducer calls it from every backward hook). A no-op for threaded backends.
  virtual void progress() {}

  // Ends the whole job now (every rank), with exit status `code`, after `message` (printed
  // by the caller). MPI_Abort / ncclCommAbort; SelfComm exits the process.
  [[noreturn]] virtual void abort(int code) noexcept = 0;

  // What the next collectives are for, carried into their Work (and watchdog messages).
  void set_step(int64_t step) { step_ = step; }
  void set_tag(std::string tag) { tag_ = std::move(tag); }
  int64_t step() const { return step_; }
  // Every collective issued from now on is watched (nullptr: none).
  void set_watchdog(std::shared_ptr<Watchdog> w) { watchdog_ = std::move(w); }
  // "rank 1/4"
  std::string who() const { return "rank " + std::to_string(rank_) + "/" + std::to_string(world_); }

 protected:
  Communicator(int rank, int world) : rank_(rank), world_(world) {}
  // The backend's collectives; `work` is created, validated and registered by the caller.
  // Defaults throw CommError: "<backend>: <op> is not implemented".
  virtual void do_all_reduce(const WorkPtr& work, const Tensor& t, ReduceOp op);
  virtual void do_reduce_scatter(const WorkPtr& work, const Tensor& out, const Tensor& in, ReduceOp op);
  virtual void do_all_gather(const WorkPtr& work, const Tensor& out, const Tensor& in);
  virtual void do_broadcast(const WorkPtr& work, const Tensor& t, int root);
  virtual void do_barrier(const WorkPtr& work);
  // Backends make their own Work subclass (e.g. one holding an MPI_Request).
  virtual WorkPtr make_work(const std::string& op, size_t bytes);
  WorkPtr new_work_base(const std::string& op, size_t bytes);  // the plain Work with this comm's labels

 private:
  void check_tensor(const char* op, const Tensor& t) const;
  template <class F>
  WorkPtr issue(WorkPtr w, F&& run);
  int rank_, world_;
  int64_t step_ = -1;
  int64_t seq_ = 0;
  std::string tag_;
  std::shared_ptr<Watchdog> watchdog_;
};

// One process: every collective is the identity (copies where in and out differ). The plain
// form works on host buffers; a device backend passes its device and its copy (which returns
// "" or the error), e.g. make_cuda_self_comm() in cuda_backend.h.
std::unique_ptr<Communicator> make_self_comm();
using SelfCopy = std::string (*)(void* dst, const void* src, size_t bytes);
std::unique_ptr<Communicator> make_self_comm(Device dev, SelfCopy copy);

#ifdef LEASETRAIN_HAVE_MPI
// MPI over host buffers. Initialises MPI (MPI_THREAD_MULTIPLE) unless the program already
// did, and finalises it on destruction only if it initialised it. Collectives run on a
// duplicate of `base` (MPI_COMM_WORLD by default; a sub-communicator for tests), so they
// never mix with anyone else's messages.
//   progress = "thread": a communication thread executes collectives in issue order with
//     blocking MPI calls; the issuing thread never touches MPI.
//   progress = "poll": non-blocking MPI (MPI_Iallreduce, ...) issued on the calling thread
//     and advanced by MPI_Test in progress()/poll()/wait().
struct MpiCommOptions {
  std::string progress = "thread";
  void* base_comm = nullptr;  // an MPI_Comm*; nullptr: MPI_COMM_WORLD
};
std::unique_ptr<Communicator> make_mpi_comm(const MpiCommOptions& opt = {});
// Initialises MPI with MPI_THREAD_MULTIPLE if nobody has; true if this call did.
bool mpi_init_if_needed();
#endif

#ifdef LEASETRAIN_HAVE_NCCL
// NCCL over device buffers on its own CUDA stream. Each collective waits (by event) for the
// work already queued on `compute_stream` (a cudaStream_t; nullptr: the legacy default
// stream), and Work::wait() makes the compute stream wait for it and the host poll it (so an
// asynchronous NCCL error ends the wait: the communicator is aborted and wait() throws). The
// ncclUniqueId travels from rank 0 by `bootstrap.broadcast` (an MpiComm in a multi-rank job;
// with world 1 no bootstrap is needed and nullptr is fine). Selects CUDA device
// `device_index` first.
struct NcclCommOptions {
  int device_index = 0;
  void* compute_stream = nullptr;
};
std::unique_ptr<Communicator> make_nccl_comm(Communicator* bootstrap, int rank, int world,
                                             const NcclCommOptions& opt = {});
#endif

}  // namespace lt
