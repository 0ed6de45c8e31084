"""Checkpoints: verified on load, atomic under a kill mid-write, keep-last-k."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import torch

from hpcgan.errors import UserError
from hpcgan.train import checkpoint as ckpt


def state(v: float) -> dict:
    return {"w": torch.full((1000,), v), "step": int(v)}


def test_roundtrip_and_keep_last(tmp_path):
    for step in range(1, 6):
        ckpt.save_checkpoint(state(step), tmp_path, step, keep=3)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["ckpt-00000003.pt", "ckpt-00000004.pt", "ckpt-00000005.pt"]
    loaded = ckpt.load_checkpoint(tmp_path / "ckpt-00000005.pt")
    assert loaded["step"] == 5 and torch.equal(loaded["w"], torch.full((1000,), 5.0))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corruption_is_detected(tmp_path, damage):
    path = ckpt.save_checkpoint(state(1), tmp_path, 1, keep=3)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-100] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not a checkpoint\n" + bytes(data[:50]))
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=str(path)) as e:
        ckpt.load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_resume_skips_a_corrupted_newest(tmp_path):
    ckpt.save_checkpoint(state(1), tmp_path, 1, keep=3)
    newest = ckpt.save_checkpoint(state(2), tmp_path, 2, keep=3)
    newest.write_bytes(newest.read_bytes()[:-10])
    messages = []
    found = ckpt.find_resume_checkpoint(tmp_path, log=messages.append)
    assert found == tmp_path / "ckpt-00000001.pt"
    assert newest.exists(), "a corrupted checkpoint is reported, never deleted"
    assert any("checksum mismatch" in m for m in messages)


@pytest.mark.timeout(120)
def test_kill_mid_write_leaves_previous_checkpoint(tmp_path):
    """SIGKILL while a large checkpoint is being written: no partial file under a real name."""
    ckpt.save_checkpoint(state(1), tmp_path, 1, keep=3)
    script = textwrap.dedent(f"""
        import torch, sys
        from hpcgan.train import checkpoint as ckpt
        big = {{"w": torch.randn(150_000_000)}}  # 600 MB: the write takes long enough to be killed mid-way
        print("writing", flush=True)
        ckpt.save_checkpoint(big, __import__("pathlib").Path({str(tmp_path)!r}), 2, keep=3)
        print("finished", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".ckpt-00000002") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, "writer never started its temp file"
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-00000001.pt"]
    assert ckpt.find_resume_checkpoint(tmp_path) == tmp_path / "ckpt-00000001.pt"
    assert ckpt.load_checkpoint(tmp_path / "ckpt-00000001.pt")["step"] == 1
