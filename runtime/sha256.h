// SHA-256, used to checksum checkpoint files so a resume never trusts a file that changed on
// disk after it was written. OpenSSL's libcrypto computes it (with the CPU's SHA extensions
// where it has them: about ten times our former portable C++ on a checkpoint).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX, kept out of every includer's namespace

namespace lt {

// Incremental hasher: update() any number of times, then digest() once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t n);
  std::array<uint8_t, 32> digest();  // finalises; the object must not be updated afterwards
  std::string hex_digest();          // digest() as 64 lowercase hex characters

 private:
  evp_md_ctx_st* ctx_;
  bool finished_ = false;
};

std::string sha256_hex(const void* data, size_t n);
std::string sha256_hex(const std::string& s);
// Streams a regular file through the hasher (runtime/input.h's open_regular_file: a FIFO or a
// directory is refused, never waited on); an unreadable file is a UserError naming it.
std::string sha256_file(const std::string& path);

}  // namespace lt
