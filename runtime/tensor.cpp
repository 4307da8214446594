// Buffer allocation per device and Tensor view helpers.
#include "runtime/tensor.h"

#include <cstdlib>
#include <cstring>

#include "runtime/error.h"

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
  LT_CHECK(dev == Device::CPU, "CUDA buffers are allocated by the CUDA backend");
  size_t rounded = (bytes + 63) / 64 * 64;
  ptr_ = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!ptr_) throw std::bad_alloc();
}

Buffer::~Buffer() { std::free(ptr_); }

Tensor Tensor::empty(Device dev, DType dt, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dt;
  t.shape = std::move(shape);
  t.buf = std::make_shared<Buffer>(dev, t.nbytes());
  return t;
}

Tensor Tensor::zeros(Device dev, DType dt, std::vector<int64_t> shape) {
  Tensor t = empty(dev, dt, std::move(shape));
  std::memset(t.raw(), 0, t.nbytes());
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
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace lt
