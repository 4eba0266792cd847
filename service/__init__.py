"""Composition root: configuration, CLI and process start-up (the only package that imports everything)."""

from .config import AnalyzerConfig, ServiceConfig, load_config

__all__ = ["AnalyzerConfig", "ServiceConfig", "load_config"]
