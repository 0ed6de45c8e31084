"""A trained generator outside hpcgan's trainer: safetensors weights plus the config that builds the model.

`hpcgan export RUN --out G.safetensors` writes G.safetensors (tensors only: nothing in it can run code) and
G.json beside it ({"workload", "config", "weights", "checkpoint", "global_step"}). Loading needs the
workload's model code and nothing of the trainer:

    from hpcgan.workloads.exported import load_exported
    G, cfg = load_exported("G.safetensors")   # an nn.Module in eval mode, and its Config
    fake = G(cond)                            # cond in model space: cfg's workload.prepare(inputs, targets)
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from hpcgan.config import Config, config_from_mapping
from hpcgan.errors import UserError
from hpcgan.workloads.registry import get_workload


def config_path(weights: str | Path) -> Path:
    """G.safetensors -> G.json."""
    return Path(weights).with_suffix(".json")


def save_exported(state_dict: dict[str, torch.Tensor], record: dict, out: str | Path) -> tuple[Path, Path]:
    """Write the weights and their config record (each to a temporary name, then renamed)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}  # no shared storage
    tmp = out.with_name(f".{out.name}.tmp")
    save_file(tensors, str(tmp), metadata={"workload": str(record["workload"]), "weights": str(record["weights"])})
    tmp.replace(out)
    meta, meta_tmp = config_path(out), config_path(out).with_name(f".{config_path(out).name}.tmp")
    meta_tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    meta_tmp.replace(meta)
    return out, meta


def load_exported(weights: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """The generator of an export (eval mode, on `device`) and the config it was trained with."""
    from safetensors.torch import load_file

    weights = Path(weights)
    meta = config_path(weights)
    try:
        record = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{meta}: cannot read the export's config ({e}); expected the G.json written beside "
                        f"{weights.name} by `hpcgan export`") from None
    cfg = config_from_mapping(record["config"])
    G = get_workload(cfg).build_generator()
    G.load_state_dict(load_file(str(weights), device="cpu"))
    return G.to(device).eval(), cfg
