// The Hopper (sm_90a) instructions of kernels/cuda/hopper.cuh on the CPU emulator: shared-window
// addresses, mbarrier with transaction counts, the tensor copy engine (cp.async.bulk.tensor.2d
// through an emulated cuTensorMapEncodeTiled), wgmma.mma_async with shared-memory matrix
// descriptors, and setmaxnreg. Included at the end of tests/cuda/emulator.h.
//
// Modelled from the PTX ISA text (8.x; section names below), not from any kernel of ours. The
// emulator exists to catch kernel bugs, so it is strict: every rule it checks ends the process
// with one "emulator: ..." line (death tests match it), and asynchronous work happens as LATE as
// the ISA allows:
//   - a TMA copy lands only when some thread waits (try_wait) on the barrier it completes, or at
//     block end, so a consumer that reads a stage without waiting sees stale shared memory, and
//     a wgmma or ldmatrix over bytes of an unlanded copy dies;
//   - a wgmma reads its shared-memory operands and does its math at the wgmma.wait_group that
//     retires it; the operands are snapshot at issue and compared then, so a producer that
//     overwrote a stage still being read dies; a TMA issued into a region an in-flight wgmma
//     reads dies at once.
// The shared window of dynamic shared memory starts at kSharedBase = 0x480: 128-byte aligned but
// not 1024-byte aligned (real dynamic shared memory promises no more than 16 bytes), and swizzles
// are computed from absolute shared addresses as the hardware does, so a kernel that does not
// align its swizzled tiles gets wrong numbers or dies, as on a GPU. The host copy of the window
// has the same address bits modulo 4096 (emulator.h places it so), so rounding a generic
// pointer up to 1024 aligns the shared address too.
// Not modelled: clusters and multicast, TMA stores, tensor maps of rank other than 2, interleave
// or element strides, the generic->async proxy ordering of plain shared-memory writes that a
// wgmma then reads (fence.proxy.async is checked only for mbarrier.init), timing, tensor-core
// rounding (sums are plain fp32 in k order).
#pragma once
#include <cuda.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <string>
#include <mutex>

#undef __grid_constant__
#define __grid_constant__

[[noreturn]] inline void __trap() { emu::Warp::die("__trap() executed"); }

namespace emu::hopper {

constexpr uint32_t kSharedBase = 0x480;  // shared address of dynamic shared memory's byte 0
// A try_wait that sees no mbarrier progress in the block for this long ends the process.
inline double deadlock_seconds = 15.0;

[[noreturn]] inline void die(const std::string& what) { Warp::die(what.c_str()); }

// ---- Shared window ------------------------------------------------------------------------------

inline uint32_t to_shared(const void* p) {
  const unsigned char* base = ctx.launch->smem_base;
  const unsigned char* c = static_cast<const unsigned char*>(p);
  if (c < base || c >= base + std::max<size_t>(ctx.launch->smem_bytes, 1))
    die("smem_u32 of a pointer outside the block's dynamic shared memory (static __shared__ and global "
        "memory have no place in the emulated shared window)");
  return kSharedBase + uint32_t(c - base);
}
inline unsigned char* from_shared(uint32_t addr, size_t bytes, const char* who) {
  if (addr < kSharedBase || addr - kSharedBase + bytes > ctx.launch->smem_bytes) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s: shared address 0x%x (+%zu bytes) outside dynamic shared memory [0x%x, 0x%zx)",
                  who, addr, bytes, kSharedBase, kSharedBase + ctx.launch->smem_bytes);
    die(buf);
  }
  return ctx.launch->smem_base + (addr - kSharedBase);
}

// Swizzle<B,4,3> of the PTX ISA ("Shared Memory Matrix Layout", canonical layouts) and of the
// CUDA driver's CU_TENSOR_MAP_SWIZZLE_{32,64,128}B, on a byte address: the 16-byte chunk index
// (bits 4..4+B-1) XOR the address bits 7..7+B-1. B = log2(span / 16): 1 (32B), 2 (64B), 3 (128B).
inline uint32_t swizzle_addr(uint32_t addr, uint32_t span_bytes) {
  if (span_bytes <= 16) return addr;
  const uint32_t mask = span_bytes / 16 - 1;
  return addr ^ (((addr >> 7) & mask) << 4);
}

// ---- Block state --------------------------------------------------------------------------------

struct Barrier {
  uint32_t count = 0, pending = 0;
  int64_t tx = 0;
  uint64_t phase = 0;  // completed phases; the current phase's parity is phase & 1
  int init_thread = -1;
  bool fenced = false;
};

struct TensorMapData {  // what our cuTensorMapEncodeTiled writes into CUtensorMap's 128 bytes
  static constexpr uint64_t kMagic = 0x4c54454d55544d32ull;  // "LTEMUTM2"
  uint64_t magic;
  const unsigned char* base;
  uint64_t dim[2];     // elements, innermost first
  uint64_t stride1;    // bytes between rows
  uint32_t box[2];     // elements, innermost first
  uint32_t elem_bytes;
  uint32_t swizzle_span;  // 0 (none), 32, 64, 128
  uint32_t nan_fill;
};
static_assert(sizeof(TensorMapData) <= sizeof(CUtensorMap));

struct Copy {  // one cp.async.bulk.tensor in flight
  TensorMapData map;
  uint32_t dst, bar, lo, hi;  // [lo, hi): the shared bytes it writes
  int x, y;
  uint64_t seq;
};

struct Mma {  // one wgmma.mma_async in flight
  int n, trans_a, trans_b, scale_d;
  bool rs;
  uint64_t desc_a, desc_b;
  uint32_t a_regs[128][4];
  float* d[128];
  std::vector<float> d_in[128];   // accumulators at issue
  bool chained = false;           // accumulates onto an earlier in-flight wgmma's registers
  std::vector<uint32_t> addrs;    // shared addresses of the operand elements (A if ss, then B)
  std::vector<uint16_t> snap;     // their values at issue
  uint32_t lo = ~0u, hi = 0;      // the byte range they span
};

struct Warpgroup {
  enum Op { kNone, kFence, kMma, kCommit, kWait, kRegs };
  struct Done {
    Warpgroup* w;
    void operator()() noexcept { w->complete(); }
  };
  struct Slot {
    Op op = kNone;
    int n = 0, ta = 0, tb = 0, scale_d = 0, arg = 0;
    bool rs = false, inc = false;
    uint64_t da = 0, db = 0;
    uint32_t a[4] = {};
    float* d = nullptr;
  };
  int index = 0, size = 0;
  Slot slot[128];
  bool posted[128] = {};
  bool fenced[128] = {};
  std::optional<std::barrier<Done>> bar;
  std::vector<std::unique_ptr<Mma>> open;                 // issued, not committed
  std::deque<std::vector<std::unique_ptr<Mma>>> groups;   // committed, not retired
  void complete();
};

struct State {
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint32_t, Barrier> bars;
  std::vector<Copy> copies;
  std::atomic<int> ncopies{0};
  uint64_t seq = 0;
  std::chrono::steady_clock::time_point progress = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<Warpgroup>> wgs;
  std::vector<const Mma*> reading;  // in-flight wgmmas (under mu)
};

inline State& state() { return *ctx.launch->hopper_state; }
inline int thread_index() { return ctx.warp * 32 + ctx.lane; }

// ---- Descriptor decode (PTX ISA "Matrix Descriptor Format", "Shared Memory Matrix Layout") -------

struct Desc {
  uint32_t start, lbo, sbo, base_offset, span;  // span: swizzle bytes, 0 = none
};
inline Desc decode(uint64_t d) {
  Desc r;
  r.start = uint32_t(d & 0x3FFF) << 4;
  r.lbo = uint32_t((d >> 16) & 0x3FFF) << 4;
  r.sbo = uint32_t((d >> 32) & 0x3FFF) << 4;
  r.base_offset = uint32_t((d >> 49) & 7);
  static constexpr uint32_t kSpan[4] = {0, 128, 64, 32};  // bits 62-63: 0 none, 1 128B, 2 64B, 3 32B
  r.span = kSpan[d >> 62];
  return r;
}

// The shared address of element (mn, k) (mn: the M row of A or N column of B, k < 16) of a bf16
// operand, trans = 0: K-major, 1: MN-major. The canonical layouts of the ISA ("Canonical
// Layouts", T = 8 bf16 = 16 bytes, strides below in bytes, W = span / 16):
//   K-major,  none:     ((8,m),(T,2k)) : ((16, SBO), (2, LBO))      core matrix 8 rows x 16 B
//   K-major,  swizzled: ((8,m),(T,2k)) : ((span, SBO), (2, 16))     LBO unused ("assumed 1")
//   MN-major, none:     ((T,1,m),(8,k)) : ((2, -, SBO), (16, LBO))
//   MN-major, swizzled: ((T,W,m),(8,k)) : ((2, 16, LBO), (span, SBO))
// (the ISA's prose says the same: MN-major LBO is "offset from the first (swizzle-byte-size/16)
// rows to the next" when swizzled, "from the first 8 columns to the next 8" when interleaved; SBO
// "from the first 8 columns to the next 8" when swizzled, "from the first row to the next" when
// interleaved, rows being 16-byte MN chunks and columns k in its 128-bit-normalised picture),
// so for MN-major the roles swap with the swizzle: without one SBO steps 8 MN and LBO steps 8 k;
// with one LBO steps (span/2) MN elements (the next swizzle-atom column) and SBO steps 8 k. This
// agrees with the ISA's worked examples (MN-major 32B/64B bf16: LBO = the atom's bytes, SBO = 2
// atoms) and with hopper.cuh's comment (128B MN-major: SBO = 1024 per 8 k, LBO between 64-wide
// boxes). The swizzle is applied to the absolute address (start + offset): the ISA's
// "Swizzle<B,4,3> o smem_ptr o layout". Matrix base offset (bits 49-51): our descriptors never
// set it (make_smem_desc writes 0, which the ISA ties to a pattern starting on the span*8
// boundary); a nonzero one is not modelled and dies.
inline uint32_t operand_addr(const Desc& d, int trans, int mn, int k) {
  uint32_t off;
  if (d.span == 0) {
    if (trans == 0)
      off = (mn % 8) * 16 + (mn / 8) * d.sbo + (k % 8) * 2 + (k / 8) * d.lbo;
    else
      off = (mn % 8) * 2 + (mn / 8) * d.sbo + (k % 8) * 16 + (k / 8) * d.lbo;
  } else {
    const uint32_t per_row = d.span / 2;  // bf16 elements per swizzle row
    if (trans == 0)
      off = (mn % 8) * d.span + (mn / 8) * d.sbo + k * 2;
    else
      off = (mn % per_row) * 2 + (mn / per_row) * d.lbo + (k % 8) * d.span + (k / 8) * d.sbo;
  }
  return swizzle_addr(d.start + off, d.span);
}
// For tests: decode + address in one call.
inline uint32_t descriptor_element_address(uint64_t desc, int trans, int mn, int k) {
  return operand_addr(decode(desc), trans, mn, k);
}

inline float bf16_to_float(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t load16(uint32_t addr) {
  uint16_t v;
  std::memcpy(&v, from_shared(addr, 2, "wgmma operand"), 2);
  return v;
}

// Bytes of [lo, hi) that an unlanded TMA copy writes (under mu).
inline const Copy* copy_over(State& s, uint32_t lo, uint32_t hi) {
  for (const Copy& c : s.copies)
    if (c.lo < hi && lo < c.hi) return &c;
  return nullptr;
}

// ---- mbarrier (PTX ISA "Parallel Synchronization and Communication Instructions: mbarrier") -----

inline Barrier& bar_at(State& s, uint32_t addr, const char* op) {
  auto it = s.bars.find(addr);
  if (it == s.bars.end()) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s on mbarrier 0x%x before mbarrier.init", op, addr);
    die(buf);
  }
  return it->second;
}
inline void touch(State& s) {
  s.progress = std::chrono::steady_clock::now();
  s.cv.notify_all();
}
// A phase completes when its pending arrivals and its tx-count are both zero: the phase flips and
// the pending count is reset to the init count.
inline void maybe_complete(State& s, Barrier& b) {
  if (b.pending == 0 && b.tx == 0) {
    ++b.phase;
    b.pending = b.count;
  }
  touch(s);
}
inline void arrive_locked(State& s, uint32_t addr, uint32_t expect_tx) {
  Barrier& b = bar_at(s, addr, expect_tx ? "mbarrier.arrive.expect_tx" : "mbarrier.arrive");
  // expect-tx first (it is performed before the arrive-on operation), then the arrival.
  b.tx += expect_tx;
  if (b.tx >= (int64_t(1) << 20)) die("mbarrier tx-count above 2^20-1 (expect_tx too large)");
  if (b.pending == 0)
    die("mbarrier.arrive with no pending arrivals in the current phase (phase overrun: more arrivals than "
        "the init count before the phase's transactions completed)");
  --b.pending;
  maybe_complete(s, b);
}
// complete_tx by the copy engine. The ISA lets the tx-count go transiently negative; here the
// copies land only when a thread waits on the barrier, after its producer's arrive.expect_tx in
// any kernel of ours, so a negative count means more bytes landed than were expected.
inline void complete_tx_locked(State& s, uint32_t addr, uint32_t bytes) {
  Barrier& b = bar_at(s, addr, "complete_tx");
  if (!b.fenced) die("mbarrier.init not fenced before the async proxy used it (fence_mbarrier_init / fence_proxy_async)");
  b.tx -= bytes;
  if (b.tx < 0)
    die("mbarrier tx-count underflow: a TMA copy completed more bytes than arrive.expect_tx announced");
  maybe_complete(s, b);
}

// ---- TMA ----------------------------------------------------------------------------------------

// Writes the box (zero-filling what lies outside the tensor) in the swizzled layout: box rows of
// box[0] * elem_bytes bytes one after another from dst, each byte address then swizzled (CUDA
// driver API, CUtensorMapSwizzle; the pattern is computed on the absolute shared address).
inline void land_locked(State& s, const Copy& c) {
  const TensorMapData& m = c.map;
  const uint32_t row_bytes = m.box[0] * m.elem_bytes;
  for (uint32_t r = 0; r < m.box[1]; ++r) {
    const int64_t gy = int64_t(c.y) + r;
    for (uint32_t e = 0; e < m.box[0]; ++e) {
      const int64_t gx = int64_t(c.x) + e;
      const uint32_t addr = swizzle_addr(c.dst + r * row_bytes + e * m.elem_bytes, m.swizzle_span);
      unsigned char* out = from_shared(addr, m.elem_bytes, "TMA copy");
      if (gx >= 0 && gy >= 0 && uint64_t(gx) < m.dim[0] && uint64_t(gy) < m.dim[1])
        std::memcpy(out, m.base + uint64_t(gy) * m.stride1 + uint64_t(gx) * m.elem_bytes, m.elem_bytes);
      else if (m.nan_fill && m.elem_bytes == 2)
        out[0] = 0xFF, out[1] = 0x7F;
      else if (m.nan_fill && m.elem_bytes == 4)
        std::memcpy(out, "\x00\x00\xC0\x7F", 4);
      else
        std::memset(out, 0, m.elem_bytes);
    }
  }
  complete_tx_locked(s, c.bar, m.box[0] * m.box[1] * m.elem_bytes);
}
// Lands the copies that complete_tx on `bar` (all when bar == 0), in issue order.
inline void land_for(State& s, uint32_t bar) {
  std::vector<Copy> keep, go;
  for (Copy& c : s.copies) (bar == 0 || c.bar == bar ? go : keep).push_back(c);
  s.copies = std::move(keep);
  s.ncopies = int(s.copies.size());
  for (const Copy& c : go) land_locked(s, c);
}

// ---- wgmma --------------------------------------------------------------------------------------

inline void retire(State& s, Mma& op) {
  // The operands as they are now, at the latest moment the ISA lets the hardware read them.
  std::vector<uint16_t> now(op.addrs.size());
  for (size_t i = 0; i < op.addrs.size(); ++i) now[i] = load16(op.addrs[i]);
  if (now != op.snap)
    die("a wgmma operand in shared memory changed between the wgmma and the wait_group that retires it "
        "(producer overwrote a stage still being read?)");
  float A[64][16], B[16][256];
  size_t i = 0;
  if (!op.rs) {
    for (int m = 0; m < 64; ++m)
      for (int k = 0; k < 16; ++k) A[m][k] = bf16_to_float(now[i++]);
  } else {
    // Register A (ISA figure "WGMMA .m64nNk16 register fragment layout for matrix A"): warp w of
    // the warpgroup holds rows 16w..16w+15 as mma.m16n8k16's A fragment.
    for (int t = 0; t < 128; ++t) {
      const int w = t / 32, g = (t % 32) / 4, q = t % 4;
      for (int h = 0; h < 2; ++h) {
        auto half = [&](uint32_t r) { return bf16_to_float(uint16_t(h ? r >> 16 : r & 0xFFFF)); };
        A[16 * w + g][2 * q + h] = half(op.a_regs[t][0]);
        A[16 * w + g + 8][2 * q + h] = half(op.a_regs[t][1]);
        A[16 * w + g][2 * q + 8 + h] = half(op.a_regs[t][2]);
        A[16 * w + g + 8][2 * q + 8 + h] = half(op.a_regs[t][3]);
      }
    }
  }
  for (int n = 0; n < op.n; ++n)
    for (int k = 0; k < 16; ++k) B[k][n] = bf16_to_float(now[i++]);
  // Accumulator (ISA figure "WGMMA .m64nNk16 register fragment layout for accumulator matrix D"):
  // thread t = 32w + 4g + q holds d[4j + 2h + v] = D[16w + g + 8h][8j + 2q + v].
  for (int t = 0; t < 128; ++t) {
    const int w = t / 32, g = (t % 32) / 4, q = t % 4;
    float* d = op.d[t];
    if (!op.chained && std::memcmp(d, op.d_in[t].data(), sizeof(float) * op.n / 2) != 0)
      die("wgmma accumulator registers were changed between the wgmma and the wait_group that retires it");
    for (int r = 0; r < op.n / 2; ++r) {
      const int j = r / 4, h = (r / 2) % 2, v = r % 2;
      const int row = 16 * w + g + 8 * h, col = 8 * j + 2 * q + v;
      float acc = op.scale_d ? d[r] : 0.f;
      for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
      d[r] = acc;
    }
  }
  for (size_t j = 0; j < s.reading.size(); ++j)
    if (s.reading[j] == &op) {
      s.reading.erase(s.reading.begin() + long(j));
      break;
    }
}

inline void issue(State& s, Warpgroup& wg) {
  const Warpgroup::Slot& z = wg.slot[0];
  auto op = std::make_unique<Mma>();
  op->n = z.n, op->trans_a = z.ta, op->trans_b = z.tb, op->scale_d = z.scale_d, op->rs = z.rs;
  op->desc_a = z.da, op->desc_b = z.db;
  const Desc da = decode(z.da), db = decode(z.db);
  if ((!z.rs && da.base_offset) || db.base_offset)
    die("wgmma descriptor with a nonzero matrix base offset (not modelled; make_smem_desc writes 0)");
  if (!z.rs)
    for (int m = 0; m < 64; ++m)
      for (int k = 0; k < 16; ++k) op->addrs.push_back(operand_addr(da, z.ta, m, k));
  for (int n = 0; n < z.n; ++n)
    for (int k = 0; k < 16; ++k) op->addrs.push_back(operand_addr(db, z.tb, n, k));
  for (uint32_t a : op->addrs) {
    op->lo = std::min(op->lo, a);
    op->hi = std::max(op->hi, a + 2);
    op->snap.push_back(load16(a));
  }
  if (s.ncopies.load())
    for (uint32_t a : op->addrs)
      if (copy_over(s, a, a + 2)) {
        char buf[200];
        std::snprintf(buf, sizeof buf,
                      "wgmma reads shared address 0x%x while a TMA copy into it is still in flight (the consumer "
                      "did not wait on the stage's full barrier, or waited on the wrong phase)",
                      a);
        die(buf);
      }
  // Chained when an in-flight wgmma of this warpgroup writes the same accumulator registers.
  auto same_d = [&](const std::unique_ptr<Mma>& o) { return o->d[0] == z.d; };
  for (auto& g : wg.groups)
    for (auto& o : g) op->chained |= same_d(o);
  for (auto& o : wg.open) op->chained |= same_d(o);
  for (int t = 0; t < 128; ++t) {
    op->d[t] = wg.slot[t].d;
    op->d_in[t].assign(wg.slot[t].d, wg.slot[t].d + z.n / 2);
    std::memcpy(op->a_regs[t], wg.slot[t].a, sizeof op->a_regs[t]);
  }
  s.reading.push_back(op.get());
  wg.open.push_back(std::move(op));
}

inline void Warpgroup::complete() {
  Op kind = kNone;
  int n = 0, first = -1;
  for (int l = 0; l < 128; ++l)
    if (posted[l]) {
      if (kind != kNone && slot[l].op != kind) die("threads of one warpgroup reached different wgmma/setmaxnreg instructions");
      kind = slot[l].op;
      if (first < 0) first = l;
      ++n;
    }
  if (kind == kNone) return;
  if (n != 128)
    die("a warpgroup instruction (wgmma.*, setmaxnreg) executed by an incomplete warpgroup (every thread of warps "
        "4k..4k+3 must execute it; some exited or the block has fewer threads)");
  const Slot& z = slot[first];
  for (int l = 0; l < 128; ++l) {
    const Slot& o = slot[l];
    if (o.n != z.n || o.ta != z.ta || o.tb != z.tb || o.scale_d != z.scale_d || o.arg != z.arg || o.rs != z.rs ||
        o.inc != z.inc || (kind == kMma && (o.da != z.da || o.db != z.db)))
      die("threads of one warpgroup passed different operands to the same wgmma/setmaxnreg (they must be uniform)");
  }
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  switch (kind) {
    case kFence:
      for (bool& f : fenced) f = true;
      break;
    case kMma:
      for (int l = 0; l < 128; ++l)
        if (!fenced[l])
          die("wgmma without wgmma.fence (the emulator wants a wgmma_fence by every thread since its last "
              "wgmma_wait before the next wgmma: stricter than the ISA, which needs it before the first wgmma "
              "and after any register access to the accumulators or A fragment)");
      issue(s, *this);
      break;
    case kCommit:
      groups.push_back(std::move(open));
      open.clear();
      break;
    case kWait:
      while (int(groups.size()) > z.arg) {
        for (auto& op : groups.front()) retire(s, *op);
        groups.pop_front();
      }
      for (bool& f : fenced) f = false;
      break;
    case kRegs:
      if (z.arg < 24 || z.arg > 256 || z.arg % 8)
        die("setmaxnreg count must be a multiple of 8 in 24..256");
      break;
    default:
      break;
  }
  for (bool& p : posted) p = false;
}

inline void post(Warpgroup::Slot sl) {
  Warpgroup& wg = *state().wgs[ctx.warp / 4];
  const int l = (ctx.warp % 4) * 32 + ctx.lane;
  wg.slot[l] = sl;
  wg.posted[l] = true;
  wg.bar->arrive_and_wait();
}

}  // namespace emu::hopper

namespace emu {
inline void hopper_next_block(Launch& L) {
  if (!L.hopper_state) L.hopper_state = std::make_shared<hopper::State>();
  hopper::State& s = *L.hopper_state;
  s.bars.clear();
  s.copies.clear();
  s.ncopies = 0;
  s.reading.clear();
  s.progress = std::chrono::steady_clock::now();
  const int nwg = (L.nthreads + 127) / 128;
  if (int(s.wgs.size()) != nwg) {
    s.wgs.clear();
    for (int w = 0; w < nwg; ++w) s.wgs.push_back(std::make_unique<hopper::Warpgroup>());
  }
  for (int w = 0; w < nwg; ++w) {
    hopper::Warpgroup& wg = *s.wgs[w];
    wg.index = w;
    wg.size = std::min(128, L.nthreads - 128 * w);
    for (bool& p : wg.posted) p = false;
    for (bool& f : wg.fenced) f = false;
    wg.open.clear();
    wg.groups.clear();
    wg.bar.emplace(wg.size, hopper::Warpgroup::Done{&wg});
  }
}
// Each thread at the end of its block: nothing of its warpgroup may be in flight; its warpgroup
// barrier stops counting it, so the remaining threads' collectives complete (and find the
// warpgroup incomplete).
inline void hopper_thread_exit() {
  hopper::State& s = hopper::state();
  hopper::Warpgroup& wg = *s.wgs[ctx.warp / 4];
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!wg.open.empty() || !wg.groups.empty())
      hopper::die("a thread exited with wgmma still in flight (no wgmma_commit + wgmma_wait<0> before the end)");
  }
  wg.bar->arrive_and_drop();
}
inline void hopper_check_read(const void* p, size_t n) {
  if (!ctx.launch->hopper_state || ctx.launch->hopper_state->ncopies.load() == 0) return;
  const unsigned char* c = static_cast<const unsigned char*>(p);
  if (c < ctx.launch->smem_base || c >= ctx.launch->smem_base + ctx.launch->smem_bytes) return;  // static __shared__
  hopper::State& s = hopper::state();
  const uint32_t a = hopper::to_shared(p);
  std::lock_guard<std::mutex> lock(s.mu);
  if (hopper::copy_over(s, a, a + uint32_t(n)))
    hopper::die("a read of shared memory that a TMA copy still in flight writes (wait on its mbarrier first)");
}
}  // namespace emu

namespace lt::cuda {

inline uint32_t smem_u32(const void* p) { return emu::hopper::to_shared(p); }

// ---- mbarrier -------------------------------------------------------------------------------------

inline void mbar_init(uint64_t* bar, uint32_t count) {
  using namespace emu::hopper;
  const uint32_t a = to_shared(bar);
  if (a % 8) die("mbarrier not 8-byte aligned");
  if (count < 1 || count >= (1u << 20)) die("mbarrier.init count must be in 1..2^20-1");
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  Barrier b;
  b.count = b.pending = count;
  b.init_thread = thread_index();
  s.bars[a] = b;
  touch(s);
}
// fence.mbarrier_init / fence.proxy.async: the barriers this thread initialised become visible to
// the async proxy (and the TMA may use them).
inline void fence_mbarrier_init() {
  using namespace emu::hopper;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  for (auto& [a, b] : s.bars)
    if (b.init_thread == thread_index()) b.fenced = true;
}
inline void fence_proxy_async() { fence_mbarrier_init(); }
inline void mbar_arrive(uint64_t* bar) {
  using namespace emu::hopper;
  const uint32_t a = to_shared(bar);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  arrive_locked(s, a, 0);
}
inline void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  using namespace emu::hopper;
  const uint32_t a = to_shared(bar);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  arrive_locked(s, a, bytes);
}
// try_wait.parity(P): true once the phase with parity P has completed, i.e. while the current
// phase's parity is !P. Copies completing on this barrier land now if the phase is still open
// (the latest moment: someone is waiting for them). Otherwise it blocks up to ~1 ms and says
// false; no mbarrier progress in the block for deadlock_seconds ends the process.
inline bool mbar_try_wait(uint64_t* bar, uint32_t parity) {
  using namespace emu::hopper;
  const uint32_t a = to_shared(bar);
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mu);
  auto done = [&] { return (bar_at(s, a, "mbarrier.try_wait").phase & 1) != (parity & 1); };
  if (done()) return true;
  land_for(s, a);
  if (done()) return true;
  s.cv.wait_for(lock, std::chrono::milliseconds(1));
  if (done()) return true;
  if (std::chrono::duration<double>(std::chrono::steady_clock::now() - s.progress).count() > deadlock_seconds) {
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "deadlock: mbarrier.try_wait.parity(%u) on 0x%x saw no mbarrier progress for %.0f s "
                  "(wrong phase? missing arrive?)",
                  parity & 1, a, deadlock_seconds);
    die(buf);
  }
  return false;
}

// ---- TMA ------------------------------------------------------------------------------------------

inline void tma_load_2d(void* dst, const CUtensorMap* map, uint64_t* bar, int x, int y) {
  using namespace emu::hopper;
  TensorMapData m;
  std::memcpy(&m, map, sizeof m);
  if (m.magic != TensorMapData::kMagic) die("tma_load_2d with a CUtensorMap that cuTensorMapEncodeTiled did not make");
  const uint32_t d = to_shared(dst), b = to_shared(bar);
  if (d % 128) die("TMA destination not 128-byte aligned in shared memory");
  if (m.swizzle_span && d % (m.swizzle_span * 8)) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "TMA destination 0x%x not %u-byte aligned for the %uB swizzle", d,
                  m.swizzle_span * 8, m.swizzle_span);
    die(buf);
  }
  Copy c{m, d, b, ~0u, 0, x, y, 0};
  const uint32_t bytes = m.box[0] * m.box[1] * m.elem_bytes;
  c.lo = d;
  c.hi = d + bytes;
  if (m.swizzle_span) c.hi = d + (bytes + m.swizzle_span * 8 - 1) / (m.swizzle_span * 8) * (m.swizzle_span * 8);
  from_shared(d, bytes, "TMA destination");
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  Barrier& bb = bar_at(s, b, "cp.async.bulk.tensor");
  if (!bb.fenced) die("mbarrier.init not fenced before the async proxy used it (fence_mbarrier_init / fence_proxy_async)");
  for (const Mma* op : s.reading)
    if (op->lo < c.hi && c.lo < op->hi)
      for (uint32_t a : op->addrs)
        if (a >= c.lo && a < c.hi) die("producer overwrote a stage still being read (TMA into shared memory an in-flight wgmma reads)");
  if (copy_over(s, c.lo, c.hi)) die("TMA copy into shared memory that another TMA copy still in flight writes");
  c.seq = ++s.seq;
  s.copies.push_back(c);
  s.ncopies = int(s.copies.size());
}

// ---- wgmma ----------------------------------------------------------------------------------------

inline void wgmma_fence() {
  emu::hopper::Warpgroup::Slot sl;
  sl.op = emu::hopper::Warpgroup::kFence;
  emu::hopper::post(sl);
}
inline void wgmma_commit() {
  emu::hopper::Warpgroup::Slot sl;
  sl.op = emu::hopper::Warpgroup::kCommit;
  emu::hopper::post(sl);
}
template <int N>
inline void wgmma_wait() {
  static_assert(N >= 0 && N <= 7, "wgmma.wait_group N in 0..7");
  emu::hopper::Warpgroup::Slot sl;
  sl.op = emu::hopper::Warpgroup::kWait;
  sl.arg = N;
  emu::hopper::post(sl);
}
template <int N, int TransA, int TransB>
inline void wgmma_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  static_assert(N == 64 || N == 128 || N == 256, "wgmma N in {64, 128, 256}");
  static_assert((TransA == 0 || TransA == 1) && (TransB == 0 || TransB == 1));
  emu::hopper::Warpgroup::Slot sl;
  sl.op = emu::hopper::Warpgroup::kMma;
  sl.n = N, sl.ta = TransA, sl.tb = TransB, sl.scale_d = scale_d != 0, sl.da = desc_a, sl.db = desc_b, sl.d = d;
  emu::hopper::post(sl);
}
template <int N, int TransB>
inline void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
  static_assert(N == 64 || N == 128 || N == 256, "wgmma N in {64, 128, 256}");
  static_assert(TransB == 0 || TransB == 1);
  emu::hopper::Warpgroup::Slot sl;
  sl.op = emu::hopper::Warpgroup::kMma;
  sl.rs = true;
  sl.n = N, sl.tb = TransB, sl.scale_d = scale_d != 0, sl.db = desc_b, sl.d = d;
  std::memcpy(sl.a, a, sizeof sl.a);
  emu::hopper::post(sl);
}

// setmaxnreg.{inc,dec}.sync.aligned.u32 R: warpgroup-uniform, R a multiple of 8 in 24..256;
// registers are not modelled, so otherwise nothing happens.
template <int R>
inline void setmaxnreg_inc() {
  emu::hopper::Warpgroup::Slot sl;
  sl.op = emu::hopper::Warpgroup::kRegs;
  sl.arg = R;
  sl.inc = true;
  emu::hopper::post(sl);
}
template <int R>
inline void setmaxnreg_dec() {
  emu::hopper::Warpgroup::Slot sl;
  sl.op = emu::hopper::Warpgroup::kRegs;
  sl.arg = R;
  emu::hopper::post(sl);
}

}  // namespace lt::cuda

// ---- Driver: cuTensorMapEncodeTiled through cudaGetDriverEntryPointByVersion ----------------------

namespace emu::hopper {
// The checks of the CUDA driver API's cuTensorMapEncodeTiled that apply to what we model (rank 2,
// no interleave, element strides 1): global address 16-byte aligned, dimensions in 1..2^32,
// row stride a multiple of 16 below 2^40 and at least a row, box dimensions in 1..256 with the
// inner one a multiple of 16 bytes and, when swizzled, at most the swizzle span.
inline CUresult encode_tiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* base,
                             const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                             const cuuint32_t* elem_strides, CUtensorMapInterleave interleave,
                             CUtensorMapSwizzle swizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill oob) {
  uint32_t eb = 0;
  switch (type) {
    case CU_TENSOR_MAP_DATA_TYPE_UINT8: eb = 1; break;
    case CU_TENSOR_MAP_DATA_TYPE_UINT16:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
    case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16: eb = 2; break;
    case CU_TENSOR_MAP_DATA_TYPE_UINT32:
    case CU_TENSOR_MAP_DATA_TYPE_INT32:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32: eb = 4; break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  if (!map || rank != 2 || !base || reinterpret_cast<uintptr_t>(base) % 16) return CUDA_ERROR_INVALID_VALUE;
  if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE) return CUDA_ERROR_INVALID_VALUE;
  for (int i = 0; i < 2; ++i) {
    if (dims[i] == 0 || dims[i] > (uint64_t(1) << 32)) return CUDA_ERROR_INVALID_VALUE;
    if (box[i] == 0 || box[i] > 256) return CUDA_ERROR_INVALID_VALUE;
    if (elem_strides[i] != 1) return CUDA_ERROR_INVALID_VALUE;  // not modelled
  }
  if (strides[0] % 16 || strides[0] >= (uint64_t(1) << 40) || strides[0] < dims[0] * eb) return CUDA_ERROR_INVALID_VALUE;
  if ((box[0] * eb) % 16) return CUDA_ERROR_INVALID_VALUE;
  uint32_t span = 0;
  switch (swizzle) {
    case CU_TENSOR_MAP_SWIZZLE_NONE: span = 0; break;
    case CU_TENSOR_MAP_SWIZZLE_32B: span = 32; break;
    case CU_TENSOR_MAP_SWIZZLE_64B: span = 64; break;
    case CU_TENSOR_MAP_SWIZZLE_128B: span = 128; break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  if (span && box[0] * eb > span) return CUDA_ERROR_INVALID_VALUE;
  TensorMapData m{};
  m.magic = TensorMapData::kMagic;
  m.base = static_cast<const unsigned char*>(base);
  m.dim[0] = dims[0], m.dim[1] = dims[1];
  m.stride1 = strides[0];
  m.box[0] = box[0], m.box[1] = box[1];
  m.elem_bytes = eb;
  m.swizzle_span = span;
  m.nan_fill = oob == CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA;
  std::memset(map, 0, sizeof *map);
  std::memcpy(map, &m, sizeof m);
  return CUDA_SUCCESS;
}
inline cudaError_t entry_point(const char* symbol, void** fn, cudaDriverEntryPointQueryResult* q) {
  if (std::strcmp(symbol, "cuTensorMapEncodeTiled") == 0) {
    *fn = reinterpret_cast<void*>(&encode_tiled);
    if (q) *q = cudaDriverEntryPointSuccess;
    return cudaSuccess;
  }
  *fn = nullptr;
  if (q) *q = cudaDriverEntryPointSymbolNotFound;
  return cudaErrorSymbolNotFound;
}
}  // namespace emu::hopper

#define cudaGetDriverEntryPointByVersion(symbol, fn, version, flags, q) ::emu::hopper::entry_point((symbol), (fn), (q))
