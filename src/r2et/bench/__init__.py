"""Benchmark grids: pre-train, fine-tune with each method, evaluate, report (``r2et bench``)."""

from r2et.bench.config import BenchConfig, load_config
from r2et.bench.runner import grid_cells, run_bench
from r2et.bench.store import ResultStore

__all__ = ["BenchConfig", "ResultStore", "grid_cells", "load_config", "run_bench"]
