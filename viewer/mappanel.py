"""The map panel: one scan-shaped result, filling live, with colormap, levels, click and ROI."""

from __future__ import annotations

import warnings

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from .colors import COLORMAPS, UNFILLED, auto_levels, colormap, render_rgba

_REFERENCE_MODS = QtCore.Qt.KeyboardModifier.ControlModifier | QtCore.Qt.KeyboardModifier.ShiftModifier


class _ClickableImage(pg.ImageItem):
    """An ImageItem that reports left clicks in image coordinates (row-major: x is the column)."""

    def __init__(self, on_click) -> None:
        super().__init__(axisOrder="row-major")
        self._on_click = on_click

    def mouseClickEvent(self, ev) -> None:
        if ev.button() != QtCore.Qt.MouseButton.LeftButton or self.image is None:
            return super().mouseClickEvent(ev)
        ev.accept()
        self._on_click(ev.pos(), ev.modifiers())


class MapPanel(QtWidgets.QWidget):
    """Shows one map; unmeasured pixels (NaN) in :data:`UNFILLED`; emits the pixel clicked.

    ``pixelClicked(position, reference)``: ``reference`` is True for a Ctrl- or Shift-click.
    ``roiChanged(positions)``: the scan positions under the rectangle ROI, when it moves.
    Maps of more than two scan axes (tilt series) show one plane, chosen with the slider.
    """

    pixelClicked = QtCore.Signal(object, bool)
    roiChanged = QtCore.Signal(object)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = None
        self.data: np.ndarray | None = None      # the full result
        self.shown: np.ndarray | None = None     # the 2-D plane displayed
        self.cmap = "viridis"
        self.auto = True
        self._source_ndim = 2
        self._programmatic = False
        self.title = QtWidgets.QLabel("no map yet")
        self.title.setObjectName("mapTitle")
        self.value = QtWidgets.QLabel("")
        self.graphics = pg.GraphicsLayoutWidget()
        self.view = self.graphics.addViewBox()
        self.view.setAspectLocked(True)
        self.view.invertY(True)
        self.view.setMenuEnabled(False)
        self.background = QtWidgets.QGraphicsRectItem(0, 0, 1, 1)
        self.background.setBrush(QtGui.QColor(*UNFILLED))
        self.background.setPen(pg.mkPen(None))
        self.view.addItem(self.background)
        self.image = _ClickableImage(self._clicked)
        self.view.addItem(self.image)
        self.marker = QtWidgets.QGraphicsRectItem(0, 0, 1, 1)
        self.marker.setPen(pg.mkPen("#ffffff", width=2, cosmetic=True))
        self.marker.setZValue(10)
        self.marker.hide()
        self.view.addItem(self.marker)
        self.ref_marker = QtWidgets.QGraphicsRectItem(0, 0, 1, 1)
        self.ref_marker.setPen(pg.mkPen("#ff3030", width=2, cosmetic=True, style=QtCore.Qt.PenStyle.DashLine))
        self.ref_marker.setZValue(11)
        self.ref_marker.hide()
        self.view.addItem(self.ref_marker)
        self.roi = pg.RectROI([0, 0], [4, 4], pen=pg.mkPen("#ffd700", width=2), snapSize=1.0,
                              translateSnap=True, scaleSnap=True)
        self.roi.setZValue(12)
        self.roi.hide()
        self.view.addItem(self.roi)
        self.roi.sigRegionChangeFinished.connect(self._roi_moved)
        self.histogram = pg.HistogramLUTWidget()
        self.histogram.setImageItem(self.image)
        self.histogram.item.sigLevelChangeFinished.connect(self._levels_dragged)
        self.histogram.setMinimumWidth(110)

        self.cmap_box = QtWidgets.QComboBox()
        self.cmap_box.addItems(COLORMAPS)
        self.cmap_box.currentTextChanged.connect(self.set_colormap)
        self.auto_box = QtWidgets.QCheckBox("auto levels")
        self.auto_box.setChecked(True)
        self.auto_box.toggled.connect(self._auto_toggled)
        self.roi_button = QtWidgets.QPushButton("ROI")
        self.roi_button.setCheckable(True)
        self.roi_button.setToolTip("average the patterns and curves under a rectangle")
        self.roi_button.toggled.connect(self._roi_toggled)
        self.plane = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.plane.valueChanged.connect(lambda _: self._show())
        self.plane.hide()

        controls = QtWidgets.QHBoxLayout()
        controls.addWidget(QtWidgets.QLabel("colormap"))
        controls.addWidget(self.cmap_box)
        controls.addWidget(self.auto_box)
        controls.addWidget(self.roi_button)
        controls.addWidget(self.plane, 1)
        controls.addStretch()
        body = QtWidgets.QHBoxLayout()
        body.addWidget(self.graphics, 1)
        body.addWidget(self.histogram)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.title)
        layout.addLayout(body, 1)
        layout.addLayout(controls)
        layout.addWidget(self.value)
        self.set_colormap(self.cmap)
        self.graphics.scene().sigMouseMoved.connect(self._hover)

    # -- data ------------------------------------------------------------------------------------
    def set_map(self, key, arr: np.ndarray, title: str = "") -> None:
        """Show ``arr`` (scan-shaped; NaN = not measured yet); a new key resets the view range."""
        arr = np.asarray(arr)
        self._source_ndim = arr.ndim
        if arr.ndim == 1:
            arr = arr[None, :]
        new = key != self.key or self.data is None or self.data.shape != arr.shape
        self.key, self.data = key, arr
        self.title.setText(title or f"{key[0]}/{key[1]}")
        if arr.ndim > 2:
            lead = int(np.prod(arr.shape[:-2]))
            self.plane.setRange(0, lead - 1)
            self.plane.setVisible(lead > 1)
        else:
            self.plane.hide()
        self._show(reset=new)

    def _show(self, reset: bool = False) -> None:
        if self.data is None:
            return
        arr = self.data
        if arr.ndim > 2:
            arr = arr.reshape(-1, *arr.shape[-2:])[self.plane.value()]
        self.shown = np.asarray(arr, dtype=np.float32)
        ny, nx = self.shown.shape
        levels = auto_levels(self.shown) if self.auto else self.levels()
        self._programmatic = True  # the histogram reports our own level changes as if dragged
        try:
            with warnings.catch_warnings():  # the histogram of a map not measured yet is all NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                self.image.setImage(self.shown, autoLevels=False, levels=levels)
        finally:
            self._programmatic = False
        self.background.setRect(0, 0, nx, ny)
        if reset:
            self.view.setRange(QtCore.QRectF(0, 0, nx, ny), padding=0.02)
            self.marker.hide()
            self.ref_marker.hide()

    def levels(self) -> tuple[float, float]:
        lo, hi = self.image.getLevels() if self.image.getLevels() is not None else (0.0, 1.0)
        return float(lo), float(hi)

    def set_levels(self, lo: float, hi: float) -> None:
        """Fixed levels (turns automatic levels off)."""
        self.auto_box.setChecked(False)
        self._programmatic = True
        try:
            self.image.setLevels((lo, hi))
            self.histogram.item.setLevels(lo, hi)
        finally:
            self._programmatic = False

    def set_colormap(self, name: str) -> None:
        self.cmap = name
        cmap = colormap(name)
        self.histogram.item.gradient.setColorMap(cmap)
        self.image.setColorMap(cmap)
        if self.cmap_box.currentText() != name:
            self.cmap_box.setCurrentText(name)

    def rgba(self) -> np.ndarray:
        """The displayed plane coloured as on screen, one pixel per scan position (for PNG export)."""
        if self.shown is None:
            raise ValueError("no map to export yet")
        return render_rgba(self.shown, self.cmap, self.levels())

    # -- interaction ------------------------------------------------------------------------------
    def position_of(self, pos: QtCore.QPointF) -> tuple[int, int] | None:
        if self.shown is None:
            return None
        x, y = int(np.floor(pos.x())), int(np.floor(pos.y()))
        ny, nx = self.shown.shape
        return (y, x) if 0 <= y < ny and 0 <= x < nx else None

    def scan_position(self, yx: tuple[int, int]) -> tuple[int, ...]:
        """The scan position of a displayed pixel (adds the plane index of a >2-D map)."""
        if self.data is not None and self.data.ndim > 2:
            lead = np.unravel_index(self.plane.value(), self.data.shape[:-2])
            return (*map(int, lead), *yx)
        if self._source_ndim == 1:
            return (yx[1],)
        return yx

    def click(self, yx: tuple[int, int], reference: bool = False) -> None:
        """What a click on pixel ``yx`` does (also for scripts and tests)."""
        (self.ref_marker if reference else self.marker).setRect(yx[1], yx[0], 1, 1)
        (self.ref_marker if reference else self.marker).show()
        self.pixelClicked.emit(self.scan_position(yx), reference)

    def _clicked(self, pos: QtCore.QPointF, modifiers) -> None:
        yx = self.position_of(pos)
        if yx is not None:
            self.click(yx, bool(modifiers & _REFERENCE_MODS))

    def _hover(self, scene_pos) -> None:
        if self.shown is None:
            return
        yx = self.position_of(self.image.mapFromScene(scene_pos))
        if yx is None:
            self.value.setText("")
            return
        v = self.shown[yx]
        self.value.setText(f"(y, x) = {yx}: {'not measured' if not np.isfinite(v) else f'{v:.5g}'}")

    def _levels_dragged(self) -> None:
        if not self._programmatic:
            self.auto_box.setChecked(False)

    def _auto_toggled(self, on: bool) -> None:
        self.auto = on
        if on:
            self._show()

    def _roi_toggled(self, on: bool) -> None:
        self.roi.setVisible(on)
        if on:
            self._roi_moved()

    def roi_positions(self) -> list[tuple[int, ...]]:
        if self.shown is None:
            return []
        ny, nx = self.shown.shape
        (x0, y0), (w, h) = self.roi.pos(), self.roi.size()
        xs = range(max(0, int(round(x0))), min(nx, int(round(x0 + w))))
        ys = range(max(0, int(round(y0))), min(ny, int(round(y0 + h))))
        return [self.scan_position((y, x)) for y in ys for x in xs]

    def _roi_moved(self) -> None:
        positions = self.roi_positions() if self.roi_button.isChecked() else []
        if positions:
            self.roiChanged.emit(positions)


__all__ = ["MapPanel"]
