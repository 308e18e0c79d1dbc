"""The package version (one home; read by saved models and reports)."""

__version__ = "0.1.0"
