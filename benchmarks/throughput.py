"""Training and generation samples/s per workload, CPU and GPU, against a reference-style baseline.

One process, backend `local`, synthetic in-memory batches already on the device
(this isolates compute from I/O; `benchmarks/scaling.py --data` adds the reader).
The unit timed is `Training.step` (hpcgan/train/step.py: G phase, D phase,
gradient sync, both optimizer steps, AMP per config) and `Training.generate`,
with the harness protocol (warm-up, then timed iterations; median and spread).

Variants per workload:
- reference-style: fp32, eager, NCHW, the reference code's batch size
  (CRF: 6, as krisrs1128/clouds_dist; LHC: 64, no public reference code, a
  common batch for small MLP GANs). Measured in the same run, so the fast
  path's speed-up is a side-by-side ratio.
- ours: the preset's batch (and --batches), AMP per device (auto: fp32 on CPU),
  channels_last/compile per the preset. On GPU also every precision (fp32,
  bf16, fp16 with a grad scaler), channels_last on/off and torch.compile on/off.
On CPU, bf16/compile are not swept (no tensor units; compiling on 2 shared cores
takes minutes) and CRF at 256x256 runs only a few iterations (seconds per step).

FLOPs per sample: torch.utils.flop_counter.FlopCounterMode over one step (and one
generation) at the reference batch; achieved fraction = FLOPs/sample x rate /
peak, where the peak is a large matmul timed in the same run on the same device.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from benchmarks.common import (DEFAULT_RESULTS, Stats, environment, log, rate_stats, read_result, time_batches,
                               workload_config, write_result)

WORKLOADS = ("crf", "crf-small", "lhc")
REFERENCE_BATCH = {"crf": 6, "crf-small": 6, "lhc": 64}
# Iterations per variant: (warm-up batches, timed iterations, batches per iteration). CRF at 256x256 on a
# 2-core CPU takes seconds per step: few iterations, stated in the result.
CPU_ITERS = {"crf": (1, 2, 1), "crf-small": (2, 5, 2), "lhc": (5, 10, 10)}
GPU_ITERS = (10, 10, 10)  # Horovod's synthetic benchmark defaults
FLOP_BATCH = 2  # FLOPs are counted (not timed) on a small batch: they scale linearly with it


# --- inputs ---------------------------------------------------------------------------

def sample_shapes(cfg) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-sample (input, target) shapes in file units, from the config (CRF) or the synthetic schema (others)."""
    if cfg.workload == "crf":
        c = cfg.crf
        return (c.in_channels, c.size, c.size), (c.out_channels, c.size, c.size)
    from hpcgan.workloads.registry import generator

    synth = generator(cfg.workload)
    opts = {"layers": cfg.lhc.n_layers} if cfg.workload == "lhc" else {}
    s = synth.schema(**opts)
    return tuple(s["input_shape"]), tuple(s["target_shape"])


def synthetic_batch(training, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random batch in file units, mapped to model space on the device by the workload."""
    in_shape, out_shape = sample_shapes(training.cfg)
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn((batch, *in_shape), generator=g)
    targets = torch.rand((batch, *out_shape), generator=g)
    return training.workload.prepare(inputs, targets, training.device)


# --- peak -----------------------------------------------------------------------------

def matmul_peak(device: torch.device, dtype: torch.dtype, n: int | None = None, reps: int = 5) -> float:
    """FLOP/s of an n x n matmul (best of reps): the achievable peak the fractions refer to."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    times = time_batches(lambda: a @ b, warmup=2, iters=reps, batches_per_iter=2 if device.type == "cuda" else 1,
                         sync=sync)
    return 2.0 * n ** 3 / min(times)


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as mode:
        fn()
    return float(mode.get_total_flops())


# --- one variant -----------------------------------------------------------------------

def build(workload: str, device: str, batch: int, amp: str, channels_last: bool, compile_: bool, backend,
          extra: Sequence[str] = ()):
    """A Training for one variant; `extra` overrides go last (gpu_check's tiny sizes)."""
    from hpcgan.train.step import build_training

    cfg = workload_config(workload, [f"device={device}", "backend=local", f"train.batch_size={batch}",
                                     f"train.amp='{amp}'", f"train.channels_last={str(channels_last).lower()}",
                                     f"train.compile={str(compile_).lower()}", "train.d_steps=1", *extra])
    return build_training(cfg, backend, log=lambda *_: None)


def measure_variant(workload: str, name: str, backend, batch: int, amp: str, channels_last: bool, compile_: bool,
                    iters: tuple[int, int, int], gen_batch: int) -> dict:
    device = backend.device
    tr = build(workload, device.type, batch, amp, channels_last, compile_, backend)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    cond, real = synthetic_batch(tr, batch)
    warmup, n_iter, per_iter = iters
    t0 = time.perf_counter()
    train_s = time_batches(lambda: tr.step(cond, real), warmup, n_iter, per_iter, sync)
    gcond, _ = synthetic_batch(tr, gen_batch, seed=1)
    gen_s = time_batches(lambda: tr.generate(gcond), warmup, n_iter, per_iter, sync)
    row = {
        "workload": workload, "variant": name, "device": device.type,
        "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[tr.dtype],
        "channels_last": tr.channels_last, "compile": bool(compile_) and tr.cfg.train.compile,
        "batch": batch, "gen_batch": gen_batch,
        "iters": {"warmup": warmup, "timed": n_iter, "batches_per_iter": per_iter},
        "train": {"samples_per_s": rate_stats(train_s, batch).to_dict(), "step_s": Stats.of(train_s).to_dict()},
        "generate": {"samples_per_s": rate_stats(gen_s, gen_batch).to_dict()},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    log(f"  {workload:<9} {name:<22} {row['precision']} cl={int(row['channels_last'])} "
        f"compile={int(row['compile'])} batch {batch:>4}: train {row['train']['samples_per_s']['median']:10.2f}/s "
        f"(+-{row['train']['samples_per_s']['ci95']:.2f})  generate {row['generate']['samples_per_s']['median']:10.2f}/s")
    del tr
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def flops_per_sample(workload: str, backend, batch: int) -> dict:
    """Model FLOPs of one training step and one generation, per sample (fp32 eager, counted not timed)."""
    tr = build(workload, backend.device.type, batch, "off", False, False, backend)
    cond, real = synthetic_batch(tr, batch)
    train = count_flops(lambda: tr.step(cond, real)) / batch
    gen = count_flops(lambda: tr.generate(cond)) / batch
    return {"train": train, "generate": gen}


def variants(workload: str, device: str, batches: Sequence[int], cfg_batch: int) -> list[dict]:
    """What to time for one workload on one device (see module docstring)."""
    ref = REFERENCE_BATCH[workload]
    out = [dict(name="reference-style", batch=ref, amp="off", channels_last=False, compile_=False)]
    if device == "cpu":
        # On CPU "ours" differs from the reference only in batch size (AMP auto = fp32, channels_last is GPU-only):
        # a batch equal to the reference's would time the same thing twice.
        for b in batches or [cfg_batch]:
            if b != ref:
                out.append(dict(name="ours", batch=b, amp="auto", channels_last=True, compile_=False))
        return out
    for b in batches or [cfg_batch]:
        for amp in ("off", "bf16", "fp16"):
            out.append(dict(name=f"ours-{amp if amp != 'off' else 'fp32'}", batch=b, amp=amp, channels_last=True,
                            compile_=False))
        out.append(dict(name="ours-auto-nchw", batch=b, amp="auto", channels_last=False, compile_=False))
        out.append(dict(name="ours-auto-compile", batch=b, amp="auto", channels_last=True, compile_=True))
    return out


def run_benchmark(workloads: Sequence[str], devices: Sequence[str], batches: dict[str, list[int]], gen_batch: int,
                  quick: bool, out: Path, append: bool = False) -> dict:
    from hpcgan.runtime import session

    env = environment()
    results: dict = {"rows": [], "peak": {}, "flops_per_sample": {}, "speedup_vs_reference": []}
    for dev in devices:
        session.stop()
        backend = session.start("local", dev)
        device = backend.device
        dtypes = [torch.float32] + ([torch.bfloat16, torch.float16] if device.type == "cuda" else [])
        for dt in dtypes:
            results["peak"].setdefault(device.type, {})[str(dt).replace("torch.", "")] = matmul_peak(device, dt)
        log(f"{device.type}: matmul peak " + ", ".join(f"{k} {v / 1e12:.3f} TFLOP/s"
                                                        for k, v in results["peak"][device.type].items()))
        for w in workloads:
            cfg_batch = workload_config(w).train.batch_size
            iters = (1, 2, 1) if quick else (CPU_ITERS[w] if device.type == "cpu" else GPU_ITERS)
            if w not in results["flops_per_sample"]:
                results["flops_per_sample"][w] = flops_per_sample(w, backend, min(REFERENCE_BATCH[w], FLOP_BATCH))
            rows = []
            for v in variants(w, device.type, batches.get(w, []), cfg_batch):
                row = measure_variant(w, v["name"], backend, v["batch"], v["amp"], v["channels_last"],
                                      v["compile_"], iters, gen_batch or v["batch"])
                _add_efficiency(row, results["flops_per_sample"][w], results["peak"][device.type])
                rows.append(row)
            results["rows"] += rows
            ref = rows[0]["train"]["samples_per_s"]["median"]
            best = max(rows, key=lambda r: r["train"]["samples_per_s"]["median"])
            results["speedup_vs_reference"].append({
                "workload": w, "device": device.type, "best_variant": best["variant"], "batch": best["batch"],
                "train_speedup": best["train"]["samples_per_s"]["median"] / ref,
                "generate_speedup": best["generate"]["samples_per_s"]["median"]
                / rows[0]["generate"]["samples_per_s"]["median"]})
    session.stop()
    if append and out.is_file():  # keep the other workloads of an earlier run (long CRF rows measured separately)
        old = read_result(out, "throughput")["results"]
        keep = lambda items: [x for x in items if x["workload"] not in workloads]  # noqa: E731
        results["rows"] = keep(old["rows"]) + results["rows"]
        results["speedup_vs_reference"] = keep(old["speedup_vs_reference"]) + results["speedup_vs_reference"]
        results["flops_per_sample"] = {**{k: v for k, v in old["flops_per_sample"].items() if k not in workloads},
                                       **results["flops_per_sample"]}
        for dev, p in old["peak"].items():
            results["peak"].setdefault(dev, p)
        results["appended_to"] = {"earlier_env": read_result(out, "throughput")["env"]}
    results["gpu_over_cpu"] = gpu_over_cpu(results["rows"])
    params = {"workloads": list(workloads), "devices": list(devices), "batches": batches, "gen_batch": gen_batch,
              "quick": quick, "reference_batch": REFERENCE_BATCH, "cpu_iters": CPU_ITERS, "gpu_iters": GPU_ITERS,
              "inputs": "synthetic in-memory tensors on the device"}
    write_result(out, "throughput", params, results, env=env)
    log(f"wrote {out}")
    return results


def _add_efficiency(row: dict, flops: dict, peaks: dict) -> None:
    rate = row["train"]["samples_per_s"]["median"]
    grate = row["generate"]["samples_per_s"]["median"]
    peak = peaks.get({"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[row["precision"]])
    row["achieved_tflops"] = {"train": flops["train"] * rate / 1e12, "generate": flops["generate"] * grate / 1e12}
    if peak:
        row["peak_fraction"] = {k: v * 1e12 / peak for k, v in row["achieved_tflops"].items()}


def gpu_over_cpu(rows: list[dict]) -> list[dict]:
    """Best GPU rate / best CPU rate per workload (training and generation)."""
    out = []
    for w in sorted({r["workload"] for r in rows}):
        best = {}
        for dev in ("cpu", "cuda"):
            rs = [r for r in rows if r["workload"] == w and r["device"] == dev]
            if rs:
                best[dev] = (max(r["train"]["samples_per_s"]["median"] for r in rs),
                             max(r["generate"]["samples_per_s"]["median"] for r in rs))
        if len(best) == 2:
            out.append({"workload": w, "train": best["cuda"][0] / best["cpu"][0],
                        "generate": best["cuda"][1] / best["cpu"][1]})
    return out


def summary(path: Path) -> str:
    doc = read_result(path, "throughput")
    res = doc["results"]
    lines = ["| workload | device | variant | precision | ch-last | compile | batch | train samples/s | "
             "generate samples/s | train TFLOP/s | % of matmul peak |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        t, g = r["train"]["samples_per_s"], r["generate"]["samples_per_s"]
        frac = r.get("peak_fraction", {}).get("train")
        lines.append(f"| {r['workload']} | {r['device']} | {r['variant']} | {r['precision']} | {int(r['channels_last'])} "
                     f"| {int(r['compile'])} | {r['batch']} | {t['median']:.2f} ± {t['ci95']:.2f} | "
                     f"{g['median']:.1f} | {r['achieved_tflops']['train']:.4f} | "
                     f"{'' if frac is None else f'{100 * frac:.1f}'} |")
    for s in res["speedup_vs_reference"]:
        lines.append(f"speed-up over reference-style ({s['workload']}, {s['device']}): train x{s['train_speedup']:.2f}, "
                     f"generate x{s['generate_speedup']:.2f} ({s['best_variant']}, batch {s['batch']})")
    for s in res.get("gpu_over_cpu", []):
        lines.append(f"GPU/CPU ({s['workload']}): train x{s['train']:.1f}, generate x{s['generate']:.1f}")
    for dev, p in res["peak"].items():
        lines.append(f"matmul peak {dev}: " + ", ".join(f"{k} {v / 1e12:.3f} TFLOP/s" for k, v in p.items()))
    for w, f in res["flops_per_sample"].items():
        lines.append(f"model FLOPs per sample {w}: train {f['train'] / 1e9:.3f} GFLOP, generate {f['generate'] / 1e9:.3f} GFLOP")
    return "\n".join(lines)


def parse_batches(items: Sequence[str]) -> dict[str, list[int]]:
    """--batch crf-small=16,64 --batch lhc=256 -> {workload: [batches]}."""
    from hpcgan.errors import UserError

    out: dict[str, list[int]] = {}
    for item in items:
        w, _, bs = item.partition("=")
        try:
            out[w] = [int(b) for b in bs.split(",") if b]
        except ValueError:
            out[w] = []
        if w not in WORKLOADS or not out[w] or min(out[w]) < 1:
            raise UserError(f"--batch {item!r}: expected WORKLOAD=B1,B2 with WORKLOAD one of {', '.join(WORKLOADS)}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpcgan bench throughput", description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}")
    p.add_argument("--devices", default="auto", help="cpu, cuda, or auto (cpu, plus cuda when present)")
    p.add_argument("--batch", action="append", default=[], metavar="WORKLOAD=B1,B2",
                   help="per-rank batch sizes of the 'ours' rows (default: the preset's)")
    p.add_argument("--gen-batch", type=int, default=0, help="generation batch (default: the training batch)")
    p.add_argument("--quick", action="store_true", help="1 warm-up + 2 timed batches (smoke tests)")
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS / "throughput.json")
    p.add_argument("--append", action="store_true", help="keep the other workloads' rows of an existing --out file")
    p.add_argument("--summary", action="store_true", help="print the table of an existing --out file and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from hpcgan.errors import UserError

    args = build_parser().parse_args(argv)
    if args.summary:
        print(summary(args.out))
        return 0
    workloads = [w for w in args.workloads.split(",") if w]
    bad = [w for w in workloads if w not in WORKLOADS]
    if bad or not workloads:
        raise UserError(f"--workloads {args.workloads!r}: expected a subset of {', '.join(WORKLOADS)}")
    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [d for d in args.devices.split(",") if d]
        if not devices or any(d not in ("cpu", "cuda") for d in devices):
            raise UserError(f"--devices {args.devices!r}: expected cpu, cuda, cpu,cuda or auto")
    run_benchmark(workloads, devices, parse_batches(args.batch), args.gen_batch, args.quick, args.out, args.append)
    print(summary(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
