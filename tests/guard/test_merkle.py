"""RFC 6962 Merkle Tree Hash: the definition, by hand, and the Certificate Transparency vectors."""

from __future__ import annotations

import hashlib

import pytest

from astra.guard.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    merkle_root,
    merkle_root_hex,
    node_hash,
    prefix_roots,
    root_from_leaf_hashes,
)

# certificate-transparency merkle_tree_test.cc (also trillian's testonly): leaves and MTH of D[0:n].
CT_LEAVES = [bytes.fromhex(h) for h in
             ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def test_empty_tree_is_sha256_of_nothing():
    assert merkle_root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert EMPTY_ROOT == sha(b"")


@pytest.mark.parametrize("n", range(1, 9))
def test_certificate_transparency_vectors(n):
    assert merkle_root_hex(CT_LEAVES[:n]) == CT_ROOTS[n - 1]


def test_by_hand_from_the_definition():
    a, b, c, d, e = b"a", b"b", b"c", b"d", b"e"
    la, lb, lc, ld, le = (sha(b"\x00" + x) for x in (a, b, c, d, e))
    assert leaf_hash(a) == la and node_hash(la, lb) == sha(b"\x01" + la + lb)
    assert merkle_root([a]) == la
    assert merkle_root([a, b]) == sha(b"\x01" + la + lb)
    # n=3: k=2 -> (a b) c ; not a balanced pad or a duplicated last leaf.
    assert merkle_root([a, b, c]) == sha(b"\x01" + sha(b"\x01" + la + lb) + lc)
    # n=5: k=4 -> ((a b)(c d)) e
    ab, cd = sha(b"\x01" + la + lb), sha(b"\x01" + lc + ld)
    assert merkle_root([a, b, c, d, e]) == sha(b"\x01" + sha(b"\x01" + ab + cd) + le)
    assert root_from_leaf_hashes([la, lb, lc, ld, le]) == merkle_root([a, b, c, d, e])


def test_order_matters():
    assert merkle_root([b"a", b"b"]) != merkle_root([b"b", b"a"])


def test_prefix_roots_in_one_pass_are_the_roots_of_each_prefix():
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(70)]
    everything = prefix_roots(leaves, range(0, 75))  # 0 and beyond the end are left out
    assert sorted(everything) == list(range(1, 71))
    for n, root in everything.items():
        assert root == root_from_leaf_hashes(leaves[:n]), n
    assert prefix_roots([leaf_hash(d) for d in CT_LEAVES], [3, 8, 5]) == {
        n: bytes.fromhex(CT_ROOTS[n - 1]) for n in (3, 5, 8)
    }
    assert prefix_roots(leaves, []) == {}
