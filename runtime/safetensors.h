// safetensors, Hugging Face's tensor file format: an 8-byte little-endian header length N,
// N bytes of JSON describing each tensor, then the raw data. A writer, and a reader that
// validates the whole header before any data is trusted.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lt {

// The dtypes we read. Real GPT-2 releases ship F32 and F16; other trainers write BF16.
enum class StDType { F32, F16, BF16, I32, I64 };
const char* to_string(StDType t);  // the format's own spelling: "F32", "BF16", ...
size_t st_dtype_size(StDType t);

// One tensor to write. `data` points at numel(shape) * st_dtype_size(dtype) bytes in host
// memory, little-endian, which the caller keeps alive until write_safetensors returns.
struct StEntry {
  std::string name;
  StDType dtype = StDType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Writes `path` and fsyncs it before returning. Tensors are laid out in name order and the
// header is padded with spaces to a multiple of 8 so every tensor's data starts 8-byte
// aligned for readers that map the file. An I/O failure is a UserError naming the path, and
// the partial file is removed.
void write_safetensors(const std::string& path, const std::vector<StEntry>& entries,
                       const std::map<std::string, std::string>& metadata = {});

// A tensor described in a file's header; begin/end are byte offsets into the data buffer.
struct StTensorInfo {
  std::string name;
  StDType dtype = StDType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
  int64_t numel() const;
  std::string shape_str() const;  // "[768, 2304]"
};

// Opens a file and validates it completely (header length against the file size, JSON,
// dtypes, shapes, offsets in range and matching shape x dtype, contiguous without overlap or
// trailing bytes). Anything malformed is one UserError naming the file and the tensor/field.
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);
  // The same for a regular file the caller opened (and checked is one); the reader owns `fd` from
  // here on, and `path` only names it in errors.
  SafetensorsReader(int fd, const std::string& path);
  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<StTensorInfo>& tensors() const { return tensors_; }  // in data order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const StTensorInfo* find(const std::string& name) const;  // nullptr when absent
  const StTensorInfo& at(const std::string& name) const;    // UserError when absent

  // The bytes exactly as stored.
  void read_raw(const StTensorInfo& t, void* dst) const;
  // F32 as is, F16 and BF16 widened exactly to f32; an integer tensor is a UserError.
  void read_f32(const StTensorInfo& t, float* dst) const;
  // I32 sign-extended or I64 as is; a float tensor is a UserError.
  void read_i64(const StTensorInfo& t, int64_t* dst) const;

 private:
  void pread_exact(void* dst, uint64_t bytes, uint64_t file_offset, const std::string& what) const;

  std::string path_;
  int fd_ = -1;
  uint64_t data_start_ = 0;  // 8 + header length
  std::vector<StTensorInfo> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// IEEE half and bfloat16 bit patterns to f32, exact (every value is representable).
float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t b);

}  // namespace lt
