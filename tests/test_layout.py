"""The layout contract: hpcgan/data/ is what every workload shares; a workload's generator and converters are
found through the registry, never by building a module name from a string."""
import ast
from pathlib import Path

import pytest

from hpcgan.errors import UserError
from hpcgan.workloads import registry

ROOT = Path(__file__).resolve().parents[1] / "hpcgan"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_data_layer_imports_no_workload_and_holds_no_workload_module():
    for path in (ROOT / "data").glob("*.py"):
        assert not any(n.startswith("hpcgan.workloads") for n in _imports(path)), path
        assert not path.stem.startswith(("synth_", "convert_")), f"{path}: workload-specific module in data/"


def test_registry_serves_every_generator_and_converter():
    assert set(registry.workload_names()) == {"crf", "lhc", "lhc-fastsim", "galaxy"}
    for name in registry.workload_names():
        gen = registry.generator(name)
        assert gen.__name__.startswith("hpcgan.workloads.") and callable(gen.generate) and callable(gen.schema)
    assert registry.converter_names() == ["crf-npz", "galaxy-fits", "trackml"]
    for fmt in registry.converter_names():
        assert callable(registry.converter(fmt).convert)


def test_unknown_generator_or_converter_is_one_clear_error():
    with pytest.raises(UserError, match="'jets' has no synthetic generator.*known: crf"):
        registry.generator("jets")
    with pytest.raises(UserError, match="'hdf4' has no converter.*known: crf-npz"):
        registry.converter("hdf4")


def test_sweep_modules_do_not_import_each_other_both_ways():
    sweep, optuna = _imports(ROOT / "train" / "sweep.py"), _imports(ROOT / "train" / "sweep_optuna.py")
    assert "hpcgan.train.sweep" in optuna
    assert "hpcgan.train.sweep_optuna" not in sweep, "sweep.py imports sweep_optuna: a cycle"


def test_default_summary_table_shows_scalars_one_level_down():
    from hpcgan.config import load_config

    wl = registry.get_workload(load_config("crf-small"))
    text = wl.summary_table({"l1": 0.25, "spectral_distance": {"gray": 0.5}, "figures": {"a": "x.png"}})
    assert "l1" in text and "0.25" in text and "spectral_distance.gray" in text and "x.png" not in text
