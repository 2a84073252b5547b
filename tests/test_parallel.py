"""Independent jobs in forked workers: same results, in order, errors raised in the caller."""

from __future__ import annotations

import os

import pytest

from memocmt.trainer.parallel import cpu_workers, fork_available, map_forked

SHARED = {"offset": 0}  # set before forking: workers see it without pickling


def job(x: int) -> tuple[int, int]:
    if x < 0:
        raise ValueError(f"negative job {x}")
    return x * x + SHARED["offset"], os.getpid()


def test_jobs_run_in_forked_workers_and_come_back_in_order():
    if not fork_available():
        pytest.skip("needs the fork start method")
    SHARED["offset"] = 7
    try:
        out = map_forked(job, range(6), workers=2, threads_each=1)
    finally:
        SHARED["offset"] = 0
    assert [v for v, _ in out] == [x * x + 7 for x in range(6)]
    assert os.getpid() not in {pid for _, pid in out}


def test_one_worker_runs_here_and_errors_reach_the_caller():
    assert [v for v, _ in map_forked(job, [1, 2], workers=1, threads_each=1)] == [1, 4]
    assert {pid for _, pid in map_forked(job, [1, 2], workers=1, threads_each=1)} == {os.getpid()}
    with pytest.raises(ValueError, match="negative job -1"):
        map_forked(job, [1, -1, 2], workers=2, threads_each=1)


def test_cpu_workers_fit_the_cores():
    cores = os.cpu_count() or 1
    assert cpu_workers(jobs=100, threads_each=1) == cores
    assert cpu_workers(jobs=1, threads_each=1) == 1
    assert cpu_workers(jobs=100, threads_each=cores * 2) == 1


def test_a_process_that_uses_cuda_runs_the_jobs_itself(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert {pid for _, pid in map_forked(job, [1, 2, 3], workers=2, threads_each=1)} == {os.getpid()}
