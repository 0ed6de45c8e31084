"""meta/valid: pixels without a satellite view count in no loss and no metric, from the converter to the batch."""
import json

import numpy as np
import pytest
import torch

from hpcgan.config import LossConfig, load_config
from hpcgan.workloads.crf.convert_npz import REFLECTANCE_KEYS, convert
from hpcgan.data.reader import ShardedReader
from hpcgan.runtime.backend import LocalBackend
from hpcgan.runtime.env import ProcessInfo
from hpcgan.train.losses import GANLoss
from hpcgan.workloads import get_workload

from test_crf_workload import SMALL, textured


def holes(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, size, size) masks with a rectangle and scattered pixels invalid (False)."""
    valid = rng.random((n, size, size)) > 0.05
    valid[:, 3:9, 20:30] = False
    return valid


def scramble(a: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`a` (N, C, H, W) with new values at the invalid pixels (what a converter's zero fill might be)."""
    return np.where(valid[:, None], a, rng.random(a.shape) * 3.0 - 1.0)


def leaves(tree) -> list[float]:
    """The numbers of a nested summary dict, in key order."""
    if isinstance(tree, dict):
        return [v for k in sorted(tree) for v in leaves(tree[k])]
    return [float(tree)]


def test_masked_pixels_do_not_change_the_losses():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    wl = get_workload(load_config(None, SMALL))
    D = wl.build_discriminator()
    cond = torch.randn(3, 5, 32, 32)
    real01, fake01 = textured(3, 32, rng), textured(3, 32, rng)
    valid = holes(3, 32, rng)
    loss = GANLoss(LossConfig(lambda_gan=1.0, lambda_match=10.0))

    def losses(r01, f01, mask):
        _, real = wl.prepare(cond, torch.tensor(r01, dtype=torch.float32), torch.device("cpu"))
        _, fake = wl.prepare(cond, torch.tensor(f01, dtype=torch.float32), torch.device("cpu"))
        m = None if mask is None else torch.tensor(mask)
        _, g = loss.g_loss(D, cond, real, fake, m)
        _, d = loss.d_loss(D, cond, real, fake, m)
        return {**{k: float(v) for k, v in g.items()}, **{k: float(v) for k, v in d.items()}}

    base = losses(real01, fake01, valid)
    # The matching term ignores both images' invalid pixels; the discriminator's inputs only differ from the
    # base case where the fake is shown the real values, so with the real fixed every loss is unchanged.
    changed_both = losses(scramble(real01, valid, rng), scramble(fake01, valid, rng), valid)
    assert changed_both["g_l1"] == pytest.approx(base["g_l1"], rel=1e-6)
    changed_fake = losses(real01, scramble(fake01, valid, rng), valid)
    for k in ("g_l1", "g_adv", "g_loss", "d_loss", "d_fake"):
        assert changed_fake[k] == pytest.approx(base[k], rel=1e-5), k
    # Without the mask the same change moves the losses: the test can fail.
    unmasked = losses(real01, fake01, None)["g_l1"]
    assert losses(real01, scramble(fake01, valid, rng), None)["g_l1"] != pytest.approx(unmasked, rel=1e-3)
    # All valid is the same as no mask.
    assert losses(real01, fake01, np.ones_like(valid)) == pytest.approx(losses(real01, fake01, None), rel=1e-6)


def test_masked_pixels_do_not_change_the_metrics(tmp_path):
    rng = np.random.default_rng(1)
    wl = get_workload(load_config(None, SMALL))
    inputs = rng.standard_normal((6, 5, 32, 32)).astype(np.float32)
    real, fake = textured(6, 32, rng), 0.5 * textured(6, 32, rng) + 0.25
    valid = holes(6, 32, rng)
    real2, fake2 = scramble(real, valid, rng), scramble(fake, valid, rng)

    def val(r, f, mask):
        cond = torch.tensor(inputs)
        _, rt = wl.prepare(cond, torch.tensor(r, dtype=torch.float32), torch.device("cpu"))
        _, ft = wl.prepare(cond, torch.tensor(f, dtype=torch.float32), torch.device("cpu"))
        return wl.validation_metrics(cond, rt, ft, None if mask is None else torch.tensor(mask))

    assert val(real2, fake2, valid) == pytest.approx(val(real, fake, valid), rel=1e-5)
    unmasked, unmasked2 = val(real, fake, None), val(real2, fake2, None)
    assert all(unmasked[k] != pytest.approx(unmasked2[k], rel=1e-2) for k in unmasked)

    a = wl.evaluate(inputs, real, fake, {"valid": valid.astype(np.uint8)}, tmp_path / "a")
    b = wl.evaluate(inputs, real2, fake2, {"valid": valid.astype(np.uint8)}, tmp_path / "b")
    c = wl.evaluate(inputs, real2, fake2, {}, tmp_path / "c")
    keys = ("l1", "mse", "l1_per_channel", "spectral_distance", "spectral_slope", "coherence", "chroma")
    for k in keys:
        np.testing.assert_allclose(leaves(b[k]), leaves(a[k]), rtol=1e-6, atol=1e-12, err_msg=k)
        assert not np.allclose(leaves(c[k]), leaves(a[k]), rtol=1e-3), k
    assert a["valid_fraction"] == pytest.approx(valid.mean()) and c["valid_fraction"] == 1.0
    # Same for the spectra and chroma histograms saved beside the summary.
    ja, jb = (json.loads((tmp_path / d / "crf_evaluation.json").read_text()) for d in ("a", "b"))
    np.testing.assert_allclose(jb["spectra"]["real"]["gray"], ja["spectra"]["real"]["gray"], rtol=1e-9)
    np.testing.assert_allclose(jb["chroma_distribution"]["fake"]["bands"]["R"]["hist"],
                               ja["chroma_distribution"]["fake"]["bands"]["R"]["hist"])


def _npz_pair(root, stem: str, refl: np.ndarray, rng: np.random.Generator) -> None:
    """One timestamp in the reference layout (imgs/ + metos/, hpcgan/workloads/crf/convert_npz.py)."""
    h, w = refl.shape[1:]
    np.savez(root / "imgs" / f"{stem}.npz", **{k: refl[c] for c, k in enumerate(REFLECTANCE_KEYS)},
             scattering_angle=rng.uniform(120, 170, (h, w)), latitude=rng.uniform(-10, 10, (h, w)),
             longitude=rng.uniform(0, 20, (h, w)))
    np.savez(root / "metos" / f"{stem}_Collocated_MERRA2.npz", TS=rng.normal(290, 1, (h, w)),
             **{v: rng.normal(loc, 1, (10, h, w)) for v, loc in (("U", 5), ("T", 260), ("V", 0), ("RH", 0.5))})


@pytest.mark.timeout(120)
def test_converter_mask_reaches_the_batch_and_training(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "src" / "imgs").mkdir(parents=True)
    (tmp_path / "src" / "metos").mkdir()
    n, size = 4, 16
    refl = textured(n, size, rng)
    seen = np.ones((n, size, size), bool)
    seen[0, 2, 3] = seen[0, 10, 11] = seen[2, 0, :5] = False  # a few pixels without a satellite view
    for i in range(n):
        _npz_pair(tmp_path / "src", f"t{i}", np.where(seen[i], refl[i], np.nan), rng)
    path = convert(str(tmp_path / "src"), str(tmp_path / "crf.h5"))

    cfg = load_config("crf-small", ["workload=crf", f"crf.size={size}", "crf.widths=[8,16]", "crf.d_widths=[8,16]",
                                    "crf.d_scales=2", "crf.noise_channels=0", "train.figures=false",
                                    "train.epochs=1", "train.batch_size=2", "train.lr_scaling=none",
                                    f"data.path={path}", f"data.val_path={path}", f"run_dir={tmp_path / 'run'}"])
    wl = get_workload(cfg)
    reader = ShardedReader(path, 0, 1, n, seed=0, shuffle=False)
    x, y, valid = next(iter(reader.epoch(0)))
    reader.close()
    assert valid.dtype == torch.bool and torch.equal(valid, torch.tensor(seen))
    cond, real = wl.prepare(x, y, torch.device("cpu"))
    # A generator equal to the target on the seen pixels and wrong on the others is perfect.
    fake = torch.where(valid[:, None], real, -real)
    assert wl.validation_metrics(cond, real, fake, valid)["l1"] == 0.0
    assert wl.validation_metrics(cond, real, fake)["l1"] > 0.0
    _, stats = GANLoss(cfg.loss).g_loss(wl.build_discriminator(), cond, real, fake, valid)
    assert float(stats["g_l1"]) == 0.0

    # The trainer takes the mask from the reader into the losses and validation.
    from hpcgan.train.trainer import train
    assert train(cfg, LocalBackend(ProcessInfo(), torch.device("cpu"))) == 0
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "val" and np.isfinite(r["l1"]) for r in recs)
