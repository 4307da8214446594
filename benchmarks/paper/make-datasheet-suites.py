#!/usr/bin/python3
"""Writes suite results derived from datasheets and published figures, not measured here, for
the on-paper check of the step-time model (`plan --predict`) against llm.c's reported GPT-2
124M runs on one 8-GPU node (docs/benchmarks.md, "Against published runs"):

    benchmarks/paper/make-datasheet-suites.py [OUTDIR]   (default: this script's folder)

writes a100-sxm-80gb-x8.json and h100-sxm-x8.json in the suite's schema
(benchmarks/suite.schema.json), every row marked "datasheet" in its reason-free metrics and the
machine label. Every number comes from ../shared/ANCHORS.md's tables (sources named there):

  peak            A100 312, H100 989 bf16 dense TFLOP/s (SMs x FLOP/clk/SM x clock)
  GEMM            cuBLAS's best-shape bf16 rate (stas00's MAMF): A100 271, H100 794 TFLOP/s, taken
                  at every GPT-2 124M layer shape: an upper bound, since K = 768 GEMMs run below
                  the best shape's rate. Rows are impl "cublas", the kernel llm.c runs.
  attention       FlashAttention-2: A100 causal hd128 about 200 TFLOP/s forward, 196 backward
                  (non-causal figure); H100 about 335 fwd+bwd. hd128 figures stand for GPT-2's
                  hd64, which runs slower: another upper bound.
  memory          HBM peak x 0.9, the share a device copy reached on the H200 lent here
                  (4.3 of 4.8 TB/s): A100 80GB 2039, H100 3350 GB/s peak.
  all-reduce      8 GPUs, NCCL: bus bandwidth at large sizes 233 GB/s (A100 NVLink3), 475 GB/s
                  (H100, NVLS, NCCL's default there); small messages about 14 us on 8 GPUs. Rows
                  are the ring formula t = 2(p-1) alpha + 2(p-1)/p x bytes / busbw with alpha =
                  14 us / 14 hops, at 8 B .. 1 GiB.
"""
import json
import os
import sys

MACHINES = {
    "a100-sxm-80gb-x8": dict(name="NVIDIA A100-SXM4-80GB (datasheet)", cc="8.0", sms=108, clock=1410,
                             flops_clk=2048, peak=312.0, hbm=2039.0, mem_gib=80, gemm=271.0, att_fwd=200.0,
                             att_bwd=196.0, busbw=233.0),
    "h100-sxm-x8": dict(name="NVIDIA H100 80GB HBM3 (datasheet)", cc="9.0", sms=132, clock=1830, flops_clk=4096,
                        peak=989.0, hbm=3350.0, mem_gib=80, gemm=794.0, att_fwd=335.0, att_bwd=335.0,
                        busbw=475.0),
}
GPUS = 8
SMALL_MSG_S = 14e-6


def row(suite, impl, params, primary, metrics):
    rid = f"{suite}/cuda/{impl}" + "".join(f"/{k}={v}" for k, v in params.items())
    return {"id": rid, "suite": suite, "impl": impl, "device": "cuda", "params": params, "status": "ok",
            "reason": "", "primary": primary, "metrics": metrics}


def suite_for(m):
    rows = []
    BT = 64 * 1024  # llm.c's micro batch 64 x T 1024
    for shape, M, N, K in [("124m.qkv", BT, 2304, 768), ("124m.attn_proj", BT, 768, 768), ("124m.fc", BT, 3072, 768),
                           ("124m.fc_proj", BT, 768, 3072), ("124m.lm_head", BT, 50304, 768)]:
        ms = 2.0 * M * N * K / (m["gemm"] * 1e12) * 1e3
        rows.append(row("gemm", "cublas", {"shape": shape, "layout": "NT", "M": M, "N": N, "K": K, "dtype": "bf16"},
                        "tflops", {"median_ms": ms, "min_ms": ms, "max_ms": ms, "spread": 0.0, "runs": 1,
                                   "tflops": m["gemm"], "datasheet": 1}))
    for p, rate in (("fwd", m["att_fwd"]), ("bwd", m["att_bwd"])):
        flops = 4.0 * 64 * 1024 * 1024 * 12 * 64 / 2 * (2.5 if p == "bwd" else 1)
        ms = flops / (rate * 1e12) * 1e3
        rows.append(row("attention", "flash", {"pass": p, "causal": True, "B": 64, "heads": 12, "head_dim": 64,
                                               "T": 1024, "dtype": "bf16"}, "tflops",
                        {"median_ms": ms, "min_ms": ms, "max_ms": ms, "spread": 0.0, "runs": 1, "tflops": rate,
                         "datasheet": 1}))
    gbps = 0.9 * m["hbm"]
    nbytes = 1 << 30
    ms = 2.0 * nbytes / (gbps * 1e9) * 1e3
    rows.append(row("memory", "cudaMemcpy D2D", {"bytes": nbytes}, "gbps",
                    {"median_ms": ms, "min_ms": ms, "max_ms": ms, "spread": 0.0, "runs": 1, "gbps": gbps,
                     "datasheet": 1}))
    p = GPUS
    alpha = SMALL_MSG_S / (2 * (p - 1))
    size = 8
    while size <= 1 << 30:
        t = 2 * (p - 1) * alpha + 2 * (p - 1) / p * size / (m["busbw"] * 1e9)
        algbw = size / t / 1e9
        rows.append(row("allreduce", "nccl", {"ranks": p, "bytes": size, "op": "sum"}, "busbw_gbps",
                        {"time_us": t * 1e6, "algbw_gbps": algbw, "busbw_gbps": algbw * 2 * (p - 1) / p, "wrong": 0,
                         "datasheet": 1}))
        size *= 4
    peak = m["sms"] * m["flops_clk"] * m["clock"] * 1e6 / 1e12
    machine = {
        "hostname": "datasheet", "label": m["name"], "device": "cuda",
        "cpu": {"model": "not measured", "online_cpus": 1, "threads": 1, "mhz": 0, "isa": "sse",
                "fp32_flops_per_clk_core": 1, "blas": "none"},
        "gpu": {"count": GPUS, "name": m["name"], "uuid": "datasheet", "pci_bus_id": "datasheet",
                "compute_capability": m["cc"], "sm_count": m["sms"], "sm_clock_mhz_max": m["clock"],
                "sm_clock_mhz_during_run": m["clock"], "memory_gib": m["mem_gib"], "memory_clock_mhz": 0,
                "memory_bus_width_bits": 5120, "memory_peak_gbps": m["hbm"], "l2_mib": 40.0, "driver": "datasheet",
                "cuda_driver_api": "datasheet", "cuda_runtime": "datasheet", "cublas": "datasheet"},
        "gpu_status": "datasheet: derived from published figures (benchmarks/paper/make-datasheet-suites.py)",
        "nccl": "datasheet",
        "peak": {"tflops": peak, "dtype": "bf16 dense tensor core", "units": m["sms"], "unit": "SM",
                 "flops_per_clk_per_unit": m["flops_clk"], "clock_mhz": m["clock"], "clock_source": "datasheet boost clock",
                 "formula": "SMs x FLOP/clk/SM x clock"},
        "mfu_formula": "MFU = tokens/s x (6 x params + 6 x n_layer x n_embd x seq) FLOP per token / peak (llm.c)",
    }
    return {"schema": "leasetrain.bench.suite/1", "created_utc": "2026-12-03T00:00:00Z", "quick": False,
            "device": "cuda", "leasetrain": {"version": "datasheet", "build_type": "none"}, "machine": machine,
            "method": {"timing": "none: derived from published figures", "statistic": "one published figure per row",
                       "data": "none", "cache": "none", "correctness": "none"},
            "results": rows, "summary": {"ok": len(rows), "skipped": 0, "failed": 0, "seconds": 0}}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    for name, m in MACHINES.items():
        path = os.path.join(out, name + ".json")
        with open(path, "w") as f:
            json.dump(suite_for(m), f, indent=1)
            f.write("\n")
        print(path)


if __name__ == "__main__":
    main()
