"""The inspect panel: the raw pattern at a clicked position, and every per-position curve there.

Which curves appear follows the run's stack results (SNEM: I(Q) and G(r); ECM: g2(τ)); what
is drawn over them comes from the analyzer's overlay (:mod:`emlive.viewer.overlays`).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from .colors import auto_levels, colormap
from .model import Inspection, Key
from .overlays import OverlayCurve


class InspectPanel(QtWidgets.QWidget):
    """Raw pattern (log scale) above one plot per stack result, with overlay curves."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.inspection: Inspection | None = None
        self.frame: np.ndarray | None = None
        self.title = QtWidgets.QLabel("click a map pixel to see its pattern and curves "
                                      "(Ctrl/Shift-click: reference for the similarity map)")
        self.title.setWordWrap(True)
        self.pattern_widget = pg.GraphicsLayoutWidget()
        self.pattern_view = self.pattern_widget.addViewBox()
        self.pattern_view.setAspectLocked(True)
        self.pattern_view.invertY(True)
        self.pattern = pg.ImageItem(axisOrder="row-major")
        self.pattern.setColorMap(colormap("inferno"))
        self.pattern_view.addItem(self.pattern)
        self.plots: dict[Key, pg.PlotWidget] = {}
        self.overlay_items: dict[Key, list[pg.PlotDataItem]] = {}
        self._plots_box = QtWidgets.QVBoxLayout()
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.title)
        layout.addWidget(self.pattern_widget, 2)
        layout.addLayout(self._plots_box, 3)

    def show_inspection(self, insp: Inspection, x_axes: dict[Key, np.ndarray | None],
                        overlays: list[OverlayCurve], units: dict[Key, str] | None = None,
                        values: str = "") -> None:
        """Draw one answer: ``x_axes`` gives each curve's x values, ``overlays`` what goes on top."""
        self.inspection = insp
        where = (f"position {insp.position} (index {insp.indices[0]})" if len(insp.positions) == 1
                 else f"ROI of {len(insp.positions)} positions (mean of {insp.frames_averaged} patterns)")
        text = where + (f"; {values}" if values else "")
        if insp.errors:
            text += "\n" + "; ".join(insp.errors)
        self.title.setText(text)
        if insp.frame is not None:
            self.frame = insp.frame
            shown = np.log1p(np.clip(np.asarray(insp.frame, dtype=np.float64), 0, None)).astype(np.float32)
            first = self.pattern.image is None
            self.pattern.setImage(shown, autoLevels=False, levels=auto_levels(shown, (0.5, 99.8)))
            if first:
                self.pattern_view.autoRange(padding=0.0)
        for key, y in insp.curves.items():
            plot = self._plot(key, (units or {}).get(key, ""))
            x = x_axes.get(key)
            y = np.asarray(y, dtype=np.float64)
            x = np.arange(y.size, dtype=np.float64) if x is None or x.size != y.size else x
            ok = np.isfinite(y)
            plot.listDataItems()[0].setData(x[ok], y[ok])
            for item in self.overlay_items.pop(key, []):
                plot.removeItem(item)
        for oc in overlays:
            key = next((k for k in self.plots if k[1] == oc.target), None)
            if key is None:
                continue
            style = QtCore.Qt.PenStyle.DashLine if oc.dashed else QtCore.Qt.PenStyle.SolidLine
            item = self.plots[key].plot(oc.x, oc.y, pen=pg.mkPen(oc.color, width=2, style=style), name=oc.label)
            self.overlay_items.setdefault(key, []).append(item)

    def clear_plots(self) -> None:
        """A new run: its results may differ."""
        for plot in self.plots.values():
            self._plots_box.removeWidget(plot)
            plot.deleteLater()
        self.plots.clear()
        self.overlay_items.clear()
        self.pattern.clear()
        self.frame = None

    def _plot(self, key: Key, units: str) -> pg.PlotWidget:
        if key not in self.plots:
            plot = pg.PlotWidget(title=f"{key[0]}/{key[1]}")
            plot.setBackground("w")
            plot.showGrid(x=True, y=True, alpha=0.3)
            plot.getAxis("left").enableAutoSIPrefix(False)
            plot.addLegend(offset=(-10, 10))
            plot.plot([], [], pen=pg.mkPen("#1f77b4", width=2), name=key[1])
            plot.setLabel("left", f"{key[1]} ({units})" if units else key[1])  # no SI-prefix rescaling of Å⁻²
            self._plots_box.addWidget(plot)
            self.plots[key] = plot
        return self.plots[key]


__all__ = ["InspectPanel"]
