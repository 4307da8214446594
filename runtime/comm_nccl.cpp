// NcclComm: collectives over device buffers with NCCL on the communicator's own CUDA stream,
// ordered after the compute stream's queued work by an event, and the compute stream made to
// wait for the result by Work::wait() (c10d's ProcessGroupNCCL semantics). Built only when
// the CUDA toolkit and NCCL are found. NOTE: compiled and linked on the CI machine, which has
// no GPU; it has not been run there.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

class NcclWork final : public Work {
 public:
  NcclWork(std::string op, std::string tag, int64_t step, int64_t seq, size_t bytes, ncclComm_t comm,
           cudaStream_t compute, bool host_wait)
      : Work(std::move(op), std::move(tag), step, seq, bytes), comm_(comm), compute_(compute), host_wait_(host_wait) {
    CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  ~NcclWork() override { cudaEventDestroy(done_); }
  cudaEvent_t event() const { return done_; }

  bool query() const noexcept override { return completed() || cudaEventQuery(done_) == cudaSuccess; }

 protected:
  void progress() override {
    const cudaError_t e = cudaEventQuery(done_);
    if (e == cudaSuccess) return finish();
    if (e != cudaErrorNotReady) return finish(std::string("CUDA: ") + cudaGetErrorString(e));
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress)
      finish(std::string("NCCL: ") + ncclGetErrorString(async));
  }
  void block() override {
    // The compute stream waits for the collective on the device; the host waits only if
    // asked, polling so that an asynchronous NCCL error ends the wait.
    const cudaError_t e = cudaStreamWaitEvent(compute_, done_, 0);
    if (e != cudaSuccess) return finish(std::string("CUDA: ") + cudaGetErrorString(e));
    if (!host_wait_) return;
    while (!completed()) {
      progress();
      if (!completed()) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

 private:
  ncclComm_t comm_;
  cudaStream_t compute_;
  bool host_wait_;
  cudaEvent_t done_{};
};

class NcclComm final : public Communicator {
 public:
  NcclComm(int rank, int world, ncclComm_t comm, cudaStream_t stream, cudaStream_t compute, bool host_wait,
           Communicator* bootstrap)
      : Communicator(rank, world), comm_(comm), stream_(stream), compute_(compute), host_wait_(host_wait),
        bootstrap_(bootstrap) {
    CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    CUDA_CHECK(cudaMalloc(&barrier_buf_, sizeof(float)));
  }
  ~NcclComm() override {
    cudaStreamSynchronize(stream_);
    ncclCommDestroy(comm_);
    cudaFree(barrier_buf_);
    cudaEventDestroy(ready_);
    cudaStreamDestroy(stream_);
  }

  std::string backend() const override { return "nccl"; }
  Device device() const override { return Device::CUDA; }

  [[noreturn]] void abort(int code) noexcept override {
    std::fflush(stdout);
    std::fflush(stderr);
    ncclCommAbort(comm_);  // unblocks kernels stuck waiting for a peer
    if (bootstrap_) bootstrap_->abort(code);  // MPI_Abort takes every rank down
    std::_Exit(code);
  }

 protected:
  WorkPtr make_work(const std::string& op, size_t bytes) override {
    WorkPtr base = new_work_base(op, bytes);
    return std::make_shared<NcclWork>(base->op(), base->tag(), base->step(), base->seq(), bytes, comm_, compute_,
                                      host_wait_);
  }

  void do_all_reduce(const WorkPtr& w, const Tensor& t, ReduceOp op) override {
    enqueue(w, [&] {
      NCCL_CHECK(ncclAllReduce(t.raw(), t.raw(), (size_t)t.numel(), nccl_type(t.dtype), nccl_op(op), comm_, stream_));
    });
  }
  void do_reduce_scatter(const WorkPtr& w, const Tensor& out, const Tensor& in, ReduceOp op) override {
    const char* src = static_cast<const char*>(in.raw());
    const char* dst = static_cast<const char*>(out.raw());
    const bool in_place = dst == src + (size_t)rank() * out.nbytes();  // NCCL's own in-place form
    if (!in_place && dst < src + in.nbytes() && src < dst + out.nbytes())
      throw CommError("nccl: reduce_scatter: the output overlaps the input but is not this rank's block of it");
    enqueue(w, [&] {
      NCCL_CHECK(ncclReduceScatter(in.raw(), out.raw(), (size_t)out.numel(), nccl_type(in.dtype), nccl_op(op), comm_,
                                   stream_));
    });
  }
  void do_all_gather(const WorkPtr& w, const Tensor& out, const Tensor& in) override {
    const char* src = static_cast<const char*>(in.raw());
    const char* dst = static_cast<const char*>(out.raw());
    const bool in_place = src == dst + (size_t)rank() * in.nbytes();
    if (!in_place && src < dst + out.nbytes() && dst < src + in.nbytes())
      throw CommError("nccl: all_gather: the input overlaps the output but is not this rank's block of it");
    enqueue(w, [&] {
      NCCL_CHECK(ncclAllGather(in.raw(), out.raw(), (size_t)in.numel(), nccl_type(in.dtype), comm_, stream_));
    });
  }
  void do_broadcast(const WorkPtr& w, const Tensor& t, int root) override {
    enqueue(w, [&] {
      NCCL_CHECK(ncclBroadcast(t.raw(), t.raw(), (size_t)t.numel(), nccl_type(t.dtype), root, comm_, stream_));
    });
  }
  // NCCL has no barrier: a one-float all-reduce that the host waits for (as c10d does).
  void do_barrier(const WorkPtr& w) override {
    enqueue(w, [&] { NCCL_CHECK(ncclAllReduce(barrier_buf_, barrier_buf_, 1, ncclFloat32, ncclSum, comm_, stream_)); });
    CUDA_CHECK(cudaEventSynchronize(std::static_pointer_cast<NcclWork>(w)->event()));
  }

 private:
  // Orders the collective after the compute stream's queued work, runs it, marks its end.
  template <class F>
  void enqueue(const WorkPtr& w, F&& call) {
    auto nw = std::static_pointer_cast<NcclWork>(w);
    CUDA_CHECK(cudaEventRecord(ready_, compute_));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
    nw->mark_started();
    call();
    CUDA_CHECK(cudaEventRecord(nw->event(), stream_));
  }

  ncclComm_t comm_;
  cudaStream_t stream_, compute_;
  bool host_wait_;
  Communicator* bootstrap_;
  cudaEvent_t ready_{};
  float* barrier_buf_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_comm(Communicator* bootstrap, int rank, int world, const NcclCommOptions& opt) {
  if (world < 1 || rank < 0 || rank >= world)
    throw CommError("nccl: rank " + std::to_string(rank) + " of " + std::to_string(world) + " is not a valid position");
  CUDA_CHECK(cudaSetDevice(opt.device_index));
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  if (world > 1) {
    // The id travels over the host communicator (MPI_Bcast), never through NCCL_COMM_ID.
    if (!bootstrap || bootstrap->device() != Device::CPU || bootstrap->world() != world || bootstrap->rank() != rank)
      throw CommError("nccl: a multi-rank NcclComm needs a host bootstrap communicator of the same ranks (MpiComm)");
    static_assert(NCCL_UNIQUE_ID_BYTES % sizeof(int32_t) == 0, "the id is sent as int32 words");
    Tensor buf = Tensor::empty(Device::CPU, DType::I32, {NCCL_UNIQUE_ID_BYTES / (int64_t)sizeof(int32_t)});
    std::memcpy(buf.raw(), &id, sizeof id);
    bootstrap->set_tag("ncclUniqueId");
    bootstrap->broadcast(buf, 0)->wait();
    std::memcpy(&id, buf.raw(), sizeof id);
  }
  ncclComm_t comm;
  NCCL_CHECK(ncclCommInitRank(&comm, world, id, rank));
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return std::make_unique<NcclComm>(rank, world, comm, stream, static_cast<cudaStream_t>(opt.compute_stream),
                                    opt.host_wait, world > 1 ? bootstrap : nullptr);
}

}  // namespace lt
