// MpiComm: collectives over host buffers with MPI (see comm.h for the two progress modes).
// Why a communication thread: Open MPI has no asynchronous progress, so a non-blocking
// collective only moves while some thread is inside MPI. The "thread" mode gives collectives
// a thread that runs them with blocking MPI calls (Open MPI's tuned algorithms, 2-4x faster
// here than libnbc's MPI_I* ones) while the compute thread keeps computing; "poll" issues
// MPI_I* collectives and relies on MPI_Test from the backward hooks to push them along.
//
// Why the communication thread sleeps until every rank has arrived: Open MPI busy-polls
// inside a blocking call, and a rank that reaches a bucket first would spin until the last
// one does. On a machine whose cores are all computing (2 ranks on 2 cores) that spin takes
// CPU from compute, and on the VMs measured here even a spin on another vCPU slowed compute
// by 1.6x. So each collective first waits for the others with MPI_Ibarrier polled by
// MPI_Test between short sleeps, then runs the blocking collective with everyone present.
// LEASETRAIN_MPI_ARRIVAL=spin skips the arrival wait (for measurements).
#include <mpi.h>
#include <sys/prctl.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <thread>

#include "runtime/comm.h"

namespace lt {

namespace {

std::string mpi_error_string(int rc) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string(buf, len);
}

// For setup calls outside any Work: throws CommError with file:line and MPI's message.
#define MPI_CHECK(call)                                                                                    \
  do {                                                                                                     \
    int rc_ = (call);                                                                                      \
    if (rc_ != MPI_SUCCESS)                                                                                \
      throw CommError(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " #call ": " +          \
                      mpi_error_string(rc_));                                                              \
  } while (0)

MPI_Datatype mpi_type(DType t, bool reduction) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::I32: return MPI_INT;
    case DType::BF16:
      if (reduction) throw CommError("mpi: reductions of bf16 are not supported (MPI has no bf16 type)");
      return MPI_UINT16_T;  // moved as opaque 16-bit words
  }
  throw CommError("mpi: unknown dtype");
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
    case ReduceOp::Avg: return MPI_SUM;  // Avg divides afterwards
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_SUM;
}

int mpi_count(int64_t n, const char* op) {
  if (n > INT_MAX) throw CommError(std::string("mpi: ") + op + ": more than 2^31-1 elements in one call");
  return (int)n;
}

// Avg = the sum divided by the world size, elementwise (x / N is correctly rounded, so every
// rank holding the same sum holds the same average).
void divide(void* p, DType t, int64_t n, int world) {
  if (t == DType::F32) {
    float* x = static_cast<float*>(p);
    const float d = (float)world;
    for (int64_t i = 0; i < n; i++) x[i] /= d;
  } else if (t == DType::I32) {
    int32_t* x = static_cast<int32_t*>(p);
    for (int64_t i = 0; i < n; i++) x[i] /= world;
  }
}

// A collective as the two modes run it: `blocking` on the communication thread, or `start`
// (MPI_I*) on the caller's thread; `post` (Avg's division, moving an in-place result) runs
// after completion on whichever thread saw it complete.
struct Job {
  bool barrier = false;  // the arrival wait is the whole collective
  std::function<int()> blocking;
  std::function<int(MPI_Request*)> start;
  std::function<void()> post;
};

class MpiWork final : public Work {
 public:
  MpiWork(std::string op, std::string tag, int64_t step, int64_t seq, size_t bytes, bool poll_mode)
      : Work(std::move(op), std::move(tag), step, seq, bytes), poll_mode_(poll_mode) {}
  Job job;
  MPI_Request req = MPI_REQUEST_NULL;

  // Poll mode: one MPI_Test; never throws (the issuer sees errors in poll() or wait()).
  bool test() {
    if (!completed()) progress();
    return completed();
  }

  // Poll mode: called with the request started.
  void complete(int rc) {
    if (rc != MPI_SUCCESS) return finish(mpi_error_string(rc));
    try {
      if (job.post) job.post();
    } catch (const std::exception& e) {
      return finish(e.what());
    }
    finish();
  }

 protected:
  void progress() override {
    if (!poll_mode_ || req == MPI_REQUEST_NULL) return;
    int flag = 0;
    const int rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS || flag) complete(rc);
  }
  void block() override {
    if (!poll_mode_) return Work::block();
    if (completed()) return;
    complete(MPI_Wait(&req, MPI_STATUS_IGNORE));
  }

 private:
  bool poll_mode_;
};

class MpiComm final : public Communicator {
 public:
  MpiComm(MPI_Comm comm, int rank, int world, bool poll_mode)
      : Communicator(rank, world), comm_(comm), poll_(poll_mode) {
    const char* arrival = std::getenv("LEASETRAIN_MPI_ARRIVAL");
    sleep_until_arrival_ = !(arrival && std::string(arrival) == "spin");
    if (!poll_)
      worker_ = std::thread([this] {
        ::prctl(PR_SET_TIMERSLACK, 5000UL, 0, 0, 0);  // 5 us, not 50: the arrival wait's sleeps start at 20 us
        loop();
      });
  }

  ~MpiComm() override {
    if (worker_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
      }
      cv_.notify_all();
      worker_.join();
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  std::string backend() const override { return "mpi"; }
  Device device() const override { return Device::CPU; }

  [[noreturn]] void abort(int code) noexcept override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort should not return
  }

  void progress() override {
    if (!poll_) return;
    // One MPI_Test drives Open MPI's progress engine for every outstanding request; testing
    // each retires the finished ones in order.
    while (!pending_.empty()) {
      std::shared_ptr<MpiWork> w = pending_.front().lock();
      if (w && !w->test()) break;
      pending_.pop_front();
    }
  }

 protected:
  WorkPtr make_work(const std::string& op, size_t bytes) override {
    WorkPtr base = new_work_base(op, bytes);  // for its labels and sequence number
    return std::make_shared<MpiWork>(base->op(), base->tag(), base->step(), base->seq(), bytes, poll_);
  }

  void do_all_reduce(const WorkPtr& w, const Tensor& t, ReduceOp op) override {
    const MPI_Datatype type = mpi_type(t.dtype, true);
    const int n = mpi_count(t.numel(), "all_reduce");
    void* buf = t.raw();
    Job job;
    job.blocking = [=, this] { return MPI_Allreduce(MPI_IN_PLACE, buf, n, type, mpi_op(op), comm_); };
    job.start = [=, this](MPI_Request* r) { return MPI_Iallreduce(MPI_IN_PLACE, buf, n, type, mpi_op(op), comm_, r); };
    if (op == ReduceOp::Avg) job.post = [=, this, dt = t.dtype] { divide(buf, dt, n, world()); };
    submit(w, std::move(job));
  }

  void do_reduce_scatter(const WorkPtr& w, const Tensor& out, const Tensor& in, ReduceOp op) override {
    const MPI_Datatype type = mpi_type(in.dtype, true);
    const int n = mpi_count(out.numel(), "reduce_scatter");
    char* src = static_cast<char*>(in.raw());
    char* dst = static_cast<char*>(out.raw());
    const size_t block = out.nbytes();
    const bool in_place = dst == src + (size_t)rank() * block;
    if (!in_place && dst < src + in.nbytes() && src < dst + block)
      throw CommError("mpi: reduce_scatter: the output overlaps the input but is not this rank's block of it");
    Job job;
    const MPI_Op mop = mpi_op(op);
    if (in_place) {
      // MPI_IN_PLACE leaves the result at the start of the buffer; post moves it to our block.
      job.blocking = [=, this] { return MPI_Reduce_scatter_block(MPI_IN_PLACE, src, n, type, mop, comm_); };
      job.start = [=, this](MPI_Request* r) {
        return MPI_Ireduce_scatter_block(MPI_IN_PLACE, src, n, type, mop, comm_, r);
      };
    } else {
      job.blocking = [=, this] { return MPI_Reduce_scatter_block(src, dst, n, type, mop, comm_); };
      job.start = [=, this](MPI_Request* r) { return MPI_Ireduce_scatter_block(src, dst, n, type, mop, comm_, r); };
    }
    const bool avg = op == ReduceOp::Avg;
    job.post = [=, this, dt = in.dtype] {
      if (in_place && dst != src) std::memmove(dst, src, block);
      if (avg) divide(dst, dt, n, world());
    };
    submit(w, std::move(job));
  }

  void do_all_gather(const WorkPtr& w, const Tensor& out, const Tensor& in) override {
    const MPI_Datatype type = mpi_type(in.dtype, false);
    const int n = mpi_count(in.numel(), "all_gather");
    char* src = static_cast<char*>(in.raw());
    char* dst = static_cast<char*>(out.raw());
    const size_t block = in.nbytes();
    const bool in_place = src == dst + (size_t)rank() * block;
    if (!in_place && src < dst + out.nbytes() && dst < src + block)
      throw CommError("mpi: all_gather: the input overlaps the output but is not this rank's block of it");
    Job job;
    if (in_place) {
      job.blocking = [=, this] { return MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, dst, n, type, comm_); };
      job.start = [=, this](MPI_Request* r) {
        return MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, dst, n, type, comm_, r);
      };
    } else {
      job.blocking = [=, this] { return MPI_Allgather(src, n, type, dst, n, type, comm_); };
      job.start = [=, this](MPI_Request* r) { return MPI_Iallgather(src, n, type, dst, n, type, comm_, r); };
    }
    submit(w, std::move(job));
  }

  void do_broadcast(const WorkPtr& w, const Tensor& t, int root) override {
    const MPI_Datatype type = mpi_type(t.dtype, false);
    const int n = mpi_count(t.numel(), "broadcast");
    void* buf = t.raw();
    Job job;
    job.blocking = [=, this] { return MPI_Bcast(buf, n, type, root, comm_); };
    job.start = [=, this](MPI_Request* r) { return MPI_Ibcast(buf, n, type, root, comm_, r); };
    submit(w, std::move(job));
  }

  void do_barrier(const WorkPtr& w) override {
    Job job;
    job.barrier = true;
    job.blocking = [this] { return MPI_Barrier(comm_); };
    job.start = [this](MPI_Request* r) { return MPI_Ibarrier(comm_, r); };
    submit(w, std::move(job));
  }

 private:
  void submit(const WorkPtr& w, Job job) {
    auto mw = std::static_pointer_cast<MpiWork>(w);
    mw->job = std::move(job);
    if (poll_) {
      mw->mark_started();
      const int rc = mw->job.start(&mw->req);
      if (rc != MPI_SUCCESS) return mw->complete(rc);
      pending_.push_back(mw);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(mw));
    }
    cv_.notify_one();
  }

  // The communication thread: collectives one at a time, in issue order (the same order on
  // every rank, which MPI requires).
  void loop() {
    for (;;) {
      std::shared_ptr<MpiWork> w;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        w = std::move(queue_.front());
        queue_.pop_front();
      }
      w->mark_started();
      if (sleep_until_arrival_ && world() > 1) {
        const int rc = wait_for_arrival();
        w->mark_all_arrived();
        if (rc != MPI_SUCCESS || w->job.barrier) {
          w->complete(rc);
          continue;
        }
      }
      w->complete(w->job.blocking());
    }
  }

  // Returns once every rank has issued this collective: MPI_Ibarrier, tested in a short
  // spin (peers often arrive together), then between sleeps that grow from 20 us to 320 us,
  // so a long wait costs the compute thread a wake-up every 0.3 ms, not every 20 us, and the
  // collective starts at most ~0.3 ms after the last rank arrives.
  int wait_for_arrival() {
    MPI_Request req;
    int rc = MPI_Ibarrier(comm_, &req);
    if (rc != MPI_SUCCESS) return rc;
    const auto t0 = std::chrono::steady_clock::now();
    int sleep_us = 20;
    for (;;) {
      int done = 0;
      rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS || done) return rc;
      if (std::chrono::steady_clock::now() - t0 < std::chrono::microseconds(30)) continue;
      std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
      sleep_us = std::min(2 * sleep_us, 320);
    }
  }

  MPI_Comm comm_;
  bool poll_;
  bool sleep_until_arrival_ = true;
  // thread mode
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<MpiWork>> queue_;
  bool stop_ = false;
  // poll mode: started and not yet seen complete, oldest first
  std::deque<std::weak_ptr<MpiWork>> pending_;
};

}  // namespace

bool mpi_init_if_needed() {
  int inited = 0, finalized = 0;
  MPI_CHECK(MPI_Initialized(&inited));
  if (inited) return false;
  MPI_CHECK(MPI_Finalized(&finalized));
  if (finalized) throw CommError("mpi: MPI was already finalised in this process");
  int provided = 0;
  MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
  // Finalised at exit, so a process may create and destroy communicators more than once.
  // Error paths never get here: a failing rank calls MPI_Abort (Communicator::abort).
  std::atexit([] {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
  });
  return true;
}

std::unique_ptr<Communicator> make_mpi_comm(const MpiCommOptions& opt) {
  if (opt.progress != "thread" && opt.progress != "poll")
    throw CommError("mpi: progress: expected \"thread\" or \"poll\", got \"" + opt.progress + "\"");
  mpi_init_if_needed();
  int provided = 0;
  MPI_CHECK(MPI_Query_thread(&provided));
  const bool poll = opt.progress == "poll";
  // Thread mode: only the communication thread calls MPI between construction and
  // destruction (SERIALIZED would do); the watchdog may call MPI_Abort from its own thread.
  if (!poll && provided < MPI_THREAD_SERIALIZED)
    throw CommError("mpi: progress = \"thread\" needs MPI_THREAD_SERIALIZED or better; this MPI provides level " +
                    std::to_string(provided) + " (use progress = \"poll\")");
  MPI_Comm base = opt.base_comm ? *static_cast<MPI_Comm*>(opt.base_comm) : MPI_COMM_WORLD;
  MPI_Comm comm;
  MPI_CHECK(MPI_Comm_dup(base, &comm));
  MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  int rank = 0, world = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &world));
  return std::make_unique<MpiComm>(comm, rank, world, poll);
}

}  // namespace lt
