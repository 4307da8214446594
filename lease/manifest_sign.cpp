// Ed25519 manifest signatures through libsodium loaded with dlopen (see manifest_sign.h).
#include "lease/manifest_sign.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

#include "lease/storage.h"
#include "runtime/error.h"
#include "runtime/input.h"
#include "runtime/sha256.h"

namespace lt::lease {
namespace {

// The libsodium entry points we use, resolved once.
struct Sodium {
  int (*init)() = nullptr;
  int (*verify)(const unsigned char*, const unsigned char*, unsigned long long, const unsigned char*) = nullptr;
  int (*sign)(unsigned char*, unsigned long long*, const unsigned char*, unsigned long long, const unsigned char*) = nullptr;
  int (*seed_keypair)(unsigned char*, unsigned char*, const unsigned char*) = nullptr;
  void (*random)(void*, size_t) = nullptr;
  bool ok = false;
};

const Sodium& sodium() {
  static Sodium s;
  static std::once_flag once;
  std::call_once(once, [] {
    void* h = nullptr;
    for (const char* name : {"libsodium.so.23", "libsodium.so.26", "libsodium.so"})
      if ((h = ::dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
    if (!h) return;
    s.init = reinterpret_cast<int (*)()>(::dlsym(h, "sodium_init"));
    s.verify = reinterpret_cast<decltype(s.verify)>(::dlsym(h, "crypto_sign_verify_detached"));
    s.sign = reinterpret_cast<decltype(s.sign)>(::dlsym(h, "crypto_sign_detached"));
    s.seed_keypair = reinterpret_cast<decltype(s.seed_keypair)>(::dlsym(h, "crypto_sign_seed_keypair"));
    s.random = reinterpret_cast<decltype(s.random)>(::dlsym(h, "randombytes_buf"));
    s.ok = s.init && s.verify && s.sign && s.seed_keypair && s.random && s.init() >= 0;
  });
  return s;
}

const Sodium& need_sodium(const std::string& what) {
  const Sodium& s = sodium();
  if (!s.ok)
    throw UserError(what + ": Ed25519 needs libsodium (Debian package libsodium23), which could not be loaded");
  return s;
}

// DER prefixes of the Ed25519 SubjectPublicKeyInfo and PKCS#8 PrivateKeyInfo (RFC 8410); the
// 32 key bytes follow.
const uint8_t kSpkiPrefix[] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
const uint8_t kPkcs8Prefix[] = {0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b,
                                0x65, 0x70, 0x04, 0x22, 0x04, 0x20};

// Keys and signatures are a few hundred bytes; a manifest at most kMaxManifestBytes. Through
// the validated reader, so a FIFO or device named as either is refused instead of hanging.
std::string read_all(const std::string& path, const std::string& what, uint64_t max_bytes = 64 << 10) {
  return read_regular_file(path, what.c_str(), max_bytes);
}

std::string pem_body(const std::string& text, const std::string& label, const std::string& path) {
  std::string begin = "-----BEGIN " + label + "-----", end = "-----END " + label + "-----";
  size_t b = text.find(begin), e = text.find(end);
  if (b == std::string::npos || e == std::string::npos || e < b)
    throw UserError(path + ": expected a PEM " + label + " (an Ed25519 key as `openssl genpkey -algorithm ed25519` writes)");
  return base64_decode(text.substr(b + begin.size(), e - b - begin.size()));
}

template <size_t N>
std::array<uint8_t, 32> key_after_prefix(const std::string& der, const uint8_t (&prefix)[N],
                                         const std::string& path) {
  if (der.size() != N + 32 || std::memcmp(der.data(), prefix, N) != 0)
    throw UserError(path + ": not an Ed25519 key");
  std::array<uint8_t, 32> k{};
  std::memcpy(k.data(), der.data() + N, 32);
  return k;
}

std::string to_pem(const uint8_t* prefix, size_t n, const uint8_t* key, const std::string& label) {
  std::string der(reinterpret_cast<const char*>(prefix), n);
  der.append(reinterpret_cast<const char*>(key), 32);
  return "-----BEGIN " + label + "-----\n" +
         base64_encode(reinterpret_cast<const uint8_t*>(der.data()), der.size()) + "\n-----END " + label + "-----\n";
}

}  // namespace

std::string base64_encode(const uint8_t* data, size_t n) {
  static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = uint32_t(data[i]) << 16;
    if (i + 1 < n) v |= uint32_t(data[i + 1]) << 8;
    if (i + 2 < n) v |= data[i + 2];
    out += tbl[(v >> 18) & 63];
    out += tbl[(v >> 12) & 63];
    out += i + 1 < n ? tbl[(v >> 6) & 63] : '=';
    out += i + 2 < n ? tbl[v & 63] : '=';
  }
  return out;
}

std::string base64_decode(const std::string& text) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0, pad = 0;
  for (char c : text) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+') v = 62;
    else if (c == '/') v = 63;
    else if (c == '=') { ++pad; continue; }
    else if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    else throw UserError("invalid base64 character");
    if (pad) throw UserError("invalid base64: data after '='");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return out;
}

bool ed25519_available() { return sodium().ok; }

std::array<uint8_t, 32> read_public_key(const std::string& path) {
  return key_after_prefix(pem_body(read_all(path, "operator public key"), "PUBLIC KEY", path), kSpkiPrefix, path);
}

std::array<uint8_t, 32> read_private_seed(const std::string& path) {
  return key_after_prefix(pem_body(read_all(path, "operator private key"), "PRIVATE KEY", path), kPkcs8Prefix, path);
}

bool ed25519_verify(const std::string& message, const std::array<uint8_t, 64>& sig,
                    const std::array<uint8_t, 32>& pk) {
  const Sodium& s = need_sodium("signature check");
  return s.verify(sig.data(), reinterpret_cast<const unsigned char*>(message.data()), message.size(), pk.data()) == 0;
}

void generate_keypair(const std::string& prefix) {
  const Sodium& s = need_sodium(prefix);
  std::array<uint8_t, 32> seed{}, pk{};
  std::array<uint8_t, 64> sk{};
  s.random(seed.data(), seed.size());
  s.seed_keypair(pk.data(), sk.data(), seed.data());
  write_file_atomic(prefix + ".key", to_pem(kPkcs8Prefix, sizeof kPkcs8Prefix, seed.data(), "PRIVATE KEY"), 0600);
  write_file_atomic(prefix + ".pub", to_pem(kSpkiPrefix, sizeof kSpkiPrefix, pk.data(), "PUBLIC KEY"), 0644);
  std::memset(sk.data(), 0, sk.size());
  std::memset(seed.data(), 0, seed.size());
}

std::string sign_file(const std::string& path, const std::string& private_key_path) {
  const Sodium& s = need_sodium(path);
  std::string bytes = read_all(path, "manifest", kMaxManifestBytes);
  std::array<uint8_t, 32> seed = read_private_seed(private_key_path), pk{};
  std::array<uint8_t, 64> sk{}, sig{};
  s.seed_keypair(pk.data(), sk.data(), seed.data());
  unsigned long long len = 0;
  s.sign(sig.data(), &len, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), sk.data());
  std::memset(sk.data(), 0, sk.size());
  std::memset(seed.data(), 0, seed.size());
  std::string b64 = base64_encode(sig.data(), sig.size());
  write_file_atomic(path + ".sig", b64 + "\n");
  return b64;
}

std::string select_operator_key(const std::string& key_flag) {
  struct stat st;
  if (::stat(kSystemOperatorKey, &st) == 0) {
    if (!key_flag.empty() && key_flag != kSystemOperatorKey)
      throw UserError(std::string("this node trusts ") + kSystemOperatorKey + "; --operator-key " + key_flag +
                      " cannot replace it");
    return kSystemOperatorKey;
  }
  if (!key_flag.empty()) return key_flag;
  const char* env = std::getenv("LEASETRAIN_OPERATOR_KEY");
  return env && *env ? env : "";
}

Manifest load_verified_manifest(const std::string& path, const std::string& key_flag, SignatureInfo* info) {
  std::string key = select_operator_key(key_flag);
  std::string bytes = read_all(path, "lease manifest", kMaxManifestBytes);
  std::string sig_path = path + ".sig";
  struct stat st;
  bool has_sig = ::stat(sig_path.c_str(), &st) == 0;
  SignatureInfo si;
  si.key_path = key;
  if (key.empty()) {
    if (has_sig)
      throw UserError(sig_path + ": the manifest is signed but no operator key is configured to check it "
                      "(--operator-key, $LEASETRAIN_OPERATOR_KEY or " + std::string(kSystemOperatorKey) + ")");
    si.note = "unsigned manifest (no operator key configured)";
  } else {
    if (!has_sig) throw UserError(sig_path + ": missing; operator key " + key + " requires a signed manifest");
    std::string raw = base64_decode(read_all(sig_path, "manifest signature"));
    if (raw.size() != 64) throw UserError(sig_path + ": expected a base64 Ed25519 signature (64 bytes)");
    std::array<uint8_t, 64> sig{};
    std::memcpy(sig.data(), raw.data(), 64);
    if (!ed25519_verify(bytes, sig, read_public_key(key)))
      throw UserError(path + ": signature does not match operator key " + key + "; the manifest was altered or signed by someone else");
    si.verified = true;
    si.note = "signature verified with " + key;
  }
  Manifest m = parse_manifest(bytes, path);
  m.sha256 = sha256_hex(bytes);
  if (info) *info = si;
  return m;
}

}  // namespace lt::lease
