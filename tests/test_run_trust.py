"""A run folder is data (issue 23): loading imports nothing outside r2et and torch without
``trust_factory``, dunder factory paths are refused always, the model section is covered by
the run's digest, factories are checked on the meta device before any allocation, every
overwrite of a run folder is one atomic unit (old or new, never neither), ``r2et train``
refuses a non-empty ``--out`` without ``--overwrite``, and out-of-memory maps to exit 3."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import r2et
import r2et._io as io_mod
import r2et.rebuild as rebuild_mod
import r2et.runs as runs_mod
import r2et.train as train_mod
from r2et import build_model
from r2et._io import is_temp_name
from r2et.cli import main
from r2et.runs import _run_digest
from r2et.train import load_model_into, load_run, save_run


def _linear_run(folder: Path, seed: int = 0) -> nn.Linear:
    """A run of ``torch.nn:Linear(3, 2)`` saved with its factory (rebuilt without trust)."""
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    kwargs = {"in_features": 3, "out_features": 2}
    save_run(folder, model, {}, {}, factory="torch.nn:Linear", factory_kwargs=kwargs)
    return model


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", [4], 2, hidden=[3])


def _edit(folder: Path, edit, *, forge: bool = True) -> dict:
    """Edit ``config.json``; with ``forge`` recompute ``run_sha256`` as a forger would (the
    checks after the digest must hold on their own); returns the new config."""
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    edit(cfg)
    if forge and "run_sha256" in cfg:
        cfg["run_sha256"] = _run_digest(cfg["weights_sha256"], cfg)
    path.write_text(json.dumps(cfg))
    return cfg


def _set_factory(path: str, **kwargs):
    def edit(cfg: dict) -> None:
        cfg["model"]["factory"] = path
        if kwargs:
            cfg["model"]["kwargs"] = kwargs

    return edit


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_line(capsys, rc: int, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ (a) nothing is imported
EVIL = textwrap.dedent(
    """
    from pathlib import Path

    Path({marker!r}).write_text("imported")
    from torch import nn


    class Net(nn.Linear):
        pass
    """
)


def test_package_beside_the_run_is_never_imported_without_trust(tmp_path, monkeypatch, capsys):
    run = tmp_path / "runY"
    _linear_run(run)
    marker = tmp_path / "MARKER"
    (run / "evil.py").write_text(EVIL.format(marker=str(marker)))
    _edit(run, _set_factory("runY.evil:Net"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("runY", "runY.evil"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import importlib.util

    assert importlib.util.find_spec("runY.evil") is not None  # the attack would work
    before = _tree(run)
    for verify in (True, False):
        with pytest.raises(ValueError, match=r"runY\.evil:Net.*trust_factory=True"):
            load_run("runY", verify=verify)
    assert not marker.exists() and "runY.evil" not in sys.modules
    _one_line(capsys, main(["evaluate", "runY"]), 2, "runY.evil:Net", "--trust-factory")
    _one_line(capsys, main(["explain", "runY", "--out", "s.png"]), 2, "runY.evil:Net")
    assert not marker.exists() and "runY.evil" not in sys.modules
    assert _tree(run) == before
    # the factory is imported and called only when trusted
    try:
        assert type(load_run("runY", trust_factory=True).model).__name__ == "Net"
        assert marker.read_text() == "imported"
    finally:
        for name in ("runY", "runY.evil"):
            sys.modules.pop(name, None)


def test_untrusted_factory_must_be_a_public_module_class_of_r2et_or_torch(tmp_path):
    run = tmp_path / "run"
    model = _linear_run(run)
    sys.modules.pop("json.tool", None)
    for path, match in [
        ("json.tool:main", "outside r2et and torch"),
        ("torch._C:Generator", "outside r2et and torch"),
        ("torch.nn:_reduction", "outside r2et and torch"),
        ("torch.nn.functional:linear", "not an nn.Module class"),
        ("r2et.train:save_run", "not an nn.Module class"),
        ("torch.nn:Linear.forward", "not an nn.Module class"),
        ("torch.nn:Linear", None),
    ]:
        _edit(run, _set_factory(path))
        if match is None:
            assert torch.equal(load_run(run).model.weight, model.weight)
            continue
        with pytest.raises(ValueError, match=match):
            load_run(run)
    assert "json.tool" not in sys.modules  # checked before the import


# --------------------------------------------------------- (b) dunder paths, always refused
@pytest.mark.parametrize(
    "path",
    [
        "venv.__main__:X",
        "r2et.__main__:X",
        "runY.__init__:Net",
        "torch.nn:Linear.__init__",
        "os:__builtins__",
        "__main__:Net",
    ],
)
def test_dunder_factory_paths_are_refused_even_with_trust(tmp_path, capsys, path):
    run = tmp_path / "run"
    _linear_run(run)
    _edit(run, _set_factory(path))
    mods = set(sys.modules)
    before = _tree(run)
    for trust in (False, True):
        with pytest.raises(ValueError, match="dunder"):
            load_run(run, trust_factory=trust)
    for extra in ([], ["--trust-factory"]):
        _one_line(capsys, main(["evaluate", str(run), *extra]), 2, "dunder", path)
    assert _tree(run) == before  # no virtual environment, nothing created in the run
    assert not {m for m in set(sys.modules) - mods if "__main__" in m or m.startswith("venv")}
    # and nothing with such a path can be saved in the first place
    with pytest.raises(ValueError, match="dunder|must read"):
        save_run(tmp_path / "other", nn.Linear(3, 2), factory=path)


# ------------------------------------------------------------- (c) the run's digest
def test_model_section_is_covered_by_the_run_digest(tmp_path):
    run = tmp_path / "run"
    model = _mlp()
    save_run(run, model, {"note": "a"}, {"acc": 0.5})
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["run_sha256"] == _run_digest(cfg["weights_sha256"], cfg)
    other = tmp_path / "other"
    save_run(other, build_model("mlp", [4], 2, hidden=[5]))
    assert json.loads((other / "config.json").read_text())["run_sha256"] != cfg["run_sha256"]
    original = (run / "config.json").read_text()
    edits = [
        lambda c: c["model"].__setitem__("hidden", [5]),
        lambda c: c.__setitem__("transforms", [{"name": "relu_to_softplus", "beta": 2.0}]),
        lambda c: c.__setitem__("dtype", "float64"),
        lambda c: c.__setitem__("data_seed", 10**30),  # another split, silently
        lambda c: c.__setitem__("data_params", {"missing": "drop"}),
        lambda c: c.__setitem__("dataset", {"name": "adult"}),
    ]
    for edit in edits:
        _edit(run, edit, forge=False)
        with pytest.raises(ValueError, match="model or data sections .* changed"):
            load_run(run)
        with pytest.raises(ValueError, match="run_sha256"):
            load_model_into(_mlp(seed=1), run)
        (run / "config.json").write_text(original)
    # other keys are not covered (the bench re-tags config_sha256 in place)
    _edit(run, lambda c: c.__setitem__("config_sha256", "retagged"), forge=False)
    loaded = load_run(run)
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.parameters(), model.parameters()))
    # a run saved before run_sha256 existed loads exactly as before
    _edit(run, lambda c: c.pop("run_sha256"), forge=False)
    loaded = load_run(run)
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.parameters(), model.parameters()))
    assert loaded.metrics == {"acc": 0.5}
    into = load_model_into(_mlp(seed=1), run)
    assert all(torch.equal(a, b) for a, b in zip(into.parameters(), model.parameters()))


# ------------------------------------------------- (d) meta build before any allocation
def test_huge_factory_is_refused_before_allocation(tmp_path, capsys):
    run = tmp_path / "run"
    _linear_run(run)
    _edit(run, _set_factory("torch.nn:Linear", in_features=10**6, out_features=10**6))
    for trust in (False, True):
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match="parameters and buffers; the limit is 500,000,000"):
            load_run(run, trust_factory=trust)
        assert time.perf_counter() - t0 < 2
    for extra in ([], ["--trust-factory"]):
        _one_line(capsys, main(["evaluate", str(run), *extra]), 2, "the limit is")
    _edit(run, lambda c: c.pop("run_sha256"), forge=False)  # an old-style run: same checks
    with pytest.raises(ValueError, match="the limit is"):
        load_run(run)
    # a factory that does not build on the meta device cannot be checked: refused
    _edit(run, _set_factory("torch.nn:Linear", in_features="x", out_features=2))
    with pytest.raises(ValueError, match="cannot be built on the meta device"):
        load_run(run)


def test_an_explicit_device_kwarg_does_not_escape_the_meta_build(tmp_path):
    """``device="cpu"`` in the JSON kwargs must not make the shadow build allocate for real:
    two buffers of 400M elements would take 3.2 GB before the check. Measured in a fresh
    process, whose peak memory is its own."""
    import subprocess

    run = tmp_path / "run"
    _linear_run(run)
    big = {"num_features": 400_000_000, "affine": False, "device": "cpu"}
    _edit(run, _set_factory("torch.nn:BatchNorm1d", **big))
    code = (
        "import resource, sys, r2et\n"
        "try:\n    r2et.load_run(sys.argv[1])\nexcept ValueError as e:\n    print('refused', e)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=120
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("refused") and "the limit is 500,000,000" in lines[0], out
    peak_mib = int(lines[-1]) / 1024
    assert peak_mib < 1500, f"the meta build allocated: peak {peak_mib:.0f} MiB"


def test_a_build_that_loops_is_stopped(tmp_path, monkeypatch):
    """A public torch class whose kwargs make the meta build itself run for hours (10^8
    layers of a few parameters each) is stopped by the registration counts or the time
    limit, not left running (a denial of service, not code execution)."""
    run = tmp_path / "run"
    _linear_run(run)
    _edit(run, _set_factory("torch.nn:LSTM", input_size=1, hidden_size=1, num_layers=10**8))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="registers more than 10,000 parameters"):
        load_run(run)
    assert time.perf_counter() - t0 < 5
    # deep copies of one layer register nothing until the end: the call count stops them
    layers = {"d_model": 2, "nhead": 1, "dim_feedforward": 2}
    _edit(run, _set_factory("torch.nn:Transformer", num_encoder_layers=10**8, **layers))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's nested-tensor note
        with pytest.raises(ValueError, match="more than 1,000,000 Python calls"):
            load_run(run)
        assert time.perf_counter() - t0 < 30
        # and the clock, for a build of slow calls
        monkeypatch.setattr(rebuild_mod, "META_BUILD_SECONDS", 0.0)  # read where it is used
        with pytest.raises(ValueError, match="took more than 0 s to build on the meta device"):
            load_run(run)
    assert sys.gettrace() is None  # the trace function is taken off again


FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn

    DEVICES = []


    def make(n):
        DEVICES.append(torch.empty(0).device.type)
        return nn.Linear(n, 2)


    def meta_hostile(n):
        DEVICES.append(torch.empty(0).device.type)
        if torch.empty(0).device.type == "meta":
            raise NotImplementedError("needs real tensors")
        return nn.Linear(n, 2)
    """
)


def test_factory_is_built_on_meta_and_checked_first(tmp_path, monkeypatch):
    (tmp_path / "r2et_meta_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "r2et_meta_factories", raising=False)
    import r2et_meta_factories as mod

    try:
        run = tmp_path / "run"
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        save_run(run, model, factory="r2et_meta_factories:make", factory_kwargs={"n": 3})
        assert torch.equal(load_run(run, trust_factory=True).model.weight, model.weight)
        assert mod.DEVICES == ["meta", "cpu"]
        mod.DEVICES.clear()
        _edit(run, _set_factory("r2et_meta_factories:make", n=4))  # shapes do not match
        with pytest.raises(ValueError, match="does not match the model's architecture"):
            load_run(run, trust_factory=True)
        assert mod.DEVICES == ["meta"]  # refused before the real build
        mod.DEVICES.clear()
        # trusted, but not buildable on meta: built for real, then checked the same way
        _edit(run, _set_factory("r2et_meta_factories:meta_hostile", n=3))
        assert torch.equal(load_run(run, trust_factory=True).model.weight, model.weight)
        assert mod.DEVICES == ["meta", "cpu"]
        _edit(run, _set_factory("r2et_meta_factories:meta_hostile", n=5))
        with pytest.raises(ValueError, match="does not match the model's architecture"):
            load_run(run, trust_factory=True)
    finally:
        sys.modules.pop("r2et_meta_factories", None)


# ------------------------------------------------------- (e) kills during an overwrite
class _Killed(BaseException):
    """The simulated SIGKILL: once raised, every later step of the writer does nothing."""


class _Killer:
    """Counts the filesystem steps of :mod:`r2et._io` and 'kills' the writer before step
    ``at``: from then on every step raises, so no clean-up handler can repair anything."""

    def __init__(self, at: int) -> None:
        self.at, self.n, self.dead = at, 0, False

    def wrap(self, fn):
        def step(*args, **kwargs):
            if not self.dead:
                self.n += 1
                self.dead = self.n == self.at
            if self.dead:
                raise _Killed
            return fn(*args, **kwargs)

        return step


class _Proxy:
    def __init__(self, real, killer: _Killer, names: tuple[str, ...]) -> None:
        self._real, self._killer, self._names = real, killer, names

    def __getattr__(self, name):
        attr = getattr(self._real, name)
        return self._killer.wrap(attr) if name in self._names else attr


def _which(folder: Path, old: nn.Module, new: nn.Module) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weight = load_run(folder).model.net[1].weight
    tag = "+restored" if any("restored" in str(w.message) for w in caught) else ""
    for name, model in (("old", old), ("new", new)):
        if torch.equal(weight, model.net[1].weight):
            return name + tag
    raise AssertionError("the folder holds neither the old nor the new run")


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "rename-aside"])
def test_a_kill_at_every_step_of_an_overwrite_leaves_old_or_new(tmp_path, monkeypatch, exchange):
    old, new = _mlp(seed=0), _mlp(seed=1)
    real_exchange = io_mod.exchange_paths
    seen = []
    at = 0
    while True:
        at += 1
        folder = tmp_path / f"case{at}" / "run"
        save_run(folder, old, {}, {"which": "old"})
        killer = _Killer(at)
        with monkeypatch.context() as m:
            m.setattr(io_mod, "os", _Proxy(os, killer, ("mkdir", "open", "fsync", "rename")))
            m.setattr(io_mod.os, "replace", killer.wrap(os.replace), raising=False)
            m.setattr(io_mod, "shutil", _Proxy(io_mod.shutil, killer, ("rmtree",)))
            m.setattr(io_mod, "_write_data", killer.wrap(io_mod._write_data))
            swap = real_exchange if exchange else (lambda a, b: False)
            m.setattr(io_mod, "exchange_paths", killer.wrap(swap))
            try:
                save_run(folder, new, {}, {"which": "new"})
                finished = True
            except _Killed:
                finished = False
        state = _which(folder, old, new)
        seen.append(state)
        if finished:
            assert state == "new"
            break
        assert at < 60
    # the sequence: old until the swap, then new; without the exchange one kill falls
    # between the two renames and the old run is put back on load
    assert seen[0] == "old" and seen[-1] == "new"
    assert ("old+restored" in seen) == (not exchange), seen
    first_new = seen.index("new")
    assert all(s.startswith("old") for s in seen[:first_new])
    assert all(s == "new" for s in seen[first_new:])
    if exchange:
        assert io_mod.exchange_paths(tmp_path / "case1", tmp_path / "case2")  # really used


def _fork_and_kill(folder: Path, new: nn.Module, block: str) -> None:
    """Overwrite ``folder`` with ``new`` in a forked child that blocks at ``block``, then
    SIGKILL it there (a real kill at a known instant)."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(ready_r)

            def wait_here() -> None:
                os.write(ready_w, b"x")
                os.read(hold_r, 1)  # blocks until killed

            real_rename, real_exchange = os.rename, io_mod.exchange_paths

            def rename(a, b):
                real_rename(a, b)
                if block == "aside" and str(b).endswith(".old"):
                    wait_here()

            def exchange(a, b):
                if block == "aside":
                    return False
                if block == "before-exchange":
                    wait_here()
                done = real_exchange(a, b)
                if block == "after-exchange":
                    wait_here()
                return done

            os.rename = rename
            io_mod.exchange_paths = exchange
            save_run(folder, new, {}, {"which": "new"})
        finally:
            os._exit(1)
    os.close(ready_w)
    try:
        ready, _, _ = select.select([ready_r], [], [], 60)
        assert ready and os.read(ready_r, 1) == b"x", "the child did not reach its step"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for fd in (ready_r, hold_r, hold_w):
            os.close(fd)


@pytest.mark.parametrize(
    ("block", "expect"),
    [("before-exchange", "old"), ("after-exchange", "new"), ("aside", "old+restored")],
)
def test_real_sigkill_during_an_overwrite(tmp_path, block, expect):
    old, new = _mlp(seed=0), _mlp(seed=1)
    folder = tmp_path / "run"
    save_run(folder, old, {}, {"which": "old"})
    _fork_and_kill(folder, new, block)
    assert folder.is_dir() == (block != "aside")  # the kill did land where intended
    assert _which(folder, old, new) == expect
    assert _which(folder, old, new) == expect.removesuffix("+restored")
    # what the killed writer left is hidden temporaries only; the next save succeeds
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "run"]
    assert all(is_temp_name(n) for n in leftovers), leftovers
    save_run(folder, new)
    assert _which(folder, old, new) == "new"


def test_missing_folder_with_several_moved_aside_copies_is_not_guessed(tmp_path):
    for hexname in ("0a", "0b"):
        save_run(tmp_path / f".run.{hexname}.old", _mlp())
    with pytest.raises(FileNotFoundError, match=r"\.run\.0a\.old, \.run\.0b\.old"):
        load_run(tmp_path / "run")
    (tmp_path / ".run.0b.old" / "model.safetensors").unlink()  # incomplete: not a candidate
    with pytest.warns(UserWarning, match="restored"):
        load_run(tmp_path / "run")
    assert not (tmp_path / ".run.0a.old").exists()


def test_save_run_replaces_only_empty_or_run_folders(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds no run"):
        save_run(mine, _mlp())
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    save_run(empty, _mlp())
    run = tmp_path / "run"
    save_run(run, _mlp(seed=0))
    (run / "evaluation_test.json").write_text("{}")  # belongs to the old model
    save_run(run, _mlp(seed=1))
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]
    assert not [p for p in tmp_path.iterdir() if is_temp_name(p.name)]


# --------------------------------------------------------- (f) r2et train --out EXISTING
def test_train_refuses_a_non_empty_out_without_overwrite(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    old = _mlp()
    save_run(run, old, {"which": "old"})
    before = {p.name: p.read_bytes() for p in run.iterdir()}

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(train_mod, "fit", no_training)
    argv = ["train", "breast-cancer", "--epochs", "1", "--no-progress", "--out", str(run)]
    _one_line(capsys, main(argv), 2, "--overwrite", "not empty")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    _one_line(capsys, main([*argv[:-1], str(mine), "--overwrite"]), 2, "holds no run")
    assert (mine / "notes.txt").read_text() == "keep me"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "fit", interrupted)
    assert main([*argv, "--overwrite"]) == 130  # interrupted: the old run is untouched
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.slow
def test_train_overwrite_replaces_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    save_run(run, _mlp(), {"which": "old"})
    (run / "evaluation_test.json").write_text("{}")
    argv = ["train", "breast-cancer", "--epochs", "1", "--no-progress", "--out", str(run)]
    assert main([*argv, "--overwrite"]) == 0, capsys.readouterr().err
    loaded = load_run(run)
    assert "which" not in loaded.config and loaded.config["dataset"]["name"] == "breast-cancer"
    assert not (run / "evaluation_test.json").exists()
    assert not [p for p in tmp_path.iterdir() if is_temp_name(p.name)]


# ------------------------------------------------------------------ (g) out of memory
@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 TiB"),
        MemoryError(),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4 TB"),
    ],
    ids=["cuda", "python", "cpu-allocator"],
)
def test_out_of_memory_is_exit_3(tmp_path, monkeypatch, capsys, error):
    run = tmp_path / "run"
    _linear_run(run)

    def oom(*args, **kwargs):
        raise error

    monkeypatch.setattr(train_mod, "load_run", oom)
    monkeypatch.setattr(runs_mod, "load_run", oom)  # the CLI may import it from either
    _one_line(capsys, main(["evaluate", str(run)]), 3, "out of memory")


def test_top_level_api_is_the_same_function():
    assert r2et.load_run is load_run and r2et.save_run is save_run


def test_stale_temp_clean_up_puts_a_lone_moved_aside_run_back(tmp_path):
    """Without the atomic exchange a killed overwrite leaves the only copy of the old run in
    ``.NAME.<hex>.old``: the bench's clean-up must restore it, not delete it; a ``.old``
    beside a present folder is a leftover and goes."""
    from r2et._io import remove_stale_temps

    run = tmp_path / "run"
    model = _mlp()
    save_run(run, model)
    aside = tmp_path / ".run.0a1b2c.old"
    os.rename(run, aside)
    remove_stale_temps(tmp_path)
    assert run.is_dir() and not aside.exists()
    loaded = load_run(run)
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.parameters(), model.parameters()))
    leftover = tmp_path / ".run.3c4d5e.old"
    leftover.mkdir()
    assert leftover in remove_stale_temps(tmp_path) and not leftover.exists() and run.is_dir()
