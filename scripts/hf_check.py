#!/usr/bin/env python3
"""Load a leasetrain checkpoint in Hugging Face transformers and compare its loss with ours.

    python3 scripts/hf_check.py CHECKPOINT_DIR VAL_SHARD [--batch 8 --seq 128 --batches 4]
        [--leasetrain build/leasetrain] [--shard-size 50MB]

Both directions, each compared on the same windows as `leasetrain eval` (sequential,
non-overlapping, from the start of the shard: llm.c's validation convention):
  ours -> transformers: GPT2LMHeadModel.from_pretrained(CHECKPOINT_DIR), as it is, against
    `leasetrain eval` on the same checkpoint;
  transformers -> ours: a randomly initialised GPT2LMHeadModel of the same GPT2Config, written
    by save_pretrained into a temporary directory, evaluated by both (what `train --init`
    reads).
With --shard-size SIZE, the same both ways through sharded checkpoints (model-0000k-of-N
.safetensors and model.safetensors.index.json):
  transformers -> ours: save_pretrained(max_shard_size=SIZE) of the random model, evaluated by
    both, then `leasetrain train --init` on it for one step (the config without [model]) with
    --max-shard-size SIZE;
  ours -> transformers: that run's sharded checkpoint through GPT2LMHeadModel.from_pretrained.
Prints one JSON line per direction. Exit 0 when every pair agrees to 1e-4 relative, 1 when
one does not, 2 on bad input (one line naming the file and what was expected).

transformers is not packaged in Debian 12, so this is a manual check, not part of `make
test`. transformers 5 needs PyTorch >= 2.6, newer than Debian 12's python3-torch (1.13), so run
it from a venv with both from PyPI:
    python3 -m venv V && V/bin/pip install torch transformers tokenizers safetensors numpy
    V/bin/python scripts/hf_check.py CKPT VAL_SHARD --shard-size 50KB
(transformers 4.40-4.47 still run on Debian's torch, in a venv with --system-site-packages).
NOTES.md records the runs.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np


def bad_input(msg):
    print(msg, file=sys.stderr)
    sys.exit(2)


def read_shard(path, need):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        bad_input(f"{path}: cannot read: {e.strerror}")
    header = np.frombuffer(raw[:1024], dtype=np.int32) if len(raw) >= 1024 else None
    if header is None or header[0] != 20240520 or header[1] != 1 or (len(raw) - 1024) % 2:
        bad_input(f"{path}: header: expected an llm.c token shard (magic 20240520, version 1)")
    tokens = np.frombuffer(raw[1024:], dtype=np.uint16)
    if len(tokens) < need:
        bad_input(f"{path}: token count: expected at least {need}, got {len(tokens)}")
    return tokens.astype(np.int64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("checkpoint")
    ap.add_argument("shard")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--leasetrain", default="build/leasetrain")
    ap.add_argument("--shard-size", help="also check sharded checkpoints both ways, shards of this size")
    a = ap.parse_args()

    import torch
    from transformers import GPT2LMHeadModel

    B, T = a.batch, a.seq
    tokens = read_shard(a.shard, a.batches * B * T + 1)

    def hf_loss(model):
        model.eval()
        total = 0.0
        with torch.no_grad():
            for b in range(a.batches):
                # batch b: B*T tokens from b*B*T, targets shifted by one.
                chunk = torch.from_numpy(tokens[b * B * T: (b + 1) * B * T + 1])
                logits = model(chunk[:-1].view(B, T)).logits
                total += torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), chunk[1:]).item()
        return total / a.batches

    def our_loss(checkpoint):
        out = subprocess.run(
            [a.leasetrain, "eval", "--checkpoint", checkpoint, "--data", a.shard,
             "--device", "cpu", "--batch", str(B), "--seq", str(T),
             "--batches", str(a.batches)],
            check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])["loss"]

    def report(direction, checkpoint, model):
        theirs, ours = hf_loss(model), our_loss(checkpoint)
        rel = abs(theirs - ours) / abs(ours)
        print(json.dumps({"direction": direction, "checkpoint": checkpoint,
                          "transformers_loss": theirs, "leasetrain_loss": ours,
                          "relative_difference": rel,
                          "params": sum(p.numel() for p in model.parameters()),
                          "agree": rel < 1e-4}))
        return rel < 1e-4

    if not os.path.isfile(os.path.join(a.checkpoint, "config.json")) or not any(
            os.path.isfile(os.path.join(a.checkpoint, f))
            for f in ("model.safetensors", "model.safetensors.index.json")):
        bad_input(f"{a.checkpoint}: expected a checkpoint directory holding config.json and "
                  "model.safetensors or model.safetensors.index.json")
    ours_model = GPT2LMHeadModel.from_pretrained(a.checkpoint)
    ok = report("leasetrain->transformers", a.checkpoint, ours_model)
    torch.manual_seed(0)
    fresh = GPT2LMHeadModel(ours_model.config)
    with tempfile.TemporaryDirectory() as tmp:
        fresh.save_pretrained(tmp)
        ok = report("transformers->leasetrain", tmp, fresh) and ok
    if a.shard_size:
        ok = check_sharded(a, fresh, report) and ok
    return 0 if ok else 1


def shards_of(directory):
    """The shard files of a sharded checkpoint, or exit 1 saying it is not one."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if not os.path.isfile(index) or os.path.exists(os.path.join(directory, "model.safetensors")):
        print(f"{directory}: expected a sharded checkpoint (model.safetensors.index.json, no model.safetensors)",
              file=sys.stderr)
        sys.exit(1)
    with open(index) as f:
        return sorted(set(json.load(f)["weight_map"].values()))


def check_sharded(a, fresh, report):
    """Sharded checkpoints both ways: save_pretrained(max_shard_size) -> eval and train --init;
    that run's sharded checkpoint -> from_pretrained."""
    from transformers import GPT2LMHeadModel
    with tempfile.TemporaryDirectory() as tmp:
        theirs = os.path.join(tmp, "hf")
        fresh.save_pretrained(theirs, max_shard_size=a.shard_size)
        n = len(shards_of(theirs))
        ok = report(f"transformers->leasetrain, {n} shards", theirs, fresh)
        config = os.path.join(tmp, "init.toml")
        with open(config, "w") as f:  # no [model]: --init takes the checkpoint's shape
            f.write(f'[data]\ntrain = "{a.shard}"\nval = "{a.shard}"\n'
                    f"[train]\nmicro_batch = {a.batch}\nseq_len = {a.seq}\nsteps = 1\n"
                    "eval_interval = 0\neval_batches = 1\n")
        run = os.path.join(tmp, "run")
        done = subprocess.run([a.leasetrain, "train", "--config", config, "--out", run, "--device", "cpu",
                               "--init", theirs, "--max-shard-size", a.shard_size],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"train --init {theirs}: exit {done.returncode}: {done.stderr.strip()}", file=sys.stderr)
            return False
        ours = os.path.join(run, "checkpoints", "step-00000001")
        n = len(shards_of(ours))
        # The same limit splits the same model at the same tensors (names without "transformer.").
        split = [weight_map(d) for d in (theirs, ours)]
        same = split[0] == split[1]
        print(json.dumps({"check": "shard split at " + a.shard_size, "transformers_shards": len(shards_of(theirs)),
                          "leasetrain_shards": n, "same_tensors_per_shard": same}))
        model = GPT2LMHeadModel.from_pretrained(ours)
        return report(f"leasetrain->transformers, {n} shards", ours, model) and ok and same


def weight_map(directory):
    with open(os.path.join(directory, "model.safetensors.index.json")) as f:
        wm = json.load(f)["weight_map"]
    return {k.removeprefix("transformer."): v for k, v in wm.items()}


if __name__ == "__main__":
    sys.exit(main())
