// The safetensors writer and validating reader (see safetensors.h). Checks mirror the ones the
// reference Rust implementation makes, so a file we accept loads in Hugging Face and back.
#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/error.h"
#include "runtime/input.h"

namespace lt {

// The format is little-endian on disk and we copy bytes straight into f32/i32 arrays.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

// Hugging Face rejects headers above 100 MB; a larger length is corruption, not a real model.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string errno_text(int err) { return std::strerror(err); }

bool parse_dtype(const std::string& s, StDType* out) {
  static const std::pair<const char*, StDType> names[] = {
      {"F32", StDType::F32}, {"F16", StDType::F16}, {"BF16", StDType::BF16},
      {"I32", StDType::I32}, {"I64", StDType::I64}};
  for (const auto& [n, t] : names)
    if (s == n) {
      *out = t;
      return true;
    }
  return false;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string range_string(uint64_t begin, uint64_t end) {
  std::string s = "[";  // built by appending: GCC 12 warns falsely on "[" + std::to_string(...)
  s += std::to_string(begin);
  s += ", ";
  s += std::to_string(end);
  return s + "]";
}

// Writes everything or reports why not; write(2) may legally write less than asked.
bool write_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    // Linux caps a single write near 2 GiB; GPT-2 optimizer state gets close to that.
    ssize_t w = ::write(fd, p, std::min<size_t>(n, 1u << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

}  // namespace

const char* to_string(StDType t) {
  switch (t) {
    case StDType::F32: return "F32";
    case StDType::F16: return "F16";
    case StDType::BF16: return "BF16";
    case StDType::I32: return "I32";
    case StDType::I64: return "I64";
  }
  return "?";
}

size_t st_dtype_size(StDType t) {
  switch (t) {
    case StDType::F16:
    case StDType::BF16: return 2;
    case StDType::F32:
    case StDType::I32: return 4;
    case StDType::I64: return 8;
  }
  return 0;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, or NaN keeping its payload
  } else if (exp != 0) {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal half (mant * 2^-24) is a normal float: shift until the implicit bit appears.
    uint32_t e = 127 - 15 + 1;
    while (!(mant & 0x400)) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3ff) << 13);
  }
  return std::bit_cast<float>(bits);
}

float bf16_to_f32(uint16_t b) { return std::bit_cast<float>((uint32_t)b << 16); }

int64_t StTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string StTensorInfo::shape_str() const { return shape_string(shape); }

void write_safetensors(const std::string& path, const std::vector<StEntry>& entries,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const StEntry*> order;
  for (const StEntry& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const StEntry* a, const StEntry* b) { return a->name < b->name; });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const StEntry& e = *order[i];
    LT_CHECK(!e.name.empty() && e.name != "__metadata__", "bad safetensors tensor name '" + e.name + "'");
    LT_CHECK(i == 0 || order[i - 1]->name != e.name, "duplicate safetensors tensor name '" + e.name + "'");
    uint64_t bytes = st_dtype_size(e.dtype);
    for (int64_t s : e.shape) {
      LT_CHECK(s >= 0, e.name + " has a negative dimension");
      bytes *= (uint64_t)s;
    }
    LT_CHECK(bytes == 0 || e.data != nullptr, e.name + " has no data");
    header[e.name] = {{"dtype", to_string(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  uint8_t len_le[8];
  for (int i = 0; i < 8; ++i) len_le[i] = (uint8_t)((uint64_t)json.size() >> (8 * i));

  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw UserError(path + ": cannot create (" + errno_text(errno) + ")");
  bool ok = write_all(fd, len_le, 8) && write_all(fd, json.data(), json.size());
  for (size_t i = 0; ok && i < order.size(); ++i) {
    const StEntry& e = *order[i];
    uint64_t bytes = st_dtype_size(e.dtype);
    for (int64_t s : e.shape) bytes *= (uint64_t)s;
    ok = write_all(fd, e.data, bytes);
  }
  // fsync before reporting success: a checkpoint is only renamed into place once its bytes
  // are on disk, otherwise a crash could leave a complete-looking directory of garbage.
  ok = ok && ::fsync(fd) == 0;
  int err = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    ::unlink(path.c_str());
    throw UserError(path + ": write failed (" + errno_text(err) + ")");
  }
}

SafetensorsReader::SafetensorsReader(const std::string& path)
    : SafetensorsReader(open_regular_file(path, "safetensors file"), path) {}  // a FIFO or device is refused without blocking

SafetensorsReader::SafetensorsReader(int fd, const std::string& path) : path_(path), fd_(fd) {
  // From here on a throw skips the destructor, so close the descriptor on the way out.
  try {
    struct stat st;
    if (::fstat(fd_, &st) != 0) throw UserError(path + ": cannot stat (" + errno_text(errno) + ")");
    const uint64_t file_size = (uint64_t)st.st_size;
    if (file_size < 8)
      throw UserError(path + ": truncated: " + std::to_string(file_size) +
                      " bytes, too short for the 8-byte header length");
    uint8_t len_le[8];
    pread_exact(len_le, 8, 0, "header length");
    uint64_t header_len = 0;
    for (int i = 0; i < 8; ++i) header_len |= (uint64_t)len_le[i] << (8 * i);
    if (header_len > file_size - 8)
      throw UserError(path + ": header length " + std::to_string(header_len) + " runs past the end of the file (" +
                      std::to_string(file_size) + " bytes)");
    if (header_len > kMaxHeaderBytes)
      throw UserError(path + ": header length " + std::to_string(header_len) + " is implausibly large");
    std::string text(header_len, '\0');
    pread_exact(text.data(), header_len, 8, "header");
    data_start_ = 8 + header_len;
    const uint64_t buffer_size = file_size - data_start_;

    const nlohmann::json header = parse_json(text, path + ": header");
    if (!header.is_object()) throw UserError(path + ": header is not a JSON object");

    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const nlohmann::json& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) throw UserError(path + ": field '__metadata__' must be an object of strings");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string())
            throw UserError(path + ": field '__metadata__." + m.key() + "' must be a string");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      const std::string where = path + ": tensor '" + name + "'";
      if (!v.is_object()) throw UserError(where + ": entry must be an object");
      StTensorInfo t;
      t.name = name;

      auto dt = v.find("dtype");
      if (dt == v.end() || !dt->is_string()) throw UserError(where + ": field 'dtype' missing or not a string");
      if (!parse_dtype(dt->get<std::string>(), &t.dtype))
        throw UserError(where + ": field 'dtype': unsupported dtype \"" + dt->get<std::string>() +
                        "\" (expected F32, F16, BF16, I32 or I64)");

      auto sh = v.find("shape");
      if (sh == v.end() || !sh->is_array()) throw UserError(where + ": field 'shape' missing or not an array");
      uint64_t bytes = st_dtype_size(t.dtype);
      for (const auto& d : *sh) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0)
          throw UserError(where + ": field 'shape' must hold non-negative integers");
        int64_t dim = d.get<int64_t>();
        if (__builtin_mul_overflow(bytes, (uint64_t)dim, &bytes))
          throw UserError(where + ": field 'shape' is too large");
        t.shape.push_back(dim);
      }

      auto off = v.find("data_offsets");
      if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
          !(*off)[1].is_number_unsigned())
        throw UserError(where + ": field 'data_offsets' must be two non-negative integers");
      t.begin = (*off)[0].get<uint64_t>();
      t.end = (*off)[1].get<uint64_t>();
      const std::string range = range_string(t.begin, t.end);
      if (t.end < t.begin) throw UserError(where + ": field 'data_offsets' " + range + " ends before it begins");
      if (t.end > buffer_size)
        throw UserError(where + ": field 'data_offsets' " + range + " is out of range (data buffer is " +
                        std::to_string(buffer_size) + " bytes)");
      if (t.end - t.begin != bytes)
        throw UserError(where + ": field 'data_offsets' " + range + " spans " + std::to_string(t.end - t.begin) +
                        " bytes but shape " + t.shape_str() + " of " + to_string(t.dtype) + " needs " +
                        std::to_string(bytes));
      tensors_.push_back(std::move(t));
    }

    // The data must tile the buffer exactly: overlaps would alias two tensors, and gaps or
    // trailing bytes mean the header and data disagree about what the file holds.
    std::sort(tensors_.begin(), tensors_.end(), [](const StTensorInfo& a, const StTensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t expect = 0;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const StTensorInfo& t = tensors_[i];
      const std::string where = path + ": tensor '" + t.name + "': field 'data_offsets'";
      if (t.begin < expect)
        throw UserError(where + " overlaps tensor '" + tensors_[i - 1].name + "'");
      if (t.begin > expect)
        throw UserError(where + " leaves a gap of " + std::to_string(t.begin - expect) + " bytes before it");
      expect = t.end;
      index_[t.name] = i;
    }
    if (expect != buffer_size)
      throw UserError(path + ": " + std::to_string(buffer_size - expect) +
                      " trailing bytes after the last tensor's data_offsets");
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

const StTensorInfo* SafetensorsReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const StTensorInfo& SafetensorsReader::at(const std::string& name) const {
  const StTensorInfo* t = find(name);
  if (!t) throw UserError(path_ + ": missing tensor '" + name + "'");
  return *t;
}

void SafetensorsReader::pread_exact(void* dst, uint64_t bytes, uint64_t file_offset, const std::string& what) const {
  char* p = static_cast<char*>(dst);
  while (bytes > 0) {
    ssize_t got = ::pread(fd_, p, std::min<uint64_t>(bytes, 1u << 30), (off_t)file_offset);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw UserError(path_ + ": reading " + what + " failed (" + errno_text(errno) + ")");
    // The size was validated at open, so a short read means the file shrank underneath us.
    if (got == 0) throw UserError(path_ + ": truncated while reading " + what);
    p += got;
    bytes -= (uint64_t)got;
    file_offset += (uint64_t)got;
  }
}

void SafetensorsReader::read_raw(const StTensorInfo& t, void* dst) const {
  pread_exact(dst, t.end - t.begin, data_start_ + t.begin, "tensor '" + t.name + "'");
}

void SafetensorsReader::read_f32(const StTensorInfo& t, float* dst) const {
  const int64_t n = t.numel();
  if (t.dtype == StDType::F32) return read_raw(t, dst);
  if (t.dtype != StDType::F16 && t.dtype != StDType::BF16)
    throw UserError(path_ + ": tensor '" + t.name + "' has dtype " + to_string(t.dtype) +
                    ", expected a float dtype (F32, F16 or BF16)");
  std::vector<uint16_t> half((size_t)n);
  read_raw(t, half.data());
  const bool is_f16 = t.dtype == StDType::F16;
  for (int64_t i = 0; i < n; ++i) dst[i] = is_f16 ? f16_to_f32(half[i]) : bf16_to_f32(half[i]);
}

void SafetensorsReader::read_i64(const StTensorInfo& t, int64_t* dst) const {
  const int64_t n = t.numel();
  if (t.dtype == StDType::I64) return read_raw(t, dst);
  if (t.dtype != StDType::I32)
    throw UserError(path_ + ": tensor '" + t.name + "' has dtype " + to_string(t.dtype) +
                    ", expected an integer dtype (I32 or I64)");
  std::vector<int32_t> narrow((size_t)n);
  read_raw(t, narrow.data());
  for (int64_t i = 0; i < n; ++i) dst[i] = narrow[i];
}

}  // namespace lt
