"""The package version, in one place (pyproject reads it; nothing here imports the package)."""

__version__ = "0.1.0"
