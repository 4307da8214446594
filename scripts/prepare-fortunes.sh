#!/usr/bin/env bash
# Builds the default training data: byte-level token shards of the English text in Debian's
# fortunes package. Usage: prepare-fortunes.sh LT_BINARY PREFIX (the Makefile's `make data`).
set -euo pipefail
export LC_ALL=C  # the file order, and so the token stream, must not depend on the locale

if [ $# -ne 2 ]; then
  echo "usage: $0 LT_BINARY PREFIX   (e.g. $0 build/leasetrain data/fortunes)" >&2
  exit 2
fi
lt=$1
prefix=$2
dir=/usr/share/games/fortunes

if [ -f "${prefix}_train_000000.bin" ] && [ -f "${prefix}_val_000000.bin" ]; then
  echo "prepare-fortunes: ${prefix}_train_000000.bin and ${prefix}_val_000000.bin already exist; delete them to rebuild"
  exit 0
fi
if [ ! -x "$lt" ]; then
  echo "prepare-fortunes: $lt is not an executable; build leasetrain first (make build)" >&2
  exit 1
fi

# fortunes-min also installs $dir but holds a single file, so ask dpkg for the full package.
if command -v dpkg-query >/dev/null &&
   ! dpkg-query -W -f='${Status}' fortunes 2>/dev/null | grep -q "ok installed"; then
  echo "prepare-fortunes: Debian package 'fortunes' is not installed; run scripts/setup.sh as root (or apt-get install fortunes)" >&2
  exit 1
fi

# Each fortune file comes with a .dat index (binary) and a .u8 symlink to itself; art and
# ascii-art are drawings, not English text. Subdirectories (fortunes-off) are left out too.
inputs=()
for f in "$dir"/*; do
  if [ ! -f "$f" ] || [ -L "$f" ]; then continue; fi
  case "$(basename "$f")" in
    *.dat | *.u8 | art | ascii-art) continue ;;
  esac
  inputs+=("$f")
done
if [ ${#inputs[@]} -eq 0 ]; then
  echo "prepare-fortunes: no fortune text files in $dir; install the Debian package 'fortunes' (scripts/setup.sh)" >&2
  exit 1
fi

echo "prepare-fortunes: tokenizing ${#inputs[@]} files from $dir into ${prefix}_{train,val}_*.bin"
exec "$lt" data prepare --input "${inputs[@]}" --output "$prefix"
