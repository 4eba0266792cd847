"""The specimen stage: x, y, z (µm) and tilt (deg) as signals around a :class:`StageDriver`."""

from __future__ import annotations

import logging

from ophyd_async.core import StandardReadable, StandardReadableFormat, soft_signal_rw

from .drivers import StageDriver

__all__ = ["Stage"]

logger = logging.getLogger(__name__)


class Stage(StandardReadable):
    """Specimen stage; ``bps.mv(stage.tilt, 30)`` moves the holder (ValueError outside the limits).

    Every axis is hinted: the positions are what a map or a tilt series is plotted against.
    Signals are read uncached: a staged (cached) soft signal would never call its getter,
    and a stage moved by the hand set or the vendor GUI would be recorded where it was.
    """

    def __init__(self, driver: StageDriver, name: str = "") -> None:
        self.driver = driver
        with self.add_children_as_readables(StandardReadableFormat.HINTED_UNCACHED_SIGNAL):
            self.x = _axis(driver, "x", "um")
            self.y = _axis(driver, "y", "um")
            self.z = _axis(driver, "z", "um")
            self.tilt = _axis(driver, "tilt", "deg")
        super().__init__(name=name)


def _axis(driver: StageDriver, axis: str, units: str):
    def move(value: float) -> None:
        driver.move(axis, value)

    return soft_signal_rw(float, units=units, getter=lambda: driver.position(axis), setter=move)
