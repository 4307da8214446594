#!/usr/bin/env bash
# Runs every libFuzzer target for a bounded time (`make fuzz`): FUZZ_SECONDS each (default 60),
# starting from the seed corpus in tests/fuzz/corpus/<target> (read only; new inputs go to
# BUILD/corpus/<target>). Crashes, sanitizer reports, leaks, timeouts (-timeout=10) and
# out-of-memory inputs land in BUILD/artifacts/; the script fails if any target found one.
# Usage: tests/fuzz/run.sh BUILD_DIR [TARGET...]
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:?usage: run.sh BUILD_DIR [TARGET...]}
shift
SECONDS_EACH=${FUZZ_SECONDS:-60}
# The largest input worth trying per target: a few times its largest seed.
declare -A MAX_LEN=([safetensors]=8192 [model_index]=8192 [shard]=4096 [config]=4096 [trainer_json]=4096
                    [manifest]=16384 [usage_log]=8192 [tokenizer]=16384)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors model_index shard config trainer_json manifest usage_log tokenizer)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/cmake/sanitizers/lsan.supp:print_suppressions=0}
# One thread per process: the readers are what is fuzzed, not OpenMP.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$BUILD/artifacts"
failed=()
for t in "${targets[@]}"; do
  bin="$BUILD/fuzz/fuzz_$t"
  [ -x "$bin" ] || { echo "fuzz: $bin missing (make fuzz builds it)" >&2; exit 1; }
  mkdir -p "$BUILD/corpus/$t"
  # Every input a fuzzer ever found (tests/fuzz/findings/<target>-*) is replayed first: each
  # is a crash that was fixed and must stay fixed.
  shopt -s nullglob
  found=(tests/fuzz/findings/"$t"-*)
  shopt -u nullglob
  if [ ${#found[@]} -gt 0 ] && ! "$bin" -runs=1 "${found[@]}" >"$BUILD/artifacts/$t-findings.log" 2>&1; then
    failed+=("$t (a past finding: see $BUILD/artifacts/$t-findings.log)")
    grep -E "ERROR|SUMMARY|uncaught|Running: " "$BUILD/artifacts/$t-findings.log" | head -8 >&2
    continue
  fi
  echo "fuzz: $t for ${SECONDS_EACH}s (${#found[@]} past findings replayed)"
  if ! "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len="${MAX_LEN[$t]}" \
       -artifact_prefix="$BUILD/artifacts/$t-" -print_final_stats=1 \
       "$BUILD/corpus/$t" "tests/fuzz/corpus/$t" >"$BUILD/artifacts/$t.log" 2>&1; then
    failed+=("$t")
    grep -E "ERROR|SUMMARY|Test unit written|uncaught|==[0-9]+==" "$BUILD/artifacts/$t.log" | head -8 >&2
  fi
  grep -E "stat::number_of_executed_units|cov:" "$BUILD/artifacts/$t.log" | tail -2
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs and logs in $BUILD/artifacts/)" >&2
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${SECONDS_EACH}s with no finding"
