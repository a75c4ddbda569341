"""The worker pool a call runs on, waited on in short steps so that the waiting thread can poll
``cancel()`` and keep progress reports coming."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import queue
import threading
import time
from typing import Any, Callable, Iterator, Optional, TypeVar

from .errors import Cancelled, MediaError
from .reports import Progress
from .transport import Stopper

log = logging.getLogger("ankicollab_media")
T = TypeVar("T")

STEP = 0.1
#: How long a stopped call waits for its transfers to stop.
GRACE = 0.7


class Pool:
    def __init__(self, workers: int, stopper: Stopper, progress: Progress, name: str) -> None:
        self._executor = cf.ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name)
        self.stopper = stopper
        self.progress = progress
        self.inflight: set[cf.Future[Any]] = set()
        #: The first unexpected exception a task raised (a bug, not a file's failure).
        self.crashed: Optional[BaseException] = None

    def submit(self, fn: Callable[..., T], *args: Any) -> cf.Future[T]:
        future = self._executor.submit(fn, *args)
        self.inflight.add(future)
        return future

    def wait(self, at_most: int = 0) -> bool:
        """Wait until no more than ``at_most`` tasks are running or queued. False if stopped."""
        while len(self.inflight) > at_most:
            if self.stopper.stopped():
                return False
            done, _ = cf.wait(self.inflight, timeout=STEP, return_when=cf.FIRST_COMPLETED)
            for f in done:
                self.inflight.discard(f)
                exc = f.exception()
                if exc is not None and self.crashed is None:
                    log.error("a worker failed", exc_info=exc)
                    self.crashed = exc
            self.progress.tick()
        return not self.stopper.stopped()

    def run(self, fn: Callable[[T], Any], items: list[T]) -> list[Any]:
        """``fn`` over ``items`` in the pool; their results in order. None for items not run
        because the call was stopped."""
        futures = [self.submit(fn, item) for item in items]
        self.wait()
        return [
            f.result() if f.done() and not f.cancelled() and f.exception() is None else None for f in futures
        ]

    def close(self) -> None:
        """Stop taking work and wait for what runs. Once stopped, wait at most ``GRACE``: a
        stopped transfer notices within a chunk (its socket is shut down under it), and one still
        waiting for a server's first byte is left to end on its own, its result ignored."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        pending = {f for f in self.inflight if not f.cancelled()}
        deadline: Optional[float] = None
        while pending:
            if deadline is None and self.stopper.stopped():
                deadline = time.monotonic() + GRACE
            if deadline is not None and time.monotonic() > deadline:
                log.warning(
                    "%d transfers did not stop in time; leaving them to end on their own", len(pending)
                )
                break
            _, pending = cf.wait(pending, timeout=STEP)
            self.progress.tick()
        self.inflight.clear()


def ahead(items: Iterator[T], stopper: Stopper, progress: Progress, name: str) -> Iterator[T]:
    """``items``, produced by a thread of its own one item ahead of the consumer: the next page
    of an answer, or the next batch of asked uploads, is on its way while this one is worked on,
    and no more than that is held. The consumer's waits poll ``cancel()``; the producer's errors
    reach the consumer."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)

    def produce() -> None:
        try:
            for item in items:
                while not stopper.stopped():
                    try:
                        q.put(("item", item), timeout=STEP)
                        break
                    except queue.Full:
                        continue
                if stopper.stopped():
                    return
            q.put(("end", None))
        except BaseException as e:
            q.put(("error", e))

    threading.Thread(target=produce, name=name, daemon=True).start()
    while True:
        try:
            kind, value = q.get(timeout=STEP)
        except queue.Empty:
            if stopper.stopped():
                raise Cancelled("cancelled") from None
            progress.tick()
            continue
        if kind == "end":
            return
        if kind == "error":
            raise value
        yield value


R = TypeVar("R")


def conclude(work: Callable[[], None], finish: Callable[[], None], report: R) -> R:
    """Run a call's ``work``, then always ``finish`` it (stop its pools, remove what it left,
    report progress a last time). A cancel ends the call with what finished; a whole-call error
    is raised with that report attached."""
    try:
        work()
    except Cancelled:
        pass
    except MediaError as e:
        finish()
        e.report = report
        raise
    finish()
    return report
