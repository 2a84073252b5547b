"""The micro-batcher and the fair queue, with fake work."""

from __future__ import annotations

import threading
import time

import pytest

from memocmt.serve.batcher import FairQueue, MicroBatcher, Overloaded


def test_concurrent_items_share_a_batch_and_keep_their_results():
    sizes = []

    def double(items):
        sizes.append(len(items))
        time.sleep(0.02)
        return [2 * x for x in items]

    batcher = MicroBatcher("t", double, max_batch=8, max_wait_ms=30)
    try:
        futures = [batcher.submit(i) for i in range(12)]
        assert [f.result(5) for f in futures] == [2 * i for i in range(12)]
        assert max(sizes) == 8 and sum(sizes) == 12
    finally:
        batcher.close()


def test_batch_of_one_when_unbatched_and_a_lone_item_waits_briefly():
    sizes = []
    batcher = MicroBatcher("t", lambda items: sizes.append(len(items)) or items, max_batch=1, max_wait_ms=5)
    try:
        assert [batcher.submit(i) for i in range(5)][-1].result(5) == 4
        assert sizes == [1] * 5
        start = time.monotonic()
        batcher.submit(1).result(5)
        assert time.monotonic() - start < 0.5
    finally:
        batcher.close()


def test_lengths_are_grouped():
    seen = []
    gate = threading.Event()

    def run(items):
        gate.wait(5)
        seen.append(sorted(items))
        return items

    batcher = MicroBatcher("t", run, max_batch=8, max_wait_ms=50, size=lambda n: n, spread=1.5)
    try:
        first = batcher.submit(1000)  # runs alone while the rest queue
        time.sleep(0.1)
        futures = [batcher.submit(n) for n in (100, 5000, 120, 5500, 140)]
        gate.set()
        for f in [first, *futures]:
            f.result(5)
        assert [1000] in seen and [100, 120, 140] in seen and [5000, 5500] in seen
    finally:
        batcher.close()


def test_errors_reach_every_waiter_and_the_worker_survives():
    def run(items):
        if "bad" in items:
            raise ValueError("bad item")
        return items

    batcher = MicroBatcher("t", run, max_batch=4, max_wait_ms=20)
    try:
        futures = [batcher.submit("ok"), batcher.submit("bad")]
        for f in futures:
            with pytest.raises(ValueError, match="bad item"):
                f.result(5)
        assert batcher.submit("fine").result(5) == "fine"
    finally:
        batcher.close()


def test_bounded_queue_refuses_work():
    gate = threading.Event()
    batcher = MicroBatcher("t", lambda items: gate.wait(5) and items, max_batch=1, max_wait_ms=0, max_queue=2)
    try:
        batcher.submit(0)
        time.sleep(0.05)  # item 0 is running
        batcher.submit(1)
        batcher.submit(2)
        with pytest.raises(Overloaded):
            batcher.submit(3)
    finally:
        gate.set()
        batcher.close()


def test_fair_queue_takes_turns_between_sessions():
    order = []
    gate = threading.Event()

    def run(item):
        gate.wait(5)
        order.append(item)
        return item

    fair = FairQueue("asr", run, max_per_key=4)
    try:
        fair.submit("warm", "w")
        time.sleep(0.05)
        futures = [fair.submit("a", f"a{i}") for i in range(3)] + [fair.submit("b", "b0"), fair.submit("c", "c0")]
        with pytest.raises(Overloaded):
            for i in range(5):
                fair.submit("a", f"extra{i}")
        gate.set()
        for f in futures:
            f.result(5)
        assert order[:4] == ["w", "a0", "b0", "c0"]  # a's backlog does not hold b and c up
    finally:
        fair.close()


def test_fair_queue_discard_cancels_a_gone_session():
    gate = threading.Event()
    fair = FairQueue("asr", lambda item: gate.wait(5) and item, max_per_key=8)
    try:
        fair.submit("x", 0)
        time.sleep(0.05)
        waiting = [fair.submit("gone", i) for i in range(3)]
        assert fair.discard("gone") == 3
        assert all(f.cancelled() for f in waiting)
    finally:
        gate.set()
        fair.close()
