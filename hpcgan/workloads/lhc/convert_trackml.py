"""TrackML-style event CSVs -> the LHC workload's HDF5 layout (hits per barrel layer, fitted track, truth).

Input, per event in `src_dir` (the Kaggle TrackML layout, numeric columns, header line first):
  eventNNN-hits.csv       hit_id,x,y,z,volume_id,layer_id,module_id          (mm)
  eventNNN-particles.csv  particle_id,vx,vy,vz,px,py,pz,q,nhits               (mm, GeV)
  eventNNN-truth.csv      hit_id,particle_id,tx,ty,tz,tpx,tpy,tpz,weight      (particle_id 0 = noise)
The TrackML barrel is volumes 8 (pixels, layers 2,4,6,8), 13 (short strips, 2,4,6,8) and 17 (long
strips, 2,4) at radii ~32, 72, 116, 172, 260, 360, 500, 660, 820, 1020 mm in a 2 T solenoid: the ten
layers of hpcgan.workloads.lhc.helix.detector(10), in that order. Per particle, its barrel hits go to their
layer slot (on a layer crossed twice, module overlaps, the hit at the smallest radius is kept);
particles with fewer than 5 barrel hits are dropped. The conventional helix fit (helix.fit_tracks)
makes the targets; the particle's vertex and momentum make meta/true_params and meta/charge;
meta/event_id and meta/particle_id say where each track came from.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hpcgan.data.format import DatasetWriter
from hpcgan.workloads.lhc.helix import C_LIGHT, detector, fit_tracks, perigee_from_state
from hpcgan.workloads.lhc.synth import schema
from hpcgan.errors import UserError

BARREL = ((8, 2), (8, 4), (8, 6), (8, 8), (13, 2), (13, 4), (13, 6), (13, 8), (17, 2), (17, 4))
COLUMNS = {
    "hits": ("hit_id", "x", "y", "z", "volume_id", "layer_id"),
    "particles": ("particle_id", "vx", "vy", "vz", "px", "py", "pz", "q"),
    "truth": ("hit_id", "particle_id"),
}


def read_csv(path: Path, kind: str) -> dict[str, np.ndarray]:
    """Numeric CSV with a header -> {column: array}; ids as int64 (TrackML particle ids exceed 2^53)."""
    try:
        with open(path) as f:
            header = f.readline().strip().split(",")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    missing = [c for c in COLUMNS[kind] if c not in header]
    if missing:
        raise UserError(f"{path}: column(s) {', '.join(missing)} missing (expected a header with "
                        f"{','.join(COLUMNS[kind])})")
    out = {}
    for c in COLUMNS[kind]:
        i = header.index(c)
        is_id = c.endswith("_id") or c == "q"
        try:
            col = np.loadtxt(path, delimiter=",", skiprows=1, usecols=[i], dtype=np.int64 if is_id else np.float64,
                             ndmin=1)
        except ValueError as e:
            raise UserError(f"{path}: column {c!r} is not numeric ({str(e).splitlines()[0]})") from None
        out[c] = col
    return out


def find_events(src_dir: str | Path) -> list[tuple[str, Path]]:
    src = Path(src_dir)
    if not src.is_dir():
        raise UserError(f"trackml: {src_dir} is not a directory")
    events = []
    for hits in sorted(src.glob("event*-hits.csv")):
        prefix = hits.name[: -len("-hits.csv")]
        for kind in ("particles", "truth"):
            if not (src / f"{prefix}-{kind}.csv").is_file():
                raise UserError(f"trackml: {src / f'{prefix}-{kind}.csv'} missing (needed with {hits.name})")
        events.append((prefix, src))
    if not events:
        raise UserError(f"trackml: no event*-hits.csv in {src_dir}")
    return events


def event_tracks(prefix: str, src: Path, det) -> dict[str, np.ndarray]:
    """One event -> hits (P, L, 3), mask (P, L), truth (P, 5), charge (P,), particle_id (P,) for kept particles."""
    hits = read_csv(src / f"{prefix}-hits.csv", "hits")
    parts = read_csv(src / f"{prefix}-particles.csv", "particles")
    truth = read_csv(src / f"{prefix}-truth.csv", "truth")
    L = det.n_layers
    slot = np.full(len(hits["hit_id"]), -1)
    for k, (vol, lay) in enumerate(BARREL):
        slot[(hits["volume_id"] == vol) & (hits["layer_id"] == lay)] = k
    order = np.argsort(hits["hit_id"])
    pos = np.searchsorted(hits["hit_id"][order], truth["hit_id"])
    pos = np.minimum(pos, len(order) - 1)
    known = hits["hit_id"][order][pos] == truth["hit_id"]
    if not known.all():
        bad = truth["hit_id"][~known][0]
        raise UserError(f"{src / f'{prefix}-truth.csv'}: hit_id {bad} is not in {prefix}-hits.csv")
    h = order[pos]  # row in hits for each truth row
    pid_of_hit = truth["particle_id"]
    use = (pid_of_hit != 0) & (slot[h] >= 0)
    h, pid_of_hit = h[use], pid_of_hit[use]
    pids = np.unique(pid_of_hit)
    p_order = np.argsort(parts["particle_id"])
    p_idx = np.searchsorted(parts["particle_id"][p_order], pids)
    p_idx = np.minimum(p_idx, len(p_order) - 1)
    ok = parts["particle_id"][p_order][p_idx] == pids
    if not ok.all():
        raise UserError(f"{src / f'{prefix}-truth.csv'}: particle_id {pids[~ok][0]} is not in {prefix}-particles.csv")
    track = np.searchsorted(pids, pid_of_hit)
    layer = slot[h]
    xyz = np.stack([hits["x"][h], hits["y"][h], hits["z"][h]], axis=1)
    radius = np.hypot(xyz[:, 0], xyz[:, 1])
    # Fill slots so that, per (track, layer), the hit at the smallest radius is written last and wins.
    fill = np.lexsort((-radius, layer, track))
    out_hits = np.zeros((len(pids), L, 3))
    out_mask = np.zeros((len(pids), L), dtype=bool)
    out_hits[track[fill], layer[fill]] = xyz[fill]
    out_mask[track[fill], layer[fill]] = True
    row = p_order[p_idx]
    v = np.stack([parts["vx"][row], parts["vy"][row], parts["vz"][row]], axis=1)
    px, py, pz, q = parts["px"][row], parts["py"][row], parts["pz"][row], parts["q"][row].astype(np.float64)
    pt = np.hypot(px, py)
    keep = (out_mask.sum(axis=1) >= det.min_hits) & (pt > 0) & (q != 0)
    kappa = -q[keep] * C_LIGHT * det.bfield / pt[keep]
    true = perigee_from_state(v[keep], np.arctan2(py[keep], px[keep]), kappa, pz[keep] / pt[keep], det.bfield)
    return {"hits": out_hits[keep], "mask": out_mask[keep], "truth": true, "charge": np.sign(q[keep]),
            "particle_id": pids[keep]}


def convert(src_dir: str | Path, out_path: str | Path, **opts) -> str:
    """Convert every event in src_dir into one HDF5 file at out_path; returns the path written."""
    layers = int(opts.pop("layers", None) or 10)
    if layers != len(BARREL):
        raise UserError(f"trackml: the TrackML barrel has {len(BARREL)} layers, got layers={layers}")
    unknown = [k for k, v in opts.items() if v is not None]
    if unknown:
        raise UserError(f"trackml: unknown option(s) {', '.join(unknown)}")
    det = detector(layers)
    events = find_events(src_dir)
    per_event = [event_tracks(prefix, src, det) for prefix, src in events]
    n = sum(len(e["hits"]) for e in per_event)
    if n == 0:
        raise UserError(f"trackml: no particle in {src_dir} has {det.min_hits} or more barrel hits")
    sc = schema(layers=layers)
    meta_spec = dict(sc["meta_spec"], event_id=((), "int64"), particle_id=((), "int64"))
    provenance = {"converter": "trackml", "src_dir": str(src_dir), "events": [p for p, _ in events],
                  "barrel": [list(b) for b in BARREL], "layers": layers, "bfield": det.bfield}
    with DatasetWriter(out_path, "lhc", n, sc["input_shape"], sc["target_shape"], sc["input_channels"],
                       sc["target_channels"], meta_spec=meta_spec, provenance=provenance) as w:
        for (prefix, _), e in zip(events, per_event):
            if len(e["hits"]) == 0:
                continue
            hits = e["hits"].astype(np.float32)
            params, points, ok = fit_tracks(hits, e["mask"], det)
            m = len(hits)
            inputs = np.concatenate([hits.transpose(0, 2, 1), e["mask"][:, None, :].astype(np.float32)], axis=1)
            targets = np.concatenate([params, points.reshape(m, -1)], axis=1).astype(np.float32)
            event_id = int(re.sub(r"\D", "", prefix) or 0)
            w.write(inputs, targets, {"true_params": e["truth"].astype(np.float32),
                                      "charge": e["charge"].astype(np.float32),
                                      "event_id": np.full(m, event_id, dtype=np.int64),
                                      "particle_id": e["particle_id"].astype(np.int64)})
    return str(out_path)
