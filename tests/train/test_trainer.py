"""The training loop in one process: learning, exact resume, non-finite handling, run directory."""
from __future__ import annotations

import json

import pytest
import torch

from hpcgan.errors import AgreedError
from hpcgan.train import checkpoint as ckpt
from hpcgan.train.trainer import EXIT_NONFINITE, train

from conftest import local, tiny_config, write_crf


pytestmark = pytest.mark.usefixtures("clean_signals")


def final_weights(run_dir) -> dict:
    return ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir / "checkpoints")[-1])["G"]


@pytest.mark.timeout(300)
def test_resume_is_bit_identical(tmp_path, crf_data):
    """Interrupted after step 3, resumed: same final weights as an uninterrupted run (CPU)."""
    common = ["train.epochs=2", "train.batch_size=4", "crf.dropout=0.25", "crf.noise_channels=1"]
    a = tiny_config(tmp_path / "a", crf_data, *common)
    assert train(a, local()) == 0
    b = tiny_config(tmp_path / "b", crf_data, *common, "train.max_steps=3")
    assert train(b, local()) == 0
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "b" / "run" / "checkpoints")] == ["ckpt-00000003.pt"]
    b2 = tiny_config(tmp_path / "b", crf_data, *common)
    assert train(b2, local()) == 0
    wa, wb = final_weights(tmp_path / "a" / "run"), final_weights(tmp_path / "b" / "run")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs after resume"


@pytest.mark.timeout(300)
def test_run_directory_contents(tmp_path, crf_data):
    val = write_crf(tmp_path / "val.h5", 16, seed=1)
    cfg = tiny_config(tmp_path, crf_data, "train.epochs=2", "train.batch_size=4", f"data.val_path={val}",
                      "train.figures=true", "train.log_every=2")
    assert train(cfg, local()) == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "environment.json", "metrics.jsonl", "tb", "figures/epoch002.png"):
        assert (run / name).exists(), name
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    train_rec = [r for r in records if r["kind"] == "train"]
    val_rec = [r for r in records if r["kind"] == "val"]
    assert len(val_rec) == 2 and {"l1", "mse"} <= set(val_rec[0])
    for key in ("g_loss", "d_loss", "samples_per_s", "data_wait_frac", "step_time_s", "lr_g"):
        assert key in train_rec[-1], key
    env = json.loads((run / "environment.json").read_text())
    assert env["ranks"] == 1 and env["torch"] == torch.__version__


@pytest.mark.timeout(300)
def test_training_reduces_matching_loss(tmp_path, crf_data):
    cfg = tiny_config(tmp_path, crf_data, "train.epochs=6", "train.batch_size=8", "train.lr_g=0.002")
    assert train(cfg, local()) == 0
    recs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    l1 = [r["g_l1"] for r in recs if r["kind"] == "train"]
    assert sum(l1[-3:]) / 3 < 0.8 * sum(l1[:3]) / 3, l1


@pytest.mark.timeout(300)
def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path, crf_data):
    ok = tiny_config(tmp_path, crf_data, "train.epochs=1", "train.batch_size=4")
    assert train(ok, local()) == 0
    before = ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")
    bad = tiny_config(tmp_path, crf_data, "train.epochs=3", "train.batch_size=4", "train.lr_g=1e30",
                      "train.lr_d=1e30")
    assert train(bad, local()) == EXIT_NONFINITE
    after = ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")
    for p in after:  # whatever was written before the blow-up still verifies
        ckpt.load_checkpoint(p)
    assert before[-1] in after


@pytest.mark.timeout(300)
def test_nonfinite_skip_continues(tmp_path, crf_data):
    cfg = tiny_config(tmp_path, crf_data, "train.epochs=1", "train.batch_size=4", "train.nonfinite=skip",
                      "train.fault=0:2:nangrad")  # config validation rejects loss.lambda_match=nan now
    assert train(cfg, local()) == 0


@pytest.mark.timeout(300)
def test_changed_batch_size_mid_epoch_continues_with_the_rest(tmp_path, crf_data, capsys):
    """32 samples: stopped after 3 of 8 steps at batch 4 (12 samples), resumed at batch 2: the epoch goes on
    with the 20 samples not yet consumed (10 steps), then epoch 2 has 16 steps. Before global-batch ordering
    the epoch restarted (3 + 16 + 16 steps); before that, it skipped samples."""
    assert train(tiny_config(tmp_path, crf_data, "train.epochs=2", "train.batch_size=4", "train.max_steps=3"),
                 local()) == 0
    assert train(tiny_config(tmp_path, crf_data, "train.epochs=2", "train.batch_size=2"), local()) == 0
    err = capsys.readouterr().err
    assert ("train.batch_size 4 -> 2: epoch 1 continues with the 20 samples not yet consumed (12 of 32 trained, "
            "3 global batches of 1 rank(s)) in 10 steps of 2") in err
    last = ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    assert last.name == "ckpt-00000029.pt"  # 3 + 10 (the rest of epoch 1) + 16 (epoch 2)
    assert ckpt.load_checkpoint(last)["epoch_order"] == {"unit": 2, "consumed": 0}


@pytest.mark.timeout(300)
def test_other_training_data_is_an_error(tmp_path, crf_data):
    assert train(tiny_config(tmp_path, crf_data, "train.batch_size=4", "train.max_steps=3"), local()) == 0
    other = write_crf(tmp_path / "other.h5", 24)
    with pytest.raises(AgreedError, match=r"^data\.path .*other\.h5: checkpoint .*ckpt-00000003\.pt was trained on "
                                          r"1 file\(s\) with 32 samples \(crf\.h5\), data\.path now gives 1 file\(s\) "
                                          r"with 24 samples \(other\.h5\)"):
        train(tiny_config(tmp_path, other, "train.batch_size=4"), local())
