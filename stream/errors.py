"""Errors of the frame stream, split by whose fault they are (as h11 does).

::

    EmliveError
    ├── ProtocolError        a peer sent something bad: logged, counted, rejected; we carry on
    └── UsageError           our own API was misused: raised to the caller (also a ValueError)
"""

from __future__ import annotations


class EmliveError(Exception):
    """Base of all emlive errors."""


class ProtocolError(EmliveError):
    """A message from the wire was rejected.

    ``reason`` is a short stable code (``unknown-version``, ``size-mismatch``...)
    used as the key of the rejection counters; ``detail`` says what arrived.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class UsageError(EmliveError, ValueError):
    """Our own API was called with arguments that cannot work."""
