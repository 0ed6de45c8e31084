"""train.lr_likelihood: the parameters a workload fits by likelihood alone (the fast simulation's efficiency and
smearing base) in an optimizer group of their own, at their own rate, decayed by a cosine over the run, and
an interrupted run with it resumes bit-identically."""
from __future__ import annotations

import json
import math

import pytest
import torch

from hpcgan.config import load_config
from hpcgan.errors import AgreedError, UserError
from hpcgan.train import checkpoint as ckpt
from hpcgan.train.schedule import likelihood_decay
from hpcgan.train.step import LIKELIHOOD_GROUP, build_training
from hpcgan.train.trainer import train

from conftest import local, write_fastsim

pytestmark = pytest.mark.usefixtures("clean_signals")

SMALL = ["train.batch_size=32", "lhc.hidden=32", "lhc.d_hidden=32", "lhc.blocks=1", "lhc.d_blocks=1",
         "train.log_every=1", "train.figures=false", "train.val_batches=1", "seed=3"]
GROUP = ["train.lr_likelihood=3e-3", "train.likelihood_schedule=cosine"]  # the small preset's since this change
NO_GROUP = ["train.lr_likelihood=0", "train.likelihood_schedule=constant"]


@pytest.fixture(scope="module")
def fastsim_data(tmp_path_factory) -> str:
    return write_fastsim(tmp_path_factory.mktemp("fastsim") / "train.h5", 256)


def config(tmp_path, data: str, *extra: str):
    return load_config("lhc-fastsim-small", [*SMALL, f"data.path={data}", "data.val_path=",
                                             f"run_dir={tmp_path / 'run'}", *extra])


def test_cosine_decay_and_its_config_checks():
    cfg = load_config("lhc-fastsim-small", GROUP)
    assert [likelihood_decay(cfg, s, 10) for s in (0, 5, 10, 12)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert likelihood_decay(cfg, 3, 0) == 1.0  # outside a run (benchmarks): no decay
    constant = load_config("lhc-fastsim-small", ["train.lr_likelihood=3e-3", "train.likelihood_schedule=constant"])
    assert likelihood_decay(constant, 7, 10) == 1.0
    with pytest.raises(UserError, match="train.likelihood_schedule: cosine needs .* train.lr_likelihood > 0"):
        load_config("lhc-fastsim-small", ["train.lr_likelihood=0", "train.likelihood_schedule=cosine"])
    with pytest.raises(UserError, match="train.lr_likelihood: expected a finite number >= 0, got -1.0"):
        load_config("lhc-fastsim-small", ["train.lr_likelihood=-1"])
    with pytest.raises(UserError, match="train.likelihood_schedule: .*'linear'"):
        load_config("lhc-fastsim-small", ["train.lr_likelihood=1e-3", "train.likelihood_schedule=linear"])


def test_the_group_holds_exactly_the_likelihood_parameters(tmp_path, fastsim_data):
    tr = build_training(config(tmp_path, fastsim_data, *GROUP), local(), log=lambda m: None)
    names = {id(p): n for n, p in tr.G.named_parameters()}
    groups = {g["name"]: {names[id(p)] for p in g["params"]} for g in tr.opt_g.param_groups}
    assert set(groups) == {"G", LIKELIHOOD_GROUP}
    assert groups["G"].isdisjoint(groups[LIKELIHOOD_GROUP]) and groups["G"] | groups[LIKELIHOOD_GROUP] == set(names.values())
    assert groups[LIKELIHOOD_GROUP] == {n for n in names.values() if n.startswith(("efficiency.", "smear.", "smear_corr."))}
    # Without the key: one group, as before. A workload without likelihood parameters refuses the key.
    one = build_training(config(tmp_path, fastsim_data, *NO_GROUP), local(), log=lambda m: None)
    assert [g["name"] for g in one.opt_g.param_groups] == ["G"]
    with pytest.raises(UserError, match="train.lr_likelihood: workload lhc fits no parameters by likelihood"):
        build_training(load_config("lhc-small", ["train.lr_likelihood=1e-3"]), local(), log=lambda m: None)


def test_the_groups_rates_follow_their_schedules_and_a_resume_is_exact(tmp_path, fastsim_data):
    """256 samples at batch 32: 8 steps an epoch, 16 in the run. The likelihood group's logged rate is
    3e-3 x (1 + cos(pi s / 16)) / 2 at step s, G's stays lr_g; a run stopped after 5 steps and resumed ends
    with the same weights and optimizer state as one that ran through."""
    a = config(tmp_path / "a", fastsim_data, *GROUP, "train.epochs=2")
    assert train(a, local()) == 0
    assert train(config(tmp_path / "b", fastsim_data, *GROUP, "train.epochs=2", "train.max_steps=5"), local()) == 0
    assert train(config(tmp_path / "b", fastsim_data, *GROUP, "train.epochs=2"), local()) == 0
    records = [json.loads(ln) for ln in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if r.get("kind") == "train"]
    assert len(logged) == 16
    for r in logged:  # logged after step r["step"], whose update used the rate of step r["step"] - 1
        want = 3e-3 * 0.5 * (1 + math.cos(math.pi * (r["step"] - 1) / 16))
        assert r[f"lr_{LIKELIHOOD_GROUP}"] == pytest.approx(want, rel=1e-9), r["step"]
        assert r["lr_g"] == pytest.approx(a.train.lr_g)
    last = [ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / r / "run" / "checkpoints")[-1]) for r in "ab"]
    for key in ("G", "D"):
        for k in last[0][key]:
            assert torch.equal(last[0][key][k], last[1][key][k]), f"{key}.{k} differs after resume"
    assert [g["name"] for g in last[1]["opt_g"]["param_groups"]] == ["G", LIKELIHOOD_GROUP]
    # Resuming it without the group is refused in one line (the CLI's exit 2), the checkpoints left as they were.
    before = sorted(p.name for p in (tmp_path / "b" / "run" / "checkpoints").iterdir())
    with pytest.raises(AgreedError, match=r"optimizer groups are \['G', 'likelihood'\], this config's \['G'\]"):
        train(config(tmp_path / "b", fastsim_data, *NO_GROUP, "train.epochs=3"), local())
    assert sorted(p.name for p in (tmp_path / "b" / "run" / "checkpoints").iterdir()) == before
