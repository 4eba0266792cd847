"""The viewer's main window: result list, map, curves, slices, inspect panel, status bar, exports.

Panels are chosen from each result's declared kind (map, curve, stack, volume, frame), so new
analyzers appear without changes here. A timer polls the model and redraws at most
``max_hz`` times a second; fetches run on the model's thread, so input is never held up by
the pipeline, and the pipeline is never held up by the viewer (it drops snapshots we miss).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6 import QtCore, QtGui, QtWidgets

from .curvepanel import CurvePanel
from .inspectpanel import InspectPanel
from .mappanel import MapPanel
from .model import Changes, Inspection, Key, PipelineModel, scan_indexed
from .overlays import overlay_for
from .sliceview import SliceView

logger = logging.getLogger(__name__)

_KEY_ROLE = QtCore.Qt.ItemDataRole.UserRole
_KIND_ORDER = ("map", "curve", "stack", "volume", "frame", "scalar")


class ViewerWindow(QtWidgets.QMainWindow):
    """A live window on one pipeline (through ``model``); ``result`` ("analyzer/name") is shown first."""

    def __init__(self, model: PipelineModel, result: str | None = None, max_hz: float = 30.0,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.setWindowTitle(f"emlive view: {model.query_address}")
        self.wanted: Key | None = tuple(result.split("/", 1)) if result else None  # type: ignore[assignment]
        if result and "/" not in result:
            raise ValueError(f"--result {result!r}: expected analyzer/name, e.g. snem/r_max")
        self.map_key: Key | None = None
        self.curve_keys: list[Key] = []
        self.slice_key: Key | None = None
        self.pending_reference: Key | None = None
        self.last_inspection: Inspection | None = None
        self.inspect_latencies: list[float] = []  # click -> drawn, seconds
        self.inspected_at = 0.0
        self.redraws = 0
        self.tick_seconds: list[float] = []  # time spent per tick, the last 1000 (the GUI is busy that long)
        self._whole_asked = 0.0
        self._note_until = 0.0

        self.tree = QtWidgets.QTreeWidget()
        self.tree.setHeaderLabels(["result", "shape"])
        self.tree.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.itemSelectionChanged.connect(self._selection_changed)
        self.tree.setMinimumWidth(240)
        self.tree.setColumnWidth(0, 170)
        self.map_panel = MapPanel()
        self.map_panel.pixelClicked.connect(self.on_pixel)
        self.map_panel.roiChanged.connect(self.on_roi)
        self.curve_panel = CurvePanel()
        self.slice_view = SliceView()
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.addTab(self.curve_panel, "curves")
        self.tabs.addTab(self.slice_view, "stacks && volumes")
        self.inspect_panel = InspectPanel()

        middle = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        middle.addWidget(self.map_panel)
        middle.addWidget(self.tabs)
        middle.setSizes([600, 300])
        main = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        main.addWidget(self.tree)
        main.addWidget(middle)
        main.addWidget(self.inspect_panel)
        main.setSizes([220, 700, 480])
        self.setCentralWidget(main)

        bar = self.statusBar()
        self.progress_label = QtWidgets.QLabel("no run")
        self.rate_label = QtWidgets.QLabel("")
        self.missing_label = QtWidgets.QLabel("")
        self.status_label = QtWidgets.QLabel("")
        self.message_label = QtWidgets.QLabel(model.message)
        for w in (self.progress_label, self.rate_label, self.missing_label, self.status_label):
            bar.addPermanentWidget(w)
        bar.addWidget(self.message_label, 1)

        menu = self.menuBar().addMenu("&File")
        for text, slot, shortcut in (("Export map as PNG...", self._ask_png, "Ctrl+P"),
                                     ("Export map as TIFF (values)...", self._ask_tiff, "Ctrl+T"),
                                     ("Export curves as CSV...", self._ask_csv, "Ctrl+E")):
            action = QtGui.QAction(text, self)
            action.setShortcut(shortcut)
            action.triggered.connect(slot)
            menu.addAction(action)
        menu.addSeparator()
        quit_action = QtGui.QAction("Quit", self)
        quit_action.setShortcut("Ctrl+Q")
        quit_action.triggered.connect(self.close)
        menu.addAction(quit_action)

        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(max(1, int(round(1000 / max_hz))))  # the redraw rate bound
        self.timer.timeout.connect(self.tick)
        self.timer.start()

    # -- the redraw loop ---------------------------------------------------------------------------
    def tick(self) -> Changes:
        """Take what the model has and redraw what changed (one call per timer tick)."""
        t0 = time.perf_counter()
        try:
            return self._tick()
        finally:
            self.tick_seconds.append(time.perf_counter() - t0)
            del self.tick_seconds[:-1000]

    def _tick(self) -> Changes:
        ch = self.model.poll()
        if ch.run:
            self.inspect_panel.clear_plots()
            self.map_key = self.slice_key = None
            self.curve_keys = []
        if ch.descriptors:
            self._rebuild_tree()
        if ch.arrays:
            self._redraw(ch.arrays)
        if ch.progress or ch.message or ch.run:
            self._update_status()
        for insp in ch.inspections:
            if insp.indices and self.model.run_uid is not None:
                self._show_inspection(insp)
        for err in ch.errors:
            self.note(err)
        if ch:
            self.redraws += 1
        return ch

    def _redraw(self, keys: set[Key]) -> None:
        if self.pending_reference in keys:
            self.select(self.pending_reference)
            self.pending_reference = None
        if self.map_key is None:
            self._choose_default_map()
        if self.map_key in keys and self.map_key in self.model.arrays:
            self._show_map()
        if any(k in keys or (k[0], self._axis_name(k)) in keys for k in self.curve_keys):
            self._show_curves()
        if self.slice_key is not None and self.slice_key in keys:
            self._show_slice()

    def _update_status(self) -> None:
        p = self.model.progress
        if p:
            n, done = p.get("n_frames") or 0, p.get("frames_analyzed", 0)
            pct = 100.0 * done / n if n else 0.0
            self.progress_label.setText(f"{done} / {n} frames ({pct:.0f} %)")
            self.rate_label.setText(f"{p.get('frames_per_s', 0.0):,.0f} frames/s")
            self.missing_label.setText(f"missing {p.get('frames_missing', 0)}")
            self.status_label.setText(p.get("status", self.model.run_status))
        if time.monotonic() > self._note_until:
            self.message_label.setText(self.model.message)

    def note(self, text: str, seconds: float = 5.0) -> None:
        """A message of ours (an export written, a failed fetch), kept a few seconds over the model's."""
        self.message_label.setText(text)
        self._note_until = time.monotonic() + seconds

    # -- the result list -------------------------------------------------------------------------------
    def _rebuild_tree(self) -> None:
        self.tree.blockSignals(True)
        self.tree.clear()
        groups: dict[str, dict[str, list[Key]]] = {}
        for key in self.model.result_keys():
            groups.setdefault(key[0], {}).setdefault(self.model.kind(key), []).append(key)
        for analyzer, kinds in groups.items():
            top = QtWidgets.QTreeWidgetItem([analyzer, ""])
            top.setFlags(top.flags() & ~QtCore.Qt.ItemFlag.ItemIsSelectable)
            self.tree.addTopLevelItem(top)
            for kind in sorted(kinds, key=lambda k: _KIND_ORDER.index(k) if k in _KIND_ORDER else 99):
                group = QtWidgets.QTreeWidgetItem([f"{kind}s", ""])
                group.setFlags(group.flags() & ~QtCore.Qt.ItemFlag.ItemIsSelectable)
                top.addChild(group)
                for key in kinds[kind]:
                    d = self.model.descriptor(key)
                    units = f" [{d['units']}]" if d.get("units") else ""
                    shape = "×".join(map(str, d["shape"])) + (" (on demand)" if d.get("deferred") else "")
                    item = QtWidgets.QTreeWidgetItem([key[1] + units, shape])
                    item.setData(0, _KEY_ROLE, key)
                    group.addChild(item)
                    if key == self.map_key or key in self.curve_keys or key == self.slice_key:
                        item.setSelected(True)
                group.setExpanded(kind in ("map", "curve"))
            top.setExpanded(True)
        self.tree.blockSignals(False)

    def _item(self, key: Key) -> QtWidgets.QTreeWidgetItem | None:
        it = QtWidgets.QTreeWidgetItemIterator(self.tree)
        while it.value():
            if it.value().data(0, _KEY_ROLE) == key:
                return it.value()
            it += 1
        return None

    def select(self, key: Key) -> None:
        """Show a result in the panel of its kind (a map replaces the map; curves add up)."""
        key = tuple(key)  # type: ignore[assignment]
        if key not in self.model.result_keys():
            raise KeyError(f"no result {key[0]}/{key[1]} in this run")
        kind = self.model.kind(key)
        if kind == "map":
            self.map_key = key
            self._show_map()
        elif kind == "curve":
            if key not in self.curve_keys:
                self.curve_keys.append(key)
            self._show_curves()
            self.tabs.setCurrentWidget(self.curve_panel)
        elif kind in ("stack", "volume", "frame"):
            self.slice_key = key
            self._show_slice()
            self.tabs.setCurrentWidget(self.slice_view)
        item = self._item(key)
        if item is not None:
            self.tree.blockSignals(True)
            item.setSelected(True)
            self.tree.blockSignals(False)

    def _selection_changed(self) -> None:
        keys = [tuple(i.data(0, _KEY_ROLE)) for i in self.tree.selectedItems() if i.data(0, _KEY_ROLE)]
        curves = [k for k in keys if self.model.kind(k) == "curve"]
        if curves != self.curve_keys:
            self.curve_keys = curves
            self._show_curves()
        current = self.tree.currentItem()
        key = current.data(0, _KEY_ROLE) if current is not None else None
        if key is not None and tuple(key) in keys and self.model.kind(tuple(key)) != "curve":
            self.select(tuple(key))

    def _choose_default_map(self) -> None:
        maps = [k for k in self.model.result_keys() if self.model.kind(k) == "map" and k in self.model.arrays]
        if self.wanted in maps:
            self.map_key = self.wanted
        elif maps:
            self.map_key = maps[0]
        if self.map_key is not None:
            self._show_map()
            item = self._item(self.map_key)
            if item is not None:
                item.setSelected(True)
        if not self.curve_keys:  # a curve that is not another's x axis (mean I(Q), V(k)) to start with
            axes = {(d["analyzer"], a) for d in self.model.descriptors.values() for a in d.get("axes") or []}
            first = next((k for k in self.model.result_keys() if self.model.kind(k) == "curve"
                          and k not in axes and k in self.model.arrays), None)
            if first is not None:
                self.curve_keys = [first]
                self._show_curves()
        if self.wanted is not None and self.wanted in self.model.result_keys() and \
                self.model.kind(self.wanted) != "map":
            self.select(self.wanted)
            self.wanted = None

    # -- panels ------------------------------------------------------------------------------------------
    def _show_map(self) -> None:
        arr = self.model.arrays.get(self.map_key)
        if arr is None:
            return
        d = self.model.descriptor(self.map_key)
        units = f" [{d['units']}]" if d.get("units") else ""
        filled = int(np.isfinite(arr).sum())
        self.map_panel.set_map(self.map_key, arr, f"{self.map_key[0]}/{self.map_key[1]}{units}  "
                                                  f"({filled} of {arr.size} positions measured)")

    def _axis_name(self, key: Key) -> str:
        if key not in self.model.result_keys():
            return ""
        axes = self.model.descriptor(key).get("axes") or []
        return axes[-1] if axes else ""

    def _show_curves(self) -> None:
        curves = {}
        for key in self.curve_keys:
            y = self.model.arrays.get(key)
            if y is None:
                continue
            x = self.model.x_axis(key)
            y = np.asarray(y)
            if y.ndim == 1:
                curves[f"{key[0]}/{key[1]}"] = (x, y)
            else:  # several curves (NMF components): one per leading index
                for i, row in enumerate(y.reshape(-1, y.shape[-1])):
                    curves[f"{key[0]}/{key[1]}[{i}]"] = (x, row)
        xlabel = self._axis_name(self.curve_keys[0]) if self.curve_keys else ""
        self.curve_panel.set_curves(curves, xlabel=xlabel)

    def _show_slice(self) -> None:
        key = self.slice_key
        arr = self.model.arrays.get(key)
        d = self.model.descriptor(key)
        if arr is None:
            now = time.monotonic()
            if now - self._whole_asked > 2.0:  # deferred (large): fetched on demand, not at every snapshot
                self._whole_asked = now
                self.model.fetch_whole(key)
            self.slice_view.title.setText(f"{key[0]}/{key[1]}: fetching {d['shape']} ...")
            return
        axes = list(d.get("axes") or [])
        values = {i: self.model.arrays.get((key[0], a)) for i, a in enumerate(axes)}
        self.slice_view.set_data(key, arr, axes, {i: v for i, v in values.items() if v is not None})

    # -- interaction --------------------------------------------------------------------------------------
    def on_pixel(self, position: tuple[int, ...], reference: bool) -> None:
        """Plain click: inspect the position; Ctrl/Shift-click: reference maps (SNEM: Pearson of G(r))."""
        if reference:
            asked = []
            for analyzer in {k[0] for k in self.model.descriptors}:
                ov = overlay_for(analyzer)
                if ov.reference_query:
                    self.pending_reference = self.model.reference(analyzer, ov.reference_query, position,
                                                                  ov.reference_answer)
                    asked.append(f"{analyzer} {ov.reference_query}")
            self.note(f"reference {position}: asking " + (", ".join(asked) or
                                       "nothing (no analyzer offers a reference map)"))
            return
        try:
            self.model.inspect([position], **self._inspect_options())
        except ValueError as exc:
            self.note(str(exc))

    def _inspect_options(self) -> dict:
        """What a click on the current map can ask: scan-indexed maps get patterns and stacks, all get queries."""
        by_position = self.map_key is None or scan_indexed(self.model.descriptor(self.map_key))
        queries = [(a, overlay_for(a).inspect_query) for a in sorted({k[0] for k in self.model.descriptors})
                   if overlay_for(a).inspect_query and (self.map_key is None or self.map_key[0] == a)]
        return {"by_position": by_position, "queries": queries}

    def on_roi(self, positions: list[tuple[int, ...]]) -> None:
        try:
            self.model.inspect(positions, by_position=self._inspect_options()["by_position"])
        except ValueError as exc:
            self.note(str(exc))

    def _show_inspection(self, insp: Inspection) -> None:
        x_axes = {k: insp.x[k] if k in insp.x else self.model.x_axis(k) for k in insp.curves}
        units = {k: self.model.descriptor(k).get("units", "") for k in insp.curves if k in self.model.descriptors}
        overlays = []
        for analyzer in {k[0] for k in insp.curves}:
            overlays += overlay_for(analyzer).curves(analyzer, insp, self.model.arrays)
        values = ""
        if self.map_key is not None and len(insp.positions) == 1:
            arr = self.model.arrays.get(self.map_key)
            if arr is not None and arr.ndim == len(insp.position):
                values = f"{self.map_key[1]} = {float(arr[insp.position]):.5g}"
        self.inspect_panel.show_inspection(insp, x_axes, overlays, units, values)
        self.last_inspection = insp
        self.inspected_at = time.perf_counter()
        self.inspect_latencies.append(self.inspected_at - insp.t_request)

    # -- exports ------------------------------------------------------------------------------------------
    def export_map_png(self, path: str | Path, min_size: int = 512) -> Path:
        """The map as coloured on screen, each scan position an integer block of pixels, NaN in the unfilled colour."""
        rgba = self.map_panel.rgba()
        scale = max(1, -(-min_size // max(rgba.shape[:2])))
        big = np.repeat(np.repeat(rgba, scale, axis=0), scale, axis=1)
        path = Path(path)
        Image.fromarray(big).save(path, format="PNG")
        return path

    def export_map_tiff(self, path: str | Path) -> Path:
        """The map's values as 32-bit float TIFF (NaN kept), for quantitative use elsewhere."""
        if self.map_panel.shown is None:
            raise ValueError("no map to export yet")
        path = Path(path)
        Image.fromarray(np.ascontiguousarray(self.map_panel.shown, dtype=np.float32)).save(path, format="TIFF")
        return path

    def export_curves_csv(self, path: str | Path) -> Path:
        return self.curve_panel.export_csv(path)

    def _ask(self, what: str, suffix: str, export) -> None:
        name = f"{self.map_key[0]}_{self.map_key[1]}" if self.map_key and suffix != ".csv" else "curves"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, f"Export {what}", name + suffix)
        if path:
            try:
                export(path)
                self.note(f"wrote {path}")
            except (ValueError, OSError) as exc:
                self.note(f"export failed: {exc}")

    def _ask_png(self) -> None:
        self._ask("map as PNG", ".png", self.export_map_png)

    def _ask_tiff(self) -> None:
        self._ask("map as TIFF", ".tif", self.export_map_tiff)

    def _ask_csv(self) -> None:
        self._ask("curves as CSV", ".csv", self.export_curves_csv)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.timer.stop()
        self.model.close()
        super().closeEvent(event)


__all__ = ["ViewerWindow"]
