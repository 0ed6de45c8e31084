"""data.stage's file side (hpcgan/data/stage.py): where copies go, copying with verification, the
fallbacks (no room, not writable, a copy failing half-way), removal; and the reader reading copies."""
import errno
import os

import numpy as np
import pytest

from hpcgan.data import stage
from hpcgan.data.reader import ShardedReader
from hpcgan.errors import UserError


def _files(tmp_path, *names_sizes):
    out = []
    for name, size in names_sizes:
        p = tmp_path / "src" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
        out.append(str(p))
    return out


def test_stage_base_order():
    env = {"SLURM_TMPDIR": "/slurm", "TMPDIR": "/tmpdir", "NODE": "n7"}
    assert stage.stage_base("/local/$NODE/x", env) == ("/local/n7/x", True)
    assert stage.stage_base("/local/${NODE}-$UNSET", env) == ("/local/n7-$UNSET", True)
    assert stage.stage_base("", env) == ("/slurm", False)
    assert stage.stage_base("", {"TMPDIR": "/tmpdir"}) == ("/tmpdir", False)
    base, explicit = stage.stage_base("", {})
    assert not explicit and os.path.isdir(base)


def test_plan_copies_keeps_names_and_never_collides():
    copies = stage.plan_copies(["/a/train.h5", "/b/train.h5", "/a/val.h5"], "/node/hpcgan-stage-x")
    assert len(set(copies.values())) == 3
    for src, dst in copies.items():
        assert os.path.dirname(dst) == "/node/hpcgan-stage-x"
        assert dst.endswith("-" + os.path.basename(src))
    assert copies == stage.plan_copies(["/a/train.h5", "/b/train.h5", "/a/val.h5"], "/node/hpcgan-stage-x")


@pytest.mark.parametrize("need,free,fits", [(100, 100 + stage.HEADROOM_BYTES, True),
                                            (101, 100 + stage.HEADROOM_BYTES, False), (0, 0, False)])
def test_room_notice(need, free, fits):
    notice = stage.room_notice("/tmp", need, free)
    assert (notice == "") == fits
    if not fits:
        assert notice.startswith("no room in /tmp:") and "free" in notice


def test_stage_files_copies_verifies_and_removes(tmp_path):
    sources = _files(tmp_path, ("a.h5", 3 * stage.CHUNK_BYTES // 2), ("b.h5", 10), ("empty.h5", 0))
    base = tmp_path / "node"
    base.mkdir()
    st = stage.stage_files(sources, str(base))
    assert st.notice == "" and st.nbytes == sum(os.path.getsize(s) for s in sources)
    assert os.path.dirname(st.root) == str(base) and os.path.basename(st.root).startswith(stage.PREFIX)
    assert list(st.copies) == sources
    for src, dst in st.copies.items():
        assert open(src, "rb").read() == open(dst, "rb").read()
    assert stage.visible(st.copies)
    stage.remove(st.root)
    assert list(base.iterdir()) == []
    assert not stage.visible(st.copies)


def test_visible_rejects_a_short_copy(tmp_path):
    sources = _files(tmp_path, ("a.h5", 1000))
    st = stage.stage_files(sources, str(tmp_path))
    with open(st.copies[sources[0]], "r+b") as f:
        f.truncate(999)
    assert not stage.visible(st.copies)
    stage.remove(st.root)


def test_no_room_falls_back_and_leaves_nothing(tmp_path, monkeypatch):
    sources = _files(tmp_path, ("a.h5", 4096))
    base = tmp_path / "node"
    base.mkdir()
    monkeypatch.setattr(stage.shutil, "disk_usage", lambda p: type("U", (), {"free": stage.HEADROOM_BYTES})())
    st = stage.stage_files(sources, str(base))
    assert st.copies == {} and st.root == ""
    assert st.notice.startswith(f"no room in {base}: the data needs 0.0 MiB + 256.0 MiB headroom, 256.0 MiB free")
    assert list(base.iterdir()) == []


def test_unwritable_base_falls_back(tmp_path):
    sources = _files(tmp_path, ("a.h5", 10))
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    for base in (not_a_dir, tmp_path / "missing"):
        st = stage.stage_files(sources, str(base))
        assert st.copies == {} and st.notice.startswith(f"cannot stage in {base}: ")


def test_enospc_half_way_removes_the_partial_copy(tmp_path, monkeypatch):
    sources = _files(tmp_path, ("a.h5", 10), ("b.h5", 10))
    base = tmp_path / "node"
    base.mkdir()
    real = stage.copy_verified

    def second_fails(src, dst):
        if src.endswith("b.h5"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    monkeypatch.setattr(stage, "copy_verified", second_fails)
    st = stage.stage_files(sources, str(base))
    assert st.copies == {} and st.notice == f"copying to {base} failed: No space left on device"
    assert list(base.iterdir()) == []


def test_copy_with_another_checksum_is_rejected(tmp_path, monkeypatch):
    sources = _files(tmp_path, ("a.h5", 100))
    base = tmp_path / "node"
    base.mkdir()
    monkeypatch.setattr(stage, "file_crc", lambda path: 12345)  # the bytes read back are not those copied
    st = stage.stage_files(sources, str(base))
    assert st.copies == {} and "CRC-32 differs" in st.notice
    assert list(base.iterdir()) == []


def test_remove_touches_only_staging_directories(tmp_path):
    keep = tmp_path / "results"
    keep.mkdir()
    stage.remove(str(keep))
    stage.remove("")
    assert keep.is_dir()


def test_explicit_stage_dir_must_be_writable(tmp_path):
    stage.check_stage_dir("", {})
    stage.check_stage_dir(str(tmp_path), {})
    stage.check_stage_dir("$HERE", {"HERE": str(tmp_path)})
    assert list(tmp_path.iterdir()) == []  # the probe directory is gone
    with pytest.raises(UserError, match=r"config key data\.stage_dir: .*/missing: not a writable directory"):
        stage.check_stage_dir(str(tmp_path / "missing"), {})


def test_reader_reads_the_copy_and_names_the_source(indexed):
    src, copy = str(indexed(8, "src.h5")), str(indexed(8, "copy.h5", first=100))
    plain = ShardedReader(src, 0, 1, 4, seed=0, shuffle=False, normalize=False)
    staged = ShardedReader(src, 0, 1, 4, seed=0, shuffle=False, normalize=False, copies={src: copy})
    x_plain = np.concatenate([x[:, 0, 0, 0].numpy() for x, *_ in plain.epoch(0)])
    x_staged = np.concatenate([x[:, 0, 0, 0].numpy() for x, *_ in staged.epoch(0)])
    assert x_staged.tolist() == (x_plain + 100).tolist()
    assert staged.paths == [copy] and staged.sources == [src]
    assert [f[0] for f in staged.fingerprint()["files"]] == [src] == staged.attrs["files"]
