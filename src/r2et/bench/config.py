"""Benchmark configuration: defaults, TOML files and command-line overrides, resolved to JSON."""

from __future__ import annotations

import copy
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from r2et._checks import check_device, check_number
from r2et.data.base import DEFAULT_EPS  # noqa: F401 - moved to the dataset; alias

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Attack budget (l_inf radius) per modality when a dataset sets none: standardised tabular
#: features get 0.3 (the paper's scale), [0, 1] images and one-hot graph features get 0.1.

#: The paper's sweep of the regulariser weight.
PAPER_WEIGHTS = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]

#: The main job: embedded data, five methods, one seed, a few minutes on two CPU cores.
DEFAULT_DATASETS = ["breast-cancer", "digits"]
#: The settings of the selection rule: applied to stored cells, they never change a cell.
SELECTION_KEYS = ("max_acc_drop", "min_deletion_ratio", "min_distinct_ratio", "require_faithful")
DEFAULT_METHODS = ["vanilla", "sp", "est-h", "r2et", "r2et-mm"]
#: The attacks every cell is evaluated with when ``[evaluate] attacks`` is not set: the reported
#: ensemble and the paper's two PGD attacks (registered names, :func:`r2et.attacks.list_attacks`).
BENCH_ATTACKS = ("ensemble", "erattack", "mse")

_SECTIONS = ("pretrain", "finetune", "evaluate")


@dataclass
class BenchConfig:
    """Everything a benchmark run depends on; saved as ``config.json`` next to the results.

    ``grid`` maps a method to the values of its main weight (``TrainingMethod.weight_name``);
    a method without an entry runs once with its defaults. ``datasets_options`` maps a dataset
    to overrides: ``eps`` (attack budget), ``k``, ``model`` (a model spec), ``load`` (keyword
    arguments of ``load_dataset``), ``params`` (method name -> hyperparameters of
    ``get_method`` for that dataset, e.g. an ``h`` or ``at_eps`` on the scale of its ``eps``),
    and ``pretrain``/``finetune``/``evaluate`` tables that update the global ones for that
    dataset. ``evaluate``: ``n`` test inputs per cell,
    ``preset`` of the :class:`~r2et.EnsembleAttack` whose P@k is the reported stability,
    ``box`` (attacks stay inside the data's valid box), ``steps`` of the paper's ERAttack and
    MSEAttack (reported beside it), ``budgets`` (multiples of eps for the P@k-versus-budget
    curve, measured with the ``budget_preset`` ensemble), ``explainer`` (optional, default
    ``"auto"``: the registered explainer every method trains on and is scored with; auto is
    the dataset's, ``ds.default_explainer``: ``"grad_x_input"`` on a table with categorical
    attributes, else ``"grad"``), ``groups`` (optional, default ``"auto"``, the dataset's
    explanation's unit: the attributes of a table with categorical attributes; true: rank the
    dataset's attribute groups, ``ds.groups``; false: single columns; in training and
    evaluation alike; ``k`` counts the ranked units), ``explainers`` (optional: other
    explainers, e.g. ``["smoothgrad", "ig", "grad_x_input"]``, each attacked through itself by
    the same ensemble on the first ``explainer_n`` inputs: explainer generalisation),
    ``attacks`` (optional, default :data:`BENCH_ATTACKS`: the registered attacks, see
    :func:`r2et.attacks.list_attacks`, each cell is evaluated with, ``"ensemble"`` among them;
    each reports ``<name>_p_at_k_mean`` and its other measures). Selection rule
    (:func:`~r2et.bench.report.selection_rule_text`): per dataset and method, among the
    settings whose mean validation accuracy is within ``max_acc_drop`` of vanilla's, whose
    deletion gain is faithful and, when ``min_distinct_ratio`` is set (default 0.5), whose mean
    number of distinct top-k sets is at least that fraction of vanilla's (a locality condition
    that rejects constant explanations), the one with the best ensemble P@k. Faithful, with
    ``require_faithful`` (default): every seed's deletion gain is distinguishable from 0 (the
    lower end of its 95% interval above 0) and, when vanilla's mean gain is positive, the mean
    gain is at least ``min_deletion_ratio`` (default 0.9; None: no ratio) times vanilla's;
    vanilla itself fails the rule when its own gain is not above 0 (it is reported, marked).
    Without it (the rule of earlier versions): a mean gain at least ``min_deletion_ratio`` times
    vanilla's (vanilla's minus that fraction of its size when negative; None: no condition).
    The rule is applied to stored
    cells when the report is written: changing it and rerunning with ``--resume`` re-selects
    without recomputing anything (:data:`SELECTION_KEYS` do not enter the cells' digest).
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
    min_distinct_ratio: float | None = 0.5
    require_faithful: bool = True
    device: str | None = None
    threads: int | None = None
    save_models: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return copy.deepcopy(asdict(self))

    @classmethod
    def coerce(cls, cfg: BenchConfig | dict[str, Any]) -> BenchConfig:
        """``cfg`` itself, or the configuration its JSON form (:meth:`to_dict`: what crosses
        process and machine boundaries to workers) describes."""
        return cfg if isinstance(cfg, BenchConfig) else cls.from_dict(cfg)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        """Build from a (possibly partial) dict; unknown keys, values of the wrong type or
        outside their range raise ``ValueError`` naming the setting."""
        if not isinstance(data, dict):
            raise ValueError(f"a benchmark config must be a table, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown benchmark setting(s) {unknown}; allowed: {sorted(known)}")
        cfg = cls()
        for key, val in data.items():
            if key in _SECTIONS:
                _check_section(key, val)
                merged = dict(getattr(cfg, key))
                merged.update(val)
                setattr(cfg, key, merged)
            else:
                setattr(cfg, key, copy.deepcopy(val))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check every setting's type and range, and every name; raise ``ValueError`` naming
        the bad setting and what is allowed. (What needs the data, such as ``k`` against the
        number of features or the model's size, is checked by
        :func:`r2et.bench.runner.check_grid` before anything is trained.)"""
        from r2et.data import list_datasets
        from r2et.methods import list_methods, method_row

        _check_names("datasets", self.datasets, list_datasets())
        _check_names("methods", self.methods, list_methods())
        if "vanilla" not in self.methods:
            raise ValueError("methods must include 'vanilla' (the selection rule compares to it)")
        if not isinstance(self.seeds, list) or not self.seeds:
            raise ValueError(f"seeds must be a non-empty list of ints, got {self.seeds!r}")
        for s in self.seeds:
            check_number("seeds", s, 0, MAX_SEED, integer=True)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must not repeat, got {self.seeds}")
        if not isinstance(self.grid, dict):
            raise ValueError(f"grid must be a table method = [weights], got {self.grid!r}")
        for name, values in self.grid.items():
            if name not in self.methods:
                raise ValueError(
                    f"grid names method {name!r}, which is not in methods {self.methods}"
                )
            if method_row(name).weight_name is None:
                raise ValueError(f"grid names method {name!r}, which has no weight to sweep")
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.{name} must be a non-empty list of weights, got {values!r}")
            for v in values:
                check_number(f"grid.{name}", v, 0)
            if len(set(float(v) for v in values)) != len(values):
                raise ValueError(f"grid.{name} must not repeat a weight, got {values}")
        for sec in _SECTIONS:
            _check_section(sec, getattr(self, sec), complete=True)
        anchored = [m for m in self.methods if method_row(m).needs_anchor]
        if anchored and int(self.pretrain["epochs"]) == 0:
            raise ValueError(
                f"methods {anchored} keep the ranking of the pre-trained model: "
                "pretrain.epochs must be > 0"
            )
        if not isinstance(self.datasets_options, dict):
            raise ValueError("datasets_options must be a table of [datasets_options.NAME] tables")
        for name, opts in self.datasets_options.items():
            if name not in list_datasets():
                raise ValueError(
                    f"datasets_options names unknown dataset {name!r}; allowed: {list_datasets()}"
                )
            _check_dataset_options(name, opts, self.methods)
        check_number("max_acc_drop", self.max_acc_drop, 0, 1)
        for key in ("min_deletion_ratio", "min_distinct_ratio"):  # optional rule conditions
            value = getattr(self, key)
            if value is None:
                continue
            try:
                check_number(key, value, 0, 1)
            except ValueError:
                raise ValueError(f"{key} must be None or lie in [0, 1], got {value!r}") from None
        if not isinstance(self.require_faithful, bool):
            raise ValueError(
                f"require_faithful must be true or false, got {self.require_faithful!r}"
            )
        if self.device is not None:
            check_device("device", self.device)
        if self.threads is not None:
            check_number("threads", self.threads, 1, MAX_THREADS, integer=True)
        if not isinstance(self.save_models, bool):
            raise ValueError(f"save_models must be true or false, got {self.save_models!r}")


#: Limits of the numeric settings (beyond them a run would not finish or not fit in memory).
MAX_SEED = 2**32 - 1
MAX_THREADS = 1024
_INT_LIMITS = {
    "epochs": (0, 100_000),
    "batch_size": (1, 10_000_000),
    "n": (1, 100_000_000),
    "steps": (1, 1_000_000),
    "thickness_samples": (1, 10_000),
    "thickness_steps": (1, 10_000),
    "explainer_n": (1, 100_000_000),
}
_SECTION_KEYS = {
    "pretrain": ("epochs", "lr", "batch_size"),
    "finetune": ("epochs", "lr", "batch_size"),
    "evaluate": (
        "n",
        "steps",
        "preset",
        "box",
        "budgets",
        "budget_preset",
        "thickness_samples",
        "thickness_steps",
        "certify",
        "explainer",
        "groups",
        "explainers",
        "explainer_n",
        "attacks",
    ),
}
_DATASET_OPTION_KEYS = ("eps", "k", "model", "load", "params", *_SECTIONS)
#: Section keys that a complete configuration may leave out.
_OPTIONAL_KEYS = frozenset(
    {"certify", "explainer", "groups", "explainers", "explainer_n", "attacks"}
)


def _check_names(key: str, names: Any, allowed: list[str]) -> None:
    """A non-empty list of distinct known names."""
    if not isinstance(names, list) or not names:
        raise ValueError(f"{key} must be a non-empty list of names; allowed: {allowed}")
    for name in names:
        if name not in allowed:
            kind = key.rstrip("s")
            raise ValueError(f"unknown {kind} {name!r}; allowed: {allowed}")
    if len(set(names)) != len(names):
        raise ValueError(f"{key} must not repeat a name, got {names}")


def _check_section(sec: str, table: Any, complete: bool = False, where: str = "") -> None:
    """One ``[pretrain]``/``[finetune]``/``[evaluate]`` table: a table, known keys, each value
    of its type and range (``complete``: every key present)."""
    from r2et.attacks import list_presets

    label = f"{where}{sec}"
    if not isinstance(table, dict):
        raise ValueError(f"[{label}] must be a table, got {type(table).__name__} {table!r}")
    allowed = _SECTION_KEYS[sec]
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in [{label}]; allowed: {list(allowed)}")
    if complete:
        absent = [k for k in allowed if k not in table and k not in _OPTIONAL_KEYS]
        if absent:
            raise ValueError(f"[{label}] lacks {absent}")
    for key, val in table.items():
        name = f"{label}.{key}"
        if key in _INT_LIMITS:
            check_number(name, val, *_INT_LIMITS[key], integer=True)
        elif key == "lr":
            check_number(name, val, 0, 10, low_open=True)
        elif key in ("preset", "budget_preset"):
            if val not in list_presets():
                raise ValueError(f"{name}={val!r} is not a preset; allowed: {list_presets()}")
        elif key == "groups" and val == "auto":
            pass  # the dataset's explanation's unit (ranked_units)
        elif key in ("box", "groups"):
            if not isinstance(val, bool):
                raise ValueError(f"{name} must be true or false, got {val!r}")
        elif key == "budgets":
            if not isinstance(val, list):
                raise ValueError(f"{name} must be a list of budget multipliers, got {val!r}")
            for b in val:
                check_number(name, b, 0, 1000, low_open=True)
            if len(set(float(b) for b in val)) != len(val):
                raise ValueError(f"{name} must not repeat a multiplier, got {val}")
        elif key == "explainer":  # the explanation every method trains and is scored on
            from r2et.explain import list_explainers

            if val != "auto" and val not in list_explainers():
                raise ValueError(
                    f"{name}={val!r} is not an explainer; allowed: auto (the dataset's), "
                    f"{list_explainers()}"
                )
        elif key == "explainers":  # explainer generalisation: other saliency methods
            from r2et.explain import list_explainers

            main = table.get("explainer", "auto")  # auto: the dataset's rule is skipped per cell
            others = [e for e in list_explainers() if e != main]
            if not isinstance(val, list) or len(set(val)) != len(val):
                raise ValueError(f"{name} must be a list of distinct explainers from {others}")
            for e in val:
                if e not in others:
                    raise ValueError(f"{name}: {e!r} is not one of {others}")
        elif key == "attacks":  # the registered attacks every cell is evaluated with
            from r2et.attacks import list_attacks

            known = list_attacks()
            if (
                not isinstance(val, list)
                or not val
                or len(set(map(str, val))) != len(val)
                or any(a not in known for a in val)
                or "ensemble" not in val
            ):
                raise ValueError(
                    f"{name} must be a list of distinct registered attacks including 'ensemble' "
                    f"(its P@k is the reported stability), got {val!r}; allowed: {known}"
                )
        elif key == "certify":  # {name: {method = "deterministic"|"smoothed", ...}}
            from r2et.certify import METHODS

            if not isinstance(val, dict) or not all(
                isinstance(v, dict) and v.get("method") in METHODS for v in val.values()
            ):
                raise ValueError(
                    f"{name} must map names to tables with method = one of {list(METHODS)}"
                )


def _check_dataset_options(name: str, opts: Any, methods: list[str]) -> None:
    """One ``[datasets_options.NAME]`` table."""
    from r2et.methods import list_methods

    where = f"datasets_options.{name}"
    if not isinstance(opts, dict):
        raise ValueError(f"[{where}] must be a table, got {type(opts).__name__} {opts!r}")
    unknown = sorted(set(opts) - set(_DATASET_OPTION_KEYS))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in [{where}]; allowed: {list(_DATASET_OPTION_KEYS)}"
        )
    if "eps" in opts:
        check_number(f"{where}.eps", opts["eps"], 0, 1e6, low_open=True)
    if "k" in opts:
        check_number(f"{where}.k", opts["k"], 1, integer=True)
    if "model" in opts:
        spec = opts["model"]
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ValueError(f"{where}.model must be a table with a model 'name', got {spec!r}")
        for key in ("input_shape", "n_classes"):
            if key in spec:
                raise ValueError(f"{where}.model must not set {key!r}: it comes from the data")
    for key in ("load", "params"):
        if key in opts and not isinstance(opts[key], dict):
            raise ValueError(f"{where}.{key} must be a table, got {opts[key]!r}")
    for method, hp in opts.get("params", {}).items():
        if method not in list_methods():
            raise ValueError(
                f"{where}.params names unknown method {method!r}; allowed: {list_methods()}"
            )
        if not isinstance(hp, dict):
            raise ValueError(f"{where}.params.{method} must be a table, got {hp!r}")
    for sec in _SECTIONS:
        if sec in opts:
            _check_section(sec, opts[sec], where=f"{where}.")


def dataset_settings(cfg: BenchConfig, ds: Any) -> tuple[int, float, dict[str, Any]]:
    """``(k, eps, options)`` of dataset ``ds`` in the benchmark configuration ``cfg``:
    ``[datasets_options.NAME]`` (keyed by the registry name) over the dataset's ``default_k``
    and ``default_eps``."""
    opts = cfg.datasets_options.get(ds.info.get("loader", ds.name), {})
    k = int(opts.get("k", ds.default_k))
    eps = float(opts.get("eps", ds.default_eps))
    return k, eps, opts


def load_bench_dataset(name: str, seed: int, cfg: BenchConfig) -> Any:
    """Dataset ``name`` split by ``seed``, with the ``load`` keywords of its
    ``[datasets_options.NAME]`` table."""
    from r2et.data import load_dataset

    opts = cfg.datasets_options.get(name, {})
    return load_dataset(name, seed=seed, **opts.get("load", {}))


def list_configs() -> list[str]:
    """Names of the benchmark configs shipped in the package (``r2et/configs/NAME.toml``)."""
    from importlib.resources import files

    return sorted(
        f.name.removesuffix(".toml")
        for f in files("r2et").joinpath("configs").iterdir()
        if f.name.endswith(".toml")
    )


def resolve_config(path: str | Path) -> Path:
    """``path`` when it is a file, else the shipped config of that name (``paper`` or
    ``paper.toml``); ``FileNotFoundError`` naming the shipped configs otherwise."""
    from importlib.resources import as_file, files

    path = Path(path)
    if path.is_file():
        return path
    name = path.name.removesuffix(".toml")
    if path.parent == Path(".") and name in list_configs():
        with as_file(files("r2et").joinpath("configs", f"{name}.toml")) as shipped:
            return Path(shipped)
    raise FileNotFoundError(
        f"benchmark config {path} does not exist or is not a file (configs shipped with r2et: "
        f"{', '.join(list_configs())})"
    )


def load_config(
    path: str | Path | None = None,
    *,
    data_params: dict[str, Any] | None = None,
    weights: list[float] | None = None,
    **overrides: Any,
) -> BenchConfig:
    """Defaults, updated by a TOML file (top-level keys as in :class:`BenchConfig`, sections
    ``[pretrain]``, ``[finetune]``, ``[evaluate]``, ``[grid]``, ``[datasets_options.NAME]``),
    then by ``overrides`` whose value is not None (command-line flags; a ``methods`` override
    keeps only the file's ``[grid]`` rows of those methods). ``path`` is a TOML file
    or the name of a config shipped with r2et (:func:`list_configs`, e.g. ``"paper"``).

    ``data_params`` (``load_dataset`` keywords, e.g. a CSV's ``path`` and ``target``) update
    the ``load`` options of every dataset of the result; ``weights`` replaces the grid: those
    weights for every method with a weight to sweep (its row's ``weight_name``), none for the
    others. Returns the validated configuration (``ValueError`` naming a bad setting)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = resolve_config(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid TOML: {err}") from None
    for key, val in overrides.items():
        if val is None:
            continue
        if key in _SECTIONS and key in data and not isinstance(data[key], dict):
            continue  # the file's wrong-typed section is reported by validation
        if key in _SECTIONS and isinstance(val, dict):
            data[key] = {**data.get(key, {}), **val}
        else:
            data[key] = val
    if overrides.get("methods") is not None and isinstance(data.get("grid"), dict):
        # a method list given on the command line narrows the file's grid to those methods
        data["grid"] = {m: w for m, w in data["grid"].items() if m in overrides["methods"]}
    cfg = BenchConfig.from_dict(data)
    if data_params is not None and not isinstance(data_params, dict):
        raise ValueError(
            f"data_params must be a dict of load_dataset keywords, got {data_params!r}"
        )
    if data_params:
        for name in cfg.datasets:
            opts = cfg.datasets_options.setdefault(name, {})
            opts["load"] = {**opts.get("load", {}), **data_params}
        cfg.validate()
    if weights is not None:
        from r2et.methods import method_row

        if not isinstance(weights, (list, tuple)):
            raise ValueError(f"weights must be a list of numbers, got {weights!r}")
        values = list(weights)
        cfg.grid = {m: values for m in cfg.methods if method_row(m).weight_name}
        cfg.validate()
    return cfg


def parse_list(text: str, kind: type = str, name: str = "value") -> list[Any]:
    """Split a comma-separated flag value (``"adult,compas"``, ``"0,1,2"``) into typed items;
    an empty item or an empty list raises ``ValueError``."""
    items = [t.strip() for t in str(text).split(",")]
    if not any(items) or not all(items):
        raise ValueError(f"{name}={text!r} must be a comma-separated list with no empty item")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ValueError(
            f"{name}={text!r} is not a comma-separated list of {kind.__name__} values"
        ) from None
