"""A checkpoint opens with plain torch.load(weights_only=True), and `hpcgan export` gives safetensors weights
that load without the trainer and compute what the checkpoint's generator computes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from hpcgan.cli.main import main
from hpcgan.runtime import signals
from hpcgan.runtime.backend import LocalBackend
from hpcgan.runtime.env import ProcessInfo
from hpcgan.train import checkpoint as ckpt
from hpcgan.train.trainer import train

from conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import write_crf

    tmp = tmp_path_factory.mktemp("export")
    data = write_crf(tmp / "crf.h5", 16)
    try:
        assert train(tiny_config(tmp, data, "train.epochs=1", "train.batch_size=4"),
                     LocalBackend(ProcessInfo(), torch.device("cpu"))) == 0
    finally:
        signals.uninstall()
        signals.reset()
    return tmp / "run"


@pytest.mark.timeout(120)
def test_a_checkpoint_is_a_plain_torch_file(trained):
    path = ckpt.list_checkpoints(trained / "checkpoints")[-1]
    code = (f"import torch; s = torch.load({str(path)!r}, weights_only=True); "
            "print(sorted(s)[:3], len(s['G']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    record = (path.parent / (path.name + ".sha256")).read_text().split()
    assert record[1] == path.name
    check = subprocess.run(["sha256sum", "-c", path.name + ".sha256"], cwd=path.parent, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and "OK" in check.stdout


@pytest.mark.timeout(120)
def test_export_loads_without_the_trainer_and_matches(trained, tmp_path, capsys):
    out = tmp_path / "G.safetensors"
    assert main(["export", str(trained), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "exported the raw generator" in said and "(the run kept no EMA copy)" in said
    record = json.loads((tmp_path / "G.json").read_text())
    assert record["workload"] == "crf" and record["weights"] == "raw"
    # The documented lines, in a fresh interpreter that never imports hpcgan.train.
    code = ("import sys, torch; from hpcgan.workloads.exported import load_exported; "
            f"G, cfg = load_exported({str(out)!r}); torch.manual_seed(0); "
            "x = torch.randn(2, 44, 16, 16); torch.save(G(x).detach(), sys.argv[1]); "
            "assert not any(m.startswith('hpcgan.train') for m in sys.modules), 'imported the trainer'")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "y.pt")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    from hpcgan.train.inference import load_generator

    _, _, G, _, _ = load_generator(str(trained), LocalBackend(ProcessInfo(), torch.device("cpu")), weights="raw")
    torch.manual_seed(0)
    x = torch.randn(2, 44, 16, 16)
    with torch.no_grad():
        assert torch.equal(G(x), torch.load(tmp_path / "y.pt"))


def test_export_refuses_another_suffix(trained, tmp_path, capsys):
    assert main(["export", str(trained), "--out", str(tmp_path / "G.pt")]) == 2
    assert "expected a .safetensors file name" in capsys.readouterr().err
