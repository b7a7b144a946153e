"""The ``r2et`` command: the happy path of each command and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from r2et.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "r2et.cli", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "args, match",
    [
        (["train", "no-such-data", "--out", "x"], "no-such-data"),
        (["train", "breast-cancer", "--method", "magic", "--out", "x", "--epochs", "1"], "magic"),
        (["bench", "--datasets", "nope"], "nope"),
        (["bench", "--seeds", "a,b"], "seeds"),
        (["evaluate", "/nonexistent/run"], "nonexistent"),
        (["explain", "/nonexistent/run"], "nonexistent"),
        (["train"], "dataset"),
        (["frobnicate"], "frobnicate"),
        (["evaluate", "r", "--attack", "fgsm"], "fgsm"),
    ],
)
def test_errors_are_one_line_exit_2(args, match):
    res = run_cli(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert match in lines[0] and "Traceback" not in res.stderr


def test_train_evaluate_explain_round_trip(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "breast-cancer",
                "--method",
                "r2et-paper",
                "--epochs",
                "2",
                "--out",
                str(run),
                "--no-progress",
                "--param",
                "mu=0.0",
            ]
        )
        == 0
    )
    for name in ("model.safetensors", "config.json", "metrics.json"):
        assert (run / name).is_file()
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--preset",
                "fast",
                "--n",
                "20",
                "--eps",
                "0.2",
                "--thickness-radius",
                "0.2",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ensemble" in out and "preset fast" in out and "inside the data box" in out
    assert "deletion gain" in out and "distinct top-" in out and "thickness" in out
    assert (run / "evaluation_test.json").is_file()
    argv = ["evaluate", str(run), "--attack", "erattack", "--attack", "mse", "--steps", "3"]
    assert main([*argv, "--n", "10", "--no-box", "--groups", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "erattack" in out and "mse" in out and "ensemble" not in out
    assert "no data box" in out and "attribute groups" in out
    png = tmp_path / "s.png"
    assert main(["explain", str(run), "--index", "2", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["explain", str(run), "--index", "100000", "--out", str(png)]) == 2


def test_listing_commands(capsys):
    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    for name in ("adult", "breast-cancer", "mutag", "csv"):
        assert name in listing
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing][:3] == ["vanilla", "wd", "sp"]
    from r2et import list_methods

    # the paper's 11 (r2et-paper among them), r2et, r2et-data, the two anchored rows,
    # 4 more variants, r2et-cert
    assert len(listing) == len(list_methods()) == 22


def test_version_and_defaults_in_help(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith(f"r2et {version('r2et')} (Python ")
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    # defaults shown with and without help text, never "default: None"
    assert (
        "--batch-size BATCH_SIZE default: the dataset's (128" in text
        and "--lr LR default: 0.001" in text
    )
    assert "(default: 0)" in text  # --seed, which has help text
    assert "default: None" not in text and "default: False" not in text


def test_package_is_typed():
    from importlib.resources import files

    assert files("r2et").joinpath("py.typed").is_file()
