#!/usr/bin/python3
"""How far the step-time model (`plan --predict`) is from what CPU ranks on this host measure.

    benchmarks/predict-validate.py [--ranks 2,4] [--model tiny] [--batch 8] [--seq 128]
        [--bucket-mb 0.25] [--repeat 3] [--steps 10] [--out DIR] [--build build]

In one run: `bench suite` on one thread (the kernel rates, memory bandwidth and the MPI
all-reduce sweep on 2 ranks), then for each rank count N `bench step --ranks N` (1 rank and N
ranks at the same per-rank batch, MPI progress "poll" as `make train`), the all-reduce sweep
up to 32 MB on 2 ranks, and `plan --predict`
for the same job on one "node" of N ranks. Where N ranks are more than the cores, each rank
gets cores/N of one (`--compute-scale`), as the ranks share them. Prints predicted against
measured: the 1-rank step (the compute model alone), the N-rank step, and the time after
backward spent waiting on reductions (the exposed communication), with relative errors, and
writes OUT/validate.json. Timings are this machine's and move with its load: run it on a
quiet machine.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def run(cmd, env=None):
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout)
        sys.exit(f"predict-validate: failed ({r.returncode}): {' '.join(cmd)}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="2,4")
    ap.add_argument("--model", default="tiny", choices=["tiny", "124m"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--bucket-mb", type=float, default=0.25)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="")
    ap.add_argument("--build", default="build")
    a = ap.parse_args()
    try:
        ranks = [int(x) for x in a.ranks.split(",")]
    except ValueError:
        ranks = []
    if not ranks or min(ranks) < 2:
        sys.exit("predict-validate: --ranks: expected rank counts >= 2 separated by commas, got " + a.ranks)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lt = os.path.join(root, a.build, "leasetrain")
    if not os.access(lt, os.X_OK):
        sys.exit(f"predict-validate: {lt}: not built (make build)")
    out = a.out or tempfile.mkdtemp(prefix="predict-validate.")
    os.makedirs(out, exist_ok=True)
    cores = os.cpu_count() or 1
    one = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")

    shapes = {"tiny": (4, 4, 128, 128, 256), "124m": (12, 12, 768, 1024, 50257)}[a.model]
    cfg = os.path.join(out, "job.toml")
    with open(cfg, "w") as f:
        f.write(f"""[model]
n_layer = {shapes[0]}
n_head = {shapes[1]}
n_embd = {shapes[2]}
block_size = {shapes[3]}
vocab_size = {shapes[4]}
[data]
train = "unused_*.bin"
[train]
micro_batch = {a.batch}
seq_len = {a.seq}
grad_accum = 1
[dist]
bucket_mb = {a.bucket_mb}
first_bucket_mb = {a.bucket_mb}
progress = "poll"
""")
    suite = os.path.join(out, "suite.json")
    print(f"predict-validate: {a.model} {a.batch}x{a.seq} per rank, buckets {a.bucket_mb} MB, ranks {a.ranks}, "
          f"{cores} cores; results in {out}", flush=True)
    run([lt, "bench", "suite", "--quick", "--device", "cpu", "--ranks", "2", "--json", suite], env=one)
    # The all-reduce sweep up to 32 MB (the quick suite's stops at 256 KB), on 2 ranks.
    sweep = os.path.join(out, "allreduce.json")
    run([lt, "bench", "allreduce", "--ranks", "2", "-b", "8", "-e", "32M", "-f", "4", "-n", "20", "-w", "3",
         "--json", sweep], env=one)
    rows = []
    for n in ranks:
        meas_file = os.path.join(out, f"step-{n}.json")
        run([lt, "bench", "step", "--ranks", str(n), "--model", a.model, "--batch", str(a.batch), "--seq",
             str(a.seq), "--steps", str(a.steps), "--bucket-mb", str(a.bucket_mb), "--first-bucket-mb",
             str(a.bucket_mb), "--repeat", str(a.repeat), "--progress", "poll", "--json", meas_file])
        with open(meas_file) as f:
            meas = json.load(f)
        base = meas[0]
        dp = [r for r in meas if r.get("ranks") == n and r.get("overlap") and not r.get("independent")][0]
        scale = min(1.0, cores / n)
        pred_out = run([lt, "plan", "--predict", "--config", cfg, "--suite", suite, "--gpus-per-node", str(n),
                        "--max-nodes", "1", "--compute-scale", str(scale), "--intra-allreduce", sweep, "--intra-ranks", "2",
                        "--json"])
        pred1_out = run([lt, "plan", "--predict", "--config", cfg, "--suite", suite, "--gpus-per-node", "1",
                         "--max-nodes", "1", "--json"])
        p = json.loads(pred_out)["machines"][0]["rows"][0]
        p1 = json.loads(pred1_out)["machines"][0]["rows"][0]
        row = {
            "ranks": n,
            "compute_scale": scale,
            "one_rank_ms": {"predicted": 1e3 * p1["step_s"], "measured": base["median_ms"]},
            "step_ms": {"predicted": 1e3 * p["step_s"], "measured": dp["median_ms"]},
            "exposed_ms": {"predicted": 1e3 * p["exposed_comm_s"], "measured": dp["wait_after_backward_ms"]},
            "exposed_fraction": {"predicted": p["exposed_fraction"],
                                 "measured": dp["wait_after_backward_ms"] / dp["median_ms"]},
            "buckets": dp.get("buckets", ""),
        }
        for k in ("one_rank_ms", "step_ms"):
            row[k]["rel_err"] = row[k]["predicted"] / row[k]["measured"] - 1
        rows.append(row)
    print(f"{'ranks':>5} {'1-rank ms pred/meas (err)':>28} {'N-rank ms pred/meas (err)':>28} "
          f"{'exposed ms pred/meas':>22} {'exposed share pred/meas':>24}")
    for r in rows:
        o, s, e, x = r["one_rank_ms"], r["step_ms"], r["exposed_ms"], r["exposed_fraction"]
        print(f"{r['ranks']:>5} {o['predicted']:9.2f} /{o['measured']:8.2f} ({100 * o['rel_err']:+5.1f}%) "
              f"{s['predicted']:9.2f} /{s['measured']:8.2f} ({100 * s['rel_err']:+5.1f}%) "
              f"{e['predicted']:9.2f} /{e['measured']:8.2f}   {100 * x['predicted']:9.1f}% /{100 * x['measured']:6.1f}%")
    with open(os.path.join(out, "validate.json"), "w") as f:
        json.dump({"model": a.model, "batch": a.batch, "seq": a.seq, "bucket_mb": a.bucket_mb, "cores": cores,
                   "rows": rows}, f, indent=2)
    print(f"wrote {os.path.join(out, 'validate.json')}")


if __name__ == "__main__":
    main()
