// The one-process communicator over CUDA buffers (see cuda_backend.h): every collective is the
// identity, copies where in and out differ. Lets the data-parallel layer run unchanged on one
// GPU without NCCL.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "runtime/comm.h"
#include "runtime/cuda_backend.h"

namespace lt {

namespace {

// One process over CUDA buffers: collectives are the identity (copies where in != out).
class CudaSelfComm final : public Communicator {
 public:
  CudaSelfComm() : Communicator(0, 1) {}
  std::string backend() const override { return "self"; }
  Device device() const override { return Device::CUDA; }
  [[noreturn]] void abort(int code) noexcept override {
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(code);
  }

 protected:
  void do_all_reduce(const WorkPtr& w, const Tensor&, ReduceOp) override { w->finish(); }
  void do_reduce_scatter(const WorkPtr& w, const Tensor& out, const Tensor& in, ReduceOp) override { copy(w, out, in); }
  void do_all_gather(const WorkPtr& w, const Tensor& out, const Tensor& in) override { copy(w, out, in); }
  void do_broadcast(const WorkPtr& w, const Tensor&, int) override { w->finish(); }
  void do_barrier(const WorkPtr& w) override { w->finish(); }

 private:
  static void copy(const WorkPtr& w, const Tensor& out, const Tensor& in) {
    if (out.raw() != in.raw()) {
      const cudaError_t e = cudaMemcpy(out.raw(), in.raw(), out.nbytes(), cudaMemcpyDeviceToDevice);
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        w->finish(std::string("cudaMemcpy: ") + cudaGetErrorString(e));
        return;
      }
    }
    w->finish();
  }
};

}  // namespace

std::unique_ptr<Communicator> make_cuda_self_comm() { return std::make_unique<CudaSelfComm>(); }

}  // namespace lt
