"""The run directory: resolved config, environment, metrics.jsonl, TensorBoard, figures, checkpoints.

Only rank 0 writes here; every other rank gets a RunDir whose writers do nothing.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hpcgan.config import Config, save_config


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_record(backend, placement: list[dict]) -> dict:
    """Versions, backend and where every rank ran (`placement`: one dict per rank, gathered by the caller)."""
    def version(mod: str) -> str:
        try:
            return __import__(mod).__version__
        except Exception:
            return "not installed"

    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
        "torch": torch.__version__, "horovod": version("horovod"), "h5py": version("h5py"),
        "numpy": version("numpy"), "mpi4py": version("mpi4py"), "backend": backend.describe(),
        "ranks": backend.size, "device": str(backend.device), "hostnames": sorted({p["host"] for p in placement}),
        "ranks_placement": placement,
        "cuda": torch.version.cuda, "git_commit": git_commit(), "argv": sys.argv,
    }


class RunDir:
    def __init__(self, path: str | Path, active: bool):
        self.path = Path(path)
        self.active = active
        self.checkpoints = self.path / "checkpoints"
        self.figures = self.path / "figures"
        self._tb = None
        if active:
            for d in (self.path, self.checkpoints, self.figures):
                d.mkdir(parents=True, exist_ok=True)
            for log in self.path.glob("*.jsonl"):
                drop_cut_last_line(log)

    def write_config(self, cfg: Config) -> None:
        if self.active:
            save_config(cfg, self.path / "config.yaml")

    def write_json(self, name: str, data: Any) -> None:
        if self.active:
            tmp = self.path / f".{name}.tmp"
            tmp.write_text(json.dumps(data, indent=2, default=str))
            tmp.replace(self.path / name)

    def append_jsonl(self, name: str, record: dict) -> None:
        if self.active:
            with open(self.path / name, "a") as f:
                f.write(json.dumps(record, default=float) + "\n")

    def log_metrics(self, record: dict, step: int) -> None:
        """One line of metrics.jsonl plus TensorBoard scalars."""
        if not self.active:
            return
        self.append_jsonl("metrics.jsonl", record)
        tb = self.tensorboard()
        prefix = record.get("kind", "train")
        for k, v in record.items():
            if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                tb.add_scalar(f"{prefix}/{k}", v, step)
        tb.flush()

    def tensorboard(self):
        if self._tb is None and self.active:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.path / "tb"))
        return self._tb

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; a line cut by a killed job is skipped, the rest is still good."""
    if not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if isinstance(r, dict)]


def drop_cut_last_line(path: Path) -> None:
    """A job killed mid-write leaves a last line without its newline: truncate it before appending, so the
    resumed job's first record does not land on the cut one."""
    data = Path(path).read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def read_metrics(path: Path) -> list[dict]:
    return read_jsonl(Path(path) / "metrics.jsonl")
