"""Reading ahead: a text unit's next blocks are read, cut and parsed by a thread while the
current one is validated, scored and written downstream (the file's read and Arrow's parse
release the GIL), so that one worker keeps two cores busy."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


def ahead(produce: Callable[[], Iterator[T]], depth: int = 2) -> Iterator[T]:
    """The items of `produce()`, made by a thread at most `depth` items ahead of the consumer.

    An exception in the producer is raised here, after the items made before it; closing this
    iterator (the consumer stopped) stops the producer at its next item and closes its iterator.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        source = None
        try:
            source = produce()  # inside: a producer that fails at once is raised there too
            for item in source:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put((None, e))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=run, name="beamscore-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()
