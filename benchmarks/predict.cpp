// The step-time model (see predict.h): op times from measured rates, the bucket schedule from
// runtime/ddp.cpp's plan_buckets, collectives from alpha-beta formulas, and their fit.
#include "benchmarks/predict.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "benchmarks/peak.h"
#include "runtime/ddp.h"
#include "runtime/error.h"
#include "runtime/trainer.h"

namespace lt::predict {

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void require(bool ok, const std::string& field, const std::string& expected, double got) {
  if (!ok) throw UserError("predict: " + field + " must be " + expected + " (got " + num(got) + ")");
}

void check_link(const Link& l, const std::string& name) {
  require(std::isfinite(l.busbw_Bps) && l.busbw_Bps > 0, name + ".busbw_Bps", "> 0", l.busbw_Bps);
  require(std::isfinite(l.alpha_s) && l.alpha_s >= 0, name + ".alpha_s", ">= 0", l.alpha_s);
}

void check_inputs(const Job& job, const Rates& rates, const Network& net) {
  check_gpt_config(job.model);
  require(job.micro_batch >= 1, "job.micro_batch", ">= 1", job.micro_batch);
  require(job.seq_len >= 1 && job.seq_len <= job.model.block_size, "job.seq_len",
          "in 1..model.block_size (" + std::to_string(job.model.block_size) + ")", job.seq_len);
  require(job.grad_accum >= 1, "job.grad_accum", ">= 1", job.grad_accum);
  require(job.ranks_per_node >= 1, "job.ranks_per_node", ">= 1", job.ranks_per_node);
  require(job.nodes >= 1, "job.nodes", ">= 1", job.nodes);
  require(job.act_bytes == 2 || job.act_bytes == 4, "job.act_bytes", "2 (bf16) or 4 (fp32)", job.act_bytes);
  require(job.dist.zero == 0 || job.dist.zero == 1, "job.dist.zero", "0 or 1", job.dist.zero);
  require(job.dist.first_bucket_mb > 0, "job.dist.first_bucket_mb", "> 0", job.dist.first_bucket_mb);
  require(job.dist.bucket_mb > 0, "job.dist.bucket_mb", "> 0", job.dist.bucket_mb);
  require(!rates.gemm.empty(), "rates.gemm", "at least one measured shape", 0);
  for (size_t i = 0; i < rates.gemm.size(); i++) {
    const GemmRate& g = rates.gemm[i];
    const std::string f = "rates.gemm[" + std::to_string(i) + "]";
    require(g.M >= 1 && g.N >= 1 && g.K >= 1, f + ".M/N/K", ">= 1", (double)std::min({g.M, g.N, g.K}));
    require(std::isfinite(g.tflops) && g.tflops > 0, f + ".tflops", "> 0", g.tflops);
  }
  require(rates.attention_fwd_tflops > 0, "rates.attention_fwd_tflops", "> 0", rates.attention_fwd_tflops);
  require(rates.attention_bwd_tflops > 0, "rates.attention_bwd_tflops", "> 0", rates.attention_bwd_tflops);
  require(rates.memory_gbps > 0, "rates.memory_gbps", "> 0", rates.memory_gbps);
  require(rates.peak_tflops > 0, "rates.peak_tflops", "> 0", rates.peak_tflops);
  if (job.ranks_per_node > 1) check_link(net.intra, "network.intra");
  if (job.nodes > 1) check_link(net.inter, "network.inter");
}

int ceil_log2(int p) {
  int h = 0;
  while ((1 << h) < p) h++;
  return h;
}

// Accumulates each op kind's time in first-seen order.
struct OpTable {
  std::vector<OpTime> ops;
  OpTime& at(const std::string& kind) {
    for (OpTime& o : ops)
      if (o.kind == kind) return o;
    ops.push_back({kind, 0, 0});
    return ops.back();
  }
};

}  // namespace

double gemm_seconds(const Rates& rates, int64_t M, int64_t N, int64_t K) {
  // Nearest measured shape by squared distance of (log M, log N, log K): GEMM efficiency
  // follows the shape's proportions and scale, not its absolute differences. A backward GEMM
  // (dX: [BT, in] = dY [BT, out] W; dW: [out, in] = dY^T X) takes the rate of the forward
  // shape nearest to it: the suite measures forward (NT) shapes only.
  const GemmRate* best = nullptr;
  double best_d = std::numeric_limits<double>::infinity();
  for (const GemmRate& g : rates.gemm) {
    const double dm = std::log((double)M / g.M), dn = std::log((double)N / g.N), dk = std::log((double)K / g.K);
    const double d = dm * dm + dn * dn + dk * dk;
    if (d < best_d) best_d = d, best = &g;
  }
  LT_CHECK(best, "gemm_seconds: no rates");
  return 2.0 * (double)M * N * K / (best->tflops * 1e12);  // 2MNK FLOPs (one multiply-add = 2)
}

double collective_seconds(Collective c, double bytes, int ranks_per_node, int nodes, const Network& net) {
  const int g = ranks_per_node, N = nodes, p = g * N;
  if (p <= 1) return 0;
  // A ring's every step waits for its slowest hop, so across nodes the latency and the
  // bandwidth are the inter-node ones unless the node's own links are slower. Inter-node
  // busbw is the node's NIC bandwidth in total: a flat ring over p ranks crosses each node
  // boundary on one link carrying 2(p-1)/p x bytes, and NCCL runs one ring per NIC on
  // 1/k of the data each, so the node's k NICs together carry 2(p-1)/p x bytes (NCCL 2.x
  // multi-node busbw tracks the node's NIC total; ANCHORS: 8x400 Gb/s -> 350-385 GB/s).
  const double alpha = N > 1 ? std::max(net.inter.alpha_s, g > 1 ? net.intra.alpha_s : 0.0) : net.intra.alpha_s;
  const double bw = N > 1 ? (g > 1 ? std::min(net.intra.busbw_Bps, net.inter.busbw_Bps) : net.inter.busbw_Bps)
                          : net.intra.busbw_Bps;
  const double share = (double)(p - 1) / p;
  switch (c) {
    case Collective::ReduceScatter:
    case Collective::AllGather:
      // Ring reduce-scatter / all-gather: p-1 steps of bytes/p each (Thakur, Rabenseifner,
      // Gropp 2005, "Optimization of collective communication operations in MPICH");
      // nccl-tests PERFORMANCE.md: busbw = algbw x (p-1)/p.
      return (p - 1) * alpha + share * bytes / bw;
    case Collective::AllReduce:
      if (net.algo == Algo::Ring)
        // Ring all-reduce = reduce-scatter + all-gather: 2(p-1) steps, 2(p-1)/p x bytes over
        // each link (Patarasuk and Yuan 2009, bandwidth-optimal all-reduce); nccl-tests:
        // busbw = algbw x 2(p-1)/p, so time = 2(p-1)/p x bytes / busbw.
        return 2.0 * (p - 1) * alpha + 2.0 * share * bytes / bw;
      // NCCL's tree (NCCL 2.4: a chain inside each node, a pipelined double binary tree across
      // nodes; Sanders, Speck, Traeff 2009): reduce up then broadcast down, so latency
      // 2 x (ceil(log2 N) inter hops + (g-1) intra hops), and every rank sends and receives
      // the whole buffer once each way: 2 x bytes over the slowest link (its busbw is the
      // ring's x p/(p-1): the tree moves bytes, the ring (p-1)/p x bytes, per direction).
      {
        const double lat = 2.0 * (ceil_log2(N) * (N > 1 ? net.inter.alpha_s : 0.0) + (g - 1) * net.intra.alpha_s);
        return lat + 2.0 * bytes / bw;
      }
  }
  return 0;
}

Prediction predict_step(const Job& job, const Rates& rates, const Network& net) {
  check_inputs(job, rates, net);
  const GPTConfig& m = job.model;
  const int p = job.ranks(), A = job.grad_accum;
  const double B = job.micro_batch, T = job.seq_len, C = m.n_embd, L = m.n_layer, V = m.padded_vocab();
  const double BT = B * T, e = job.act_bytes, mem = rates.memory_gbps * 1e9;
  const int64_t M = job.micro_batch * (int64_t)job.seq_len;
  auto bytes_s = [&](double bytes) { return bytes / mem; };  // memory-bound op: bytes moved / bandwidth

  // Per micro-step, following GPT::run_forward and GPT::backward op by op. GEMMs at the
  // measured rate of their shape; attention at the measured attention rate with peak.h's
  // FLOP count; everything else is memory-bound: bytes read + written / memory bandwidth
  // (the suite's memory row counts read + write the same way). Activation tensors are
  // [BT, C]-sized unless said; e bytes per element.
  OpTable t;
  const std::vector<ParamInfo> layout = gpt_param_layout(m);
  const double n_params = (double)(layout.back().offset + layout.back().numel);
  // Forward. bf16: the compute copy of the weights is refreshed from fp32 every forward (read
  // 4 + write 2 bytes per parameter).
  if (job.act_bytes != 4) t.at("weights_copy").forward_s += bytes_s(n_params * (4 + e));
  t.at("embedding").forward_s += bytes_s(3 * BT * C * e);           // read wte and wpe rows, write x
  const double ln_fwd = bytes_s(2 * BT * C * e);                      // read x, write y
  const double ln_bwd = bytes_s(4 * BT * C * e);                      // read x, dy, dres; write dres
  const double attn_flops = bench::attention_flops(job.micro_batch, job.seq_len, m.n_head, m.n_embd / m.n_head, false);
  struct Linear {
    const char* kind;
    int64_t out, in;
    double epilogue_fwd, epilogue_bwd;  // fused bias/GELU/residual traffic, bytes
  };
  const int64_t c = m.n_embd;
  const Linear linears[] = {
      {"qkv", 3 * c, c, 0, BT * 3 * C * e},                                  // bwd: bias grad reads dY
      {"attn_proj", c, c, BT * C * e, BT * C * e},                           // fwd: residual read
      {"fc", 4 * c, c, BT * 4 * C * e, BT * 4 * C * e},                      // fwd: also writes pre-GELU
      {"fc_proj", c, 4 * c, BT * C * e, BT * C * e + 2 * BT * 4 * C * e},    // bwd: GELU backward r+w
  };
  for (const Linear& l : linears) {
    OpTime& o = t.at(l.kind);
    o.forward_s += L * (gemm_seconds(rates, M, l.out, l.in) + bytes_s(l.epilogue_fwd));
    // dX [BT, in] = dY [BT, out] x W [out, in]; dW [out, in] += dY^T X.
    o.backward_s += L * (gemm_seconds(rates, M, l.in, l.out) + gemm_seconds(rates, l.out, l.in, M) +
                         bytes_s(l.epilogue_bwd));
  }
  t.at("attention").forward_s += L * attn_flops / (rates.attention_fwd_tflops * 1e12);
  t.at("attention").backward_s += L * 2.5 * attn_flops / (rates.attention_bwd_tflops * 1e12);  // peak.h: bwd = 2.5 x fwd
  t.at("layernorm").forward_s += (2 * L + 1) * ln_fwd;
  t.at("layernorm").backward_s += (2 * L + 1) * ln_bwd;
  const int64_t vp = m.padded_vocab();
  t.at("lm_head").forward_s += gemm_seconds(rates, M, vp, c);
  t.at("lm_head").backward_s += gemm_seconds(rates, M, c, vp) + gemm_seconds(rates, vp, c, M);
  t.at("crossentropy").forward_s += bytes_s(2 * BT * V * e);   // softmax: read logits, write probabilities
  t.at("crossentropy").backward_s += bytes_s(2 * BT * V * e);  // dlogits in place: read, write
  t.at("embedding").backward_s += bytes_s(3 * BT * C * e);     // read dx, add into wte and wpe rows

  Prediction r;
  for (const OpTime& o : t.ops) {
    r.forward_s += o.forward_s;
    r.backward_s += o.backward_s;
  }
  r.ops = t.ops;

  // When backward has finished each hook's range (GPT::backward): ln_f after the head's
  // backward, layer l after its ln_1, the embeddings at the end. Offsets descend.
  const double per_layer_bwd = [&] {
    double s = 0;
    for (const OpTime& o : t.ops)
      if (o.kind == "qkv" || o.kind == "attn_proj" || o.kind == "fc" || o.kind == "fc_proj" || o.kind == "attention")
        s += o.backward_s / L;
    return s + 2 * ln_bwd;
  }();
  const double head_bwd = t.at("crossentropy").backward_s + t.at("lm_head").backward_s + ln_bwd;
  struct Ready {
    int64_t offset;
    double at;  // seconds after the backward starts
  };
  std::vector<Ready> ready;
  const int per_layer_params = (int)((layout.size() - 4) / m.n_layer);
  ready.push_back({layout[layout.size() - 2].offset, head_bwd});
  for (int l = m.n_layer - 1; l >= 0; l--)
    ready.push_back({layout[2 + (size_t)l * per_layer_params].offset, head_bwd + (m.n_layer - l) * per_layer_bwd});
  ready.push_back({0, r.backward_s});

  // The step: grad_accum micro-steps back to back; only the last one's backward reduces.
  const double bwd_start = (A - 1) * (r.forward_s + r.backward_s) + r.forward_s;
  r.backward_end_s = bwd_start + r.backward_s;

  // AdamW (runtime/optim.cpp), memory-bound, per parameter it updates: read p, m, v and
  // write them (fp32: 6 x 4 bytes), read the gradient twice (global norm, update); then the
  // whole gradient buffer is zeroed (write). ZeRO-1 updates 1/p of the padded buffer.
  auto adamw_s = [&](double owned, double buffer) { return bytes_s(owned * (24 + 2 * e) + buffer * e); };
  r.one_gpu_step_s = A * (r.forward_s + r.backward_s) + adamw_s(n_params, n_params);

  if (p == 1) {  // DataParallel is a pass-through on one rank: no buckets, no collectives
    r.optimizer_s = adamw_s(n_params, n_params);
    r.step_s = r.one_gpu_step_s;
  } else {
    const bool zero = job.dist.zero == 1;
    const int64_t align = zero ? 16 * (int64_t)p : 1;  // DataParallel's alignment
    const std::vector<Bucket> buckets = plan_buckets(layout, job.dist.first_bucket_mb, job.dist.bucket_mb, align);
    const Collective grad_coll = zero ? Collective::ReduceScatter : Collective::AllReduce;
    double prev_end = 0;
    for (const Bucket& b : buckets) {
      BucketTime bt;
      bt.index = b.index;
      bt.bytes = b.numel() * job.act_bytes;  // gradients are in the compute dtype
      // Launched (DataParallel::on_grads_ready) at the first hook whose offset is at or below
      // the bucket's lo, i.e. once every gradient in it is final; without overlap, all
      // buckets are launched by finish_gradients() after the backward.
      bt.ready_s = r.backward_end_s;
      if (job.dist.overlap && job.async_progress)
        for (const Ready& x : ready)
          if (x.offset <= b.lo) {
            bt.ready_s = bwd_start + x.at;
            break;
          }
      // Issued in order, one at a time on the communicator: a bucket starts when it is
      // ready and the previous one's collective is done.
      bt.start_s = std::max(bt.ready_s, prev_end);
      bt.end_s = bt.start_s + collective_seconds(grad_coll, (double)bt.bytes, job.ranks_per_node, job.nodes, net);
      r.grad_comm_s += bt.end_s - bt.start_s;
      prev_end = bt.end_s;
      r.buckets.push_back(bt);
    }
    const double grads_done = std::max(r.backward_end_s, prev_end);
    // Scalar all-reduces every step: the loss average (trainer) and, with ZeRO-1, the global
    // gradient norm from per-rank partial sums.
    const double scalar = collective_seconds(Collective::AllReduce, 4, job.ranks_per_node, job.nodes, net);
    r.small_comm_s = (zero ? 2 : 1) * scalar;
    const double padded = (double)buckets.front().hi;
    if (zero) {
      r.optimizer_s = adamw_s(padded / p, padded);
      // After AdamW on its blocks, each rank all-gathers the fp32 parameters of every bucket.
      for (const Bucket& b : buckets)
        r.allgather_s += collective_seconds(Collective::AllGather, (double)b.numel() * 4, job.ranks_per_node,
                                            job.nodes, net);
    } else {
      r.optimizer_s = adamw_s(n_params, n_params);
    }
    r.step_s = grads_done + r.optimizer_s + r.allgather_s + r.small_comm_s;
    r.exposed_comm_s = (grads_done - r.backward_end_s) + r.allgather_s + r.small_comm_s;
  }
  const double tokens = (double)p * A * BT;
  r.tokens_per_s = tokens / r.step_s;
  r.mfu = A * gpt_flops_per_step(m, job.micro_batch, job.seq_len) / r.step_s / (rates.peak_tflops * 1e12);
  r.scaling_efficiency = r.one_gpu_step_s / r.step_s;
  return r;
}

LinkFit fit_alpha_beta(const std::vector<CurvePoint>& all, int ranks_per_node, int nodes, Algo algo,
                       double min_bytes) {
  require(ranks_per_node >= 1, "allreduce.ranks_per_node", ">= 1", ranks_per_node);
  require(nodes >= 1, "allreduce.nodes", ">= 1", nodes);
  require(ranks_per_node * nodes >= 2, "allreduce ranks (ranks_per_node x nodes)", ">= 2", ranks_per_node * nodes);
  require(all.size() >= 2, "allreduce points", "at least 2", (double)all.size());
  for (size_t i = 0; i < all.size(); i++) {
    require(std::isfinite(all[i].bytes) && all[i].bytes > 0, "allreduce[" + std::to_string(i) + "].bytes", "> 0",
            all[i].bytes);
    require(std::isfinite(all[i].seconds) && all[i].seconds > 0, "allreduce[" + std::to_string(i) + "].seconds",
            "> 0", all[i].seconds);
  }
  std::vector<CurvePoint> points;
  for (const CurvePoint& q : all)
    if (q.bytes >= min_bytes) points.push_back(q);
  if (points.size() < 2) points = all;
  // t = a + b x bytes by weighted least squares with weights 1/t^2: a sweep spans 8 B to
  // hundreds of MB, and unweighted squares would let the largest sizes set alpha too; 1/t^2
  // minimises the relative error, so the small sizes (latency) and large (bandwidth) count
  // alike. Normal equations: [Sw Swx; Swx Swxx] [a b] = [Swy Swxy].
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const CurvePoint& q : points) {
    const double w = 1.0 / (q.seconds * q.seconds);
    sw += w, sx += w * q.bytes, sy += w * q.seconds, sxx += w * q.bytes * q.bytes, sxy += w * q.bytes * q.seconds;
  }
  const double det = sw * sxx - sx * sx;
  require(det > 0, "allreduce points", "at two or more different sizes", 0);
  double a = (sy * sxx - sx * sxy) / det, b = (sw * sxy - sx * sy) / det;
  if (a < 0) {  // latency below measurement noise: refit through the origin, t = b x bytes
    a = 0;
    b = sxy / sxx;
  }
  require(b > 0, "allreduce curve", "growing with size (fitted seconds per byte > 0)", b);
  // Invert collective_seconds for the measured layout: at any layout it is t = H x alpha +
  // F x bytes / busbw, with H (hops) and F (bytes factor) read off the formula itself with a
  // unit latency and a unit bandwidth, so the fit and the model cannot disagree. Both levels
  // get the one fitted link: fit one level at a time (ranks of one node: intra; one rank
  // per node: inter).
  Network unit;
  unit.algo = algo;
  unit.intra = unit.inter = Link{1.0, std::numeric_limits<double>::infinity()};
  const double H = collective_seconds(Collective::AllReduce, 1.0, ranks_per_node, nodes, unit);
  unit.intra = unit.inter = Link{0.0, 1.0};
  const double F = collective_seconds(Collective::AllReduce, 1.0, ranks_per_node, nodes, unit);
  LinkFit f;
  f.link.alpha_s = a / H;
  f.link.busbw_Bps = F / b;
  for (const CurvePoint& q : points)
    f.max_rel_err = std::max(f.max_rel_err, std::fabs(a + b * q.bytes - q.seconds) / q.seconds);
  f.points_used = (int)points.size();
  return f;
}

// ---- suite results ------------------------------------------------------------------------------

namespace {

using json = nlohmann::json;

bool ok_row(const json& r, const char* suite) {
  return r.value("suite", "") == suite && r.value("status", "") == "ok";
}

double metric(const json& r, const char* key) {
  const json& m = r["metrics"];
  return m.contains(key) && m[key].is_number() ? m[key].get<double>() : 0.0;
}

int64_t int_param(const json& r, const char* key) {
  const json& p = r["params"];
  return p.contains(key) && p[key].is_number_integer() ? p[key].get<int64_t>() : 0;
}

}  // namespace

SuiteInputs suite_inputs(const json& suite, const std::string& file, const GPTConfig& model, int seq_len,
                         const std::string& gemm_impl) {
  SuiteInputs in;
  in.file = file;
  in.device = suite.value("device", "cpu");
  const json& machine = suite["machine"];
  const bool gpu = in.device == "cuda" && machine["gpu"].is_object();
  in.label = gpu ? machine["gpu"].value("name", "gpu") : machine["cpu"].value("model", "cpu");
  const int64_t count = gpu ? machine["gpu"].value("count", int64_t(1)) : 1;  // read wide: an int would wrap
  if (count < 1 || count > (1 << 16))
    throw UserError(file + ": machine.gpu.count: expected 1 .. 65536 GPUs, got " + std::to_string(count));
  in.gpus = (int)count;
  in.act_bytes = gpu ? 2 : 4;
  in.rates.peak_tflops = machine["peak"].value("tflops", 0.0);
  if (!(in.rates.peak_tflops > 0)) throw UserError(file + ": machine.peak.tflops: expected a peak > 0");
  const json& rows = suite["results"];

  // GEMM: the kernel the trainer runs. On a CPU the suite's "leasetrain" rows (OpenBLAS is the
  // baseline); on a GPU the hand-written path gemm() picks ("wgmma" where the suite measured it,
  // i.e. on Hopper, else "mma.sync"), never cuBLAS, and not the forced-tile rows.
  bool have_wgmma = false;
  for (const json& r : rows)
    have_wgmma = have_wgmma || (ok_row(r, "gemm") && r.value("device", "") == in.device && r.value("impl", "") == "wgmma");
  in.gemm_impl = !gemm_impl.empty() ? gemm_impl : !gpu ? "leasetrain" : have_wgmma ? "wgmma" : "mma.sync";
  for (const json& r : rows)
    if (ok_row(r, "gemm") && r.value("device", "") == in.device && r.value("impl", "") == in.gemm_impl) {
      GemmRate g{int_param(r, "M"), int_param(r, "N"), int_param(r, "K"), metric(r, "tflops")};
      if (g.M > 0 && g.N > 0 && g.K > 0 && g.tflops > 0) in.rates.gemm.push_back(g);
    }
  if (in.rates.gemm.empty())
    throw UserError(file + ": results: no measured gemm row of the kernel asked for (suite gemm, impl " + in.gemm_impl +
                    ", device " + in.device + ", status ok)");

  // Attention: per pass, the row nearest the model's head dim and sequence length (log distance),
  // of the kernel the trainer runs: the Hopper kernels ("flash-wgmma") where the suite measured
  // them for that pass, else the mma.sync ones ("flash").
  const double hd = (double)model.n_embd / model.n_head;
  for (const char* pass : {"fwd", "bwd"}) {
    auto pass_row = [&](const json& r) {
      return ok_row(r, "attention") && r.value("device", "") == in.device && r["params"].value("pass", "") == pass;
    };
    bool have_flash_wgmma = false;
    for (const json& r : rows) have_flash_wgmma = have_flash_wgmma || (pass_row(r) && r.value("impl", "") == "flash-wgmma");
    double best_d = std::numeric_limits<double>::infinity(), rate = 0;
    for (const json& r : rows) {
      if (!pass_row(r) || (r.value("impl", "") == "flash-wgmma") != have_flash_wgmma) continue;
      const double d_hd = std::log(std::max<int64_t>(1, int_param(r, "head_dim")) / hd);
      const double d_t = std::log(std::max<int64_t>(1, int_param(r, "T")) / (double)seq_len);
      const double d = d_hd * d_hd + d_t * d_t;
      if (metric(r, "tflops") > 0 && d < best_d) best_d = d, rate = metric(r, "tflops");
    }
    if (!(rate > 0))
      throw UserError(file + ": results: no measured attention " + std::string(pass) + " row (device " + in.device +
                      ", status ok)");
    (std::string(pass) == "fwd" ? in.rates.attention_fwd_tflops : in.rates.attention_bwd_tflops) = rate;
  }

  for (const json& r : rows)
    if (ok_row(r, "memory") && r.value("device", "") == in.device) in.rates.memory_gbps = std::max(in.rates.memory_gbps, metric(r, "gbps"));
  if (!(in.rates.memory_gbps > 0))
    throw UserError(file + ": results: no measured memory row (device " + in.device + ", status ok)");

  // The all-reduce sweep: every size measured on the machine's ranks (nccl-tests' time column).
  for (const json& r : rows) {
    if (!ok_row(r, "allreduce") || !r["params"]["bytes"].is_number_integer()) continue;
    const int64_t bytes = int_param(r, "bytes"), ranks = int_param(r, "ranks");
    const double us = metric(r, "time_us");
    if (bytes <= 0 || ranks < 2 || !(us > 0)) continue;
    if (in.allreduce_ranks != 0 && ranks != in.allreduce_ranks) continue;  // one sweep: the first rank count seen
    in.allreduce_ranks = (int)ranks;
    in.allreduce_backend = r.value("impl", "");
    in.allreduce.push_back({(double)bytes, us * 1e-6});
  }
  return in;
}

// ---- the table over node counts -----------------------------------------------------------------

PlanTable plan_table(const PlanSetup& setup, const Rates& rates, const Network& net) {
  require(!setup.node_counts.empty(), "node counts", "at least one", 0);
  require(setup.price_per_gpu_hour >= 0 && std::isfinite(setup.price_per_gpu_hour), "price per GPU-hour", ">= 0",
          setup.price_per_gpu_hour);
  require(setup.token_budget >= 0 && std::isfinite(setup.token_budget), "token budget", ">= 0", setup.token_budget);
  require(setup.knee_fraction > 0 && setup.knee_fraction <= 1, "knee fraction", "in (0, 1]", setup.knee_fraction);
  PlanTable t;
  for (int n : setup.node_counts) {
    PlanRow row;
    row.nodes = n;
    row.gpus = n * setup.job.ranks_per_node;
    Job job = setup.job;
    job.nodes = n;
    if (setup.global_batch > 0) {
      // What the trainer does with a global batch on another rank count (split_global_batch):
      // the largest micro batch up to the config's that divides each rank's share.
      const std::optional<BatchSplit> split = split_global_batch(setup.global_batch, row.gpus, setup.job.micro_batch);
      if (!split) {
        row.feasible = false;
        row.note = "the global batch (" + std::to_string(setup.global_batch) + ") " +
                   (setup.global_batch % row.gpus != 0 ? "does not divide over "
                                                       : "needs more than " + std::to_string(kMaxGradAccum) +
                                                             " accumulation steps on ") +
                   std::to_string(row.gpus) + " GPUs";
        t.rows.push_back(row);
        continue;
      }
      job.micro_batch = split->micro_batch;
      job.grad_accum = split->grad_accum;
    }
    row.micro_batch = job.micro_batch;
    row.grad_accum = job.grad_accum;
    row.p = predict_step(job, rates, net);
    if (setup.token_budget > 0) {
      row.hours = setup.token_budget / row.p.tokens_per_s / 3600.0;
      row.cost = row.hours * row.gpus * setup.price_per_gpu_hour;
    }
    t.rows.push_back(row);
  }
  // The knee: walking up the node counts, the last count reached by a step that still added
  // at least knee_fraction x (one node's tokens/s, at the first row) per added node.
  const PlanRow* first = nullptr;
  for (const PlanRow& r : t.rows)
    if (r.feasible) {
      first = &r;
      break;
    }
  if (first) {
    const double per_node = first->p.tokens_per_s / first->nodes;
    const PlanRow* prev = first;
    t.knee_nodes = first->nodes;
    for (const PlanRow& r : t.rows) {
      if (!r.feasible || r.nodes <= prev->nodes) continue;
      const double gain = (r.p.tokens_per_s - prev->p.tokens_per_s) / (r.nodes - prev->nodes);
      if (gain < setup.knee_fraction * per_node) break;
      t.knee_nodes = r.nodes;
      prev = &r;
    }
  }
  return t;
}

}  // namespace lt::predict
