"""RFC 6962 §2.1 Merkle Tree Hash over SHA-256, as Certificate Transparency computes it.

    MTH({})       = SHA-256()
    MTH({d0})     = SHA-256(0x00 || d0)
    MTH(D[0:n])   = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   k = largest power of two < n

The custody ledger's checkpoint is the MTH of a tenant's entries (their canonical JSON bytes,
in seq order), so a later audit can show the ledger still starts with exactly what was pinned.
`prefix_roots` gives the roots of many prefixes of one ledger (every checkpoint a tenant has, in
the database and in the WORM bucket) in one pass over its leaves.
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


def prefix_roots(leaves: Sequence[bytes], sizes: Iterable[int]) -> dict[int, bytes]:
    """MTH(D[0:n]) for every n in `sizes` (1 <= n <= len(leaves)), in one pass over the leaf hashes.

    The leaves are appended to a stack of perfect subtrees (a binary counter: their sizes are the
    bits of the count, largest first); the MTH of the first n leaves folds that stack from the right,
    node(P1, node(P2, ... Pk)), which is what RFC 6962's split at the largest power of two gives."""
    wanted = sorted({n for n in sizes if 1 <= n <= len(leaves)})
    out: dict[int, bytes] = {}
    stack: list[tuple[int, bytes]] = []  # (subtree size, root), sizes strictly decreasing
    at = 0
    for n in wanted:
        for leaf in leaves[at:n]:
            size, node = 1, leaf
            while stack and stack[-1][0] == size:
                size, node = size * 2, node_hash(stack.pop()[1], node)
            stack.append((size, node))
        at = n
        root = stack[-1][1]
        for _, left in reversed(stack[:-1]):
            root = node_hash(left, root)
        out[n] = root
    return out


def merkle_root(data: Iterable[bytes]) -> bytes:
    """MTH of a list of data items (each is hashed as a leaf)."""
    return root_from_leaf_hashes([leaf_hash(d) for d in data])


def merkle_root_hex(data: Iterable[bytes]) -> str:
    return merkle_root(data).hex()
