"""scripts/fastsim_base_calibration.py: the coverage test passes a calibrated base and flags a narrow one."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fastsim_base_calibration.py"
spec = importlib.util.spec_from_file_location("fastsim_base_calibration", SCRIPT)
calib = importlib.util.module_from_spec(spec)
spec.loader.exec_module(calib)


def _gaussian_case(width_factor_in_bin: float) -> list[dict]:
    """20 000 residuals whose width depends on |eta|; the predicted quantiles are exact except in the
    |eta| 0.5-1 bin, where their widths are multiplied by width_factor_in_bin."""
    rng = np.random.default_rng(0)
    n = 20000
    abs_eta = rng.uniform(0, 2, n)
    sigma = (1 + 0.5 * abs_eta)[:, None] * np.ones((1, 5))
    r = rng.normal(size=(n, 5)) * sigma
    factor = np.where((abs_eta >= 0.5) & (abs_eta < 1.0), width_factor_in_bin, 1.0)[:, None]
    q = np.stack([-0.9945 * sigma * factor, 0 * sigma, 0.9945 * sigma * factor], axis=-1)  # 16 / 50 / 84 %
    return calib.coverage(q, r, abs_eta)


def test_calibrated_base_is_not_flagged_and_a_narrow_bin_is():
    good = _gaussian_case(1.0)
    assert not any(row["flagged"] for row in good), [r for r in good if r["flagged"]]
    assert all(abs(row["below"][0] - 0.16) < 0.02 and abs(row["below"][2] - 0.84) < 0.02 for row in good)
    narrow = _gaussian_case(0.88)  # the 15-epoch run's d0 in |eta| 0.5-1 (docs/results.md)
    flagged = {(row["eta"], row["param"]) for row in narrow if row["flagged"]}
    assert flagged == {((0.5, 1.0), name) for name in calib.NAMES}
