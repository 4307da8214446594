#!/usr/bin/python3
"""Golden values for tests/test_parity.cpp: a tiny GPT-2 in PyTorch, Hugging Face semantics.

Writes tests/fixtures/gpt_tiny_parity.safetensors, which is COMMITTED: the C++ tests read it and
never run Python. Regenerate (only when this script changes) from the repository root with

    /usr/bin/python3 tests/make_fixtures.py

Needs torch and numpy only (Debian's python3-torch; no transformers, no safetensors package).
The output is deterministic for a given torch version; a different torch may change the random
draws, so regenerate and commit the script and the fixture together.

What the file holds (names follow Hugging Face's GPT2Model state dict, Conv1D weights [in, out]):
  <HF name>                    the seeded random weights, F32: std 0.1 for every tensor, biases
                               included, so every path matters; LayerNorm weights 1 + N(0, 0.1),
                               which keeps activations O(1) and the gradient norm above the clip
                               (so clipping is exercised)
  input.tokens, input.targets  I32 [B, T]
  expected.logits              F32 [B, T, V]   forward in float64, then cast
  expected.loss                F32 [1]         mean cross-entropy, float64 then cast
  expected.grad.<HF name>      F32             d loss / d weight, float64 then cast
  expected.adamw.<HF name>     F32             weights after 2 AdamW steps computed in float32
  expected.grad_norm           F32 [2]         clip_grad_norm_'s return value at each step
The goldens of the forward/backward are exact math (float64); the AdamW goldens are float32
because that is what the C++ side computes. AdamW's first steps are about lr * sign(g), so where a
gradient is rounding noise (the key bias's exact gradient is zero; a few weights are ~1e-6 of the
largest) the two sides step apart by up to ~lr: test_parity.cpp only bounds those elements.
"""
import json
import math
import os
import struct

import numpy as np
import torch

# The fixed configuration test_parity.cpp builds: GPTConfig{n_layer, n_head, n_embd, block, vocab}.
N_LAYER, N_HEAD, N_EMBD, N_POSITIONS, VOCAB = 2, 2, 32, 16, 70  # 70: not a multiple of 64
B, T = 2, 12  # T < N_POSITIONS
SEED = 1234
WEIGHT_STD = 0.1
ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
CLIP = 1.0
ADAMW_STEPS = 2

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                   "gpt_tiny_parity.safetensors")


def param_shapes():
    """(HF name, HF shape) in the order of Hugging Face's GPT2Model state dict."""
    C = N_EMBD
    shapes = [("wte.weight", (VOCAB, C)), ("wpe.weight", (N_POSITIONS, C))]
    for i in range(N_LAYER):
        p = f"h.{i}."
        shapes += [
            (p + "ln_1.weight", (C,)), (p + "ln_1.bias", (C,)),
            (p + "attn.c_attn.weight", (C, 3 * C)), (p + "attn.c_attn.bias", (3 * C,)),
            (p + "attn.c_proj.weight", (C, C)), (p + "attn.c_proj.bias", (C,)),
            (p + "ln_2.weight", (C,)), (p + "ln_2.bias", (C,)),
            (p + "mlp.c_fc.weight", (C, 4 * C)), (p + "mlp.c_fc.bias", (4 * C,)),
            (p + "mlp.c_proj.weight", (4 * C, C)), (p + "mlp.c_proj.bias", (C,)),
        ]
    shapes += [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
    return shapes


def layer_norm(x, w, b):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps=1e-5)


def gelu_new(x):
    # Hugging Face's "gelu_new" (GPT-2): the tanh approximation.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def gpt2_forward(p, tokens):
    """Logits [B, T, V] of GPT-2 (no dropout) with the LM head tied to wte."""
    Bn, Tn = tokens.shape
    C, nh = N_EMBD, N_HEAD
    hs = C // nh
    x = p["wte.weight"][tokens] + p["wpe.weight"][torch.arange(Tn)]
    causal = torch.tril(torch.ones(Tn, Tn, dtype=torch.bool))
    for i in range(N_LAYER):
        q = f"h.{i}."
        h = layer_norm(x, p[q + "ln_1.weight"], p[q + "ln_1.bias"])
        qkv = h @ p[q + "attn.c_attn.weight"] + p[q + "attn.c_attn.bias"]  # Conv1D: x @ W + b
        qq, kk, vv = qkv.split(C, dim=2)
        qq, kk, vv = (t.view(Bn, Tn, nh, hs).transpose(1, 2) for t in (qq, kk, vv))  # [B,nh,T,hs]
        att = (qq @ kk.transpose(-1, -2)) / math.sqrt(hs)
        att = att.masked_fill(~causal, torch.finfo(att.dtype).min)
        att = torch.softmax(att, dim=-1)
        y = (att @ vv).transpose(1, 2).reshape(Bn, Tn, C)
        y = y @ p[q + "attn.c_proj.weight"] + p[q + "attn.c_proj.bias"]
        x = x + y
        h = layer_norm(x, p[q + "ln_2.weight"], p[q + "ln_2.bias"])
        h = gelu_new(h @ p[q + "mlp.c_fc.weight"] + p[q + "mlp.c_fc.bias"])
        h = h @ p[q + "mlp.c_proj.weight"] + p[q + "mlp.c_proj.bias"]
        x = x + h
    x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"])
    return x @ p["wte.weight"].t()


def loss_of(logits, targets):
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             targets.reshape(-1))


def write_safetensors(path, tensors, metadata):
    """Our own minimal writer: u64 LE header size, JSON header, then the raw little-endian data."""
    dtypes = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtypes[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)  # pad with spaces so the data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)  # never leave a half-written fixture behind


def main():
    gen = torch.Generator().manual_seed(SEED)
    shapes = param_shapes()
    # Weights are drawn in float64 but rounded to float32, so both sides start from exactly
    # the same numbers.
    w32 = {}
    for n, s in shapes:
        w = torch.randn(s, generator=gen, dtype=torch.float64) * WEIGHT_STD
        if n.split(".")[-2].startswith("ln_") and n.endswith(".weight"):
            w += 1.0  # LayerNorm gain
        w32[n] = w.float()
    tokens = torch.randint(0, VOCAB, (B, T), generator=gen)
    tokens[0, 0] = VOCAB - 1  # the last real row of wte must be reachable
    tokens[1, 3] = tokens[0, 5]  # a repeated token: encoder backward must accumulate
    targets = torch.randint(0, VOCAB, (B, T), generator=gen)
    targets[1, -1] = VOCAB - 1

    # Forward and backward in float64: the goldens are the exact math, cast once at the end.
    p64 = {n: w.double().requires_grad_(True) for n, w in w32.items()}
    logits = gpt2_forward(p64, tokens)
    loss = loss_of(logits, targets)
    loss.backward()

    out = {}
    for n, _ in shapes:
        out[n] = w32[n].numpy()
    out["input.tokens"] = tokens.to(torch.int32).numpy()
    out["input.targets"] = targets.to(torch.int32).numpy()
    out["expected.logits"] = logits.detach().float().numpy()
    out["expected.loss"] = np.array([loss.item()], dtype=np.float32)
    for n, _ in shapes:
        out["expected.grad." + n] = p64[n].grad.float().numpy()

    # AdamW in float32, as the C++ side runs it: 2-D tensors decay, 1-D tensors do not.
    p32 = {n: w.clone().requires_grad_(True) for n, w in w32.items()}
    decay = [p32[n] for n, s in shapes if len(s) == 2]
    no_decay = [p32[n] for n, s in shapes if len(s) != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ADAMW["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"])
    norms = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad(set_to_none=True)
        loss_of(gpt2_forward(p32, tokens), targets).backward()
        norms.append(torch.nn.utils.clip_grad_norm_(list(p32.values()), max_norm=CLIP).item())
        opt.step()
    for n, _ in shapes:
        out["expected.adamw." + n] = p32[n].detach().numpy()
    out["expected.grad_norm"] = np.array(norms, dtype=np.float32)

    metadata = {
        "generator": "tests/make_fixtures.py",
        "torch": torch.__version__,
        "config": json.dumps(dict(n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD,
                                  n_positions=N_POSITIONS, vocab_size=VOCAB, B=B, T=T)),
        "adamw": json.dumps(dict(ADAMW, clip=CLIP, steps=ADAMW_STEPS)),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    write_safetensors(OUT, out, metadata)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes): loss {loss.item():.6f}, "
          f"grad norms {norms[0]:.4f} {norms[1]:.4f}")
    assert min(norms) > CLIP, "the gradient norm must exceed the clip so clipping is tested"


if __name__ == "__main__":
    main()
