// SHA-256 through OpenSSL's EVP interface (libcrypto picks the SHA-NI/AVX2 code path at run time).
#include "runtime/sha256.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "runtime/error.h"
#include "runtime/input.h"

namespace lt {
namespace {

// libcrypto fails only when it cannot allocate or its provider is broken: an internal error.
void check(int ok, const char* call) {
  if (ok != 1) throw std::runtime_error(std::string("OpenSSL ") + call + " failed for SHA-256");
}

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_) throw std::bad_alloc();
  if (EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx_);
    check(0, "EVP_DigestInit_ex");
  }
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::update(const void* data, size_t n) {
  if (finished_) throw std::logic_error("Sha256::update after digest");
  if (n) check(EVP_DigestUpdate(ctx_, data, n), "EVP_DigestUpdate");
}

std::array<uint8_t, 32> Sha256::digest() {
  if (finished_) throw std::logic_error("Sha256::digest called twice");
  finished_ = true;
  std::array<uint8_t, 32> out;
  unsigned int len = 0;
  check(EVP_DigestFinal_ex(ctx_, out.data(), &len), "EVP_DigestFinal_ex");
  if (len != out.size()) check(0, "EVP_DigestFinal_ex (digest length)");
  return out;
}

std::string Sha256::hex_digest() {
  static const char* hex = "0123456789abcdef";
  std::string s;
  s.reserve(64);
  for (uint8_t b : digest()) {
    s += hex[b >> 4];
    s += hex[b & 15];
  }
  return s;
}

std::string sha256_hex(const void* data, size_t n) {
  Sha256 h;
  h.update(data, n);
  return h.hex_digest();
}

std::string sha256_hex(const std::string& s) { return sha256_hex(s.data(), s.size()); }

std::string sha256_file(const std::string& path) {
  const int fd = open_regular_file(path, "file to checksum");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  Sha256 h;
  // 4 MiB reads: few syscalls, and small enough to stay in the L2/L3 cache while hashed.
  constexpr size_t kChunk = 4 << 20;
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kChunk]);
  for (;;) {
    const ssize_t got = ::read(fd, buf.get(), kChunk);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0)
      throw UserError(path + ": read failed while checksumming (" + std::strerror(errno) + ")");
    if (got == 0) break;
    h.update(buf.get(), (size_t)got);
  }
  return h.hex_digest();
}

}  // namespace lt
