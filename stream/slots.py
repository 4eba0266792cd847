"""A pool of shared-memory frame slots: how chunks reach worker processes without pickling.

The host decodes each chunk straight into a free slot; workers map the same file
(``/dev/shm``) and read the frames in place. A slot is released when every consumer
(the analyzer worker(s), the recorder) has acknowledged it. The pool is bounded, so
when consumers fall behind the host stops reading the socket and back-pressure
reaches the source instead of memory growing.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid

import numpy as np

logger = logging.getLogger(__name__)


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


class SlotPool:
    """``n_slots`` buffers of ``slot_bytes`` each, in one memory-mapped file.

    The file outlives runs: :meth:`reslice` cuts it anew for the next run's frame and
    chunk size, so its pages are faulted in once, not at every run.

    Parameters
    ----------
    n_slots, slot_bytes : int
        Capacity; total memory is their product.
    """

    def __init__(self, n_slots: int, slot_bytes: int) -> None:
        if n_slots < 1 or slot_bytes < 1:
            raise ValueError(f"need at least one slot of at least one byte, got {n_slots} x {slot_bytes}")
        self.path = os.path.join(_shm_dir(), f"emlive-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.nbytes = n_slots * slot_bytes
        mm = np.memmap(self.path, dtype=np.uint8, mode="w+", shape=(self.nbytes,))
        self._mm = mm.view(np.ndarray)  # plain views: cheaper per chunk than memmap subclasses
        self._mm[:] = 0                 # fault the pages in now, not while frames arrive
        self.reslice(n_slots, slot_bytes)
        logger.debug("slot pool %s: %d bytes", self.path, self.nbytes)

    def reslice(self, n_slots: int, slot_bytes: int) -> None:
        """Cut the (idle) pool into ``n_slots`` of ``slot_bytes`` for a new run."""
        if n_slots * slot_bytes > self.nbytes:
            raise ValueError(f"{n_slots} slots of {slot_bytes} bytes exceed the pool's {self.nbytes} bytes")
        if hasattr(self, "_refs") and any(self._refs):
            raise RuntimeError(f"cannot reslice a pool with slots in use: {self._refs}")
        self.n_slots = n_slots
        self.slot_bytes = slot_bytes
        self._refs = [0] * n_slots
        self._free = list(range(n_slots - 1, -1, -1))

    @property
    def n_free(self) -> int:
        return len(self._free)

    def acquire(self) -> int | None:
        """Take a free slot (refcount 1), or None when all are in use."""
        if not self._free:
            return None
        k = self._free.pop()
        self._refs[k] = 1
        return k

    def view(self, slot: int, n: int, shape: tuple[int, int], dtype) -> np.ndarray:
        return slot_view(self._mm, self.slot_bytes, slot, n, shape, dtype)

    def retain(self, slot: int, count: int = 1) -> None:
        self._refs[slot] += count

    def release(self, slot: int) -> None:
        self._refs[slot] -= 1
        if self._refs[slot] == 0:
            self._free.append(slot)
        elif self._refs[slot] < 0:
            raise RuntimeError(f"slot {slot} released more often than retained")

    def close(self) -> None:
        del self._mm
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def attach(path: str) -> np.ndarray:
    """Map a pool's file in a worker process (read-only)."""
    return np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)


def slot_view(mm: np.ndarray, slot_bytes: int, slot: int, n: int, shape: tuple[int, int], dtype) -> np.ndarray:
    """Frames (n, qy, qx) stored in ``slot``."""
    dtype = np.dtype(dtype)
    nbytes = n * shape[0] * shape[1] * dtype.itemsize
    if nbytes > slot_bytes:
        raise ValueError(f"{n} frames of {shape} {dtype} ({nbytes} bytes) do not fit a slot of {slot_bytes}")
    off = slot * slot_bytes
    return mm[off:off + nbytes].view(dtype).reshape((n, *shape))
