// The step-time model's arithmetic (benchmarks/predict.h) against hand-computed cases.
//
// The case: a 1-layer GPT (C = 64, 1 head, vocabulary 64, context 64), micro_batch 1 x 64
// tokens (BT = 64), fp32, every rate 1e6 per second (GEMM and attention 1e6 FLOP/s, memory
// 1e6 B/s), so each op's seconds are its FLOPs or bytes / 1e6.
//   forward GEMM FLOPs (2MNK): qkv 2*64*192*64 = 1,572,864; attn_proj 2*64*64*64 = 524,288;
//     fc 2*64*256*64 = 2,097,152; fc_proj 2,097,152; lm_head 524,288: 6,815,744.
//   attention fwd 4*B*T^2*H*D/2 = 4*4096*64/2 = 524,288.
//   forward bytes (e = 4): embedding 3*BT*C*e = 49,152; layernorm 3 x 2*BT*C*e = 98,304;
//     epilogues attn_proj 16,384 + fc 65,536 + fc_proj 16,384; crossentropy 2*BT*V*e = 32,768:
//     278,528.
//   forward = (6,815,744 + 524,288 + 278,528) / 1e6 = 7.61856 s.
//   backward: GEMMs 2 x 6,815,744 = 13,631,488; attention 2.5 x 524,288 = 1,310,720; bytes:
//     embedding 49,152, layernorm 3 x 65,536 = 196,608, epilogues qkv 49,152 + attn_proj
//     16,384 + fc 65,536 + fc_proj (16,384 + 131,072) = 278,528, crossentropy 32,768: 557,056.
//   backward = 15,499,264 / 1e6 = 15.499264 s.
//   parameters: wte 4096, wpe 4096, layer 49,984, ln_f 128: 58,304.
//   AdamW: 58,304 x (24 + 2*4) + 58,304 x 4 = 58,304 x 36 = 2,098,944 B -> 2.098944 s.
//   backward timeline (from its start): head (crossentropy 0.032768 + lm_head 1.048576 +
//     ln_f 0.065536) = 1.14688; layer 0 takes 14.303232 (ends 15.450112); embeddings 0.049152.
//   buckets (first 0.001 MB = 250 floats, then 0.2 MB = 50,000): b0 = ln_f [58176, 58304)
//     512 B, b1 = layer 0 [8192, 58176) 199,936 B, b2 = embeddings [0, 8192) 32,768 B; ready
//     at forward + 1.14688 = 8.76544, + 15.450112 = 23.068672, + 15.499264 = 23.117824.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "benchmarks/predict.h"
#include "runtime/backend.h"
#include "runtime/ddp.h"
#include "runtime/error.h"

using namespace lt;
using namespace lt::predict;

namespace {

Job tiny_job(int ranks_per_node = 1) {
  Job j;
  j.model = GPTConfig{1, 1, 64, 64, 64};
  j.micro_batch = 1;
  j.seq_len = 64;
  j.ranks_per_node = ranks_per_node;
  j.dist.first_bucket_mb = 0.001;
  j.dist.bucket_mb = 0.2;
  return j;
}

Rates unit_rates() {
  Rates r;
  r.gemm = {{64, 64, 64, 1e-6}};
  r.attention_fwd_tflops = r.attention_bwd_tflops = 1e-6;
  r.memory_gbps = 1e-3;
  r.peak_tflops = 1e-6;
  return r;
}

Network net(double alpha, double busbw) {
  Network n;
  n.intra = n.inter = Link{alpha, busbw};
  return n;
}

constexpr double kFwd = 7.61856, kBwd = 15.499264, kAdam = 2.098944, kCompute = kFwd + kBwd;
constexpr double kTol = 1e-9;

std::string user_error(const Job& j, const Rates& r, const Network& n) {
  try {
    predict_step(j, r, n);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Predict, OneRankHandComputedNoComm) {
  const Prediction p = predict_step(tiny_job(), unit_rates(), net(0, 0));  // no link read on one rank
  EXPECT_NEAR(p.forward_s, kFwd, kTol);
  EXPECT_NEAR(p.backward_s, kBwd, kTol);
  EXPECT_NEAR(p.optimizer_s, kAdam, kTol);
  EXPECT_TRUE(p.buckets.empty());
  EXPECT_EQ(p.exposed_comm_s, 0);
  // 7.61856 + 15.499264 + 2.098944 = 25.216768
  EXPECT_NEAR(p.step_s, 25.216768, kTol);
  EXPECT_NEAR(p.tokens_per_s, 64 / 25.216768, 1e-9);
  // llm.c FLOPs: 6 x 58,304 x 64 + 6 x 1 x 64 x 64 x 64 = 22,388,736 + 1,572,864 = 23,961,600.
  EXPECT_NEAR(p.mfu, 23961600 / 25.216768 / 1e6, 1e-9);
  EXPECT_NEAR(p.scaling_efficiency, 1.0, 1e-12);
  double lm = 0;
  for (const OpTime& o : p.ops)
    if (o.kind == "lm_head") lm = o.backward_s;
  EXPECT_NEAR(lm, 1.048576, kTol);  // dX and dW GEMMs, 2 x 524,288 FLOPs
}

TEST(Predict, BucketsAreTheRuntimes) {
  const Job j = tiny_job(2);
  auto be = make_cpu_backend();
  GPT model(j.model, *be);
  for (int64_t align : {1, 32}) {
    const std::vector<Bucket> a = plan_buckets(model, 0.001, 0.2, align);
    const std::vector<Bucket> b = plan_buckets(gpt_param_layout(j.model), 0.001, 0.2, align);
    ASSERT_EQ(a.size(), b.size());
    for (size_t k = 0; k < a.size(); k++) {
      EXPECT_EQ(a[k].lo, b[k].lo);
      EXPECT_EQ(a[k].hi, b[k].hi);
    }
  }
  const Prediction p = predict_step(j, unit_rates(), net(1e-3, 1e9));
  ASSERT_EQ(p.buckets.size(), 3u);
  EXPECT_EQ(p.buckets[0].bytes, 512);
  EXPECT_EQ(p.buckets[1].bytes, 199936);
  EXPECT_EQ(p.buckets[2].bytes, 32768);
  EXPECT_NEAR(p.buckets[0].ready_s, 8.76544, kTol);
  EXPECT_NEAR(p.buckets[1].ready_s, 23.068672, kTol);
  EXPECT_NEAR(p.buckets[2].ready_s, 23.117824, kTol);
}

TEST(Predict, ComputeBoundHidesAllButTheLastBucket) {
  // Ring all-reduce on 2 ranks: 2(p-1) alpha + 2(p-1)/p x bytes / busbw = 0.002 + bytes / 1e9.
  // b0 0.002000512 (8.76544 -> 8.767440512), b1 0.002199936 (23.068672 -> 23.070871936, before
  // the backward ends at 23.117824), b2 ready at the end: 0.002032768 -> 23.119856768.
  // Loss all-reduce (4 B): 0.002000004. Step = 23.119856768 + 2.098944 + 0.002000004.
  const Prediction p = predict_step(tiny_job(2), unit_rates(), net(1e-3, 1e9));
  EXPECT_NEAR(p.buckets[0].end_s, 8.767440512, kTol);
  EXPECT_NEAR(p.buckets[1].start_s, 23.068672, kTol);
  EXPECT_NEAR(p.buckets[1].end_s, 23.070871936, kTol);
  EXPECT_NEAR(p.buckets[2].start_s, 23.117824, kTol);
  EXPECT_NEAR(p.buckets[2].end_s, 23.119856768, kTol);
  EXPECT_NEAR(p.step_s, 25.220800772, kTol);
  EXPECT_NEAR(p.exposed_comm_s, 0.002032768 + 0.002000004, kTol);
  EXPECT_NEAR(p.scaling_efficiency, 25.216768 / 25.220800772, 1e-12);
  EXPECT_NEAR(p.tokens_per_s, 128 / 25.220800772, 1e-9);
}

TEST(Predict, CommBoundQueuesBuckets) {
  // busbw 1e4 B/s, no latency: b0 0.0512 s, b1 19.9936 s, b2 3.2768 s. b1 starts when ready
  // (23.068672) and ends 43.062272; b2, ready at 23.117824, waits for it: ends 46.339072 =
  // b1's readiness + both collectives. Loss: 4e-4. Step = 46.339072 + 2.098944 + 0.0004.
  const Prediction p = predict_step(tiny_job(2), unit_rates(), net(0, 1e4));
  EXPECT_NEAR(p.buckets[1].end_s, 43.062272, kTol);
  EXPECT_NEAR(p.buckets[2].start_s, 43.062272, kTol);
  EXPECT_NEAR(p.buckets[2].end_s, 46.339072, kTol);
  EXPECT_NEAR(p.step_s, 48.438416, kTol);
  EXPECT_NEAR(p.exposed_comm_s, 46.339072 - 23.117824 + 0.0004, kTol);
  EXPECT_NEAR(p.grad_comm_s, 0.0512 + 19.9936 + 3.2768, kTol);
}

TEST(Predict, HiddenExposedBoundary) {
  // The embeddings' backward (0.049152 s) is the window b1 can hide in. busbw 1e9:
  // alpha 0.02: b1 = 0.04 + 0.000199936 < 0.049152, hidden; exposed grads = b2 = 0.040032768.
  // alpha 0.03: b1 = 0.060199936 ends 23.128871936, past 23.117824; b2 waits and ends
  // + 0.060032768 = 23.188904704: exposed grads 0.071080704.
  const Prediction hid = predict_step(tiny_job(2), unit_rates(), net(0.02, 1e9));
  EXPECT_LT(hid.buckets[1].end_s, hid.backward_end_s);
  EXPECT_NEAR(hid.buckets[2].end_s - hid.backward_end_s, 0.040032768, kTol);
  const Prediction exp = predict_step(tiny_job(2), unit_rates(), net(0.03, 1e9));
  EXPECT_GT(exp.buckets[1].end_s, exp.backward_end_s);
  EXPECT_NEAR(exp.buckets[2].end_s, 23.188904704, kTol);
  EXPECT_NEAR(exp.buckets[2].end_s - exp.backward_end_s, 0.071080704, kTol);
}

TEST(Predict, NoOverlapReducesAfterBackward) {
  // overlap = false: all three start back to back at 23.117824: 0.002000512 + 0.002199936 +
  // 0.002032768 = 0.006233216 exposed, plus the loss all-reduce.
  Job j = tiny_job(2);
  j.dist.overlap = false;
  const Prediction p = predict_step(j, unit_rates(), net(1e-3, 1e9));
  EXPECT_NEAR(p.buckets[0].start_s, 23.117824, kTol);
  EXPECT_NEAR(p.buckets[2].end_s, 23.117824 + 0.006233216, kTol);
  EXPECT_NEAR(p.exposed_comm_s, 0.006233216 + 0.002000004, kTol);
  // MPI's poll progress advances a collective only when its rank polls: the same timeline, with
  // overlap still asked for.
  Job poll = tiny_job(2);
  poll.async_progress = false;
  const Prediction q = predict_step(poll, unit_rates(), net(1e-3, 1e9));
  EXPECT_NEAR(q.buckets[0].start_s, 23.117824, kTol);
  EXPECT_NEAR(q.step_s, p.step_s, kTol);
}

TEST(Predict, AccumulationReducesOnlyOnTheLastMicroStep) {
  // grad_accum 3: the last backward starts at 2 x 23.117824 + 7.61856 = 53.854208; the same
  // three collectives once (0.006233216 in all). Step = 3 x 23.117824 + 0.002032768 (b2) +
  // 2.098944 + 0.002000004 = 71.456448772; 2 ranks x 3 x 64 = 384 tokens.
  Job j = tiny_job(2);
  j.grad_accum = 3;
  const Prediction p = predict_step(j, unit_rates(), net(1e-3, 1e9));
  ASSERT_EQ(p.buckets.size(), 3u);
  EXPECT_NEAR(p.buckets[0].ready_s, 53.854208 + 1.14688, kTol);
  EXPECT_NEAR(p.grad_comm_s, 0.006233216, kTol);
  EXPECT_NEAR(p.step_s, 71.456448772, kTol);
  EXPECT_NEAR(p.tokens_per_s, 384 / 71.456448772, 1e-9);
  EXPECT_NEAR(p.one_gpu_step_s, 3 * kCompute + kAdam, kTol);
}

TEST(Predict, Zero1ReduceScattersAndAllGathers) {
  // ZeRO-1 on 2 ranks: align 32 keeps the cuts (58176, 8192, end 58304 are multiples of 32).
  // Ring reduce-scatter / all-gather: (p-1) alpha + (p-1)/p x bytes / busbw: b0 0.001000256,
  // b1 0.001099968, b2 0.001016384 (ends 23.118840384). The fp32 all-gather of the same
  // buckets: 0.003116608. AdamW on 29,152 owned: 29,152 x 32 + 58,304 x 4 = 1,166,080 B.
  // Scalars: loss and norm, 2 x 0.002000004.
  // Step = 23.118840384 + 1.16608 + 0.003116608 + 0.004000008 = 24.292037.
  Job j = tiny_job(2);
  j.dist.zero = 1;
  const Prediction p = predict_step(j, unit_rates(), net(1e-3, 1e9));
  EXPECT_NEAR(p.buckets[2].end_s, 23.118840384, kTol);
  EXPECT_NEAR(p.optimizer_s, 1.16608, kTol);
  EXPECT_NEAR(p.allgather_s, 0.003116608, kTol);
  EXPECT_NEAR(p.step_s, 24.292037, kTol);
  EXPECT_NEAR(p.exposed_comm_s, 0.001016384 + 0.003116608 + 0.004000008, kTol);
}

TEST(Predict, CollectiveFormulasAcrossNodes) {
  Network n;
  n.intra = Link{1e-6, 100e9};
  n.inter = Link{10e-6, 25e9};
  // Ring, 4 x 2 = 8 ranks: alpha = max = 1e-5, busbw = min = 25e9:
  // 14 x 1e-5 + 2 x 7/8 x 1e9 / 25e9 = 1.4e-4 + 0.07 = 0.07014.
  EXPECT_NEAR(collective_seconds(Collective::AllReduce, 1e9, 4, 2, n), 0.07014, 1e-12);
  // Reduce-scatter: 7 x 1e-5 + 7/8 x 1e9 / 25e9 = 7e-5 + 0.035 = 0.03507.
  EXPECT_NEAR(collective_seconds(Collective::ReduceScatter, 1e9, 4, 2, n), 0.03507, 1e-12);
  // One node of 4: 6 x 1e-6 + 1.5 x 1e9 / 100e9 = 6e-6 + 0.015.
  EXPECT_NEAR(collective_seconds(Collective::AllReduce, 1e9, 4, 1, n), 0.015006, 1e-12);
  // Tree, 4 x 2: 2 x (ceil(log2 2) x 1e-5 + 3 x 1e-6) + 2 x 1e9 / 25e9 = 2.6e-5 + 0.08.
  n.algo = Algo::Tree;
  EXPECT_NEAR(collective_seconds(Collective::AllReduce, 1e9, 4, 2, n), 0.080026, 1e-12);
  // Tree, 1 x 8 nodes: 2 x 3 x 1e-5 + 0.08 = 0.08006.
  EXPECT_NEAR(collective_seconds(Collective::AllReduce, 1e9, 1, 8, n), 0.08006, 1e-12);
  EXPECT_EQ(collective_seconds(Collective::AllReduce, 1e9, 1, 1, n), 0);
}

TEST(Predict, AlphaBetaFitRecoversKnownLink) {
  // Ring on 4 ranks of one node, alpha 5e-6, busbw 2e10: t = 3e-5 + 1.5 x bytes / 2e10.
  std::vector<CurvePoint> pts;
  for (double x : {8.0, 1024.0, 65536.0, 1e6, 3.2e7}) pts.push_back({x, 3e-5 + 1.5 * x / 2e10});
  const LinkFit f = fit_alpha_beta(pts, 4, 1, Algo::Ring);
  EXPECT_NEAR(f.link.alpha_s, 5e-6, 5e-6 * 1e-9);
  EXPECT_NEAR(f.link.busbw_Bps, 2e10, 2e10 * 1e-9);
  EXPECT_LT(f.max_rel_err, 1e-9);
  // Tree across 8 nodes, one rank each: t = 2 x 3 x alpha + 2 x bytes / busbw.
  pts.clear();
  for (double x : {8.0, 4096.0, 1e7}) pts.push_back({x, 6 * 2e-5 + 2 * x / 5e9});
  const LinkFit g = fit_alpha_beta(pts, 1, 8, Algo::Tree);
  EXPECT_NEAR(g.link.alpha_s, 2e-5, 2e-5 * 1e-9);
  EXPECT_NEAR(g.link.busbw_Bps, 5e9, 5e9 * 1e-9);
  // The fitted link predicts the points it came from.
  Network n;
  n.algo = Algo::Tree;
  n.inter = g.link;
  EXPECT_NEAR(collective_seconds(Collective::AllReduce, 1e7, 1, 8, n), pts[2].seconds, 1e-12);
}

TEST(Predict, AlphaBetaFitNoisyAndBadCurves) {
  // Measured 10% above and below a pure-bandwidth line: the weighted fit stays within 10%.
  std::vector<CurvePoint> pts = {{1e6, 1.1e-3}, {2e6, 1.8e-3}, {4e6, 4.4e-3}, {8e6, 7.2e-3}};
  const LinkFit f = fit_alpha_beta(pts, 2, 1, Algo::Ring);
  EXPECT_GE(f.link.alpha_s, 0);
  EXPECT_NEAR(f.link.busbw_Bps, 1e9, 0.1e9);  // 2(p-1)/p = 1: busbw = bytes per second
  EXPECT_GT(f.max_rel_err, 0.05);
  auto fit_error = [](const std::vector<CurvePoint>& p, int g, int n) -> std::string {
    try {
      fit_alpha_beta(p, g, n, Algo::Ring);
    } catch (const UserError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(fit_error({{1e6, 1e-3}, {1e6, 2e-3}}, 2, 1).find("different sizes"), std::string::npos);
  EXPECT_NE(fit_error({{1e3, 1e-3}, {1e6, 1e-4}}, 2, 1).find("allreduce curve"), std::string::npos);
  EXPECT_NE(fit_error({{1e3, 0}, {1e6, 1e-4}}, 2, 1).find("allreduce[0].seconds"), std::string::npos);
  EXPECT_NE(fit_error(pts, 1, 1).find("ranks"), std::string::npos);
}

TEST(Predict, BadInputsNameTheField) {
  const Rates r = unit_rates();
  Job j = tiny_job(2);
  EXPECT_NE(user_error(j, r, net(1e-3, 0)).find("network.intra.busbw_Bps"), std::string::npos);
  EXPECT_NE(user_error(j, r, net(-1, 1e9)).find("network.intra.alpha_s"), std::string::npos);
  j.ranks_per_node = 0;
  EXPECT_NE(user_error(j, r, net(1e-3, 1e9)).find("job.ranks_per_node"), std::string::npos);
  j = tiny_job(1);
  j.nodes = 2;
  Network n = net(1e-3, 1e9);
  n.inter.busbw_Bps = 0;
  EXPECT_NE(user_error(j, r, n).find("network.inter.busbw_Bps"), std::string::npos);
  j.nodes = 0;
  EXPECT_NE(user_error(j, r, n).find("job.nodes"), std::string::npos);
  j = tiny_job(1);
  j.seq_len = 65;
  EXPECT_NE(user_error(j, r, n).find("job.seq_len"), std::string::npos);
  j = tiny_job(1);
  Rates bad = r;
  bad.memory_gbps = 0;
  EXPECT_NE(user_error(j, bad, n).find("rates.memory_gbps"), std::string::npos);
  bad = r;
  bad.gemm.clear();
  EXPECT_NE(user_error(j, bad, n).find("rates.gemm"), std::string::npos);
  bad = r;
  bad.gemm[0].tflops = 0;
  EXPECT_NE(user_error(j, bad, n).find("rates.gemm[0].tflops"), std::string::npos);
  // One line.
  EXPECT_EQ(user_error(tiny_job(2), r, net(1e-3, 0)).find('\n'), std::string::npos);
}

// The table over node counts: each row is predict_step on that many nodes; time and cost to the
// budget are tokens / (tokens/s) and hours x GPUs x price.
TEST(PredictTable, RowsArePredictStepPerNodeCountWithTimeAndCost) {
  PlanSetup s;
  s.job = tiny_job(2);
  s.node_counts = {1, 2, 4};
  s.price_per_gpu_hour = 2.0;
  s.token_budget = 1e6;
  const Network n = net(1e-3, 1e6);
  const PlanTable t = plan_table(s, unit_rates(), n);
  ASSERT_EQ(t.rows.size(), 3u);
  for (const PlanRow& r : t.rows) {
    Job j = s.job;
    j.nodes = r.nodes;
    const Prediction p = predict_step(j, unit_rates(), n);
    EXPECT_EQ(r.gpus, 2 * r.nodes);
    EXPECT_TRUE(r.feasible);
    EXPECT_DOUBLE_EQ(r.p.step_s, p.step_s) << r.nodes;
    EXPECT_DOUBLE_EQ(r.p.tokens_per_s, 2.0 * r.nodes * 64 / p.step_s) << r.nodes;
    EXPECT_DOUBLE_EQ(r.hours, 1e6 / r.p.tokens_per_s / 3600) << r.nodes;
    EXPECT_DOUBLE_EQ(r.cost, r.hours * r.gpus * 2.0) << r.nodes;
  }
}

// A held global batch is split as the trainer splits it (split_global_batch); a GPU count it
// does not divide is a row that says so, not a prediction.
TEST(PredictTable, GlobalBatchSplitAsTheTrainerDoes) {
  PlanSetup s;
  s.job = tiny_job(2);
  s.job.micro_batch = 2;
  s.global_batch = 12;
  s.node_counts = {1, 2, 4};
  const PlanTable t = plan_table(s, unit_rates(), net(1e-3, 1e6));
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(t.rows[0].micro_batch, 2);  // 12 / 2 GPUs = 6 = 2 x 3
  EXPECT_EQ(t.rows[0].grad_accum, 3);
  EXPECT_EQ(t.rows[1].micro_batch, 1);  // 12 / 4 = 3: the largest micro batch <= 2 dividing 3 is 1
  EXPECT_EQ(t.rows[1].grad_accum, 3);
  EXPECT_FALSE(t.rows[2].feasible);     // 12 over 8 GPUs
  EXPECT_EQ(t.rows[2].note, "the global batch (12) does not divide over 8 GPUs");
  // The same tokens per step on every feasible row.
  EXPECT_NEAR(t.rows[0].p.tokens_per_s * t.rows[0].p.step_s, 12 * 64, 1e-6);
  EXPECT_NEAR(t.rows[1].p.tokens_per_s * t.rows[1].p.step_s, 12 * 64, 1e-6);
}

// The knee: free communication scales perfectly (every added node pays in full, the knee is the
// last row); a link so slow that a second node's all-reduce dwarfs the step puts it at 1.
TEST(PredictTable, KneeWhereAnAddedNodeStopsPaying) {
  PlanSetup s;
  s.job = tiny_job(1);
  s.node_counts = {1, 2, 4, 8};
  s.knee_fraction = 0.5;
  Network fast = net(0, 1e30);
  EXPECT_EQ(plan_table(s, unit_rates(), fast).knee_nodes, 8);
  Network slow = net(0, 1e30);
  slow.inter = Link{0, 1e3};  // 1 kB/s between nodes: 200 kB of gradients take minutes
  const PlanTable t = plan_table(s, unit_rates(), slow);
  EXPECT_EQ(t.knee_nodes, 1);
  EXPECT_LT(t.rows[1].p.tokens_per_s, 1.5 * t.rows[0].p.tokens_per_s);
  // In between: 0.5 s per hop across nodes (the ring's 2(p-1) hops per bucket grow with the
  // nodes). tokens/s 2.54, 4.54, 7.49, 11.09 at 1, 2, 4, 8 nodes: each added node adds 2.0, then
  // 1.47, then 0.90, against half a node's 1.27: the knee is at 4.
  Network mid = net(0, 1e30);
  mid.inter = Link{0.5, 1e30};
  const PlanTable m = plan_table(s, unit_rates(), mid);
  EXPECT_NEAR(m.rows[2].p.tokens_per_s, 7.49247, 1e-4);
  EXPECT_NEAR(m.rows[3].p.tokens_per_s, 11.09, 1e-2);
  EXPECT_EQ(m.knee_nodes, 4);
}
