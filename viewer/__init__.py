"""The live viewer (``emlive view``): maps filling as the scan runs, the pattern and curves behind a pixel.

Imports only :mod:`emlive.stream`. Qt (PySide6) and pyqtgraph are imported by the panels and the
window, not here: :class:`PipelineModel` and the overlays work without a display.
"""

from .model import Changes, Inspection, PipelineModel, snapshot_address_for
from .overlays import Overlay, OverlayCurve, overlay_for, register_overlay

__all__ = ["PipelineModel", "Changes", "Inspection", "snapshot_address_for", "Overlay", "OverlayCurve",
           "overlay_for", "register_overlay"]
