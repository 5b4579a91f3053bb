"""trio-orch: a Trio supervisor for long-running Python bots."""

__all__ = ["__version__"]

# The one place the version is written: pyproject.toml reads it (dynamic version), and
# `trio-orch --version` prints it without importing anything else.
__version__ = "0.1.0"
