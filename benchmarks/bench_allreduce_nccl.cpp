// The all-reduce benchmark on NCCL (see bench_allreduce.h): device buffers from cudaMalloc,
// the same inputs and checks as the host version, time from CUDA events on NCCL's stream
// around the -n iterations (nccl-tests' method). Calls NCCL directly: Tensor cannot hold
// device memory until the CUDA backend allocates it. Compiled here without a GPU; never run.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "benchmarks/bench_allreduce.h"
#include "runtime/error.h"
#include "runtime/nccl_util.h"

namespace lt::bench {

namespace {

float input_value(int64_t i, int r) { return (float)(1 + (i * 7 + r * 3) % 13); }

}  // namespace

std::vector<AllReduceRow> bench_allreduce_nccl(Communicator* bootstrap, int rank, int world, int local_rank,
                                               const AllReduceArgs& a) {
  const ReduceOp op = parse_redop(a.op);
  if (world > 1 && !bootstrap)
    throw UserError("bench allreduce --backend nccl: several ranks need MPI to send the ncclUniqueId");
  // As the trainer picks it: under a lease each rank sees only its own device(s).
  int devices = 0;
  CUDA_CHECK(cudaGetDeviceCount(&devices));
  if (devices < 1) throw UserError("bench allreduce --backend nccl: no CUDA device is visible");
  ncclComm_t comm = nccl_init_rank(world > 1 ? bootstrap : nullptr, rank, world, local_rank % devices);
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));

  std::vector<AllReduceRow> rows;
  for (int64_t bytes : allreduce_sizes(a)) {
    const int64_t n = bytes / 4;
    std::vector<float> host((size_t)n), tiny((size_t)n);
    for (int64_t i = 0; i < n; i++) {
      host[i] = input_value(i, rank);
      tiny[i] = std::ldexp(host[i], -100);
    }
    float* d = nullptr;
    CUDA_CHECK(cudaMalloc(&d, bytes));
    // Copies go through `stream` and are waited for: a plain cudaMemcpy from pageable memory
    // may return before the data lands, and NCCL's non-blocking stream is not ordered after it.
    auto upload = [&](const std::vector<float>& v) {
      CUDA_CHECK(cudaMemcpyAsync(d, v.data(), bytes, cudaMemcpyHostToDevice, stream));
      CUDA_CHECK(cudaStreamSynchronize(stream));
    };
    upload(tiny);
    for (int i = 0; i < a.warmup; i++) NCCL_CHECK(ncclAllReduce(d, d, n, ncclFloat32, nccl_op(op), comm, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    upload(tiny);
    // nccl-tests times the whole batch of iterations between two events.
    CUDA_CHECK(cudaEventRecord(start, stream));
    for (int i = 0; i < a.iters; i++) NCCL_CHECK(ncclAllReduce(d, d, n, ncclFloat32, nccl_op(op), comm, stream));
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    AllReduceRow r;
    r.bytes = bytes;
    r.count = n;
    r.redop = a.op;
    r.time_us = a.iters > 0 ? ms * 1e3 / a.iters : 0;
    if (world > 1) {  // the slowest rank's time
      Tensor t = Tensor::empty(Device::CPU, DType::F32, {1});
      t.f32()[0] = (float)r.time_us;
      bootstrap->all_reduce(t, ReduceOp::Max)->wait();
      r.time_us = t.f32()[0];
    }
    r.algbw = r.time_us > 0 ? (double)bytes / (r.time_us * 1e-6) / 1e9 : 0;
    r.busbw = r.algbw * 2.0 * (world - 1) / world;
    int64_t wrong = 0;
    std::vector<float> got((size_t)n);
    for (int c = 0; c < a.check; c++) {
      upload(host);
      NCCL_CHECK(ncclAllReduce(d, d, n, ncclFloat32, nccl_op(op), comm, stream));
      CUDA_CHECK(cudaStreamSynchronize(stream));
      CUDA_CHECK(cudaMemcpy(got.data(), d, bytes, cudaMemcpyDeviceToHost));
      for (int64_t i = 0; i < n; i++) {
        float sum = 0, mx = -INFINITY, mn = INFINITY;
        for (int q = 0; q < world; q++) {
          const float v = input_value(i, q);
          sum += v, mx = std::max(mx, v), mn = std::min(mn, v);
        }
        // ncclAvg may pre-scale by 1/N, so avg is checked to 1 ulp; the rest exactly.
        const float want = op == ReduceOp::Sum ? sum : op == ReduceOp::Max ? mx : op == ReduceOp::Min ? mn : sum / world;
        wrong += op == ReduceOp::Avg ? std::fabs(got[i] - want) > std::fabs(want) * 1.2e-7f : got[i] != want;
      }
    }
    if (world > 1) {
      Tensor w = Tensor::empty(Device::CPU, DType::I32, {1});
      w.data<int32_t>()[0] = (int32_t)wrong;
      bootstrap->all_reduce(w, ReduceOp::Sum)->wait();
      wrong = w.data<int32_t>()[0];
    }
    r.wrong = wrong;
    rows.push_back(r);
    CUDA_CHECK(cudaFree(d));
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaStreamDestroy(stream);
  ncclCommDestroy(comm);
  return rows;
}

}  // namespace lt::bench
