// Tensors: a typed, shaped view into a Buffer that lives on one device. The model, optimizer
// and trainer speak only in Tensors; a Backend (backend.h) runs ops on them where they live.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lt {

enum class Device { CPU, CUDA };
enum class DType { F32, BF16, I32 };

const char* to_string(Device d);
const char* to_string(DType t);
size_t dtype_size(DType t);

// An owning allocation on one device. CPU buffers are 64-byte aligned; CUDA buffers
// (cudaMalloc on the current device, 256-byte aligned) exist only in builds with CUDA: other
// builds throw a UserError saying so. Freeing a CUDA buffer waits for the device first.
class Buffer {
 public:
  Buffer(Device dev, size_t bytes);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return dev_; }

 private:
  Device dev_;
  size_t bytes_;
  void* ptr_ = nullptr;
};

// A non-owning view: (buffer, byte offset, dtype, shape), row-major and contiguous.
struct Tensor {
  std::shared_ptr<Buffer> buf;
  size_t offset = 0;  // bytes into buf
  DType dtype = DType::F32;
  std::vector<int64_t> shape;

  static Tensor empty(Device dev, DType dt, std::vector<int64_t> shape);
  static Tensor zeros(Device dev, DType dt, std::vector<int64_t> shape);  // CUDA: zeroed before return

  int64_t numel() const;
  size_t nbytes() const { return numel() * dtype_size(dtype); }
  Device device() const { return buf->device(); }
  int64_t dim(int i) const { return shape[i < 0 ? shape.size() + i : i]; }
  void* raw() const { return static_cast<char*>(buf->data()) + offset; }
  template <class T> T* data() const { return static_cast<T*>(raw()); }
  float* f32() const { return data<float>(); }
  // A contiguous sub-view starting `elem_offset` elements in, with a new shape.
  Tensor view(int64_t elem_offset, std::vector<int64_t> new_shape) const;
  std::string shape_str() const;
};

}  // namespace lt
