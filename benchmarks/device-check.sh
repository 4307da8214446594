#!/usr/bin/env bash
# benchmarks/device-check.sh: the CUDA backend's check on a bare GPU machine, in under 8 minutes.
#
# On the GPU machine (repository root; the machine has the CUDA toolkit, CMake, ninja and a C++
# compiler, maybe not MPI, CLI11, GoogleTest, toml++, nlohmann-json or OpenBLAS, and no internet):
#
#     bash benchmarks/device-check.sh [OUTDIR]        # OUTDIR defaults to $OUT, else ./build-device-check
#
# It configures and builds the CUDA tree for this GPU's architecture only (e.g. 90a on H100/H200),
# runs the `gpu` CTest label, `leasetrain bench gemm` and `bench attention` (when this binary has
# them; on Hopper also the wgmma GEMM at 8192^3 and GPT-2 350M's shapes, and the wgmma attention
# forward beside the mma.sync one), a short GPT-2 124M
# training run on --device cuda (hand-written GEMM, then cuBLAS, on Hopper also mma.sync forced), and a
# tiny run that checkpoints and resumes on the device; it writes OUTDIR/summary.json (every
# stage's exit status, seconds and key numbers), the benchmarks' JSON, the 124M run's
# metrics.jsonl and OUTDIR/logs.tgz (every stage's full log). Each stage has its own timeout and
# a share of an overall deadline (LT_CHECK_BUDGET_S, 450 s by default); a failing stage does not
# stop the others. Exit status: 0 when every stage passed, 1 otherwise.
#
# WHAT TO CARRY (the device tool's `carry` list): build-deps
#   build-deps/prefix.tar.gz holds the build dependencies such a machine may lack, copied from
#   a Debian 12 development machine: the headers and CMake packages of CLI11, toml++ (and its
#   library), nlohmann-json and GoogleTest/GoogleMock (static libraries), and OpenBLAS (the
#   OpenMP build, with libgfortran and libquadmath). About 13 MB. Make it there, once, with
#
#     bash benchmarks/device-check.sh --make-deps     # writes build-deps/prefix.tar.gz
#
#   (build-*/ is git-ignored, so it travels only when carried). Where the machine has a
#   package itself, the carried one is used anyway, so every run builds against the same.
#
# Example device call: command "bash benchmarks/device-check.sh", carry ["build-deps"],
# timeout_s 540. The build is configured without MPI (-DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON) and
# without the emulated tests. Overrides, for trying the script elsewhere: LT_CHECK_ARCH (e.g. 80),
# LT_CHECK_BUDGET_S, LT_CHECK_BUILD_S (the build stage's limit, 300), LT_CHECK_WORK (the work
# directory, /tmp/lt-device-check).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPS_TGZ="$ROOT/build-deps/prefix.tar.gz"

# ---- --make-deps: build the carry bundle on the development machine ------------------------
if [ "${1:-}" = "--make-deps" ]; then
  set -e
  ML=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
  STAGE=$(mktemp -d)
  P="$STAGE/prefix"
  copy() {  # copy() PATH...: each path (file, link or directory) to the same place under $P
    for f in "$@"; do
      [ -e "$f" ] || { echo "device-check --make-deps: missing $f (install the Debian package)" >&2; exit 1; }
      mkdir -p "$P$(dirname "$f")"
      cp -a "$f" "$P$(dirname "$f")/"
    done
  }
  copy /usr/include/CLI /usr/share/cmake/CLI11
  copy /usr/include/nlohmann /usr/share/cmake/nlohmann_json
  copy /usr/include/toml++ /usr/lib/$ML/cmake/tomlplusplus /usr/lib/$ML/libtomlplusplus.so \
       /usr/lib/$ML/libtomlplusplus.so.3 "$(readlink -f /usr/lib/$ML/libtomlplusplus.so.3)"
  copy /usr/include/gtest /usr/include/gmock /usr/lib/$ML/cmake/GTest \
       /usr/lib/$ML/libgtest.a /usr/lib/$ML/libgtest_main.a /usr/lib/$ML/libgmock.a /usr/lib/$ML/libgmock_main.a
  # OpenBLAS: the library the tree links (real files, not the alternatives symlinks) and CBLAS headers.
  OB=/usr/lib/$ML/openblas-openmp
  [ -e $OB/libopenblas.so ] || OB=$(dirname "$(readlink -f /usr/lib/$ML/libopenblas.so)")
  mkdir -p "$P/usr/lib/$ML/openblas" "$P/usr/include/openblas"
  cp -L $OB/libopenblas.so "$P/usr/lib/$ML/openblas/libopenblas.so.0"
  ln -sf libopenblas.so.0 "$P/usr/lib/$ML/openblas/libopenblas.so"
  for h in cblas.h openblas_config.h; do cp -L "/usr/include/$ML/$h" "$P/usr/include/openblas/$h"; done
  for l in libgfortran.so.5 libquadmath.so.0; do cp -L "/usr/lib/$ML/$l" "$P/usr/lib/$ML/openblas/$l"; done
  mkdir -p "$ROOT/build-deps"
  tar -C "$STAGE" -czf "$DEPS_TGZ" prefix
  rm -rf "$STAGE"
  echo "wrote $DEPS_TGZ ($(du -h "$DEPS_TGZ" | cut -f1)); carry: build-deps"
  exit 0
fi

# ---- the check ---------------------------------------------------------------------------------
OUTDIR=${1:-${OUT:-$ROOT/build-device-check}}  # build-*/ is git-ignored
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=${LT_CHECK_WORK:-/tmp/lt-device-check}
BUILD="$WORK/build"
LOGS="$WORK/logs"
rm -rf "$LOGS" "$WORK/runs" "$WORK/data"
mkdir -p "$WORK" "$LOGS" "$WORK/runs" "$WORK/data"
BUDGET=${LT_CHECK_BUDGET_S:-450}
T0=$(date +%s)
JOBS=$(nproc 2>/dev/null || echo 8)
STAGES_TSV="$WORK/stages.tsv"
: >"$STAGES_TSV"
FAILED=0

now() { date +%s; }
left() { echo $((BUDGET - ($(now) - T0))); }
note() { echo "[device-check $(($(now) - T0))s] $*"; }

# stage NAME LIMIT_S MIN_S CMD...: runs CMD (a program or one of the functions below, in a child
# bash: functions and the variables they read are exported) with a timeout of min(LIMIT_S, time
# left), logging to $LOGS/NAME.log; skipped (rc "skipped") when fewer than MIN_S seconds are left.
stage() {
  local name=$1 limit=$2 min=$3
  shift 3
  local l
  l=$(left)
  if [ "$l" -lt "$min" ]; then
    note "$name: skipped ($l s left of the budget)"
    printf '%s\tskipped\t0\t%s\n' "$name" "$limit" >>"$STAGES_TSV"
    FAILED=1
    return 1
  fi
  [ "$limit" -gt "$l" ] && limit=$l
  note "$name: start (limit ${limit}s)"
  local s rc
  s=$(now)
  timeout -k 10 "$limit" bash -c '"$@"' "stage-$name" "$@" >"$LOGS/$name.log" 2>&1 </dev/null
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(now) - s))" "$limit" >>"$STAGES_TSV"
  if [ "$rc" -ne 0 ]; then
    FAILED=1
    note "$name: FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ', timed out')); last lines:"
    tail -n 15 "$LOGS/$name.log" | sed 's/^/    /'
  else
    note "$name: ok ($(($(now) - s)) s)"
  fi
  return "$rc"
}

# ---- environment ----
env_info() {
  set -x
  uname -a
  nvidia-smi || true
  nvidia-smi --query-gpu=name,compute_cap,clocks.sm,clocks.max.sm,memory.total,driver_version --format=csv || true
  nvcc --version || true
  cmake --version || true
  ninja --version || true
  "${CXX:-c++}" --version || true
  nproc
  free -g || true
  df -h "$WORK" || true
  ls "$DEPS_TGZ" || true
}
export -f env_info
export ROOT WORK BUILD LOGS OUTDIR DEPS_TGZ JOBS
stage env 30 5 env_info

# The GPU's architecture for CMAKE_CUDA_ARCHITECTURES: 90a on Hopper (sm_90a instructions), else
# major*10+minor; "80;90a" when nvidia-smi cannot say.
CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
case "$CAP" in
  90) ARCH=90a ;;
  "") ARCH="80;90a" ;;
  *) ARCH=$CAP ;;
esac
ARCH=${LT_CHECK_ARCH:-$ARCH}  # override, e.g. to try the script on a machine without a GPU
note "CUDA architecture: $ARCH"
export ARCH

# ---- dependencies: the carried prefix ----
PREFIX="$WORK/prefix"
deps() {
  rm -rf "$PREFIX"
  mkdir -p "$WORK"
  tar -C "$WORK" -xzf "$DEPS_TGZ"
  find "$PREFIX" -maxdepth 4 -type d | head -n 40
}
export -f deps
export PREFIX
DEPS_OK=0
if [ -f "$DEPS_TGZ" ]; then
  stage deps 60 5 deps && DEPS_OK=1
else
  note "no $DEPS_TGZ: relying on the machine's own packages (carry build-deps to be sure)"
fi
CMAKE_DEPS=""  # -D options, space-separated (the paths have no spaces)
if [ "$DEPS_OK" = 1 ]; then
  ML=$(ls "$PREFIX/usr/lib" | grep -- '-linux-gnu$' | head -n1)
  LIB="$PREFIX/usr/lib/$ML"
  CMAKE_DEPS="-DCMAKE_PREFIX_PATH=$PREFIX/usr -DCLI11_DIR=$PREFIX/usr/share/cmake/CLI11"
  CMAKE_DEPS+=" -Dnlohmann_json_DIR=$PREFIX/usr/share/cmake/nlohmann_json -Dtomlplusplus_DIR=$LIB/cmake/tomlplusplus"
  CMAKE_DEPS+=" -DGTest_DIR=$LIB/cmake/GTest -DOPENBLAS_LIBRARY=$LIB/openblas/libopenblas.so"
  CMAKE_DEPS+=" -DCBLAS_INCLUDE_DIR=$PREFIX/usr/include/openblas"
  export LD_LIBRARY_PATH="$LIB/openblas:$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export CMAKE_DEPS

# ---- configure and build ----
configure() {
  local deps
  read -r -a deps <<<"$CMAKE_DEPS"
  # Without MPI even where it is installed: the check is one process, and this proves the tree
  # builds without it (as the bare machines it is meant for).
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
    -DLEASETRAIN_CUDA_EMULATED_TESTS=OFF -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON ${deps[@]+"${deps[@]}"}
}
export -f configure
stage configure 90 20 configure
build() {
  # Only what the check runs: the CLI and the GPU test binaries.
  ninja -C "$BUILD" -j "$JOBS" leasetrain test_kernels_gpu test_model_gpu test_device_cli
}
export -f build
stage build "${LT_CHECK_BUILD_S:-300}" 30 build
LT="$BUILD/leasetrain"
export LT

# ---- GPU tests ----
gpu_tests() {
  cd "$BUILD" || return 1
  ctest -L gpu --output-on-failure --timeout 240 -j 1 --output-junit "$WORK/gpu-tests.xml" | tee "$WORK/ctest.out"
  local rc=${PIPESTATUS[0]}
  if grep -q '(Skipped)' "$WORK/ctest.out"; then  # on a GPU machine a skipped GPU test is a failure
    echo "device-check: GPU tests were SKIPPED: this process sees no usable CUDA device"
    [ "$rc" -eq 0 ] && rc=3
  fi
  return "$rc"
}
export -f gpu_tests
[ -x "$LT" ] && stage gpu-tests 150 20 gpu_tests

# ---- training data: the repository's own text, byte-level tokens ----
data() {
  find "$ROOT" -path "$ROOT/build*" -prune -o -path "$ROOT/.git" -prune -o -type f \
    \( -name '*.md' -o -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.toml' \
       -o -name '*.py' -o -name '*.txt' -o -name '*.sh' \) -print | sort >"$WORK/data/files.txt"
  wc -l <"$WORK/data/files.txt"
  # shellcheck disable=SC2046
  "$LT" data prepare --input $(cat "$WORK/data/files.txt") --output "$WORK/data/text" --val-fraction 0.05
  ls -la "$WORK/data"
}
export -f data
[ -x "$LT" ] && stage data 30 5 data

# ---- GPT-2 124M on the GPU ----
write_124m() {  # write_124m FILE STEPS
  cat >"$1" <<EOF
[model]
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
vocab_size = 50257

[data]
train = "$WORK/data/text_train_*.bin"
val = "$WORK/data/text_val_*.bin"

[optim]
lr = 6e-4
min_lr = 6e-5
warmup_steps = 5
weight_decay = 0.1
grad_clip = 1.0

[train]
micro_batch = 16
seq_len = 1024
grad_accum = 1
steps = $2
eval_interval = 0
eval_batches = 2
checkpoint_interval = 0
log_interval = 5
seed = 1337
EOF
}
train_124m() {  # train_124m NAME STEPS GEMM [ATTENTION]
  write_124m "$WORK/$1.toml" "$2"
  rm -rf "$WORK/runs/$1"
  "$LT" train --config "$WORK/$1.toml" --out "$WORK/runs/$1" --device cuda --gemm "$3" ${4:+--attention "$4"}
}
export -f write_124m train_124m
if [ -x "$LT" ]; then
  stage train-124m 120 30 train_124m gpt2-124m 40 mma
  cp "$WORK/runs/gpt2-124m/metrics.jsonl" "$OUTDIR/metrics_124m.jsonl" 2>/dev/null || true
fi

# ---- kernel benchmarks (when this build's CLI has them) ----
bench_has() { "$LT" bench --help 2>/dev/null | grep -q "^  $1 "; }  # listed among bench's subcommands
if [ -x "$LT" ] && bench_has gemm; then
  stage bench-gemm 90 15 "$LT" bench gemm --iters 20 --warmup 3 --json "$OUTDIR/bench_gemm.json"
  # Every CTA tile at the 4096^3 target, to set gemm()'s Auto rule from measurements.
  stage bench-gemm-tiles 60 15 "$LT" bench gemm --tiles --shape 4096x4096x4096 --iters 20 --warmup 3 \
    --json "$OUTDIR/bench_gemm_tiles.json"
  # Hopper (sm_90a builds): the wgmma/TMA kernel against cuBLAS and mma.sync (the x_mma column) at
  # 8192^3 and GPT-2 350M's GEMMs at 8192 tokens (C = 1024); the default shapes above already
  # hold 4096^3 and 124M's, with a wgmma row each on this GPU.
  if [ "$ARCH" = 90a ]; then
    stage bench-gemm-hopper 60 15 "$LT" bench gemm --shape 8192x8192x8192 --shape 8192x3072x1024 \
      --shape 8192x4096x1024 --shape 8192x1024x4096 --shape 8192x1024x1024 --iters 20 --warmup 3 \
      --json "$OUTDIR/bench_gemm_hopper.json"
  fi
else
  note "bench-gemm: this leasetrain has no 'bench gemm' (launcher/cmd_bench.cpp must call add_gpu_bench_commands)"
  printf 'bench-gemm\tmissing\t0\t0\n' >>"$STAGES_TSV"
fi
if [ -x "$LT" ] && bench_has attention; then
  # T = 512 .. 8192 (the default --max-seq) at head dims 64 and 128, forward and backward; on
  # Hopper (sm_90a builds) each forward also has a wgmma row with its ratio to mma.sync (x_mma).
  stage bench-attention 90 15 "$LT" bench attention --iters 10 --warmup 2 --json "$OUTDIR/bench_attention.json"
else
  note "bench-attention: this leasetrain has no 'bench attention'"
  printf 'bench-attention\tmissing\t0\t0\n' >>"$STAGES_TSV"
fi

# ---- the benchmark suite (one JSON with the machine and its computed peak) and lease acceptance ----
[ -x "$LT" ] && stage suite-quick 120 20 "$LT" bench suite --quick --device cuda --json "$OUTDIR/suite.json"
[ -x "$LT" ] && stage accept 60 10 "$LT" bench accept --json "$OUTDIR/accept.json" --suite-json "$OUTDIR/accept_suite.json"

# ---- tiny model: train, checkpoint, resume on the device; fp32 mode ----
tiny() {
  local cfg="$WORK/tiny.toml"
  sed -e "s|^train = .*|train = \"$WORK/data/text_train_*.bin\"|" -e "s|^val = .*|val = \"$WORK/data/text_val_*.bin\"|" \
    "$ROOT/configs/tiny.toml" >"$cfg"
  rm -rf "$WORK/runs/tiny" "$WORK/runs/tiny-fp32"
  "$LT" train --config "$cfg" --out "$WORK/runs/tiny" --device cuda --steps 60 &&
    "$LT" train --config "$cfg" --out "$WORK/runs/tiny" --device cuda --steps 80 --resume &&
    "$LT" train --config "$cfg" --out "$WORK/runs/tiny-fp32" --device cuda --precision fp32 --steps 20 &&
    "$LT" eval --checkpoint "$WORK/runs/tiny" --data "$WORK/data/text_val_*.bin" --batch 4 --seq 128 --batches 4 \
      --device cuda &&
    "$LT" sample --checkpoint "$WORK/runs/tiny" --prompt "The " --tokens 64 --device cuda
}
export -f tiny
[ -x "$LT" ] && stage tiny-resume 60 10 tiny

# ---- the cuBLAS baseline end to end ----
[ -x "$LT" ] && stage train-124m-cublas 60 20 train_124m gpt2-124m-cublas 20 cublas
# Hopper: the step with the mma.sync GEMM and attention forced (train-124m above ran Auto's
# choice, the wgmma kernels): the Hopper kernels' gain on the whole step.
[ -x "$LT" ] && [ "$ARCH" = 90a ] && stage train-124m-mma-sync 60 20 train_124m gpt2-124m-mma-sync 20 mma.sync mma.sync

# ---- summary ----
note "writing $OUTDIR/summary.json"
tar -C "$WORK" -czf "$OUTDIR/logs.tgz" logs stages.tsv $( [ -f "$WORK/gpu-tests.xml" ] && echo gpu-tests.xml ) \
  2>/dev/null || true
summarize() {
  python3 - "$STAGES_TSV" "$WORK" "$OUTDIR" "$ARCH" "$BUDGET" "$(($(now) - T0))" <<'PY'
import json, os, re, sys, glob
tsv, work, outdir, arch, budget, elapsed = sys.argv[1:7]
stages = []
for line in open(tsv):
    name, rc, secs, limit = line.rstrip("\n").split("\t")
    s = {"stage": name, "exit": int(rc) if rc.lstrip("-").isdigit() else rc, "seconds": int(secs), "limit_s": int(limit)}
    log = os.path.join(work, "logs", name + ".log")
    if os.path.exists(log):
        text = open(log, errors="replace").read()
        s["log_tail"] = text[-2000:] if s["exit"] != 0 else text[-400:]
    stages.append(s)
out = {"arch": arch, "budget_s": int(budget), "elapsed_s": int(elapsed), "stages": stages}
def read(p):
    try:
        return open(p, errors="replace").read()
    except OSError:
        return ""
envlog = read(os.path.join(work, "logs", "env.log"))
m = re.search(r"^(NVIDIA [^,\n]+), ([0-9.]+), ([^\n]+)$", envlog, re.M)
if m:
    out["gpu"] = {"name": m.group(1), "compute_cap": m.group(2), "smi": m.group(3)}
tests = read(os.path.join(work, "logs", "gpu-tests.log"))
m = re.search(r"(\d+)% tests passed, (\d+) tests failed out of (\d+)", tests)
if m:
    skipped = re.findall(r"\d+ - (\S+) \(Skipped\)", tests)
    out["gpu_tests"] = {"failed": int(m.group(2)), "total": int(m.group(3)), "skipped": len(skipped),
                        "failed_names": re.findall(r"\d+ - (\S+) \((?:Failed|Timeout|SEGFAULT|Subprocess aborted)\)",
                                                   tests)}
    if skipped:
        out["gpu_tests"]["skipped_names"] = skipped[:40]
out["gpu_test_info"] = re.findall(r"\[   INFO   \] ([^\n]+)", tests)[:20]
for run in ("gpt2-124m", "gpt2-124m-cublas", "gpt2-124m-mma-sync", "tiny", "tiny-fp32"):
    p = os.path.join(work, "runs", run, "metrics.jsonl")
    rows = [json.loads(l) for l in read(p).splitlines() if l.strip()]
    if not rows:
        continue
    tail = rows[len(rows) // 2:] if len(rows) > 4 else rows
    tps = sorted(r["tokens_per_s"] for r in tail)
    ms = sorted(r["ms"] for r in tail)
    out.setdefault("training", {})[run] = {
        "steps": rows[-1]["step"], "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"],
        "median_tokens_per_s_second_half": tps[len(tps) // 2], "median_ms_second_half": ms[len(ms) // 2],
        "val_loss": next((r["val_loss"] for r in reversed(rows) if "val_loss" in r), None)}
for b in ("bench_gemm", "bench_gemm_tiles", "bench_gemm_hopper", "bench_attention"):
    p = os.path.join(outdir, b + ".json")
    if os.path.exists(p):
        try:
            out[b] = json.load(open(p))
        except ValueError:
            out[b] = "unreadable"
out["all_passed"] = all(s["exit"] == 0 for s in stages)
json.dump(out, open(os.path.join(outdir, "summary.json"), "w"), indent=1)
print(json.dumps({k: out[k] for k in out if k not in ("bench_gemm", "bench_gemm_tiles", "bench_gemm_hopper", "bench_attention")}, indent=1)[:6000])
PY
}
if command -v python3 >/dev/null 2>&1 && summarize; then
  :
else  # no python3: the stage table alone
  {
    echo '{"stages": ['
    sep=""
    while IFS=$'\t' read -r name rc secs limit; do
      printf '%s{"stage": "%s", "exit": "%s", "seconds": %s, "limit_s": %s}' "$sep" "$name" "$rc" "$secs" "$limit"
      sep=$',\n'
    done <"$STAGES_TSV"
    printf '\n], "arch": "%s", "elapsed_s": %s}\n' "$ARCH" "$(($(now) - T0))"
  } >"$OUTDIR/summary.json"
  cat "$OUTDIR/summary.json"
fi
note "done in $(($(now) - T0)) s; $( [ "$FAILED" = 0 ] && echo 'every stage passed' || echo 'some stages FAILED or were skipped')"
exit "$FAILED"
