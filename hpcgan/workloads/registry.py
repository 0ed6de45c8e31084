"""Name -> Workload. A workload supplies models, data transforms and metrics; the trainer does the rest.

Conventions every workload follows:
- G(cond) -> fake in model space (noise, if any, is drawn inside G from torch's RNG);
- D(cond, x) -> list of logit tensors (one per scale; a single-scale D returns a one-element list);
- `prepare` maps a reader batch (float32 CPU tensors in file units) to model space on the device,
  `to_data_units` maps generated model-space tensors back to file units.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np

import torch
from torch import nn

from hpcgan.config import Config
from hpcgan.errors import UserError
from hpcgan.workloads.evaluation import EvalStats, merge_examples, take_examples
from hpcgan.workloads.masks import valid_mean
from hpcgan.workloads.precision import Precision


class Workload(ABC):
    name: str = ""
    convnet: bool = False  # channels_last and cudnn.benchmark help fixed-shape convnets on GPU
    precision: Precision = Precision()  # what may run in bf16/fp16 and what stays fp32 (workloads/precision.py)

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @abstractmethod
    def build_generator(self) -> nn.Module: ...

    @abstractmethod
    def build_discriminator(self) -> nn.Module: ...

    @abstractmethod
    def prepare(self, inputs: torch.Tensor, targets: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Reader batch (file units) -> (cond, real) in model space on `device`."""

    @abstractmethod
    def to_data_units(self, fake: torch.Tensor) -> torch.Tensor:
        """Generated model-space tensor -> target in file units (for `hpcgan generate`)."""

    def likelihood_loss(self, G: nn.Module, cond: torch.Tensor, real: torch.Tensor) -> torch.Tensor | None:
        """A term of the generator's loss fitted by maximum likelihood, beside the adversarial one (None: none).

        For a part of G's output that the data determine better than a discriminator can, e.g. the fast
        simulation's track-finding efficiency, a Bernoulli probability per particle."""
        return None

    def likelihood_parameters(self, G: nn.Module) -> list[nn.Parameter]:
        """The parameters of G that only likelihood_loss trains (no adversarial gradient reaches them), which
        train.lr_likelihood puts in an optimizer group of their own. Default: none."""
        return []

    # The validation metric that picks checkpoints/best.pt and its direction ("min" or "max"); None: no
    # selection (the newest checkpoint is the one evaluated).
    selection: tuple[str, str] | None = ("l1", "min")

    def validation_sums(self, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                        valid: torch.Tensor | None = None) -> dict[str, np.ndarray]:
        """Sums over the batch's samples of additive statistics (float64 scalars or arrays). The trainer adds
        them over batches and ranks and validation_finish turns the totals into metrics: sums, not means of
        per-batch or per-rank means, so short batches and uneven shares weigh every sample once and any rank
        count gives a 1-rank evaluation's numbers. `valid`: the batch's pixel mask (workloads/masks.py), passed
        only when the data have one; each sample's L1/MSE is then its mean over the valid pixels."""
        diff = fake.detach().double() - real.detach().double()
        return {"l1": batch_sum(valid_mean(diff.abs(), valid, per_sample=True)),
                "mse": batch_sum(valid_mean(diff.pow(2), valid, per_sample=True))}

    def validation_finish(self, sums: dict[str, np.ndarray], count: int) -> dict[str, float]:
        """Metrics from the totals of validation_sums over `count` samples (default: per-sample means)."""
        return {k: float(v) / count for k, v in sums.items()}

    def validation_metrics(self, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                           valid: torch.Tensor | None = None) -> dict[str, float]:
        """The metrics of one batch."""
        masked = {} if valid is None else {"valid": valid}
        return self.validation_finish(self.validation_sums(cond, real, fake, **masked), len(real))

    def write_figures(self, out_dir: Path, tag: str, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                      tb_writer=None, step: int = 0) -> None:
        """Sample figures for one validation batch (rank 0 only). Optional."""

    # Science evaluation on held-out data, streamed (workloads/evaluation.py): every rank turns each batch
    # it generated into EvalStats; rank 0 merges them and finishes. Arrays are in file units; `real` is the
    # dataset's target, `fake` the generator's, `meta` the batch's meta/ arrays.
    eval_examples: int = 4  # full-size samples (the first, by index) that reach rank 0 for the figures

    def evaluation_batch(self, inputs: np.ndarray, real: np.ndarray, fake: np.ndarray, meta: dict) -> EvalStats:
        """What one batch contributes. Default: the samples themselves as rows, for workloads whose samples
        are a few numbers each (an LHC track); image workloads return per-sample scores and sums instead."""
        return EvalStats(rows={"inputs": np.asarray(inputs), "real": np.asarray(real), "fake": np.asarray(fake),
                               **{f"meta/{k}": np.asarray(v) for k, v in meta.items()}})

    @abstractmethod
    def evaluation_finish(self, stats: EvalStats, examples: dict, out_dir: Path) -> dict:
        """Rank 0: the merged stats of every sample and the first `eval_examples` samples (dict with inputs,
        real, fake, meta) -> figures + JSON under out_dir; returns the summary numbers."""

    def evaluate(self, inputs: np.ndarray, real: np.ndarray, fake: np.ndarray, meta: dict, out_dir: Path) -> dict:
        """The whole evaluation of arrays held in memory: one batch, then finish (what the streamed path
        computes for any split of the same samples)."""
        stats = self.evaluation_batch(inputs, real, fake, meta)
        examples = take_examples(np.asarray(inputs), np.asarray(real), np.asarray(fake),
                                 {k: np.asarray(v) for k, v in (meta or {}).items()}, 0, self.eval_examples)
        return self.evaluation_finish(stats, merge_examples([examples]), out_dir)

    def summary_table(self, summary: dict) -> str:
        """The evaluation's headline numbers as text, printed by `hpcgan evaluate` (default: the scalar entries
        of the summary and of its dicts one level down)."""
        lines = [f"{self.name} evaluation"]
        for key, value in summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                lines.append(f"  {key:<32}{value:.6g}")
            elif isinstance(value, dict):
                scalars = {k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                lines += [f"  {key + '.' + str(k):<32}{v:.6g}" for k, v in scalars.items()]
        return "\n".join(lines)

    def check_dataset(self, attrs: dict, path: str) -> None:
        """Raise UserError when a dataset does not fit this workload (wrong workload, shapes, layers)."""
        if attrs.get("workload") not in (None, self.name):
            raise UserError(f"{path}: dataset is for workload {attrs.get('workload')!r}, expected {self.name!r}")


def batch_sum(per_sample: torch.Tensor) -> np.ndarray:
    """Sum over the batch dimension as a float64 numpy value (what validation_sums returns)."""
    return per_sample.double().sum(0).cpu().numpy()


# The workload packages; importing one registers its workloads, generators and converters.
PACKAGES = ("hpcgan.workloads.crf", "hpcgan.workloads.lhc", "hpcgan.workloads.galaxy")

_REGISTRY: dict[str, Callable[[Config], Workload]] = {}
_GENERATORS: dict[str, ModuleType] = {}  # workload name -> synthetic generator module: schema(**opts), generate(...)
_CONVERTERS: dict[str, ModuleType] = {}  # real-data format name -> converter module: convert(src, out, **opts)


def register(name: str, generator: ModuleType | None = None,
             converters: dict[str, ModuleType] | None = None) -> Callable:
    """Class decorator: the Workload for `name`, with its synthetic generator and its converters from real formats
    (what `hpcgan data synth NAME` and `hpcgan data convert FORMAT` run)."""
    def deco(cls):
        _REGISTRY[name] = cls
        cls.name = name
        if generator is not None:
            _GENERATORS[name] = generator
        _CONVERTERS.update(converters or {})
        return cls
    return deco


def _load_all() -> None:
    for package in PACKAGES:
        importlib.import_module(package)


def workload_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_workload(cfg: Config) -> Workload:
    if cfg.workload not in _REGISTRY:
        _load_all()
    if cfg.workload not in _REGISTRY:
        raise UserError(f"config key workload: {cfg.workload!r} is not available (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[cfg.workload](cfg)


def generator(name: str) -> ModuleType:
    """The synthetic data generator of workload `name`."""
    _load_all()
    if name not in _GENERATORS:
        raise UserError(f"workload {name!r} has no synthetic generator (known: {', '.join(sorted(_GENERATORS))})")
    return _GENERATORS[name]


def converter(fmt: str) -> ModuleType:
    """The converter from the real data format `fmt`."""
    _load_all()
    if fmt not in _CONVERTERS:
        raise UserError(f"data format {fmt!r} has no converter (known: {', '.join(sorted(_CONVERTERS))})")
    return _CONVERTERS[fmt]


def converter_names() -> list[str]:
    _load_all()
    return sorted(_CONVERTERS)
