"""Reading ahead (transforms.ahead): the producer's items in order, its exception where it
happened, and a consumer that stops early stops the producer."""

from __future__ import annotations

import threading

import pytest

from transforms.ahead import ahead


def test_items_arrive_in_order_and_the_producer_runs_in_another_thread():
    threads = []

    def produce():
        for i in range(50):
            threads.append(threading.current_thread().name)
            yield i

    assert list(ahead(produce, depth=3)) == list(range(50))
    assert set(threads) == {"beamscore-read-ahead"}


def test_an_error_is_raised_after_the_items_made_before_it():
    def produce():
        yield 1
        yield 2
        raise ValueError("block 3 is broken")

    got = []
    with pytest.raises(ValueError, match="block 3 is broken"):
        for item in ahead(produce):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_closes_the_producer():
    closed = threading.Event()
    made = []

    def produce():
        try:
            for i in range(1000):
                made.append(i)
                yield i
        finally:
            closed.set()

    items = ahead(produce, depth=2)
    assert next(items) == 0
    items.close()  # the consumer stops: the producer is stopped and its iterator closed
    assert closed.wait(5)
    assert len(made) <= 4  # never more than depth items ahead (plus the ones taken)
    assert not [t for t in threading.enumerate() if t.name == "beamscore-read-ahead"]


def test_a_producer_that_fails_before_its_first_item_is_raised_not_waited_for():
    def produce():
        raise OSError("cannot open the file")

    with pytest.raises(OSError, match="cannot open the file"):
        list(ahead(produce))
