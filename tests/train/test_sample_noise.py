"""Per-sample generator noise (hpcgan/workloads/noise.py): a sample's noise does not depend on the batch it
is in, is fresh per epoch, purpose and draw, is well distributed, and outside `keyed` nothing changes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcgan.workloads import noise
from hpcgan.workloads.crf.models import UNetGenerator
from hpcgan.workloads.lhc.models import LHCGenerator

LIKE = torch.zeros(1)


def draw(indices, epoch=0, purpose=0, seed=7, shape=(16,)):
    with noise.keyed(noise.sample_keys(seed, epoch, np.asarray(indices), purpose)):
        return noise.randn(len(indices), shape, LIKE), noise.rand(len(indices), shape, LIKE)


def test_a_sample_gets_the_same_numbers_in_any_batch():
    z, u = draw(np.arange(64))
    z2, u2 = draw([40, 3, 17])
    assert torch.equal(z2, z[[40, 3, 17]]) and torch.equal(u2, u[[40, 3, 17]])


@pytest.mark.parametrize("change", [dict(epoch=1), dict(purpose=1), dict(seed=8)])
def test_another_epoch_purpose_or_seed_gives_independent_numbers(change):
    z, _ = draw(np.arange(2048))
    z2, _ = draw(np.arange(2048), **change)
    assert abs(float(torch.corrcoef(torch.stack([z.flatten(), z2.flatten()]))[0, 1])) < 0.02


def test_draws_within_one_pass_are_independent_and_well_distributed():
    keys = noise.sample_keys(7, 0, np.arange(4096))
    with noise.keyed(keys):
        a, b = noise.randn(4096, (8,), LIKE), noise.randn(4096, (8,), LIKE)
        u = noise.rand(4096, (8,), LIKE)
    assert not torch.equal(a, b)
    for z in (a, b):
        assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.02
        assert abs(float((z ** 4).mean() / z.var() ** 2) - 3) < 0.15  # Gaussian tails, not uniform ones
    assert 0 < float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert float((hist - 0.1).abs().max()) < 0.01
    assert abs(float(torch.corrcoef(torch.stack([a[:, 0], a[:, 1]]))[0, 1])) < 0.05  # elements
    assert abs(float(torch.corrcoef(torch.stack([a[:-1, 0], a[1:, 0]]))[0, 1])) < 0.05  # neighbouring samples


def test_outside_keyed_the_draws_are_torch_generator_draws():
    torch.manual_seed(3)
    expected = torch.randn(5, 4), torch.rand(5, 2)
    torch.manual_seed(3)
    assert torch.equal(noise.randn(5, (4,), LIKE), expected[0]) and torch.equal(noise.rand(5, (2,), LIKE), expected[1])


def test_generators_give_each_sample_the_same_fake_in_any_batch():
    torch.manual_seed(0)
    lhc = LHCGenerator(10, 16, 32, 2).train()
    from hpcgan.workloads.lhc import synth

    hits = torch.from_numpy(next(synth.generate(0, 12, 1))[0])
    from hpcgan.workloads.lhc import space, helix

    cond = space.inputs_to_model(hits, torch.tensor(helix.detector(10).radius, dtype=torch.float32))
    crf = UNetGenerator(4, 3, [8, 16], norm="instance", dropout=0.25, noise_channels=2).train()
    images = torch.randn(12, 4, 16, 16)
    idx = np.arange(100, 112)
    perm = [5, 0, 11]
    for G, x in ((lhc, cond), (crf, images)):
        with noise.keyed(noise.sample_keys(1, 2, idx)):
            full = G(x)
        with noise.keyed(noise.sample_keys(1, 2, idx[perm])):
            part = G(x[perm])
        torch.testing.assert_close(part, full[perm], rtol=1e-5, atol=1e-6)
        with noise.keyed(noise.sample_keys(1, 3, idx)):  # the next epoch: other noise, another fake
            assert not torch.allclose(G(x), full)


def test_keyed_dropout_drops_whole_channels_at_rate_p():
    drop = noise.Dropout2d(0.25).train()
    x = torch.ones(512, 8, 4, 4)
    with noise.keyed(noise.sample_keys(0, 0, np.arange(512))):
        y = drop(x)
    kept = (y[:, :, 0, 0] > 0).float()
    assert abs(float(kept.mean()) - 0.75) < 0.02
    assert torch.equal(y, kept[:, :, None, None].expand_as(y) / 0.75)  # whole channels, rescaled
    assert torch.equal(drop.eval()(x), x)
