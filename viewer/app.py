"""``emlive view``: open the viewer on a pipeline, or render one frame of it to a file (headless, docs)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np


def _application():
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(sys.argv[:1])
    return app


def wait_until(predicate, timeout: float) -> bool:
    """Run the Qt event loop until ``predicate()`` holds (True) or ``timeout`` seconds pass (False)."""
    from PySide6 import QtCore

    app = _application()
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
        if predicate():
            return True
        time.sleep(0.01)
    return False


def wait_for_map(window, timeout: float) -> bool:
    """Until the map panel shows a map with measured pixels (or ``timeout``)."""
    def measured() -> bool:
        shown = window.map_panel.shown
        return shown is not None and bool(np.isfinite(shown).any())
    return wait_until(measured, timeout)


def run_viewer(address: str, screenshot: str | os.PathLike | None = None, timeout: float = 30.0,
               result: str | None = None, size: tuple[int, int] = (1400, 900)) -> int:
    """Open the viewer on the pipeline at ``address`` (its query endpoint); returns the exit code.

    With ``screenshot``: wait (at most ``timeout`` s) until a map has arrived, render the window
    once to that file and return 0; return 2 with a message on stderr if nothing arrived.
    """
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                    or os.environ.get("QT_QPA_PLATFORM") or sys.platform in ("darwin", "win32"))
    if headless:
        if screenshot is None:
            print("emlive view: no display (DISPLAY is not set); use --screenshot FILE to render one frame "
                  "headless, or ssh -X / a tunnel to view from a desktop", file=sys.stderr)
            return 2
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # no screen needed for a file
    app = _application()
    from .model import PipelineModel
    from .window import ViewerWindow

    model = PipelineModel(address)
    try:
        window = ViewerWindow(model, result=result)
    except ValueError as exc:
        model.close()
        print(f"emlive view: {exc}", file=sys.stderr)
        return 2
    window.resize(*size)
    window.show()
    if screenshot is None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C closes the viewer (Qt's loop never returns to Python)
        code = app.exec()
        model.close()
        return int(code)
    try:
        if not wait_for_map(window, timeout):
            why = model.message if not model.connected else f"no map result arrived within {timeout:g} s"
            print(f"emlive view: nothing to render from {address}: {why}", file=sys.stderr)
            return 2
        # show what a click gives too: the pattern and curves of the centre (or a measured) position
        shown = window.map_panel.shown
        y, x = shown.shape[0] // 2, shown.shape[1] // 2
        if not np.isfinite(shown[y, x]):
            measured = np.argwhere(np.isfinite(shown))
            y, x = measured[len(measured) // 2]
        window.map_panel.click((int(y), int(x)))
        wait_until(lambda: window.last_inspection is not None, min(5.0, timeout))
        for _ in range(3):  # let the layout settle after the last data arrived
            window.tick()
            app.processEvents()
        path = Path(screenshot)
        if not window.grab().save(str(path)):
            print(f"emlive view: could not write {path}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
        return 0
    finally:
        window.close()
        model.close()


__all__ = ["run_viewer", "wait_for_map"]
