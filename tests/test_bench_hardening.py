"""Bench hardening (issue 23): process-executor workers die with their parent, cells carry a
digest of their own content (an edited cell is recomputed, never published), and
``--workers`` is refused where no executor uses it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_BENCH_TOML

from r2et.bench import ResultStore, load_config, run_bench
from r2et.bench.report import results_table
from r2et.bench.store import CELL_DIGEST_FIELD, DIGEST_MARKER, cell_content_digest
from r2et.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

#: The shared tiny grid with 8 inputs and no budget curve.
TINY = TINY_BENCH_TOML.replace("n = 16", "n = 8").replace(
    'budgets = [1.0]\nbudget_preset = "fast"', "budgets = []"
)
_CELL = ("dataset", "method", "weight_name", "weight", "seed")


@pytest.fixture(scope="module")
def tiny_toml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_toml):
    """The tiny grid (two cells) run once, uninterrupted, without a report."""
    out = tmp_path_factory.mktemp("bench") / "ref"
    cfg = load_config(tiny_toml)
    rows = run_bench(cfg, out, progress=False, report=False)
    return cfg, out, rows


@pytest.fixture
def counted(monkeypatch):
    """The methods of the cells computed while the fixture is active."""
    import r2et.bench.cells as cells

    real, calls = cells._cell_task, []

    def counting(cell, config, pretrained):
        calls.append(cell["method"])
        return real(cell, config, pretrained)

    monkeypatch.setattr(cells, "_cell_task", counting)
    return calls


def _files(out: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "cells").glob("*")}


def _table(rows, cfg) -> str:
    return results_table(rows, cfg.max_acc_drop, cfg.methods)


# ---------------------------------------------------------------------------- cell digests
def test_cells_carry_the_digest_of_their_content(reference):
    _, out, rows = reference
    assert (out / DIGEST_MARKER).is_file()
    for p in (out / "cells").glob("*.json"):
        row = json.loads(p.read_text())
        assert row[CELL_DIGEST_FIELD] == cell_content_digest(row)
    # the digest is of the values, not of the file's layout or key order
    row = rows[0]
    shuffled = dict(reversed(list(row.items())))
    assert cell_content_digest(shuffled) == cell_content_digest(row)
    assert (
        cell_content_digest({**row, "accuracy": row["accuracy"] + 1e-9}) != row[CELL_DIGEST_FIELD]
    )
    assert cell_content_digest({**row, "accuracy": float("nan")}) is None


def test_an_edited_cell_is_recomputed_and_no_other(reference, tmp_path, counted):
    cfg, ref, rows = reference
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    edited = next(r for r in rows if r["method"] == "r2et-noh")
    path = out / "cells" / f"{edited['key']}.json"
    true_value = edited["ensemble_p_at_k_mean"]
    text = path.read_text()
    assert f'"ensemble_p_at_k_mean": {true_value!r}' in text
    path.write_text(
        text.replace(f'"ensemble_p_at_k_mean": {true_value!r}', '"ensemble_p_at_k_mean": 0.999')
    )
    # a reader neither publishes nor believes the edited number
    assert [r["key"] for r in ResultStore(out).rows()] == [
        r["key"] for r in rows if r["key"] != edited["key"]
    ]
    before = _files(out)
    with pytest.warns(UserWarning, match=rf"{edited['key']} \(its content does not match"):
        again = run_bench(cfg, out, resume=True, progress=False, report=False)
    assert counted == ["r2et-noh"]  # only the edited cell
    assert json.loads(path.read_text())["ensemble_p_at_k_mean"] == true_value
    assert _table(again, cfg) == _table(rows, cfg)
    after = _files(out)
    for name, stamp in before.items():
        if name != path.name:
            assert after[name] == stamp, name  # not rewritten, not even touched
    published = json.loads((out / "results.json").read_text())
    assert {r["key"]: r["ensemble_p_at_k_mean"] for r in published}[edited["key"]] == true_value


def test_a_cell_stripped_of_its_digest_is_recomputed(reference, tmp_path, counted):
    cfg, ref, rows = reference
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    key = rows[0]["key"]
    path = out / "cells" / f"{key}.json"
    row = json.loads(path.read_text())
    del row[CELL_DIGEST_FIELD]
    path.write_text(json.dumps({**row, "accuracy": 0.5}))
    with pytest.warns(UserWarning, match=rf"{key} \(it has no content digest"):
        again = run_bench(cfg, out, resume=True, progress=False, report=False)
    assert counted == [rows[0]["method"]]
    assert _table(again, cfg) == _table(rows, cfg)


def test_cells_of_earlier_versions_are_kept_and_given_a_digest(reference, tmp_path, counted):
    """A folder written before content digests (no ``cell_sha256``, no marker) resumes with
    every cell: each gets its digest, then the folder is marked."""
    cfg, ref, rows = reference
    out = tmp_path / "legacy"
    shutil.copytree(ref, out)
    (out / DIGEST_MARKER).unlink()
    for p in (out / "cells").glob("*.json"):
        row = json.loads(p.read_text())
        del row[CELL_DIGEST_FIELD]
        p.write_text(json.dumps(row, indent=1))
    assert len(ResultStore(out).rows()) == len(rows)  # accepted as they are
    again = run_bench(cfg, out, resume=True, progress=False, report=False)
    assert counted == []
    assert _table(again, cfg) == _table(rows, cfg)
    assert (out / DIGEST_MARKER).is_file()
    for p in (out / "cells").glob("*.json"):
        row = json.loads(p.read_text())
        assert row[CELL_DIGEST_FIELD] == cell_content_digest(row)
    store = ResultStore(out)
    assert all(store.is_done({f: r[f] for f in _CELL}) for r in rows)


# ---------------------------------------------------------------------------- --workers
def test_workers_are_refused_without_a_worker_executor(reference, tiny_toml, tmp_path, capsys):
    cfg, _, _ = reference
    out = tmp_path / "w"
    with pytest.raises(ValueError, match="workers=3 needs executor 'process' or 'ray'"):
        run_bench(cfg, out, workers=3, progress=False)
    assert not out.exists()  # refused before anything was written
    rc = main(["bench", str(tiny_toml), "--out", str(out), "--workers", "3", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--workers needs --executor process or ray" in err[0]
    assert not out.exists()
    rc = main(["bench", str(tiny_toml), "--out", str(out), "--workers", "0"])
    assert rc == 2 and "--workers" in capsys.readouterr().err


def test_ray_workers_caps_the_tasks_in_flight(monkeypatch):
    """With the Ray executor ``workers`` is the number of tasks in flight at once (a fake Ray
    that runs a task when it is waited for)."""
    import types

    from r2et.bench.executors import _run_ray

    state = {"in_flight": 0, "most": 0}

    class Ref:
        def __init__(self, value):
            self.value = value

    def remote(**_):
        def wrap(fn):
            def submit(*args):
                state["in_flight"] += 1
                state["most"] = max(state["most"], state["in_flight"])
                return Ref(fn(*args))

            return types.SimpleNamespace(remote=submit)

        return wrap

    def wait(refs, num_returns):
        state["in_flight"] -= 1
        return refs[-1:], refs[:-1]

    fake = types.SimpleNamespace(
        is_initialized=lambda: True,
        cluster_resources=lambda: {"CPU": 8},
        remote=remote,
        wait=wait,
        get=lambda ref: ref.value,
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    bar = types.SimpleNamespace(update=lambda n: None)
    for workers, expect in ((2, 2), (None, 7)):
        got: dict[int, int] = {}
        state["most"] = 0
        _run_ray(lambda x: x * x, [(i,) for i in range(7)], got.__setitem__, bar,
                 {"workers": workers})  # fmt: skip
        assert got == {i: i * i for i in range(7)} and state["most"] == expect


# ---------------------------------------------------------------------------- orphans
def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (scanning /proc: ``task/*/children`` is not everywhere)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")), "")
        if ppid == str(pid):
            kids.append(int(entry.name))
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper has died)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _loading_data(pid: int) -> bool:
    """True once worker ``pid`` runs its job: it has loaded the dataset, so scikit-learn's
    libraries are mapped (importing the worker's code does not import scikit-learn)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    return "/sklearn/" in maps or "/scipy/" in maps


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_process_workers_die_with_a_killed_bench(tmp_path):
    """SIGKILL of ``r2et bench --executor process``: its worker processes, busy pre-training,
    are gone within seconds instead of computing on as orphans."""
    toml = tmp_path / "long.toml"
    # two seeds: two pre-training jobs, one per worker, each far longer than the test
    toml.write_text(
        TINY.replace("seeds = [0]", "seeds = [0, 1]").replace("epochs = 1", "epochs = 100000", 1)
    )
    cmd = [sys.executable, "-m", "r2et.cli", "bench", str(toml), "--out", str(tmp_path / "out"),
           "--executor", "process", "--workers", "2", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            workers = [p for p in _children(proc.pid) if "multiprocessing" in _cmdline(p)]
            workers = [p for p in workers if "resource_tracker" not in _cmdline(p)]
            if len(workers) == 2 and all(_loading_data(p) for p in workers):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert len(workers) == 2, workers
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.05)
        assert not [p for p in workers if _alive(p)], "orphaned workers kept running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in workers:  # the test's own processes, should they have survived
            if _alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        if proc.stderr:
            proc.stderr.close()
