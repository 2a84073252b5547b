"""Sharing models between sessions: a micro-batcher and a fair queue, each on one worker thread.

`MicroBatcher` gathers items submitted from any session for up to `max_wait_ms` after the
oldest one arrived (or until `max_batch`), takes those whose size is within `spread` of the
oldest one's (so little padding is computed), and runs them as one call. While a batch runs,
new items queue, so under load batches form without any waiting. `FairQueue` takes turns
between keys (sessions), so a client that sends a lot of speech waits behind its own utterances,
not in front of everyone else's; when several sessions' items wait, it may run up to `max_batch`
of them (one per session, of similar sizes) in one call, without waiting for more.

Both return `concurrent.futures.Future`s (wrap them with `asyncio.wrap_future` in async code)
and refuse work beyond their bounds with `Overloaded` instead of queueing without end.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

log = logging.getLogger("memocmt")


class Overloaded(RuntimeError):
    """The queue is full; the caller should shed this work."""


@dataclass
class _Job:
    item: Any
    size: float
    future: concurrent.futures.Future
    queued: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Runs `fn(items) -> results` (one result per item, in order) in batches on its own thread."""

    def __init__(self, name: str, fn: Callable[[list], list], max_batch: int = 8, max_wait_ms: float = 5.0,
                 max_queue: int = 256, size: Callable[[Any], float] = lambda item: 1.0, spread: float = 1.5,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1 or max_queue < 1 or spread < 1.0 or max_wait_ms < 0:
            raise ValueError("A batcher needs max_batch >= 1, max_queue >= 1, spread >= 1 and max_wait_ms >= 0.")
        self.name = name
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.size = size
        self.spread = spread
        self.on_batch = on_batch  # (batch size, seconds the call took)
        self.batches = 0
        self.items = 0
        self._queue: list[_Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"memocmt-batch-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"The {self.name} batcher is closed.")
            if len(self._queue) >= self.max_queue:
                raise Overloaded(f"The {self.name} queue is full ({self.max_queue} items).")
            self._queue.append(_Job(item, float(self.size(item)), future))
            self._cond.notify()
        return future

    def __call__(self, item: Any) -> Any:
        """Submit and wait (from a worker thread, never from the event loop)."""
        return self.submit(item).result()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)

    def _take(self) -> list[_Job] | None:
        """Wait for a batch; None once closed and drained."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = self._queue[0].queued + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            first = self._queue[0]
            low, high = first.size / self.spread, first.size * self.spread
            batch, rest = [], []
            for job in self._queue:
                if len(batch) < self.max_batch and low <= job.size <= high:
                    batch.append(job)
                else:
                    rest.append(job)
            self._queue = rest
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not live:
                continue
            start = time.perf_counter()
            try:
                results = self.fn([job.item for job in live])
                if len(results) != len(live):
                    raise RuntimeError(f"The {self.name} batch returned {len(results)} results for {len(live)} items.")
            except BaseException as e:  # every waiter learns why; the worker keeps serving
                log.exception("%s batch of %d failed", self.name, len(live))
                for job in live:
                    job.future.set_exception(e)
                continue
            elapsed = time.perf_counter() - start
            self.batches += 1
            self.items += len(live)
            if self.on_batch is not None:
                self.on_batch(len(live), elapsed)
            for job, result in zip(live, results):
                job.future.set_result(result)


class FairQueue:
    """Runs `fn(item)` round-robin over keys (sessions); at most `max_per_key` waiting per key.

    With `max_batch` > 1 and `batch_fn(items) -> results` (one per item, in order), the worker, when it frees,
    takes the first waiting item of the key whose turn it is and of up to `max_batch` - 1 keys after it in turn
    order, at most one per key, and runs them in one call; it never waits for more, so a lone item runs at once.
    Items join only items of the same `group` (None: never batched, as when the model would run them one by
    one anyway) whose `size` is within `spread` of the first one's (little padding); keys passed over keep
    their place at the front of the line. A batch call that fails runs its items again one by one, so an error
    reaches only the item that caused it."""

    def __init__(self, name: str, fn: Callable[[Any], Any], max_per_key: int = 4, max_keys: int = 1024,
                 max_batch: int = 1, batch_fn: Callable[[list], list] | None = None,
                 size: Callable[[Any], float] = lambda item: 1.0, spread: float = 1.5,
                 group: Callable[[Any], Hashable | None] = lambda item: 0,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1 or spread < 1.0 or (max_batch > 1 and batch_fn is None):
            raise ValueError("A fair queue needs max_batch >= 1 (above 1 with a batch_fn) and spread >= 1.")
        self.name = name
        self.fn = fn
        self.max_per_key = max_per_key
        self.max_keys = max_keys
        self.max_batch = max_batch
        self.batch_fn = batch_fn
        self.size = size
        self.spread = spread
        self.group = group
        self.on_batch = on_batch  # (items in the call, seconds it took)
        self._queues: collections.OrderedDict[Hashable, collections.deque] = collections.OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        self.served = 0
        self._thread = threading.Thread(target=self._loop, name=f"memocmt-fair-{name}", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, item: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"The {self.name} queue is closed.")
            waiting = self._queues.get(key)
            if waiting is None:
                if len(self._queues) >= self.max_keys:
                    raise Overloaded(f"The {self.name} queue serves at most {self.max_keys} sessions.")
                waiting = self._queues[key] = collections.deque()
            if len(waiting) >= self.max_per_key:
                raise Overloaded(f"The {self.name} queue holds at most {self.max_per_key} items per session.")
            waiting.append((item, future))
            self._cond.notify()
        return future

    def discard(self, key: Hashable) -> int:
        """Cancel every item of `key` still waiting (its session ended); returns how many."""
        with self._cond:
            waiting = self._queues.pop(key, None) or ()
        for _item, future in waiting:
            future.cancel()
        return len(waiting)

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)

    def _take(self) -> list[tuple[Any, concurrent.futures.Future]] | None:
        """The next batch of (item, future), at most one per key; None once closed and drained."""
        with self._cond:
            while not self._queues:
                if self._closed:
                    return None
                self._cond.wait()
            keys = [next(iter(self._queues))]  # the key that waited longest for a turn
            first = self._queues[keys[0]][0][0]
            group = self.group(first) if self.max_batch > 1 else None
            if group is not None:
                low, high = self.size(first) / self.spread, self.size(first) * self.spread
                for key, waiting in self._queues.items():
                    item = waiting[0][0]
                    if key != keys[0] and self.group(item) == group and low <= self.size(item) <= high:
                        keys.append(key)
                        if len(keys) == self.max_batch:
                            break
            jobs = []
            for key in keys:
                waiting = self._queues.pop(key)
                jobs.append(waiting.popleft())
                if waiting:
                    self._queues[key] = waiting  # back of the line
            return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            live = [(item, future) for item, future in jobs if future.set_running_or_notify_cancel()]
            if len(live) > 1 and self._run_batch(live):
                continue
            for item, future in live:
                self._run_one(item, future)

    def _run_batch(self, jobs: list[tuple[Any, concurrent.futures.Future]]) -> bool:
        """One batch_fn call for `jobs`, settling their futures; False (none settled) when the call failed."""
        start = time.perf_counter()
        try:
            results = self.batch_fn([item for item, _future in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"The {self.name} batch returned {len(results)} results for {len(jobs)} items.")
        except BaseException:
            log.exception("%s batch of %d failed; running its items one by one", self.name, len(jobs))
            return False
        self._served(len(jobs), start)
        for (_item, future), result in zip(jobs, results):
            future.set_result(result)
        return True

    def _run_one(self, item: Any, future: concurrent.futures.Future) -> None:
        start = time.perf_counter()
        try:
            result = self.fn(item)
        except BaseException as e:
            future.set_exception(e)
            return
        self._served(1, start)
        future.set_result(result)

    def _served(self, items: int, start: float) -> None:
        self.served += items
        if self.on_batch is not None:
            self.on_batch(items, time.perf_counter() - start)
