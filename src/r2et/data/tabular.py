"""Tabular datasets: UCI Adult, UCI Bank Marketing, ProPublica COMPAS, scikit-learn's breast
cancer set, and any user CSV.

Every table is encoded the same way (:class:`~r2et.data._prep.TableEncoder`): numeric columns
standardised with the mean and standard deviation of the *training* rows only, categorical
columns one-hot encoded as ``"column=value"``. ``bounds`` are the per-feature min and max of
the encoded training inputs, and val/test inputs are clipped into them (a preprocessing step
fitted on train, like the scaling), so every split lies inside the box that attacks project
onto. The few clipped rows are counted in ``info["preprocessing"]``; a category never seen in
training thereby encodes as all zeros.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from r2et.data._prep import (
    TableEncoder,
    carve_val,
    minmax_bounds,
    three_way_split,
    to_tensors,
)
from r2et.data.base import Dataset
from r2et.data.download import Source, resolve

PathLike = str | os.PathLike[str]

ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
]
ADULT_NUMERIC = [
    "age",
    "fnlwgt",
    "education-num",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
]
ADULT_CATEGORICAL = [
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native-country",
]
_UCI_ADULT = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"
ADULT_SOURCE = Source(
    folder="adult",
    files={
        "adult.data": "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
        "adult.test": "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
    },
    urls={f: _UCI_ADULT + f for f in ("adult.data", "adult.test")},
)

BANK_NUMERIC = ["age", "balance", "day", "duration", "campaign", "pdays", "previous"]
BANK_CATEGORICAL = [
    "job",
    "marital",
    "education",
    "default",
    "housing",
    "loan",
    "contact",
    "month",
    "poutcome",
]
BANK_SOURCE = Source(
    folder="bank",
    files={
        # the copy in ../shared/data (quote characters stripped)
        "bank-full.csv": ("e003ab9ba07160dd9e7dc257e924f4961a6dfaed4a3c2c157c38621995b68c08",),
    },
    archive=(
        "https://archive.ics.uci.edu/ml/machine-learning-databases/00222/bank.zip",
        "99d7e8eb12401ed278b793984423915411ea8df099e1795f9fefe254f513fe5e",
        "bank.zip",
    ),
    members={"bank-full.csv": "bank-full.csv"},
)

COMPAS_NUMERIC = [
    "age",
    "juv_fel_count",
    "juv_misd_count",
    "juv_other_count",
    "priors_count",
    "days_b_screening_arrest",
    "length_of_stay",
]
COMPAS_CATEGORICAL = ["sex", "race", "age_cat", "c_charge_degree"]
COMPAS_SOURCE = Source(
    folder="compas",
    files={
        "compas-scores-two-years.csv": (
            "c451db85908b2f7fef1d83203bedf6b71ecda0d5af468d82ae62178f91d0cc7d"
        )
    },
    urls={
        "compas-scores-two-years.csv": "https://raw.githubusercontent.com/propublica/"
        "compas-analysis/master/compas-scores-two-years.csv"
    },
)

TABULAR_MODEL = {"name": "mlp", "hidden": [64, 64]}
SMALL_TABLE_ROWS = 5000
SMALL_TABULAR_MODEL = {"name": "mlp", "hidden": [16]}
SMALL_TABLE_STEPS = 1000


def small_table_defaults(n_train: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(default_model, default_fit)`` for a user's table of ``n_train`` training rows.

    Below :data:`SMALL_TABLE_ROWS` rows: one hidden layer of 16 units and batches of 32 for
    ``clip(ceil(1000 / batches per epoch), 50, 200)`` epochs (50 from 609 training rows up),
    with :func:`~r2et.fit`'s best-validation-epoch selection. Issue 27: the former 4,000 steps
    (182 epochs on 1,000 CSV rows) overfit small noisy tables and let a late, noisy epoch win
    the 100-row validation split; on held-out tables (``benchmarks/small_tables.py``) the mean
    gap to a logistic regression went from 0.018 to 0.012, LR - 0.01 met on 3 of 5 tables
    (``docs/results.md``). Weight decay 0.03 (``fit(weight_decay=0.03)``, ``r2et train
    --weight-decay 0.03``) closes that gap but is not the default: it halves vanilla's
    distinct top-k sets and R2ET fine-tuned with it collapses (``docs/results.md``). The cap
    of 200 still trains tiny tables (wine). Larger tables: ``[64, 64]``, 10 epochs of 128."""
    if n_train < SMALL_TABLE_ROWS:
        batches = max(1, math.ceil(n_train / 32))
        epochs = min(200, max(50, math.ceil(SMALL_TABLE_STEPS / batches)))
        return dict(SMALL_TABULAR_MODEL), {"epochs": epochs, "batch_size": 32}
    return dict(TABULAR_MODEL), {"epochs": 10, "batch_size": 128}


#: The attribution of a table with categorical attributes, ranked per attribute: gradient x
#: input gives a category the row does not have exactly 0, and its top-k is local and
#: faithful where the gradient's is not (``docs/faithfulness.md``,
#: ``benchmarks/locality_study.py``).
TABLE_EXPLAINER = "grad_x_input"


def _tabular_k(n_features: int) -> int:
    return max(1, min(8, n_features - 1))


def _attribute_k(n_attributes: int) -> int:
    """The default k of a table ranked per attribute: 4 (1..G−1)."""
    return max(1, min(4, n_attributes - 1))


#: Method hyperparameters that suit a table ranked per attribute: the gap weight of ``r2et``
#: chosen on COMPAS and a German-credit-like table (``docs/faithfulness.md``).
TABLE_PARAMS = {"r2et": {"lam": 0.3}}


def table_explanation(
    groups: list[list[int]], n_columns: int
) -> tuple[dict[str, Any], int, dict[str, dict[str, Any]]]:
    """``(default_explainer, default_k, default_params)`` of a table: gradient × input per
    attribute (and :data:`TABLE_PARAMS`) when an attribute is one-hot encoded (a group of more
    than one column), else the gradient over columns (numeric tables are unchanged)."""
    if any(len(g) > 1 for g in groups):
        explainer = {"method": TABLE_EXPLAINER, "groups": groups}
        return explainer, _attribute_k(len(groups)), {m: dict(p) for m, p in TABLE_PARAMS.items()}
    return {"method": "grad"}, _tabular_k(n_columns), {}


def build_tabular(
    name: str,
    df: pd.DataFrame,
    y: np.ndarray,
    numeric: Sequence[str],
    categorical: Sequence[str],
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    info: dict[str, Any],
    n_classes: int | None = None,
    default_model: dict[str, Any] | None = None,
) -> Dataset:
    """Encode ``df`` (rows aligned with labels ``y``) with statistics of ``splits[0]`` (the
    training rows) and return the :class:`Dataset` with ``(train, val, test)`` = ``splits``."""
    train, val, test = splits
    enc = TableEncoder.fit(df, train, numeric, categorical)
    x = enc.transform(df)
    lo, hi = x[train].min(axis=0), x[train].max(axis=0)
    outside = {
        s: int(((x[i] < lo) | (x[i] > hi)).any(axis=1).sum())
        for s, i in (("val", val), ("test", test))
    }
    tr, va, te = (to_tensors(np.clip(x[i], lo, hi), y[i]) for i in (train, val, test))
    names = enc.feature_names
    groups, group_names = enc.groups
    explanation, k, params = table_explanation(groups, len(names))
    return Dataset(
        name=name,
        modality="tabular",
        train=tr,
        val=va,
        test=te,
        n_classes=int(n_classes if n_classes is not None else int(y.max()) + 1),
        feature_names=names,
        default_k=k,
        default_explainer=explanation,
        default_params=params,
        bounds=minmax_bounds(tr[0]),
        default_model=dict(default_model or TABULAR_MODEL),
        info={**info, "preprocessing": {**enc.info(), "rows_clipped_to_train_range": outside}},
        groups=groups,
        group_names=group_names,
    )


def load_adult(
    root: PathLike | None = None, download: bool = True, seed: int = 0, val_fraction: float = 0.1
) -> Dataset:
    """UCI Adult (Census Income; Kohavi & Becker, 1996): predict income > 50K.

    Official split: ``adult.data`` (32,561 rows) is train + val (``val_fraction`` carved
    stratified by ``seed``), ``adult.test`` (16,281 rows; first line a comment, labels end with
    a dot) is test. Missing values ``?`` are kept as their own category ``"?"`` so every row
    of the files is used. 6 numeric columns standardised, 8 categorical one-hot: 108 features.
    """
    paths = resolve("adult", ADULT_SOURCE, root, download)
    kw = dict(header=None, names=ADULT_COLUMNS, skipinitialspace=True, dtype=str)
    tr = pd.read_csv(paths["adult.data"], **kw)
    te = pd.read_csv(paths["adult.test"], skiprows=1, **kw)
    df = pd.concat([tr, te], ignore_index=True)
    income = df["income"].str.rstrip(".")
    bad = ~income.isin(["<=50K", ">50K"])
    if bad.any() or df[ADULT_NUMERIC].isna().any().any():
        raise ValueError("adult files are corrupt: unexpected labels or empty numeric fields")
    y = (income == ">50K").to_numpy(np.int64)
    df[ADULT_NUMERIC] = df[ADULT_NUMERIC].astype(np.float64)
    n_tr = len(tr)
    t_idx, v_idx = carve_val(y[:n_tr], val_fraction, seed)
    te_idx = np.arange(n_tr, len(df))
    info = {
        "source": _UCI_ADULT,
        "files": list(ADULT_SOURCE.files),
        "seed": seed,
        "split": f"official train/test; val = {val_fraction} of adult.data (stratified)",
        "label": "income > 50K",
        "missing": "'?' kept as a category",
        "rows_files": [n_tr, len(te)],
    }
    return build_tabular(
        "adult", df, y, ADULT_NUMERIC, ADULT_CATEGORICAL, (t_idx, v_idx, te_idx), info, 2
    )


def load_bank(
    root: PathLike | None = None,
    download: bool = True,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """UCI Bank Marketing (Moro et al., 2014): predict term-deposit subscription.

    ``bank-full.csv`` (45,211 rows, ``;``-separated, values quoted or not), label ``y``.
    Stratified train/val/test by ``seed``; 7 numeric columns standardised, 9 categorical
    one-hot: 51 features."""
    paths = resolve("bank", BANK_SOURCE, root, download)
    df = pd.read_csv(paths["bank-full.csv"], sep=";", quotechar='"', skipinitialspace=True)
    missing = sorted(set(BANK_NUMERIC + BANK_CATEGORICAL + ["y"]) - set(df.columns))
    if missing or not df["y"].isin(["yes", "no"]).all():
        raise ValueError(f"bank-full.csv is corrupt: missing columns {missing} or bad labels")
    y = (df["y"] == "yes").to_numpy(np.int64)
    splits = three_way_split(y, val_fraction, test_fraction, seed)
    info = {
        "source": BANK_SOURCE.archive[0] if BANK_SOURCE.archive else "",
        "files": list(BANK_SOURCE.files),
        "seed": seed,
        "split": f"stratified train/val/test, val={val_fraction}, test={test_fraction}",
        "label": "y == 'yes'",
    }
    return build_tabular("bank", df, y, BANK_NUMERIC, BANK_CATEGORICAL, splits, info, 2)


def load_compas(
    root: PathLike | None = None,
    download: bool = True,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """ProPublica COMPAS two-year recidivism (Angwin et al., 2016): predict
    ``two_year_recid``.

    The standard ProPublica filters keep 6,172 of 7,214 rows: ``|days_b_screening_arrest| <=
    30``, ``is_recid != -1``, ``c_charge_degree != "O"``, ``score_text != "N/A"``. Features:
    age, juvenile felony/misdemeanour/other counts, priors count, days_b_screening_arrest and
    length of stay (days between ``c_jail_in`` and ``c_jail_out``), standardised; sex, race,
    age category and charge degree one-hot. The COMPAS score itself is not a feature.
    """
    paths = resolve("compas", COMPAS_SOURCE, root, download)
    df = pd.read_csv(paths["compas-scores-two-years.csv"])
    keep = (
        (df["days_b_screening_arrest"].abs() <= 30)
        & (df["is_recid"] != -1)
        & (df["c_charge_degree"] != "O")
        & (df["score_text"].fillna("N/A") != "N/A")
    )
    df = df.loc[keep].reset_index(drop=True)
    stay = pd.to_datetime(df["c_jail_out"]) - pd.to_datetime(df["c_jail_in"])
    df["length_of_stay"] = stay.dt.total_seconds().fillna(0.0) / 86400.0
    y = df["two_year_recid"].to_numpy(np.int64)
    splits = three_way_split(y, val_fraction, test_fraction, seed)
    info = {
        "source": COMPAS_SOURCE.urls["compas-scores-two-years.csv"],
        "files": list(COMPAS_SOURCE.files),
        "seed": seed,
        "split": f"stratified train/val/test, val={val_fraction}, test={test_fraction}",
        "filters": "ProPublica: |days_b_screening_arrest|<=30, is_recid!=-1, "
        "c_charge_degree!='O', score_text!='N/A'",
        "label": "two_year_recid",
    }
    return build_tabular("compas", df, y, COMPAS_NUMERIC, COMPAS_CATEGORICAL, splits, info, 2)


def load_breast_cancer(
    root: PathLike | None = None,
    download: bool = True,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """Wisconsin diagnostic breast cancer: 569 samples, 30 numeric features, no download.

    Bundled with scikit-learn (``root``/``download`` are ignored). Stratified splits by
    ``seed``; features standardised with train statistics."""
    from sklearn.datasets import load_breast_cancer as sk_load

    bunch = sk_load()
    names = [str(n) for n in bunch.feature_names]
    df = pd.DataFrame(bunch.data, columns=names)
    y = np.asarray(bunch.target, dtype=np.int64)
    splits = three_way_split(y, val_fraction, test_fraction, seed)
    info = {
        "source": "sklearn.datasets.load_breast_cancer",
        "files": [],
        "seed": seed,
        "split": f"stratified train/val/test, val={val_fraction}, test={test_fraction}",
        "label": "target (1 = benign)",
    }
    return build_tabular("breast-cancer", df, y, names, [], splits, info, 2)


#: The most columns a CSV file may have (``load_csv(max_columns=...)``, every column counted:
#: target and dropped ones too). The header line alone is read and counted before the file is
#: parsed, so a very wide file is refused in a moment instead of a slow parse.
MAX_CSV_COLUMNS = 2_000
#: The most input features a CSV may encode to (``load_csv(max_features=...)``): numeric
#: columns plus one per category of each one-hot encoded column, counted before encoding.
MAX_CSV_FEATURES = 10_000
_HEADER_BYTES = 4 << 20  # the header is read up to this many bytes


class _HashingReader(io.RawIOBase):
    """A raw binary stream over an open file that feeds every byte read into ``sha``: the
    file is hashed while it is parsed, in one pass."""

    def __init__(self, f: io.BufferedReader, sha: Any) -> None:
        super().__init__()
        self._f, self.sha = f, sha

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._f.readinto(b)
        if n:
            self.sha.update(memoryview(b)[:n])
        return n or 0

    def drain(self) -> None:
        """Hash whatever the parser left unread (the digest covers the whole file)."""
        while chunk := self._f.read(1 << 20):
            self.sha.update(chunk)


def _csv_header_width(p: Path, sep: str | None) -> int | None:
    """The number of columns in the first line of CSV file ``p`` (read alone, at most
    ``_HEADER_BYTES``); None when it cannot be told cheaply (the parse then decides)."""
    with open(p, "rb") as f:
        line = f.readline(_HEADER_BYTES)
    text = line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    if not text.strip():
        return None
    try:
        if sep is None:
            delim = csv.Sniffer().sniff(text[:65536]).delimiter
        elif len(sep) == 1:
            delim = sep
        else:
            return len(re.split(sep, text))
        return len(next(csv.reader([text], delimiter=delim)))
    except (csv.Error, re.error, StopIteration):
        return None


def _infer_columns(df: pd.DataFrame, max_categories: int) -> tuple[list[str], list[str]]:
    numeric, categorical = [], []
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_bool_dtype(col):
            categorical.append(c)
        elif pd.api.types.is_numeric_dtype(col):
            numeric.append(c)
        else:
            categorical.append(c)
            n = col.nunique(dropna=False)
            if n > max_categories:
                raise ValueError(
                    f"column {c!r} looks categorical but has {n} distinct values "
                    f"(max_categories={max_categories}); drop it with drop=[{c!r}] "
                    "or raise max_categories"
                )
    return numeric, categorical


def load_csv(
    root: PathLike | None = None,
    download: bool = True,
    seed: int = 0,
    *,
    path: PathLike | None = None,
    target: str | None = None,
    sep: str | None = ",",
    drop: Sequence[str] = (),
    categorical: Sequence[str] | None = None,
    missing: str = "error",
    max_categories: int = 100,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    name: str | None = None,
    max_columns: int = MAX_CSV_COLUMNS,
    max_features: int = MAX_CSV_FEATURES,
) -> Dataset:
    """Any CSV file with a label column ``target=``: the user's own tabular data.

    Column types are inferred (numeric dtype -> standardised; anything else, or the columns
    named in ``categorical``, -> one-hot). The target may be numeric or categorical; its sorted
    distinct values become classes ``0..C-1`` (recorded in ``info["classes"]``). Missing
    values: ``missing="error"`` (default) raises ``ValueError`` naming the columns;
    ``"drop"`` drops incomplete rows; ``"impute"`` fills numeric columns with the training
    mean and treats a missing category as its own value ``"nan"``. Rows with a missing target
    are always an error. Stratified train/val/test splits by ``seed``. ``root``/``download``
    are unused (the file is local). ``name`` is the dataset's display name (default: the
    file's stem).

    Size limits, each refused with one ``ValueError``: a file of more than ``max_columns``
    columns (default :data:`MAX_CSV_COLUMNS` = 2,000, every column counted), found from the
    header line alone before the file is parsed; and a table that encodes to more than
    ``max_features`` inputs (default :data:`MAX_CSV_FEATURES` = 10,000: numeric columns plus
    one per category of each one-hot column), found before encoding.

    The file is hashed while it is parsed (one streamed pass): ``info["sha256"]`` holds its
    SHA-256, which a run's ``config.json`` records, so that reloading a changed file is
    refused (:func:`r2et.data.load_run_dataset`, ``r2et evaluate``).
    """
    from r2et._checks import check_int

    if path is None:
        raise ValueError("load_dataset('csv') needs path=<file.csv> and target=<column>")
    if target is None:
        raise ValueError("load_dataset('csv') needs target=<label column>")
    if missing not in ("error", "drop", "impute"):
        raise ValueError(f"missing={missing!r} is not supported; allowed: error, drop, impute")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name must be a non-empty string (the display name), got {name!r}")
    check_int("max_columns", max_columns, 2)
    check_int("max_features", max_features, 1)
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"path={str(p)!r}: CSV file not found")
    width = _csv_header_width(p, sep)
    too_wide = (
        f"columns; the limit is max_columns={max_columns:,}: drop columns from the file or "
        "raise max_columns"
    )
    if width is not None and width > max_columns:
        with open(p, "rb") as f:  # a header past the bytes read holds even more columns
            cut = len(f.readline(_HEADER_BYTES + 1)) > _HEADER_BYTES
        more = "more than " if cut else ""
        raise ValueError(f"path={str(p)!r} has {more}{width:,} {too_wide}")
    sha = hashlib.sha256()
    try:
        with open(p, "rb") as f:
            raw = _HashingReader(f, sha)
            buffered = io.BufferedReader(raw, 1 << 20)
            with warnings.catch_warnings():
                # rows wider than the header: pandas would make the extra fields an index
                warnings.simplefilter("error", pd.errors.ParserWarning)
                engine = "python" if sep is None else "c"
                df = pd.read_csv(buffered, sep=sep, engine=engine, index_col=False)
            raw.drain()
    except pd.errors.ParserWarning:
        raise ValueError(
            f"path={str(p)!r}: its rows have more fields than its header line; every row must "
            "have one field per header column"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"path={str(p)!r} is not a readable CSV file: {err}") from None
    if df.shape[1] > max_columns:
        raise ValueError(f"path={str(p)!r} has {df.shape[1]:,} {too_wide}")
    df.columns = [str(c).strip() for c in df.columns]
    if target not in df.columns:
        raise ValueError(f"target={target!r} is not a column; allowed: {list(df.columns)}")
    if isinstance(drop, str):
        raise ValueError(f"drop must be a list of column names, got the string {drop!r}")
    bad = [c for c in drop if c not in df.columns]
    if bad:
        raise ValueError(f"drop={bad} are not columns; allowed: {list(df.columns)}")
    if target in drop:
        raise ValueError(
            f"drop={list(drop)} names the target column {target!r}; it cannot be dropped"
        )
    df = df.drop(columns=list(drop))
    if df[target].isna().any():
        raise ValueError(f"target column {target!r} has {int(df[target].isna().sum())} missing")
    feats = df.drop(columns=[target])
    if feats.shape[1] == 0:
        raise ValueError("the CSV has no feature columns besides the target")
    if categorical is not None:
        bad = [c for c in categorical if c not in feats.columns]
        if bad:
            raise ValueError(f"categorical={bad} are not feature columns: {list(feats.columns)}")
        feats[list(categorical)] = feats[list(categorical)].astype("string").astype(object)
    numeric_cols = [c for c in feats.columns if pd.api.types.is_numeric_dtype(feats[c])]
    inf_cols = [c for c in numeric_cols if np.isinf(feats[c].to_numpy(dtype=float)).any()]
    if inf_cols:
        raise ValueError(f"columns {inf_cols} hold +-Inf values; only finite numbers are allowed")
    if pd.api.types.is_numeric_dtype(df[target]) and np.isinf(df[target].to_numpy(float)).any():
        raise ValueError(f"target column {target!r} holds +-Inf values")
    nan_cols = [c for c in feats.columns if feats[c].isna().any()]
    if nan_cols and missing == "error":
        raise ValueError(
            f"columns {nan_cols} have missing values; pass missing='drop' or missing='impute'"
        )
    if nan_cols and missing == "drop":
        keep = ~feats.isna().any(axis=1)
        feats, df = feats.loc[keep].reset_index(drop=True), df.loc[keep].reset_index(drop=True)
    numeric, cats = _infer_columns(feats, max_categories)
    n_inputs = len(numeric) + sum(int(feats[c].nunique(dropna=False)) for c in cats)
    if n_inputs > max_features:
        raise ValueError(
            f"path={str(p)!r} encodes to {n_inputs:,} input features (numeric columns plus one "
            f"per category); the limit is max_features={max_features:,}: drop columns, lower "
            "max_categories or raise max_features"
        )
    classes, y = np.unique(df[target].to_numpy(), return_inverse=True)
    y = y.astype(np.int64)
    if len(classes) < 2:
        raise ValueError(f"target column {target!r} has fewer than 2 classes")
    splits = three_way_split(y, val_fraction, test_fraction, seed)
    if nan_cols and missing == "impute":
        means = feats.iloc[splits[0]][numeric].mean()
        feats[numeric] = feats[numeric].fillna(means).fillna(0.0)
        for c in cats:
            feats[c] = feats[c].astype(object).where(feats[c].notna(), "nan")
    info = {
        "source": str(p),
        "files": [p.name],
        "sha256": sha.hexdigest(),
        "seed": seed,
        "target": target,
        "classes": [c.item() if hasattr(c, "item") else c for c in classes],
        "missing": missing,
        "split": f"stratified train/val/test, val={val_fraction}, test={test_fraction}",
    }
    model, fit_defaults = small_table_defaults(len(splits[0]))
    ds = build_tabular(name or p.stem, feats, y, numeric, cats, splits, info, len(classes), model)
    ds.default_fit = fit_defaults
    return ds
