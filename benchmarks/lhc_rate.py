"""Tracks per second: the GAN generator against the conventional method, same inputs, same machine, one run.

The study's claim to test: the trained generator needs a fraction of the conventional method's time
(about 100 Hz on Xeon CPUs versus about 10 kHz on P100 GPUs in the paper). The workload of the
config (or checkpoint) picks what "conventional" is. Measured per batch size:
  gan-cpu          inputs (file units) -> model space -> G -> tracks in file units, torch on the CPU
  gan-cuda         the same on the GPU when torch.cuda.is_available() (host->device copy included)
workload lhc (hits -> fitted track): the conventional method is the fit alone
  fit-numpy        hpcgan.workloads.lhc.helix.fit_tracks on the batch (vectorised numpy)
  fit-per-track    hpcgan.workloads.lhc.helix.fit_track in a Python loop, as a conventional per-track code runs
                   (batch size does not matter; measured on --loop-tracks tracks)
workload lhc-fastsim (true particle -> reconstructed track): the whole chain, simulation plus fit
  chain-numpy      synth_lhc.propagate (scattering, smearing, inefficiency) + helix.fit_tracks on the batch
  chain-per-track  the same one particle at a time: propagate on one particle, then helix.fit_track
Inputs come from the synthetic tracker (hpcgan.workloads.lhc.synth). The generator is untrained unless
--checkpoint is given (the rate does not depend on the weights). Protocol: warm-up, then repeated timed
passes (benchmarks/common.py); the median rate is reported. JSON: results/lhc_rate.json.

    python -m benchmarks.lhc_rate [--config lhc-fastsim | --checkpoint RUN_OR_CKPT] [--batch-sizes 1 64 1024 8192]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/lhc_rate.py` as well as `python -m benchmarks.lhc_rate`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from benchmarks.common import DEFAULT_RESULTS, Stats, environment, log, rate_stats, time_batches, write_result
from hpcgan.config import load_config
from hpcgan.workloads.lhc import helix, synth as synth_lhc, synth_fastsim as synth_lhc_fastsim
from hpcgan.workloads import get_workload


def build(args):
    """Config, workload and generator: from a checkpoint, or untrained from a preset."""
    if args.checkpoint:
        from hpcgan.runtime import session
        from hpcgan.train.inference import load_generator

        backend = session.start("local", "cpu")
        cfg, workload, G, _, _ = load_generator(args.checkpoint, backend)
    else:
        cfg = load_config(args.config)
        workload = get_workload(cfg)
        torch.manual_seed(cfg.seed)
        G = workload.build_generator()
    return cfg, workload, G.eval()


def gan_rate(workload, G, inputs: np.ndarray, batch: int, device: torch.device, iters: int) -> Stats:
    G = G.to(device)
    x = torch.from_numpy(inputs[:batch])
    dummy = torch.zeros(batch, 6 if inputs.ndim == 2 else 5 + 3 * inputs.shape[2])
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None

    @torch.no_grad()
    def step():
        cond, _ = workload.prepare(x, dummy, device)
        return workload.to_data_units(G(cond)).cpu()

    return rate_stats(time_batches(step, warmup=2, iters=iters, batches_per_iter=1, sync=sync), batch)


def fit_rate(det, hits: np.ndarray, mask: np.ndarray, batch: int, iters: int) -> Stats:
    h, m = hits[:batch], mask[:batch]
    return rate_stats(time_batches(lambda: helix.fit_tracks(h, m, det), warmup=1, iters=iters), batch)


def loop_rate(det, hits: np.ndarray, mask: np.ndarray, n: int, iters: int) -> Stats:
    h, m = hits[:n], mask[:n]
    return rate_stats(time_batches(lambda: helix.fit_tracks_loop(h, m, det), warmup=0, iters=iters), n)


def chain_rate(det, particles: dict, batch: int, iters: int) -> Stats:
    """Simulation + fit of `batch` particles, vectorised (the same rng stream each pass)."""
    part = {k: v[:batch] for k, v in particles.items()}
    return rate_stats(time_batches(lambda: synth_lhc_fastsim.full_chain(np.random.default_rng(1), part, det),
                                   warmup=1, iters=iters), batch)


def chain_loop_rate(det, particles: dict, n: int, iters: int) -> Stats:
    """The chain one particle at a time: propagate one particle, then the per-track fit."""
    def run():
        rng = np.random.default_rng(1)
        for i in range(n):
            hits, mask, _ = synth_lhc.propagate(rng, {k: v[i:i + 1] for k, v in particles.items()}, det)
            if mask.sum() >= det.min_hits:
                helix.fit_track(hits[0].astype(np.float32), mask[0], det)
    return rate_stats(time_batches(run, warmup=0, iters=iters), n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="lhc", help="preset for the untrained generator (default lhc)")
    p.add_argument("--checkpoint", help="run directory or checkpoint of a trained generator")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 1024, 8192])
    p.add_argument("--loop-tracks", type=int, default=1000, help="tracks for the per-track loop")
    p.add_argument("--iters", type=int, default=5, help="timed passes per measurement")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=str(DEFAULT_RESULTS / "lhc_rate.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, workload, G = build(args)
    det = helix.detector(cfg.lhc.n_layers)
    n = max(max(args.batch_sizes), args.loop_tracks)
    fastsim = cfg.workload == "lhc-fastsim"
    log(f"lhc_rate: {cfg.workload}, {n} tracks ({cfg.lhc.n_layers} layers)")
    env = environment()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    if fastsim:
        particles = synth_lhc.draw_particles(np.random.default_rng(0), n, synth_lhc_fastsim._options({}))
        inputs, _, _ = synth_lhc_fastsim.full_chain(np.random.default_rng(1), particles, det)
        conv, conv_loop = "chain-numpy", "chain-per-track"
        loop = chain_loop_rate(det, particles, args.loop_tracks, max(1, args.iters // 2))
        conventional = lambda b: chain_rate(det, particles, b, args.iters)  # noqa: E731
    else:
        inputs, _, _ = synth_lhc.make_tracks(np.random.default_rng(0), n, det, synth_lhc._options({"layers": det.n_layers}))
        hits = inputs[:, :3].transpose(0, 2, 1).astype(np.float64)
        mask = inputs[:, 3] > 0.5
        conv, conv_loop = "fit-numpy", "fit-per-track"
        loop = loop_rate(det, hits, mask, args.loop_tracks, max(1, args.iters // 2))
        conventional = lambda b: fit_rate(det, hits, mask, b, args.iters)  # noqa: E731
    rows.append({"method": conv_loop, "device": "cpu", "batch": 1, "rate": loop})
    for b in args.batch_sizes:
        rows.append({"method": conv, "device": "cpu", "batch": b, "rate": conventional(b)})
        for dev in devices:
            rows.append({"method": f"gan-{dev.type}", "device": dev.type, "batch": b,
                         "rate": gan_rate(workload, G, inputs, b, dev, args.iters)})
    loop_hz = loop.median
    print(f"{'method':<17}{'device':<7}{'batch':>7}{'tracks/s':>14}{'x ' + conv_loop:>19}{'x ' + conv:>14}")
    numpy_at = {r["batch"]: r["rate"].median for r in rows if r["method"] == conv}
    for r in rows:
        ref = numpy_at.get(r["batch"])
        vs_numpy = f"{r['rate'].median / ref:.2f}" if ref and r["method"] != conv_loop else "-"
        print(f"{r['method']:<17}{r['device']:<7}{r['batch']:>7}{r['rate'].median:>14.1f}"
              f"{r['rate'].median / loop_hz:>19.2f}{vs_numpy:>14}")
    params = {"config": args.config, "workload": cfg.workload, "checkpoint": args.checkpoint, "batch_sizes": args.batch_sizes,
              "loop_tracks": args.loop_tracks, "iters": args.iters, "n_layers": det.n_layers,
              "torch_threads": torch.get_num_threads(),
              "generator_parameters": sum(p.numel() for p in G.parameters()),
              "lhc": {k: getattr(cfg.lhc, k) for k in ("hidden", "blocks", "noise_dim")}}
    path = write_result(args.out, "lhc_rate", params, rows, env)
    log(f"lhc_rate: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
