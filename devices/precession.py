"""The beam precession unit: cone angle, frequency and on/off around a :class:`PrecessionDriver`."""

from __future__ import annotations

import logging

from ophyd_async.core import StandardReadable, StandardReadableFormat, soft_signal_rw

from .drivers import PrecessionDriver

__all__ = ["PrecessionUnit"]

logger = logging.getLogger(__name__)


class PrecessionUnit(StandardReadable):
    """Precession of the beam: ``angle`` (deg, hinted), ``frequency`` (Hz) and ``enabled`` (config).

    The angle is hinted because it is what a precession series varies; frequency and
    on/off are configuration that goes into the descriptor once.
    """

    def __init__(self, driver: PrecessionDriver, name: str = "") -> None:
        self.driver = driver
        with self.add_children_as_readables(StandardReadableFormat.HINTED_UNCACHED_SIGNAL):
            self.angle = _attr(driver, "angle", float, "deg")
        with self.add_children_as_readables(StandardReadableFormat.CONFIG_SIGNAL):
            self.frequency = _attr(driver, "frequency", float, "Hz")
            self.enabled = _attr(driver, "enabled", bool, None)
        super().__init__(name=name)


def _attr(driver, attr: str, datatype: type, units: str | None):
    def put(value) -> None:
        setattr(driver, attr, datatype(value))
        logger.info("precession %s set to %s", attr, value)

    return soft_signal_rw(datatype, units=units, getter=lambda: datatype(getattr(driver, attr)), setter=put)
