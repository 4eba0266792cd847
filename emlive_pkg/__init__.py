"""emlive: streaming live acquisition and analysis for scanning electron microscopy."""

__version__ = "0.1.0"
