// NcclComm: collectives over device buffers with NCCL on the communicator's own CUDA stream,
// ordered after the compute stream's queued work by an event, and the compute stream made to
// wait for the result by Work::wait() (c10d's ProcessGroupNCCL semantics). Built only when
// the CUDA toolkit and NCCL are found. NOTE: compiled and linked on the CI machine, which has
// no GPU; it has not been run there.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "runtime/comm.h"
#include "runtime/nccl_util.h"

namespace lt {

namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::BF16: return ncclBfloat16;
    case DType::I32: return ncclInt32;
  }
  throw CommError("nccl: unknown dtype");
}

// The NCCL communicator handle and the lock that serialises every call on it. NCCL allows one
// thread at a time per communicator, and ncclCommAbort frees it: the watchdog thread's abort
// must not run under a collective being issued or polled on the main thread.
struct NcclHandle {
  ncclComm_t comm = nullptr;
  int device = 0;
  std::timed_mutex mu;
  bool aborted = false;  // under mu

  // Under mu. Releases device kernels stuck waiting for a peer; the handle is gone afterwards.
  void abort_locked() {
    if (aborted) return;
    aborted = true;
    ncclCommAbort(comm);
  }
};

class NcclWork final : public Work {
 public:
  NcclWork(std::string op, std::string tag, int64_t step, int64_t seq, size_t bytes, std::shared_ptr<NcclHandle> h,
           cudaStream_t compute)
      : Work(std::move(op), std::move(tag), step, seq, bytes), h_(std::move(h)), compute_(compute) {
    CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  // May run on the watchdog's thread, whose current device would otherwise be 0: a stray
  // context on another rank's GPU (or a failure in exclusive-process mode).
  ~NcclWork() override {
    cudaSetDevice(h_->device);
    cudaEventDestroy(done_);
  }
  // Records the collective's end on `stream`, after NCCL has taken it.
  void record(cudaStream_t stream) {
    CUDA_CHECK(cudaEventRecord(done_, stream));
    recorded_.store(true, std::memory_order_release);
  }

  // The watchdog sees the work from before the NCCL call returns (the call itself may block on
  // a dead peer); until the event is recorded it is pending, not done (an event never recorded
  // reads as complete to cudaEventQuery).
  bool query() const noexcept override {
    if (completed()) return true;
    if (!recorded_.load(std::memory_order_acquire)) return false;
    cudaSetDevice(h_->device);  // the watchdog's thread (see the destructor)
    return cudaEventQuery(done_) == cudaSuccess;
  }

 protected:
  void progress() override {
    const cudaError_t e = cudaEventQuery(done_);
    if (e == cudaSuccess) return finish();
    if (e != cudaErrorNotReady) return finish(std::string("CUDA: ") + cudaGetErrorString(e));
    std::unique_lock<std::timed_mutex> lock(h_->mu, std::try_to_lock);
    if (!lock.owns_lock()) return;  // the watchdog is aborting the job
    if (h_->aborted) return finish("NCCL: the communicator was aborted after an earlier error");
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(h_->comm, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress) {
      const std::string detail = ncclGetLastError(h_->comm);
      // An operation hit by an asynchronous error never completes: abort the communicator (as
      // NCCL's documentation asks) so its kernels end and the error can unwind the run.
      h_->abort_locked();
      finish(std::string("NCCL: ") + ncclGetErrorString(async) + (detail.empty() ? "" : " (" + detail + ")"));
    }
  }
  // The compute stream waits for the collective on the device; the host polls, so that an
  // asynchronous NCCL error (or the watchdog) ends the wait.
  void block() override {
    const cudaError_t e = cudaStreamWaitEvent(compute_, done_, 0);
    if (e != cudaSuccess) return finish(std::string("CUDA: ") + cudaGetErrorString(e));
    while (!completed()) {
      progress();
      if (!completed()) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

 private:
  std::shared_ptr<NcclHandle> h_;
  cudaStream_t compute_;
  cudaEvent_t done_{};
  std::atomic<bool> recorded_{false};
};

class NcclComm final : public Communicator {
 public:
  NcclComm(int rank, int world, std::shared_ptr<NcclHandle> h, cudaStream_t stream, cudaStream_t compute,
           Communicator* bootstrap)
      : Communicator(rank, world), h_(std::move(h)), stream_(stream), compute_(compute), bootstrap_(bootstrap) {
    CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    CUDA_CHECK(cudaMalloc(&barrier_buf_, sizeof(float)));
    CUDA_CHECK(cudaMemset(barrier_buf_, 0, sizeof(float)));
  }
  ~NcclComm() override {
    {
      std::lock_guard<std::timed_mutex> lock(h_->mu);
      if (!h_->aborted) {
        cudaStreamSynchronize(stream_);
        ncclCommFinalize(h_->comm);  // flushes this rank's operations, then frees (NCCL's order)
        ncclCommDestroy(h_->comm);
      }
    }
    cudaFree(barrier_buf_);
    cudaEventDestroy(ready_);
    cudaStreamDestroy(stream_);
  }

  std::string backend() const override { return "nccl"; }
  Device device() const override { return Device::CUDA; }

  // Called by the watchdog (its own thread) or on a fatal error. ncclCommAbort runs only when
  // no NCCL call holds the communicator (a call stuck on a dead peer keeps it: the process
  // exit tears the context down instead), and a backstop ends the job if the abort itself hangs.
  [[noreturn]] void abort(int code) noexcept override {
    std::fflush(stdout);
    std::fflush(stderr);
    Communicator* boot = bootstrap_;
    std::thread([boot, code] {
      std::this_thread::sleep_for(std::chrono::seconds(10));
      if (boot) boot->abort(code);
      std::_Exit(code);
    }).detach();
    std::unique_lock<std::timed_mutex> lock(h_->mu, std::defer_lock);
    if (lock.try_lock_for(std::chrono::seconds(2))) h_->abort_locked();
    if (boot) boot->abort(code);  // MPI_Abort takes every rank down
    std::_Exit(code);
  }

 protected:
  WorkPtr make_work(const std::string& op, size_t bytes) override {
    WorkPtr base = new_work_base(op, bytes);
    return std::make_shared<NcclWork>(base->op(), base->tag(), base->step(), base->seq(), bytes, h_, compute_);
  }

  void do_all_reduce(const WorkPtr& w, const Tensor& t, ReduceOp op) override {
    enqueue(w, [&](ncclComm_t c) {
      NCCL_CHECK_COMM(c, ncclAllReduce(t.raw(), t.raw(), (size_t)t.numel(), nccl_type(t.dtype), nccl_op(op), c, stream_));
    });
  }
  void do_reduce_scatter(const WorkPtr& w, const Tensor& out, const Tensor& in, ReduceOp op) override {
    const char* src = static_cast<const char*>(in.raw());
    const char* dst = static_cast<const char*>(out.raw());
    const bool in_place = dst == src + (size_t)rank() * out.nbytes();  // NCCL's own in-place form
    if (!in_place && dst < src + in.nbytes() && src < dst + out.nbytes())
      throw CommError("nccl: reduce_scatter: the output overlaps the input but is not this rank's block of it");
    enqueue(w, [&](ncclComm_t c) {
      NCCL_CHECK_COMM(c, ncclReduceScatter(in.raw(), out.raw(), (size_t)out.numel(), nccl_type(in.dtype), nccl_op(op),
                                           c, stream_));
    });
  }
  void do_all_gather(const WorkPtr& w, const Tensor& out, const Tensor& in) override {
    const char* src = static_cast<const char*>(in.raw());
    const char* dst = static_cast<const char*>(out.raw());
    const bool in_place = src == dst + (size_t)rank() * in.nbytes();
    if (!in_place && src < dst + out.nbytes() && dst < src + in.nbytes())
      throw CommError("nccl: all_gather: the input overlaps the output but is not this rank's block of it");
    enqueue(w, [&](ncclComm_t c) {
      NCCL_CHECK_COMM(c, ncclAllGather(in.raw(), out.raw(), (size_t)in.numel(), nccl_type(in.dtype), c, stream_));
    });
  }
  void do_broadcast(const WorkPtr& w, const Tensor& t, int root) override {
    enqueue(w, [&](ncclComm_t c) {
      NCCL_CHECK_COMM(c, ncclBroadcast(t.raw(), t.raw(), (size_t)t.numel(), nccl_type(t.dtype), root, c, stream_));
    });
  }
  // NCCL has no barrier: a one-float all-reduce (as c10d does); the caller's wait() polls it.
  void do_barrier(const WorkPtr& w) override {
    enqueue(w, [&](ncclComm_t c) {
      NCCL_CHECK_COMM(c, ncclAllReduce(barrier_buf_, barrier_buf_, 1, ncclFloat32, ncclSum, c, stream_));
    });
  }

 private:
  // Orders the collective after the compute stream's queued work, runs it (holding the
  // communicator's lock), marks its end.
  template <class F>
  void enqueue(const WorkPtr& w, F&& call) {
    auto nw = std::static_pointer_cast<NcclWork>(w);
    CUDA_CHECK(cudaEventRecord(ready_, compute_));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
    nw->mark_started();
    {
      std::lock_guard<std::timed_mutex> lock(h_->mu);
      if (h_->aborted) throw CommError("nccl: the communicator was aborted after an earlier error");
      call(h_->comm);
    }
    nw->record(stream_);
  }

  std::shared_ptr<NcclHandle> h_;
  cudaStream_t stream_, compute_;
  Communicator* bootstrap_;
  cudaEvent_t ready_{};
  float* barrier_buf_ = nullptr;
};

}  // namespace

ncclComm_t nccl_init_rank(Communicator* bootstrap, int rank, int world, int device) {
  if (world < 1 || rank < 0 || rank >= world)
    throw CommError("nccl: rank " + std::to_string(rank) + " of " + std::to_string(world) + " is not a valid position");
  CUDA_CHECK(cudaSetDevice(device));
  int version = 0;
  NCCL_CHECK(ncclGetVersion(&version));
  if (version < 21000)  // ncclAvg and ncclBfloat16 arrived in 2.10
    throw CommError("nccl: the NCCL library loaded is version " + std::to_string(version) + "; 2.10 or newer is needed");
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  if (world > 1) {
    // The id travels over the host communicator (MPI_Bcast), never through NCCL_COMM_ID.
    if (!bootstrap || bootstrap->device() != Device::CPU || bootstrap->world() != world || bootstrap->rank() != rank)
      throw CommError("nccl: several ranks need a host bootstrap communicator of the same ranks (MpiComm)");
    static_assert(NCCL_UNIQUE_ID_BYTES % sizeof(int32_t) == 0, "the id is sent as int32 words");
    Tensor buf = Tensor::empty(Device::CPU, DType::I32, {NCCL_UNIQUE_ID_BYTES / (int64_t)sizeof(int32_t)});
    std::memcpy(buf.raw(), &id, sizeof id);
    bootstrap->set_tag("ncclUniqueId");
    bootstrap->broadcast(buf, 0)->wait();
    std::memcpy(&id, buf.raw(), sizeof id);
  }
  ncclComm_t comm;
  NCCL_CHECK(ncclCommInitRank(&comm, world, id, rank));
  return comm;
}

std::unique_ptr<Communicator> make_nccl_comm(Communicator* bootstrap, int rank, int world, const NcclCommOptions& opt) {
  auto h = std::make_shared<NcclHandle>();
  h->device = opt.device_index;
  h->comm = nccl_init_rank(bootstrap, rank, world, opt.device_index);
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return std::make_unique<NcclComm>(rank, world, std::move(h), stream, static_cast<cudaStream_t>(opt.compute_stream),
                                    world > 1 ? bootstrap : nullptr);
}

}  // namespace lt
