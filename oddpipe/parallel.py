"""The one parallel path: per-recording work goes through joblib, on this machine (loky
processes) or on a Dask cluster (joblib's dask backend), with the same code."""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Runner:
    """How per-recording work runs (params: execution); never changes a result."""

    n_jobs: int = 1
    backend: str = "loky"  # loky | threading | sequential | dask
    scheduler: str | None = None  # dask: a scheduler address; None starts a LocalCluster


    @classmethod
    def of(cls, execution: Any) -> "Runner":
        """From params.execution (duck-typed: this module stays free of the params schema,
        so a change here reruns only the stages that map over recordings)."""
        return cls(execution.n_jobs, execution.backend, execution.scheduler)


SERIAL = Runner()


def for_work(runner: Runner, measure: Callable[[], tuple[bool, str]]) -> Runner:
    """The runner for one map: loky worker processes only when the work pays for starting
    them (about a second on 2 cores: each imports numpy, MNE, ...). Threads start at no
    such cost, and a Dask cluster's workers already run: those are always used. measure
    says (whether workers pay off, how big the work is), asked only when it matters."""
    if runner.backend != "loky" or runner.n_jobs == 1:
        return runner
    worth, size = measure()
    if worth:
        return runner
    log.info("%s: run in this process, starting workers would cost more than they save "
             "(execution.n_jobs %d)", size, runner.n_jobs)
    return SERIAL


def in_process(runner: Runner) -> bool:
    """Whether map_recordings runs the items one after another in this process."""
    return runner.backend != "dask" and (runner.n_jobs == 1 or runner.backend == "sequential")


def map_recordings(func: Callable[[T], R], items: Iterable[T],
                   runner: Runner = SERIAL) -> list[R]:
    """Apply func to each item; results come back in the items' order."""
    items = list(items)
    if runner.backend == "dask":
        return _map_dask(func, items, runner.scheduler)
    if in_process(runner) or len(items) < 2:
        return [func(item) for item in items]
    from joblib import Parallel, delayed  # imported when used: it costs every stage 0.1 s

    if runner.backend == "threading":
        return _map_threads(func, items, runner.n_jobs)
    return Parallel(n_jobs=runner.n_jobs, backend=runner.backend)(
        delayed(func)(item) for item in items)


@dataclass
class _Failed:
    error: BaseException


def _map_threads(func: Callable[[T], R], items: list[T], n_jobs: int) -> list[R]:
    """joblib's threads, with a failure raised only once no item is running: a thread
    cannot be stopped, and one still inside numpy or MNE while the interpreter exits
    aborted the process ("terminate called without an active exception", rc 134, in 3 of
    12 runs of the filter stage on a truncated array). Items not yet started are skipped."""
    from joblib import Parallel, delayed

    failed = threading.Event()

    def guarded(item: T) -> "R | _Failed | None":
        if failed.is_set():
            return None
        try:
            return func(item)
        except Exception as exc:  # noqa: BLE001 - raised below, in the caller's thread
            failed.set()
            return _Failed(exc)

    results = Parallel(n_jobs=n_jobs, backend="threading")(delayed(guarded)(i) for i in items)
    for result in results:
        if isinstance(result, _Failed):
            raise result.error
    return results


def _map_dask(func: Callable[[T], R], items: list[T], scheduler: str | None) -> list[R]:
    """The same joblib call, each item a task on the cluster's workers. Workers must import
    oddpipe (start them with the repository on PYTHONPATH) and see the same files at the
    same paths (a shared filesystem); each task runs in the stage's working directory, so
    the relative paths DVC passes mean the same there."""
    from joblib import Parallel, delayed, parallel_config

    cwd = os.getcwd()
    with parallel_config(backend="dask", client=dask_client(scheduler)):
        return Parallel(n_jobs=-1)(delayed(_in_dir)(cwd, func, item) for item in items)


def _in_dir(cwd: str, func: Callable[[T], R], item: T) -> R:
    os.chdir(cwd)  # every task of a stage shares one directory, so threads agree on it
    return func(item)


@lru_cache(maxsize=None)
def dask_client(scheduler: str | None) -> Any:
    """One client per process and scheduler: connecting (or starting a LocalCluster) once."""
    from dask.distributed import Client

    return Client(scheduler) if scheduler else Client(processes=True)
