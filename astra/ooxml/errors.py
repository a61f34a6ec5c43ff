"""The OOXML layer's one error."""

from __future__ import annotations


class PackageError(ValueError):
    """The bytes are not an OOXML package (or part) this layer can read, or one it cannot write."""
