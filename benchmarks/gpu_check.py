"""One prepared check of the GPU path: every precision trains to finite weights, and how fast.

For a single-GPU machine with a stock torch, h5py and mpi4py (no Horovod, no network), in a few minutes:
- both workloads train `--steps` steps (LHC) / `--crf-steps` (CRF) on synthetic data from
  the workloads' synthetic generators in fp32, bf16 and fp16 (with the gradient scaler), CRF also NCHW and torch.compile;
  the last step's losses and all weights must be finite;
- train samples/s from those steps (Training.step: the trainer's unit) and generation samples/s;
- CRF at the preset's 256x256 against a reference-style step (fp32, eager, NCHW, batch 6, as
  krisrs1128/clouds_dist) measured in the same run;
- LHC generation in tracks/s for batches 512 to 65536 (bf16 where the GPU has it);
- a bf16 matmul peak measured in the same run, and each CRF row's achieved fraction of it
  (model FLOPs counted by torch.utils.flop_counter on the reference step);
- a 1-rank `hpcgan train --backend torch` job (NCCL on a GPU, gloo on CPU).
Writes one JSON (benchmarks/common.py format) and a Markdown table beside it; exits 1 if any check failed.
`--devices cpu --tiny` is the smoke test the test suite runs (tests/bench/test_gpu_check.py).

    benchmarks/gpu_check.sh [--out results/gpu_check.json]      (or: hpcgan bench gpu)
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from benchmarks.common import DEFAULT_RESULTS, REPO, environment, log, rate_stats, time_batches, write_result
from benchmarks.throughput import REFERENCE_BATCH, build, count_flops, matmul_peak

# Targets from issue 12, for an H100-class GPU (reported, never asserted).
TARGETS = {"lhc_tracks_per_s": 1e7, "crf_speedup_vs_reference": 3.0, "crf_bf16_peak_fraction": 0.40}
GEN_BATCHES = (512, 2048, 8192, 32768, 65536)
# --tiny: sizes a 2-core CPU runs in seconds (the smoke test); the real check uses the presets.
TINY = {"crf": ["crf.size=16", "crf.widths=[8,16]", "crf.d_widths=[8,16]", "crf.d_scales=1"],
        "lhc": ["lhc.hidden=32", "lhc.blocks=1", "lhc.d_hidden=32", "lhc.d_blocks=1"]}
NEEDED = ("torch", "numpy", "h5py", "yaml", "tqdm", "matplotlib")


def variants(workload: str, device: str, batch: int) -> list[dict]:
    """What to train: every precision; CRF also NCHW and compiled (GPU only: compiling on CPU takes minutes)."""
    out = [dict(name=f"{amp}", amp=amp, channels_last=True, compile_=False, batch=batch)
           for amp in ("off", "bf16", "fp16")]
    if workload == "crf":
        out.insert(0, dict(name="reference-style", amp="off", channels_last=False, compile_=False,
                           batch=REFERENCE_BATCH["crf"]))
        out.append(dict(name="bf16-nchw", amp="bf16", channels_last=False, compile_=False, batch=batch))
        if device == "cuda":
            out.append(dict(name="bf16-compile", amp="bf16", channels_last=True, compile_=True, batch=batch))
    return out


def sample_pool(workload: str, cfg, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n synthetic samples in file units (CRF inputs standardised per channel, as the reader does)."""
    if workload == "lhc":
        from hpcgan.workloads.lhc import synth as synth_lhc

        parts = list(synth_lhc.generate(0, n, seed, layers=cfg.lhc.n_layers))
    else:
        from hpcgan.workloads.crf import synth as synth_crf

        parts = list(synth_crf.generate(0, n, seed, size=(cfg.crf.size, cfg.crf.size)))
    x = np.concatenate([p[0] for p in parts]).astype(np.float32)
    y = np.concatenate([p[1] for p in parts]).astype(np.float32)
    if workload == "crf":
        x = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / (x.std(axis=(0, 2, 3), keepdims=True) + 1e-6)
    return torch.from_numpy(x), torch.from_numpy(y)


def all_finite(tr, stats: dict) -> bool:
    tensors = list(stats.values()) + [p for m in (tr.G, tr.D) for p in m.parameters()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def train_variant(workload: str, v: dict, backend, pool, steps: int, extra: Sequence[str]) -> dict:
    """Train `steps` steps (timed after a warm-up of a tenth), then check losses and weights are finite."""
    device = backend.device
    t0 = time.perf_counter()
    tr = build(workload, device.type, v["batch"], v["amp"], v["channels_last"], v["compile_"], backend, extra)
    x, y = pool
    n_batches = max(1, len(x) // v["batch"])
    batches = [tr.workload.prepare(x[i * v["batch"]:(i + 1) * v["batch"]], y[i * v["batch"]:(i + 1) * v["batch"]],
                                   device) for i in range(n_batches)]
    feed = itertools.cycle(batches)
    last: dict = {}

    def step():
        nonlocal last
        last = tr.step(*next(feed))

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    warmup = max(1, steps // 10)
    per_iter = max(1, (steps - warmup) // 10)
    train_s = time_batches(step, warmup, max(1, (steps - warmup) // per_iter), per_iter, sync)
    cond = batches[0][0]
    gen_s = time_batches(lambda: tr.generate(cond), 2, 5, 2, sync)
    finite = all_finite(tr, last)
    row = {"workload": workload, "variant": v["name"], "device": device.type,
           "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[tr.dtype],
           "channels_last": tr.channels_last, "compile": bool(v["compile_"]) and tr.cfg.train.compile,
           "batch": v["batch"], "steps": warmup + len(train_s) * per_iter, "finite": finite,
           "last_losses": {k: float(t) for k, t in last.items()},
           "train_samples_per_s": rate_stats(train_s, v["batch"]).median,
           "generate_samples_per_s": rate_stats(gen_s, len(cond)).median,
           "loss_scale": tr.scaler.get_scale() if tr.scaler.is_enabled() else None,
           "wall_s": round(time.perf_counter() - t0, 1)}
    log(f"  {workload} {v['name']:<16} batch {v['batch']:>4}: {'finite' if finite else 'NON-FINITE'}, "
        f"train {row['train_samples_per_s']:.1f}/s, generate {row['generate_samples_per_s']:.1f}/s")
    return row


def lhc_generation(backend, amp: str, batches: Sequence[int], extra: Sequence[str], pool) -> list[dict]:
    """Tracks/s of G alone (model space on the device, no host copies) per batch size."""
    device = backend.device
    tr = build("lhc", device.type, 64, amp, False, False, backend, extra)
    x, y = pool
    cond0, _ = tr.workload.prepare(x, y, device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    rows = []
    for b in batches:
        cond = cond0.repeat((b + len(cond0) - 1) // len(cond0), 1, 1)[:b]
        secs = time_batches(lambda: tr.generate(cond), 2, 5, 2, sync)
        rows.append({"batch": b, "precision": amp, "tracks_per_s": rate_stats(secs, b).median})
        log(f"  lhc generation {amp} batch {b:>6}: {rows[-1]['tracks_per_s']:.3g} tracks/s")
    return rows


def torch_backend_job(device: str, tiny: bool, workdir: Path) -> dict:
    """`hpcgan train --backend torch` as one rank: the torch.distributed path end to end (NCCL on a GPU)."""
    data, run = workdir / "lhc.h5", workdir / "run"
    cli = [sys.executable, "-m", "hpcgan.cli.main"]
    steps = 4 if tiny else 200
    cmds = [cli + ["data", "synth", "lhc", "--n", str(512 if tiny else 16384), "--seed", "1", "--out", str(data)],
            cli + ["train", "--config", "lhc-small", "--backend", "torch", "--device", device, f"data.path={data}",
                   "data.val_path=", f"run_dir={run}", f"train.max_steps={steps}", "train.figures=false",
                   *(TINY["lhc"] + ["train.batch_size=32"] if tiny else [])]]
    t0 = time.perf_counter()
    out = ""
    for cmd in cmds:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        out += proc.stdout + proc.stderr
        if proc.returncode != 0:
            break
    backend_line = next((l for l in out.splitlines() if "hpcgan train:" in l), "")
    ok = proc.returncode == 0 and f"reached train.max_steps={steps}" in out
    log(f"  1-rank --backend torch job: {'ok' if ok else 'FAILED'} ({backend_line.strip()})")
    return {"ok": ok, "returncode": proc.returncode, "steps": steps, "wall_s": round(time.perf_counter() - t0, 1),
            "backend_line": backend_line.strip(), "output_tail": "" if ok else out[-3000:]}


def run_check(device_name: str, tiny: bool, steps: int, crf_steps: int, out: Path) -> dict:
    from hpcgan.runtime import session

    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"gpu_check: missing Python modules {', '.join(missing)} (pip install them from wheels "
                         "brought to the machine)")
    env = environment()
    backend = session.start("local", device_name)
    device = backend.device
    results: dict = {"rows": [], "checks": {}}
    peak_n = 256 if tiny else None
    results["peak_bf16_flops"] = matmul_peak(device, torch.bfloat16, n=peak_n)
    log(f"{device}: bf16 matmul peak {results['peak_bf16_flops'] / 1e12:.3f} TFLOP/s")

    for workload in ("lhc", "crf"):
        extra = TINY[workload] if tiny else []
        from benchmarks.common import workload_config

        cfg = workload_config(workload, extra)
        batch = 4 if tiny and workload == "crf" else (64 if tiny else (512 if workload == "lhc" else 32))
        n_pool = 4 * batch if workload == "lhc" else 2 * batch
        pool = sample_pool(workload, cfg, n_pool)
        for v in variants(workload, device.type, batch):
            try:
                row = train_variant(workload, v, backend, pool, steps if workload == "lhc" else crf_steps, extra)
            except Exception as e:  # one failing variant is a result, not the end of the check
                row = {"workload": workload, "variant": v["name"], "device": device.type, "finite": False,
                       "error": f"{type(e).__name__}: {e}"}
                log(f"  {workload} {v['name']}: ERROR {row['error']}")
            results["rows"].append(row)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if workload == "crf":
            flops = count_flops(lambda: _reference_step(backend, extra)) / 2
            results["crf_train_flops_per_sample"] = flops
            for r in results["rows"]:
                if r["workload"] == "crf" and r.get("precision") == "bf16":
                    r["peak_bf16_fraction"] = flops * r["train_samples_per_s"] / results["peak_bf16_flops"]
        else:
            gen_amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
            gen_pool = sample_pool("lhc", cfg, 256 if tiny else 8192, seed=1)
            results["lhc_generation"] = lhc_generation(backend, gen_amp, (256, 512) if tiny else GEN_BATCHES, extra,
                                                       gen_pool)

    with tempfile.TemporaryDirectory(prefix="hpcgan-gpu-check-") as tmp:
        results["torch_backend_job"] = torch_backend_job(device.type, tiny, Path(tmp))
    session.stop()

    rows = [r for r in results["rows"] if "train_samples_per_s" in r]
    ref = next((r for r in rows if r["variant"] == "reference-style"), None)
    crf = [r for r in rows if r["workload"] == "crf" and r["variant"] != "reference-style"]
    best = max(crf, key=lambda r: r["train_samples_per_s"], default=None)
    results["checks"] = {
        "all_finite": all(r.get("finite") for r in results["rows"]),
        "torch_backend_job": results["torch_backend_job"]["ok"],
        "lhc_tracks_per_s_max": max(r["tracks_per_s"] for r in results["lhc_generation"]),
        "crf_speedup_vs_reference": best["train_samples_per_s"] / ref["train_samples_per_s"] if ref and best else None,
        "crf_best_variant": best["variant"] if best else None,
        "crf_bf16_peak_fraction_max": max((r.get("peak_bf16_fraction", 0) for r in crf if r.get("precision") == "bf16"),
                                          default=None),
    }
    params = {"device": device_name, "tiny": tiny, "steps": steps, "crf_steps": crf_steps, "targets": TARGETS}
    write_result(out, "gpu_check", params, results, env=env)
    out.with_suffix(".md").write_text(markdown(results, env, params) + "\n")
    log(f"wrote {out} and {out.with_suffix('.md')}")
    return results


def _reference_step(backend, extra: Sequence[str]) -> None:
    """One reference-style CRF step at batch 2 (what the FLOP counter traces)."""
    from benchmarks.throughput import synthetic_batch

    tr = build("crf", backend.device.type, 2, "off", False, False, backend, extra)
    tr.step(*synthetic_batch(tr, 2))


def markdown(results: dict, env: dict, params: dict) -> str:
    c = results["checks"]
    lines = [f"GPU check on {env.get('gpu', env.get('cpu'))} ({params['device']}), {env['date']}, torch {env['torch']}"
             f"{' (tiny sizes)' if params['tiny'] else ''}: `{env['command']}`", "",
             "| workload | variant | precision | ch-last | compile | batch | steps | finite | train samples/s | "
             "generate samples/s | % bf16 peak |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['workload']} | {r['variant']} | | | | | | ERROR: {r['error'][:80]} | | | |")
            continue
        frac = r.get("peak_bf16_fraction")
        lines.append(f"| {r['workload']} | {r['variant']} | {r['precision']} | {int(r['channels_last'])} | "
                     f"{int(r['compile'])} | {r['batch']} | {r['steps']} | {'yes' if r['finite'] else 'NO'} | "
                     f"{r['train_samples_per_s']:.1f} | {r['generate_samples_per_s']:.1f} | "
                     f"{'' if frac is None else f'{100 * frac:.1f}'} |")
    lines += ["", "| LHC generation batch | precision | tracks/s |", "|---|---|---|"]
    lines += [f"| {g['batch']} | {g['precision']} | {g['tracks_per_s']:.3g} |" for g in results["lhc_generation"]]
    speed = "n/a" if c["crf_speedup_vs_reference"] is None else \
        f"x{c['crf_speedup_vs_reference']:.2f} ({c['crf_best_variant']})"
    frac = c["crf_bf16_peak_fraction_max"]
    lines += ["", f"- all losses and weights finite: {'yes' if c['all_finite'] else 'NO'}",
              f"- 1-rank `--backend torch` job: {'ok' if c['torch_backend_job'] else 'FAILED'} "
              f"({results['torch_backend_job']['backend_line']})",
              f"- bf16 matmul peak: {results['peak_bf16_flops'] / 1e12:.3g} TFLOP/s",
              f"- LHC generation, best: {c['lhc_tracks_per_s_max']:.3g} tracks/s (target >= 1e7 on an H100)",
              f"- CRF train speed-up over reference-style: {speed} (target >= 3)",
              f"- CRF bf16 fraction of the bf16 matmul peak: {'n/a' if frac is None else f'{100 * frac:.1f} %'} "
              "(target >= 40 %)"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpcgan bench gpu", description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="cuda", choices=["cuda", "cpu"], help="where to run (cpu: smoke test)")
    p.add_argument("--tiny", action="store_true", help="tiny models and batches (the CPU smoke test)")
    p.add_argument("--steps", type=int, default=300, help="training steps per LHC variant")
    p.add_argument("--crf-steps", type=int, default=100, help="training steps per CRF variant")
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS / "gpu_check.json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from hpcgan.errors import UserError

    args = build_parser().parse_args(argv)
    if args.devices == "cuda" and not torch.cuda.is_available():
        raise UserError("--devices cuda: torch sees no GPU here (use --devices cpu --tiny for the smoke test)")
    if args.steps < 2 or args.crf_steps < 2:
        raise UserError(f"--steps {args.steps} / --crf-steps {args.crf_steps}: expected at least 2")
    res = run_check(args.devices, args.tiny, args.steps, args.crf_steps, args.out)
    print(args.out.with_suffix(".md").read_text())
    return 0 if res["checks"]["all_finite"] and res["checks"]["torch_backend_job"] else 1


if __name__ == "__main__":
    sys.exit(main())
