"""Checks of a training job's inputs that need no collective, run on every rank before the first one.

Called through Backend.agree (cmd_train), so a bad data file, glob or checkpoint
path ends the job with one line from rank 0 and exit code 2 on every rank
instead of an error inside the training loop's rank-local region (where it
must abort the job). Whatever reaches train() after this is either fine or
genuinely rank-local.
"""
from __future__ import annotations

import os
from pathlib import Path

from hpcgan.config import Config
from hpcgan.data.stage import check_stage_dir
from hpcgan.errors import UserError
from hpcgan.runtime.backend import Backend


def check_training_inputs(cfg: Config, backend: Backend, resume: str = "auto") -> None:
    """Open the training and validation data as the trainer will (files, schema, finite values
    when data.check_finite scans on open: this rank's share, remembered so the trainer does not scan again;
    fit to the workload, the plan's errors at this world size),
    that an explicit data.stage_dir is writable, and that an explicit --resume path exists (rank 0 reads
    checkpoints)."""
    from hpcgan.data.reader import mark_scanned
    from hpcgan.train.plan import make_plan
    from hpcgan.train.trainer import make_reader
    from hpcgan.workloads.registry import get_workload

    workload = get_workload(cfg)
    sizes: dict[str, int] = {}
    for key, path, train in (("data.path", cfg.data.path, True), ("data.val_path", cfg.data.val_path, False)):
        if not path and not train:
            continue
        if not path:
            raise UserError(f"config key {key}: empty (expected an HDF5 file or a glob such as data/crf-*.h5)")
        with make_reader(cfg, backend.rank, backend.size, path, train=train) as reader:
            workload.check_dataset(reader.attrs, path)
            sizes[key] = reader.num_samples
            if reader.needs_scan():  # this rank's share only; the caller's agreement covers the rest
                reader.scan_finite(backend.rank, backend.size)
                mark_scanned(reader)
    plan = make_plan(cfg, backend.size, sizes["data.path"], sizes.get("data.val_path", 0))
    if plan.errors:  # the trainer's own plan: steps per epoch, accumulation (see --dry-run --world-size N)
        raise UserError(plan.errors[0])
    if not backend.supports_compression(cfg.train.grad_compression):
        raise UserError(f"config key train.grad_compression: {cfg.train.grad_compression} is not supported by the "
                        f"{backend.name} backend (expected one of {', '.join(backend.compressions)}; the torch "
                        "backend has all)")
    if cfg.data.stage:  # every rank, on its own node: an explicit data.stage_dir must be writable there
        check_stage_dir(cfg.data.stage_dir, os.environ)
    if backend.is_root and resume not in ("auto", "never") and not Path(resume).exists():
        raise UserError(f"--resume {resume}: no such checkpoint file or run directory")
