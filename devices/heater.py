"""The heating holder: set-point, read-back and ramp rate around a :class:`HeaterDriver`."""

from __future__ import annotations

import asyncio
import logging
import time

from bluesky.protocols import Movable
from ophyd_async.core import (
    AsyncStatus,
    StandardReadable,
    StandardReadableFormat,
    soft_signal_r_and_setter,
    soft_signal_rw,
)

from .drivers import HeaterDriver

__all__ = ["Heater"]

logger = logging.getLogger(__name__)


class Heater(StandardReadable, Movable[float]):
    """``bps.mv(heater, 500)`` sets the set-point and waits until the read-back is within ``tolerance``.

    Parameters
    ----------
    driver : HeaterDriver
    tolerance : float
        K; the move is done when ``|read-back - set-point| <= tolerance``.
    timeout : float
        s; a move that does not settle in time fails (TimeoutError) instead of hanging a plan.
    poll_period : float
        s between read-backs while settling (the holder has no "settled" event).
    """

    def __init__(self, driver: HeaterDriver, name: str = "", tolerance: float = 0.5, timeout: float = 600.0,
                 poll_period: float = 0.02) -> None:
        self.driver = driver
        self.tolerance = tolerance
        self.timeout = timeout
        self.poll_period = poll_period
        with self.add_children_as_readables(StandardReadableFormat.HINTED_UNCACHED_SIGNAL):
            self.readback, _ = soft_signal_r_and_setter(float, units="K", getter=driver.readback)
        with self.add_children_as_readables(StandardReadableFormat.UNCACHED_SIGNAL):
            self.setpoint = soft_signal_rw(float, units="K", getter=lambda: float(driver.setpoint),
                                           setter=self._put_setpoint)
        with self.add_children_as_readables(StandardReadableFormat.CONFIG_SIGNAL):
            self.ramp_rate = soft_signal_rw(float, units="K/s", getter=lambda: float(driver.ramp_rate),
                                            setter=self._put_ramp)
        super().__init__(name=name)

    def _put_setpoint(self, value: float) -> None:
        self.driver.setpoint = float(value)
        logger.info("heater set-point %.2f K", value)

    def _put_ramp(self, value: float) -> None:
        self.driver.ramp_rate = float(value)

    @AsyncStatus.wrap
    async def set(self, value: float) -> None:
        await self.setpoint.set(value)
        deadline = time.monotonic() + self.timeout
        while abs(await self.readback.get_value() - value) > self.tolerance:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not reach {value} K ± {self.tolerance} in {self.timeout} s")
            await asyncio.sleep(self.poll_period)
