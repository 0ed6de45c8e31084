"""The generator's physics layer: Gauss-Newton refinement of the linear seed converges to the helix fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcgan.config import load_config
from hpcgan.errors import UserError
from hpcgan.workloads import get_workload
from hpcgan.workloads.lhc import helix, space, synth as synth_lhc
from hpcgan.workloads.lhc.models import _Geometry, helix_refine, linear_seed


@pytest.fixture(scope="module")
def data():
    return synth_lhc.make_tracks(np.random.default_rng(5), 2000, helix.detector(10), synth_lhc._options({}))


def _seed(inputs: np.ndarray, iters: int) -> np.ndarray:
    geo = _Geometry(10)
    cond = space.inputs_to_model(torch.from_numpy(inputs).float(), geo.radii)
    f = geo.frame(cond)
    s = linear_seed(f, geo.radii, geo.sigma_rphi, geo.sigma_z, geo.bfield)
    if iters:
        s = helix_refine(f, s, geo.radii, geo.sigma_rphi, geo.sigma_z, geo.bfield, iters)
    phi0 = torch.remainder(f["phi"] + s["dphi0"] + np.pi, 2 * np.pi) - np.pi
    return torch.stack([s["qpt"], phi0, s["eta"], s["d0"], s["z0"]], 1).double().numpy()


def test_refinement_converges_to_the_helix_fit(data):
    inputs, targets, _ = data
    fit = targets[:, :5].astype(np.float64)
    # In units of the fit's nominal resolution (space.resolution_scale of the fit itself).
    scale = space.resolution_scale(fit)
    dist = lambda p: np.abs(np.concatenate([p[:, :1] - fit[:, :1], np.angle(np.exp(1j * (p[:, 1:2] - fit[:, 1:2]))),  # noqa: E731
                                            p[:, 2:] - fit[:, 2:]], 1)) / scale
    linear, refined = dist(_seed(inputs, 0)), dist(_seed(inputs, 3))
    assert linear[:, 0].max() > 1.0  # the linear seed is off by more than the fit's resolution at low pT
    assert refined.max() < 1e-2, refined.max(axis=0)  # three steps: the fit to within 1 % of its resolution
    assert np.abs(_seed(inputs, 3)[:, 0] / fit[:, 0] - 1).max() < 1e-4


def test_refinement_is_fp32_out_and_parameter_free(data):
    inputs, _, _ = data
    w = get_workload(load_config("lhc-small", ["lhc.refine_iters=3"]))
    G = w.build_generator()
    cond = space.inputs_to_model(torch.from_numpy(inputs[:8]).float(), w.radii)
    out = G(cond)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    n_old = sum(p.numel() for p in get_workload(load_config("lhc-small", ["lhc.refine_iters=0"])).build_generator().parameters())
    assert sum(p.numel() for p in G.parameters()) == n_old


def test_refine_iters_validated():
    with pytest.raises(UserError, match="lhc.refine_iters"):
        load_config("lhc-small", ["lhc.refine_iters=-1"])
