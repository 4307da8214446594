// Data parallelism in the shape of PyTorch's DDP Reducer: gradient buckets reduced during
// backward, exact averaging, gradient accumulation, ZeRO-1, the start-up broadcast and the
// cross-rank parameter checksum.
//
// Buckets are contiguous ranges of the model's flat gradient buffer, so each gradient is a
// view into its bucket with no copy: the buffer is laid out [wte, wpe, layer 0..L-1, ln_f]
// and backward finishes ln_f, then layer L-1 .. 0, then the embeddings, so bucket 0 is the
// top of the buffer (small, ~1 MB, so it starts early) and later buckets (up to the cap,
// 25 MB) walk down. Whole layers go into a bucket while they fit; a layer bigger than the
// cap is split at parameters, a bucket closing once it reaches the cap. The bucket's reduce
// starts from the backward hook as soon as the last of its gradients is final. Every rank builds the same buckets from the same model and
// issues them in the same order.
//
// ZeRO-1: the buffer is padded to a multiple of 16 x world elements and every bucket
// boundary moved up to such a multiple, so each bucket splits into `world` equal blocks;
// rank r owns block r of every bucket: reduce-scatter gradients, AdamW on the owned blocks
// (the optimizer holds m and v for those only), all-gather parameters.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/comm.h"
#include "runtime/config.h"
#include "runtime/model.h"
#include "runtime/optim.h"

namespace lt {

// Parameters differ across ranks (found by the checksum). what() names the step and ranks.
struct DivergenceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Bucket {
  int index = 0;
  int64_t lo = 0, hi = 0;  // elements of the flat gradient buffer
  int first_param = 0, last_param = 0;  // param_info() indices it touches (lowest, highest)
  int64_t numel() const { return hi - lo; }
};

// Timings of the last optimizer step's gradient reduction.
struct ReduceStats {
  int buckets = 0;
  int launched_during_backward = 0;  // the rest were launched by finish_gradients()
  // finish_gradients(): waiting after this rank's backward ended, for reductions to run and
  // for slower ranks to arrive (skew).
  double exposed_ms = 0;
  // Wall time during which some bucket's collective ran with every rank present (the union
  // of their intervals), and the part of it before this rank's backward ended (hidden
  // behind compute).
  double comm_ms = 0, hidden_ms = 0;
  double step_comm_ms = 0;  // optimizer step's collectives (ZeRO-1 norm and all-gather)
};

class DataParallel {
 public:
  // Installs the backward hook; with world 1 everything is a pass-through to the optimizer.
  DataParallel(GPT& model, Communicator& comm, const DistConfig& cfg);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return comm_->rank(); }
  int world() const { return comm_->world(); }
  bool zero() const { return zero_; }
  Communicator& comm() const { return *comm_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  // "3 buckets: 0.79 MB, 1.05 MB, 1.58 MB"
  std::string describe_buckets() const;

  // The optimizer to train with: full moments, or (ZeRO-1) this rank's blocks only.
  std::unique_ptr<AdamW> make_optimizer(const AdamWConfig& cfg);

  // Rank `root`'s parameters everywhere (the start-up broadcast).
  void broadcast_parameters(int root = 0);

  // Before each micro-step's backward: `sync` on the last micro-step of an optimizer step
  // (gradient accumulation reduces only then).
  void begin_micro_step(bool sync);
  // After the last backward: starts the buckets that have not started and waits for all.
  // Plain: every rank holds the averaged gradients. ZeRO-1: each rank holds the averaged
  // gradients of its blocks (the rest of the buffer is scratch).
  void finish_gradients();
  // The optimizer step on reduced gradients: plain, the full AdamW step; ZeRO-1, the global
  // norm from per-rank partial sums, AdamW on the owned blocks, then all-gather parameters.
  // Zeroes the gradients. Returns the norm before clipping.
  float step(AdamW& opt, float lr);

  // The mean (fp32 sum / world) or sum of each value over ranks, e.g. the step's loss.
  std::vector<float> average(const std::vector<float>& local) { return reduce_floats(local, ReduceOp::Avg); }
  std::vector<float> sum(const std::vector<float>& local) { return reduce_floats(local, ReduceOp::Sum); }
  std::vector<float> max(const std::vector<float>& local) { return reduce_floats(local, ReduceOp::Max); }
  // A 64-bit hash of the parameters' bytes; throws DivergenceError, naming `step` and the
  // ranks, unless every rank's is identical.
  uint64_t param_checksum() const;
  void check_parameters(int64_t step);

  // Checkpoints stay in the full format: a full optimizer with every rank's blocks gathered
  // (collective; the full state is returned on rank 0 only, nullptr elsewhere), and the
  // reverse (local: every rank reads the same full state).
  std::unique_ptr<AdamW> gather_optimizer(const AdamW& sharded, const AdamWConfig& cfg);
  void scatter_optimizer(const AdamW& full, AdamW& sharded);

  const ReduceStats& last_stats() const { return stats_; }
  // Time to reduce every bucket back to back with nothing else running (collective;
  // overwrites the gradients, then zeroes them): the communication overlap hides.
  double time_reduction_alone_ms();

 private:
  std::vector<float> reduce_floats(const std::vector<float>& local, ReduceOp op);
  void on_grads_ready(int64_t offset, int64_t numel);
  void launch(size_t b);
  Tensor flat_grads() const;   // the whole padded buffer
  Tensor flat_params() const;
  Tensor block(const Tensor& flat, const Bucket& b) const;  // this rank's block of b

  GPT* model_;
  Communicator* comm_;
  DistConfig cfg_;
  bool zero_ = false;
  std::vector<Bucket> buckets_;
  std::vector<WorkPtr> works_;  // per bucket, this step
  size_t next_ = 0;             // next bucket to launch
  bool sync_ = false;           // reducing during this backward
  ReduceStats stats_;
  Tensor scratch_;  // small host/device buffer for scalars
};

// The buckets for a model: boundaries as described above; `align` elements (1, or 16 x world
// for ZeRO-1) divide every boundary and the padded end. Exposed for tests and the benchmark.
std::vector<Bucket> plan_buckets(const GPT& model, double first_bucket_mb, double bucket_mb, int64_t align);
// The same from a parameter layout alone (gpt_param_layout): the step-time model plans a job's
// buckets this way without allocating the model.
std::vector<Bucket> plan_buckets(const std::vector<ParamInfo>& infos, double first_bucket_mb, double bucket_mb,
                                 int64_t align);

}  // namespace lt
