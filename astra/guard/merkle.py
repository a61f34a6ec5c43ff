"""RFC 6962 §2.1 Merkle Tree Hash over SHA-256, as Certificate Transparency computes it.

    MTH({})       = SHA-256()
    MTH({d0})     = SHA-256(0x00 || d0)
    MTH(D[0:n])   = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   k = largest power of two < n

The custody ledger's checkpoint is the MTH of a tenant's entries (their canonical JSON bytes,
in seq order), so a later audit can show the ledger still starts with exactly what was pinned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(leaves: Sequence[bytes]) -> bytes:
    """MTH given the leaf hashes (already `leaf_hash`ed), without re-hashing the data."""

    def mth(lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 1:
            return leaves[lo]
        k = _split(n)
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    return EMPTY_ROOT if not leaves else mth(0, len(leaves))


def merkle_root(data: Iterable[bytes]) -> bytes:
    """MTH of a list of data items (each is hashed as a leaf)."""
    return root_from_leaf_hashes([leaf_hash(d) for d in data])


def merkle_root_hex(data: Iterable[bytes]) -> str:
    return merkle_root(data).hex()
