#!/usr/bin/env python3
"""Check leasetrain's tokenizer.json reader against Hugging Face `tokenizers` and transformers.

    python3 scripts/tokenizer_check.py [--leasetrain build/leasetrain] [--mb 4] [--threads 2]
        [--write-fixtures] [--pipeline]

1. Trains small byte-level BPE tokenizers with `tokenizers` on Debian's fortunes plus generated
   text (CJK, accents, emoji, digits, whitespace runs, tabs, CRLF, contractions):
     bpe500.json      vocabulary 500, add_prefix_space, merges written as "a b" strings
     bpe2000_eot.json vocabulary 2000 with <|endoftext|> as a special token, [a, b] merges
   With --write-fixtures they, a sample text and the ids `tokenizers` gives it are written to
   tests/fixtures/tokenizers/ (make test compares our encoding with them token for token).
2. On --mb MB of such text, `leasetrain data prepare --tokenizer` must write exactly the ids of
   `tokenizers`' encode of the whole text; its throughput on --threads threads is printed next
   to `tokenizers`' encode_batch on the same text and thread count (RAYON_NUM_THREADS).
3. Trains a tiny model for a few steps with `leasetrain train` on byte-level shards and on BPE
   shards; AutoTokenizer.from_pretrained(checkpoint) must encode as the checkpoint's
   tokenizer.json says and its eos must match generation_config.json. With --pipeline,
   pipeline("text-generation", model=checkpoint) must also generate (this needs a transformers
   that accepts the installed PyTorch: transformers 5 needs PyTorch >= 2.6 from PyPI, as in
   scripts/hf_check.py; Debian 12's 1.13 works with transformers 4.40).

Prints one JSON line per check. Exit 0 when all pass, 1 when one fails. `tokenizers` and
transformers are not packaged in Debian 12, so this is a manual check, not part of `make test`
(as scripts/hf_check.py). NOTES.md records the run.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "tokenizers")
FORTUNES = "/usr/share/games/fortunes"


def fortunes_text():
    parts = []
    for name in sorted(os.listdir(FORTUNES)):
        path = os.path.join(FORTUNES, name)
        if name.endswith(".dat") or os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            parts.append(f.read().decode("utf-8", errors="replace"))
    return "".join(parts)


def generated_text(rng, n_chars):
    """Varied Unicode: every class the pre-tokenizer regex tells apart, and its edge cases."""
    words = ["don't", "we're", "I'll", "she's", "they've", "I'm", "he'd", "DON'T", "'s", "''", "O'Neil",
             "café", "naïve", "Zürich", "señor", "smørrebrød", "Ærø", "élan", "e\u0301t\u00e9",
             "東京", "日本語のテキスト", "中文字符", "한국어", "Ελληνικά", "русский", "עברית", "العربية",
             "😀", "👍🏽", "🇫🇷", "👨\u200d👩\u200d👧", "∑∫√", "½", "²³", "٣٤٥", "Ⅻ",
             "123", "4567", "3.14159", "1,000,000", "0x1F", "2026-12-03", "v1.2.3",
             "<tag>", "#!", "...", "--", "->", "==", "$$", "(", ")", "\"quoted\"", "e.g.", "a/b",
             "<|endoftext|>", "<|endoftext", "endoftext|>"]
    spaces = [" ", " ", " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r\n\r\n", " \n", "\u00a0",
              "\u3000", "\u2028", "\u0085", "\u180e", " \t ", "    \n", "\u2009"]
    out = []
    size = 0
    while size < n_chars:
        w = rng.choice(words) if rng.random() < 0.7 else "".join(
            chr(rng.choice([rng.randint(0x61, 0x7a), rng.randint(0xc0, 0x24f), rng.randint(0x4e00, 0x9fff),
                            rng.randint(0x1f300, 0x1f64f), rng.randint(0x30, 0x39)]))
            for _ in range(rng.randint(1, 8)))
        s = rng.choice(spaces)
        out.append(w)
        out.append(s)
        size += len(w) + len(s)
    return "".join(out)


def corpus(rng, n_bytes):
    """Fortunes and generated text interleaved in pieces, about n_bytes of UTF-8."""
    fort = fortunes_text()
    pieces, size, at = [], 0, 0
    while size < n_bytes:
        if rng.random() < 0.6:
            n = rng.randint(2000, 20000)
            if at + n > len(fort):
                at = 0
            p = fort[at:at + n]
            at += n
        else:
            p = generated_text(rng, rng.randint(500, 5000))
        pieces.append(p)
        size += len(p.encode())
    return "".join(pieces)


def train_tokenizer(text, vocab_size, special, add_prefix_space):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = text.splitlines(keepends=True)
    tok.train_from_iterator([("".join(lines[i:i + 50])) for i in range(0, len(lines), 50)], trainer)
    return tok


def merges_as_strings(tok_json):
    """The older "a b" form of merges (byte-level tokens never hold a space)."""
    j = json.loads(tok_json)
    j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    return json.dumps(j, ensure_ascii=False, indent=2)


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r


def read_shard(path):
    import numpy as np
    raw = open(path, "rb").read()
    header = np.frombuffer(raw[:1024], dtype=np.int32)
    assert header[0] == 20240520 and header[1] == 1, path
    return np.frombuffer(raw[1024:], dtype=np.uint16).tolist()


def report(ok, **fields):
    print(json.dumps({"ok": ok, **fields}, ensure_ascii=False), flush=True)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--leasetrain", default="build/leasetrain")
    ap.add_argument("--mb", type=float, default=4.0, help="MB of text for the equality and throughput check")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-fixtures", action="store_true")
    ap.add_argument("--pipeline", action="store_true", help="also run pipeline('text-generation') (needs PyTorch)")
    a = ap.parse_args()
    # Before `tokenizers` starts its thread pool: its encode_batch gets the threads we get.
    os.environ["RAYON_NUM_THREADS"] = str(a.threads)
    import tokenizers
    from tokenizers import Tokenizer

    rng = random.Random(20261203)
    train_text = corpus(rng, 3_000_000)
    toks = {
        "bpe500.json": merges_as_strings(train_tokenizer(train_text, 500, [], True).to_str()),
        "bpe2000_eot.json": train_tokenizer(train_text, 2000, ["<|endoftext|>"], False).to_str(),
    }
    ok = True
    work = tempfile.mkdtemp(prefix="tokcheck-")
    paths = {}
    for name, text in toks.items():
        paths[name] = os.path.join(FIXTURES if a.write_fixtures else work, name)
        os.makedirs(os.path.dirname(paths[name]), exist_ok=True)
        with open(paths[name], "w", encoding="utf-8") as f:
            f.write(text)

    # 1. The fixtures: a sample with every case, its ids from `tokenizers`.
    sample = (generated_text(random.Random(7), 6000) + "\n" + fortunes_text()[:6000] +
              "<|endoftext|>Hello world<|endoftext|><|endoftext|>  leading spaces\n\n\ttabs\r\nend")
    if a.write_fixtures:
        with open(os.path.join(FIXTURES, "sample.txt"), "w", encoding="utf-8", newline="") as f:
            f.write(sample)
        ids = {name: Tokenizer.from_file(p).encode(sample).ids for name, p in paths.items()}
        with open(os.path.join(FIXTURES, "sample_ids.json"), "w") as f:
            json.dump({"tokenizers": tokenizers.__version__, "ids": ids}, f)
            f.write("\n")
        report(True, check="fixtures written", dir=os.path.normpath(FIXTURES), tokenizers=tokenizers.__version__)

    # 2. Equality on a few MB and throughput, ours vs tokenizers, same text, same threads.
    big = corpus(random.Random(99), int(a.mb * 1e6))
    big_path = os.path.join(work, "big.txt")
    with open(big_path, "w", encoding="utf-8", newline="") as f:
        f.write(big)
    nbytes = len(big.encode())
    docs = big.splitlines(keepends=True)
    batch = ["".join(docs[i:i + 20]) for i in range(0, len(docs), 20)]
    for name, p in paths.items():
        ref = Tokenizer.from_file(p)
        want = ref.encode(big).ids
        t0 = time.perf_counter()
        ref.encode_batch(batch)
        theirs = nbytes / 1e6 / (time.perf_counter() - t0)
        prefix = os.path.join(work, name.split(".")[0])
        r = run([a.leasetrain, "data", "prepare", "--tokenizer", p, "--input", big_path, "--output", prefix,
                 "--val-fraction", "0", "--threads", str(a.threads)])
        got = read_shard(prefix + "_train_000000.bin")
        ours = None
        for line in r.stderr.splitlines():
            if "MB/s" in line and "tokenized" in line:
                ours = float(line.split(" MB/s")[0].split("(")[-1])
        first_diff = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), None)
        same = got == want
        ok = report(same, check="data prepare --tokenizer == tokenizers encode", tokenizer=name, mb=round(nbytes / 1e6, 2),
                    tokens=len(want), first_difference=first_diff if not same else None,
                    threads=a.threads, ours_mb_s=ours, tokenizers_encode_batch_mb_s=round(theirs, 2),
                    ratio=round(ours / theirs, 2) if ours else None) and ok

    # 3. Checkpoints trained by us: AutoTokenizer, generation_config, optionally pipeline.
    ok = check_checkpoints(a, work, paths["bpe2000_eot.json"], train_text) and ok
    return 0 if ok else 1


def check_checkpoints(a, work, bpe_path, text):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    text_path = os.path.join(work, "train.txt")
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(text[:400_000])
    ok = True
    for kind, tok_args, vocab in [("byte-level", [], 256), ("bpe2000_eot", ["--tokenizer", bpe_path], 2000)]:
        prefix = os.path.join(work, "data", kind)
        run([a.leasetrain, "data", "prepare", "--input", text_path, "--output", prefix] + tok_args)
        cfg = os.path.join(work, kind + ".toml")
        with open(cfg, "w") as f:
            f.write(f"""[model]
n_layer = 2
n_head = 2
n_embd = 64
block_size = 64
vocab_size = {vocab}
[data]
train = "{prefix}_train_*.bin"
val = "{prefix}_val_*.bin"
[optim]
lr = 1e-3
[train]
micro_batch = 4
seq_len = 64
steps = 4
eval_interval = 4
eval_batches = 1
checkpoint_interval = 4
log_interval = 4
""")
        out = os.path.join(work, "run-" + kind)
        run([a.leasetrain, "train", "--config", cfg, "--out", out])
        ckpt = os.path.join(out, "checkpoints", "step-00000004")
        hf = AutoTokenizer.from_pretrained(ckpt)
        probe = "Hello, world! Don't  stop\t123 café 東京 😀\n"
        # The byte-level vocabulary is byte b -> id b; a BPE checkpoint carries the file it trained on.
        want = list(probe.encode()) if vocab == 256 else Tokenizer.from_file(bpe_path).encode(probe).ids
        got = hf(probe)["input_ids"]
        gen = json.load(open(os.path.join(ckpt, "generation_config.json")))
        eos_ok = (hf.eos_token_id == gen.get("eos_token_id"))
        this = got == want and hf.decode(got) == probe and eos_ok
        fields = dict(check="AutoTokenizer on our checkpoint", kind=kind, ids_equal=got == want,
                      round_trip=hf.decode(got) == probe, eos_token_id=hf.eos_token_id,
                      generation_config=gen)
        if a.pipeline:
            import transformers
            from transformers import pipeline
            gen_out = pipeline("text-generation", model=ckpt)("Hello", max_new_tokens=8, do_sample=False)
            fields["pipeline"] = gen_out[0]["generated_text"]
            fields["transformers"] = transformers.__version__
            this = this and gen_out[0]["generated_text"].startswith("Hello")
        ok = report(this, **fields) and ok
    return ok


if __name__ == "__main__":
    sys.exit(main())
