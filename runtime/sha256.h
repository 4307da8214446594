// SHA-256 (FIPS 180-4), used to checksum checkpoint files so a resume never trusts a file that
// changed on disk after it was written. Plain portable C++, no OpenSSL.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace lt {

// Incremental hasher: update() any number of times, then digest() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::array<uint8_t, 32> digest();  // finalises; the object must not be updated afterwards
  std::string hex_digest();          // digest() as 64 lowercase hex characters

 private:
  void compress(const uint8_t* block);  // one 64-byte block into state_

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> block_;  // a partial block waiting for more input
  size_t block_len_ = 0;
  uint64_t total_bytes_ = 0;
  bool finished_ = false;
};

std::string sha256_hex(const void* data, size_t n);
std::string sha256_hex(const std::string& s);
// Streams the file through the hasher; an unreadable file is a UserError naming it.
std::string sha256_file(const std::string& path);

}  // namespace lt
