// Buffer allocation per device and Tensor view helpers.
#include "runtime/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "runtime/error.h"

#ifdef LEASETRAIN_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace lt {

const char* to_string(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }
const char* to_string(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
  }
  return "?";
}
size_t dtype_size(DType t) { return t == DType::BF16 ? 2 : 4; }

Buffer::Buffer(Device dev, size_t bytes) : dev_(dev), bytes_(bytes) {
  if (dev == Device::CUDA) {
#ifdef LEASETRAIN_HAVE_CUDA
    // On the current device (the CUDA backend selects it). cudaMalloc aligns to 256 bytes.
    const cudaError_t e = cudaMalloc(&ptr_, bytes ? bytes : 64);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      ptr_ = nullptr;
      throw UserError("CUDA: cannot allocate " + std::to_string(bytes) + " bytes on the device: " +
                      cudaGetErrorString(e));
    }
    return;
#else
    throw UserError("a CUDA tensor was requested, but this build has no CUDA (the CUDA toolkit was not found when it "
                    "was configured)");
#endif
  }
  size_t rounded = (bytes + 63) / 64 * 64;
  ptr_ = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!ptr_) throw std::bad_alloc();
}

Buffer::~Buffer() {
  if (dev_ == Device::CPU) {
    std::free(ptr_);
    return;
  }
#ifdef LEASETRAIN_HAVE_CUDA
  // Work queued on any stream may still use the buffer: wait for it before freeing. Errors
  // are ignored (at exit the runtime may already be gone).
  (void)cudaDeviceSynchronize();
  (void)cudaFree(ptr_);
  (void)cudaGetLastError();
#endif
}

Tensor Tensor::empty(Device dev, DType dt, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dt;
  t.shape = std::move(shape);
  t.buf = std::make_shared<Buffer>(dev, t.nbytes());
  return t;
}

Tensor Tensor::zeros(Device dev, DType dt, std::vector<int64_t> shape) {
  Tensor t = empty(dev, dt, std::move(shape));
  if (dev == Device::CPU) {
    std::memset(t.raw(), 0, t.nbytes());
  } else {
#ifdef LEASETRAIN_HAVE_CUDA
    // On the legacy default stream; the CUDA backend's stream is a blocking one, so its work
    // is ordered after this.
    const cudaError_t e = cudaMemset(t.raw(), 0, t.nbytes());
    LT_CHECK(e == cudaSuccess, std::string("cudaMemset: ") + cudaGetErrorString(e));
#endif
  }
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Tensor Tensor::view(int64_t elem_offset, std::vector<int64_t> new_shape) const {
  Tensor t;
  t.buf = buf;
  t.dtype = dtype;
  t.offset = offset + elem_offset * dtype_size(dtype);
  t.shape = std::move(new_shape);
  LT_CHECK(t.offset + t.nbytes() <= buf->bytes(), "view out of range " + t.shape_str());
  return t;
}

std::string Tensor::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace lt
