"""``r2et bench``: run (or resume) a benchmark grid and print the paper-style table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from r2et.cli.args import parse_data_params, probe_writable
from r2et.cli.errors import (
    EXIT_FAILED_CELLS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    Terminated,
)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run (or resume) a benchmark grid and print the paper-style table."""
    from r2et.bench.config import load_config, parse_list
    from r2et.bench.report import summary_text
    from r2et.bench.runner import WORKER_EXECUTORS, check_out, run_bench

    if args.workers is not None and args.executor not in WORKER_EXECUTORS:
        raise ValueError(
            f"--workers needs --executor process or ray; the {args.executor} executor runs one "
            "cell at a time in this process"
        )

    def listed(text: str | None, kind: type, flag: str) -> list[Any] | None:
        return None if text is None else parse_list(text, kind, flag)

    cfg = load_config(
        args.config,
        datasets=listed(args.datasets, str, "--datasets"),
        methods=listed(args.methods, str, "--methods"),
        seeds=listed(args.seeds, int, "--seeds"),
        device=args.device,
        threads=args.threads,
        finetune=None if args.epochs is None else {"epochs": args.epochs},
        evaluate=None if args.n is None else {"n": args.n},
        data_params=parse_data_params(args) or None,
        weights=listed(args.weights, float, "--weights"),
    )
    check_out(args.out)
    probe_writable("--out", Path(args.out), "folder")
    try:
        rows = run_bench(
            cfg,
            args.out,
            executor=args.executor,
            resume=args.resume,
            address=args.address,
            workers=args.workers,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt as err:
        what = "terminated" if isinstance(err, Terminated) else "interrupted"
        print(
            f"r2et: {what}; finished cells are saved in {args.out}; rerun with --resume",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED
    print(summary_text(rows, cfg))
    print(f"-> {Path(args.out) / 'report.md'}")
    failed = sorted((Path(args.out) / "errors").glob("*.json"))
    if failed:
        print(
            f"r2et: {len(failed)} cell(s) failed, see {failed[0].parent}; rerun with --resume",
            file=sys.stderr,
        )
        return EXIT_FAILED_CELLS
    return EXIT_OK
