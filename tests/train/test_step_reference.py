"""The step as a list of phases reproduces the step it replaced: six short runs (every workload, accumulation,
extra D steps, hinge, the fast simulation's likelihood term, R1/spectral norm/EMA) end with the weights
recorded before the change (step_reference.py: recorded from fbd8c1d, and again for per-sample noise)."""
from __future__ import annotations

import json

import pytest

import step_reference as ref


def network_change(got: dict, expected: dict) -> float:
    """How far one network's recorded numbers moved, relative to the network: the sum over its tensors of
    the largest change in (sum, absolute sum, first element), over the sum of the tensors' absolute sums."""
    moved = sum(max(abs(g - e) for g, e in zip(got[k], v)) for k, v in expected.items())
    return moved / max(sum(v[1] for v in expected.values()), 1e-12)


# Bit-identical on the machine that recorded it. Other CPUs' kernels round differently and Adam amplifies
# that in parameters whose gradients nearly cancel: after these 4 steps a BatchNorm bias of the crf G moved
# by 0.6 % of its own absolute sum on an AVX-512 VM (2026-12-04), 7e-5 an lhc LayerNorm bias on an AVX2 one
# (2026-12-03). Measured over a whole network the same runs moved by at most 1.9e-6 (crf G; all others
# <= 2.5e-7), while a 10 % smaller adversarial weight moves the crf G by 3.9e-5, a 10 % smaller R1 gamma the
# crf-toolkit D by 5.8e-6, dropping the lazy R1 scaling the crf-toolkit D
# by 2.0e-5 and half lr_g the lhc G by 7.8e-4 (`test_a_changed_step_is_caught`).
TOLERANCE = 1e-5  # of the network's absolute sum


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(ref.RUNS))
def test_phase_list_reproduces_the_recorded_weights(tmp_path, name):
    expected = json.loads(ref.REFERENCE.read_text())[name]
    got = ref.final_weights(name, tmp_path)
    assert got.keys() == expected.keys()
    for net in expected:
        assert got[net].keys() == expected[net].keys(), net
        change = network_change(got[net], expected[net])
        assert change <= TOLERANCE, f"{name}: {net} moved by {change:.2e} of its absolute sum (bound {TOLERANCE})"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name,override,factor", [("lhc", "train.lr_g=5.0e-4", 10), ("crf", "loss.lambda_gan=0.9", 1)])
def test_a_changed_step_is_caught(tmp_path, monkeypatch, name, override, factor):
    """The comparison can fail: half the G learning rate on the lhc run is far outside the tolerance, a 10 %
    smaller adversarial weight on the crf run (a step computing something slightly different) is outside it."""
    preset, kind, extra = ref.RUNS[name]
    monkeypatch.setattr(ref, "RUNS", {**ref.RUNS, name: (preset, kind, extra + [override])})
    expected = json.loads(ref.REFERENCE.read_text())[name]
    got = ref.final_weights(name, tmp_path)
    change = network_change(got["G"], expected["G"])
    assert change > factor * TOLERANCE, change
