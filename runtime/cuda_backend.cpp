// The CUDA backend (see cuda_backend.h): host code that enqueues kernels/cuda on one stream.
//
// What keeps a step free of host round trips: host-to-device copies (tokens, targets, the
// encoder-backward plan) go through pinned staging buffers and cudaMemcpyAsync; the plan for
// encoder_backward is built from the host tokens at upload time; gradient clipping computes
// the norm and scale on the device and AdamW reads the scale there; the loss is read back
// once, after the optimizer step has been queued (GPT::take_losses). Only to_host(),
// sum_squares() (the host-norm API kept for ZeRO-1) and synchronize() wait for the device.
#include "runtime/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_naive.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "runtime/error.h"

namespace lt {

namespace {

using bf16 = __nv_bfloat16;

void ck(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();
  throw std::runtime_error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(e));
}

std::string uuid_string(const cudaUUID_t& u) {
  const unsigned char* b = reinterpret_cast<const unsigned char*>(u.bytes);
  char s[64];
  std::snprintf(s, sizeof s, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return s;
}

int rows(const Tensor& t) { return (int)(t.numel() / t.dim(-1)); }

template <class F>
F* ptr(const Tensor& t) {
  return t.buf ? static_cast<F*>(t.raw()) : nullptr;
}

cuda::DataType gemm_type(DType t) {
  LT_CHECK(t == DType::F32 || t == DType::BF16, std::string("GEMM on ") + to_string(t));
  return t == DType::BF16 ? cuda::DataType::BF16 : cuda::DataType::F32;
}

// Calls fn(F{}) with F = float or bf16 for the storage dtype `dt`.
template <class Fn>
void dispatch(DType dt, Fn&& fn) {
  if (dt == DType::F32)
    fn(float{});
  else if (dt == DType::BF16)
    fn(bf16{});
  else
    LT_CHECK(false, std::string("a CUDA op on ") + to_string(dt) + " storage");
}

// A device allocation that only grows (growing waits for the stream first).
struct DeviceScratch {
  void* p = nullptr;
  size_t bytes = 0;
  void* get(size_t n, cudaStream_t s) {
    if (n <= bytes) return p;
    if (p) {
      ck(cudaStreamSynchronize(s), "scratch: stream synchronize");
      ck(cudaFree(p), "scratch: cudaFree");
      p = nullptr;
      bytes = 0;
    }
    const size_t want = std::max<size_t>(n + n / 4, 1 << 16);
    ck(cudaMalloc(&p, want), "scratch: cudaMalloc");
    bytes = want;
    return p;
  }
  void release() {
    if (p) (void)cudaFree(p);
    p = nullptr;
    bytes = 0;
  }
};

// Pinned host buffers for asynchronous host-to-device copies. A slot is reused only after
// the copy that last read it has run (its event), so the caller's data can be reused at once.
class Staging {
 public:
  static constexpr int kSlots = 8;
  static constexpr size_t kMaxBytes = 8u << 20;  // larger copies go synchronously

  void init() {
    for (Slot& s : slots_) ck(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "cudaEventCreate");
  }
  ~Staging() {
    for (Slot& s : slots_) {
      if (s.host) (void)cudaFreeHost(s.host);
      if (s.done) (void)cudaEventDestroy(s.done);
    }
  }
  // Copies `bytes` from `src` into dst (device) on `stream`, asynchronously.
  void copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
    Slot& s = slots_[next_];
    next_ = (next_ + 1) % kSlots;
    ck(cudaEventSynchronize(s.done), "staging: wait for the slot");
    if (s.bytes < bytes) {
      if (s.host) ck(cudaFreeHost(s.host), "cudaFreeHost");
      s.host = nullptr;
      const size_t want = std::max<size_t>(bytes, 1 << 16);
      ck(cudaMallocHost(&s.host, want), "cudaMallocHost");
      s.bytes = want;
    }
    std::memcpy(s.host, src, bytes);
    ck(cudaMemcpyAsync(dst, s.host, bytes, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync host to device");
    ck(cudaEventRecord(s.done, stream), "cudaEventRecord");
  }

 private:
  struct Slot {
    void* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t done = nullptr;
  };
  Slot slots_[kSlots];
  int next_ = 0;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& opt) : opt_(opt) {
    LT_CHECK(opt.precision == DType::BF16 || opt.precision == DType::F32, "precision: bf16 or f32");
    if (opt.gemm != "mma" && opt.gemm != "mma.sync" && opt.gemm != "wgmma" && opt.gemm != "cublas")
      throw UserError("--gemm: expected mma, mma.sync, wgmma or cublas, got '" + opt.gemm + "'");
    info_ = cuda_device_info(opt.device_index);
    ck(cudaSetDevice(opt.device_index), "cudaSetDevice");
    if (opt.gemm == "mma.sync") gemm_path_ = cuda::GemmPath::MmaSync;
    if (opt.gemm == "wgmma") {
      if (!cuda::gemm_wgmma_available())
        throw UserError("--gemm wgmma: needs a compute capability 9.0 GPU (H100, H200) and a build with sm_90a; " +
                        info_.name + " is not one (or the build lacks sm_90a)");
      gemm_path_ = cuda::GemmPath::Wgmma;
    }
    if (opt.attention != "auto" && opt.attention != "mma.sync" && opt.attention != "wgmma")
      throw UserError("--attention: expected auto, mma.sync or wgmma, got '" + opt.attention + "'");
    if (opt.attention == "mma.sync") attn_path_ = cuda::AttnPath::MmaSync;
    if (opt.attention == "wgmma") {
      if (!cuda::attention_hopper_available())
        throw UserError("--attention wgmma: needs a compute capability 9.0 GPU (H100, H200) and a build with sm_90a; " +
                        info_.name + " is not one (or the build lacks sm_90a)");
      attn_path_ = cuda::AttnPath::Wgmma;
    }
    // A blocking stream: ordered after legacy-stream work such as Tensor::zeros' cudaMemset.
    ck(cudaStreamCreateWithFlags(&stream_, cudaStreamDefault), "cudaStreamCreate");
    staging_.init();
    ck(cudaMalloc(&sumsq_dev_, sizeof(double)), "cudaMalloc");
    if (opt.gemm == "cublas") {
      if (cublasCreate(&cublas_) != CUBLAS_STATUS_SUCCESS) throw UserError("--gemm cublas: cublasCreate failed");
    }
  }
  ~CudaBackend() override {
    (void)cudaStreamSynchronize(stream_);
    if (cublas_) cublasDestroy(cublas_);
    scratch_.release();
    plan_dev_.release();
    if (sumsq_dev_) (void)cudaFree(sumsq_dev_);
    (void)cudaStreamDestroy(stream_);
    (void)cudaGetLastError();
  }

  cudaStream_t stream() const { return stream_; }

  Device device() const override { return Device::CUDA; }
  std::string name() const override {
    return "cuda:" + std::to_string(info_.index) + " " + info_.name + " (" +
           (opt_.precision == DType::BF16 ? "bf16 mixed precision" : "fp32") + ", gemm " +
           (cublas_ ? std::string("cublas") : gemm_path_name()) + ", attention " + attention_path_name() + ")";
  }
  DType compute_dtype() const override { return opt_.precision; }

  void fill_zero(const Tensor& t) override {
    ck(cudaMemsetAsync(t.raw(), 0, t.nbytes(), stream_), "cudaMemsetAsync");
  }
  void to_host(void* dst, const Tensor& src) override {
    check_device(src, "to_host");
    ck(cudaMemcpyAsync(dst, src.raw(), src.nbytes(), cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync to host");
    ck(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  void from_host(const Tensor& dst, const void* src) override {
    check_device(dst, "from_host");
    copy_to_device(dst.raw(), src, dst.nbytes());
  }
  void synchronize() override { ck(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

  void upload_tokens(const Tensor& dst, const int32_t* host, int vocab_size) override {
    from_host(dst, host);
    const int B = (int)dst.dim(0), T = (int)dst.dim(1);
    for (int64_t i = 0; i < (int64_t)B * T; i++)
      if (host[i] < 0 || host[i] >= vocab_size)
        throw UserError("token " + std::to_string(host[i]) + " outside the vocabulary [0, " +
                        std::to_string(vocab_size) + ")");
    const cuda::EncoderBackwardPlan plan = cuda::encoder_backward_plan(host, B, T, vocab_size);
    const size_t bytes = plan.data.size() * sizeof(int32_t);
    copy_to_device(plan_dev_.get(bytes, stream_), plan.data.data(), bytes);
    plan_for_ = dst.raw();
    plan_buckets_ = plan.num_buckets;
  }

  void encoder_forward(const Tensor& out, const Tensor& tokens, const Tensor& wte, const Tensor& wpe) override {
    same_dtype({&out, &wte, &wpe}, "encoder_forward");
    dispatch(out.dtype, [&](auto tag) {
      using F = decltype(tag);
      cuda::encoder_forward<F>(ptr<F>(out), ptr<int32_t>(tokens), ptr<F>(wte), ptr<F>(wpe), (int)tokens.dim(0),
                               (int)tokens.dim(1), (int)wte.dim(1), stream_);
    });
  }
  void encoder_backward(const Tensor& dwte, const Tensor& dwpe, const Tensor& dout, const Tensor& tokens) override {
    same_dtype({&dwte, &dwpe, &dout}, "encoder_backward");
    const int B = (int)tokens.dim(0), T = (int)tokens.dim(1);
    if (tokens.raw() != plan_for_) {
      // Tokens that did not come through upload_tokens: read them back (a host round trip).
      std::vector<int32_t> host((size_t)B * T);
      to_host(host.data(), tokens);
      upload_tokens(tokens, host.data(), (int)dwte.dim(0));
    }
    dispatch(dout.dtype, [&](auto tag) {
      using F = decltype(tag);
      cuda::encoder_backward<F>(ptr<F>(dwte), ptr<F>(dwpe), ptr<F>(dout), static_cast<const int32_t*>(plan_dev_.p),
                                plan_buckets_, B, T, (int)dwte.dim(1), stream_);
    });
  }

  void layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& inp,
                         const Tensor& w, const Tensor& b) override {
    same_dtype({&out, &inp, &w, &b}, "layernorm_forward");
    dispatch(out.dtype, [&](auto tag) {
      using F = decltype(tag);
      cuda::layernorm_forward<F>(ptr<F>(out), ptr<float>(mean), ptr<float>(rstd), ptr<F>(inp), ptr<F>(w),
                                 ptr<F>(b), rows(inp), (int)inp.dim(-1), stream_);
    });
  }
  void layernorm_backward(const Tensor& dinp, const Tensor& dw, const Tensor& db, const Tensor& dout,
                          const Tensor& inp, const Tensor& w, const Tensor& mean, const Tensor& rstd) override {
    same_dtype({&dinp, &dw, &db, &dout, &inp, &w}, "layernorm_backward");
    const int N = rows(inp), C = (int)inp.dim(-1);
    void* scratch = scratch_.get(cuda::layernorm_backward_scratch_bytes(N, C), stream_);
    dispatch(dout.dtype, [&](auto tag) {
      using F = decltype(tag);
      cuda::layernorm_backward<F>(ptr<F>(dinp), ptr<F>(dw), ptr<F>(db), scratch, ptr<F>(dout), ptr<F>(inp),
                                  ptr<F>(w), ptr<float>(mean), ptr<float>(rstd), N, C, stream_);
    });
  }

  void matmul_forward(const Tensor& out, const Tensor& inp, const Tensor& w, const Tensor& bias) override {
    linear_forward(out, inp, w, bias, cuda::Epilogue::None, Tensor{}, Tensor{});
  }
  void matmul_forward_gelu(const Tensor& pre, const Tensor& out, const Tensor& inp, const Tensor& w,
                           const Tensor& bias) override {
    same_dtype({&pre, &out}, "matmul_forward_gelu");
    linear_forward(out, inp, w, bias, cuda::Epilogue::Gelu, pre, Tensor{});
  }
  void matmul_forward_residual(const Tensor& out, const Tensor& inp, const Tensor& w, const Tensor& bias,
                               const Tensor& residual) override {
    same_dtype({&out, &residual}, "matmul_forward_residual");
    linear_forward(out, inp, w, bias, cuda::Epilogue::Residual, Tensor{}, residual);
  }
  void matmul_backward(const Tensor& dinp, const Tensor& dw, const Tensor& dbias, const Tensor& dout,
                       const Tensor& inp, const Tensor& w) override {
    linear_backward(dinp, dw, dbias, dout, inp, w, Tensor{});
  }
  void matmul_backward_gelu(const Tensor& dinp, const Tensor& dw, const Tensor& dbias, const Tensor& dout,
                            const Tensor& inp, const Tensor& w, const Tensor& pre) override {
    same_dtype({&dinp, &pre}, "matmul_backward_gelu");
    linear_backward(dinp, dw, dbias, dout, inp, w, pre);
  }

  Tensor attention_state(int B, int n_head, int T, int C) const override {
    if (use_flash(C / n_head)) return empty(DType::F32, {B, n_head, T});  // log-sum-exp per row
    if (!cuda::attention_naive_supported(C / n_head, T))
      throw UserError("CUDA attention: head dim " + std::to_string(C / n_head) + " at sequence length " +
                      std::to_string(T) + " is not supported (flash: bf16 with head dim 64 or 128; fallback: head "
                      "dim <= " + std::to_string(cuda::kNaiveMaxHeadDim) + ", T <= " +
                      std::to_string(cuda::kNaiveMaxT) + ")");
    return empty(DType::F32, {B, n_head, T, T});
  }
  void attention_forward(const Tensor& out, const Tensor& att, const Tensor& qkv, int n_head) override {
    same_dtype({&out, &qkv}, "attention_forward");
    const int B = (int)qkv.dim(0), T = (int)qkv.dim(1), C = (int)out.dim(-1);
    if (is_lse(att, B, n_head, T)) {
      LT_CHECK(qkv.dtype == DType::BF16, "flash attention needs bf16");
      cuda::attention_forward(ptr<bf16>(out), ptr<float>(att), ptr<bf16>(qkv), B, T, C, n_head, stream_, attn_path_);
      return;
    }
    dispatch(qkv.dtype, [&](auto tag) {
      using F = decltype(tag);
      cuda::attention_naive_forward<F>(ptr<F>(out), ptr<float>(att), ptr<F>(qkv), B, T, C, n_head, stream_);
    });
  }
  void attention_backward(const Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& att,
                          int n_head) override {
    LT_CHECK(!is_lse(att, (int)qkv.dim(0), n_head, (int)qkv.dim(1)),
             "flash attention backward needs the forward's output: call attention_backward_saved");
    attention_backward_saved(dqkv, dout, qkv, Tensor{}, att, n_head);
  }
  void attention_backward_saved(const Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                const Tensor& att, int n_head) override {
    same_dtype({&dqkv, &dout, &qkv}, "attention_backward");
    const int B = (int)qkv.dim(0), T = (int)qkv.dim(1), C = (int)dout.dim(-1);
    if (is_lse(att, B, n_head, T)) {
      LT_CHECK(out.buf && out.dtype == DType::BF16, "flash attention backward: the forward's bf16 output");
      void* scratch = scratch_.get(cuda::attention_backward_scratch_bytes(B, T, n_head), stream_);
      cuda::attention_backward(ptr<bf16>(dqkv), scratch, ptr<bf16>(dout), ptr<bf16>(out), ptr<float>(att),
                               ptr<bf16>(qkv), B, T, C, n_head, stream_, attn_path_);
      return;
    }
    void* scratch = scratch_.get(cuda::attention_naive_backward_scratch_bytes(B, T, n_head), stream_);
    dispatch(qkv.dtype, [&](auto tag) {
      using F = decltype(tag);
      cuda::attention_naive_backward<F>(ptr<F>(dqkv), scratch, ptr<F>(dout), ptr<F>(qkv), ptr<float>(att), B, T, C,
                                        n_head, stream_);
    });
  }

  void gelu_forward(const Tensor& out, const Tensor& inp) override {
    same_dtype({&out, &inp}, "gelu_forward");
    dispatch(out.dtype, [&](auto tag) {
      using F = decltype(tag);
      cuda::gelu_forward<F>(ptr<F>(out), ptr<F>(inp), inp.numel(), stream_);
    });
  }
  void gelu_backward(const Tensor& dinp, const Tensor& inp, const Tensor& dout) override {
    same_dtype({&dinp, &inp, &dout}, "gelu_backward");
    dispatch(dinp.dtype, [&](auto tag) {
      using F = decltype(tag);
      cuda::gelu_backward<F>(ptr<F>(dinp), ptr<F>(inp), ptr<F>(dout), inp.numel(), stream_);
    });
  }
  void residual_forward(const Tensor& out, const Tensor& a, const Tensor& b) override {
    same_dtype({&out, &a, &b}, "residual_forward");
    dispatch(out.dtype, [&](auto tag) {
      using F = decltype(tag);
      cuda::residual_forward<F>(ptr<F>(out), ptr<F>(a), ptr<F>(b), a.numel(), stream_);
    });
  }
  void crossentropy_forward(const Tensor& losses, const Tensor& probs, const Tensor& logits, const Tensor& targets,
                            int V) override {
    same_dtype({&probs, &logits}, "crossentropy_forward");
    dispatch(logits.dtype, [&](auto tag) {
      using F = decltype(tag);
      cuda::crossentropy_forward<F>(ptr<float>(losses), ptr<F>(probs), ptr<F>(logits), ptr<int32_t>(targets),
                                    rows(logits), V, (int)logits.dim(-1), stream_);
    });
  }
  void crossentropy_backward(const Tensor& dlogits, const Tensor& probs, const Tensor& targets, float dloss,
                             int V) override {
    same_dtype({&dlogits, &probs}, "crossentropy_backward");
    dispatch(probs.dtype, [&](auto tag) {
      using F = decltype(tag);
      cuda::crossentropy_backward<F>(ptr<F>(dlogits), ptr<F>(probs), ptr<int32_t>(targets), dloss, rows(probs), V,
                                     (int)probs.dim(-1), stream_);
    });
  }

  void adamw_update(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, float lr, float beta1,
                    float beta2, float eps, float weight_decay, float grad_scale, int step) override {
    adamw(p, g, m, v, lr, beta1, beta2, eps, weight_decay, grad_scale, nullptr, step);
  }
  void adamw_update_clipped(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, float lr,
                            float beta1, float beta2, float eps, float weight_decay, const Tensor& grad_scale,
                            int step) override {
    LT_CHECK(grad_scale.dtype == DType::F32 && grad_scale.device() == Device::CUDA, "grad_scale: a CUDA f32 scalar");
    adamw(p, g, m, v, lr, beta1, beta2, eps, weight_decay, 1.f, ptr<float>(grad_scale), step);
  }
  double sum_squares(const Tensor& x) override {
    enqueue_sum_squares(x);
    double s = 0;
    ck(cudaMemcpyAsync(&s, sumsq_dev_, sizeof s, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
    ck(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    return s;
  }
  void grad_norm_clip(const Tensor& out, const Tensor& grads, float max_norm) override {
    LT_CHECK(out.dtype == DType::F32 && out.numel() >= 2, "grad_norm_clip: out is f32[2]");
    enqueue_sum_squares(grads);
    float* o = ptr<float>(out);
    cuda::grad_clip_scale(o + 1, o, sumsq_dev_, max_norm, stream_);
  }
  void convert(const Tensor& dst, const Tensor& src) override {
    LT_CHECK(dst.numel() == src.numel(), "convert: element counts differ");
    if (dst.dtype == src.dtype) {
      ck(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, stream_), "cudaMemcpyAsync");
    } else if (dst.dtype == DType::BF16 && src.dtype == DType::F32) {
      cuda::convert<bf16, float>(ptr<bf16>(dst), ptr<float>(src), src.numel(), stream_);
    } else if (dst.dtype == DType::F32 && src.dtype == DType::BF16) {
      cuda::convert<float, bf16>(ptr<float>(dst), ptr<bf16>(src), src.numel(), stream_);
    } else {
      LT_CHECK(false, std::string("convert ") + to_string(src.dtype) + " -> " + to_string(dst.dtype));
    }
  }

 private:
  bool use_flash(int head_dim) const { return opt_.precision == DType::BF16 && cuda::attention_supported(head_dim); }
  static bool is_lse(const Tensor& att, int B, int NH, int T) {
    return att.shape == std::vector<int64_t>{B, NH, T};
  }
  // Host to device on the stream; `src` may be reused when this returns. Small copies go
  // through pinned staging without waiting; large ones (weights at load time) straight from
  // pageable memory, then a wait.
  void copy_to_device(void* dst, const void* src, size_t n) {
    if (n == 0) return;
    if (n <= Staging::kMaxBytes) return staging_.copy(dst, src, n, stream_);
    ck(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync to device");
    ck(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  static void check_device(const Tensor& t, const char* op) {
    LT_CHECK(t.buf && t.device() == Device::CUDA, std::string(op) + ": not a CUDA tensor");
  }
  static void same_dtype(std::initializer_list<const Tensor*> ts, const char* op) {
    const DType dt = (*ts.begin())->dtype;
    for (const Tensor* t : ts) {
      LT_CHECK(t->buf && t->device() == Device::CUDA, std::string(op) + ": a tensor is not on the CUDA device");
      LT_CHECK(t->dtype == dt, std::string(op) + ": mixed dtypes (" + to_string(dt) + ", " + to_string(t->dtype) + ")");
    }
  }

  // out = inp W^T (+ bias) and then, in the GEMM's epilogue, `extra`: Gelu (out = gelu(v), the
  // pre-activation v to `pre`) or Residual (v += residual). All [N, OC], packed.
  void linear_forward(const Tensor& out, const Tensor& inp, const Tensor& w, const Tensor& bias,
                      cuda::Epilogue extra, const Tensor& pre, const Tensor& residual) {
    same_dtype({&out, &inp, &w, bias.buf ? &bias : &out}, "matmul_forward");
    cuda::GemmArgs a;
    a.layout = cuda::Layout::NT;
    a.M = rows(inp);
    a.N = (int)w.dim(0);
    a.K = (int)inp.dim(-1);
    a.A = inp.raw();
    a.B = w.raw();
    a.C = out.raw();
    a.in_type = a.out_type = gemm_type(out.dtype);
    a.epilogue = extra;
    if (bias.buf) {
      a.epilogue = a.epilogue | cuda::Epilogue::Bias;
      a.bias = bias.raw();
    }
    if (pre.buf) a.aux = pre.raw();
    if (residual.buf) a.residual = residual.raw();
    gemm(a);
  }
  // dinp = dout W (times gelu'(pre) in the epilogue when `pre` is given), dw += dout^T inp,
  // dbias += column sums of dout.
  void linear_backward(const Tensor& dinp, const Tensor& dw, const Tensor& dbias, const Tensor& dout,
                       const Tensor& inp, const Tensor& w, const Tensor& pre) {
    same_dtype({&dw, &dout, &inp, &w}, "matmul_backward");
    const int N = rows(inp), C = (int)inp.dim(-1), OC = (int)w.dim(0);
    const cuda::DataType dt = gemm_type(dout.dtype);
    if (dinp.buf) {  // dinp[N,C] = dout[N,OC] @ w[OC,C]
      same_dtype({&dinp, &dout}, "matmul_backward dinp");
      cuda::GemmArgs a;
      a.layout = cuda::Layout::NN;
      a.M = N, a.N = C, a.K = OC;
      a.A = dout.raw(), a.B = w.raw(), a.C = dinp.raw();
      a.in_type = a.out_type = dt;
      if (pre.buf) {
        a.epilogue = cuda::Epilogue::GeluGrad;
        a.aux = pre.raw();
      }
      gemm(a);
    }
    {  // dw[OC,C] += dout^T @ inp
      cuda::GemmArgs a;
      a.layout = cuda::Layout::TN;
      a.M = OC, a.N = C, a.K = N;
      a.A = dout.raw(), a.B = inp.raw(), a.C = dw.raw();
      a.in_type = a.out_type = dt;
      a.beta = 1.f;
      gemm(a);
    }
    if (dbias.buf) {
      same_dtype({&dbias, &dout}, "matmul_backward dbias");
      void* scratch = scratch_.get(cuda::bias_backward_scratch_bytes(N, OC), stream_);
      dispatch(dout.dtype, [&](auto tag) {
        using F = decltype(tag);
        cuda::bias_backward<F>(ptr<F>(dbias), scratch, ptr<F>(dout), N, OC, stream_);
      });
    }
  }

  // The flash-attention kernels bf16 runs take: the forced ones, or Auto's choice on this device.
  std::string attention_path_name() const {
    if (attn_path_ == cuda::AttnPath::MmaSync) return "mma.sync";
    return attn_path_ == cuda::AttnPath::Wgmma || cuda::attention_hopper_available() ? "wgmma" : "mma.sync";
  }
  // The hand-written path bf16 GEMMs take: the forced one, or Auto's choice on this device.
  std::string gemm_path_name() const {
    if (gemm_path_ != cuda::GemmPath::Auto) return cuda::to_string(gemm_path_);
    return cuda::gemm_wgmma_available() ? "wgmma" : "mma.sync";
  }

  void gemm(const cuda::GemmArgs& args) {
    cuda::GemmArgs a = args;
    a.path = gemm_path_;
    if (cublas_) {
      const size_t ws = cuda::gemm_cublas_workspace_bytes(a);
      void* w = ws ? scratch_.get(ws, stream_) : nullptr;
      cuda::gemm_cublas(a, cublas_, w, ws, stream_);
    } else {
      cuda::gemm(a, stream_);
    }
  }

  void enqueue_sum_squares(const Tensor& x) {
    void* scratch = scratch_.get(cuda::sum_squares_scratch_bytes(x.numel()), stream_);
    dispatch(x.dtype, [&](auto tag) {
      using F = decltype(tag);
      cuda::sum_squares<F>(sumsq_dev_, ptr<F>(x), x.numel(), scratch, false, stream_);
    });
  }

  void adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, float lr, float beta1, float beta2,
             float eps, float weight_decay, float grad_scale, const float* grad_scale_dev, int step) {
    LT_CHECK(p.dtype == DType::F32 && m.dtype == DType::F32 && v.dtype == DType::F32,
             "AdamW: fp32 master weights and moments");
    LT_CHECK(p.numel() == g.numel() && p.numel() == m.numel() && p.numel() == v.numel(), "AdamW: sizes differ");
    dispatch(g.dtype, [&](auto tag) {
      using G = decltype(tag);
      cuda::adamw_update<G>(ptr<float>(p), nullptr, ptr<G>(g), ptr<float>(m), ptr<float>(v), p.numel(), lr, beta1,
                            beta2, eps, weight_decay, grad_scale, grad_scale_dev, step, stream_);
    });
  }

  CudaBackendOptions opt_;
  CudaDeviceInfo info_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cuda::GemmPath gemm_path_ = cuda::GemmPath::Auto;  // --gemm mma.sync / wgmma force one
  cuda::AttnPath attn_path_ = cuda::AttnPath::Auto;  // --attention mma.sync / wgmma force one
  DeviceScratch scratch_;  // per-op scratch; ops run in stream order, so one buffer serves all
  DeviceScratch plan_dev_;
  Staging staging_;
  double* sumsq_dev_ = nullptr;
  const void* plan_for_ = nullptr;  // the token buffer plan_dev_ was built for
  int plan_buckets_ = 0;
};

}  // namespace

std::string CudaDeviceInfo::cuda_version() const {
  return std::to_string(runtime_version / 1000) + "." + std::to_string(runtime_version % 1000 / 10);
}

bool cuda_available(std::string* why) {
  int driver = 0;
  (void)cudaDriverGetVersion(&driver);
  (void)cudaGetLastError();
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  (void)cudaGetLastError();
  if (e == cudaSuccess && n > 0) return true;
  if (why) {
    if (driver == 0)
      *why = "no CUDA driver";
    else if (e == cudaErrorInsufficientDriver)
      *why = "the CUDA driver (" + std::to_string(driver / 1000) + "." + std::to_string(driver % 1000 / 10) +
             ") is older than this build's CUDA runtime";
    else if (e != cudaSuccess)
      *why = std::string("no usable CUDA device: ") + cudaGetErrorString(e);
    else
      *why = "no CUDA device";
  }
  return false;
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

CudaDeviceInfo cuda_device_info(int index) {
  const int n = cuda_device_count();
  if (index < 0 || index >= n)
    throw UserError("CUDA device " + std::to_string(index) + ": this machine has " + std::to_string(n) +
                    " usable CUDA device(s)");
  cudaDeviceProp p{};
  ck(cudaGetDeviceProperties(&p, index), "cudaGetDeviceProperties");
  CudaDeviceInfo d;
  d.index = index;
  d.name = p.name;
  d.uuid = uuid_string(p.uuid);
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.sm_count = p.multiProcessorCount;
  d.memory_bytes = p.totalGlobalMem;
  d.l2_bytes = p.l2CacheSize;
  (void)cudaDriverGetVersion(&d.driver_version);
  (void)cudaRuntimeGetVersion(&d.runtime_version);
  return d;
}

std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& opt) {
  std::string why;
  if (!cuda_available(&why)) throw UserError("--device cuda: " + why);
  try {
    return std::make_unique<CudaBackend>(opt);
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& e) {  // e.g. the device is busy or unusable: say so in one line
    throw UserError(std::string("--device cuda: cannot start on CUDA device ") + std::to_string(opt.device_index) +
                    ": " + e.what());
  }
}

void* cuda_backend_stream(Backend& backend) {
  auto* b = dynamic_cast<CudaBackend*>(&backend);
  return b ? static_cast<void*>(b->stream()) : nullptr;
}

}  // namespace lt
