"""Anki's GUI parts, for real, around a stand-in for its main window.

``aqt.main.AnkiQt`` needs a profile manager and much more to start; what QueryOp, the task
manager and the progress window use of it is small: the Qt application, ``taskman``,
``progress``, ``col``, the background-op counters and ``inMainThread``. This gives exactly that,
with Anki's own ``TaskManager`` and ``ProgressManager``, and makes ``col`` record any read off the
main thread by code that is not Anki's.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import weakref
from typing import Any, Callable

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import aqt
from aqt.progress import ProgressManager
from aqt.qt import QApplication, QMainWindow
from aqt.taskman import TaskManager

_keep: list[QApplication] = []


def app() -> QApplication:
    """The one Qt application (Qt allows one per process)."""
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        return existing
    _keep.append(QApplication(sys.argv[:1]))  # held for the whole process
    return _keep[-1]


class MainWindow(QMainWindow):  # type: ignore[misc]
    def __init__(self, col: Any) -> None:
        qt_app = app()  # before any widget
        super().__init__()
        self.app = qt_app
        self._col = col
        #: Stacks of reads of ``mw.col`` off the main thread by code other than Anki's own.
        self.off_main_col_reads: list[str] = []
        self.background_ops = 0
        self.taskman = TaskManager(self)
        self.progress = ProgressManager(self)
        aqt.mw = self

    def weakref(self) -> Any:
        return weakref.proxy(self)

    def inMainThread(self) -> bool:
        return threading.current_thread() is threading.main_thread()

    def _increase_background_ops(self) -> None:
        self.background_ops += 1

    def _decrease_background_ops(self) -> None:
        self.background_ops -= 1

    @property
    def col(self) -> Any:
        if not self.inMainThread():
            caller = sys._getframe(1).f_globals.get("__name__", "")
            # QueryOp hands mw.col to every op, with or without the collection: that is Anki's.
            if not caller.startswith("aqt."):
                self.off_main_col_reads.append("".join(traceback.format_stack(limit=6)))
        return self._col

    def record_progress(self) -> list[tuple[Any, Any, Any]]:
        """(value, max, label) of every update of Anki's progress window, checked to happen on
        the main thread."""
        seen: list[tuple[Any, Any, Any]] = []
        real = self.progress.update

        def update(*args: Any, **kw: Any) -> None:
            assert self.inMainThread(), "progress.update() off the main thread"
            seen.append((kw.get("value"), kw.get("max"), kw.get("label")))
            real(*args, **kw)

        self.progress.update = update
        return seen

    def run_until(self, done: Callable[[], bool], timeout: float = 120.0) -> None:
        """Run Qt's event loop (as Anki's main thread would) until ``done()``."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError("the background operation did not finish")
            self.app.processEvents()
            time.sleep(0.005)
        # Let the progress window close.
        end = time.monotonic() + 0.7
        while time.monotonic() < end:
            self.app.processEvents()
            time.sleep(0.01)
