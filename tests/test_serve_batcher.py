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


def _recording_fair_queue(max_batch: int, gate: threading.Event, **kwargs):
    """A FairQueue whose calls wait for `gate` and record what ran together: ('one', item) or ('batch', items)."""
    calls = []

    def one(item):
        gate.wait(5)
        calls.append(("one", item))
        return item.upper()

    def batch(items):
        gate.wait(5)
        calls.append(("batch", list(items)))
        return [item.upper() for item in items]

    return FairQueue("asr", one, max_per_key=4, max_batch=max_batch, batch_fn=batch, **kwargs), calls


def test_fair_queue_batches_waiting_sessions_round_robin_one_item_each():
    gate = threading.Event()
    fair, calls = _recording_fair_queue(3, gate)
    try:
        first = fair.submit("w", "w0")  # runs alone at once, while the others queue
        time.sleep(0.05)
        futures = [fair.submit("a", f"a{i}") for i in range(3)]
        futures += [fair.submit(key, f"{key}0") for key in "bcd"]
        gate.set()
        assert first.result(5) == "W0" and [f.result(5) for f in futures] == ["A0", "A1", "A2", "B0", "C0", "D0"]
        # turns: a b c | d a (a went to the back of the line) | a
        assert calls == [("one", "w0"), ("batch", ["a0", "b0", "c0"]), ("batch", ["d0", "a1"]), ("one", "a2")]
        assert fair.served == 7
    finally:
        fair.close()


def test_fair_queue_never_waits_to_fill_a_batch():
    sizes = []
    fair = FairQueue("asr", lambda item: sizes.append(1) or item, max_batch=8,
                     batch_fn=lambda items: sizes.append(len(items)) or items)
    try:
        start = time.monotonic()
        assert fair.submit("a", 1).result(5) == 1
        assert time.monotonic() - start < 0.5 and sizes == [1]  # a lone item runs on its own, at once
    finally:
        fair.close()


def test_fair_queue_batches_similar_sizes_and_a_passed_over_session_keeps_its_turn():
    gate = threading.Event()
    observed = []
    fair, calls = _recording_fair_queue(4, gate, size=len, spread=1.25, on_batch=lambda n, s: observed.append(n))
    try:
        fair.submit("w", "w")
        time.sleep(0.05)
        futures = [fair.submit("a", "aaaa"), fair.submit("b", "b" * 20), fair.submit("c", "cccc"),
                   fair.submit("d", "ddddd"), fair.submit("e", "e" * 22)]
        gate.set()
        for f in futures:
            f.result(5)
        assert calls == [("one", "w"), ("batch", ["aaaa", "cccc", "ddddd"]), ("batch", ["b" * 20, "e" * 22])]
        assert observed == [1, 3, 2]
    finally:
        fair.close()


def test_fair_queue_batches_only_items_of_one_group():
    gate = threading.Event()
    fair, calls = _recording_fair_queue(4, gate, group=lambda item: None if item.startswith("x") else item[1])
    try:
        fair.submit("w", "w0")
        time.sleep(0.05)
        futures = [fair.submit(key, item) for key, item in
                   [("a", "a1"), ("b", "x1"), ("c", "c2"), ("d", "d1"), ("e", "e2"), ("f", "x2")]]
        gate.set()
        for f in futures:
            f.result(5)
        # group None (x..) always runs alone; a1 and d1 share group "1", c2 and e2 group "2"
        assert calls == [("one", "w0"), ("batch", ["a1", "d1"]), ("one", "x1"), ("batch", ["c2", "e2"]), ("one", "x2")]
    finally:
        fair.close()


def test_a_failing_batch_runs_its_items_alone_so_only_the_bad_one_fails():
    gate = threading.Event()
    ran_alone = []

    def one(item):
        gate.wait(5)
        ran_alone.append(item)
        if item == "bad":
            raise ValueError("bad item")
        return item

    def batch(items):
        if "bad" in items:
            raise ValueError("bad item")
        return items

    fair = FairQueue("asr", one, max_batch=4, batch_fn=batch)
    try:
        fair.submit("w", "w")
        time.sleep(0.05)
        good, bad = fair.submit("a", "good"), fair.submit("b", "bad")
        gate.set()
        assert good.result(5) == "good"
        with pytest.raises(ValueError, match="bad item"):
            bad.result(5)
        assert ran_alone == ["w", "good", "bad"]
    finally:
        fair.close()


def test_a_fair_queue_batch_needs_a_batch_function():
    with pytest.raises(ValueError, match="batch_fn"):
        FairQueue("asr", lambda item: item, max_batch=2)
