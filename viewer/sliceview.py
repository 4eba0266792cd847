"""The slice view: a stack or volume (EDS sinograms, reconstructions, I(Q) per position) one plane at a time."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from .colors import UNFILLED, auto_levels, colormap


class SliceView(QtWidgets.QWidget):
    """Shows the plane of an N-D array at an index along a chosen axis (the other leading axes at 0)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = None
        self.data: np.ndarray | None = None
        self.axes: list[str] = []
        self.axis_values: dict[int, np.ndarray] = {}
        self.title = QtWidgets.QLabel("no stack or volume selected")
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground(pg.mkColor(*UNFILLED))
        self.view = self.graphics.addViewBox()
        self.view.setAspectLocked(False)
        self.view.invertY(True)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(colormap("viridis"))
        self.view.addItem(self.image)
        self.axis_box = QtWidgets.QComboBox()
        self.axis_box.currentIndexChanged.connect(self._axis_changed)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.valueChanged.connect(lambda _: self._show())
        self.where = QtWidgets.QLabel("")
        controls = QtWidgets.QHBoxLayout()
        controls.addWidget(QtWidgets.QLabel("slice along"))
        controls.addWidget(self.axis_box)
        controls.addWidget(self.slider, 1)
        controls.addWidget(self.where)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.title)
        layout.addWidget(self.graphics, 1)
        layout.addLayout(controls)

    def set_data(self, key, arr: np.ndarray, axes: list[str] | None = None,
                 axis_values: dict[int, np.ndarray] | None = None, title: str = "") -> None:
        arr = np.asarray(arr)
        if arr.ndim < 2:
            raise ValueError(f"{key}: a slice view needs at least 2 axes, got shape {arr.shape}")
        new = key != self.key or self.data is None or self.data.shape != arr.shape
        self.key, self.data = key, arr
        self.axis_values = dict(axis_values or {})
        self.title.setText(title or f"{key[0]}/{key[1]} {tuple(arr.shape)}")
        if new:
            self.axes = list(axes or []) + [f"axis {k}" for k in range(len(axes or []), arr.ndim)]
            self.axis_box.blockSignals(True)
            self.axis_box.clear()
            if arr.ndim > 2:
                self.axis_box.addItems(self.axes[:arr.ndim])
                # a stack's planes are along its curve axis (last); a volume's along its first
                self.axis_box.setCurrentIndex(arr.ndim - 1 if self.axis_values.get(arr.ndim - 1) is not None else 0)
            self.axis_box.blockSignals(False)
            self.axis_box.setEnabled(arr.ndim > 2)
            self._axis_changed(reset=True)
        else:
            self._show()

    def _axis(self) -> int:
        return self.axis_box.currentIndex() if self.data is not None and self.data.ndim > 2 else -1

    def _axis_changed(self, *_, reset: bool = False) -> None:
        if self.data is None:
            return
        axis = self._axis()
        n = self.data.shape[axis] if axis >= 0 else 1
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, n - 1))
        if reset or self.slider.value() >= n:
            self.slider.setValue(n // 2)
        self.slider.blockSignals(False)
        self.slider.setEnabled(axis >= 0)
        self._show(reset=True)

    def plane(self) -> np.ndarray:
        arr, axis = self.data, self._axis()
        if axis >= 0:
            arr = np.take(arr, self.slider.value(), axis=axis)
        while arr.ndim > 2:
            arr = arr[0]
        return np.asarray(arr, dtype=np.float32)

    def _show(self, reset: bool = False) -> None:
        if self.data is None:
            return
        plane = self.plane()
        self.image.setImage(plane, autoLevels=False, levels=auto_levels(plane))
        axis = self._axis()
        if axis >= 0:
            i = self.slider.value()
            values = self.axis_values.get(axis)
            at = f" = {values[i]:.4g}" if values is not None and i < len(values) else ""
            self.where.setText(f"{self.axes[axis]}[{i}]{at}")
        else:
            self.where.setText("")
        if reset:
            self.view.setRange(QtCore.QRectF(0, 0, plane.shape[1], plane.shape[0]), padding=0.02)


__all__ = ["SliceView"]
