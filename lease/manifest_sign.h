// The operator's Ed25519 signature over a manifest: a detached signature file beside it
// (<manifest>.sig, base64 of 64 bytes) over the manifest's exact bytes, verified with the
// operator's public key before any field is trusted. Keys are the PEM files OpenSSL writes
// (`openssl genpkey -algorithm ed25519`), so operators can sign with openssl or with
// `leasetrain manifest sign`.
//
// Ed25519 comes from libsodium, loaded at run time (libsodium.so.23): the launcher builds
// without it, and a node without it refuses signed manifests instead of accepting them.
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "lease/manifest.h"

namespace lt::lease {

// Where a node's trusted operator key lives. When this file exists it is the only key
// accepted: a tenant cannot point the launcher at a key of its own.
inline constexpr const char* kSystemOperatorKey = "/etc/leasetrain/operator.pub";

struct SignatureInfo {
  bool verified = false;   // a signature was present and checked against key_path
  std::string key_path;    // the key used, "" when none is configured
  std::string note;        // one line for plan/launch output
};

// Reads the manifest once, checks its signature, parses and validates the same bytes.
//  - key configured (the system key, else `key_flag`, else $LEASETRAIN_OPERATOR_KEY):
//    <path>.sig must exist and verify, or UserError;
//  - no key configured: an unsigned manifest is accepted (noted); a signed one is refused,
//    since nothing can check it.
Manifest load_verified_manifest(const std::string& path, const std::string& key_flag,
                                SignatureInfo* info = nullptr);

// The key the rules above select ("" when none); UserError when key_flag contradicts the
// system key.
std::string select_operator_key(const std::string& key_flag);

bool ed25519_available();  // libsodium could be loaded
// Keys: PEM (SPKI public / PKCS#8 private, as OpenSSL writes them).
std::array<uint8_t, 32> read_public_key(const std::string& path);
std::array<uint8_t, 32> read_private_seed(const std::string& path);
// Writes <prefix>.key (mode 0600) and <prefix>.pub.
void generate_keypair(const std::string& prefix);
// Signs the file's bytes, writes <path>.sig atomically; returns the signature (base64).
std::string sign_file(const std::string& path, const std::string& private_key_path);
bool ed25519_verify(const std::string& message, const std::array<uint8_t, 64>& sig,
                    const std::array<uint8_t, 32>& public_key);

std::string base64_encode(const uint8_t* data, size_t n);
std::string base64_decode(const std::string& text);  // whitespace ignored; UserError if invalid

}  // namespace lt::lease
