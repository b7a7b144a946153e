"""The single-file HTML reports (issue 27): a run folder's (a tiny run trained here on the
bundled breast-cancer data) and a bench folder's (hand-built rows). Each is parsed back and
checked for its tables, verdicts, embedded images, references beside the numbers and escaped
text; a run folder that names outside code is reported without importing it."""

from __future__ import annotations

import base64
import json
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch

from r2et.bench.config import BenchConfig
from r2et.bench.selection import row_verdict
from r2et.html_report import (
    METRIC_HELP,
    bench_report_html,
    write_bench_report_html,
    write_run_report,
)

PNG = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script>"


class Page(HTMLParser):
    """Tags, tables (as lists of rows of cell texts), images and text of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.images: list[dict[str, str]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append({k: v or "" for k, v in attrs})
        if tag in ("img", "meta", "br", "hr", "link"):  # void elements: no end tag
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.stack and self.stack[-1] in ("td", "th", "strong", "span", "code", "em"):
            if "td" in self.stack or "th" in self.stack:
                self.tables[-1][-1][-1] += data

    def all_text(self) -> str:
        return "".join(self.text)

    def pngs(self) -> list[bytes]:
        out = []
        for img in self.images:
            head, _, data = img["src"].partition(",")
            assert head == "data:image/png;base64", head
            out.append(base64.b64decode(data))
        return out


def _row(dataset: str, method: str, seed: int, patk: float, **kw: Any) -> dict[str, Any]:
    row = {
        "dataset": dataset,
        "method": method,
        "weight_name": None if method == "vanilla" else "<lam>",
        "weight": None if method == "vanilla" else 0.1,
        "seed": seed,
        "key": f"{dataset}__{method}__seed{seed}",
        "k": 8,
        "eps": 0.3,
        "modality": "tabular",
        "val_accuracy": 0.95,
        "accuracy": 0.95,
        "ensemble_p_at_k_mean": patk,
        "ensemble_preset": "standard",
        "erattack_p_at_k_mean": patk,
        "deletion_gain": 0.05,
        "deletion_gain_ci_low": 0.02,
        "deletion_gain_ci_high": 0.08,
        "occlusion_agreement": 0.5,
        "distinct_topk_sets": 30,
        "top_share": 0.05,
        "distinct_per_100": 75.0,
        "n_eval": 40,
        "train_seconds_per_epoch": 1.0,
        "curve": {"0.15": 0.8, "0.3": patk},
    }
    row.update(kw)
    return row


@pytest.fixture()
def bench_dir(tmp_path: Path) -> Path:
    """A bench folder as ``r2et bench`` leaves it (config.json, results.json): breast-cancer
    rows without the references (the report computes them from the bundled data) and adult
    rows that carry them; r2et collapsed on adult's seed 1."""
    cfg = BenchConfig(
        datasets=["breast-cancer", "adult"], methods=["vanilla", "r2et"], seeds=[0, 1]
    )
    rows = []
    for s in (0, 1):
        rows += [_row("breast-cancer", "vanilla", s, 0.6), _row("breast-cancer", "r2et", s, 0.7)]
        refs = {"majority_rate": 0.761, "random_p_at_k": 0.333}
        rows += [_row("adult", "vanilla", s, 0.5, **refs)]
        collapsed = {"top_share": 0.9, "distinct_per_100": 2.0} if s == 1 else {}
        rows += [_row("adult", "r2et", s, 0.9, **refs, **collapsed)]
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "results.json").write_text(json.dumps(rows))
    return tmp_path


def test_bench_report_has_tables_verdicts_references_and_plots(bench_dir: Path) -> None:
    path = write_bench_report_html(bench_dir)
    assert path == bench_dir / "report.html"
    assert [p.name for p in bench_dir.iterdir() if p.name.startswith(".")] == []  # atomic
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert page.stack == []  # every tag closed
    results = [t for t in page.tables if t[0][:5] == [
        "Method", "Test acc", "Majority class", "P@k ensemble (standard)", "Random k/F"
    ]]  # fmt: skip
    assert len(results) == 2  # one per dataset
    cancer, adult = results
    assert [r[0] for r in cancer[1:]] == ["vanilla", "r2et"]
    assert cancer[1][2] == "0.628"  # breast-cancer's test split: 71 of 113 benign
    assert cancer[1][4] == "0.267"  # k/F = 8/30
    assert adult[1][2] == "0.761" and adult[1][4] == "0.333"  # the rows' own
    assert adult[2][-1] == "⚠ collapsed (seed 1)" and cancer[2][-1] == "local, faithful"
    body = page.all_text()
    stored = json.loads((bench_dir / "results.json").read_text())
    seed1 = [r for r in stored if (r["dataset"], r["method"], r["seed"]) == ("adult", "r2et", 1)]
    assert row_verdict(seed1[0])["text"] in body  # each seed's verdict, in words
    assert "Selection rule:" in body and "collapsed" in body
    for key in ("p_at_k", "random_p_at_k", "deletion_gain"):
        assert METRIC_HELP[key][1] in body  # what each column means
    # escaped: the row's weight name is text, never markup
    assert "<lam>" not in text and "&lt;lam&gt;=0.1" in text and "<lam>=0.1" in body
    pngs = page.pngs()
    assert len(pngs) == 4 and all(p.startswith(PNG) for p in pngs)  # budget, acc, faith, cost
    assert {i["alt"] for i in page.images} >= {"stability_vs_faithfulness", "training_cost"}
    assert "<script" not in text


def test_bench_report_refuses_a_folder_without_results(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        bench_report_html(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(BenchConfig().to_dict()))
    (tmp_path / "results.json").write_text(json.dumps({"not": "rows"}))
    with pytest.raises(ValueError, match="results.json"):
        bench_report_html(tmp_path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained for one epoch on breast-cancer, saved as ``r2et train`` saves it, with
    the evaluation ``r2et evaluate`` stores (its explainer field holding markup, to be
    escaped)."""
    from r2et import EnsembleAttack, build_model, evaluate, fit, load_dataset, save_run
    from r2et._io import atomic_write_json

    ds = load_dataset("breast-cancer")
    torch.manual_seed(0)
    model = build_model("mlp", list(ds.input_shape), ds.n_classes, hidden=[16])
    res = fit(model, "r2et", ds, epochs=1, seed=0, progress=False)
    folder = tmp_path_factory.mktemp("run") / "run"
    config = {"dataset": ds.summary(), "data_seed": 0, "data_params": {}, **res.config}
    metrics = {"val_accuracy": res.best_val_accuracy, "best_epoch": res.best_epoch,
               "seconds_per_epoch": res.seconds_per_epoch, "history": res.history}  # fmt: skip
    save_run(folder, res.model, config, metrics)
    ex = ds.explainer()
    atk = EnsembleAttack(ex, k=ds.default_k, eps=0.3, bounds=ds.bounds, preset="fast")
    ev = evaluate(res.model, ds, ex, k=ds.default_k, attacks={"ensemble": atk}, n=20)
    atomic_write_json(folder / "evaluation_test.json", {**ev, "explainer": {"method": EVIL}})
    return folder


def test_run_report_draws_saliency_and_puts_numbers_beside_their_references(
    run_dir: Path, tmp_path: Path
) -> None:
    out = write_run_report(run_dir, tmp_path / "r.html", n_examples=2)
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert page.stack == []
    ev = json.loads((run_dir / "evaluation_test.json").read_text())
    body = page.all_text()
    assert ev["verdict"]["text"] in body  # the stored verdict, in words
    metrics = next(t for t in page.tables if t[0][:3] == ["Metric", "Value", "Beside it"])
    acc = next(r for r in metrics if r[0] == "accuracy (whole split)")
    assert acc[1] == f"{ev['accuracy']:.3f}" and acc[2].startswith("majority class: 0.628")
    assert acc[3:] == list(METRIC_HELP["accuracy"][1:])  # what it means, which way is better
    patk = next(r for r in metrics if r[0].startswith("P@8 under ensemble (fast)"))
    assert patk[2].startswith("random explanation k/F: 0.267")
    assert ("⚠" in patk[2]) == (ev["attacks"]["ensemble"]["p_at_k_mean"] <= 8 / 30)
    pngs = page.pngs()
    # training curve, P@k per attack, two saliency examples
    assert len(pngs) == 4 and all(p.startswith(PNG) for p in pngs)
    assert sum(i["alt"].startswith("test[") for i in page.images) == 2
    tops = [t for t in page.tables if t[0][0] == "rank"]
    assert len(tops) == 2 and len(tops[0]) == 1 + 8  # the top-8 attributes of each row
    assert " = " in tops[0][1][1]  # with the row's own value
    assert EVIL not in text and "&lt;script&gt;" in text and EVIL in body
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary left


def test_run_report_of_a_run_naming_outside_code_imports_nothing(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run folder is data: a factory outside r2et and torch is not imported (no trust), the
    report is written without pictures and says why."""
    (tmp_path / "evil_factory.py").write_text("import sys\nsys.modules['evil_ran'] = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("model.safetensors", "metrics.json", "evaluation_test.json"):
        (folder / name).write_bytes((run_dir / name).read_bytes())
    config = json.loads((run_dir / "config.json").read_text())
    config["model"] = {"factory": "evil_factory:Net", "kwargs": {}, "class": "evil_factory:Net"}
    (folder / "config.json").write_text(json.dumps(config))
    page = Page(write_run_report(folder, n_examples=2).read_text(encoding="utf-8"))
    assert "evil_ran" not in sys.modules and "evil_factory" not in sys.modules
    assert "Saliency not drawn" in page.all_text()
    assert len(page.pngs()) == 2  # training curve and P@k chart; no saliency
    assert (folder / "report.html").is_file()
