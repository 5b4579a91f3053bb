"""What tells a file from another at the same path: its device and inode numbers.

A file renamed away, deleted and made again, or replaced by another keeps its identity
while the path gets a new one, so comparing identities tells whether a path still leads to
the file we hold open (a log file, the control socket we bound).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["FileIdentity", "identity", "path_identity"]

FileIdentity = tuple[int, int]


def identity(info: os.stat_result) -> FileIdentity:
    return (info.st_dev, info.st_ino)


def path_identity(path: Path, *, follow_symlinks: bool = True) -> FileIdentity | None:
    """The identity of the file at *path*; None if there is none or it cannot be seen."""
    try:
        return identity(os.stat(path, follow_symlinks=follow_symlinks))
    except OSError:
        return None
