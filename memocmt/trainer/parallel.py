"""Independent CPU jobs side by side in forked worker processes.

Training heads on cached embeddings is a long series of small tensor operations: on a 2-core
CPU one process with one thread each uses the cores better than one process with two threads.
Workers are forked, so they share what the parent already holds in memory (the cached
embeddings) without copying or pickling it; only each job's result travels back. Where fork
is unavailable (Windows, macOS's default) or one worker is asked for, the jobs run one after
another in this process, with the same results; so do they once this process has used CUDA,
which a forked child cannot.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable
from typing import TypeVar

logger = logging.getLogger("memocmt")

T = TypeVar("T")
R = TypeVar("R")

_JOBS: list = []  # (function, argument) pairs, read by the forked workers: they travel by fork


def fork_available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def cpu_workers(jobs: int, threads_each: int) -> int:
    """How many jobs of `threads_each` threads the CPU cores hold at once (at least 1)."""
    return max(1, min(jobs, (os.cpu_count() or 1) // max(1, threads_each)))


def _call(index: int):
    fn, arg = _JOBS[index]
    return fn(arg)


def map_forked(fn: Callable[[T], R], items: Iterable[T], workers: int, threads_each: int) -> list[R]:
    """[fn(x) for x in items], `workers` at a time in forked processes of `threads_each` PyTorch threads.

    An exception in a job is raised here, as if the job had run in this process.
    """
    import torch

    items = list(items)
    if workers > 1 and len(items) > 1 and torch.cuda.is_initialized():
        logger.info("CUDA is in use in this process and does not survive a fork: running the %d jobs one after another.",
                    len(items))
        workers = 1
    if workers <= 1 or len(items) <= 1 or not fork_available():
        return [fn(x) for x in items]
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    workers = min(workers, len(items))
    _JOBS[:] = [(fn, x) for x in items]
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=torch.set_num_threads, initargs=(threads_each,)) as pool:
            return list(pool.map(_call, range(len(items))))
    except BrokenProcessPool as e:
        raise RuntimeError(f"A worker process died before finishing its job (out of memory?); run the {len(items)} "
                           "jobs one after another instead (one worker).") from e
    finally:
        _JOBS.clear()
