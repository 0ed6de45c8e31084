"""Data parallelism is correct: 2 ranks x batch b == 1 process x batch 2b, for each backend (real mpirun)."""
from __future__ import annotations

import pytest
import torch

from hpcgan.train import checkpoint as ckpt

from conftest import TINY, write_crf

pytestmark = pytest.mark.mpi


def weights(run_dir) -> dict:
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir / "checkpoints")[-1])
    return {**{f"G.{k}": v for k, v in state["G"].items()}, **{f"D.{k}": v for k, v in state["D"].items()}}


def args(data: str, run_dir, batch: int, backend: str) -> list[str]:
    # One global batch per epoch, so every step sees the same samples however they are split over ranks.
    return ["train", "--config", "crf-small", "--backend", backend, *TINY, f"data.path={data}", "data.val_path=",
            f"run_dir={run_dir}", f"train.batch_size={batch}", "train.epochs=3"]


def _hpcgan() -> str:
    import sys
    from pathlib import Path

    return str(Path(sys.executable).parent / "hpcgan")


@pytest.mark.timeout(400)
@pytest.mark.parametrize("backend", ["horovod", "torch"])
def test_two_ranks_match_one_process_with_double_batch(tmp_path, run_mpi, run_single, backend):
    data = write_crf(tmp_path / "crf.h5", 16)
    one = run_single([_hpcgan(), *args(data, tmp_path / "one", 16, "local")], timeout=180)
    assert one.returncode == 0, one.describe()
    run_mpi(2, [_hpcgan(), *args(data, tmp_path / "two", 8, backend)], timeout=240)
    w1, w2 = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert w1.keys() == w2.keys()
    moved = 0
    for k in w1:
        if w1[k].is_floating_point():
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
            moved += 1
    assert moved > 0


@pytest.mark.timeout(400)
@pytest.mark.parametrize("noise_dim", [0, 16])
def test_lhc_two_ranks_match_one_process(tmp_path, run_mpi, run_single, noise_dim):
    """The same check for the LHC track GAN, without and with generator noise: the noise is drawn per
    sample (hpcgan/workloads/noise.py), so a sample gets the same noise on rank 1 of 2 as in one process
    (with the per-rank random streams of before, 72 % of one layer's weights differed, by up to 6e-3)."""
    data = tmp_path / "lhc.h5"
    synth = run_single([_hpcgan(), "data", "synth", "lhc", "--n", "64", "--seed", "3", "--out", data], timeout=120)
    assert synth.returncode == 0, synth.describe()

    def lhc_args(run_dir, batch, backend):
        return ["train", "--config", "lhc-small", "--backend", backend, f"data.path={data}", "data.val_path=",
                "data.cache=false", f"run_dir={run_dir}", f"train.batch_size={batch}", "train.epochs=3",
                "train.warmup_steps=0", f"lhc.noise_dim={noise_dim}", "train.lr_scaling=none", "train.figures=false"]

    one = run_single([_hpcgan(), *lhc_args(tmp_path / "one", 64, "local")], timeout=180)
    assert one.returncode == 0, one.describe()
    run_mpi(2, [_hpcgan(), *lhc_args(tmp_path / "two", 32, "horovod")], timeout=240)
    w1, w2 = weights(tmp_path / "one"), weights(tmp_path / "two")
    # Adam divides by sqrt(v): float rounding of a differently ordered gradient sum shows up at ~1e-5.
    for k in w1:
        if w1[k].is_floating_point():
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=5e-5, msg=lambda m: f"{k}: {m}")


@pytest.mark.timeout(400)
@pytest.mark.parametrize("backend,compression", [("horovod", "fp16"), ("torch", "bf16")])
def test_compressed_gradients_stay_close_to_uncompressed(tmp_path, run_mpi, run_single, backend, compression):
    """train.grad_compression: the allreduce in fp16/bf16 (half the bytes) keeps training close to fp32.

    Stated tolerance: after 3 steps every weight within 2e-3 absolute (the tiny CRF's weights are O(0.1);
    Adam's first steps move them by about lr = 2e-4 each, so a sign error would exceed it) and at least 90 %
    of the weights within 2e-5 (the rounding of one gradient in fp16/bf16 is 2^-11/2^-8 relative).
    """
    data = write_crf(tmp_path / "crf.h5", 16)
    one = run_single([_hpcgan(), *args(data, tmp_path / "one", 16, "local")], timeout=180)
    assert one.returncode == 0, one.describe()
    run_mpi(2, [_hpcgan(), *args(data, tmp_path / "two", 8, backend), f"train.grad_compression={compression}"],
            timeout=240)
    w1, w2 = weights(tmp_path / "one"), weights(tmp_path / "two")
    diffs = torch.cat([(w2[k].double() - w1[k].double()).abs().reshape(-1) for k in w1 if w1[k].is_floating_point()])
    assert float(diffs.max()) < 2e-3
    assert float((diffs < 2e-5).double().mean()) > 0.9
    assert float(diffs.max()) > 0  # the compression did change something: the setting reached the allreduce


TOOLKITS = {"adam": ["loss.r1_gamma=1.0", "loss.r1_interval=2", "train.d_spectral_norm=true", "loss.gan=hinge",
                      "train.ema_halflife_samples=32"],
            # ExtraAdam's halves alternate identically on every rank; lazy R1 also lands in extra D rounds
            "extra_adam": ["loss.r1_gamma=1.0", "loss.r1_interval=3", "train.d_spectral_norm=true",
                           "loss.gan=hinge", "train.ema_halflife_samples=32", "train.optimizer=extra_adam",
                           "train.d_steps=2"]}


@pytest.mark.timeout(400)
@pytest.mark.parametrize("variant", list(TOOLKITS))
def test_toolkit_two_ranks_match_one_process(tmp_path, run_mpi, run_single, variant):
    """R1 (each rank penalises its own real samples, gradients averaged), spectral-norm D (the same power
    iteration on every rank), hinge and the generator EMA (averaged from the synchronised weights, no
    communication), ExtraAdam: 2 ranks x b still equal 1 process x 2b, the EMA copy included."""
    data = write_crf(tmp_path / "crf.h5", 16)
    toolkit = TOOLKITS[variant]
    one = run_single([_hpcgan(), *args(data, tmp_path / "one", 16, "local"), *toolkit], timeout=180)
    assert one.returncode == 0, one.describe()
    run_mpi(2, [_hpcgan(), *args(data, tmp_path / "two", 8, "horovod"), *toolkit], timeout=240)
    s1, s2 = (ckpt.load_checkpoint(ckpt.list_checkpoints(r / "checkpoints")[-1]) for r in (tmp_path / "one",
                                                                                               tmp_path / "two"))
    for key in ("G", "D", "G_ema"):
        for k, v in s1[key].items():
            if v.is_floating_point():
                torch.testing.assert_close(s2[key][k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}.{k}: {m}")
