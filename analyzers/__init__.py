"""Pure computations over chunks of frames: the Analyzer contract and one module per analysis.

The contract is imported eagerly; the analyzers and the registry are imported on
first use, so that importing the contract does not pay for numba.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import Analyzer, BoundaryHook, PixelAnalyzer

if TYPE_CHECKING:
    from .registry import ANALYZERS, build_analyzer
    from .ecm import EcmAnalyzer
    from .eds import EdsTomography
    from .fem import FemAnalyzer
    from .snem import SnemAnalyzer
    from .virtual import VirtualDetectors

__all__ = ["Analyzer", "PixelAnalyzer", "BoundaryHook", "VirtualDetectors", "SnemAnalyzer", "EcmAnalyzer",
           "FemAnalyzer", "EdsTomography",
           "build_analyzer", "ANALYZERS"]

_LAZY = {"VirtualDetectors": ".virtual", "SnemAnalyzer": ".snem", "EcmAnalyzer": ".ecm", "build_analyzer": ".registry",
         "ANALYZERS": ".registry", "FemAnalyzer": ".fem",
         "EdsTomography": ".eds"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
