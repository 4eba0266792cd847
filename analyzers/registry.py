"""Analyzers by name, so the executor can rebuild one in each worker from ``name`` and ``params``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .base import Analyzer
from .ecm import EcmAnalyzer
from .eds import EdsTomography
from .fem import FemAnalyzer
from .snem import SnemAnalyzer
from .virtual import VirtualDetectors

__all__ = ["ANALYZERS", "build_analyzer"]

logger = logging.getLogger(__name__)

#: Every analyzer the service can run, by its ``name``.
ANALYZERS: dict[str, type[Analyzer]] = {
    cls.name: cls for cls in (VirtualDetectors, SnemAnalyzer, EcmAnalyzer, EdsTomography, FemAnalyzer)}


def build_analyzer(name: str, params: Mapping[str, Any] | None = None) -> Analyzer:
    """Build the analyzer registered as ``name`` from its serialisable parameters.

    Raises
    ------
    ValueError
        If no analyzer has that name (the message lists those that do), or a
        parameter value is invalid.
    TypeError
        If a parameter is unknown to the analyzer or has the wrong type.

    Examples
    --------
    >>> build_analyzer("virtual", {"bf_radius": 4}).name
    'virtual'
    """
    try:
        cls = ANALYZERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown analyzer {name!r}; available: {', '.join(sorted(ANALYZERS))}") from None
    return cls(**dict(params or {}))
