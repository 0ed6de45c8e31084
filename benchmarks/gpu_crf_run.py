"""The paper-size CRF run for a short GPU visit: synthetic 256x256 data, the crf preset in bf16 for a wall budget,
then the spectral and colour evaluation against L1-only when the time left allows. Written as it goes.

Phases, each recorded (status, wall time, error or reason) in OUT/crf_run.json and OUT/crf_run.md, rewritten
after every phase (complete false until the end):
  data       --n-train (3100, the paper's pairs) + --n-val held-out samples from the workload's own synthetic
             generator (`hpcgan data synth crf`), split over --workers parallel processes, one file each with its
             own seed (the reader takes the glob), in WORK/data; reused when its marker says it holds the same
  train_gan  `hpcgan train --config crf --backend torch` (torch.distributed on one GPU, NCCL; no Horovod),
             train.amp=bf16, epochs without end, stopped with SIGTERM at --train-s or when the budget needs the
             rest: the trainer finishes the step, checkpoints and exits 75 (hpcgan/runtime/signals.py)
  eval_gan   `hpcgan evaluate` of the last checkpoint on the held-out samples (spectra, colour, figures)
  train_l1   the same preset with loss.lambda_gan=0 up to the GAN's step count, only when enough budget is left
  eval_l1    the same evaluation
  compare    benchmarks/crf_gan_vs_l1.py --compare-only: high-band power and inter-band coherence, GAN vs L1-only
Run directories OUT/gan and OUT/l1 hold config, metrics.jsonl, TensorBoard, figures and evaluation/ as the
trainer writes them; their checkpoints/ are symbolic links into WORK (hundreds of MB each stay out of OUT).
Every subprocess runs with PYTHONPATH = the repository (nothing needs installing) and a time limit.

    python -m benchmarks.gpu_crf_run --out OUT [--budget-s 540] [--train-s 300]    (benchmarks/gpu_crf_run.sh)
    python -m benchmarks.gpu_crf_run --out OUT --data-only     (make the data, e.g. while gpu_check runs)
    python -m benchmarks.gpu_crf_run --out OUT --smoke         (CPU, 32x32, tiny models: the test suite's)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/gpu_crf_run.py` as well as `python -m benchmarks.gpu_crf_run`
    sys.path.insert(0, str(REPO))

from benchmarks.common import environment, log, write_result  # noqa: E402

CLI = [sys.executable, "-m", "hpcgan.cli.main"]
# --smoke: a 2-core CPU runs every phase in about a minute.
SMOKE_MODEL = ["crf.widths=[8,16]", "crf.d_widths=[8,16]", "crf.d_scales=1", "train.batch_size=4",
               "train.log_every=2"]
SAMPLE_CHANNELS = 44 + 3  # inputs + targets per pixel; the meta (tau, cloud fraction) adds about one float32
STARTUP_S = 25.0  # a paper-size training process's start-up on a GPU (models, NCCL, cuDNN autotuning)
L1_STEP_COST = 0.4  # an L1-only step against a GAN step (no discriminator phases)
MAX_AUTO_TRAIN_S = 300.0
EXIT_PREEMPTED = 75  # hpcgan.runtime.signals.EXIT_REQUEUE: stopped by the signal, checkpoint written


class Run:
    """Options, the deadline and the record (JSON + Markdown, rewritten by `save`)."""

    def __init__(self, args: argparse.Namespace, t_start: float):
        self.args, self.t_start = args, t_start
        self.deadline = t_start + args.budget_s
        self.out, self.work = Path(args.out), Path(args.work_dir)
        self.data = self.work / "data"
        self.name = "crf_data" if args.data_only else "crf_run"  # the data made in the background: its own record
        self.record: dict = {"complete": False, "phases": {}, "params": {k: str(v) if isinstance(v, Path) else v
                                                                        for k, v in vars(args).items()}}
        self.env = environment()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_result(self.out / f"{self.name}.json", "gpu_crf_run", self.record["params"], self.record, env=self.env)
        md = self.out / f"{self.name}.md"
        tmp = md.with_name(md.name + ".tmp")
        tmp.write_text(markdown(self.record) + "\n")
        os.replace(tmp, md)

    def phase(self, name: str, fn: Callable[[dict], None], need_s: float = 0.0) -> dict:
        """Run one phase in its own try, recorded before, during and after; skipped when the budget is short."""
        info: dict = {"status": "running", "started_s": round(time.monotonic() - self.t_start, 1)}
        self.record["phases"][name] = info
        if self.left() < need_s:
            info.update(status="skipped", reason=f"budget: {max(self.left(), 0):.0f} s left of --budget-s "
                                                 f"{self.args.budget_s:.0f}, needs about {need_s:.0f} s")
            log(f"[{name}] skipped: {info['reason']}")
            self.save()
            return info
        log(f"[{name}] ({self.left():.0f} s of the budget left)")
        self.save()
        t0 = time.monotonic()
        try:
            fn(info)
            if info["status"] == "running":
                info["status"] = "ok"
        except Exception as e:  # a failed phase is a result; later phases decide whether they can run
            info["status"], info["error"] = "error", f"{type(e).__name__}: {e}"
            log(f"[{name}] ERROR {info['error']}")
        finally:
            info["wall_s"] = round(time.monotonic() - t0, 1)
            self.save()
        return info

    def ok(self, name: str) -> bool:
        return self.record["phases"].get(name, {}).get("status") == "ok"


def child_env(threads: int | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(HDF5_USE_FILE_LOCKING="FALSE", PYTHONUNBUFFERED="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):  # one rank of its own
        env.pop(k, None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_logged(cmd: list[str], log_path: Path, timeout: float, env: dict | None = None,
               stop_at: float | None = None, grace_s: float = 60.0) -> dict:
    """Run cmd with its output in log_path. At `stop_at` (monotonic) it gets SIGTERM, `grace_s` later SIGKILL;
    `timeout` is the hard limit. Returns the exit code, whether it was stopped, and the wall time."""
    log(f"+ {' '.join(cmd)}  (log: {log_path})")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    hard = t0 + timeout
    stop_at = hard if stop_at is None else min(stop_at, hard)
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env or child_env(), stdout=out, stderr=subprocess.STDOUT)
        stopped = None
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if stopped is None and now >= stop_at:
                    proc.send_signal(signal.SIGTERM)
                    stopped = "SIGTERM"
                    hard = min(hard + grace_s, now + grace_s)
                elif now >= hard:
                    proc.kill()
                    stopped = "SIGKILL"
                    proc.wait()
                    break
                time.sleep(0.2)
        except BaseException:  # we are being stopped: the child checkpoints too, then goes
            stop_child(proc, grace_s)
            raise
    return {"returncode": proc.returncode, "stopped": stopped, "wall_s": round(time.monotonic() - t0, 1)}


def stop_child(proc: subprocess.Popen, grace_s: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# --- data --------------------------------------------------------------------------------------------------------

def data_spec(a: argparse.Namespace) -> dict:
    return {"n_train": a.n_train, "n_val": a.n_val, "size": a.size, "dtype": a.dtype, "seed": a.seed}


def bytes_per_sample(size: int, dtype: str) -> int:
    return (SAMPLE_CHANNELS * (2 if dtype == "float16" else 4) + 4) * size * size


def fit_to_disk(run: Run, info: dict) -> int:
    """Training samples that fit the free space (leaving room for checkpoints): --n-train, or fewer, said so."""
    a = run.args
    run.data.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(run.data).free
    per = bytes_per_sample(a.size, a.dtype)
    reserve = a.disk_reserve_gb * 2**30
    info.update(free_gb=round(free / 2**30, 1), need_gb=round((a.n_train + a.n_val) * per / 2**30, 1))
    fits = int((free - reserve) // per) - a.n_val
    if fits < a.n_train:
        if fits < 10 * 6:
            raise RuntimeError(f"{run.data}: {free / 2**30:.1f} GB free, {info['need_gb']} GB needed "
                               f"(+{a.disk_reserve_gb} GB for checkpoints)")
        info["n_train_reduced"] = f"{a.n_train} -> {fits}: {free / 2**30:.1f} GB free on {run.data}"
        log(f"  notice: training samples reduced {info['n_train_reduced']}")
        return fits
    return a.n_train


def make_data(run: Run, info: dict) -> None:
    """Train files train-KKK.h5 (seed*1000 + K each) and val.h5 (another seed), all processes at once."""
    a = run.args
    marker = run.data / "READY.json"
    spec = data_spec(a)
    if marker.is_file() and json.loads(marker.read_text()).get("spec") == spec:
        info.update(reused=True, **json.loads(marker.read_text()))
        log(f"  {run.data}: data already there, reused")
        return
    for old in [*run.data.glob("train-*.h5"), run.data / "val.h5", marker]:
        old.unlink(missing_ok=True)
    n_train = fit_to_disk(run, info)
    workers = max(1, min(a.workers, n_train))
    counts = [n_train * (k + 1) // workers - n_train * k // workers for k in range(workers)]
    jobs = [(f"train-{k:03d}.h5", n, a.seed * 1000 + k) for k, n in enumerate(counts) if n] + \
        [("val.h5", a.n_val, a.seed * 1000 + 999)]
    t0 = time.monotonic()
    procs = []
    for name, n, seed in jobs:
        cmd = CLI + ["data", "synth", "crf", "--n", str(n), "--size", str(a.size), str(a.size), "--seed", str(seed),
                     "--out", str(run.data / name), "--dtype", a.dtype, "--backend", "local", "--quiet"]
        logf = open(run.data / f"{name}.log", "w")
        procs.append((name, logf, subprocess.Popen(cmd, cwd=REPO, env=child_env(threads=1), stdout=logf,
                                                   stderr=subprocess.STDOUT)))
    failed = []
    try:
        for name, logf, p in procs:
            try:
                p.wait(timeout=max(run.left(), 1.0))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            logf.close()
            if p.returncode != 0:
                failed.append(f"{name}: exit {p.returncode}: {tail(run.data / f'{name}.log', 500)}")
    finally:  # stopped or out of time: no process outlives us
        for _, _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if failed:
        raise RuntimeError("data synth failed: " + " | ".join(failed))
    made = {"spec": spec, "n_train_made": n_train, "files": [j[0] for j in jobs], "workers": workers,
            "synth_s": round(time.monotonic() - t0, 1), "dtype": a.dtype}
    marker.write_text(json.dumps(made, indent=1) + "\n")
    info.update(made)
    log(f"  {n_train} + {a.n_val} samples at {a.size}x{a.size} in {made['synth_s']:.0f} s ({workers} processes)")


# --- training and evaluation ---------------------------------------------------------------------------------------

def run_dir(run: Run, name: str) -> Path:
    """OUT/NAME, fresh, with checkpoints/ a link into WORK (big files stay out of the result folder)."""
    d = run.out / name
    if d.exists():
        shutil.rmtree(d)
    ckpts = run.work / f"checkpoints-{name}"
    if ckpts.exists():
        shutil.rmtree(ckpts)
    ckpts.mkdir(parents=True)
    d.mkdir(parents=True)
    (d / "checkpoints").symlink_to(ckpts, target_is_directory=True)
    return d


def train_cmd(run: Run, rd: Path, extra: Sequence[str]) -> list[str]:
    a = run.args
    model = SMOKE_MODEL if a.smoke else ["train.checkpoint_every=250", "train.keep_checkpoints=2"]
    # KEY=VALUE overrides before the options: argparse stops collecting positionals after an option.
    return CLI + ["train", "--config", a.config, f"run_dir={rd}", f"data.path={run.data / 'train-*.h5'}",
                  f"data.val_path={run.data / 'val.h5'}", f"crf.size={a.size}", f"train.amp={a.amp}",
                  "train.epochs=100000", *model, *a.set, *extra,
                  "--backend", "torch", "--device", a.device, "--resume", "never"]


def last_step(rd: Path) -> int | None:
    steps = [int(m.group(1)) for p in (rd / "checkpoints").glob("ckpt-*.pt")
             if (m := re.match(r"ckpt-(\d{8})\.pt$", p.name))]
    return max(steps, default=None)


def train_summary(rd: Path) -> dict:
    """From metrics.jsonl: steps, epochs, the training rate and the last validation record."""
    from hpcgan.train.run_dir import read_metrics

    records = read_metrics(rd) if (rd / "metrics.jsonl").is_file() else []
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    rates = sorted(r["samples_per_s"] for r in train[1:] or train)  # the first interval holds the warm-up
    out = {"logged_steps": train[-1]["step"] if train else 0, "epochs_done": max((r["epoch"] for r in val), default=0),
           "samples_per_s_median": rates[len(rates) // 2] if rates else None,
           "last_losses": {k: v for k, v in (train[-1] if train else {}).items() if k.endswith("_loss")},
           "last_val": val[-1] if val else None}
    return out


def train(run: Run, name: str, info: dict, train_s: float, reserve_s: float, extra: Sequence[str] = ()) -> None:
    """One training run, stopped by SIGTERM at train_s or when only reserve_s of the budget is left."""
    rd = run_dir(run, name)
    stop_at = min(time.monotonic() + train_s, run.deadline - reserve_s)
    res = run_logged(train_cmd(run, rd, extra), rd / "train.log", timeout=max(run.left() - 5, 10),
                     env=child_env(), stop_at=stop_at, grace_s=run.args.grace_s)
    info.update(res, **train_summary(rd), checkpoint_step=last_step(rd), train_s_asked=round(train_s, 1))
    info["how_it_ended"] = {0: "finished (max_steps)", EXIT_PREEMPTED: "stopped by SIGTERM at the wall budget, "
                            "checkpoint written"}.get(res["returncode"], f"exit {res['returncode']}")
    log(f"  {name}: {info['how_it_ended']}; checkpoint step {info['checkpoint_step']}, "
        f"{info['epochs_done']} epoch(s), {info['samples_per_s_median'] or 0:.1f} samples/s")
    if res["returncode"] not in (0, EXIT_PREEMPTED) or info["checkpoint_step"] is None:
        raise RuntimeError(f"{name} training: {info['how_it_ended']}, checkpoint "
                           f"{info['checkpoint_step']}: {tail(rd / 'train.log', 800)}")


def evaluate(run: Run, name: str, info: dict) -> None:
    a = run.args
    rd = run.out / name
    cmd = CLI + ["evaluate", str(rd), "--data", str(run.data / "val.h5"), "--backend", "local", "--device", a.device,
                 "--max-samples", str(a.n_eval), "--batch-size", "16", "--out", str(rd / "evaluation")]
    res = run_logged(cmd, rd / "evaluate.log", timeout=max(min(run.left() - 2, a.eval_timeout_s), 5))
    info.update(res)
    summary = rd / "evaluation" / "summary.json"
    if res["returncode"] != 0 or not summary.is_file():
        raise RuntimeError(f"evaluate {name}: exit {res['returncode']} ({res['stopped'] or 'not stopped'}): "
                           f"{tail(rd / 'evaluate.log', 800)}")
    s = json.loads(summary.read_text())
    info["summary"] = {k: s[k] for k in ("samples", "l1", "mse") if k in s}
    gray = s.get("spectral_distance", {}).get("gray", {})
    info["summary"].update({f"{b}_abs": gray[b]["abs"] for b in ("low", "mid", "high") if b in gray})


def compare(run: Run, info: dict) -> None:
    a = run.args
    steps = run.record["phases"]["train_gan"]["checkpoint_step"]
    cmd = [sys.executable, str(REPO / "benchmarks" / "crf_gan_vs_l1.py"), "--compare-only", "--out", str(run.out),
           "--data-dir", str(run.data), "--config", a.config, "--size", str(a.size), "--steps", str(steps),
           "--n-train", str(run.record["phases"]["data"].get("n_train_made", a.n_train)), "--n-val", str(a.n_val),
           *[f"--set={s}" for s in a.set]]
    res = run_logged(cmd, run.out / "compare.log", timeout=max(min(run.left() - 2, a.eval_timeout_s), 5))
    info.update(res)
    comparison = run.out / "comparison.json"
    if res["returncode"] != 0 or not comparison.is_file():
        raise RuntimeError(f"compare: exit {res['returncode']}: {tail(run.out / 'compare.log', 800)}")
    c = json.loads(comparison.read_text())
    info.update({k: c[k] for k in ("gan_high_band_closer", "gan_coherence_within_flag", "figures")},
                gray={n: {k: c["gray"][n][k] for k in ("l1", "high_abs", "high_power_ratio", "coh_high", "coh_high_real")}
                      for n in c["gray"]})


def auto_train_s(run: Run) -> float:
    """The GAN's share of what is left: its training T, then L1-only (start-up S plus ~L1_STEP_COST of the
    GAN's step time for as many steps), two evaluations and the comparison (3 eval reserves) fit when
    T + S + L1_STEP_COST (T - S) = left - 3 reserves."""
    a = run.args
    fixed = 3 * a.eval_reserve_s
    if a.compare == "never":
        t = run.left() - a.eval_reserve_s
    else:
        t = (run.left() - fixed - STARTUP_S * (1 - L1_STEP_COST)) / (1 + L1_STEP_COST)
    return max(a.min_train_s, min(MAX_AUTO_TRAIN_S, t))


def run_all(run: Run) -> None:
    a = run.args
    run.phase("data", lambda info: make_data(run, info))
    if a.data_only or not run.ok("data"):
        return
    ev = a.eval_reserve_s
    train_s = auto_train_s(run) if a.train_s == "auto" else a.train_s
    run.record["train_s"] = round(train_s, 1)
    run.phase("train_gan", lambda info: train(run, "gan", info, train_s, reserve_s=ev), need_s=a.min_train_s + ev)
    if not run.ok("train_gan"):
        return
    run.phase("eval_gan", lambda info: evaluate(run, "gan", info), need_s=10)
    gan = run.record["phases"]["train_gan"]
    # L1-only gets the GAN's step count and what is left after its own evaluation and the comparison.
    l1_extra = ["loss.lambda_gan=0", f"train.max_steps={gan['checkpoint_step']}"]
    if a.compare == "never":
        run.record["phases"]["train_l1"] = {"status": "skipped", "reason": "--compare never"}
        run.save()
        return
    run.phase("train_l1", lambda info: train(run, "l1", info, max(run.left(), 0), reserve_s=2 * ev, extra=l1_extra),
              need_s=a.min_train_s + 2 * ev)
    if not run.ok("train_l1"):
        return
    l1 = run.record["phases"]["train_l1"]
    l1["same_steps_as_gan"] = l1["checkpoint_step"] == gan["checkpoint_step"]
    run.phase("eval_l1", lambda info: evaluate(run, "l1", info), need_s=10)
    if run.ok("eval_gan") and run.ok("eval_l1"):
        run.phase("compare", lambda info: compare(run, info), need_s=10)


# --- the report ---------------------------------------------------------------------------------------------------

def markdown(rec: dict) -> str:
    p = rec["params"]
    why = f"interrupted by {rec['interrupted']}" if rec.get("interrupted") else "written while running"
    state = "complete" if rec["complete"] else f"INCOMPLETE ({why})"
    lines = [f"CRF run, config {p['config']} at {p['size']}x{p['size']}, amp {p['amp']}, device {p['device']}, "
             f"budget {p['budget_s']:.0f} s (GAN training {rec.get('train_s', p['train_s'])} s), {state}", "",
             "| phase | status | wall s | result |", "|---|---|---|---|"]
    for name, ph in rec["phases"].items():
        lines.append(f"| {name} | {ph['status']} | {ph.get('wall_s', '')} | {_phase_note(name, ph)[:240]} |")
    c = rec["phases"].get("compare", {})
    if c.get("status") == "ok":
        lines += ["", "| model | L1 | high-band abs log10 power distance | high-band power ratio | high-band "
                  "coherence (real) |", "|---|---|---|---|---|"]
        for n, g in c["gray"].items():
            lines.append(f"| {n} | {g['l1']:.4f} | {g['high_abs']:.3f} | {g['high_power_ratio']:.3f} | "
                         f"{g['coh_high']:.3f} ({g['coh_high_real']:.3f}) |")
        yes = {True: "YES", False: "NO"}
        lines += ["", f"- GAN high-band power closer to real than L1-only: {yes[c['gan_high_band_closer']]}",
                  f"- GAN high-band coherence within the flag of real: {yes[c['gan_coherence_within_flag']]}",
                  f"- figures: {', '.join(c['figures'])}"]
    return "\n".join(lines)


def _phase_note(name: str, ph: dict) -> str:
    if ph.get("error") or ph.get("reason"):
        return ph.get("error") or ph["reason"]
    if name == "data":
        how = " (reused)" if ph.get("reused") else f", {ph.get('workers', '?')} processes, {ph.get('synth_s', '?')} s"
        return (f"{ph.get('n_train_made', '?')} training samples{how}"
                + (f"; reduced {ph['n_train_reduced']}" if ph.get("n_train_reduced") else ""))
    if name.startswith("train"):
        rate = ph.get("samples_per_s_median")
        val = ph.get("last_val") or {}
        return (f"{ph.get('how_it_ended', '')}; step {ph.get('checkpoint_step')}, {ph.get('epochs_done')} epoch(s), "
                f"{'' if rate is None else f'{rate:.1f} samples/s, '}losses {_fmt(ph.get('last_losses'))}"
                + (f"; val {_fmt({k: v for k, v in val.items() if k not in ('kind', 'step', 'epoch')})}" if val else ""))
    if name.startswith("eval"):
        return _fmt(ph.get("summary"))
    if name == "compare":
        return f"GAN high band closer: {ph.get('gan_high_band_closer')}"
    return ""


def _fmt(d: dict | None) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in (d or {}).items())


# --- entry point ---------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="result folder: crf_run.json/.md, run dirs, figures")
    p.add_argument("--work-dir", type=Path, help="data and checkpoints (default $TMPDIR or /tmp, hpcgan-gpu-crf)")
    p.add_argument("--budget-s", type=float, default=540.0, help="wall budget of the whole run (default 540)")
    p.add_argument("--train-s", default="300",
                   help="wall time of the GAN's training process, start-up included (default 300); auto: the "
                        "share of the budget left after the data that leaves the L1-only run and both "
                        "evaluations room (what gpu_suite.sh asks for)")
    p.add_argument("--config", default="crf", help="preset (default crf: the paper's 256x256 model)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--n-train", type=int, default=3100, help="training samples (default 3100, as the paper)")
    p.add_argument("--n-val", type=int, default=64, help="held-out samples (validation and evaluation)")
    p.add_argument("--n-eval", type=int, default=64, help="held-out samples evaluated")
    p.add_argument("--seed", type=int, default=11, help="data seed")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"],
                   help="storage of the data files (default float16: 20 GB instead of 38 for 3100 + 64 samples)")
    p.add_argument("--workers", type=int, default=min(16, len(os.sched_getaffinity(0))),
                   help="parallel data synth processes (default: the cores, at most 16)")
    p.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "off"])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--compare", default="auto", choices=["auto", "never"],
                   help="auto: train L1-only and compare when the budget left allows")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for both runs")
    p.add_argument("--data-only", action="store_true", help="make (or check) the data and stop")
    p.add_argument("--smoke", action="store_true", help="CPU smoke test: 32x32, tiny models, small budgets")
    p.add_argument("--min-train-s", type=float, default=45.0, help="a training phase needs this much budget")
    p.add_argument("--eval-reserve-s", type=float, default=40.0,
                   help="budget kept for each evaluation and the comparison")
    p.add_argument("--eval-timeout-s", type=float, default=180.0)
    p.add_argument("--grace-s", type=float, default=60.0, help="SIGTERM to SIGKILL, for the checkpoint write")
    p.add_argument("--disk-reserve-gb", type=float, default=4.0, help="free space kept for checkpoints")
    return p


SMOKE_DEFAULTS = {"size": 32, "n_train": 48, "n_val": 8, "n_eval": 8, "dtype": "float32", "workers": 2,
                  "device": "cpu", "budget_s": 150.0, "train_s": "10", "min_train_s": 5.0, "eval_reserve_s": 15.0,
                  "grace_s": 20.0, "disk_reserve_gb": 0.0}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.smoke:  # smoke sizes, unless given on the command line
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
        for k, v in SMOKE_DEFAULTS.items():
            if f"--{k.replace('_', '-')}" not in given:
                setattr(args, k, v)
    if args.train_s != "auto":
        try:
            args.train_s = float(args.train_s)
        except ValueError:
            p.error(f"--train-s {args.train_s!r}: expected seconds or auto")
    if args.work_dir is None:
        args.work_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "hpcgan-gpu-crf"
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: torch sees no GPU here (--smoke runs the CPU smoke test)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    t_start = time.monotonic()
    args = parse_args(argv)
    run = Run(args, t_start)

    def interrupted(signum, frame):
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, interrupted)
    try:
        run_all(run)
        run.record["complete"] = True
    except KeyboardInterrupt as e:
        run.record["interrupted"] = str(e) or "SIGINT"
        for ph in run.record["phases"].values():
            if ph["status"] == "running":
                ph["status"] = "interrupted"
    finally:
        run.record["wall_s"] = round(time.monotonic() - t_start, 1)
        run.save()
    print((run.out / f"{run.name}.md").read_text())
    failed = [n for n, ph in run.record["phases"].items() if ph["status"] == "error"]
    return 1 if failed or run.record.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
