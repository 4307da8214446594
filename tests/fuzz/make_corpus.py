#!/usr/bin/env python3
"""Writes the fuzz seed corpora, tests/fuzz/corpus/<target>/: small valid and near-valid inputs.

The checkpoint seeds come from a real tiny checkpoint (1 layer, 4 wide, vocabulary 8) that the
trainer_json and model_index targets write when run with LT_FUZZ_SEED_DIR, so their checksums
and shard names match what the targets build:
    mkdir -p /tmp/seed && LT_FUZZ_SEED_DIR=/tmp/seed build-fuzz/fuzz/fuzz_trainer_json -runs=0
    LT_FUZZ_SEED_DIR=/tmp/seed build-fuzz/fuzz/fuzz_model_index -runs=0
    python3 tests/fuzz/make_corpus.py /tmp/seed
"""
import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE / "corpus"


def put(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data.encode() if isinstance(data, str) else data)


def st_parse(blob):
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def st_build(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)] -> safetensors bytes."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def f32_to_f16(raw):
    vals = struct.unpack("<%df" % (len(raw) // 4), raw)
    return struct.pack("<%de" % len(vals), *vals)


def safetensors_seeds(seed_dir):
    model = (seed_dir / "model.safetensors").read_bytes()
    put("safetensors", "model-f32", model)
    put("safetensors", "optimizer", (seed_dir / "optimizer.safetensors").read_bytes())
    header, data = st_parse(model)
    tensors = [(k, v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
               for k, v in header.items() if k != "__metadata__"]
    # Hugging Face's spelling: "transformer." names in F16, the tied lm_head and a mask buffer.
    hf = [("transformer." + k, "F16", s, f32_to_f16(r)) for k, _, s, r in tensors]
    hf.append(("lm_head.weight", "F16", [8, 4], b"\0" * 64))
    hf.append(("h.0.attn.bias", "F32", [1, 1, 4, 4], b"\0" * 64))
    put("safetensors", "model-hf-f16", st_build(hf, {"format": "pt"}))
    put("safetensors", "model-truncated", model[:len(model) - 40])
    put("safetensors", "dtypes", st_build([("a", "BF16", [2], b"\x80\x3f\x00\x40"),
                                           ("b", "I32", [1, 2], struct.pack("<2i", -1, 7)),
                                           ("c", "I64", [1], struct.pack("<q", 1 << 40)),
                                           ("d", "F32", [0, 3], b"")], {"step": "3"}))
    put("safetensors", "empty-header", st_build([]))
    put("safetensors", "overlap", struct.pack("<Q", 64) +
        b'{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'[:64]
        + b"\0" * 8)


def shard(tokens, magic=20240520, version=1, count=None):
    hdr = [0] * 256
    hdr[0], hdr[1], hdr[2] = magic, version, len(tokens) if count is None else count
    return struct.pack("<256i", *hdr) + struct.pack("<%dH" % len(tokens), *tokens)


def model_index_seeds(seed_dir):
    valid = (seed_dir / "model.safetensors.index.json").read_text()
    put("model_index", "valid", valid)
    wm = json.loads(valid)["weight_map"]
    shards = sorted(set(wm.values()))
    for name, change in [
            ("transformer-names", lambda j: j.update(weight_map={"transformer." + k: v for k, v in wm.items()})),
            ("no-metadata", lambda j: j.pop("metadata")),
            ("total-size-off", lambda j: j["metadata"].update(total_size=j["metadata"]["total_size"] + 4)),
            ("tensor-missing", lambda j: j["weight_map"].pop("wpe.weight")),
            ("tensor-elsewhere", lambda j: j["weight_map"].update({"ln_f.bias": shards[0]})),
            ("tensor-unheld", lambda j: j["weight_map"].update({"h.5.attn.c_attn.weight": shards[-1]})),
            ("name-slash", lambda j: j["weight_map"].update({"wte.weight": "../" + shards[0]})),
            ("name-absolute", lambda j: j["weight_map"].update({"wte.weight": "/etc/passwd"})),
            ("name-missing", lambda j: j["weight_map"].update({"wte.weight": "model-00009-of-00009.safetensors"})),
            ("name-config", lambda j: j["weight_map"].update({"wte.weight": "config.json"})),
            ("empty-map", lambda j: j.update(weight_map={}))]:
        c = json.loads(valid)
        change(c)
        put("model_index", name, json.dumps(c, indent=2, sort_keys=True))
    put("model_index", "deep", "[" * 1500 + "]" * 1500)
    put("model_index", "not-object", "[1, 2, 3]")


def shard_seeds():
    put("shard", "valid", shard([i % 8 for i in range(40)]))
    put("shard", "count-too-large", shard([1, 2, 3], count=1000))
    put("shard", "bad-magic", shard([1, 2, 3], magic=1))
    put("shard", "bad-version", shard([1, 2, 3], version=7))
    put("shard", "token-outside-vocab", shard([1, 300, 65535, 4, 5, 6, 7, 8, 9, 10]))
    put("shard", "empty", shard([]))
    put("shard", "header-cut", shard([])[:100])


def config_seeds():
    put("config", "tiny", (ROOT / "configs" / "tiny.toml").read_text())
    put("config", "minimal", '[model]\nn_layer = 1\nn_head = 1\nn_embd = 4\nblock_size = 4\nvocab_size = 8\n'
        '[data]\ntrain = "d/*.bin"\n[train]\nmicro_batch = 1\nseq_len = 4\nsteps = 2\n')
    put("config", "huge-model", '[model]\nn_layer = 1000000000\nn_embd = 1000000\n[data]\ntrain = "x"\n')
    put("config", "wrong-types", '[model]\nn_layer = "four"\n[optim]\nlr = [1, 2]\nwarmup_steps = 3000000000\n'
        '[train]\nseed = -1\nmicro_batch = 2147483647\n[dist]\nprogress = 5\n')
    put("config", "nested", "[model]\nn_layer = " + "[" * 200 + "]" * 200 + "\n")


def trainer_seeds(seed_dir):
    valid = (seed_dir / "trainer.json").read_text()
    put("trainer_json", "valid", valid)
    t = json.loads(valid)
    for name, change in [("step-string", lambda t: t.update(step="1")),
                         ("step-negative", lambda t: t.update(step=-5)),
                         ("step-other", lambda t: t.update(step=7)),
                         ("no-files", lambda t: t.pop("files")),
                         ("data-wrong", lambda t: t["data"].update(position=-1, epoch="x", shards={})),
                         ("world", lambda t: t.update(world="two"))]:
        c = json.loads(valid)
        change(c)
        put("trainer_json", name, json.dumps(c))
    put("trainer_json", "deep", "[" * 1500 + "]" * 1500)
    put("trainer_json", "not-object", "[1, 2, 3]")


def manifest_seeds():
    for f in ["shared-cluster.toml", "bad-window-order.toml", "bad-gpu-in-two-leases.toml"]:
        put("manifest", f.removesuffix(".toml"), (ROOT / "tests" / "fixtures" / "leases" / f).read_text())


def chain(records):
    out, prev = "", "0" * 64
    for seq, r in enumerate(records):
        r = dict(r, seq=seq, prev=prev)
        r["hash"] = prev = hashlib.sha256(
            json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
        out += json.dumps(r, separators=(",", ":")) + "\n"
    return out


def usage_seeds():
    job = {"kind": "job", "lease": "lease-a", "tenant": "t1", "job_id": "j1", "gpu_seconds": 3600,
           "start": "2025-06-01T00:00:00Z", "end": "2025-06-01T01:00:00Z", "exit_status": 0,
           "ranks": [{"rank": 0, "host": "n1", "devices": ["GPU-0"]}]}
    good = chain([job, dict(job, job_id="j2", gpu_seconds=1.5)])
    # First byte: even = the bytes as they are, odd = re-chained by the target (fuzz_usage_log.cpp).
    put("usage_log", "valid", "\0" + good)
    put("usage_log", "tampered", "\0" + good.replace('"gpu_seconds":1.5', '"gpu_seconds":2.5'))
    put("usage_log", "negative-seconds", "\1" + json.dumps(dict(job, gpu_seconds=-1e300)) + "\n")
    put("usage_log", "string-seconds", "\1" + json.dumps(dict(job, gpu_seconds="lots")) + "\n"
        + json.dumps(dict(job, lease=5)) + "\n")
    put("usage_log", "garbage", "\0{\"seq\":0}\nnot json\n\n")


def byte_chars():
    """GPT-2's byte-to-unicode map, as runtime/tokenizer.cpp and `tokenizers` build it."""
    printable = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    out, n = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


def tokenizer_seeds():
    """First byte even: a tokenizer.json; odd: text for the bpe2000_eot fixture."""
    chars = byte_chars()
    vocab = {chars[b]: b for b in range(256)}
    merges = []
    for a, b in [("\u0120", "t"), ("h", "e"), ("\u0120t", "he"), ("i", "n"), ("\u0120", "\u0120")]:
        vocab.setdefault(a + b, len(vocab))
        merges.append([a, b])
    level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": len(vocab), "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False, "special": True}],
           "normalizer": None, "pre_tokenizer": level, "post_processor": level, "decoder": level,
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                     "vocab": vocab, "merges": merges}}
    put("tokenizer", "small-bpe", "\0" + json.dumps(tok))
    seq = json.loads(json.dumps(tok))
    seq["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [dict(level, add_prefix_space=True)]}
    seq["model"]["merges"] = [" ".join(m) for m in merges]
    seq["model"]["ignore_merges"] = True
    put("tokenizer", "sequence-string-merges", "\0" + json.dumps(seq))
    spaced = json.loads(json.dumps(tok))
    spaced["added_tokens"].append(dict(spaced["added_tokens"][0], id=len(vocab) + 1, content=" \n<sep> ", special=False,
                                       normalized=True))
    put("tokenizer", "added-with-spaces", "\0" + json.dumps(spaced))
    put("tokenizer", "text", "\1Hello <|endoftext|> world,  don't\t123 caf\u00e9 \u6771\u4eac \U0001F600\r\n\n  x")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    seed_dir = Path(sys.argv[1])
    shutil.rmtree(OUT, ignore_errors=True)
    safetensors_seeds(seed_dir)
    model_index_seeds(seed_dir)
    shard_seeds()
    config_seeds()
    trainer_seeds(seed_dir)
    manifest_seeds()
    usage_seeds()
    tokenizer_seeds()


if __name__ == "__main__":
    main()
