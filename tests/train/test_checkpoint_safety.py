"""A checkpoint is data, not a program: a payload whose unpickling would run a command is refused by every
command that loads checkpoints (evaluate, generate, train's resume), with one line naming the file."""
import hashlib
import io
import json
import os
import random

import numpy as np
import pytest
import torch

from hpcgan.cli.main import main
from hpcgan.errors import UserError
from hpcgan.train import checkpoint as ckpt


class _RunsACommand:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path, marker, legacy=False):
    """A file in hpcgan's own format (a torch.save file with a matching sha256 sidecar, or the earlier
    header-line format with the right magic, size and checksum) whose payload would call os.system."""
    buf = io.BytesIO()
    torch.save({"G": _RunsACommand(marker), "config": {}, "epoch": 0}, buf)
    payload = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    if legacy:
        header = json.dumps({"magic": ckpt.LEGACY_MAGIC, "sha256": hashlib.sha256(payload).hexdigest(),
                             "bytes": len(payload)})
        path.write_bytes(header.encode() + b"\n" + payload)
    else:
        path.write_bytes(payload)
        ckpt.sidecar(path).write_text(f"{hashlib.sha256(payload).hexdigest()}  {path.name}\n")
    return path


@pytest.mark.parametrize("legacy", [False, True])
def test_planted_payload_is_refused_on_load(tmp_path, legacy):
    marker = tmp_path / "ran"
    path = _plant(tmp_path / "checkpoints" / ckpt.checkpoint_name(7), marker, legacy)
    with pytest.raises(UserError, match=rf"checkpoint {path}: refused.*posix.system"):
        ckpt.load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["evaluate", "generate"])
def test_every_loading_command_refuses_it(tmp_path, capsys, command):
    marker = tmp_path / "ran"
    _plant(tmp_path / "run" / "checkpoints" / ckpt.checkpoint_name(7), marker)
    ckpt_file = str(tmp_path / "run" / "checkpoints" / ckpt.checkpoint_name(7))
    argv = (["evaluate", ckpt_file, "--data", str(tmp_path / "none.h5"), "--backend", "local"] if command == "evaluate"
            else ["generate", "--checkpoint", ckpt_file, "--data", str(tmp_path / "none.h5"),
                  "--out", str(tmp_path / "out.h5"), "--backend", "local"])
    assert main(argv) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_resume_skips_it_and_never_runs_it(tmp_path):
    marker = tmp_path / "ran"
    _plant(tmp_path / "checkpoints" / ckpt.checkpoint_name(7), marker)
    logged = []
    assert ckpt.find_resume_checkpoint(tmp_path / "checkpoints", log=logged.append) is None
    assert "refused" in logged[0] and not marker.exists()


def test_rng_state_is_plain_and_restores_exactly(tmp_path):
    path = ckpt.save_checkpoint({"rng": [ckpt.rng_state()]}, tmp_path, 1, 2)
    expect = (np.random.rand(3), random.random(), torch.rand(3))
    state = torch.load(path, weights_only=True)  # a checkpoint is a plain torch.save file
    ckpt.set_rng_state(state["rng"][0])
    assert np.array_equal(np.random.rand(3), expect[0]) and random.random() == expect[1]
    assert torch.equal(torch.rand(3), expect[2])


def test_checkpoint_with_numpy_rng_tuple_of_before_still_loads(tmp_path):
    """Checkpoints written before this change hold numpy's own state tuple (a uint32 array): still loaded,
    by allowing exactly numpy's array reconstruction, nothing else."""
    old = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    path = ckpt.save_checkpoint({"rng": [old]}, tmp_path, 1, 2)
    expect = np.random.rand(2)
    ckpt.set_rng_state(ckpt.load_checkpoint(path)["rng"][0])
    assert np.array_equal(np.random.rand(2), expect)


def test_failed_write_leaves_no_partial_file_and_keeps_the_previous(tmp_path, monkeypatch):
    good = ckpt.save_checkpoint({"w": torch.ones(3)}, tmp_path, 1, 5)
    (tmp_path / ".ckpt-00000000.pt.tmp-999999").write_bytes(b"partial write of a killed job")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ckpt.CheckpointWriteError, match=f"checkpoint {tmp_path / 'ckpt-00000002.pt'}: write "
                                                        r"failed \(No space left on device\)"):
        ckpt.save_checkpoint({"w": torch.zeros(3)}, tmp_path, 2, 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name, good.name + ".sha256"]  # no temporaries
    assert torch.equal(ckpt.load_checkpoint(good)["w"], torch.ones(3))


def test_save_guard_sees_nonfinite_batchnorm_statistics():
    """A NaN in BatchNorm's running mean (a poisoned batch's forward pass) blocks the checkpoint like a NaN
    weight does; integer buffers (num_batches_tracked) are not floats and are not checked."""
    from types import SimpleNamespace

    from hpcgan.train.trainer import _finite_weights

    G, D = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)), torch.nn.Linear(4, 1)
    tr = SimpleNamespace(G=G, D=D)
    assert _finite_weights(tr)
    G.train()
    G(torch.tensor([[float("nan"), 0.0, 1.0], [1.0, 2.0, 3.0]]))  # the forward pass alone poisons the statistics
    assert not torch.isfinite(G[1].running_mean).all() and all(torch.isfinite(p).all() for p in G.parameters())
    assert not _finite_weights(tr)


def test_cut_metrics_line_is_tolerated_and_truncated_on_resume(tmp_path):
    from hpcgan.train.run_dir import RunDir, read_metrics

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"kind": "train", "step": 1}\n{"kind": "val", "ep')  # killed mid-write
    assert read_metrics(tmp_path) == [{"kind": "train", "step": 1}]
    run = RunDir(tmp_path, active=True)  # what a resumed job opens
    run.append_jsonl("metrics.jsonl", {"kind": "train", "step": 2})
    assert log.read_text() == '{"kind": "train", "step": 1}\n{"kind": "train", "step": 2}\n'


@pytest.mark.timeout(300)
def test_a_full_disk_at_a_checkpoint_ends_with_the_requeue_code_and_loses_nothing(tmp_path, monkeypatch, capsys):
    """The second checkpoint write hits ENOSPC: the job exits 75 (the job script requeues it) with one line
    naming the path and the error, no partial file is left, and the resumed job continues from the first."""
    import errno

    from hpcgan.runtime import signals
    from hpcgan.runtime.backend import LocalBackend
    from hpcgan.runtime.env import ProcessInfo
    from hpcgan.train.trainer import train

    from conftest import tiny_config, write_crf

    data = write_crf(tmp_path / "crf.h5", 32)
    cfg = tiny_config(tmp_path, data, "train.epochs=3", "train.batch_size=4")
    real_write, calls = ckpt.write_atomic, []

    def fills_up(final, payload):
        if final.parent.name.endswith(".rng"):  # the rank's RNG state beside it (a few KB) still fits
            return real_write(final, payload)
        calls.append(final.name)
        if len(calls) > 2:  # the first checkpoint and its record fit; the second does not
            with open(final.with_name(f".{final.name}.tmp-{os.getpid()}"), "wb") as f:
                f.write(payload[:100])  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(final, payload)

    monkeypatch.setattr(ckpt, "write_atomic", fills_up)
    backend = LocalBackend(ProcessInfo(), torch.device("cpu"))
    try:
        code = train(cfg, backend)
    finally:
        signals.uninstall()
        signals.reset()
    assert code == signals.EXIT_REQUEUE
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert len(err) == 1 and f"checkpoint {ckpt_dir / 'ckpt-00000016.pt'}: write failed (No space left on device)" \
        in err[0], err
    assert (tmp_path / "run" / signals.REQUEUE_MARKER).exists()
    # The partial file would be removed by the real writer; the next save or start removes stale ones too.
    monkeypatch.setattr(ckpt, "write_atomic", real_write)
    assert [p.name for p in ckpt.list_checkpoints(ckpt_dir)] == ["ckpt-00000008.pt"]
    try:
        assert train(tiny_config(tmp_path, data, "train.epochs=3", "train.batch_size=4"), backend) == 0
    finally:
        signals.uninstall()
        signals.reset()
    assert "resumed from" in capsys.readouterr().err
    assert [p.name for p in ckpt_dir.iterdir() if p.name.startswith(".")] == []


def test_rank_rng_files_beside_the_checkpoint_rotate_with_it(tmp_path):
    """Each rank's RNG state is its own file beside the checkpoint (no gather), loads weights_only, and goes
    when its checkpoint is rotated away; a folder whose checkpoint never got written is stale."""
    for step in (1, 2, 3):
        for rank in (0, 1):
            assert ckpt.save_rank_rng(tmp_path, step, rank) is None
        ckpt.save_checkpoint({"w": torch.ones(1)}, tmp_path, step, 2)
    expect = torch.rand(3)  # the draws that followed the last save
    assert sorted(p.name for p in tmp_path.glob("*.rng")) == ["ckpt-00000002.pt.rng", "ckpt-00000003.pt.rng"]
    state = ckpt.load_rank_rng(tmp_path / ckpt.checkpoint_name(3), 1)
    assert set(state) >= {"torch", "python", "numpy"}
    assert ckpt.load_rank_rng(tmp_path / ckpt.checkpoint_name(3), 2) is None  # no such rank: reseeded
    assert ckpt.save_rank_rng(tmp_path, 4, 0) is None  # a write cut before its checkpoint ...
    ckpt.save_checkpoint({"w": torch.ones(1)}, tmp_path, 5, 2)  # ... is removed at the next save
    assert not (tmp_path / "ckpt-00000004.pt.rng").exists() and not (tmp_path / "ckpt-00000002.pt.rng").exists()
    ckpt.set_rng_state(ckpt.load_rank_rng(tmp_path / ckpt.checkpoint_name(3), 1))
    assert torch.equal(torch.rand(3), expect)


def test_old_cuda_state_list_with_fewer_gpus_is_no_error(monkeypatch):
    """A checkpoint of before held every visible GPU's state; a requeued task that sees fewer GPUs restores
    its own device's entry instead of raising IndexError (torch.cuda.set_rng_state_all)."""
    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: seen.append((int(s[0]), d)))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: (_ for _ in ()).throw(IndexError("list index")))
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": "MT19937", "keys": torch.zeros(624, dtype=torch.int64), "pos": 624, "has_gauss": 0,
                       "cached_gaussian": 0.0},
             "cuda": [torch.full((16,), 7, dtype=torch.uint8) for _ in range(4)]}
    ckpt.set_rng_state(state)
    assert seen == [(7, 0)]
