"""The beam scan generator: a flyable raster around a :class:`ScanGeneratorDriver`.

In a fly scan the scan generator is the master clock: the camera is armed for
external triggers at ``prepare``, and ``kickoff`` starts the raster whose probe
positions trigger the camera (in simulation the driver asks the camera driver for
``ny * nx`` frames). ``complete`` finishes when the last position was triggered.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bluesky.protocols import Flyable, Preparable
from ophyd_async.core import AsyncStatus, StandardReadable, StandardReadableFormat, soft_signal_rw

from .drivers import ScanGeneratorDriver

__all__ = ["Raster", "ScanGenerator"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Raster:
    """One raster: ``shape`` (ny, nx) positions, ``step`` in Å, ``dwell`` in s, ``rotation`` in deg."""

    shape: tuple[int, int]
    step: float
    dwell: float
    rotation: float = 0.0

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"raster shape must be two positive integers, got {self.shape}")
        if not self.step > 0 or not self.dwell > 0:
            raise ValueError(f"step and dwell must be > 0, got step={self.step}, dwell={self.dwell}")


class ScanGenerator(StandardReadable, Preparable, Flyable):
    """Beam raster: ``prepare(Raster(...))`` then ``kickoff``/``complete`` once per raster."""

    def __init__(self, driver: ScanGeneratorDriver, name: str = "") -> None:
        self.driver = driver
        with self.add_children_as_readables(StandardReadableFormat.CONFIG_SIGNAL):
            self.ny = soft_signal_rw(int, getter=lambda: driver.shape[0], setter=self._set_ny)
            self.nx = soft_signal_rw(int, getter=lambda: driver.shape[1], setter=self._set_nx)
            self.step = _attr(driver, "step", "angstrom")
            self.dwell = _attr(driver, "dwell", "s")
            self.rotation = _attr(driver, "rotation", "deg")
        self._raster: asyncio.Future | None = None
        super().__init__(name=name)

    def _set_ny(self, value: int) -> None:
        self.driver.shape = (int(value), self.driver.shape[1])

    def _set_nx(self, value: int) -> None:
        self.driver.shape = (self.driver.shape[0], int(value))

    @AsyncStatus.wrap
    async def prepare(self, value: Raster) -> None:
        """Load the raster into the scan generator."""
        if not isinstance(value, Raster):
            raise TypeError(f"{self.name}.prepare expects a Raster, got {type(value).__name__}")
        await asyncio.gather(self.ny.set(value.shape[0]), self.nx.set(value.shape[1]),
                             self.step.set(value.step), self.dwell.set(value.dwell),
                             self.rotation.set(value.rotation))

    @AsyncStatus.wrap
    async def kickoff(self) -> None:
        self._raster = asyncio.wrap_future(self.driver.start())
        logger.debug("raster %s started", self.driver.shape)

    @AsyncStatus.wrap
    async def complete(self) -> None:
        if self._raster is None:
            raise RuntimeError(f"{self.name}: complete() without kickoff()")
        raster, self._raster = self._raster, None
        await raster

    @AsyncStatus.wrap
    async def unstage(self) -> None:
        if self._raster is not None:
            self.driver.stop()
            self._raster = None


def _attr(driver, attr: str, units: str):
    def put(value: float) -> None:
        setattr(driver, attr, float(value))

    return soft_signal_rw(float, units=units, getter=lambda: float(getattr(driver, attr)), setter=put)
