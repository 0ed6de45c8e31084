"""A preemption during start-up (imports, data staging, the resume read) is a requeue, not a death: the
handlers are installed when the process starts, and the trainer checkpoints at its first step boundary."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from hpcgan.runtime.signals import EXIT_REQUEUE
from hpcgan.train import checkpoint as ckpt

from conftest import TINY, write_crf


@pytest.mark.timeout(180)
def test_sigterm_before_the_loop_starts_checkpoints_and_exits_for_requeue(tmp_path):
    data = write_crf(tmp_path / "crf.h5", 32)
    cmd = [sys.executable, "-m", "hpcgan.cli.main", "train", "--config", "crf-small", "--backend", "local", *TINY,
           f"data.path={data}", "data.val_path=", f"run_dir={tmp_path / 'run'}", "train.epochs=2",
           "train.batch_size=4"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    try:
        for line in proc.stderr:  # the trainer's first line: the backend is up, the loop has not started
            lines.append(line)
            if line.startswith("hpcgan train: workload"):
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=120)[1], None
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines) + (rest or "")
    assert proc.returncode == EXIT_REQUEUE, text
    assert "preempted (SIGTERM): checkpoint at step 1 written" in text
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == [ckpt.checkpoint_name(1)]
