"""Executors: how the benchmark's independent tasks (pre-training runs, cells) are run.

An executor is a function ``fn(task, jobs, on_result, progress, options)`` registered in
:data:`EXECUTORS`: it calls ``task(*job)`` for every job of ``jobs`` and hands each result,
with the job's index, to ``on_result`` in this process as it finishes (``options``:
``{"address": ..., "workers": ...}``). ``local`` runs the jobs one after another in this
process, ``process`` in ``workers`` spawned processes of this machine (which die with this
process), ``ray`` as Ray tasks. Process and Ray workers import the plugins
(:func:`r2et.plugins.load_plugins`) before their first job, so that entries registered from
outside r2et exist in them too.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from r2et._registry import Registry

Job = tuple[Any, ...]
OnResult = Callable[[int, dict[str, Any]], None]


def _run_local(
    fn: Callable[..., dict[str, Any]],
    jobs: list[Job],
    on_result: OnResult,
    progress: Any,
    options: dict[str, Any],
) -> None:
    for i, args in enumerate(jobs):
        on_result(i, fn(*args))
        progress.update(1)


#: Seconds between two checks of a process-executor worker's watchdog on its parent.
PARENT_CHECK_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _set_parent_death_signal() -> bool:
    """Ask the Linux kernel to SIGKILL this process when its parent dies
    (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc prctl (e.g. a static or exotic runtime)
        return False


def _watch_parent(parent_pid: int, interval: float) -> None:
    """Exit this process at once (``os._exit``: no clean-up, as under SIGKILL) as soon as its
    parent is no longer ``parent_pid``, i.e. the parent died and the process was re-parented."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(interval)


def _worker_init(parent_pid: int) -> None:
    """Initializer of every process-executor worker: the worker dies with the process that
    started it, so that a killed ``r2et bench`` leaves no orphan computing beside (or holding
    the GPU memory of) the ``--resume`` that follows. On Linux the kernel kills it
    (parent-death signal); everywhere a daemon thread checks every
    :data:`PARENT_CHECK_SECONDS` whether the parent changed and exits the worker. A parent
    that died before the signal was set is caught by comparing the parent pid afterwards.
    Then the worker imports the plugins (:func:`r2et.plugins.load_plugins`); should one fail,
    the worker's first job raises that error (an initializer that raised would only make the
    pool start new workers forever)."""
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(
        target=_watch_parent,
        args=(parent_pid, PARENT_CHECK_SECONDS),
        name="r2et-parent-watchdog",
        daemon=True,
    ).start()
    try:
        _load_plugins()
    except Exception:  # noqa: BLE001 - raised again by the worker's first job
        pass


def _load_plugins() -> None:
    """Import the plugin modules in this worker process (once: later calls import nothing), so
    that the datasets, models, explainers, methods and attacks they register exist here."""
    from r2et.plugins import load_plugins

    load_plugins()


def _call_with_plugins(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a worker whose plugins are imported: what a Ray task runs."""
    _load_plugins()
    return fn(*args)


def _indexed_call(item: tuple[Callable[..., dict[str, Any]], int, Job]) -> tuple[int, Any]:
    fn, i, args = item
    _load_plugins()
    return i, fn(*args)


def _run_process(
    fn: Callable[..., dict[str, Any]],
    jobs: list[Job],
    on_result: OnResult,
    progress: Any,
    options: dict[str, Any],
) -> None:
    """``workers`` fresh (spawned) processes of this machine, each running one job at a time;
    results are handed to ``on_result`` in this process as they finish. An interruption
    (Ctrl-C, SIGTERM) terminates the workers at once; finished results are already saved. A
    kill of this process (SIGKILL) takes the workers with it (:func:`_worker_init`)."""
    import multiprocessing

    workers = min(int(options.get("workers") or 1), len(jobs))
    ctx = multiprocessing.get_context("spawn")  # no forked copies of torch's thread pools
    pool = ctx.Pool(workers, initializer=_worker_init, initargs=(os.getpid(),))
    try:
        items = [(fn, i, args) for i, args in enumerate(jobs)]
        for i, result in pool.imap_unordered(_indexed_call, items, chunksize=1):
            on_result(i, result)
            progress.update(1)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


#: How often Ray runs a task again whose worker or node died (a lost node's tasks are retried
#: on the nodes left).
RAY_RETRIES = 1


class LostTasksError(ConnectionError):
    """Ray tasks lost for good: their worker or node died on every try (:data:`RAY_RETRIES`).
    Raised once every other task has finished and its result was handed on, so that only the
    lost tasks are left to ``--resume``. A system error (an ``OSError``): one line and exit
    code 3 from the command line."""


def _run_ray(
    fn: Callable[..., dict[str, Any]],
    jobs: list[Job],
    on_result: OnResult,
    progress: Any,
    options: dict[str, Any],
) -> None:
    """Each job a Ray task (one GPU each when the cluster has GPUs) on the cluster at
    ``options["address"]`` (a new local one when None and Ray is not initialised), at most
    ``options["workers"]`` in flight when given; results are handed to ``on_result`` in this
    process as they finish. Each task imports the plugins before it runs (a new Ray cluster
    gets this process's ``R2ET_PLUGINS``, ``R2ET_DATA`` and ``R2ET_CACHE``). A task whose
    worker or node dies is run again by Ray (:data:`RAY_RETRIES`); one lost on every try does
    not stop the others: once they have finished, :class:`LostTasksError` names the lost."""
    from r2et.plugins import ENV_VAR

    try:
        import ray
    except ImportError:
        raise ValueError("executor='ray' needs Ray: pip install 'r2et[ray]'") from None
    if not ray.is_initialized():
        names = ("R2ET_DATA", "R2ET_CACHE", ENV_VAR)
        env = {k: os.environ[k] for k in names if k in os.environ}
        ray.init(
            address=options.get("address"),
            runtime_env={"env_vars": env} if env else None,
            include_dashboard=False,
            log_to_driver=False,
        )
    gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    remote = ray.remote(num_gpus=gpus, max_retries=RAY_RETRIES)(_call_with_plugins)
    limit = int(options.get("workers") or len(jobs))  # tasks in flight at once
    queue = list(enumerate(jobs))[::-1]  # popped from the end: submitted in order
    pending: dict[Any, int] = {}
    lost: list[BaseException] = []
    while queue or pending:
        while queue and len(pending) < limit:
            i, args = queue.pop()
            pending[remote.remote(fn, *args)] = i
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            i = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError:
                raise  # the task's own error, raised as the local executor raises it
            except ray.exceptions.RayError as err:  # its worker or node died on every try
                lost.append(err)
            else:
                on_result(i, result)
            progress.update(1)
    if lost:
        err = lost[0]
        why = " ".join(str(err).split())[:200] or type(err).__name__
        raise LostTasksError(
            f"{len(lost)} of {len(jobs)} Ray task(s) were lost to a failure of the cluster "
            f"(a worker or node died, also on Ray's retry; first: {type(err).__name__}: {why}); "
            "the results of the others are saved: rerun with --resume to compute the lost ones"
        )


#: How the grid's independent tasks are run, by name: ``fn(task, jobs, on_result, progress,
#: options)`` with ``options`` ``{"address": ..., "workers": ...}``.
EXECUTORS: Registry[Callable[..., None]] = Registry("executor")
EXECUTORS.register("local", _run_local)
EXECUTORS.register("process", _run_process)
EXECUTORS.register("ray", _run_ray)
#: The executors that use ``workers`` (processes of this machine; Ray tasks in flight).
WORKER_EXECUTORS = ("process", "ray")


def execute(
    executor: str,
    fn: Callable[..., dict[str, Any]],
    jobs: list[Job],
    on_result: OnResult,
    desc: str,
    show: bool,
    options: dict[str, Any],
) -> None:
    """Run ``fn`` on every job of ``jobs`` with executor ``executor`` (:data:`EXECUTORS`),
    under a progress bar labelled ``desc`` (shown when ``show``)."""
    from tqdm.auto import tqdm

    if not jobs:
        return
    with tqdm(total=len(jobs), desc=desc, disable=not show, unit="cell") as bar:
        EXECUTORS[executor](fn, jobs, on_result, bar, options)
