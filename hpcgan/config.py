"""Typed, frozen run configuration: YAML presets + dotted overrides.

A preset is a YAML file in hpcgan/configs/ (``--config lhc``) or any path.
A preset may name a ``base:`` preset it extends. Overrides are ``section.key=value``
strings parsed as YAML scalars. Unknown keys, wrong types and missing files
raise UserError naming the key, so the CLI can exit 2 with one line.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from hpcgan.errors import UserError

PRESET_DIR = Path(__file__).parent / "configs"
SEED_LIMIT = 2**32


@dataclass(frozen=True)
class DataConfig:
    path: str = ""  # training HDF5 file or glob (data/lhc-*.h5)
    val_path: str = ""  # held-out HDF5 file or glob; empty: no validation
    shuffle: bool = True  # seeded global permutation per epoch
    shuffle_block: int = 32  # samples per contiguous read run inside the shuffle
    prefetch: int = 4  # batches queued by the background reader thread
    cache: bool = False  # keep this rank's shard in memory after the first epoch
    normalize: bool = True  # standardise inputs with the file's per-channel stats
    check_finite: str = "auto"  # open | batch | off | auto (open for small files)
    remainder: str = "drop"  # drop | pad: samples beyond a multiple of ranks*batch
    stage: bool = False  # copy the data files to node-local storage first, once per node (data/stage.py)
    stage_dir: str = ""  # where data.stage copies to ($VARS expanded on each node); empty: $SLURM_TMPDIR, $TMPDIR, /tmp

    def __post_init__(self) -> None:
        _choice("data.check_finite", self.check_finite, ("open", "batch", "off", "auto"))
        _choice("data.remainder", self.remainder, ("drop", "pad"))
        _positive("data.shuffle_block", self.shuffle_block)
        _positive("data.prefetch", self.prefetch)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1  # passes over the training set
    batch_size: int = 8  # per rank, per accumulation step
    accumulation: int = 1  # micro-batches summed before each optimizer step
    lr_g: float = 2e-4  # generator learning rate for one batch_size batch (scaled, see train/schedule.py)
    lr_d: float = 2e-4  # discriminator learning rate for one batch_size batch (scaled likewise)
    betas: tuple = (0.5, 0.999)  # Adam betas for both networks
    optimizer: str = "adam"  # adam | extra_adam (Adam with extrapolation, Gidel et al. 2019; hpcgan/train/optim.py)
    lr_scaling: str = "sqrt"  # sqrt | linear | none: LR x f(ranks x accumulation); sqrt suits Adam
    warmup_samples: int = 0  # linear LR warm-up over this many training samples (the same at any rank count)
    warmup_steps: int = 0  # older form: warm-up in optimizer steps (shrinks with ranks); use warmup_samples
    d_steps: int = 1  # discriminator steps per generator step
    amp: str = "auto"  # auto | off | bf16 | fp16 (auto: bf16 on Ampere+, fp16 on Pascal/Volta, off on CPU)
    channels_last: bool = True  # NHWC memory format for convnets on GPU
    compile: bool = False  # torch.compile (GPU needs compute capability >= 7.0)
    sync_batchnorm: bool = False  # batch statistics across ranks
    d_spectral_norm: bool = False  # spectral normalisation of every conv and linear layer of D
    grad_compression: str = "none"  # none | fp16 | bf16: dtype of the gradient allreduce (half the bytes)
    max_steps: int = 0  # stop after this many optimizer steps in total (0: no limit)
    checkpoint_every: int = 0  # also checkpoint every N steps (0: epoch ends only)
    keep_checkpoints: int = 3  # keep the last k checkpoints
    log_every: int = 10  # steps between metric reductions/logging
    val_batches: int = 0  # validation samples per epoch: val_batches x batch_size, evenly spaced (0: all)
    nonfinite: str = "stop"  # stop | skip: what a NaN/Inf loss does
    figures: bool = True  # per-epoch sample figures and TensorBoard images
    fault: str = ""  # fault injection for tests: "RANK:STEP:raise|exit|hang"
    sample_ledger: bool = False  # per rank, the sample indices of every step, in run_dir/ledger (audit exactly-once)
    ema_halflife_samples: int = 0  # generator EMA: weights averaged with this half-life in samples (0: off)
    ema_rampup: float = 0.05  # EMA half-life at most this fraction of the samples seen so far (0: no ramp-up)
    # The parameters a workload fits by likelihood alone (Workload.likelihood_parameters: the fast simulation's
    # efficiency and smearing base) in their own optimizer group: a regression wants a larger rate, decayed to 0
    # so its fitted quantiles settle, where the adversarial part wants a small constant one (train/schedule.py).
    lr_likelihood: float = 0.0  # their rate for one batch_size batch (scaled like lr_g); 0: lr_g, in G's group
    likelihood_schedule: str = "constant"  # constant | cosine: lr_likelihood x (1 + cos(pi x progress)) / 2

    def __post_init__(self) -> None:
        for k in ("epochs", "batch_size", "accumulation", "d_steps", "keep_checkpoints", "log_every"):
            _positive(f"train.{k}", getattr(self, k))
        for k in ("warmup_steps", "max_steps", "checkpoint_every", "val_batches", "ema_halflife_samples"):
            _at_least(f"train.{k}", getattr(self, k), 0)
        for k in ("lr_g", "lr_d"):
            _in_range(f"train.{k}", getattr(self, k), 0, math.inf, low_open=True)
        _choice("train.amp", self.amp, ("auto", "off", "bf16", "fp16"))
        _choice("train.optimizer", self.optimizer, ("adam", "extra_adam"))
        _choice("train.lr_scaling", self.lr_scaling, ("linear", "sqrt", "none"))
        _choice("train.nonfinite", self.nonfinite, ("stop", "skip"))
        _choice("train.grad_compression", self.grad_compression, ("none", "fp16", "bf16"))
        _in_range("train.ema_rampup", self.ema_rampup, 0, math.inf)
        _in_range("train.lr_likelihood", self.lr_likelihood, 0, math.inf)
        _choice("train.likelihood_schedule", self.likelihood_schedule, ("constant", "cosine"))
        if self.likelihood_schedule != "constant" and self.lr_likelihood == 0:
            raise UserError(f"config key train.likelihood_schedule: {self.likelihood_schedule} needs the likelihood "
                            "parameters in their own group, expected train.lr_likelihood > 0 (got 0)")
        if self.warmup_samples and self.warmup_steps:
            raise UserError(f"config keys train.warmup_samples and train.warmup_steps: set one, not both "
                            f"(got {self.warmup_samples} and {self.warmup_steps}); warmup_samples means the same "
                            "at any rank count")
        if len(self.betas) != 2:
            raise UserError(f"config key train.betas: expected two numbers, got {list(self.betas)}")
        for i, beta in enumerate(self.betas):  # Adam's moment decay rates
            _in_range(f"train.betas[{i}]", beta, 0, 1)


@dataclass(frozen=True)
class LossConfig:
    gan: str = "lsgan"  # lsgan | hinge | nsgan (non-saturating)
    lambda_gan: float = 1.0  # weight of the adversarial term (0: pure regression baseline)
    lambda_match: float = 10.0  # weight of the L1 matching term
    r1_gamma: float = 0.0  # R1 gradient penalty gamma/2 E|grad_x D(x)|^2 on real samples (0: off)
    r1_interval: int = 16  # lazy R1: every this many steps, its loss scaled by the interval (1: every step)

    def __post_init__(self) -> None:
        _choice("loss.gan", self.gan, ("lsgan", "hinge", "nsgan"))
        for k in ("lambda_gan", "lambda_match", "r1_gamma"):
            _in_range(f"loss.{k}", getattr(self, k), 0, math.inf)
        _positive("loss.r1_interval", self.r1_interval)
        if self.lambda_gan == 0 and self.lambda_match == 0:
            raise UserError("config keys loss.lambda_gan and loss.lambda_match: both 0 leave nothing to train "
                            "(expected at least one > 0)")


@dataclass(frozen=True)
class CRFConfig:
    size: int = 256  # image height = width
    in_channels: int = 44  # meteorological channels
    out_channels: int = 3  # reflectance R, G, B
    widths: tuple = (44, 88, 176, 352, 704)  # U-Net widths per level
    dropout: float = 0.25  # generator dropout
    output: str = "tanh"  # tanh | sigmoid
    noise_channels: int = 0  # extra Gaussian noise channels concatenated to the input
    d_widths: tuple = (64, 128, 256, 512)  # PatchGAN widths
    d_scales: int = 3  # discriminators at full, 1/2, 1/4 ... scale
    norm: str = "batch"  # generator norm: batch (paper) | instance | none (no cross-sample statistics)
    d_conditional: bool = True  # D sees the inputs with the image (paper); false: D judges the image alone
    colour: str = "rgb"  # G output: rgb (paper: three bands) | luma_chroma (grey fine texture + pooled chroma)
    chroma_pool: int = 4  # luma_chroma: chroma varies on scales of this many pixels and more
    d_chroma: bool = False  # D also sees each pixel's chroma (band - luminance) as extra channels

    def __post_init__(self) -> None:
        _choice("crf.output", self.output, ("tanh", "sigmoid"))
        _choice("crf.norm", self.norm, ("batch", "instance", "none"))
        for k in ("size", "in_channels", "out_channels", "d_scales", "chroma_pool"):
            _positive(f"crf.{k}", getattr(self, k))
        _choice("crf.colour", self.colour, ("rgb", "luma_chroma"))
        if (self.colour == "luma_chroma" or self.d_chroma) and self.out_channels != 3:
            raise UserError(f"config key crf.colour/crf.d_chroma: luminance and chroma need out_channels = 3 (RGB), "
                            f"got {self.out_channels}")
        _unet_shape("crf", self.size, self.widths, self.d_widths)
        if self.colour == "luma_chroma" and self.size % self.chroma_pool:
            raise UserError(f"config key crf.chroma_pool: {self.chroma_pool} does not divide crf.size {self.size}")
        _at_least("crf.noise_channels", self.noise_channels, 0)
        _in_range("crf.dropout", self.dropout, 0, 1)


@dataclass(frozen=True)
class LHCConfig:
    n_layers: int = 10  # barrel layers
    noise_dim: int = 16  # generator noise vector
    hidden: int = 256  # residual MLP width
    blocks: int = 4  # residual blocks in G
    d_hidden: int = 256  # discriminator width
    d_blocks: int = 3  # residual blocks in D
    refine_iters: int = 0  # Gauss-Newton steps of the exact helix on G's linear seed (models.helix_refine; 0: off)
    corr_scale: float = 1.0  # multiplies G's corrections: to the seed (lhc, models.CORR), to the smearing (fastsim)
    zero_init: bool = False  # G's output layers start at zero: the first G is the seed itself (no random corrections)
    smear_base: bool = False  # lhc-fastsim: G adds to a Gaussian smearing fitted by quantile regression (fastsim.py)
    smear_corr: bool = False  # lhc-fastsim: the smearing's five draws correlated, fitted by likelihood (fastsim.py)
    d_pairs: bool = False  # lhc-fastsim: D also sees the products of each pair of residuals (their correlations)

    def __post_init__(self) -> None:
        for k in ("n_layers", "hidden", "d_hidden"):
            _positive(f"lhc.{k}", getattr(self, k))
        for k in ("noise_dim", "blocks", "d_blocks", "refine_iters"):
            _at_least(f"lhc.{k}", getattr(self, k), 0)
        _in_range("lhc.corr_scale", self.corr_scale, 0, math.inf, low_open=True)
        if self.smear_base and self.noise_dim < 5:
            raise UserError(f"config key lhc.noise_dim: lhc.smear_base draws one normal number per track parameter, "
                            f"expected >= 5, got {self.noise_dim}")
        if self.smear_corr and not self.smear_base:
            raise UserError("config key lhc.smear_corr: correlates the smearing base's draws, expected lhc.smear_base "
                            "true, got false")


@dataclass(frozen=True)
class GalaxyConfig:
    size: int = 424  # stamp height = width (the paper's 424; 424 = 8 x 53 fits a 4-level U-Net)
    widths: tuple = (64, 128, 256, 512)  # U-Net widths per level (shared with crf: workloads.crf.models)
    dropout: float = 0.0  # generator dropout
    norm: str = "none"  # generator norm: batch | instance | none (instance norm loses the flux level: 2026-11-30 run)
    noise_channels: int = 0  # extra Gaussian noise channels concatenated to the input
    residual: bool = False  # G = tanh(atanh(input) + zero-initialised U-Net): starts at the input (crf.models)
    d_widths: tuple = (64, 128, 256, 512)  # PatchGAN widths
    d_scales: int = 1  # one PatchGAN, as pix2pix
    stretch_soft: float = 0.4  # nanomaggies: asinh softening of the model space (paper: 0.41)
    stretch_max: float = 50.0  # nanomaggies mapped to 1 in model space (brighter pixels saturate)
    rl_iterations: int = 2  # Richardson-Lucy iterations of the baseline (best PSNR of 1-40 on training stamps)
    wiener_balance: float = 1.0  # regularisation of the Wiener baseline (best PSNR of 0.1-3 on training stamps)

    def __post_init__(self) -> None:
        _choice("galaxy.norm", self.norm, ("batch", "instance", "none"))
        for k in ("size", "d_scales", "rl_iterations"):
            _positive(f"galaxy.{k}", getattr(self, k))
        _unet_shape("galaxy", self.size, self.widths, self.d_widths)
        _at_least("galaxy.noise_channels", self.noise_channels, 0)
        _in_range("galaxy.dropout", self.dropout, 0, 1)
        for k in ("stretch_soft", "wiener_balance"):
            _in_range(f"galaxy.{k}", getattr(self, k), 0, math.inf, low_open=True)
        _in_range("galaxy.stretch_max", self.stretch_max, self.stretch_soft, math.inf, low_open=True)


@dataclass(frozen=True)
class Config:
    workload: str = "lhc"  # crf | lhc | lhc-fastsim | galaxy
    seed: int = 1234  # base seed: shuffles, init, noise
    backend: str = "auto"  # auto | horovod | torch | local
    device: str = "auto"  # auto | cpu | cuda
    run_dir: str = "runs/default"  # outputs: config, metrics, TensorBoard, figures, checkpoints
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    crf: CRFConfig = field(default_factory=CRFConfig)
    lhc: LHCConfig = field(default_factory=LHCConfig)
    galaxy: GalaxyConfig = field(default_factory=GalaxyConfig)

    def __post_init__(self) -> None:
        _choice("workload", self.workload, ("crf", "lhc", "lhc-fastsim", "galaxy"))
        _choice("backend", self.backend, ("auto", "horovod", "torch", "local"))
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        _at_least("seed", self.seed, 0)
        if self.seed >= SEED_LIMIT:  # the reader seeds numpy with seed & 0xFFFFFFFF: larger seeds would alias
            raise UserError(f"config key seed: expected an integer in [0, {SEED_LIMIT}), got {self.seed!r}")

    def global_batch(self, world_size: int) -> int:
        return self.train.batch_size * self.train.accumulation * world_size

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


# --- loading ----------------------------------------------------------------

def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not p.is_file():
            raise UserError(f"config file {name_or_path}: not found")
        return p
    p = PRESET_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        raise UserError(f"config {name_or_path!r}: no such preset (expected one of {', '.join(preset_names())} or a .yaml path)")
    return p


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise UserError(f"config file {path}: 'base' chain loops")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: expected a mapping at top level, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    return _merge(_read_yaml(_resolve_base(str(base), path), seen + (path,)), data)


def _resolve_base(base: str, child: Path) -> Path:
    """`base:` names a YAML file relative to the file that names it, else a sibling preset, else a shipped one."""
    p = Path(base)
    if p.suffix in (".yaml", ".yml") or os.sep in base:
        p = p if p.is_absolute() else child.parent / p
        if not p.is_file():
            raise UserError(f"config file {child}: base {base!r} not found (looked for {p})")
        return p
    sibling = child.parent / f"{base}.yaml"
    if sibling.is_file():
        return sibling
    try:
        return resolve_preset(base)
    except UserError as e:
        raise UserError(f"config file {child}: base {base!r}: {e}") from None


def _merge(a: dict, b: Mapping) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UserError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(name_or_path: str | None = None, overrides: Sequence[str] = ()) -> Config:
    """Preset (or defaults) + overrides -> validated frozen Config."""
    data: dict = _read_yaml(resolve_preset(name_or_path)) if name_or_path else {}
    return config_from_mapping(data, overrides)


def config_from_mapping(data: Mapping, overrides: Sequence[str] = ()) -> Config:
    """A config mapping (a saved config, a checkpoint's) + dotted overrides -> validated frozen Config."""
    data = copy.deepcopy(dict(data))
    for ov in overrides:
        keys, value = parse_override(ov)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UserError(f"override {ov!r}: {k} is not a section")
        node[keys[-1]] = value
    return from_dict(Config, data)


def from_dict(cls: type, data: Mapping, prefix: str = "") -> Any:
    if not isinstance(data, Mapping):
        raise UserError(f"config key {prefix.rstrip('.') or '<top>'}: expected a section (mapping), got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for k in data:
        if k not in known:
            raise UserError(f"config key {prefix}{k}: unknown (known keys: {', '.join(sorted(known))})")
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = _coerce(f"{prefix}{f.name}", hints[f.name], data[f.name])
        if isinstance(value, tuple) and isinstance(f.default, tuple) and f.default:  # items typed like the default's
            value = tuple(_coerce(f"{prefix}{f.name}[{i}]", type(f.default[0]), x) for i, x in enumerate(value))
        kwargs[f.name] = value
    return cls(**kwargs)


def _coerce(key: str, typ: Any, value: Any) -> Any:
    if dataclasses.is_dataclass(typ):
        return from_dict(typ, value, prefix=key + ".")
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, bool):  # YAML 1.1 reads off/on/yes/no as booleans: train.amp=off
            return "on" if value else "off"
        if isinstance(value, (str, int, float)):
            return str(value)
    elif typ is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(value)
    else:
        return value
    raise UserError(f"config key {key}: expected {typ.__name__}, got {value!r}")


def _choice(key: str, value: str, options: Sequence[str]) -> None:
    if value not in options:
        raise UserError(f"config key {key}: expected one of {', '.join(options)}, got {value!r}")


def _unet_shape(section: str, size: int, widths: Sequence[int], d_widths: Sequence[int]) -> None:
    """U-Net/PatchGAN widths are positive integers, and the image size halves cleanly at every level."""
    if not widths or not d_widths or any(not isinstance(w, int) or w < 1 for w in (*widths, *d_widths)):
        raise UserError(f"config key {section}.widths/{section}.d_widths: expected non-empty lists of positive "
                        f"integers, got {list(widths)} / {list(d_widths)}")
    if size % 2 ** (len(widths) - 1):
        raise UserError(f"config key {section}.size: {size} is not divisible by 2^(levels-1) = "
                        f"{2 ** (len(widths) - 1)} for {len(widths)} U-Net levels ({section}.widths)")


def _positive(key: str, value: int) -> None:
    if value < 1:
        raise UserError(f"config key {key}: expected a positive integer, got {value!r}")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise UserError(f"config key {key}: expected an integer >= {low}, got {value!r}")


def _in_range(key: str, value: float, low: float, high: float, low_open: bool = False,
              high_open: bool = True) -> None:
    """A finite number in [low, high) by default (NaN and Inf fail here, not later inside torch.optim)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    above = number and (value > low if low_open else value >= low)
    below = number and (value < high if high_open else value <= high)
    if not (above and below):
        if high == math.inf:
            expected = f"a finite number {'>' if low_open else '>='} {low:g}"
        else:
            expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UserError(f"config key {key}: expected {expected}, got {value!r}")


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
