"""Lossless atomization of .docx packages, and reassembly from the atoms.

``atomize(data)`` breaks a package into content-addressed **atoms** (sha256 hex -> bytes) and a
JSON-serialisable **manifest**; ``reassemble(manifest, get_atom)`` builds the package back.

Atoms
    Every zip member is one atom ("part"), except the *story* parts — the main document,
    headers, footers, footnotes, endnotes, comments and the glossary document — which are split
    at the top-level children of their story container (w:body; w:docParts for the glossary; the
    root for the others): a "prefix" atom (BOM, XML declaration, root and container start tags),
    one atom per child ("block:w:p", "block:w:tbl", "block:w:sdt", "block:w:sectPr", ... named
    by the qualified name as written, so strict OOXML reads the same), "text" atoms for the
    whitespace between them (plus "comment", "pi", "cdata" if present at that level), and a
    "suffix" atom. The split is made at byte offsets of the original part, so the atoms of a
    part concatenate to the part exactly. A story part the scanner cannot split exactly (UTF-32,
    DTD, malformed markup) stays one "part" atom; empty members have no atoms at all.
    UTF-8 (with or without BOM), other ASCII-compatible encodings and UTF-16 are split.

Identical atoms are stored once: the atom store is keyed by sha256, so the same paragraph,
styles part or image in two templates is the same key.

Lossless means: every member's *uncompressed* bytes, the member order, and every zip header
field (central directory and local header: name, method, timestamps, flags, versions,
attributes, extra fields, comments, data descriptors) and the zip comment come back identical.
The *compressed* streams do not: they are re-deflated by zlib, honouring each member's deflate
option bits, so compressed sizes and offsets generally differ from the original writer's.

Manifest (``format`` = "astra.ingest.atoms/1")::

    {
      "format": "astra.ingest.atoms/1",
      "package": {"sha256": <input zip sha256>, "size": <bytes>, "comment": <zip comment, hex>},
      "counts": {"members": n, "parts": n_non_directory, "story_parts": n,
                 "atoms": total_references, "unique_atoms": n, "atom_bytes": unique_bytes},
      "members": [                                   # zip order
        {"name": "word/document.xml", "sha256": <part sha256>, "size": <bytes>, "story": true,
         "atoms": [{"sha256": ..., "kind": "prefix", "size": ...}, ...],
         "zip": <MemberHeader.to_json(): compress_type, date_time, flag_bits, create_system,
                 create_version, extract_version, reserved, volume, internal_attr,
                 external_attr, extra (hex), comment (hex), zip64,
                 local {version, flag_bits, date_time, extra, zip64, sizes_zeroed, descriptor}>},
        ...
      ]
    }

The atomizer does not judge the package: run :func:`astra.ingest.audit.audit` first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from astra.ooxml.blocks import split_children
from astra.ooxml.errors import PackageError
from astra.ooxml.ns import STORY_CONTENT_TYPES
from astra.ooxml.rels import ContentTypes, parse_content_types
from astra.ooxml.xml import parse_xml
from astra.ooxml.zip import MemberHeader, inflate, read_zip, write_zip

from .errors import ReassemblyError

MANIFEST_FORMAT = "astra.ingest.atoms/1"

# Conventional names, for packages whose content types are missing or unusual.
_STORY_NAME = re.compile(
    r"word/(?:document|header\d*|footer\d*|footnotes|endnotes|comments|glossary/document)\.xml", re.IGNORECASE
)
# Local names from the root to the story container; any other root is its own container.
_CONTAINER_PATHS = {"document": ("body",), "glossaryDocument": ("docParts",)}


def _container_path(root_local_name: str) -> tuple[str, ...]:
    return _CONTAINER_PATHS.get(root_local_name, ())


@dataclass
class AtomizedPackage:
    manifest: dict
    atoms: dict[str, bytes]  # sha256 hex -> bytes

    def part(self, name: str) -> bytes:
        """A member's bytes rebuilt from its atoms."""
        for member in self.manifest["members"]:
            if member["name"] == name:
                return b"".join(self.atoms[a["sha256"]] for a in member["atoms"])
        raise KeyError(name)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _content_types(members: dict[str, bytes]) -> ContentTypes | None:
    data = members.get("[Content_Types].xml")
    if not data:
        return None
    try:
        return parse_content_types(parse_xml(data, "[Content_Types].xml", normalise_strict=False))
    except PackageError:
        return None


def story_part_names(payloads: dict[str, bytes]) -> set[str]:
    """Names of the story parts: by content type, and by conventional name as a fallback."""
    types = _content_types(payloads)
    names = set()
    for name in payloads:
        if _STORY_NAME.fullmatch(name) or (types is not None and types.of(name) in STORY_CONTENT_TYPES):
            names.add(name)
    return names


def atomize(data: bytes) -> AtomizedPackage:
    """Break a zip package into atoms and a manifest. Raises PackageError if the zip is unreadable."""
    listing = read_zip(data)
    payloads: dict[str, bytes] = {}
    ordered: list[tuple[MemberHeader, bytes]] = []
    for entry in listing.entries:
        payload = inflate(data, entry)
        payloads.setdefault(entry.name, payload)
        ordered.append((entry.header, payload))
    stories = story_part_names(payloads)

    atoms: dict[str, bytes] = {}
    members = []
    references = 0
    story_count = 0
    for header, payload in ordered:
        part_sha = _sha256(payload)
        segments = split_children(payload, _container_path) if header.name in stories else None
        refs = []
        if segments:
            story_count += 1
            sha256 = hashlib.sha256
            for kind, start, end in segments:
                if start == end:
                    continue
                chunk = payload[start:end]
                sha = sha256(chunk).hexdigest()
                if sha not in atoms:
                    atoms[sha] = chunk
                refs.append({"sha256": sha, "kind": kind, "size": end - start})
        elif payload:
            atoms.setdefault(part_sha, payload)
            refs.append({"sha256": part_sha, "kind": "part", "size": len(payload)})
        references += len(refs)
        members.append({
            "name": header.name,
            "sha256": part_sha,
            "size": len(payload),
            "story": bool(segments),
            "atoms": refs,
            "zip": header.to_json(),
        })

    manifest = {
        "format": MANIFEST_FORMAT,
        "package": {"sha256": _sha256(data), "size": len(data), "comment": listing.comment.hex()},
        "counts": {
            "members": len(members),
            "parts": sum(1 for m in members if not m["name"].endswith("/")),
            "story_parts": story_count,
            "atoms": references,
            "unique_atoms": len(atoms),
            "atom_bytes": sum(len(a) for a in atoms.values()),
        },
        "members": members,
    }
    return AtomizedPackage(manifest=manifest, atoms=atoms)


def reassemble(
    manifest: dict,
    get_atom: Callable[[str], bytes],
    *,
    compresslevel: int | None = None,
) -> bytes:
    """Rebuild the package from its manifest, fetching atoms with ``get_atom(sha256)``.

    Every part is checked against its sha256 before it is written: a missing or corrupted atom
    raises ReassemblyError naming the member and the atom. ``compresslevel`` overrides the
    per-member deflate level (by default derived from each member's deflate option bits).
    """
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ReassemblyError(f"unknown manifest format {manifest.get('format')!r}")

    def members():
        for member in manifest["members"]:
            name = member["name"]
            chunks = []
            for ref in member["atoms"]:
                try:
                    chunks.append(get_atom(ref["sha256"]))
                except KeyError as exc:
                    raise ReassemblyError(f"{name}: atom {ref['sha256']} is missing") from exc
            payload = b"".join(chunks)
            if _sha256(payload) != member["sha256"]:
                refs_and_chunks = zip(member["atoms"], chunks, strict=True)
                bad = next((r["sha256"] for r, c in refs_and_chunks if _sha256(c) != r["sha256"]), None)
                raise ReassemblyError(f"{name}: rebuilt part does not match its sha256 (bad atom: {bad})")
            yield MemberHeader.from_json(name, member["zip"]), payload

    try:
        return write_zip(members(), bytes.fromhex(manifest["package"]["comment"]), compresslevel)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReassemblyError(f"malformed manifest: {exc!r}") from exc
    except PackageError as exc:
        raise ReassemblyError(str(exc)) from exc


def part_digests(data: bytes) -> dict[str, str]:
    """sha256 of every member's uncompressed bytes, by member name (first occurrence wins)."""
    listing = read_zip(data)
    digests: dict[str, str] = {}
    for entry in listing.entries:
        digests.setdefault(entry.name, _sha256(inflate(data, entry)))
    return digests


def member_metadata(data: bytes) -> list[dict]:
    """Every member's header fields in zip order (what a lossless rewrite must keep), plus CRC and size."""
    return [
        {"name": e.name, **e.header.to_json(), "crc": e.crc, "size": e.file_size}
        for e in read_zip(data).entries
    ]
