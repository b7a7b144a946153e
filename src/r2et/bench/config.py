"""Benchmark configuration: defaults, TOML files and command-line overrides, resolved to JSON."""

from __future__ import annotations

import copy
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Attack budget (l_inf radius) per modality when a dataset sets none: standardised tabular
#: features get 0.3 (the paper's scale), [0, 1] images and one-hot graph features get 0.1.
DEFAULT_EPS = {"tabular": 0.3, "image": 0.1, "graph": 0.1}

#: The paper's sweep of the regulariser weight.
PAPER_WEIGHTS = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]

#: The main job: embedded data, five methods, one seed, a few minutes on two CPU cores.
DEFAULT_DATASETS = ["breast-cancer", "digits"]
DEFAULT_METHODS = ["vanilla", "sp", "est-h", "r2et", "r2et-mm"]

_SECTIONS = ("pretrain", "finetune", "evaluate")


@dataclass
class BenchConfig:
    """Everything a benchmark run depends on; saved as ``config.json`` next to the results.

    ``grid`` maps a method to the values of its main weight (``TrainingMethod.weight_name``);
    a method without an entry runs once with its defaults. ``datasets_options`` maps a dataset
    to overrides: ``eps`` (attack budget), ``k``, ``model`` (a model spec), ``load`` (keyword
    arguments of ``load_dataset``), and ``pretrain``/``finetune``/``evaluate`` tables that
    update the global ones for that dataset. ``evaluate``: ``n`` test inputs per cell,
    ``preset`` of the :class:`~r2et.EnsembleAttack` whose P@k is the reported stability,
    ``box`` (attacks stay inside the data's valid box), ``steps`` of the paper's ERAttack and
    MSEAttack (reported beside it), ``budgets`` (multiples of eps for the P@k-versus-budget
    curve, measured with the ``budget_preset`` ensemble). Selection rule
    (:func:`~r2et.bench.report.selection_rule_text`): per dataset and method, among the
    settings whose mean validation accuracy is within ``max_acc_drop`` of vanilla's and whose
    mean deletion gain is at least ``min_deletion_ratio`` times vanilla's (None: no
    faithfulness condition), the one with the best ensemble P@k.
    """

    datasets: list[str] = field(default_factory=lambda: list(DEFAULT_DATASETS))
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    seeds: list[int] = field(default_factory=lambda: [0])
    grid: dict[str, list[float]] = field(default_factory=dict)
    pretrain: dict[str, Any] = field(
        default_factory=lambda: {"epochs": 30, "lr": 2e-3, "batch_size": 64}
    )
    finetune: dict[str, Any] = field(
        default_factory=lambda: {"epochs": 5, "lr": 1e-3, "batch_size": 64}
    )
    evaluate: dict[str, Any] = field(
        default_factory=lambda: {
            "n": 300,
            "steps": 50,
            "preset": "standard",
            "box": True,
            "budgets": [0.25, 0.5, 1.0],
            "budget_preset": "fast",
            "thickness_samples": 8,
            "thickness_steps": 8,
        }
    )
    datasets_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_acc_drop: float = 0.02
    min_deletion_ratio: float | None = 0.9
    device: str | None = None
    threads: int | None = None
    save_models: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        """Build from a (possibly partial) dict; unknown keys raise ``ValueError``."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown benchmark setting(s) {unknown}; allowed: {sorted(known)}")
        cfg = cls()
        for key, val in data.items():
            if key in _SECTIONS:
                merged = dict(getattr(cfg, key))
                merged.update(val)
                setattr(cfg, key, merged)
            else:
                setattr(cfg, key, copy.deepcopy(val))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check names, seeds and numbers; raise ``ValueError`` naming the bad setting."""
        from r2et.data import list_datasets
        from r2et.methods import list_methods

        for name in self.datasets:
            if name not in list_datasets():
                raise ValueError(f"unknown dataset {name!r}; allowed: {list_datasets()}")
        for name in self.methods:
            if name not in list_methods():
                raise ValueError(f"unknown method {name!r}; allowed: {list_methods()}")
        for name in self.grid:
            if name not in self.methods:
                raise ValueError(
                    f"grid names method {name!r}, which is not in methods {self.methods}"
                )
        if not self.datasets or not self.methods or not self.seeds:
            raise ValueError("datasets, methods and seeds must each name at least one value")
        if "vanilla" not in self.methods:
            raise ValueError("methods must include 'vanilla' (the selection rule compares to it)")
        if any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds):
            raise ValueError(f"seeds must be integers, got {self.seeds}")
        if not 0 <= float(self.max_acc_drop) <= 1:
            raise ValueError(f"max_acc_drop must lie in [0, 1], got {self.max_acc_drop}")
        if self.min_deletion_ratio is not None and not 0 <= float(self.min_deletion_ratio) <= 1:
            raise ValueError(
                f"min_deletion_ratio must be None or lie in [0, 1], got {self.min_deletion_ratio}"
            )
        from r2et.attacks import list_presets

        for key in ("preset", "budget_preset"):
            if self.evaluate.get(key, "standard") not in list_presets():
                raise ValueError(
                    f"evaluate.{key}={self.evaluate.get(key)!r} is not a preset; "
                    f"allowed: {list_presets()}"
                )
        if self.evaluate.get("box", True) not in (True, False):
            raise ValueError(f"evaluate.box must be true or false, got {self.evaluate['box']!r}")
        for sec in ("pretrain", "finetune"):
            if int(getattr(self, sec).get("epochs", 1)) < 0:
                raise ValueError(f"{sec}.epochs must be >= 0")
        if int(self.evaluate.get("steps", 1)) < 1 or int(self.evaluate.get("n", 1)) < 1:
            raise ValueError("evaluate.steps and evaluate.n must be >= 1")


def load_config(path: str | Path | None = None, **overrides: Any) -> BenchConfig:
    """Defaults, updated by a TOML file (top-level keys as in :class:`BenchConfig`, sections
    ``[pretrain]``, ``[finetune]``, ``[evaluate]``, ``[grid]``, ``[datasets_options.NAME]``),
    then by ``overrides`` whose value is not None (command-line flags)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"benchmark config {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path} is not valid TOML: {err}") from None
    for key, val in overrides.items():
        if val is None:
            continue
        if key in _SECTIONS:
            data[key] = {**data.get(key, {}), **val}
        else:
            data[key] = val
    return BenchConfig.from_dict(data)


def parse_list(text: str, kind: type = str, name: str = "value") -> list[Any]:
    """Split a comma-separated flag value (``"adult,compas"``, ``"0,1,2"``) into typed items."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ValueError(
            f"{name}={text!r} is not a comma-separated list of {kind.__name__} values"
        ) from None
