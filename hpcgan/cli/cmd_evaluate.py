"""`hpcgan evaluate RUN_OR_CHECKPOINT --data HELD_OUT.h5`: the workload's science evaluation.

Generation and the per-sample measurements are sharded over ranks: each rank reads,
generates and measures only its contiguous share, batch by batch, and keeps a few
numbers per sample and sums (workloads/evaluation.py). Rank 0 receives those and the
first few samples for the figures, never the whole set, and writes the figures, the
JSON and, for a run directory, the loss curves. Memory per rank: one batch plus the
rows (0 bytes per sample for CRF, about 0.5 KB per LHC track, about 0.4 KB per
galaxy stamp).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hpcgan.cli.cmd_generate import add_weight_args
from hpcgan.runtime import session
from hpcgan.train.inference import (combine_evaluation, generate_range, load_generator, open_for_inference,
                                    rank_range)
from hpcgan.workloads.evaluation import merge, merge_examples, take_examples


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained generator on held-out data (figures + JSON)")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help="run directory or checkpoint file")
    p.add_argument("--data", required=True, help="held-out HDF5 file or glob")
    p.add_argument("--out", help="output folder (default: RUN_DIR/evaluation)")
    p.add_argument("--max-samples", type=int, default=20000, help="evaluate the first N samples (default 20000)")
    p.add_argument("--batch-size", type=int, default=256)
    add_weight_args(p, "--checkpoint")
    p.add_argument("--backend", default="auto", choices=["auto", "horovod", "torch", "local"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    backend = session.start(args.backend, args.device)
    cfg, workload, G, ckpt_path, used = load_generator(args.checkpoint, backend, which=args.which,
                                                       weights=args.weights)
    reader = open_for_inference(cfg, args.data, backend)
    workload.check_dataset(reader.attrs, args.data)
    run_dir = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else ckpt_path.parent.parent
    out = Path(args.out) if args.out else run_dir / "evaluation"
    n = min(reader.num_samples, max(args.max_samples, 1))
    start, stop = rank_range(n, backend.rank, backend.size)

    with session.rank_local_errors():
        torch.manual_seed(cfg.seed + 104729 * (backend.rank + 1))  # generator noise: reproducible per rank
        meta_names = list(reader.attrs.get("meta") or {})
        parts, examples = [], []
        for g in generate_range(cfg, workload, G, reader, start, stop, args.batch_size, backend.device):
            end = g.first + len(g.fake)
            meta = {name: reader.read_meta(name, g.first, end) for name in meta_names}
            parts.append(workload.evaluation_batch(g.inputs, g.targets, g.fake, meta))
            examples.append(take_examples(g.inputs, g.targets, g.fake, meta, g.first, workload.eval_examples))
        mine = [e for e in examples if e is not None]  # this rank's share of the figures' first samples
        stats, shown, sent = combine_evaluation(backend, merge(parts), merge_examples(mine) if mine else None)

        def evaluate_on_root() -> None:
            out.mkdir(parents=True, exist_ok=True)
            summary = workload.evaluation_finish(stats, shown, out)
            summary = {"checkpoint": str(ckpt_path), "weights": used, "data": args.data, "samples": n,
                       "bytes_combined": sent, **(summary or {})}
            plot_loss_curves(run_dir, out)
            (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
            print(workload.summary_table(summary))
            print(f"evaluation of {ckpt_path} ({used} generator) on {n} samples of {args.data}: figures and "
                  f"summary.json in {out}")

        # Minutes on a large held-out set: the others wait in short polls, not in one timed barrier.
        backend.run_on_root(evaluate_on_root if backend.is_root else None)
    session.stop()
    return 0


def plot_loss_curves(run_dir: Path, out: Path) -> None:
    """Training losses and validation metrics from metrics.jsonl (when evaluating a run directory)."""
    from hpcgan.train.run_dir import read_metrics

    records = read_metrics(run_dir)
    if not records:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    for key in ("g_loss", "d_loss", "g_l1", "g_adv"):
        pts = [(r["step"], r[key]) for r in train if key in r]
        if pts:
            axes[0].plot(*zip(*pts), label=key)
    axes[0].set(xlabel="step", ylabel="loss", title="training losses (mean over ranks)", yscale="log")
    for key in sorted({k for r in val for k in r} - {"kind", "step", "epoch"}):
        pts = [(r["epoch"], r[key]) for r in val if key in r]
        axes[1].plot(*zip(*pts), marker="o", label=key)
    axes[1].set(xlabel="epoch", title="validation", yscale="log")
    for ax in axes:  # a short run may have no curve on one side: no legend (and no warning) there
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=100)
    plt.close(fig)
