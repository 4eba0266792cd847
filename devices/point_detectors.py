"""Point detectors: HAADF and EDS, one number per read from a :class:`PointDriver`."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ophyd_async.core import StandardReadable, StandardReadableFormat, soft_signal_r_and_setter

from .drivers import PointDriver

__all__ = ["EDSDetector", "HAADFDetector"]

logger = logging.getLogger(__name__)


class HAADFDetector(StandardReadable):
    """High-angle annular dark-field detector: ``counts`` per read (hinted)."""

    def __init__(self, driver: PointDriver, name: str = "") -> None:
        self.driver = driver
        with self.add_children_as_readables(StandardReadableFormat.HINTED_UNCACHED_SIGNAL):
            self.counts, _ = soft_signal_r_and_setter(float, units="counts", getter=driver.read)
        super().__init__(name=name)


class EDSDetector(StandardReadable):
    """Energy-dispersive X-ray detector: one ``counts`` signal per element line (e.g. ``Ag_L``).

    Parameters
    ----------
    lines : mapping of line name to PointDriver
        Each line's counts; names must be valid Python identifiers (they become attributes).
    """

    def __init__(self, lines: Mapping[str, PointDriver], name: str = "") -> None:
        if not lines or not all(str(k).isidentifier() for k in lines):
            raise ValueError(f"lines must be a non-empty mapping of identifier names, got {list(lines)}")
        self.lines = dict(lines)
        with self.add_children_as_readables(StandardReadableFormat.HINTED_UNCACHED_SIGNAL):
            for line, driver in self.lines.items():
                signal, _ = soft_signal_r_and_setter(float, units="counts", getter=driver.read)
                setattr(self, line, signal)
        super().__init__(name=name)
