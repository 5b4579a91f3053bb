"""trio-orch: a Trio supervisor for long-running Python bots."""

__version__ = "0.1.0"
