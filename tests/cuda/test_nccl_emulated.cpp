// The NCCL path without a GPU: NcclComm (runtime/comm_nccl.cpp), the data-parallel layer and
// the trainer on --device cuda, built against tests/cuda/emulator.h (the CUDA kernels on the CPU
// emulator; device memory is host memory) and tests/cuda/fake_nccl.cpp (NCCL's calls over MPI,
// refusing NCCL's undefined cases). Run under mpirun -np 2 (label cuda-emulated). What this
// proves: the communicator's counts, dtypes, in-place offsets and bootstrap, and that the
// trainer's device path (bucket views, ZeRO-1 shards and their padding, the checkpoint's
// gathered optimizer state) computes what the CPU path computes. What it cannot: NCCL itself,
// streams running concurrently, a real device's rounding.
#include <gtest/gtest.h>
#include <mpi.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "benchmarks/bench_allreduce.h"
#include "runtime/backend.h"
#include "runtime/comm.h"
#include "runtime/cuda_backend.h"
#include "runtime/model.h"
#include "runtime/trainer.h"
#include "runtime/watchdog.h"
#include "tests/cuda/fake_nccl.h"
#include "tests/mpi/dp_checks.h"
#include "tests/mpi/dp_job.h"

namespace lt::test {
namespace {

struct DeviceRanks {
  std::unique_ptr<Backend> be;
  std::unique_ptr<Communicator> boot, nccl;
  DeviceRanks() {
    CudaBackendOptions o;
    o.precision = DType::F32;
    be = make_cuda_backend(o);
    MpiCommOptions mo;
    mo.progress = "poll";
    boot = make_mpi_comm(mo);
    NcclCommOptions no;
    no.compute_stream = cuda_backend_stream(*be);
    nccl = make_nccl_comm(boot.get(), boot->rank(), boot->world(), no);
  }
};

float value(int64_t i, int r) { return (float)(1 + (i * 7 + r * 3) % 13); }

TEST_F(MpiTest, NcclCollectivesOnDeviceBuffers) {
  DeviceRanks d;
  Backend& be = *d.be;
  Communicator& c = *d.nccl;
  const int W = c.world(), r = c.rank();
  ASSERT_EQ(c.backend(), "nccl");
  ASSERT_EQ(c.device(), Device::CUDA);
  const int64_t n = 37;  // odd: no size divides nicely

  // all_reduce, Sum and Avg, fp32.
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg}) {
    std::vector<float> h(n);
    for (int64_t i = 0; i < n; i++) h[i] = value(i, r);
    Tensor t = be.empty(DType::F32, {n});
    be.from_host(t, h.data());
    c.all_reduce(t, op)->wait();
    const std::vector<float> got = be.to_host_f32(t);
    for (int64_t i = 0; i < n; i++) {
      float sum = 0;
      for (int q = 0; q < W; q++) sum += value(i, q);
      ASSERT_EQ(got[i], op == ReduceOp::Sum ? sum : sum / (float)W) << to_string(op) << " element " << i;
    }
  }

  // reduce_scatter in place (this rank's block of the input) and into a separate buffer.
  std::vector<float> in((size_t)(n * W));
  for (int64_t i = 0; i < n * W; i++) in[i] = value(i, r);
  Tensor whole = be.empty(DType::F32, {n * W});
  be.from_host(whole, in.data());
  Tensor separate = be.empty(DType::F32, {n});
  c.reduce_scatter(separate, whole, ReduceOp::Avg)->wait();  // ZeRO-1's gradient reduction
  Tensor block = whole.view(r * n, {n});
  c.reduce_scatter(block, whole)->wait();
  for (const Tensor* out : {&separate, &block}) {
    const std::vector<float> got = be.to_host_f32(*out);
    for (int64_t i = 0; i < n; i++) {
      float sum = 0;
      for (int q = 0; q < W; q++) sum += value(r * n + i, q);
      ASSERT_EQ(got[i], out == &separate ? sum / (float)W : sum) << "reduce_scatter element " << i;
    }
  }

  // all_gather in place: each rank's block of the output is its input.
  Tensor gathered = be.empty(DType::F32, {n * W});
  std::vector<float> mine(n);
  for (int64_t i = 0; i < n; i++) mine[i] = value(i, r) * 10;
  be.from_host(gathered.view(r * n, {n}), mine.data());
  c.all_gather(gathered, gathered.view(r * n, {n}))->wait();
  const std::vector<float> all = be.to_host_f32(gathered);
  for (int q = 0; q < W; q++)
    for (int64_t i = 0; i < n; i++) ASSERT_EQ(all[q * n + i], value(i, q) * 10) << "rank " << q << " element " << i;

  // An overlap that is not NCCL's in-place form is refused, not run.
  EXPECT_THROW(c.reduce_scatter(whole.view(1, {n}), whole), CommError);

  // broadcast from the last rank, int32 (ncclInt32); barrier.
  std::vector<int32_t> b(n, r + 1), got_b(n);
  Tensor tb = be.empty(DType::I32, {n});
  be.from_host(tb, b.data());
  c.broadcast(tb, W - 1)->wait();
  be.to_host(got_b.data(), tb);
  for (int32_t x : got_b) ASSERT_EQ(x, W);
  c.barrier()->wait();
}

// bench allreduce --backend nccl: its own communicator (the trainer's nccl_init_rank), every
// size checked against the exact integer result (nccl-tests' #wrong), for every reduction.
TEST_F(MpiTest, NcclAllReduceBenchmarkChecksEveryElement) {
  MpiCommOptions mo;
  mo.progress = "poll";
  auto boot = make_mpi_comm(mo);
  for (const char* op : {"sum", "avg", "max", "min"}) {
    bench::AllReduceArgs a;
    a.min_bytes = 4;
    a.max_bytes = 4 << 10;
    a.factor = 4;
    a.iters = 2;
    a.warmup = 1;
    a.op = op;
    const auto rows = bench::bench_allreduce_nccl(boot.get(), boot->rank(), boot->world(), 0, a);
    ASSERT_EQ(rows.size(), 6u) << op;  // 4 B .. 4 KiB by 4x
    for (const auto& r : rows) EXPECT_EQ(r.wrong, 0) << op << " at " << r.bytes << " bytes";
  }
}

// A collective whose NCCL call itself blocks (connecting to a dead peer) is reported by the
// watchdog: it is watched from before the call, and its never-recorded event does not pass
// for a finished one.
TEST_F(MpiTest, NcclWatchdogSeesACollectiveBlockedInsideTheNcclCall) {
  DeviceRanks d;
  Tensor t = d.be->zeros(DType::F32, {8});
  std::atomic<int> fired{0};
  auto dog = std::make_shared<Watchdog>(0.2, [&](const Work&, double) { fired++; });
  d.nccl->set_watchdog(dog);
  fake_nccl_delay_next(0.9);
  d.nccl->all_reduce(t)->wait();
  EXPECT_GE(fired.load(), 1) << "a collective blocked inside ncclAllReduce must be reported";
  EXPECT_EQ(dog->pending(), 0u);
  d.nccl->set_watchdog(nullptr);
}

// An asynchronous NCCL error (a peer gone, a network failure) while the host waits: NCCL's
// documentation says the operation will never complete and the communicator must be aborted.
// The wait ends with the error, the communicator is aborted (its stuck kernel ends, so the
// unwinding run cannot hang in a device synchronisation), and later collectives are refused.
TEST_F(MpiTest, NcclAsyncErrorFailsTheWaitAndAbortsTheCommunicator) {
  DeviceRanks d;
  Tensor t = d.be->empty(DType::F32, {8});
  d.nccl->set_tag("grad bucket 1/1");
  fake_nccl_fail_next(ncclRemoteError);
  WorkPtr w = d.nccl->all_reduce(t);
  EXPECT_FALSE(w->query()) << "the stuck collective must not look finished";
  try {
    w->wait();
    ADD_FAILURE() << "wait() returned";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("all_reduce #0 (grad bucket 1/1"), std::string::npos) << what;
    EXPECT_NE(what.find("NCCL: remote process exited or there was a network error"), std::string::npos) << what;
  }
  try {
    d.nccl->all_reduce(t);
    ADD_FAILURE() << "a collective on an aborted communicator was issued";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("aborted"), std::string::npos) << e.what();
  }
}  // ~NcclComm must not finalize or destroy what the abort already freed

// The trainer on --device cuda over NCCL against the CPU trainer on one rank: the same samples
// per step (W ranks x B = 1 rank x W*B), small buckets so every parameter kind is split, then
// ZeRO-1 against plain data parallelism with its checkpointed optimizer state; fp32, then bf16
// mixed precision.
TEST_F(MpiTest, NcclTrainerMatchesTheCpuAndZeroOneMatchesPlain) {
  const int W = mpi_world(), B = 2, steps = 3;
  SharedDir dir;
  if (mpi_rank() == 0) {
    write_corpus_shards(dir.path);
    // n_embd 24: no size divides by 16 x world, so ZeRO-1's shards are padded.
    DpJobSpec ref{.n_embd = 24, .n_head = 1, .n_layer = 1, .T = 16, .micro_batch = W * B, .steps = steps,
                  .checkpoint_interval = steps};
    dp_write_config(dir.path, "ref", ref);
    DpJobSpec dp = ref;
    dp.micro_batch = B;
    dp.dist = "bucket_mb = 0.002\nfirst_bucket_mb = 0.001\nchecksum_interval = 1\n";
    dp_write_config(dir.path, "plain", dp);
    dp.dist += "zero = 1\n";
    dp_write_config(dir.path, "zero", dp);
  }
  MPI_Barrier(MPI_COMM_WORLD);

  auto self = make_self_comm();  // the reference: every rank alone on the CPU backend
  RunOut ref = train(*self, MPI_COMM_NULL, dir / "ref.toml", dir / ("ref" + std::to_string(mpi_rank())));
  ASSERT_EQ(ref.result.losses.size(), (size_t)steps);

  // Plain and ZeRO-1 runs on --device cuda at `precision`, over one NcclComm. The trainer makes
  // its own backend; the DeviceRanks here only lends NcclComm a stream (on the emulator every stream
  // operation has finished when it returns).
  auto run_pair = [&](DType precision, const std::string& suffix) {
    BackendOptions cuda;
    cuda.device = Device::CUDA;
    cuda.precision = precision;
    DeviceRanks d;
    RunOut p = train(*d.nccl, MPI_COMM_WORLD, dir / "plain.toml", dir / ("plain" + suffix), false, cuda);
    RunOut z = train(*d.nccl, MPI_COMM_WORLD, dir / "zero.toml", dir / ("zero" + suffix), false, cuda);
    return std::pair<RunOut, RunOut>(std::move(p), std::move(z));
  };
  auto [plain, zero] = run_pair(DType::F32, "");
  ASSERT_EQ(plain.result.losses.size(), (size_t)steps);
  ASSERT_EQ(zero.result.losses.size(), (size_t)steps);
  for (int i = 0; i < steps; i++) {
    EXPECT_NEAR(plain.result.losses[i], ref.result.losses[i], 1e-4f * ref.result.losses[i]) << "step " << i + 1;
    EXPECT_NEAR(zero.result.losses[i], plain.result.losses[i], 1e-5f * plain.result.losses[i]) << "step " << i + 1;
  }
  EXPECT_EQ(plain.steps_with_differing_params, 0);
  EXPECT_EQ(zero.steps_with_differing_params, 0) << "ZeRO-1's all-gather must leave every rank the same parameters";
  expect_all_near(plain.final_params, ref.final_params, 1e-4f, "CUDA + NCCL vs CPU parameters");
  expect_all_near(zero.final_params, plain.final_params, 1e-5f, "zero=1 vs zero=0 parameters");
  if (mpi_rank() == 0)  // the checkpoint holds the full optimizer state, gathered on the device
    for (const char* m : {"adamw.m", "adamw.v"})
      expect_all_near(moments(zero.result.last_checkpoint, m), moments(plain.result.last_checkpoint, m), 1e-4f, m);

  // Mixed precision, the production setting: bf16 gradient buckets go through ncclBfloat16.
  auto [plain16, zero16] = run_pair(DType::BF16, "16");
  ASSERT_EQ(plain16.result.losses.size(), (size_t)steps);
  for (int i = 0; i < steps; i++)
    EXPECT_NEAR(plain16.result.losses[i], ref.result.losses[i], 2e-2f * ref.result.losses[i]) << "bf16 step " << i + 1;
  EXPECT_EQ(plain16.steps_with_differing_params, 0);
  EXPECT_EQ(zero16.steps_with_differing_params, 0);
  expect_all_near(zero16.final_params, plain16.final_params, 1e-3f, "bf16: zero=1 vs zero=0 parameters");
}

}  // namespace
}  // namespace lt::test
