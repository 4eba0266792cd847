"""The curve panel: several 1-D results (FEM V(k), mean I(Q), ...) on one plot, exportable as CSV."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6 import QtWidgets

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


class CurvePanel(QtWidgets.QWidget):
    """Plots named curves; ``set_curves`` replaces them all, ``update_curve`` redraws one live."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.legend = self.plot.addLegend(offset=(-10, 10))
        self.curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._items: dict[str, pg.PlotDataItem] = {}
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.plot)

    def set_curves(self, curves: dict[str, tuple[np.ndarray | None, np.ndarray]], xlabel: str = "",
                   ylabel: str = "") -> None:
        self.plot.clear()
        self.legend.clear()
        self.curves.clear()
        self._items.clear()
        colors = itertools.cycle(_PALETTE)
        for label, (x, y) in curves.items():
            item = self.plot.plot([], [], pen=pg.mkPen(next(colors), width=2), name=label)
            self._items[label] = item
            self.update_curve(label, x, y)
        self.plot.setLabel("bottom", xlabel)
        self.plot.setLabel("left", ylabel)

    def update_curve(self, label: str, x: np.ndarray | None, y: np.ndarray) -> None:
        y = np.asarray(y, dtype=np.float64).ravel()
        x = np.arange(y.size, dtype=np.float64) if x is None or np.size(x) != y.size else np.asarray(x, float)
        self.curves[label] = (x, y)
        finite = np.isfinite(y) & np.isfinite(x)
        self._items[label].setData(x[finite], y[finite])

    def export_csv(self, path: str | Path) -> Path:
        """Two columns per curve (``<label> x``, ``<label>``), padded where curves differ in length."""
        if not self.curves:
            raise ValueError("no curves to export")
        path = Path(path)
        columns, header = [], []
        for label, (x, y) in self.curves.items():
            columns += [x, y]
            header += [f"{label} x", label]
        n = max(len(c) for c in columns)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for i in range(n):
                w.writerow([repr(float(c[i])) if i < len(c) else "" for c in columns])
        return path


__all__ = ["CurvePanel"]
