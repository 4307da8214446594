#!/usr/bin/env bash
# What a lost rank costs under `launch --restarts`: a tiny 4-rank CPU job on this host
# (global batch 12, so 3 ranks keep it), one rank killed with SIGKILL at a random step, TRIALS
# times. For each trial: seconds from the kill to the restarted job's first completed step
# (progress.json of attempt 2), and the steps lost (the last step completed before the kill
# minus the checkpoint the restart resumed from). At the end: medians, the loss difference of
# every trial's run against an uninterrupted 4-rank one (`report --against`; the last trial's
# plot is written to OUT/report/), and, as the control, that of an uninterrupted 3-rank run of
# the same global batch (micro_batch 2 x grad_accum 2): fp32 sums in another order drift apart
# over the steps the same way, restart or not.
#
#   benchmarks/elastic-restart.sh [--trials N] [--interval K] [--out DIR] [--build DIR]
#
# Prints one line per trial and a JSON summary (OUT/summary.json). Needs a built tree and
# mpirun; 4 ranks on fewer cores are oversubscribed, so the seconds are this machine's.
set -euo pipefail
trials=5 interval=10 out="" build=build
while [ $# -gt 0 ]; do
  case "$1" in
    --trials) trials="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "elastic-restart.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$trials$interval" in *[!0-9]*) echo "elastic-restart.sh: --trials and --interval take positive integers" >&2; exit 2 ;; esac
[ "$trials" -ge 1 ] && [ "$interval" -ge 2 ] || { echo "elastic-restart.sh: expected --trials >= 1 and --interval >= 2" >&2; exit 2; }
cd "$(dirname "$0")/.."
lt="$(pwd)/$build/leasetrain"
[ -x "$lt" ] || { echo "elastic-restart.sh: $lt: not built (make build)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "elastic-restart.sh: mpirun not found (scripts/setup.sh installs openmpi-bin)" >&2; exit 2; }
[ -n "$out" ] || out="$(mktemp -d "${TMPDIR:-/tmp}/elastic-restart.XXXXXX")"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
steps=$((interval * 5))

# Shards from text every Debian system has; the 2-layer model of the data-parallel tests.
cat /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 > "$out/text.txt"
"$lt" data prepare --input "$out/text.txt" --output "$out/d" >/dev/null
cat > "$out/job.toml" <<EOF
[model]
n_layer = 2
n_head = 2
n_embd = 32
block_size = 32
vocab_size = 256
[data]
train = "$out/d_train_*.bin"
val = "$out/d_val_*.bin"
[optim]
lr = 1e-2
warmup_steps = 5
[train]
micro_batch = 3
seq_len = 32
grad_accum = 1
steps = $steps
eval_interval = $interval
eval_batches = 2
checkpoint_interval = $interval
log_interval = $steps
[dist]
EOF

rank_pid() {  # the pid of rank $2 of job dir $1 (its environment says so), or nothing
  local p
  for p in /proc/[0-9]*; do
    env=$( { tr '\0' '\n' < "$p/environ"; } 2>/dev/null) || continue
    if grep -qx "LEASETRAIN_JOB_DIR=$1" <<<"$env" && grep -qx "OMPI_COMM_WORLD_RANK=$2" <<<"$env"; then
      echo "${p#/proc/}"; return
    fi
  done
}
last_step() { tail -n 1 "$1" 2>/dev/null | sed -n 's/.*"step":\([0-9]*\).*/\1/p'; }
now() { date +%s.%N; }

results=()
for t in $(seq 1 "$trials"); do
  run="$out/run-$t" job="$out/job-$t"
  kill_at=$((interval + 1 + RANDOM % (2 * interval)))  # a step in (K, 3K]
  victim_rank=$((1 + RANDOM % 3))
  "$lt" launch --np 4 --restarts 1 --job-dir "$job" -- train --config "$out/job.toml" --out "$run" \
    >"$out/launch-$t.out" 2>"$out/launch-$t.err" &
  launch=$!
  while s=$(last_step "$run/metrics.jsonl"); [ "${s:-0}" -lt "$kill_at" ]; do
    kill -0 "$launch" 2>/dev/null || { echo "trial $t: the job ended before step $kill_at (see $out/launch-$t.err)" >&2; exit 1; }
    sleep 0.01
  done
  pid=$(rank_pid "$job" "$victim_rank")
  done_before=$(last_step "$run/metrics.jsonl")
  kill -9 "$pid"
  t0=$(now)
  # Attempt 2's rank 0 writes progress.json after its first step (attempt 1's is archived first).
  until [ -d "$job/attempt-1" ] && [ -f "$job/progress.json" ]; do
    kill -0 "$launch" 2>/dev/null || break
    sleep 0.01
  done
  t1=$(now)
  wait "$launch" || { echo "trial $t: launch exited $? (see $out/launch-$t.err)" >&2; exit 1; }
  resumed=$(sed -n 's/.*"start_step": *\([0-9]*\).*/\1/p' "$job/attempt-2/progress.json" 2>/dev/null || true)
  [ -n "$resumed" ] || resumed=$(sed -n 's/.*"start_step": *\([0-9]*\).*/\1/p' "$job/progress.json")
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  lost=$((done_before - resumed))
  printf 'trial %d: rank %d killed after step %d; resumed from step %d (%d steps lost); first step %.2f s after the kill\n' \
    "$t" "$victim_rank" "$done_before" "$resumed" "$lost" "$secs"
  results+=("{\"trial\": $t, \"rank\": $victim_rank, \"killed_after_step\": $done_before, \"resumed_from\": $resumed, \"steps_lost\": $lost, \"seconds_to_first_step\": $secs}")
done

# The same job uninterrupted on 4 ranks, every trial's run against it (the last one's plot),
# and the control: uninterrupted on 3 ranks with the same global batch.
"$lt" launch --np 4 --job-dir "$out/job-straight" -- train --config "$out/job.toml" --out "$out/straight" \
  >"$out/straight.out" 2>"$out/straight.err"
sed 's/^micro_batch = 3$/micro_batch = 2/; s/^grad_accum = 1$/grad_accum = 2/' "$out/job.toml" > "$out/job3.toml"
"$lt" launch --np 3 --job-dir "$out/job-straight3" -- train --config "$out/job3.toml" --out "$out/straight3" \
  >"$out/straight3.out" 2>"$out/straight3.err"
for t in $(seq 1 "$trials"); do
  "$lt" report "$out/run-$t" --against "$out/straight" --out "$out/report-$t" --json > "$out/report-$t.json"
done
rm -rf "$out/report"
cp -r "$out/report-$trials" "$out/report"
"$lt" report "$out/straight3" --against "$out/straight" --out "$out/report-control" --json > "$out/report-control.json"

python3 - "$out" "$interval" "$trials" "${results[@]}" <<'EOF'
import json, statistics, sys
out, interval, trials = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [json.loads(r) for r in sys.argv[4:]]
for r in rows:
    r["against_uninterrupted"] = json.load(open(f"{out}/report-{r['trial']}.json"))["against"]
control = json.load(open(f"{out}/report-control.json"))["against"]
s = {"checkpoint_interval": interval, "trials": rows,
     "median_seconds_to_first_step": statistics.median(r["seconds_to_first_step"] for r in rows),
     "median_steps_lost": statistics.median(r["steps_lost"] for r in rows),
     "mean_steps_lost": statistics.mean(r["steps_lost"] for r in rows),
     "control_3_ranks_uninterrupted": control}
json.dump(s, open(f"{out}/summary.json", "w"), indent=2)
print(f"median {s['median_seconds_to_first_step']:.2f} s from the kill to the first step of the restart; "
      f"steps lost: median {s['median_steps_lost']}, mean {s['mean_steps_lost']:.1f} at a checkpoint every {interval} "
      f"(expected about {(interval - 1) / 2:.1f} for a kill at a uniformly random step)")
for r in rows:
    a = r["against_uninterrupted"]
    print(f"trial {r['trial']} (resumed from step {r['resumed_from']} on 3 ranks) against the uninterrupted 4-rank run: "
          f"largest loss difference {a['max_rel_loss_diff']:.2g} relative (step {a['worst_step']})")
print(f"control, uninterrupted on 3 ranks with the same global batch: {control['max_rel_loss_diff']:.2g} relative "
      f"(step {control['worst_step']}): fp32 sums in another order drift the same way")
print(f"plot of the last trial in {out}/report/; wrote {out}/summary.json")
EOF
