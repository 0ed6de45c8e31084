"""Alpha-beta model of ring allreduce, calibrated here, projecting weak-scaling efficiency to 8-1024 nodes.

Model of one allreduce of m bytes over n ranks (ring: reduce-scatter + allgather):
    T(n, m) = o + 2(n-1) alpha + 2(n-1)/n * m * beta
o is Horovod's per-operation overhead. hpcgan's trainer reduces each GAN phase's
gradients explicitly after its backward (Backend.sync_gradients: flat fp32
buffers of at most BUCKET_BYTES (25 MiB), one synchronous allreduce each; STYLE.md lesson 3),
so nothing overlaps and per step
    T_comm(n) = sum over phases (G, D) and buckets b of T(n, bytes_b)
    efficiency(n) = t_compute / (t_compute + T_comm(n))     (weak scaling, 1 rank per node)

Calibration (this machine): alpha and beta fitted by least squares of relative
error to the measured allreduce curves (results/allreduce.json) at 2 and 4
ranks, per library; the Horovod fit (o folded into alpha) is the model of this
machine, the compute time is the measured 1-rank step time (results/throughput.json).
The check: predicted allreduce time per step and efficiency at 2 and 4 ranks
against results/scaling.json (weak, synthetic, horovod), using the compute time
measured at that rank count (2 cores shared by the ranks).

Piz Daint-class node (Cray XC50: one NVIDIA P100 16 GB PCIe per node, Aries):
- P100 PCIe peak: 9.3 TFLOP/s fp32, 18.7 TFLOP/s fp16 (4.7 fp64) — NVIDIA Tesla
  P100 datasheet (2016); no bf16, no tensor cores. Piz Daint's 5,704 XC50 nodes carry this card (CSCS).
- Aries: about 10 GB/s per direction per node injection bandwidth and about
  1.3 us MPI latency — Alverson, Froese, Kaplan, Roweth, "Cray XC Series Network",
  Cray white paper WP-Aries01-1112 (2012), section "Aries Performance" (figures
  read from its text and plots: approximate). beta = 1 / 10 GB/s, alpha = 1.3 us.
- Horovod: o(n) = cycle/2 + 2 ceil(log2 n) alpha (a request waits half a 1 ms
  background cycle on average — HOROVOD_CYCLE_TIME default in 0.28 — and the
  cached negotiation is a bit-vector allreduce).
- compute: model FLOPs per step (FlopCounterMode, results/throughput.json) /
  (peak x achieved fraction); the fraction is the one measured on a GPU in
  results/throughput.json when there is one, else --gpu-fraction (an assumption,
  said so in the result).
A "pessimistic" Daint variant halves the bandwidth and takes 10x the latency
(GPU buffers staged through the host, congestion); reality should lie between.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from hpcgan.runtime.backend import BUCKET_BYTES  # the trainer's gradient buffer size
from benchmarks.common import (DEFAULT_RESULTS, environment, log, numel, parameter_shapes, read_result,
                               workload_config, write_result)

P100 = {"name": "NVIDIA Tesla P100 16GB PCIe (Piz Daint XC50 node)", "fp32_flops": 9.3e12, "fp16_flops": 18.7e12,
        "source": "NVIDIA Tesla P100 datasheet (2016): 9.3 TFLOP/s fp32, 18.7 TFLOP/s fp16 (PCIe card)"}
ARIES = {"alpha_s": 1.3e-6, "bandwidth_Bps": 10e9,
         "source": "Alverson et al., 'Cray XC Series Network', Cray white paper WP-Aries01-1112 (2012), "
                   "'Aries Performance': ~10 GB/s per direction per node, ~1.3 us MPI latency (approximate)"}
HOROVOD_CYCLE_S = 1e-3  # Horovod 0.28 default HOROVOD_CYCLE_TIME (ms -> s)
NODES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
DEFAULT_GPU_FRACTION = 0.3


# --- model ---------------------------------------------------------------------------------

def ring_time(n: int, nbytes: float, alpha: float, beta: float, overhead: float = 0.0) -> float:
    """Seconds for one ring allreduce of nbytes over n ranks (0 for one rank)."""
    if n <= 1:
        return 0.0
    return overhead + 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes * beta


def fit_alpha_beta(points: Sequence[tuple[int, float, float]]) -> tuple[float, float, float]:
    """(alpha, beta, rms relative error) from (ranks, bytes, seconds), least squares of relative error, both >= 0."""
    pts = [(n, m, t) for n, m, t in points if n > 1 and t > 0]
    if len(pts) < 2:
        raise ValueError("fit_alpha_beta: need at least two measured points with more than one rank")
    A = np.array([[2.0 * (n - 1), 2.0 * (n - 1) / n * m] for n, m, _ in pts])
    t = np.array([p[2] for p in pts])
    W = A / t[:, None]  # rows scaled by 1/t: minimises relative error, so 4 KiB and 256 MiB both count
    coef, *_ = np.linalg.lstsq(W, np.ones(len(pts)), rcond=None)
    alpha, beta = float(coef[0]), float(coef[1])
    if alpha < 0 or beta < 0:  # refit the other parameter alone
        col = 1 if alpha < 0 else 0
        c, *_ = np.linalg.lstsq(W[:, [col]], np.ones(len(pts)), rcond=None)
        alpha, beta = (0.0, float(c[0])) if col == 1 else (float(c[0]), 0.0)
    pred = A @ np.array([alpha, beta])
    rms = float(np.sqrt(np.mean(((pred - t) / t) ** 2)))
    return alpha, beta, rms


def buckets(shapes: Sequence[tuple[int, ...]], limit: int = BUCKET_BYTES, elem: int = 4) -> list[int]:
    """Byte sizes of the flat buffers sync_gradients builds (same greedy grouping as the backend)."""
    out, cur = [], 0
    for s in shapes:
        b = numel(s) * elem
        if cur and cur + b > limit:
            out.append(cur)
            cur = 0
        cur += b
    return out + ([cur] if cur else [])


def comm_per_step(n: int, phases: dict[str, list[int]], alpha: float, beta: float, overhead) -> float:
    """Allreduce seconds per training step: every bucket of every phase, one after another."""
    o = overhead(n) if callable(overhead) else overhead
    return sum(ring_time(n, b, alpha, beta, o) for bs in phases.values() for b in bs)


def efficiency(t_compute: float, t_comm: float) -> float:
    return t_compute / (t_compute + t_comm)


def horovod_overhead(alpha: float, cycle: float = HOROVOD_CYCLE_S):
    return lambda n: 0.0 if n <= 1 else cycle / 2 + 2 * math.ceil(math.log2(n)) * alpha


# --- calibration from results ---------------------------------------------------------------

def calibrate(allreduce_doc: dict) -> dict:
    """alpha, beta per library from the measured curves (rank counts > 1)."""
    out = {}
    libs = sorted({c["lib"] for c in allreduce_doc["results"]["curves"]})
    for lib in libs:
        pts = [(c["ranks"], r["bytes"], r["time_s"]["median"]) for c in allreduce_doc["results"]["curves"]
               if c["lib"] == lib for r in c["rows"]]
        alpha, beta, rms = fit_alpha_beta(pts)
        errs = [{"ranks": n, "bytes": m, "measured_s": t, "model_s": ring_time(n, m, alpha, beta),
                 "rel_error": ring_time(n, m, alpha, beta) / t - 1} for n, m, t in pts]
        out[lib] = {"alpha_s": alpha, "beta_s_per_byte": beta, "bandwidth_GBps": (1 / beta / 1e9) if beta else None,
                    "rms_rel_error": rms, "points": errs}
    return out


def workload_inputs(throughput_doc: dict, workloads: Sequence[str], gpu_fraction: float) -> dict:
    """Per workload: gradient buckets per phase, CPU step time, P100 step time estimate."""
    res = throughput_doc["results"]
    gpu_rows = [r for r in res["rows"] if r["device"] == "cuda" and r.get("peak_fraction")]
    out = {}
    for w in workloads:
        cfg = workload_config(w)
        shapes = parameter_shapes(cfg)
        phases = {k: buckets(v) for k, v in shapes.items()}
        cpu = [r for r in res["rows"] if r["workload"] == w and r["device"] == "cpu"]
        if not cpu or w not in res["flops_per_sample"]:
            continue
        row = next((r for r in cpu if r["batch"] == cfg.train.batch_size), cpu[-1])
        batch = row["batch"]
        fr = [r["peak_fraction"]["train"] for r in gpu_rows if r["workload"] == w and r["precision"] == "fp32"]
        frac, frac_src = (max(fr), "measured on this run's GPU (fp32)") if fr else (gpu_fraction, "assumed (--gpu-fraction)")
        flops_step = res["flops_per_sample"][w]["train"] * cfg.train.batch_size
        out[w] = {"phases_bucket_bytes": phases, "grad_bytes": sum(sum(b) for b in phases.values()),
                  "cpu_batch": batch, "cpu_step_s": row["train"]["step_s"]["median"],
                  "gpu_batch": cfg.train.batch_size, "flops_per_step": flops_step,
                  "gpu_fraction": frac, "gpu_fraction_source": frac_src,
                  "p100_step_s": {"fp32": flops_step / (P100["fp32_flops"] * frac),
                                  "fp16": flops_step / (P100["fp16_flops"] * frac)}}
    return out


def project(inputs: dict, cal: dict, nodes: Sequence[int]) -> list[dict]:
    """Efficiency vs nodes for each workload and machine model."""
    a, bw = ARIES["alpha_s"], ARIES["bandwidth_Bps"]
    machines = {
        "daint-p100-fp32": (lambda w: w["p100_step_s"]["fp32"], a, 1 / bw, horovod_overhead(a)),
        "daint-p100-fp16": (lambda w: w["p100_step_s"]["fp16"], a, 1 / bw, horovod_overhead(a)),
        "daint-p100-fp16-pessimistic": (lambda w: w["p100_step_s"]["fp16"], 10 * a, 2 / bw, horovod_overhead(10 * a)),
    }
    if "horovod" in cal:
        machines["this-machine-cpu"] = (lambda w: w["cpu_step_s"], cal["horovod"]["alpha_s"],
                                        cal["horovod"]["beta_s_per_byte"], 0.0)
    curves = []
    for w, inp in inputs.items():
        for m, (tc_of, alpha, beta, o) in machines.items():
            tc = tc_of(inp)
            comm = [comm_per_step(n, inp["phases_bucket_bytes"], alpha, beta, o) for n in nodes]
            curves.append({"workload": w, "machine": m, "nodes": list(nodes), "compute_s": tc, "comm_s": comm,
                           "efficiency": [efficiency(tc, c) for c in comm]})
    return curves


def check(scaling_doc: dict | None, inputs: dict, cal: dict) -> list[dict]:
    """Model vs measured at 2 and 4 ranks (weak, synthetic, horovod): allreduce time and efficiency."""
    if scaling_doc is None or "horovod" not in cal:
        return []
    alpha, beta = cal["horovod"]["alpha_s"], cal["horovod"]["beta_s_per_byte"]
    runs = [r for r in scaling_doc["results"]["runs"] if r["backend"] == "horovod" and r["mode"] == "weak"
            and r["data"] == "synthetic" and r["workload"] in inputs]
    one = {r["workload"]: r for r in runs if r["ranks"] == 1}
    out = []
    for r in runs:
        if r["ranks"] == 1 or r["workload"] not in one:
            continue
        n, w = r["ranks"], r["workload"]
        pred_comm = comm_per_step(n, inputs[w]["phases_bucket_bytes"], alpha, beta, 0.0)
        s = r["split_s"]
        pred_step = s["compute"] + s["data"] + pred_comm
        rate1 = one[w]["samples_per_s"]["median"]
        pred_eff = r["per_rank_batch"] * n / pred_step / (n * rate1)
        meas_eff = r["samples_per_s"]["median"] / (n * rate1)
        out.append({"workload": w, "ranks": n, "oversubscribed": r["oversubscribed"],
                    "allreduce_measured_s": s["allreduce"], "allreduce_model_s": pred_comm,
                    "allreduce_rel_error": pred_comm / s["allreduce"] - 1 if s["allreduce"] > 0 else None,
                    "efficiency_measured": meas_eff, "efficiency_model": pred_eff,
                    "efficiency_error": pred_eff - meas_eff})
    return out


def run(allreduce: Path, throughput: Path, scaling: Path | None, workloads: Sequence[str], gpu_fraction: float,
        out: Path, plot: bool) -> dict:
    env = environment()
    cal = calibrate(read_result(allreduce, "allreduce"))
    inputs = workload_inputs(read_result(throughput, "throughput"), workloads, gpu_fraction)
    if not inputs:
        from hpcgan.errors import UserError

        raise UserError(f"{throughput}: no CPU rows for any of {', '.join(workloads)} (run `hpcgan bench throughput`)")
    scaling_doc = read_result(scaling, "scaling") if scaling and Path(scaling).is_file() else None
    results = {"calibration": cal, "workloads": inputs, "curves": project(inputs, cal, NODES),
               "check": check(scaling_doc, inputs, cal)}
    params = {"allreduce": str(allreduce), "throughput": str(throughput), "scaling": str(scaling or ""),
              "p100": P100, "aries": ARIES, "horovod_cycle_s": HOROVOD_CYCLE_S, "bucket_bytes": BUCKET_BYTES,
              "gpu_fraction_default": gpu_fraction, "nodes": NODES,
              "model": "eff = t_c / (t_c + sum_buckets [o + 2(n-1) alpha + 2(n-1)/n m beta]), no overlap"}
    write_result(out, "projection", params, results, env=env)
    log(f"wrote {out}")
    if plot:
        from benchmarks.plot import plot_projection

        png = out.with_suffix(".png")
        plot_projection(read_result(out, "projection"), png)
        log(f"wrote {png}")
    return results


def summary(path: Path) -> str:
    doc = read_result(path, "projection")
    res = doc["results"]
    lines = []
    for lib, c in res["calibration"].items():
        lines.append(f"fit {lib}: alpha {c['alpha_s'] * 1e6:.1f} us, beta {c['beta_s_per_byte'] * 1e9:.3f} ns/B "
                     f"({c['bandwidth_GBps'] or float('nan'):.2f} GB/s), rms relative error {100 * c['rms_rel_error']:.0f}%")
    for w, i in res["workloads"].items():
        lines.append(f"{w}: gradients {i['grad_bytes'] / 2**20:.1f} MiB in {sum(len(b) for b in i['phases_bucket_bytes'].values())} "
                     f"buckets; CPU step {i['cpu_step_s']:.3f} s (batch {i['cpu_batch']}); P100 step fp32 "
                     f"{i['p100_step_s']['fp32'] * 1e3:.2f} ms (fraction {i['gpu_fraction']:.2f}, {i['gpu_fraction_source']})")
    lines += ["| workload | machine | 8 | 128 | 1024 nodes |", "|---|---|---|---|---|"]
    for c in res["curves"]:
        e = dict(zip(c["nodes"], c["efficiency"]))
        lines.append(f"| {c['workload']} | {c['machine']} | {e[8]:.3f} | {e[128]:.3f} | {e[1024]:.3f} |")
    for c in res["check"]:
        lines.append(f"check {c['workload']} x{c['ranks']}{' (oversub.)' if c['oversubscribed'] else ''}: allreduce "
                     f"measured {c['allreduce_measured_s'] * 1e3:.1f} ms, model {c['allreduce_model_s'] * 1e3:.1f} ms; "
                     f"efficiency measured {c['efficiency_measured']:.3f}, model {c['efficiency_model']:.3f} "
                     f"(error {c['efficiency_error']:+.3f})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpcgan bench projection", description=__doc__.splitlines()[0])
    p.add_argument("--allreduce", type=Path, default=DEFAULT_RESULTS / "allreduce.json")
    p.add_argument("--throughput", type=Path, default=DEFAULT_RESULTS / "throughput.json")
    p.add_argument("--scaling", type=Path, default=DEFAULT_RESULTS / "scaling.json", help="for the 2/4-rank check")
    p.add_argument("--workloads", default="crf,crf-small,lhc")
    p.add_argument("--gpu-fraction", type=float, default=DEFAULT_GPU_FRACTION,
                   help="achieved fraction of P100 peak when no GPU row was measured (assumption)")
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS / "projection.json")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--summary", action="store_true", help="print the table of an existing --out file and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from hpcgan.errors import UserError

    args = build_parser().parse_args(argv)
    if args.summary:
        print(summary(args.out))
        return 0
    if not 0 < args.gpu_fraction <= 1:
        raise UserError(f"--gpu-fraction {args.gpu_fraction}: expected a number in (0, 1]")
    run(args.allreduce, args.throughput, args.scaling, [w for w in args.workloads.split(",") if w],
        args.gpu_fraction, args.out, not args.no_plot)
    print(summary(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
