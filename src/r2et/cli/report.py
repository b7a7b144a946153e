"""``r2et report``: a single-file HTML report of a run folder or a benchmark folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from r2et.cli.args import probe_writable


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report of ``args.path``: a benchmark folder (``results.json`` and
    ``config.json``, from ``r2et bench``) or a run folder (from ``r2et train``)."""
    from r2et.html_report import write_bench_report_html, write_run_report

    folder = Path(args.path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder (a run or a benchmark output)")
    out = Path(args.out) if args.out is not None else folder / "report.html"
    probe_writable("--out", out, "file")
    if (folder / "results.json").is_file() and (folder / "config.json").is_file():
        path = write_bench_report_html(folder, out)
    elif (folder / "config.json").is_file():
        path = write_run_report(folder, out, n_examples=args.examples, split=args.split)
    else:
        raise FileNotFoundError(f"{folder} has no config.json: not a run or benchmark folder")
    print(f"-> {path}")
    return 0
