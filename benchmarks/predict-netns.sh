#!/usr/bin/env bash
# The step-time model against two "nodes" whose link is rate-limited, so that communication
# cannot hide: two network namespaces joined by a veth pair shaped with tc's token bucket
# (tbf) at each RATE, one CPU rank on each, started by one mpirun across them (ssh is a script
# that runs the command in the other namespace, as tests/mpi/netns.h does).
#
#   benchmarks/predict-netns.sh [--rates 10gbit,1gbit,200mbit,50mbit] [--steps 10] [--repeat 3]
#                               [--progress poll|thread] [--out DIR] [--build DIR]
#
# For each rate: the all-reduce sweep across the two nodes (8 B .. 8 MB, fitted as the
# inter-node link by `plan --predict --inter-allreduce`), then the data-parallel step of the
# tiny model (batch 8 x 128 per rank, buckets 0.25 MB, MPI progress poll, as `bench step
# --ranks` times it, MPI progress poll or thread) REPEAT times. Once: the 1-rank step and a 1-thread `bench suite --quick`
# (the kernel rates). Prints predicted against measured: the 2-node step, the exposed
# communication (the wait after backward), the 2-node speedup over one node, and whether the
# second node pays (adds at least half a node's tokens/s: the knee rule of `plan --predict`).
# Writes OUT/netns.json. Needs root, iproute2 (ip, tc) and mpirun; timings are this machine's.
set -euo pipefail
rates="10gbit,1gbit,200mbit,50mbit" steps=10 repeat=3 out="" build=build progress=poll
while [ $# -gt 0 ]; do
  case "$1" in
    --rates) rates="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --repeat) repeat="$2"; shift 2 ;;
    --progress) progress="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "predict-netns.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$progress" in poll|thread) ;; *) echo "predict-netns.sh: --progress: expected poll or thread, got '$progress'" >&2; exit 2 ;; esac
case "$steps$repeat" in *[!0-9]*|"") echo "predict-netns.sh: --steps and --repeat take positive integers" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "predict-netns.sh: needs root (network namespaces, tc)" >&2; exit 2; }
for t in ip tc mpirun unshare python3; do
  command -v "$t" >/dev/null || { echo "predict-netns.sh: $t not found (scripts/setup.sh installs iproute2, openmpi-bin)" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
lt="$(pwd)/$build/leasetrain"
[ -x "$lt" ] || { echo "predict-netns.sh: $lt: not built (make build)" >&2; exit 2; }
[ -n "$out" ] || out="$(mktemp -d "${TMPDIR:-/tmp}/predict-netns.XXXXXX")"
mkdir -p "$out/bin"
out="$(cd "$out" && pwd)"

ns0="ltpn$$n0" ns1="ltpn$$n1" ifn=pn
cleanup() { ip netns del "$ns0" 2>/dev/null || true; ip netns del "$ns1" 2>/dev/null || true; }
trap cleanup EXIT
for n in "$ns0" "$ns1"; do
  ip netns add "$n"
  ip netns exec "$n" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; ip link set lo up'
done
ip link add name "$ifn" netns "$ns0" type veth peer name "$ifn" netns "$ns1"
ip -n "$ns0" addr add 10.78.1.1/24 dev "$ifn"
ip -n "$ns1" addr add 10.78.1.2/24 dev "$ifn"
ip -n "$ns0" link set "$ifn" up
ip -n "$ns1" link set "$ifn" up

# The cluster's ssh: `ssh [options] HOST COMMAND` runs COMMAND in namespace HOST, host name HOST.
cat > "$out/bin/ssh" <<'EOF'
#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host=$1; shift
exec ip netns exec "$host" unshare --uts sh -c 'echo "$0" > /proc/sys/kernel/hostname && exec sh -c "$1"' "$host" "$*"
EOF
chmod +x "$out/bin/ssh"
export PATH="$out/bin:$PATH"
on0() { ip netns exec "$ns0" unshare --uts sh -c "echo $ns0 > /proc/sys/kernel/hostname && exec $*"; }
mpi2="mpirun --allow-run-as-root --host $ns0,$ns1 -np 2 --bind-to none --mca plm_rsh_agent $out/bin/ssh \
  --mca btl tcp,self --mca btl_tcp_if_include $ifn --mca oob_tcp_if_include $ifn \
  -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 -x PATH"

cat > "$out/job.toml" <<EOF
[model]
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
vocab_size = 256
[data]
train = "unused_*.bin"
[train]
micro_batch = 8
seq_len = 128
grad_accum = 1
[dist]
bucket_mb = 0.25
first_bucket_mb = 0.25
progress = "$progress"
EOF

echo "predict-netns: 2 namespaces x 1 rank, tiny 8x128 per rank, rates $rates; results in $out"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
"$lt" bench suite --quick --device cpu --json "$out/suite.json" >/dev/null
"$lt" bench step --model tiny --batch 8 --seq 128 --warmup 2 --steps "$steps" --json "$out/one.json" >/dev/null

for rate in ${rates//,/ }; do
  # A bucket of 1 ms at the rate (at least 16 KB): a larger burst lets the first kilobytes of
  # every message through at the veth's own speed, and the sweep bends where the model is straight.
  bits=$(python3 -c "import re,sys; m=re.fullmatch(r'([0-9.]+)(k|m|g)?bit', sys.argv[1]);
print(int(float(m[1]) * {None: 1, 'k': 1e3, 'm': 1e6, 'g': 1e9}[m[2]]) if m else '')" "$rate")
  [ -n "$bits" ] || { echo "predict-netns.sh: --rates: expected rates such as 10gbit,200mbit, got '$rate'" >&2; exit 2; }
  burst=$(( bits / 8 / 1000 > 16384 ? bits / 8 / 1000 : 16384 ))
  for n in "$ns0" "$ns1"; do
    ip netns exec "$n" tc qdisc replace dev "$ifn" root tbf rate "$rate" burst "$burst" latency 200ms
  done
  on0 "$mpi2 $lt bench allreduce -b 8 -e 8M -f 4 -n 10 -w 2 --json $out/ar-$rate.json" >/dev/null
  for r in $(seq 1 "$repeat"); do
    on0 "$mpi2 $lt bench step --model tiny --batch 8 --seq 128 --warmup 2 --steps $steps --progress $progress \
      --first-bucket-mb 0.25 --dp-bucket-mb 0.25 --dp-overlap true --dp-independent false \
      --dp-worker $out/step-$rate-$r.json" >/dev/null
  done
  "$lt" plan --predict --config "$out/job.toml" --suite "$out/suite.json" --gpus-per-node 1 --max-nodes 2 \
    --inter-allreduce "$out/ar-$rate.json" --inter-nodes 2 --json > "$out/predict-$rate.json"
done

python3 - "$out" "$rates" "$repeat" <<'EOF'
import json, statistics, sys
out, rates, repeat = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
one = json.load(open(f"{out}/one.json"))[0]["median_ms"]
rows = []
print(f"1 rank: {one:.2f} ms/step measured")
print(f"{'rate':>8} {'link fit':>22} {'2-node step ms pred/meas (err)':>32} {'exposed share pred/meas':>24} "
      f"{'speedup pred/meas':>18} {'2nd node pays pred/meas':>24}")
for rate in rates:
    runs = [json.load(open(f"{out}/step-{rate}-{r}.json")) for r in range(1, repeat + 1)]
    step = statistics.median(r["median_ms"] for r in runs)
    wait = statistics.median(r["wait_after_backward_ms"] for r in runs)
    pr = json.load(open(f"{out}/predict-{rate}.json"))["machines"][0]
    p1, p2 = pr["rows"][0], pr["rows"][1]
    net = pr["network"]
    pred_step = 1e3 * p2["step_s"]
    pred_speed = p2["tokens_per_s"] / p1["tokens_per_s"]
    meas_speed = 2 * one / step
    row = {"rate": rate, "inter_busbw_gbps": net["inter_busbw_gbps"], "inter_alpha_us": net["inter_alpha_us"],
           "inter_fit_max_rel_err": net["inter_fit_max_rel_err"],
           "step_ms": {"predicted": pred_step, "measured": step, "rel_err": pred_step / step - 1},
           "exposed_fraction": {"predicted": p2["exposed_fraction"], "measured": wait / step},
           "speedup": {"predicted": pred_speed, "measured": meas_speed},
           "second_node_pays": {"predicted": pred_speed >= 1.5, "measured": meas_speed >= 1.5},
           "one_rank_ms": {"predicted": 1e3 * p1["step_s"], "measured": one}}
    rows.append(row)
    fit = f"{1e3 * net['inter_busbw_gbps']:.1f} MB/s, {net['inter_alpha_us']:.0f} us"
    print(f"{rate:>8} {fit:>22} {pred_step:12.1f} / {step:8.1f} ({100 * row['step_ms']['rel_err']:+5.1f}%) "
          f"{100 * p2['exposed_fraction']:11.1f}% / {100 * wait / step:5.1f}% {pred_speed:9.2f} / {meas_speed:4.2f} "
          f"{str(row['second_node_pays']['predicted']):>12} / {str(row['second_node_pays']['measured'])}")
json.dump({"one_rank_ms": one, "rows": rows}, open(f"{out}/netns.json", "w"), indent=2)
print(f"wrote {out}/netns.json")
EOF
