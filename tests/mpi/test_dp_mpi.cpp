// Data parallelism on every rank of an mpirun (ctest runs this with -np 2 and -np 4): the MPI
// communicator's collectives against exact expectations, bucket planning, N ranks against one
// rank with gradient accumulation, ZeRO-1 against plain data parallelism, resuming on another
// world size, the start-up broadcast and the divergence checksum.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <filesystem>
#include <memory>

#include "runtime/comm.h"
#include "runtime/ddp.h"
#include "runtime/safetensors.h"
#include "runtime/trainer.h"
#include "runtime/watchdog.h"
#include "tests/mpi/dp_checks.h"
#include "tests/mpi/dp_job.h"
#include "tests/mpi/mpi_test.h"

namespace lt::test {
namespace {

namespace fs = std::filesystem;

// A communicator over the first n ranks of MPI_COMM_WORLD (collective on all ranks); the
// others get none. One rank gets SelfComm, as a one-rank job would.
struct SubComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  std::unique_ptr<Communicator> comm;
  explicit SubComm(int n, const std::string& progress = "thread") {
    const int r = mpi_rank();
    MPI_Comm_split(MPI_COMM_WORLD, r < n ? 0 : MPI_UNDEFINED, r, &mpi);
    if (r >= n) return;
    if (n == 1) {
      comm = make_self_comm();
    } else {
      MpiCommOptions o;
      o.progress = progress;
      o.base_comm = &mpi;
      comm = make_mpi_comm(o);
    }
  }
  ~SubComm() {
    comm.reset();
    if (mpi != MPI_COMM_NULL) MPI_Comm_free(&mpi);
  }
  bool member() const { return comm != nullptr; }
};

void expect_losses_near(const std::vector<float>& got, const std::vector<float>& want, size_t from, size_t to,
                        const std::string& what) {
  ASSERT_GE(got.size(), to - from) << what;
  ASSERT_GE(want.size(), to) << what;
  for (size_t i = from; i < to; i++) {
    const float g = got[i - from], w = want[i];
    EXPECT_LE(std::fabs(g - w), 1e-5f * std::fabs(w)) << what << ": step " << i + 1 << " loss " << g << " vs " << w;
  }
}

// ---- the communicator ----

float value(int64_t i, int r) { return (float)(1 + (i * 7 + r * 3) % 13); }

void check_collectives(Communicator& c) {
  const int W = c.world(), R = c.rank();
  const int64_t n = 1001;  // odd on purpose
  Tensor t = Tensor::empty(Device::CPU, DType::F32, {n});
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min}) {
    for (int64_t i = 0; i < n; i++) t.f32()[i] = value(i, R);
    c.all_reduce(t, op)->wait();
    int wrong = 0;
    for (int64_t i = 0; i < n; i++) {
      float s = 0, mx = -1e30f, mn = 1e30f;
      for (int q = 0; q < W; q++) s += value(i, q), mx = std::max(mx, value(i, q)), mn = std::min(mn, value(i, q));
      const float want = op == ReduceOp::Sum ? s : op == ReduceOp::Avg ? s / (float)W : op == ReduceOp::Max ? mx : mn;
      wrong += t.f32()[i] != want;
    }
    EXPECT_EQ(wrong, 0) << "all_reduce " << to_string(op) << " with " << c.backend();
  }
  Tensor ti = Tensor::empty(Device::CPU, DType::I32, {3});
  for (int k = 0; k < 3; k++) ti.data<int32_t>()[k] = R * 10 + k;
  c.all_reduce(ti, ReduceOp::Sum)->wait();
  for (int k = 0; k < 3; k++) EXPECT_EQ(ti.data<int32_t>()[k], 10 * W * (W - 1) / 2 + k * W);

  // reduce_scatter: in place (output is this rank's block of the input) and into another buffer.
  const int64_t blk = 37;
  for (bool in_place : {true, false}) {
    Tensor in = Tensor::empty(Device::CPU, DType::F32, {W * blk});
    for (int64_t i = 0; i < W * blk; i++) in.f32()[i] = value(i, R);
    Tensor out = in_place ? in.view(R * blk, {blk}) : Tensor::empty(Device::CPU, DType::F32, {blk});
    c.reduce_scatter(out, in, ReduceOp::Avg)->wait();
    int wrong = 0;
    for (int64_t j = 0; j < blk; j++) {
      float s = 0;
      for (int q = 0; q < W; q++) s += value(R * blk + j, q);
      wrong += out.f32()[j] != s / (float)W;
    }
    EXPECT_EQ(wrong, 0) << "reduce_scatter in_place=" << in_place;
  }
  // all_gather: in place and from another buffer.
  for (bool in_place : {true, false}) {
    Tensor out = Tensor::empty(Device::CPU, DType::F32, {W * blk});
    for (int64_t i = 0; i < W * blk; i++) out.f32()[i] = -1.f;
    Tensor in = in_place ? out.view(R * blk, {blk}) : Tensor::empty(Device::CPU, DType::F32, {blk});
    for (int64_t j = 0; j < blk; j++) in.f32()[j] = value(j, R);
    c.all_gather(out, in)->wait();
    int wrong = 0;
    for (int q = 0; q < W; q++)
      for (int64_t j = 0; j < blk; j++) wrong += out.f32()[q * blk + j] != value(j, q);
    EXPECT_EQ(wrong, 0) << "all_gather in_place=" << in_place;
  }
  for (int64_t i = 0; i < n; i++) t.f32()[i] = value(i, R);
  c.broadcast(t, W - 1)->wait();
  int wrong = 0;
  for (int64_t i = 0; i < n; i++) wrong += t.f32()[i] != value(i, W - 1);
  EXPECT_EQ(wrong, 0) << "broadcast";
  c.barrier()->wait();
  // Misuse fails loudly, before anything is sent.
  EXPECT_THROW(c.reduce_scatter(Tensor::empty(Device::CPU, DType::F32, {5}), t), CommError);
  EXPECT_THROW(c.all_reduce(Tensor::empty(Device::CPU, DType::BF16, {4})), CommError);
}

TEST_F(MpiTest, CollectivesAreExactInBothProgressModes) {
  for (const char* progress : {"thread", "poll"}) {
    SubComm s(mpi_world(), progress);
    SCOPED_TRACE(progress);
    check_collectives(*s.comm);
  }
}

TEST_F(MpiTest, AverageOfThreeRanksIsCorrectlyRounded) {
  LT_MPI_SKIP_IF(mpi_world() < 3, "needs 3 ranks");
  SubComm s(3);
  if (!s.member()) return;
  // Integers, so the sum is exact in any order; x / 3 is then correctly rounded on every rank.
  Tensor t = Tensor::empty(Device::CPU, DType::F32, {4});
  for (int k = 0; k < 4; k++) t.f32()[k] = (float)((1 << s.comm->rank()) + k);
  s.comm->all_reduce(t, ReduceOp::Avg)->wait();
  for (int k = 0; k < 4; k++) EXPECT_EQ(t.f32()[k], (float)(7 + 3 * k) / 3.f);
}

// A backend without reduce_scatter says which backend and which collective.
TEST_F(MpiTest, MissingCollectiveFailsLoudly) {
  struct Partial final : Communicator {
    Partial() : Communicator(0, 1) {}
    std::string backend() const override { return "partial"; }
    Device device() const override { return Device::CPU; }
    [[noreturn]] void abort(int code) noexcept override { std::_Exit(code); }
  } p;
  Tensor t = Tensor::empty(Device::CPU, DType::F32, {4});
  try {
    p.reduce_scatter(t, t);
    ADD_FAILURE() << "no exception";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("partial: reduce_scatter is not implemented"), std::string::npos) << e.what();
  }
}

// The watchdog reports a collective that outlives its timeout, with what it was, and stops
// reporting it once it completes. (Aborting the job is the trainer's callback: test_dp_cli.)
TEST_F(MpiTest, WatchdogNamesTheStalledCollective) {
  auto stalled = std::make_shared<Work>("all_reduce", "grad bucket 2/3", 7, 41, 1234567);
  std::atomic<int> fired{0};
  std::string what;
  std::mutex mu;
  {
    Watchdog dog(0.2, [&](const Work& w, double waited) {
      std::lock_guard<std::mutex> lock(mu);
      what = w.describe();
      EXPECT_GE(waited, 0.2);
      fired++;
    });
    dog.watch(stalled);
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    EXPECT_GE(fired.load(), 1);
    stalled->finish();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const int after = fired.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(fired.load(), after) << "a completed collective is no longer watched";
    EXPECT_EQ(dog.pending(), 0u);
  }
  EXPECT_EQ(what, "all_reduce #41 (grad bucket 2/3, 1.23 MB, step 7)");
}

// Collectives are watched from before the backend takes them: a backend call that itself
// blocks (NCCL connecting to a dead peer) is reported, and one the backend refuses (it threw)
// is not left pending.
TEST_F(MpiTest, WatchdogCoversBlockingBackendCallsAndForgetsRefusedOnes) {
  struct Slow final : Communicator {
    Slow() : Communicator(0, 1) {}
    std::string backend() const override { return "slow"; }
    Device device() const override { return Device::CPU; }
    [[noreturn]] void abort(int code) noexcept override { std::_Exit(code); }
    void do_all_reduce(const WorkPtr& w, const Tensor&, ReduceOp) override {
      std::this_thread::sleep_for(std::chrono::milliseconds(900));  // blocks inside the backend
      w->finish();
    }
  } c;
  std::atomic<int> fired{0};
  std::string what;
  std::mutex mu;
  auto dog = std::make_shared<Watchdog>(0.2, [&](const Work& w, double) {
    std::lock_guard<std::mutex> lock(mu);
    what = w.describe();
    fired++;
  });
  c.set_watchdog(dog);
  c.set_tag("blocking call");
  Tensor t = Tensor::empty(Device::CPU, DType::F32, {4});
  c.all_reduce(t)->wait();
  EXPECT_GE(fired.load(), 1) << "a collective stuck inside the backend call must be reported";
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_NE(what.find("all_reduce #0 (blocking call"), std::string::npos) << what;
  }
  EXPECT_THROW(c.broadcast(t, 0), CommError);  // "slow: broadcast is not implemented"
  EXPECT_EQ(dog->pending(), 0u) << "a refused collective is not pending";
  c.set_watchdog(nullptr);
}

// ---- buckets ----

TEST_F(MpiTest, BucketsCoverTheBufferInBackwardOrder) {
  auto be = make_cpu_backend();
  GPT model(GPTConfig{4, 4, 128, 128, 256}, *be);
  // Defaults: a first bucket of ln_f and the last layer (~0.8 MB), then everything else.
  std::vector<Bucket> b = plan_buckets(model, 1.0, 25.0, 1);
  ASSERT_EQ(b.size(), 2u);
  const auto& infos = model.param_info();
  EXPECT_EQ(b[0].hi, model.num_params());
  EXPECT_EQ(b[0].lo, infos[2 + 3 * 12].offset) << "the first bucket starts at layer 3";
  EXPECT_EQ(b[1].lo, 0);
  // Small caps: more buckets, contiguous, descending, each within the cap unless one parameter is bigger.
  for (int64_t align : {1, 32, 64}) {
    std::vector<Bucket> s = plan_buckets(model, 0.05, 0.2, align);
    EXPECT_GT(s.size(), 8u);
    EXPECT_EQ(s.front().hi % align, 0);
    EXPECT_GE(s.front().hi, model.num_params());
    EXPECT_EQ(s.back().lo, 0);
    for (size_t k = 0; k < s.size(); k++) {
      EXPECT_LT(s[k].lo, s[k].hi);
      EXPECT_EQ(s[k].lo % align, 0);
      if (k) {
        EXPECT_EQ(s[k].hi, s[k - 1].lo);
      }
      int64_t biggest = 0;
      for (int i = s[k].first_param; i <= s[k].last_param; i++) biggest = std::max(biggest, infos[i].numel);
      // PyTorch's rule: a bucket passes the cap by at most the parameter that filled it.
      EXPECT_LT(s[k].numel(), (int64_t)(0.2e6 / 4) + biggest + align) << "bucket " << k;
      if (k + 1 < s.size()) {
        EXPECT_GT(s[k].numel(), 1000) << "no slivers of biases: bucket " << k;
      }
    }
  }
}

TEST_F(MpiTest, BroadcastAndHookLaunchedReduction) {
  SubComm s(mpi_world());
  auto be = make_cpu_backend();
  GPT model(GPTConfig{2, 2, 32, 32, 256}, *be);
  model.init_weights(100 + mpi_rank());  // different on every rank until the broadcast
  std::vector<float> root(model.params().f32(), model.params().f32() + model.num_params());
  MPI_Bcast(root.data(), (int)root.size(), MPI_FLOAT, 0, MPI_COMM_WORLD);
  for (bool overlap : {true, false}) {
    DistConfig cfg;
    cfg.bucket_mb = 0.004;
    cfg.first_bucket_mb = 0.002;
    cfg.overlap = overlap;
    DataParallel dp(model, *s.comm, cfg);
    dp.broadcast_parameters(0);
    EXPECT_EQ(std::vector<float>(model.params().f32(), model.params().f32() + model.num_params()), root);
    ASSERT_GT(dp.buckets().size(), 3u);
    std::vector<int32_t> tok(2 * 32);
    for (size_t i = 0; i < tok.size(); i++) tok[i] = (int32_t)((i * 31 + mpi_rank()) % 256);
    dp.begin_micro_step(true);
    model.forward(tok.data(), tok.data(), 2, 32);
    model.backward();
    // With overlap every bucket is started by the backward hook, the last by its final call.
    EXPECT_EQ(dp.last_stats().launched_during_backward, overlap ? (int)dp.buckets().size() : 0);
    dp.finish_gradients();
    EXPECT_EQ(ranks_differing(model.backend().to_host_f32(model.params()), MPI_COMM_WORLD), 0);
    be->fill_zero(model.grads());
  }
}

// ---- training ----

TEST_F(MpiTest, NRanksMatchOneRankWithAccumulation) {
  const int W = mpi_world(), B = 2;
  SharedDir dir;
  if (mpi_rank() == 0) {
    write_corpus_shards(dir.path);
    DpJobSpec ref{.micro_batch = W * B, .grad_accum = 2, .steps = 20};
    dp_write_config(dir.path, "ref", ref);
    DpJobSpec dp = ref;
    dp.micro_batch = B;
    dp.dist = "bucket_mb = 0.01\nfirst_bucket_mb = 0.005\nchecksum_interval = 1\n";
    dp_write_config(dir.path, "small_buckets", dp);
    dp.dist = "overlap = false\nchecksum_interval = 5\n";
    dp_write_config(dir.path, "no_overlap", dp);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  // The one-rank reference: every rank runs it alone (SelfComm, W*B sequences per micro-step).
  auto self = make_self_comm();
  RunOut ref = train(*self, MPI_COMM_NULL, dir / "ref.toml", dir / ("ref" + std::to_string(mpi_rank())));
  ASSERT_EQ(ref.result.losses.size(), 20u);
  struct Variant {
    const char* config;
    const char* progress;
  };
  for (Variant v : {Variant{"small_buckets", "thread"}, Variant{"small_buckets", "poll"}, Variant{"no_overlap", "thread"}}) {
    const std::string what = std::string(v.config) + "/" + v.progress;
    SubComm s(W, v.progress);
    RunOut got = train(*s.comm, s.mpi, dir / (std::string(v.config) + ".toml"), dir / ("run_" + what));
    ASSERT_EQ(got.result.losses.size(), 20u) << what;
    expect_losses_near(got.result.losses, ref.result.losses, 0, 20, what);
    EXPECT_EQ(got.steps_with_differing_params, 0) << what << ": parameters must be identical on every rank";
    EXPECT_LE(std::fabs(got.result.last_val_loss - ref.result.last_val_loss), 1e-5f * ref.result.last_val_loss)
        << what;
  }
}

TEST_F(MpiTest, ZeroOneEqualsPlainDataParallel) {
  const int W = mpi_world();
  SharedDir dir;
  if (mpi_rank() == 0) {
    write_corpus_shards(dir.path);
    // n_embd 24: no size divides by 16 x world, so shards are padded and buckets split parameters.
    DpJobSpec spec{.n_embd = 24, .micro_batch = 2, .grad_accum = 2, .steps = 20};
    spec.dist = "bucket_mb = 0.01\nfirst_bucket_mb = 0.005\nchecksum_interval = 1\n";
    dp_write_config(dir.path, "plain", spec);
    spec.dist += "zero = 1\n";
    dp_write_config(dir.path, "zero", spec);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  SubComm s(W);
  RunOut plain = train(*s.comm, s.mpi, dir / "plain.toml", dir / "plain");
  RunOut zero = train(*s.comm, s.mpi, dir / "zero.toml", dir / "zero");
  ASSERT_EQ(zero.result.losses.size(), 20u);
  expect_losses_near(zero.result.losses, plain.result.losses, 0, 20, "zero=1 vs zero=0");
  EXPECT_EQ(zero.steps_with_differing_params, 0) << "ZeRO-1's all-gather must leave every rank the same parameters";
  expect_all_near(zero.final_params, plain.final_params, 1e-5f, "final parameters");
  if (mpi_rank() == 0) {  // the checkpoint holds the full optimizer state, gathered from every rank
    for (const char* m : {"adamw.m", "adamw.v"})
      expect_all_near(moments(zero.result.last_checkpoint, m), moments(plain.result.last_checkpoint, m), 1e-4f, m);
  }
}

TEST_F(MpiTest, ResumeOnHalfAndDoubleTheRanks) {
  const int W = mpi_world(), H = W / 2, B = 2;
  SharedDir dir;
  if (mpi_rank() == 0) {
    write_corpus_shards(dir.path);
    // The same global batch on W ranks of B and on H ranks of 2B; ZeRO-1 so the optimizer
    // state is re-sharded on resume.
    DpJobSpec spec{.micro_batch = B, .grad_accum = 1, .steps = 12, .checkpoint_interval = 6};
    spec.dist = "zero = 1\nbucket_mb = 0.01\nfirst_bucket_mb = 0.005\nchecksum_interval = 1\n";
    dp_write_config(dir.path, "full", spec);
    spec.micro_batch = B * W / H;
    dp_write_config(dir.path, "half", spec);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  auto copy_step6 = [&](const std::string& from, const std::string& to) {
    if (mpi_rank() == 0) {
      fs::create_directories(to + "/checkpoints");
      fs::copy(from + "/checkpoints/step-00000006", to + "/checkpoints/step-00000006", fs::copy_options::recursive);
    }
    MPI_Barrier(MPI_COMM_WORLD);
  };
  std::vector<float> straight_w, straight_h;
  {
    SubComm s(W);
    straight_w = train(*s.comm, s.mpi, dir / "full.toml", dir / "w").result.losses;
  }
  {
    SubComm s(H);
    if (s.member()) straight_h = train(*s.comm, s.mpi, dir / "half.toml", dir / "h").result.losses;
    MPI_Barrier(MPI_COMM_WORLD);
  }
  // W ranks' step-6 checkpoint resumed on H ranks.
  copy_step6(dir / "w", dir / "w_to_h");
  {
    SubComm s(H);
    if (s.member()) {
      RunOut r = train(*s.comm, s.mpi, dir / "half.toml", dir / "w_to_h", true);
      EXPECT_EQ(r.steps_with_differing_params, 0);
      expect_losses_near(r.result.losses, straight_w, 6, 12, std::to_string(W) + " -> " + std::to_string(H) + " ranks");
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  // H ranks' step-6 checkpoint resumed on W ranks (every rank broadcasts nothing but reads it).
  copy_step6(dir / "h", dir / "h_to_w");
  {
    SubComm s(W);
    RunOut r = train(*s.comm, s.mpi, dir / "full.toml", dir / "h_to_w", true);
    EXPECT_EQ(r.steps_with_differing_params, 0);
    const std::vector<float> h = mpi_rank() < H ? straight_h : std::vector<float>(12);
    std::vector<float> hb(h);
    MPI_Bcast(hb.data(), 12, MPI_FLOAT, 0, MPI_COMM_WORLD);
    expect_losses_near(r.result.losses, hb, 6, 12, std::to_string(H) + " -> " + std::to_string(W) + " ranks");
  }
}

TEST_F(MpiTest, ChecksumStopsTheJobOnDivergence) {
  const int W = mpi_world();
  SharedDir dir;
  if (mpi_rank() == 0) {
    write_corpus_shards(dir.path);
    dp_write_config(dir.path, "job", DpJobSpec{.micro_batch = 2, .steps = 10, .dist = "checksum_interval = 2\n"});
  }
  MPI_Barrier(MPI_COMM_WORLD);
  ::setenv("LEASETRAIN_TEST_FAULT", ("perturb:" + std::to_string(W - 1) + ":3").c_str(), 1);
  SubComm s(W);
  try {
    train(*s.comm, MPI_COMM_NULL, dir / "job.toml", dir / "run");
    ADD_FAILURE() << "training went on with diverged parameters";
  } catch (const DivergenceError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("after step 4"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank(s) " + std::to_string(W - 1) + " differs"), std::string::npos) << msg;
  }
  ::unsetenv("LEASETRAIN_TEST_FAULT");
}

}  // namespace
}  // namespace lt::test
