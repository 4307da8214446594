// A CPU emulator for the kernels in kernels/cuda, so their index math, fragment layouts,
// pipelines and barriers can be tested on machines without a GPU (CI, most dev boxes).
// Force-included (-include) ahead of the kernel sources and tests/cuda/test_kernels_gpu.cu,
// which are compiled as plain C++ after tests/cuda/emulate.cmake rewrites each
// `kernel<<<grid, block, smem, stream>>>(args)` into `emu::Launcher(kernel, grid, ...)(args)`.
//
// What it models: every CUDA thread is an OS thread; the blocks of a launch run one after
// another (so `__shared__` can be a function-local static); __syncthreads is a block barrier;
// warp collectives (ldmatrix, mma.sync, shuffles) meet at a per-warp barrier whose completion
// step computes all 32 lanes' results from the PTX ISA's fragment layouts; cp.async copies are
// queued per thread and performed at cp.async.wait_group (the latest moment the ISA allows),
// so a read before the wait sees stale shared memory; dynamic shared memory starts as NaN
// bytes each block. The Hopper instructions of kernels/cuda/hopper.cuh (mbarrier, TMA, wgmma,
// setmaxnreg) are in emulator_hopper.h, included at the end. What it does not model: timing, memory-model races the barriers hide,
// tensor-core rounding (sums are plain fp32), bank conflicts. Passing here is evidence, not proof.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#define LT_CUDA_EMULATED_PTX 1

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#define __global__
#define __device__
#define __host__
#define __shared__ static  // one block runs at a time
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

namespace emu {

struct Copy {
  void* dst;
  const void* src;
  int src_bytes, size;
};

struct Warp;
struct Launch;
namespace hopper {
struct State;
}
// tests/cuda/emulator_hopper.h (included at the end): per-block Hopper state, each thread's end
// of block, and the in-flight-TMA check of shared-memory reads through the emulator.
inline void hopper_next_block(Launch& L);
inline void hopper_thread_exit();
inline void hopper_check_read(const void* p, size_t n);

struct ThreadCtx {
  uint3 tid{}, bid{};
  dim3 bdim, gdim;
  int lane = 0, warp = 0;
  Launch* launch = nullptr;
  std::vector<Copy> open;                 // issued, not yet committed
  std::deque<std::vector<Copy>> groups;   // committed, not yet waited for
};
inline thread_local ThreadCtx ctx;

inline void perform(const Copy& c) {
  if (c.src_bytes > 0) std::memcpy(c.dst, c.src, c.src_bytes);
  if (c.src_bytes < c.size) std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, c.size - c.src_bytes);
}

// ---- Warp collectives ---------------------------------------------------------------------------

struct Warp {
  enum Op { kNone, kLdm, kLdmT, kMma, kShfl };
  struct Done {
    Warp* w;
    void operator()() noexcept { w->complete(); }
  };
  Op op[32] = {};
  bool posted[32] = {};
  const unsigned char* addr[32] = {};
  uint32_t a[32][4] = {}, b[32][2] = {};
  float c[32][4] = {};
  uint64_t val[32] = {};
  int src[32] = {};
  uint32_t r[32][4] = {};
  float d[32][4] = {};
  uint64_t out[32] = {};
  std::optional<std::barrier<Done>> bar;

  void reset(int nthreads) {
    for (bool& p : posted) p = false;
    bar.emplace(nthreads, Done{this});
  }

  static float bf(uint32_t reg, int half) {
    __nv_bfloat16_raw raw;
    raw.x = half ? uint16_t(reg >> 16) : uint16_t(reg & 0xffff);
    return __bfloat162float(__nv_bfloat16(raw));
  }
  static uint16_t u16(const unsigned char* row, int i) {
    uint16_t v;
    std::memcpy(&v, row + 2 * i, 2);
    return v;
  }

  [[noreturn]] static void die(const char* what) {
    std::fprintf(stderr, "emulator: %s\n", what);
    std::abort();
  }

  void complete() {
    Op kind = kNone;
    int n = 0;
    for (int l = 0; l < 32; ++l)
      if (posted[l]) {
        if (kind != kNone && op[l] != kind) die("lanes of one warp reached different collectives");
        kind = op[l];
        ++n;
      }
    if ((kind == kLdm || kind == kLdmT || kind == kMma) && n != 32) die("ldmatrix/mma.sync with an incomplete warp");
    if (kind == kLdm || kind == kLdmT) {
      // Lanes 8i..8i+7 address the rows of matrix i; register i of lane l gets matrix i.
      for (int l = 0; l < 32; ++l)
        for (int i = 0; i < 4; ++i) {
          uint32_t lo, hi;
          if (kind == kLdm) {  // row l/4, columns 2(l%4), 2(l%4)+1
            const unsigned char* row = addr[8 * i + l / 4];
            lo = u16(row, 2 * (l % 4));
            hi = u16(row, 2 * (l % 4) + 1);
          } else {  // transposed: column l/4 of rows 2(l%4) and 2(l%4)+1
            lo = u16(addr[8 * i + 2 * (l % 4)], l / 4);
            hi = u16(addr[8 * i + 2 * (l % 4) + 1], l / 4);
          }
          r[l][i] = lo | (hi << 16);
        }
    } else if (kind == kMma) {
      // m16n8k16 .row.col fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16").
      float A[16][16], B[16][8];
      for (int l = 0; l < 32; ++l) {
        const int g = l / 4, t = l % 4;
        for (int h = 0; h < 2; ++h) {
          A[g][2 * t + h] = bf(a[l][0], h);
          A[g + 8][2 * t + h] = bf(a[l][1], h);
          A[g][2 * t + 8 + h] = bf(a[l][2], h);
          A[g + 8][2 * t + 8 + h] = bf(a[l][3], h);
          B[2 * t + h][g] = bf(b[l][0], h);
          B[2 * t + 8 + h][g] = bf(b[l][1], h);
        }
      }
      for (int l = 0; l < 32; ++l) {
        const int g = l / 4, t = l % 4;
        for (int j = 0; j < 4; ++j) {
          const int row = g + (j >> 1) * 8, col = 2 * t + (j & 1);
          float s = c[l][j];
          for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
          d[l][j] = s;
        }
      }
    } else if (kind == kShfl) {
      for (int l = 0; l < 32; ++l)
        if (posted[l]) out[l] = posted[src[l]] ? val[src[l]] : val[l];
    }
    for (bool& p : posted) p = false;
  }
};

// ---- Launch state -------------------------------------------------------------------------------

struct Launch {
  struct Between {
    Launch* L;
    void operator()() noexcept { L->next_block(); }
  };
  int nthreads = 0;
  size_t smem_bytes = 0;
  std::unique_ptr<unsigned char[], void (*)(void*)> smem{nullptr, std::free};
  // Dynamic shared memory: its host address is congruent to its emulated shared address
  // (emulator_hopper.h's kSharedBase = 0x480: 128- but not 1024-byte aligned) modulo 4096, so
  // aligning a generic pointer aligns the shared address as on a GPU.
  unsigned char* smem_base = nullptr;
  std::shared_ptr<hopper::State> hopper_state;
  std::optional<std::barrier<>> block_bar;
  std::vector<std::unique_ptr<Warp>> warps;
  std::optional<std::barrier<Between>> between;

  Launch(int nt, size_t smem_b) : nthreads(nt), smem_bytes(smem_b) {
    const size_t sz = std::max<size_t>(128, (smem_b + 127) / 128 * 128) + 4096;
    smem.reset(static_cast<unsigned char*>(std::aligned_alloc(4096, sz)));
    smem_base = smem.get() + 0x480;
    for (int w = 0; w < (nt + 31) / 32; ++w) warps.push_back(std::make_unique<Warp>());
    between.emplace(nt, Between{this});
    next_block();
  }
  // Runs when every thread has finished the current block: fresh barriers and NaN shared memory.
  void next_block() {
    block_bar.emplace(nthreads);
    for (size_t w = 0; w < warps.size(); ++w) warps[w]->reset(std::min(32, nthreads - int(w) * 32));
    std::memset(smem_base, 0xFF, smem_bytes);
    hopper_next_block(*this);
  }
};

inline unsigned char* dyn_smem() { return ctx.launch->smem_base; }

template <class... P>
struct Launcher {
  void (*fn)(P...);
  dim3 grid, block;
  size_t smem;
  Launcher(void (*f)(P...), dim3 g, dim3 b, size_t s = 0, cudaStream_t = nullptr) : fn(f), grid(g), block(b), smem(s) {}

  template <class... A>
  void operator()(A&&... args) {
    const int nt = int(block.x * block.y * block.z);
    if (nt < 1 || nt > 1024) throw std::runtime_error("emulator: bad block size");
    Launch L(nt, smem);
    std::function<void()> body = [f = fn, ... a = P(args)]() { f(a...); };
    const dim3 grid_ = grid, block_ = block;
    auto worker = [&](int t) {
      for (unsigned z = 0; z < grid_.z; ++z)
        for (unsigned y = 0; y < grid_.y; ++y)
          for (unsigned x = 0; x < grid_.x; ++x) {
            ctx = ThreadCtx{};
            ctx.tid = make_uint3(t % block_.x, (t / block_.x) % block_.y, t / (block_.x * block_.y));
            ctx.bid = make_uint3(x, y, z);
            ctx.bdim = block_;
            ctx.gdim = grid_;
            ctx.lane = t % 32;
            ctx.warp = t / 32;
            ctx.launch = &L;
            body();
            while (!ctx.groups.empty()) {  // never waited for: still lands eventually
              for (const Copy& c : ctx.groups.front()) perform(c);
              ctx.groups.pop_front();
            }
            for (const Copy& c : ctx.open) perform(c);
            hopper_thread_exit();
            L.block_bar->arrive_and_drop();
            L.warps[t / 32]->bar->arrive_and_drop();
            L.between->arrive_and_wait();
          }
    };
    std::vector<std::thread> threads;
    threads.reserve(nt);
    for (int t = 0; t < nt; ++t) threads.emplace_back(worker, t);
    for (auto& th : threads) th.join();
  }
};

// ---- Device built-ins ---------------------------------------------------------------------------

inline Warp& my_warp() { return *ctx.launch->warps[ctx.warp]; }

}  // namespace emu

#define threadIdx (::emu::ctx.tid)
#define blockIdx (::emu::ctx.bid)
#define blockDim (::emu::ctx.bdim)
#define gridDim (::emu::ctx.gdim)

inline void __syncthreads() { emu::ctx.launch->block_bar->arrive_and_wait(); }

template <class T>
T __shfl_xor_sync(unsigned, T v, int lane_mask) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  emu::Warp& w = emu::my_warp();
  const int l = emu::ctx.lane;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  w.op[l] = emu::Warp::kShfl;
  w.val[l] = bits;
  w.src[l] = l ^ lane_mask;
  w.posted[l] = true;
  w.bar->arrive_and_wait();
  T r;
  std::memcpy(&r, &w.out[l], sizeof(T));
  return r;
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

namespace lt::cuda {

inline void cp_async_16(void* sdst, const void* gsrc, int src_bytes) {
  emu::ctx.open.push_back({sdst, gsrc, src_bytes, 16});
}
inline void cp_async_4(void* sdst, const void* gsrc, int src_bytes) {
  emu::ctx.open.push_back({sdst, gsrc, src_bytes, 4});
}
inline void cp_async_commit() {
  emu::ctx.groups.push_back(std::move(emu::ctx.open));
  emu::ctx.open.clear();
}
template <int N>
inline void cp_async_wait() {
  while ((int)emu::ctx.groups.size() > N) {
    for (const emu::Copy& c : emu::ctx.groups.front()) emu::perform(c);
    emu::ctx.groups.pop_front();
  }
}

inline void emu_ldmatrix(uint32_t (&r)[4], const void* row, emu::Warp::Op op) {
  emu::Warp& w = emu::my_warp();
  const int l = emu::ctx.lane;
  emu::hopper_check_read(row, 16);
  w.op[l] = op;
  w.addr[l] = static_cast<const unsigned char*>(row);
  w.posted[l] = true;
  w.bar->arrive_and_wait();
  for (int i = 0; i < 4; ++i) r[i] = w.r[l][i];
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) { emu_ldmatrix(r, row, emu::Warp::kLdm); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) { emu_ldmatrix(r, row, emu::Warp::kLdmT); }

inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  emu::Warp& w = emu::my_warp();
  const int l = emu::ctx.lane;
  w.op[l] = emu::Warp::kMma;
  for (int i = 0; i < 4; ++i) w.a[l][i] = a[i], w.c[l][i] = d[i];
  w.b[l][0] = b0;
  w.b[l][1] = b1;
  w.posted[l] = true;
  w.bar->arrive_and_wait();
  for (int i = 0; i < 4; ++i) d[i] = w.d[l][i];
}

}  // namespace lt::cuda

// ---- Runtime API on host memory -----------------------------------------------------------------

namespace emu {
inline cudaError_t malloc_(void** p, size_t n) {
  *p = std::aligned_alloc(256, std::max<size_t>(256, (n + 255) / 256 * 256));
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t free_(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t memset_(void* p, int v, size_t n) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t memcpy_(void* d, const void* s, size_t n) {
  std::memcpy(d, s, n);
  return cudaSuccess;
}
inline cudaError_t device_count_(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t ok_() { return cudaSuccess; }
// Every event has completed, unless a test double says otherwise (tests/cuda/fake_nccl.cpp
// keeps a "stuck" collective's event pending until its communicator is aborted).
inline cudaError_t (*event_query_hook)() = nullptr;
inline cudaError_t event_query_() { return event_query_hook ? event_query_hook() : cudaSuccess; }
inline cudaError_t malloc_host_(void** p, size_t n) { return malloc_(p, n); }
inline cudaError_t set_null_(void* handle_ptr) {  // streams, events: any handle will do
  std::memset(handle_ptr, 0, sizeof(void*));
  return cudaSuccess;
}
inline cudaError_t version_(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t device_(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t props_(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "CPU emulator");
  p->major = 8;
  p->minor = 0;
  p->multiProcessorCount = 1;
  p->totalGlobalMem = size_t(1) << 30;
  p->l2CacheSize = 1 << 20;
  return cudaSuccess;
}
inline cudaError_t attribute_(int* v) {
  *v = 1000000;
  return cudaSuccess;
}
inline cublasStatus_t cublas_create_(cublasHandle_t* h) {
  *h = nullptr;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublas_ok_() { return CUBLAS_STATUS_SUCCESS; }
}  // namespace emu

#define cudaMalloc(p, n) ::emu::malloc_(reinterpret_cast<void**>(p), (n))
#define cudaFree(p) ::emu::free_(p)
#define cudaMemset(p, v, n) ::emu::memset_((p), (v), (n))
#define cudaMemcpy(d, s, n, kind) ::emu::memcpy_((d), (s), (n))
#define cudaDeviceSynchronize() ::emu::ok_()
#define cudaGetLastError() ::emu::ok_()
#define cudaGetDeviceCount(n) ::emu::device_count_(n)
#define cudaSetDevice(d) ::emu::ok_()
#define cudaFuncSetAttribute(...) ::emu::ok_()
// The runtime calls the CUDA backend (runtime/cuda_backend.cpp) makes: kernels run when they
// are launched, so every stream and event is already complete.
#define cudaMemcpyAsync(d, s, n, kind, stream) ::emu::memcpy_((d), (s), (n))
#define cudaMemsetAsync(p, v, n, stream) ::emu::memset_((p), (v), (n))
#define cudaMallocHost(p, n) ::emu::malloc_host_(reinterpret_cast<void**>(p), (n))
#define cudaFreeHost(p) ::emu::free_(p)
#define cudaStreamCreate(s) ::emu::set_null_(s)
#define cudaStreamCreateWithFlags(s, f) ::emu::set_null_(s)
#define cudaStreamSynchronize(s) ::emu::ok_()
#define cudaStreamDestroy(s) ::emu::ok_()
#define cudaEventCreate(e, ...) ::emu::set_null_(e)
#define cudaEventCreateWithFlags(e, f) ::emu::set_null_(e)
#define cudaEventRecord(e, s) ::emu::ok_()
#define cudaEventSynchronize(e) ::emu::ok_()
#define cudaEventQuery(e) ::emu::event_query_()
#define cudaEventElapsedTime(ms, a, b) (*(ms) = 0.f, cudaSuccess)
#define cudaStreamWaitEvent(s, e, f) ::emu::ok_()
#define cudaEventDestroy(e) ::emu::ok_()
#define cudaDriverGetVersion(v) ::emu::version_(v)
#define cudaRuntimeGetVersion(v) ::emu::version_(v)
#define cudaGetDevice(d) ::emu::device_(d)
#define cudaGetDeviceProperties(p, d) ::emu::props_((p), (d))
#define cudaDeviceGetAttribute(v, attr, d) ::emu::attribute_(v)
#define cudaGetErrorString(e) "(emulated CUDA error)"
#undef cublasCreate
#undef cublasDestroy
#define cublasCreate(h) ::emu::cublas_create_(h)
#define cublasDestroy(h) ::emu::cublas_ok_()

#include "emulator_hopper.h"
