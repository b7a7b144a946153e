"""A German-credit-like CSV: 1,000 rows, 20 mixed attributes (7 numeric, 13 categorical with
the Statlog German credit coding A11..A202), a ``credit`` label ``good``/``bad`` with
majority rate about 0.70.

The data are synthetic (no download, no licence question) and *held out*: no default of the
library was tuned on them. The label is a noisy logistic function of five attributes
(checking-account status, duration, credit history, savings, age) and one interaction, so a
logistic regression reaches about 0.75 and an explanation has something true to find.

    python benchmarks/german_like.py german.csv [--rows 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

#: attribute -> its categories (Statlog German credit coding); numeric attributes below
CATEGORICAL = {
    "status": ["A11", "A12", "A13", "A14"],
    "credit_history": ["A30", "A31", "A32", "A33", "A34"],
    "purpose": ["A40", "A41", "A42", "A43", "A44", "A45", "A46", "A48", "A49", "A410"],
    "savings": ["A61", "A62", "A63", "A64", "A65"],
    "employment": ["A71", "A72", "A73", "A74", "A75"],
    "personal_status": ["A91", "A92", "A93", "A94"],
    "other_debtors": ["A101", "A102", "A103"],
    "property": ["A121", "A122", "A123", "A124"],
    "other_installments": ["A141", "A142", "A143"],
    "housing": ["A151", "A152", "A153"],
    "job": ["A171", "A172", "A173", "A174"],
    "telephone": ["A191", "A192"],
    "foreign_worker": ["A201", "A202"],
}
NUMERIC = (
    "duration", "amount", "installment_rate", "residence_since", "age", "existing_credits",
    "people_liable",
)  # fmt: skip


def make_german_like(n: int = 1000, seed: int = 0) -> dict[str, list]:
    """The columns of a German-credit-like table (``credit`` last), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {}
    codes: dict[str, np.ndarray] = {}
    for name, cats in CATEGORICAL.items():
        p = rng.dirichlet(np.full(len(cats), 2.0))
        codes[name] = rng.choice(len(cats), size=n, p=p)
        cols[name] = [cats[i] for i in codes[name]]
    duration = np.clip(rng.gamma(3.0, 7.0, n).round(), 4, 72)
    amount = np.clip(np.exp(rng.normal(7.9, 0.75, n)) + 40 * duration, 250, 20000).round()
    age = np.clip(rng.gamma(6.0, 6.0, n) + 18, 19, 75).round()
    numeric = {
        "duration": duration,
        "amount": amount,
        "installment_rate": rng.integers(1, 5, n),
        "residence_since": rng.integers(1, 5, n),
        "age": age,
        "existing_credits": rng.choice([1, 2, 3, 4], size=n, p=[0.63, 0.33, 0.03, 0.01]),
        "people_liable": rng.choice([1, 2], size=n, p=[0.85, 0.15]),
    }
    status_effect = np.array([-0.9, -0.4, 0.3, 1.1])[codes["status"]]
    history_effect = np.array([-0.8, -0.6, 0.0, 0.2, 0.7])[codes["credit_history"]]
    savings_effect = np.array([-0.4, -0.1, 0.2, 0.5, 0.3])[codes["savings"]]
    z = (
        0.5
        + 1.3 * status_effect
        + history_effect
        + savings_effect
        - 0.035 * (duration - 20)
        + 0.02 * (age - 35)
        - 0.5 * ((codes["housing"] == 2) & (amount > 6000))
        + rng.normal(0, 0.5, n)
    )
    good = 1 / (1 + np.exp(-z)) > rng.uniform(0, 1, n)
    for name in NUMERIC:
        cols[name] = [int(v) for v in numeric[name]]
    cols["credit"] = ["good" if g else "bad" for g in good]
    return cols


def write_csv(path: Path, cols: dict[str, list]) -> None:
    """Write the columns as a comma-separated file with a header."""
    names = list(cols)
    lines = [",".join(names)]
    lines += [",".join(str(cols[c][i]) for c in names) for i in range(len(cols[names[0]]))]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    cols = make_german_like(a.rows, a.seed)
    write_csv(a.out, cols)
    good = sum(c == "good" for c in cols["credit"]) / a.rows
    print(f"{a.out}: {a.rows} rows, {len(cols) - 1} attributes, good rate {good:.3f}")


if __name__ == "__main__":
    main()
