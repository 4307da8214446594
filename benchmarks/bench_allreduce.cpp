// The all-reduce benchmark on host communicators (see bench_allreduce.h). Timing runs work on
// a copy of the integer inputs scaled by 2^-100 so repeated in-place sums stay finite and
// normal; the check runs on the integers themselves and compares exactly.
#include "benchmarks/bench_allreduce.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "runtime/error.h"

namespace lt::bench {

namespace {

// Element i of rank r: a small integer, different per rank and position, never all zero.
float input_value(int64_t i, int r) { return (float)(1 + (i * 7 + r * 3) % 13); }

float expected_value(int64_t i, int world, ReduceOp op) {
  float sum = 0, mx = -INFINITY, mn = INFINITY;
  for (int r = 0; r < world; r++) {
    const float v = input_value(i, r);
    sum += v;
    mx = std::max(mx, v);
    mn = std::min(mn, v);
  }
  switch (op) {
    case ReduceOp::Sum: return sum;
    case ReduceOp::Avg: return sum / (float)world;
    case ReduceOp::Max: return mx;
    case ReduceOp::Min: return mn;
  }
  return sum;
}

}  // namespace

ReduceOp parse_redop(const std::string& name) {
  if (name == "sum") return ReduceOp::Sum;
  if (name == "avg") return ReduceOp::Avg;
  if (name == "max") return ReduceOp::Max;
  if (name == "min") return ReduceOp::Min;
  throw UserError("-o: expected sum, avg, max or min, got '" + name + "'");
}

std::vector<int64_t> allreduce_sizes(const AllReduceArgs& a) {
  if (a.min_bytes < 1 || a.max_bytes < a.min_bytes)
    throw UserError("-b/-e: expected 1 <= minbytes <= maxbytes, got " + std::to_string(a.min_bytes) + " and " +
                    std::to_string(a.max_bytes));
  if (a.factor <= 1) throw UserError("-f: expected a step factor above 1, got " + std::to_string(a.factor));
  std::vector<int64_t> sizes;
  for (double b = (double)a.min_bytes; b <= (double)a.max_bytes * (1 + 1e-9); b *= a.factor) {
    const int64_t bytes = std::max<int64_t>(4, (int64_t)b / 4 * 4);
    if (sizes.empty() || sizes.back() != bytes) sizes.push_back(bytes);
  }
  return sizes;
}

std::vector<AllReduceRow> bench_allreduce(Communicator& comm, const AllReduceArgs& a) {
  const ReduceOp op = parse_redop(a.op);
  const int world = comm.world(), rank = comm.rank();
  std::vector<AllReduceRow> rows;
  comm.set_tag("bench allreduce");
  for (int64_t bytes : allreduce_sizes(a)) {
    const int64_t n = bytes / 4;
    Tensor buf = Tensor::empty(Device::CPU, DType::F32, {n});
    float* x = buf.f32();
    auto fill = [&](float scale) {
      for (int64_t i = 0; i < n; i++) x[i] = input_value(i, rank) * scale;
    };
    const float tiny = std::ldexp(1.f, -100);
    fill(tiny);
    for (int i = 0; i < a.warmup; i++) comm.all_reduce(buf, op)->wait();
    comm.barrier()->wait();
    double total_s = 0;
    for (int i = 0; i < a.iters; i++) {
      if (i % 16 == 15) fill(tiny);  // sums grow by `world` per iteration; refill (untimed)
      const auto t0 = std::chrono::steady_clock::now();
      comm.all_reduce(buf, op)->wait();
      total_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    AllReduceRow r;
    r.bytes = bytes;
    r.count = n;
    r.redop = a.op;
    // Like nccl-tests: the slowest rank's mean time defines the row.
    std::vector<float> t = {(float)(total_s / std::max(1, a.iters))};
    {
      Tensor tt = Tensor::empty(Device::CPU, DType::F32, {1});
      tt.f32()[0] = t[0];
      comm.all_reduce(tt, ReduceOp::Max)->wait();
      r.time_us = tt.f32()[0] * 1e6;
    }
    r.algbw = a.iters > 0 ? (double)bytes / (r.time_us * 1e-6) / 1e9 : 0;
    r.busbw = r.algbw * 2.0 * (world - 1) / world;
    int64_t wrong = 0;
    for (int c = 0; c < a.check; c++) {
      fill(1.f);
      comm.all_reduce(buf, op)->wait();
      for (int64_t i = 0; i < n; i++) wrong += x[i] != expected_value(i, world, op);
    }
    Tensor w = Tensor::empty(Device::CPU, DType::I32, {1});
    w.data<int32_t>()[0] = (int32_t)std::min<int64_t>(wrong, INT32_MAX / std::max(1, world));
    comm.all_reduce(w, ReduceOp::Sum)->wait();
    r.wrong = w.data<int32_t>()[0];
    rows.push_back(r);
  }
  return rows;
}

void print_allreduce_header(const std::string& backend, int world) {
  std::printf("# bench allreduce: %s backend, %d rank%s, in place, time = mean over -n iterations (slowest rank)\n",
              backend.c_str(), world, world == 1 ? "" : "s");
  std::printf("# busbw = algbw x 2(n-1)/n (nccl-tests doc/PERFORMANCE.md)\n");
  std::printf("%12s %12s %8s %6s %10s %9s %9s %8s\n", "size", "count", "type", "redop", "time(us)", "algbw",
              "busbw", "#wrong");
  std::printf("%12s %12s %8s %6s %10s %9s %9s %8s\n", "(B)", "(elements)", "", "", "", "(GB/s)", "(GB/s)", "");
}

void print_allreduce_row(const AllReduceRow& r) {
  std::printf("%12lld %12lld %8s %6s %10.2f %9.3f %9.3f %8lld\n", (long long)r.bytes, (long long)r.count,
              r.type.c_str(), r.redop.c_str(), r.time_us, r.algbw, r.busbw, (long long)r.wrong);
  std::fflush(stdout);
}

}  // namespace lt::bench
