"""The one parallel path: per-recording work goes through joblib."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_recordings(func: Callable[[T], R], items: Iterable[T], n_jobs: int = 1,
                   backend: str = "loky") -> list[R]:
    """Apply func to each item, in order; switch backend (e.g. dask) without code changes."""
    items = list(items)
    if n_jobs == 1 or backend == "sequential" or len(items) < 2:
        return [func(item) for item in items]
    from joblib import Parallel, delayed  # imported when used: it costs every stage 0.1 s

    return Parallel(n_jobs=n_jobs, backend=backend)(delayed(func)(item) for item in items)
