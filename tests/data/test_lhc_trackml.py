"""The TrackML CSV converter, on event files the test writes."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcgan.workloads.lhc import helix, synth as synth_lhc
from hpcgan.workloads.lhc.convert_trackml import BARREL, convert
from hpcgan.errors import UserError


def _write(path: Path, header: str, rows: list) -> None:
    lines = [header] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _event(src: Path, name: str, n: int, seed: int) -> dict:
    """Simulated particles written as TrackML CSVs, plus noise, endcap hits, an overlap and a short track."""
    det = helix.detector(10)
    rng = np.random.default_rng(seed)
    hits, mask, truth, charge = synth_lhc.simulate(rng, n, det, synth_lhc._options({}))
    keep = mask.sum(1) >= 5
    hits, mask, truth, charge = hits[keep], mask[keep], truth[keep], charge[keep]
    pid0 = 4503599644147712  # TrackML-sized ids (> 2^53)
    hit_rows, truth_rows, part_rows = [], [], []
    hid = 1
    for i in range(len(hits)):
        pid = pid0 + 1000 * i
        qpt, phi0, eta, d0, z0 = truth[i]
        pt = 1 / abs(qpt)
        # A vertex at the perigee reproduces the same truth.
        vx, vy = -d0 * np.sin(phi0), d0 * np.cos(phi0)
        part_rows.append((pid, vx, vy, z0, pt * np.cos(phi0), pt * np.sin(phi0), pt * np.sinh(eta), int(charge[i]),
                          int(mask[i].sum())))
        for l in np.flatnonzero(mask[i]):
            vol, lay = BARREL[l]
            x, y, z = hits[i, l]
            hit_rows.append((hid, x, y, z, vol, lay, 1))
            truth_rows.append((hid, pid, x, y, z, 0, 0, 0, 0.1))
            hid += 1
        if i == 0:  # an overlap hit further out on layer 0 (must lose against the inner one) and an endcap hit
            x, y, z = hits[i, 0] * 1.05
            hit_rows.append((hid, x, y, z, 8, 2, 7))
            truth_rows.append((hid, pid, x, y, z, 0, 0, 0, 0.1))
            hid += 1
            hit_rows.append((hid, 100.0, 100.0, 1500.0, 7, 2, 1))
            truth_rows.append((hid, pid, 100.0, 100.0, 1500.0, 0, 0, 0, 0.1))
            hid += 1
    # A particle with only 3 barrel hits (dropped) and a noise hit.
    short = pid0 + 999_999
    part_rows.append((short, 0, 0, 0, 1.0, 0.0, 0.0, 1, 3))
    for l in range(3):
        hit_rows.append((hid, det.radius[l], 0.0, 0.0, *BARREL[l], 1))
        truth_rows.append((hid, short, 0, 0, 0, 0, 0, 0, 0.1))
        hid += 1
    hit_rows.append((hid, 50.0, 5.0, 3.0, 8, 2, 3))
    truth_rows.append((hid, 0, 0, 0, 0, 0, 0, 0, 0))
    _write(src / f"{name}-hits.csv", "hit_id,x,y,z,volume_id,layer_id,module_id", hit_rows)
    _write(src / f"{name}-particles.csv", "particle_id,vx,vy,vz,px,py,pz,q,nhits", part_rows)
    _write(src / f"{name}-truth.csv", "hit_id,particle_id,tx,ty,tz,tpx,tpy,tpz,weight", truth_rows[::-1])
    return {"hits": hits, "mask": mask, "truth": truth, "charge": charge, "pid0": pid0}


def test_convert_round_trip(tmp_path):
    src = tmp_path / "events"
    src.mkdir()
    ev = [_event(src, "event000001000", 40, 1), _event(src, "event000001001", 30, 2)]
    out = convert(src, tmp_path / "tml.h5")
    det = helix.detector(10)
    with h5py.File(out) as f:
        x, y = f["inputs"][:], f["targets"][:]
        truth, charge = f["meta/true_params"][:], f["meta/charge"][:]
        pid, eid = f["meta/particle_id"][:], f["meta/event_id"][:]
        assert f.attrs["workload"] == "lhc"
    n = sum(len(e["hits"]) for e in ev)
    assert x.shape == (n, 4, 10) and y.shape == (n, 35)  # the 3-hit particle is dropped
    hits = np.concatenate([e["hits"] for e in ev])
    mask = np.concatenate([e["mask"] for e in ev])
    assert np.array_equal(x[:, 3] > 0.5, mask)
    assert np.allclose(x[:, :3].transpose(0, 2, 1)[mask], hits[mask], atol=1e-3)  # overlap hit lost, endcap ignored
    params, points, ok = helix.fit_tracks(x[:, :3].transpose(0, 2, 1), mask, det)
    assert ok.all() and np.allclose(y[:, :5], params, rtol=1e-5, atol=1e-5)
    assert np.allclose(truth, np.concatenate([e["truth"] for e in ev]), rtol=1e-4, atol=1e-4)
    assert np.array_equal(charge, np.concatenate([e["charge"] for e in ev]))
    assert pid[0] == ev[0]["pid0"] and set(eid) == {1000, 1001}


def test_convert_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="no event"):
        convert(tmp_path, tmp_path / "x.h5")
    _event(tmp_path, "event1", 5, 3)
    (tmp_path / "event1-truth.csv").unlink()
    with pytest.raises(UserError, match="event1-truth.csv missing"):
        convert(tmp_path, tmp_path / "x.h5")
    _write(tmp_path / "event1-truth.csv", "hit_id,pid", [(1, 2)])
    with pytest.raises(UserError, match="column.*particle_id missing"):
        convert(tmp_path, tmp_path / "x.h5")
    with pytest.raises(UserError, match="10 layers"):
        convert(tmp_path, tmp_path / "x.h5", layers=8)
