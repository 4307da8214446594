#!/usr/bin/env bash
# Installs the Debian packages leasetrain builds, tests and trains with, when any is missing.
# Run as root on Debian 12 (the Makefile calls it before every build). Nothing is downloaded
# but Debian packages.
set -euo pipefail
PKGS=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-openmp-dev
  libcli11-dev libtomlplusplus-dev nlohmann-json3-dev libssl-dev libpcre2-dev
  libgtest-dev googletest
  openmpi-bin libopenmpi-dev
  python3 python3-matplotlib
  fortunes libsodium23 openssl iproute2
)
# `setup.sh --bench` adds the peers the benchmarks compare against (PyTorch CPU).
if [ "${1:-}" = "--bench" ]; then PKGS+=(python3-torch python3-numpy); fi
# `setup.sh --fuzz` adds what `make fuzz` builds with: clang, its compiler-rt (the ASan/UBSan
# runtimes and libFuzzer, libclang_rt.fuzzer, which -fsanitize=fuzzer links), clang's OpenMP
# runtime and llvm-symbolizer for readable stacks. `make check-sanitize` uses GCC's own
# libasan/libubsan, which build-essential already brings.
if [ "${1:-}" = "--fuzz" ]; then PKGS+=(clang libclang-rt-dev libomp-dev llvm); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "setup: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing Debian packages (${missing[*]}); run 'make' as root or install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
