// Data parallelism: bucket planning, the reducer driven by the backward hook, ZeRO-1, the
// checksum (see ddp.h).
#include "runtime/ddp.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "runtime/error.h"

namespace lt {

namespace {

using Clock = std::chrono::steady_clock;
double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Copies n floats between tensors on the same backend (through the host off the CPU).
void copy_f32(Backend& be, const Tensor& dst, const Tensor& src) {
  LT_CHECK(dst.numel() == src.numel(), "copy_f32: sizes differ");
  if (dst.device() == Device::CPU && src.device() == Device::CPU) {
    std::memmove(dst.raw(), src.raw(), src.nbytes());
    return;
  }
  std::vector<float> host((size_t)src.numel());
  be.to_host(host.data(), src);
  be.from_host(dst, host.data());
}

}  // namespace

std::vector<Bucket> plan_buckets(const GPT& model, double first_bucket_mb, double bucket_mb, int64_t align) {
  return plan_buckets(model.param_info(), first_bucket_mb, bucket_mb, align);
}

std::vector<Bucket> plan_buckets(const std::vector<ParamInfo>& infos, double first_bucket_mb, double bucket_mb,
                                 int64_t align) {
  LT_CHECK(!infos.empty(), "plan_buckets: no parameters");
  const int64_t end = round_up(infos.back().offset + infos.back().numel, align);
  // Readiness units, in the order backward finishes them: runs of parameters (walking down
  // the buffer) of the same layer: ln_f, layer L-1, ..., layer 0, the embeddings.
  struct Unit {
    int first, last;  // param indices
    int64_t lo;
  };
  std::vector<Unit> units;
  for (int i = (int)infos.size() - 1; i >= 0; i--) {
    if (units.empty() || infos[i].layer != infos[units.back().last].layer) units.push_back({i, i, 0});
    units.back().first = i;
    units.back().lo = infos[i].offset;
  }
  std::vector<int64_t> cuts;  // each bucket's lo but the last's (0), descending
  int64_t hi = end, lo = end;  // the open bucket is [lo, hi)
  auto cap = [&] { return (int64_t)((cuts.empty() ? first_bucket_mb : bucket_mb) * 1e6 / sizeof(float)); };
  auto close = [&] {
    cuts.push_back(lo);
    hi = lo;
  };
  for (const Unit& u : units) {
    // At a layer boundary, close the open bucket if the layer does not fit, unless the bucket
    // is under half full (then the layer's first parameters fill it: no slivers).
    if (lo < hi && hi - u.lo > cap() && 2 * (hi - lo) >= cap()) close();
    if (hi - u.lo <= cap()) {
      lo = u.lo;  // the whole layer fits
      continue;
    }
    // Too big for one bucket: split at parameters, closing a bucket once it reaches the cap
    // (PyTorch's rule), so small parameters (biases, LayerNorms) ride with their neighbours.
    for (int i = u.last; i >= u.first; i--) {
      lo = infos[i].offset;
      if (hi - lo >= cap() && i > u.first) close();
    }
  }
  // Move every cut up to a multiple of `align` (a bucket only shrinks, so it is ready no
  // later); drop buckets that vanish.
  std::vector<int64_t> his = {end};
  for (int64_t c : cuts) {
    const int64_t a = round_up(c, align);
    if (a > 0 && a < his.back()) his.push_back(a);
  }
  std::vector<Bucket> out;
  for (size_t k = 0; k < his.size(); k++) {
    Bucket b;
    b.index = (int)k;
    b.hi = his[k];
    b.lo = k + 1 < his.size() ? his[k + 1] : 0;
    b.first_param = (int)infos.size();
    b.last_param = -1;
    for (int i = 0; i < (int)infos.size(); i++)
      if (infos[i].offset < b.hi && infos[i].offset + infos[i].numel > b.lo) {
        b.first_param = std::min(b.first_param, i);
        b.last_param = std::max(b.last_param, i);
      }
    out.push_back(b);
  }
  return out;
}

DataParallel::DataParallel(GPT& model, Communicator& comm, const DistConfig& cfg)
    : model_(&model), comm_(&comm), cfg_(cfg) {
  LT_CHECK(comm.device() == model.backend().device(), "the communicator and the model are on different devices");
  if (comm.world() == 1) return;  // a pass-through: the single-rank path stays what it was
  zero_ = cfg.zero == 1;
  const int64_t align = zero_ ? 16 * (int64_t)comm.world() : 1;
  buckets_ = plan_buckets(model, cfg.first_bucket_mb, cfg.bucket_mb, align);
  if (zero_) model.reserve_flat(buckets_.front().hi);
  works_.resize(buckets_.size());
  scratch_ = Tensor::zeros(comm.device(), DType::F32, {std::max<int64_t>(8, 2 * comm.world())});
  model.set_grad_ready_hook([this](int64_t offset, int64_t numel) { on_grads_ready(offset, numel); });
}

DataParallel::~DataParallel() {
  if (world() > 1) model_->set_grad_ready_hook(nullptr);
}

std::string DataParallel::describe_buckets() const {
  std::string s = std::to_string(buckets_.size()) + " bucket" + (buckets_.size() == 1 ? "" : "s") + ":";
  for (size_t k = 0; k < buckets_.size(); k++) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s %.2f", k ? "," : "", buckets_[k].numel() * 4 / 1e6);
    s += buf;
  }
  return s + " MB";
}

Tensor DataParallel::flat_grads() const { return model_->grads().view(0, {model_->flat_capacity()}); }
Tensor DataParallel::flat_params() const { return model_->params().view(0, {model_->flat_capacity()}); }

Tensor DataParallel::block(const Tensor& flat, const Bucket& b) const {
  const int64_t n = b.numel() / world();
  return flat.view(b.lo + rank() * n, {n});
}

std::unique_ptr<AdamW> DataParallel::make_optimizer(const AdamWConfig& cfg) {
  if (!zero_) return std::make_unique<AdamW>(cfg, *model_);
  std::vector<FlatRange> shard;
  for (const Bucket& b : buckets_) {
    const int64_t n = b.numel() / world();
    shard.push_back({b.lo + rank() * n, n});
  }
  return std::make_unique<AdamW>(cfg, *model_, std::move(shard));
}

void DataParallel::broadcast_parameters(int root) {
  if (world() == 1) return;
  comm_->set_tag("parameter broadcast");
  comm_->broadcast(flat_params(), root)->wait();
}

void DataParallel::begin_micro_step(bool sync) {
  if (world() == 1) return;
  sync_ = sync;
  if (!sync) return;
  next_ = 0;
  stats_ = ReduceStats{};
  stats_.buckets = (int)buckets_.size();
  std::fill(works_.begin(), works_.end(), nullptr);
}

void DataParallel::on_grads_ready(int64_t offset, int64_t) {
  if (!sync_) return;
  // Ranges arrive in decreasing offset order: everything from `offset` up is final.
  if (cfg_.overlap)
    while (next_ < buckets_.size() && buckets_[next_].lo >= offset) {
      launch(next_++);
      stats_.launched_during_backward++;
    }
  comm_->progress();
}

void DataParallel::launch(size_t k) {
  const Bucket& b = buckets_[k];
  comm_->set_tag("grad bucket " + std::to_string(k + 1) + "/" + std::to_string(buckets_.size()));
  const Tensor flat = flat_grads();
  const Tensor whole = flat.view(b.lo, {b.numel()});
  works_[k] = zero_ ? comm_->reduce_scatter(block(flat, b), whole, ReduceOp::Avg)
                    : comm_->all_reduce(whole, ReduceOp::Avg);
}

void DataParallel::finish_gradients() {
  if (world() == 1) return;
  LT_CHECK(sync_, "finish_gradients() without begin_micro_step(true)");
  const auto t0 = Clock::now();  // this rank's backward is over
  while (next_ < buckets_.size()) launch(next_++);
  // The wall time during which at least one bucket's collective ran with every rank present
  // (the union of their intervals: with poll progress several are in flight at once), and
  // the part of it before this rank's backward ended.
  std::vector<std::pair<Clock::time_point, Clock::time_point>> ran;
  for (const WorkPtr& w : works_) {
    w->wait();
    if (w->finished() > w->all_arrived()) ran.emplace_back(w->all_arrived(), w->finished());
  }
  std::sort(ran.begin(), ran.end());
  for (size_t i = 0; i < ran.size();) {
    auto [lo, hi] = ran[i];
    for (i++; i < ran.size() && ran[i].first <= hi; i++) hi = std::max(hi, ran[i].second);
    stats_.comm_ms += ms_between(lo, hi);
    stats_.hidden_ms += std::max(0.0, ms_between(lo, std::min(hi, t0)));
  }
  const auto t1 = Clock::now();
  stats_.exposed_ms = ms_between(t0, t1);
  sync_ = false;
  // LEASETRAIN_DP_TRACE=1: each bucket's issue, all-ranks-present and end times, in ms
  // relative to the end of this rank's backward.
  static const bool trace = std::getenv("LEASETRAIN_DP_TRACE") != nullptr;
  if (trace) {
    const double abs_ms = std::chrono::duration<double, std::milli>(t0.time_since_epoch()).count();
    std::string line = "[rank " + std::to_string(rank()) + "] step " + std::to_string(comm_->step()) + " at " +
                       std::to_string(std::fmod(abs_ms, 1e5)) + ":";
    for (const WorkPtr& w : works_) {
      char buf[96];
      std::snprintf(buf, sizeof buf, " [%.1f %.1f %.1f]", ms_between(t0, w->issued()),
                    ms_between(t0, w->all_arrived()), ms_between(t0, w->finished()));
      line += buf;
    }
    std::fprintf(stderr, "%s exposed %.1f ms\n", line.c_str(), stats_.exposed_ms);
  }
}

float DataParallel::step(AdamW& opt, float lr) {
  if (world() == 1 || !zero_) return opt.step(lr);  // gradients are identical on every rank
  LT_CHECK(opt.sharded(), "ZeRO-1 needs the optimizer from make_optimizer()");
  const auto t0 = Clock::now();
  Backend& be = model_->backend();
  // The global norm: every rank's sum of squares over its blocks, summed.
  const float local = (float)opt.grad_sum_squares();
  const float total = sum({local})[0];
  const float norm = std::sqrt(total);
  opt.update(lr, norm);
  const Tensor flat = flat_params();
  for (size_t k = 0; k < buckets_.size(); k++) {
    const Bucket& b = buckets_[k];
    comm_->set_tag("param bucket " + std::to_string(k + 1) + "/" + std::to_string(buckets_.size()));
    works_[k] = comm_->all_gather(flat.view(b.lo, {b.numel()}), block(flat, b));
  }
  for (const WorkPtr& w : works_) w->wait();
  be.fill_zero(flat_grads());  // the blocks AdamW did not zero hold other ranks' scratch
  stats_.step_comm_ms = ms_between(t0, Clock::now());
  return norm;
}

std::vector<float> DataParallel::reduce_floats(const std::vector<float>& local, ReduceOp op) {
  if (world() == 1) return local;
  Backend& be = model_->backend();
  std::vector<float> out(local);
  for (size_t i = 0; i < local.size(); i += 8) {
    const int64_t n = (int64_t)std::min<size_t>(8, local.size() - i);
    const Tensor t = scratch_.view(0, {n});
    be.from_host(t, local.data() + i);
    comm_->set_tag("scalars");
    comm_->all_reduce(t, op)->wait();
    be.to_host(out.data() + i, t);
  }
  return out;
}

uint64_t DataParallel::param_checksum() const {
  const Tensor p = model_->params();
  std::vector<float> host;
  const float* data = nullptr;
  if (p.device() == Device::CPU) {
    data = p.f32();
  } else {
    host.resize((size_t)p.numel());
    model_->backend().to_host(host.data(), p);
    data = host.data();
  }
  // FNV-1a over 32-bit words in four independent lanes (fast), folded together at the end.
  const uint32_t* w = reinterpret_cast<const uint32_t*>(data);
  const int64_t n = p.numel();
  uint64_t h[4] = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull, 0x9e3779b97f4a7c15ull, 0x7f4a7c159e3779b9ull};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int l = 0; l < 4; l++) h[l] = (h[l] ^ w[i + l]) * 0x100000001b3ull;
  for (; i < n; i++) h[0] = (h[0] ^ w[i]) * 0x100000001b3ull;
  uint64_t out = (uint64_t)n;
  for (uint64_t x : h) out = (out ^ x) * 0x100000001b3ull;
  return out;
}

void DataParallel::check_parameters(int64_t step) {
  if (world() == 1) return;
  const uint64_t mine = param_checksum();
  // Every rank's checksum to every rank, so all of them name the same culprits.
  const Tensor all = Tensor::zeros(scratch_.device(), DType::I32, {2 * (int64_t)world()});
  const Tensor own = all.view(2 * rank(), {2});
  const int32_t halves[2] = {(int32_t)(uint32_t)mine, (int32_t)(uint32_t)(mine >> 32)};
  model_->backend().from_host(own, halves);
  comm_->set_tag("parameter checksum");
  comm_->all_gather(all, own)->wait();
  std::vector<int32_t> got(2 * world());
  model_->backend().to_host(got.data(), all);
  auto sum_of = [&](int r) { return (uint64_t)(uint32_t)got[2 * r] | ((uint64_t)(uint32_t)got[2 * r + 1] << 32); };
  std::string bad;
  for (int r = 1; r < world(); r++)
    if (sum_of(r) != sum_of(0)) bad += (bad.empty() ? "" : ", ") + std::to_string(r);
  if (bad.empty()) return;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)sum_of(0));
  throw DivergenceError("parameters differ across ranks after step " + std::to_string(step) +
                        ": the checksum of rank(s) " + bad + " differs from rank 0's (" + buf +
                        "); stopping (a nondeterministic op, a corrupted update, or ranks running different code)");
}

std::unique_ptr<AdamW> DataParallel::gather_optimizer(const AdamW& sharded, const AdamWConfig& cfg) {
  LT_CHECK(zero_ && sharded.sharded(), "gather_optimizer is for ZeRO-1");
  Backend& be = model_->backend();
  // Bucket by bucket through one bucket-sized buffer: only rank 0 (which writes the file)
  // holds the full state, so a model that fits thanks to ZeRO-1 still fits while it saves.
  std::unique_ptr<AdamW> full = rank() == 0 ? std::make_unique<AdamW>(cfg, *model_) : nullptr;
  const int64_t n = model_->num_params();
  int64_t largest = 0;
  for (const Bucket& b : buckets_) largest = std::max(largest, b.numel());
  const Tensor gathered = be.empty(DType::F32, {largest});
  for (int which = 0; which < 2; which++) {
    const Tensor& local = which == 0 ? sharded.m() : sharded.v();
    int64_t at = 0;
    for (size_t k = 0; k < buckets_.size(); k++) {
      const Bucket& b = buckets_[k];
      const int64_t c = b.numel() / world();
      comm_->set_tag(std::string("optimizer ") + (which == 0 ? "m" : "v") + " bucket " + std::to_string(k + 1));
      comm_->all_gather(gathered.view(0, {b.numel()}), local.view(at, {c}))->wait();
      at += c;
      const int64_t real = std::min(b.hi, n) - b.lo;  // the last bucket's padding is dropped
      if (full && real > 0)
        copy_f32(be, (which == 0 ? full->m() : full->v()).view(b.lo, {real}), gathered.view(0, {real}));
    }
  }
  if (full) full->set_steps_taken(sharded.steps_taken());
  return full;
}

void DataParallel::scatter_optimizer(const AdamW& full, AdamW& sharded) {
  LT_CHECK(!full.sharded() && sharded.sharded(), "scatter_optimizer: full -> sharded");
  Backend& be = model_->backend();
  const int64_t n = model_->num_params();
  int64_t at = 0;
  for (const FlatRange& r : sharded.shard()) {
    const int64_t real = std::max<int64_t>(0, std::min(r.offset + r.numel, n) - r.offset);
    for (int which = 0; which < 2; which++) {
      const Tensor& dst = which == 0 ? sharded.m() : sharded.v();
      const Tensor& src = which == 0 ? full.m() : full.v();
      if (real > 0) copy_f32(be, dst.view(at, {real}), src.view(r.offset, {real}));
      if (real < r.numel) be.fill_zero(dst.view(at + real, {r.numel - real}));  // padding
    }
    at += r.numel;
  }
  sharded.set_steps_taken(full.steps_taken());
}

double DataParallel::time_reduction_alone_ms() {
  if (world() == 1) return 0;
  comm_->set_tag("benchmark barrier");
  comm_->barrier()->wait();
  begin_micro_step(true);
  const auto t0 = Clock::now();
  for (next_ = 0; next_ < buckets_.size(); next_++) launch(next_);
  for (const WorkPtr& w : works_) w->wait();
  const double ms = ms_between(t0, Clock::now());
  sync_ = false;
  model_->backend().fill_zero(flat_grads());
  return ms;
}

}  // namespace lt
