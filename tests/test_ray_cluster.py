"""The benchmark grid on a two-node Ray cluster (issue 26), simulated on one machine: a head
node and a second node started with ``ray start`` (one CPU each), ``r2et bench --executor ray
--address HEAD`` run against them, the second node killed (SIGKILL, every process of it) while
it computes a cell, then ``--resume``. Skipped where Ray or its ``ray`` command is absent.

What a node's death does: Ray runs the lost cell again on the node left, so the run loses
nothing. One cell's worker is also made to die on every try (``os._exit``): Ray's retry is
spent, the other cells still finish and are stored, the run ends with one line (exit 3), and
``--resume`` computes that cell alone. At the end every cell of the grid has exactly one stored
result, computed to the end exactly once, and the cells stored before the kill were neither
rewritten nor recomputed.

Which node ran which cell, and how often a cell was started and finished, is seen through a
plugin (:mod:`r2et.plugins`, named by ``R2ET_PLUGINS``) that wraps each cell in marker files; the
second node stays inside its first cell until it is killed, and the head finishes no cell before
the second node is inside one, so that the kill lands mid-run whatever the machine's load: the
test polls the markers and the stored cells and never guesses a timing. The cluster is reached
on 127.0.0.1 only, without an authentication token (nothing is written to ``~/.ray``), in its
own temporary folder (so ``ray.init()`` elsewhere never finds it); its processes are killed by
process group, never by ``ray stop`` (which would stop every Ray cluster of the machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

RAY = Path(sys.executable).with_name("ray")
if not RAY.is_file():
    RAY = Path(shutil.which("ray") or RAY)
pytestmark = [
    pytest.mark.skipif(not RAY.is_file(), reason="the `ray` command is not installed"),
    pytest.mark.slow,
]

#: Seconds the run may take to store a first cell with the second node inside another (the
#: second node stays inside its cell that long, the head waits at most that long for it).
DEADLINE = 300

TOML = """
datasets = ["breast-cancer"]
methods = ["vanilla", "r2et-noh"]
seeds = [0]
threads = 1

[grid]
r2et-noh = [0.01, 0.1, 1.0, 10.0, 100.0]

[pretrain]
epochs = 1
batch_size = 64

[finetune]
epochs = 1
batch_size = 64

[evaluate]
n = 10
steps = 2
preset = "fast"
budgets = []
thickness_samples = 1
thickness_steps = 2
"""

PLUGIN = """
import os
import time
import uuid
from pathlib import Path

import r2et.bench.cells as cells
from r2et.bench.store import cell_key

_real = cells._cell_task


def _marked(cell, config, pretrained):
    marks = Path(os.environ["R2ET_TEST_MARKS"])
    crash = Path(os.environ["R2ET_TEST_CRASH"])
    wait = float(os.environ["R2ET_TEST_WAIT"])
    node = os.environ.get("R2ET_TEST_NODE", "driver")
    key = cell_key(cell)
    tag = f"{key}@{node}@{os.getpid()}@{uuid.uuid4().hex}"
    if crash.is_file() and crash.read_text() == key:  # this cell's worker dies on every try
        (marks / f"{tag}.crash").touch()
        os._exit(1)
    (marks / f"{tag}.start").touch()
    if node == "second":  # inside this cell until the node is killed
        time.sleep(wait)
    t0 = time.monotonic()  # the head finishes no cell before the second node is inside one
    while not any(marks.glob("*@second@*.start")) and time.monotonic() - t0 < wait:
        time.sleep(0.02)
    row = _real(cell, config, pretrained)
    (marks / f"{tag}.end").touch()
    return row


cells._cell_task = _marked
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _marks(folder: Path, suffix: str) -> list[tuple[str, str]]:
    """(cell key, node) of every marker file ending in ``suffix``."""
    return [tuple(p.name[: -len(suffix)].split("@")[:2]) for p in folder.glob(f"*{suffix}")]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``ray start ARGS`` in a new session: the node's processes (raylet, workers, agents) keep
    its process group after it returns, so killing the group kills the node."""
    with log.open("w") as fh:
        return subprocess.Popen(
            [str(RAY), "start", *args],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _started(proc: subprocess.Popen, log: Path) -> None:
    rc = proc.wait(timeout=DEADLINE)
    assert rc == 0, f"{' '.join(map(str, proc.args))} failed:\n{log.read_text()[-3000:]}"


def _kill_group(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def test_a_node_killed_mid_run_loses_nothing_and_resume_finishes(tmp_path):
    from r2et.bench import ResultStore, grid_cells, load_config
    from r2et.bench.executors import RAY_RETRIES
    from r2et.bench.store import cell_key

    cfg_path = tmp_path / "grid.toml"
    cfg_path.write_text(TOML)
    cfg = load_config(cfg_path)
    grid = sorted(cell_key(c) for c in grid_cells(cfg))
    assert len(grid) == 6
    crash_key = grid[-1]  # its worker dies on every try in the first run
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "r2et_cluster_marks.py").write_text(PLUGIN)
    marks = tmp_path / "marks"
    marks.mkdir()
    crash = tmp_path / "crash"
    crash.write_text(crash_key)
    temp = Path(tempfile.mkdtemp(prefix="r2et-ray-", dir="/tmp"))  # short: socket paths
    out = tmp_path / "bench"
    head = f"127.0.0.1:{_free_port()}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(tmp_path / "plugin"), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "R2ET_PLUGINS": "r2et_cluster_marks",
        "R2ET_TEST_MARKS": str(marks),
        "R2ET_TEST_CRASH": str(crash),
        "R2ET_TEST_WAIT": str(DEADLINE),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_worker_niceness": "0",  # see test_bench.test_ray_executor_matches_local
        "RAY_worker_register_timeout_seconds": "3600",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("RAY_ADDRESS", None)
    node = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    node += ["--dashboard-agent-listen-port", "0"]  # not 52365 twice on one machine
    cmd = [sys.executable, "-m", "r2et.cli", "bench", str(cfg_path), "--out", str(out)]
    cmd += ["--executor", "ray", "--address", head, "--no-progress"]
    cells = out / "cells"
    head_node = second_node = driver = None
    try:
        head_node = _start(
            ["--head", "--port", head.rpartition(":")[2], "--include-dashboard=false"]
            + ["--dashboard-port", str(_free_port()), "--temp-dir", str(temp), *node],
            {**env, "R2ET_TEST_NODE": "head"},
            tmp_path / "head.log",
        )
        _started(head_node, tmp_path / "head.log")
        second_node = _start(
            ["--address", head, *node],
            {**env, "R2ET_TEST_NODE": "second"},
            tmp_path / "second.log",
        )
        driver = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        # kill the second node once a cell is stored and the second node is inside another
        victim = None
        deadline = time.monotonic() + DEADLINE
        while victim is None and time.monotonic() < deadline and driver.poll() is None:
            busy = set(_marks(marks, ".start")) - set(_marks(marks, ".end"))
            on_second = sorted(key for key, where in busy if where == "second")
            if on_second and cells.is_dir() and any(cells.glob("*.json")):
                victim = on_second[0]
            else:
                time.sleep(0.01)
        assert victim is not None, (
            "the second node was not inside a cell after a first one was stored\n"
            + (tmp_path / "second.log").read_text()[-2000:]
            + (driver.communicate()[1] if driver.poll() is not None else "")
        )
        _kill_group(second_node)
        before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in cells.glob("*.json")}
        assert f"{victim}.json" not in before
        _, first_err = driver.communicate(timeout=DEADLINE)
        # the lost node's cell ran again on the head; the crashing cell was lost for good
        lines = first_err.strip().splitlines()
        assert driver.returncode == 3, first_err
        assert "Traceback" not in first_err, first_err
        assert lines[-1].startswith("r2et: error: 1 of 6 Ray task(s) were lost"), first_err
        assert "--resume" in lines[-1]
        stored = sorted(p.stem for p in cells.glob("*.json"))
        assert stored == [k for k in grid if k != crash_key]
        tries = _marks(marks, ".crash")
        assert 1 <= len(tries) <= RAY_RETRIES + 1 and {k for k, _ in tries} == {crash_key}
        # resume: the crashing cell now runs, on the head alone
        crash.unlink()
        started = set(marks.glob("*.start"))
        res = subprocess.run(
            [*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=DEADLINE
        )
        assert res.returncode == 0, res.stderr
        resumed = [p for p in marks.glob("*.start") if p not in started]
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        _kill_group(second_node)
        _kill_group(head_node)
        shutil.rmtree(temp, ignore_errors=True)
    # every cell of the grid has exactly one valid stored result ...
    assert sorted(p.stem for p in cells.glob("*.json")) == grid
    digest = ResultStore(out).rows()[0]["config_sha256"]
    assert all(ResultStore(out, digest).is_done(c) for c in grid_cells(cfg))
    # ... computed to the end exactly once over both runs
    assert sorted(key for key, _ in _marks(marks, ".end")) == grid
    # the killed node's cell was started there, never finished there, finished on the head
    assert (victim, "second") in _marks(marks, ".start")
    assert (victim, "head") in _marks(marks, ".end")
    # the resume computed the lost cell alone, and left the cells stored before it untouched
    assert [p.name.split("@")[0] for p in resumed] == [crash_key]
    for name, (data, stamp) in before.items():
        assert (cells / name).read_bytes() == data
        assert (cells / name).stat().st_mtime_ns == stamp
