"""Hardening (issue 11): broken models are refused, checkpoints carry a weight digest, bench
units are atomic and validated, the output folder is locked, and every user mistake is one
line on stderr with a documented exit code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_BENCH_TOML

from r2et import Explainer, build_model, evaluate, fit, get_method, load_dataset
from r2et._io import FolderLock, FolderLockedError, atomic_write_bytes, is_temp_name
from r2et.bench import load_config, run_bench
from r2et.bench.report import results_table
from r2et.bench.store import ResultStore
from r2et.cli import main
from r2et.train import load_model_into, load_run, save_run

TINY = TINY_BENCH_TOML

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp(seed: int = 0, n_in: int = 30) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", [n_in], 2, hidden=[8]).eval()


def _one_line_error(capsys, code: int, rc: int, match: str | None = None) -> str:
    """The command returned ``code`` and wrote exactly one line, without a traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert rc == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    if match is not None:
        assert match in lines[0], lines[0]
    return lines[0]


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temp_name(p.name)]


@pytest.fixture(scope="module")
def ds():
    return load_dataset("breast-cancer")


@pytest.fixture(scope="module")
def tiny_toml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_toml):
    """The tiny grid run once, uninterrupted."""
    out = tmp_path_factory.mktemp("bench") / "ref"
    cfg = load_config(tiny_toml)
    rows = run_bench(cfg, out, progress=False)
    return cfg, out, rows


def _table(rows, cfg) -> str:
    return results_table(rows, cfg.max_acc_drop, cfg.methods)


# ---------------------------------------------------------------------------- broken models
def test_nan_weights_are_never_scored(ds, tmp_path):
    model = _mlp()
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite weights"):
        evaluate(model, ds, Explainer("grad"), k=5, n=8)
    with pytest.raises(ValueError, match="NaN or Inf"):
        Explainer("grad").scores(model, ds.split("test")[0][:4])
    with pytest.raises(ValueError, match="non-finite weights"):
        save_run(tmp_path / "nan", model)
    with pytest.raises(ValueError, match="non-finite"):
        fit(model, "vanilla", ds, epochs=1, progress=False)


def test_nan_checkpoint_is_refused_by_the_cli(tmp_path, capsys):
    """A checkpoint whose weights were replaced by NaN (digest updated too, as an attacker
    would) is refused by evaluate and explain: no P@k 1.000 from a broken model."""
    from safetensors.torch import load, save

    run = tmp_path / "run"
    save_run(run, _mlp(), {"dataset": "breast-cancer", "seed": 0})
    state = load((run / "model.safetensors").read_bytes())
    state = {k: torch.full_like(v, float("nan")) for k, v in state.items()}
    data = save(state, metadata={"format": "pt"})
    (run / "model.safetensors").write_bytes(data)
    cfg = json.loads((run / "config.json").read_text())
    import hashlib

    from r2et.runs import _run_digest

    cfg["weights_sha256"] = hashlib.sha256(data).hexdigest()
    cfg["run_sha256"] = _run_digest(cfg["weights_sha256"], cfg)
    (run / "config.json").write_text(json.dumps(cfg))
    rc = main(["evaluate", str(run), "--n", "5", "--preset", "fast", "--no-progress"])
    _one_line_error(capsys, 2, rc, "non-finite")
    rc = main(["explain", str(run), "--out", str(tmp_path / "s.png")])
    _one_line_error(capsys, 2, rc, "non-finite")
    assert not (tmp_path / "s.png").exists()


def test_nan_inputs_are_refused_by_training(ds):
    model = _mlp()
    x, y, _ = ds.split("train")
    x = x[:8].clone()
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        get_method("vanilla").loss(model, x, y[:8])
    bad = load_dataset("breast-cancer")
    bad.train[0][3, 2] = float("inf")
    with pytest.raises(ValueError, match="train inputs contains NaN or Inf"):
        fit(_mlp(), "vanilla", bad, epochs=1, progress=False)


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_records_and_checks_the_weight_digest(tmp_path):
    import hashlib

    from safetensors.torch import load, save

    run = tmp_path / "run"
    save_run(run, _mlp())
    cfg = json.loads((run / "config.json").read_text())
    data = (run / "model.safetensors").read_bytes()
    assert cfg["weights_sha256"] == hashlib.sha256(data).hexdigest()
    load_run(run)
    # other, finite weights in a valid safetensors file: refused
    state = {k: v + 0.01 for k, v in load(data).items()}
    (run / "model.safetensors").write_bytes(save(state, metadata={"format": "pt"}))
    with pytest.raises(ValueError, match="SHA-256"):
        load_run(run)
    with pytest.raises(ValueError, match="SHA-256"):
        load_model_into(_mlp(seed=1), run)
    assert torch.equal(load_run(run, verify=False).model.net[1].weight, state["net.1.weight"])
    # a config without a digest cannot be verified
    del cfg["weights_sha256"]
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="weights_sha256"):
        load_run(run)


def test_absurd_model_spec_is_refused_before_allocation(tmp_path):
    run = tmp_path / "run"
    save_run(run, _mlp())
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["hidden"] = [10**9, 10**9]
    (run / "config.json").write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="parameters; the limit is"):
        load_run(run, verify=False)
    assert time.perf_counter() - t0 < 5
    cfg["model"]["hidden"] = [-4]
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not describe a model"):
        load_run(run, verify=False)


def test_new_run_folder_is_one_unit_and_modes_follow_umask(tmp_path, monkeypatch):
    """An interrupted save_run into a new folder leaves nothing; files get 0o666 & ~umask."""
    import r2et._io as io_mod

    calls = {"n": 0}
    real = io_mod._write_data

    def boom(fd, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(fd, data)

    monkeypatch.setattr(io_mod, "_write_data", boom)
    with pytest.raises(KeyboardInterrupt):
        save_run(tmp_path / "run", _mlp())
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(io_mod, "_write_data", real)
    old = os.umask(0o027)
    try:
        save_run(tmp_path / "run", _mlp())
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    for p in [*(tmp_path / "run").iterdir(), tmp_path / "f.bin"]:
        assert p.stat().st_mode & 0o777 == 0o640, p
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o750
    assert not _temps(tmp_path)


# ---------------------------------------------------------------------------- library errors
def test_library_errors_are_value_errors(ds):
    model = _mlp()
    x = ds.split("test")[0][:4]
    ex = Explainer("grad")
    with pytest.raises(ValueError, match="does not fit the model"):
        ex.scores(model, x[:, :7])
    with pytest.raises(ValueError, match="dtype"):
        ex.scores(model, x.double())
    with pytest.raises(ValueError, match="device"):
        ex.scores(_mlp().to("meta"), x)
    with pytest.raises(ValueError, match="integer classes"):
        ex.scores(model, x, target=torch.zeros(4))
    with pytest.raises(ValueError, match="must lie in 0..1"):
        ex.scores(model, x, target=5)
    with pytest.raises(ValueError, match=">= 0"):
        ex.scores(model, x, target=-1)
    with pytest.raises(ValueError, match="labels"):
        get_method("vanilla").loss(model, x, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="integer class labels"):
        get_method("vanilla").loss(model, x, torch.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        Explainer("ig", baseline=float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        Explainer("ig", baseline=torch.full((30,), float("nan")))
    with pytest.raises(ValueError, match="broadcast"):
        Explainer("ig", baseline=torch.zeros(7)).scores(model, x)
    with pytest.raises(ValueError, match="does not fit the model"):
        evaluate(_mlp(n_in=31), ds, ex, k=5, n=4)


def test_csv_loader_refuses_inf_and_dropping_the_target(tmp_path):
    rows = ["a,b,y"] + [f"{i},{i % 3},{i % 2}" for i in range(30)]
    for bad in ("inf", "-inf", "-Infinity"):
        path = tmp_path / "x.csv"
        path.write_text("\n".join(rows + [f"{bad},1,0"]) + "\n")
        with pytest.raises(ValueError, match="Inf"):
            load_dataset("csv", path=path, target="y")
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match="target column 'y'"):
        load_dataset("csv", path=path, target="y", drop=["y"])
    with pytest.raises(ValueError, match="list of column names"):
        load_dataset("csv", path=path, target="y", drop="a")
    assert load_dataset("csv", path=path, target="y", drop=["b"]).input_shape == (1,)


# ---------------------------------------------------------------------------- bench store
def test_cell_files_are_validated_not_trusted(reference, tmp_path):
    cfg, ref, rows = reference
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    cells = out / "cells"
    names = sorted(p.name for p in cells.glob("*.json"))
    assert len(names) == 2
    good = json.loads((cells / names[0]).read_text())
    # a stray file that looks like a cell of another method, an empty file in place of a real
    # cell, an edited metric, and a cell of another configuration
    (cells / "stray.json").write_text(json.dumps({**good, "method": "sp", "accuracy": 0.0}))
    (cells / "empty.json").write_text("")
    (cells / names[0]).write_text("")
    second = json.loads((cells / names[1]).read_text())
    (cells / names[1]).write_text(json.dumps({**second, "config_sha256": "0" * 64}))
    store = ResultStore(out, good["config_sha256"], models=True)
    assert store.rows() == []
    with pytest.warns(UserWarning, match="ignoring 2 file"):
        again = run_bench(cfg, out, resume=True, progress=False, report=False)
    assert _table(again, cfg) == _table(rows, cfg)
    published = json.loads((out / "results.json").read_text())
    assert sorted(r["key"] for r in published) == sorted(r["key"] for r in rows)
    assert {r["method"] for r in published} == {"vanilla", "r2et-noh"}
    # an edited metric is not a finished cell either
    row = json.loads((cells / names[0]).read_text())
    (cells / names[0]).write_text(json.dumps({**row, "accuracy": 2.0}))
    assert not store.is_done(
        {k: row[k] for k in ("dataset", "method", "weight_name", "weight", "seed")}
    )


def test_tampered_pretrained_model_is_trained_again(reference, tmp_path):
    cfg, ref, rows = reference
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    pre = next((out / "pretrain").iterdir())
    data = bytearray((pre / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (pre / "model.safetensors").write_bytes(bytes(data))
    for p in (out / "cells").glob("*.json"):
        p.unlink()
    with pytest.warns(UserWarning, match="invalid"):
        again = run_bench(cfg, out, resume=True, progress=False, report=False)
    assert _table(again, cfg) == _table(rows, cfg)
    load_run(pre)  # retrained and committed again


def test_output_folder_lock(reference, tmp_path, capsys, tiny_toml):
    cfg, ref, _ = reference
    out = tmp_path / "locked"
    with FolderLock(out):
        with pytest.raises(FolderLockedError, match="in use by another r2et process"):
            run_bench(cfg, out, progress=False)
        with pytest.raises(FolderLockedError):
            FolderLock(out).acquire()
        rc = main(["bench", str(tiny_toml), "--out", str(out), "--no-progress"])
        _one_line_error(capsys, 5, rc, f"pid {os.getpid()}")
    assert not (out / "cells").exists()
    # a lock file left by a dead process is not a lock: the next run takes it
    (out / ".r2et.lock").write_text("999999999\n")
    with FolderLock(out) as lock:
        assert lock.path.read_text().strip() == str(os.getpid())


def test_leftover_temporaries_are_removed_and_modes_are_ordinary(reference, tmp_path):
    cfg, ref, rows = reference
    assert not _temps(ref)
    umask = os.umask(0)
    os.umask(umask)
    for p in ref.rglob("*"):
        want = 0o777 if p.is_dir() else 0o666
        assert p.stat().st_mode & 0o777 == want & ~umask, p
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    (out / "cells" / ".x.json.0123456789ab.tmp").write_text("{")
    (out / "pretrain" / ".breast-cancer__seed0.0123456789ab.tmpdir").mkdir()
    (out / "plots" / ".training_cost.tmp.png").write_bytes(b"")
    (out / "keep.tmp").write_text("user file")  # not a name r2et writes: kept
    run_bench(cfg, out, resume=True, progress=False, report=False)
    assert not _temps(out)
    assert (out / "keep.tmp").exists()


def test_out_must_be_a_folder(reference, tmp_path, capsys, tiny_toml):
    cfg, _, _ = reference
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        run_bench(cfg, afile, progress=False)
    with pytest.raises(ValueError, match="is a file"):
        run_bench(cfg, afile / "sub", progress=False)
    with pytest.raises(ValueError, match="empty"):
        run_bench(cfg, "", progress=False)
    rc = main(["bench", str(tiny_toml), "--out", str(afile)])
    _one_line_error(capsys, 2, rc, "is a file")
    rc = main(["train", "breast-cancer", "--out", str(afile / "x")])
    _one_line_error(capsys, 2, rc, "is a file")


# ---------------------------------------------------------------------------- fault injection
class _Recorder:
    """Counts (and at ``kill_at`` acts on) every write step of the run: half of each data
    write, each rename. At the chosen step the process dies at once (``os._exit``: no
    ``finally``, no clean-up), as under ``kill -9``."""

    def __init__(self, kill_at: int | None) -> None:
        self.kill_at = kill_at
        self.n = 0

    def step(self) -> None:
        if self.kill_at is not None and self.n == self.kill_at:
            os._exit(9)
        self.n += 1

    def install(self, monkeypatch) -> None:
        import r2et._io as io_mod

        real_write, real_replace, real_rename = io_mod._write_data, os.replace, os.rename

        def write(fd, data):
            real_write(fd, data[: len(data) // 2])
            self.step()  # dies half-way through a file
            real_write(fd, data[len(data) // 2 :])

        def replace(src, dst):
            self.step()  # dies before the rename
            real_replace(src, dst)

        def rename(src, dst):
            self.step()
            real_rename(src, dst)

        monkeypatch.setattr(io_mod, "_write_data", write)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "rename", rename)


def _killed_run(cfg, out: Path, kill_at: int) -> int:
    """Run the bench in a forked child that dies at write step ``kill_at``; returns its
    exit status (9: killed there, 0: finished first)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            mp = pytest.MonkeyPatch()
            _Recorder(kill_at).install(mp)
            run_bench(cfg, out, progress=False)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_at_any_write_then_resume_gives_the_uninterrupted_table(
    reference, tmp_path, monkeypatch
):
    cfg, _, rows = reference
    counter = _Recorder(None)
    with monkeypatch.context() as mp:
        counter.install(mp)
        run_bench(cfg, tmp_path / "count", progress=False)
    total = counter.n
    assert total > 30  # pre-training unit, cell units, tables, report and plots
    points = sorted({0, 1, 3, 5, total // 4, total // 2, 3 * total // 4, total - 1})
    for i in points:
        out = tmp_path / f"kill{i}"
        assert _killed_run(cfg, out, i) == 9
        resumed = run_bench(cfg, out, resume=True, progress=False)
        assert _table(resumed, cfg) == _table(rows, cfg), f"killed at write step {i}"
        assert not _temps(out), f"killed at write step {i}"
        assert len(list((out / "cells").glob("*.json"))) == len(rows)


def _bench_cmd(toml: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "r2et.cli",
        "bench",
        str(toml),
        "--out",
        str(out),
        "--no-progress",
    ]


def test_real_kill_inside_a_unit_then_resume(reference, tiny_toml, tmp_path):
    """SIGKILL as the pre-training unit is being written, then ``--resume`` in a new
    process: the uninterrupted table."""
    cfg, _, rows = reference
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_bench_cmd(tiny_toml, out), env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "pretrain").is_dir():  # created right before its unit's temporary folder
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for unit in (out / "pretrain").iterdir():  # nothing, or a whole unit
        if not is_temp_name(unit.name):
            load_run(unit)
    res = subprocess.run(
        [*_bench_cmd(tiny_toml, out), "--resume"], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert _table(ResultStore(out).rows(), cfg) == _table(rows, cfg)
    assert not _temps(out)


def test_ctrl_c_is_one_line_and_releases_the_lock(tiny_toml, tmp_path):
    out = tmp_path / "int"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_bench_cmd(tiny_toml, out), env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "config.json").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0], err
    assert not _temps(out)
    FolderLock(out).acquire().release()  # released


# ---------------------------------------------------------------------------- CLI mistakes
BAD_TOML = {
    "section is not a table": ("pretrain = 3", "[pretrain] must be a table"),
    "unknown key in a section": ("[pretrain]\nepoch = 3", "unknown key(s) ['epoch']"),
    "unknown dataset option": (
        '[datasets_options.breast-cancer]\ncolour = "red"',
        "unknown key(s) ['colour']",
    ),
    "k = 0": ("[datasets_options.breast-cancer]\nk = 0", "k must be an int >= 1"),
    "k too large": ("[datasets_options.breast-cancer]\nk = 30", "outside the allowed range"),
    "negative eps": ("[datasets_options.breast-cancer]\neps = -0.1", "eps must be"),
    "nan weight": ('methods = ["vanilla", "r2et"]\n[grid]\nr2et = [nan]', "grid.r2et"),
    "negative weight": ('methods = ["vanilla", "r2et"]\n[grid]\nr2et = [-1.0]', "grid.r2et"),
    "weight of vanilla": ("[grid]\nvanilla = [1.0]", "has no weight"),
    "anchored method without pre-training": (
        'methods = ["vanilla", "r2et-anchor"]\n[pretrain]\nepochs = 0',
        "pretrain.epochs must be > 0",
    ),
    "negative budget": ("[evaluate]\nbudgets = [-0.5]", "evaluate.budgets"),
    "duplicate seeds": ("seeds = [0, 0]", "must not repeat"),
    "seeds of the wrong type": ('seeds = "0"', "seeds must be"),
    "datasets as a string": ('datasets = "adult"', "datasets must be"),
    "absurd model": (
        '[datasets_options.breast-cancer.model]\nname = "mlp"\nhidden = [1000000000, 100]',
        "the limit is",
    ),
    "bad model keyword": (
        '[datasets_options.breast-cancer.model]\nname = "mlp"\nwidth = "x"',
        "does not describe a model",
    ),
    "bad method parameter": (
        "[datasets_options.breast-cancer.params.r2et-noh]\nlam = -1.0",
        "lam",
    ),
    "threads 0": ("threads = 0", "threads must be"),
    "bogus device": ('device = "gpu7"', "not a device"),
    "not TOML": ("datasets = [", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOML))
def test_bad_bench_config_fails_before_any_training(case, tmp_path, capsys, monkeypatch):
    import r2et.bench.cells as cells
    import r2et.bench.runner as runner

    def must_not_run(*a, **k):
        raise AssertionError("training started before the configuration was checked")

    monkeypatch.setattr(runner, "pretrain_task", must_not_run)
    monkeypatch.setattr(cells, "_cell_task", must_not_run)
    text, match = BAD_TOML[case]
    overridden = {
        line.split("=")[0].strip()
        for line in text.splitlines()
        if "=" in line and "[" not in line[:1]
    }
    base = TINY.split("[pretrain]")[0].strip().splitlines()
    head = "\n".join(line for line in base if line.split("=")[0].strip() not in overridden)
    toml = tmp_path / "bad.toml"
    toml.write_text(head + "\n" + text + "\n")
    out = tmp_path / "out"
    rc = main(["bench", str(toml), "--out", str(out), "--no-progress"])
    _one_line_error(capsys, 2, rc, match)
    assert not (out / "config.json").exists()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "breast-cancer", "--out", "{tmp}/r", "--device", "bogus"], "--device"),
        (["train", "breast-cancer", "--out", "{tmp}/r", "--device", "cuda:7"], "--device"),
        (["train", "breast-cancer", "--out", "{tmp}/r", "--param", "k=0"], "k=0 is outside"),
        (["train", "breast-cancer", "--out", "{tmp}/r", "--k", "30"], "--k=30 is outside"),
        (["train", "breast-cancer", "--out", "{tmp}/r", "--param", "lam"], "KEY=VALUE"),
        (
            ["train", "breast-cancer", "--out", "{tmp}/r", "--model-param", 'hidden=["x"]'],
            "does not describe a model",
        ),
        (
            ["train", "breast-cancer", "--out", "{tmp}/r", "--model-param", "hidden=[100000000]"],
            "the limit is",
        ),
        (["train", "breast-cancer", "--out", ""], "must not be empty"),
        (["train", "breast-cancer", "--out", "{tmp}/r", "--epochs", "-1"], "--epochs"),
        (["train", "breast-cancer", "--out", "{tmp}/r", "--lr", "nan"], "--lr"),
        (["demo", "--k", "30"], "--k=30 is outside 1..29"),
        (["demo", "--k", "0"], "--k"),
        (["bench", "--threads", "-1"], "--threads"),
        (["bench", "--threads", "0"], "--threads"),
        (["bench", "--out", ""], "must not be empty"),
        (["bench", "--datasets", ""], "--datasets"),
        (["bench", "--seeds", "0,0"], "must not repeat"),
        (["bench", "--seeds", "1,,2"], "--seeds"),
        (["bench", "--weights", "nan"], "grid"),
        (["bench", "--device", "tpu"], "device"),
        (["bench", "--epochs", "-2"], "--epochs"),
        (["explain", "{tmp}", "--out", "{tmp}"], "is a folder"),
        (["evaluate", "{tmp}/none"], "does not exist"),
    ],
)
def test_user_mistakes_are_one_line_exit_2(argv, match, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "bench" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "b")]
    rc = main(argv)
    _one_line_error(capsys, 2, rc, match)
    assert not (tmp_path / "r").exists() and not (tmp_path / "b" / "config.json").exists()


def test_unwritable_out_is_found_before_training(tmp_path, capsys, monkeypatch):
    """A read-only or full file system under --out is reported before any work (exit 2)."""
    import r2et.cli.args as cli_args
    import r2et.train as train

    def no_fit(*a, **k):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(train, "fit", no_fit)
    real_open = os.open

    def read_only(path, flags, mode=0o777, **kw):
        if ".r2et-probe." in str(path):
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(cli_args.os, "open", read_only)
    rc = main(["train", "breast-cancer", "--out", str(tmp_path / "r")])
    _one_line_error(capsys, 2, rc, "not writable (Read-only file system)")


def test_os_errors_interrupts_and_bugs_have_their_own_exit_codes(tmp_path, capsys, monkeypatch):
    import r2et._io as io_mod
    import r2et.cli as cli
    import r2et.cli.app as cli_app

    def disk_full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_mod, "_write_data", disk_full)
    argv = ["train", "breast-cancer", "--epochs", "0", "--no-progress"]
    rc = main([*argv, "--out", str(tmp_path / "r")])
    _one_line_error(capsys, 3, rc, "No space left on device")
    assert not _temps(tmp_path) and not (tmp_path / "r").exists()
    monkeypatch.undo()

    def raiser(exc):
        def cmd(args):
            raise exc

        return cmd

    for exc, code, text in [
        (KeyboardInterrupt(), 130, "interrupted"),
        (cli.Terminated(), 143, "terminated"),
        (ZeroDivisionError("boom"), 4, "internal error: ZeroDivisionError: boom"),
        (MemoryError(), 3, "out of memory"),
        (PermissionError(13, "Permission denied", "/x"), 3, "Permission denied: /x"),
    ]:
        monkeypatch.setattr(cli_app, "cmd_methods", raiser(exc))  # build_parser binds it anew
        _one_line_error(capsys, code, main(["methods"]), text)
        rc = main(["methods", "--debug"])
        err = capsys.readouterr().err
        assert rc == code and "Traceback" in err, err


def test_help_documents_exit_codes(capsys):
    assert main(["bench", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("2 bad input", "3 system error", "4 internal error", "5 output folder locked"):
        assert text in out


# ---------------------------------------------------------------------------- properties
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

_FLAGS = {
    "train": ["--k", "--epochs", "--lr", "--batch-size", "--seed", "--weight"],
    "evaluate": ["--k", "--n", "--steps", "--eps", "--seed", "--thickness-radius"],
    "bench": ["--epochs", "--n", "--threads"],
    "explain": ["--index", "--k"],
    "demo": ["--k", "--epochs", "--seed"],
}
_BAD_NUMBERS = st.one_of(
    st.integers(max_value=0).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "", " ", "1.5.2", "0x10", "k=0"]),
    st.text(max_size=8).filter(lambda t: t != "--"),  # argparse reads "--" as "no value"
)


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
@hypothesis.given(command=st.sampled_from(sorted(_FLAGS)), data=st.data(), value=_BAD_NUMBERS)
def test_parser_refuses_bad_numbers_in_one_line(command, data, value):
    """Random bad values for numeric flags: accepted only when valid, otherwise exit 2 with
    one line (never a traceback)."""
    import contextlib
    import io

    from r2et.cli import build_parser

    flag = data.draw(st.sampled_from(_FLAGS[command]))
    argv = [command] + (["run"] if command in ("evaluate", "explain") else [])
    argv += ["breast-cancer"] if command == "train" else []
    argv += [f"{flag}={value}"] + (["--out", "o"] if command == "train" else [])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 2
            lines = err.getvalue().strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in err.getvalue()
            return
    got = getattr(args, flag.lstrip("-").replace("-", "_"))
    assert isinstance(got, (int, float)) and got == got and abs(got) != float("inf")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**12) | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_KEYS = st.sampled_from(
    ["datasets", "methods", "seeds", "grid", "pretrain", "finetune", "evaluate",
     "datasets_options", "max_acc_drop", "min_deletion_ratio", "device", "threads",
     "save_models", "colour"]
)  # fmt: skip


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(data=st.dictionaries(_KEYS, _JSON, max_size=3))
def test_random_bench_configs_fail_with_one_line_value_errors(data):
    """Any table given as a benchmark configuration is accepted or refused with a one-line
    ``ValueError`` (never ``TypeError``, ``KeyError``, ``AttributeError``...)."""
    from r2et.bench.config import BenchConfig

    try:
        BenchConfig.from_dict(data)
    except ValueError as err:
        assert "\n" not in str(err)


@hypothesis.settings(max_examples=80, deadline=None, derandomize=True)
@hypothesis.given(
    k=_JSON,
    name=st.sampled_from(["r2et", "sp", "vanilla", "magic", ""]),
    hp=st.dictionaries(
        st.sampled_from(["lam", "mu", "beta", "h", "m", "colour"]), _JSON, max_size=2
    ),
)
def test_random_method_arguments_fail_with_one_line_errors(k, name, hp):
    try:
        get_method(name, k=k, **hp)
    except (ValueError, TypeError) as err:
        assert "\n" not in str(err)


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
@hypothesis.given(
    shape=st.lists(st.integers(0, 40), min_size=1, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int64]),
    target=st.one_of(st.none(), st.integers(-3, 4)),
)
def test_random_inputs_to_the_explainer_fail_with_value_errors(shape, dtype, target):
    model = _mlp()
    x = torch.zeros([2, *shape], dtype=dtype)
    try:
        Explainer("grad").scores(model, x, target=target)
    except ValueError as err:
        assert "\n" not in str(err)
