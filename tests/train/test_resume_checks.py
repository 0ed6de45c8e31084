"""Resuming under a changed configuration: what would skip or repeat samples restarts the epoch with a notice,
other training data is an error naming data.path (one process)."""
from __future__ import annotations

import pytest
import torch

from hpcgan.errors import AgreedError
from hpcgan.runtime import signals
from hpcgan.runtime.backend import LocalBackend
from hpcgan.runtime.env import ProcessInfo
from hpcgan.train import checkpoint as ckpt
from hpcgan.train.trainer import train

from conftest import tiny_config, write_crf


@pytest.fixture(autouse=True)
def _signals():
    yield
    signals.uninstall()
    signals.reset()


def local() -> LocalBackend:
    return LocalBackend(ProcessInfo(), torch.device("cpu"))


@pytest.mark.timeout(300)
def test_changed_batch_size_mid_epoch_restarts_the_epoch(tmp_path, crf_data, capsys):
    """32 samples: stopped after 3 of 8 steps at batch 4, resumed at batch 2 (16 steps per epoch). Before,
    the run went on from sample 3 x 2 = 6 of the new order and ended at step 32, skipping samples."""
    assert train(tiny_config(tmp_path, crf_data, "train.epochs=2", "train.batch_size=4", "train.max_steps=3"),
                 local()) == 0
    assert train(tiny_config(tmp_path, crf_data, "train.epochs=2", "train.batch_size=2"), local()) == 0
    err = capsys.readouterr().err
    assert "changed since checkpoint" in err and "train.batch_size 4 -> 2" in err
    assert "epoch 1 restarts from its first step" in err
    last = ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    assert last.name == "ckpt-00000035.pt"  # 3 + 16 (epoch 1 again) + 16 (epoch 2)


@pytest.mark.timeout(300)
def test_other_training_data_is_an_error(tmp_path, crf_data):
    assert train(tiny_config(tmp_path, crf_data, "train.batch_size=4", "train.max_steps=3"), local()) == 0
    other = write_crf(tmp_path / "other.h5", 24)
    with pytest.raises(AgreedError, match=r"^data\.path .*other\.h5: checkpoint .*ckpt-00000003\.pt was trained on "
                                          r"1 file\(s\) with 32 samples \(crf\.h5\), data\.path now gives 1 file\(s\) "
                                          r"with 24 samples \(other\.h5\)"):
        train(tiny_config(tmp_path, other, "train.batch_size=4"), local())
