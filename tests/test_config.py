"""Config: shipped presets, base chains, dotted overrides, and one-line errors naming the key (exit 2 via the CLI)."""
from __future__ import annotations

import dataclasses
import re
import textwrap

import pytest

import hpcgan.config as config_mod
from hpcgan.config import Config, load_config, preset_names, save_config
from hpcgan.errors import UserError


def write(path, text: str):
    path.write_text(textwrap.dedent(text))
    return path


# --- presets and chains ------------------------------------------------------

def test_shipped_presets_exist():
    assert {"lhc", "crf", "galaxy", "galaxy-small"} <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_loads_and_round_trips(name, tmp_path):
    cfg = load_config(name)
    assert isinstance(cfg, Config) and cfg.workload in ("lhc", "lhc-fastsim", "crf", "galaxy")
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(str(tmp_path / "resolved.yaml")) == cfg  # the run dir's resolved config reloads exactly


def test_defaults_without_preset():
    cfg = load_config(None)
    assert cfg == Config() and cfg.global_batch(4) == cfg.train.batch_size * cfg.train.accumulation * 4


def test_config_is_frozen():
    cfg = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3  # type: ignore[misc]


def test_base_chain_of_files_relative_to_each_other(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "root.yaml", """
        workload: crf
        seed: 7
        train: {epochs: 2, batch_size: 4, lr_g: 1.0e-3}
        crf: {size: 32}
    """)
    write(tmp_path / "sub" / "mid.yaml", """
        base: ../root.yaml
        train: {epochs: 5}
        crf: {widths: [8, 16]}
    """)
    leaf = write(tmp_path / "sub" / "leaf.yaml", """
        base: mid
        train: {batch_size: 16}
    """)
    cfg = load_config(str(leaf))
    assert (cfg.workload, cfg.seed, cfg.crf.size, cfg.crf.widths) == ("crf", 7, 32, (8, 16))
    # deep merge: each level overrides only the keys it names
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr_g) == (5, 16, 1e-3)


def test_user_file_extends_a_shipped_preset(tmp_path):
    mine = write(tmp_path / "mine.yaml", """
        base: lhc-small
        train: {epochs: 1}
    """)
    cfg = load_config(str(mine))
    small = load_config("lhc-small")
    assert cfg.train.epochs == 1 and dataclasses.replace(cfg, train=small.train) == small


def test_shipped_preset_chain(monkeypatch, tmp_path):
    monkeypatch.setattr(config_mod, "PRESET_DIR", tmp_path)
    write(tmp_path / "big.yaml", "workload: crf\ntrain: {epochs: 20, batch_size: 6}\n")
    write(tmp_path / "small.yaml", "base: big\ntrain: {epochs: 2}\n")
    cfg = load_config("small")
    assert (cfg.workload, cfg.train.epochs, cfg.train.batch_size) == ("crf", 2, 6)
    assert preset_names() == ["big", "small"]


def test_base_loop_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "base: b\n")
    write(tmp_path / "b.yaml", "base: ./a.yaml\n")
    with pytest.raises(UserError, match=r"config file .*a\.yaml: 'base' chain loops"):
        load_config(str(tmp_path / "a.yaml"))


# --- overrides ---------------------------------------------------------------

def test_dotted_overrides_are_typed(tmp_path):
    cfg = load_config("lhc-small", [
        "train.epochs=15", "train.lr_g=1e-4", "train.lr_d=0.5", "train.figures=false", "train.betas=[0, 0.9]",
        "data.path=/scratch/x-*.h5", "seed=9", "run_dir=runs/a=b", "crf.widths=[4, 8]", "data.val_path=",
    ])
    assert cfg.train.epochs == 15 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr_g == 1e-4 and isinstance(cfg.train.lr_g, float)
    assert cfg.train.lr_d == 0.5 and cfg.train.figures is False
    assert cfg.train.betas == (0.0, 0.9) and all(isinstance(b, float) for b in cfg.train.betas)
    assert cfg.data.path == "/scratch/x-*.h5" and cfg.seed == 9 and cfg.run_dir == "runs/a=b"
    assert cfg.crf.widths == (4, 8) and cfg.data.val_path == ""


def test_overrides_win_over_the_preset_and_its_base():
    assert load_config("lhc-small", ["train.epochs=1"]).train.epochs == 1
    assert load_config("lhc-small").train.epochs != 1


def test_int_given_where_str_expected_is_kept_as_text():
    assert load_config(None, ["data.path=123"]).data.path == "123"


# --- errors: one line, naming the key/file and what was expected -------------------

ERRORS = [
    (["train.nosuch=1"], r"^config key train\.nosuch: unknown \(known keys: .*epochs.*\)$"),
    (["nosuch=1"], r"^config key nosuch: unknown"),
    (["lhc.hidden.x=1"], r"^override 'lhc\.hidden\.x=1': hidden is not a section$"),
    (["train.max_steps.x=1"], r"^config key train\.max_steps: expected int, got \{'x': 1\}$"),
    (["train=3"], r"^config key train: expected a section \(mapping\), got 3$"),
    (["train.epochs=ten"], r"^config key train\.epochs: expected int, got 'ten'$"),
    (["train.epochs=1.5"], r"^config key train\.epochs: expected int, got 1\.5$"),
    (["train.epochs=true"], r"^config key train\.epochs: expected int, got True$"),
    (["train.epochs=0"], r"^config key train\.epochs: expected a positive integer, got 0$"),
    (["train.lr_g=fast"], r"^config key train\.lr_g: expected float, got 'fast'$"),
    (["train.figures=3"], r"^config key train\.figures: expected bool, got 3$"),
    (["data.path=[a, b]"], r"^config key data\.path: expected str, got \['a', 'b'\]$"),
    (["train.betas=0.5"], r"^config key train\.betas: expected tuple, got 0\.5$"),
    (["train.betas=[0.5]"], r"^config key train\.betas: expected two numbers, got \[0\.5\]$"),
    (["train.betas=[0.5, x]"], r"^config key train\.betas\[1\]: expected float, got 'x'$"),
    (["crf.widths=[16, 32.5]"], r"^config key crf\.widths\[1\]: expected int, got 32\.5$"),
    (["train.amp=maybe"], r"^config key train\.amp: expected one of auto, off, bf16, fp16, got 'maybe'$"),
    (["workload=jets"], r"^config key workload: expected one of crf, lhc, lhc-fastsim, galaxy, got 'jets'$"),
    (["backend=mpi"], r"^config key backend: expected one of auto, horovod, torch, local, got 'mpi'$"),
    (["data.remainder=keep"], r"^config key data\.remainder: expected one of drop, pad, got 'keep'$"),
    (["train.epochs"], r"^override 'train\.epochs': expected section\.key=value$"),
    # Numeric domains: finite, sign, ranges; the key and the expected range named.
    (["train.lr_g=.nan"], r"^config key train\.lr_g: expected a finite number > 0, got nan$"),
    (["train.lr_d=.inf"], r"^config key train\.lr_d: expected a finite number > 0, got inf$"),
    (["train.lr_g=-1e-4"], r"^config key train\.lr_g: expected a finite number > 0, got -0\.0001$"),
    (["train.lr_d=0"], r"^config key train\.lr_d: expected a finite number > 0, got 0\.0$"),
    (["train.betas=[0.5, 1.0]"], r"^config key train\.betas\[1\]: expected a number in \[0, 1\), got 1\.0$"),
    (["train.betas=[-0.1, 0.9]"], r"^config key train\.betas\[0\]: expected a number in \[0, 1\), got -0\.1$"),
    (["train.betas=[.nan, 0.9]"], r"^config key train\.betas\[0\]: expected a number in \[0, 1\), got nan$"),
    (["train.warmup_steps=-1"], r"^config key train\.warmup_steps: expected an integer >= 0, got -1$"),
    (["train.max_steps=-5"], r"^config key train\.max_steps: expected an integer >= 0, got -5$"),
    (["train.checkpoint_every=-1"], r"^config key train\.checkpoint_every: expected an integer >= 0, got -1$"),
    (["train.val_batches=-1"], r"^config key train\.val_batches: expected an integer >= 0, got -1$"),
    (["loss.lambda_match=-1"], r"^config key loss\.lambda_match: expected a finite number >= 0, got -1\.0$"),
    (["loss.lambda_gan=.inf"], r"^config key loss\.lambda_gan: expected a finite number >= 0, got inf$"),
    (["loss.lambda_gan=0", "loss.lambda_match=0"], r"^config keys loss\.lambda_gan and loss\.lambda_match: both 0"),
    (["crf.dropout=.nan"], r"^config key crf\.dropout: expected a number in \[0, 1\), got nan$"),
    (["crf.dropout=1"], r"^config key crf\.dropout: expected a number in \[0, 1\), got 1\.0$"),
    (["crf.noise_channels=-2"], r"^config key crf\.noise_channels: expected an integer >= 0, got -2$"),
    (["lhc.n_layers=0"], r"^config key lhc\.n_layers: expected a positive integer, got 0$"),
    (["lhc.blocks=-1"], r"^config key lhc\.blocks: expected an integer >= 0, got -1$"),
    (["seed=-1"], r"^config key seed: expected an integer >= 0, got -1$"),
    (["seed=4294967296"], r"^config key seed: expected an integer in \[0, 4294967296\), got 4294967296$"),
    (["data.prefetch=0"], r"^config key data\.prefetch: expected a positive integer, got 0$"),
    (["galaxy.size=30"], r"^config key galaxy\.size: 30 is not divisible by 2\^\(levels-1\) = 8"),
    (["galaxy.stretch_max=0.1"], r"^config key galaxy\.stretch_max: expected a finite number > 0\.4, got 0\.1$"),
    (["galaxy.wiener_balance=.nan"], r"^config key galaxy\.wiener_balance: expected a finite number > 0, got nan$"),
]


@pytest.mark.parametrize("overrides,message", ERRORS, ids=[e[0][0] for e in ERRORS])
def test_bad_override_is_one_line_naming_the_key(overrides, message):
    with pytest.raises(UserError) as info:
        load_config("lhc-small", overrides)
    text = str(info.value)
    assert "\n" not in text
    assert re.search(message, text), text


def test_missing_files_and_presets(tmp_path):
    with pytest.raises(UserError, match=r"^config file .*nope\.yaml: not found$"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(UserError, match=r"^config 'nosuch': no such preset \(expected one of .*lhc.* or a \.yaml path\)$"):
        load_config("nosuch")
    leaf = write(tmp_path / "leaf.yaml", "base: gone\n")
    with pytest.raises(UserError, match=r"^config file .*leaf\.yaml: base 'gone': config 'gone': no such preset"):
        load_config(str(leaf))
    leaf = write(tmp_path / "leaf2.yaml", "base: ../gone.yaml\n")
    with pytest.raises(UserError, match=r"^config file .*leaf2\.yaml: base '\.\./gone\.yaml' not found"):
        load_config(str(leaf))


@pytest.mark.parametrize("text,message", [
    ("train: {epochs: [1\n", r"config file .*bad\.yaml: not valid YAML \(.*\)$"),
    ("- a\n- b\n", r"config file .*bad\.yaml: expected a mapping at top level, got list$"),
    ("train:\n  epochs: ten\n", r"^config key train\.epochs: expected int, got 'ten'$"),
    ("train:\n  epoch: 3\n", r"^config key train\.epoch: unknown"),
    ("loss:\n  gan: wgan\n", r"^config key loss\.gan: expected one of lsgan, hinge, nsgan, got 'wgan'$"),
    ("train:\n", r"^config key train: expected a section \(mapping\), got None$"),
])
def test_bad_file_is_one_line_naming_file_or_key(tmp_path, text, message):
    bad = write(tmp_path / "bad.yaml", text)
    with pytest.raises(UserError) as info:
        load_config(str(bad))
    assert "\n" not in str(info.value)
    assert re.search(message, str(info.value)), str(info.value)


def test_empty_file_is_the_defaults(tmp_path):
    assert load_config(str(write(tmp_path / "empty.yaml", ""))) == Config()


# --- through the CLI: exit code 2 and one line on stderr ----------------------------

CLI_ERRORS = [
    (["--config", "nosuch"], "hpcgan: error: config 'nosuch': no such preset"),
    (["--config", "lhc-small", "train.nosuch=1"], "hpcgan: error: config key train.nosuch: unknown"),
    (["--config", "lhc-small", "train.epochs=ten"], "hpcgan: error: config key train.epochs: expected int, got 'ten'"),
    (["--config", "crf-small", "train.amp=maybe"], "hpcgan: error: config key train.amp: expected one of auto"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args,start", CLI_ERRORS, ids=[" ".join(a[0][1:]) for a in CLI_ERRORS])
def test_cli_config_error_exits_2_with_one_line(args, start, run_single, hpcgan):
    job = run_single(hpcgan + ["train", *args, "--dry-run"], timeout=90)
    assert job.returncode == 2, job.describe()
    assert job.stderr.count("\n") == 1 and job.stderr.startswith(start), job.describe()
    assert job.stdout == "", job.describe()


@pytest.mark.timeout(120)
def test_cli_missing_config_file(tmp_path, run_single, hpcgan):
    job = run_single(hpcgan + ["train", "--config", str(tmp_path / "mine.yaml"), "--dry-run"], timeout=90)
    assert job.returncode == 2 and job.stderr == f"hpcgan: error: config file {tmp_path / 'mine.yaml'}: not found\n", \
        job.describe()


@pytest.mark.mpi
@pytest.mark.timeout(150)
def test_cli_config_error_under_mpirun_one_line_from_rank_0(run_mpi, hpcgan):
    job = run_mpi(2, hpcgan + ["train", "--config", "lhc-small", "train.epochs=ten", "--dry-run"], timeout=120,
                  check=False)
    assert job.returncode == 2, job.describe()
    errors = re.findall(r"(?m)^.*hpcgan: error: .*$", job.text)
    assert errors == ["hpcgan: error: config key train.epochs: expected int, got 'ten'"], job.describe()
    assert "Traceback" not in job.text, job.describe()
