"""Byte-exact, low-level access to OPC packages (.docx zips) and their XML parts.

Three jobs, each exact to the byte:

* **Reading a zip** (:func:`read_zip`): every member with every header field needed to write it
  back member for member — central directory *and* local header fields, because real writers
  make them differ (Word pads the local extra field; some tools put a host byte in the local
  "version needed"; streamed zips use data descriptors with zeroed local sizes).
  :func:`inflate` decompresses one member, optionally with an output cap, so callers never
  trust the declared sizes.
* **Writing a zip** (:func:`write_zip`) from that metadata. The *uncompressed* bytes, names,
  order and header fields come back identical; the *compressed* stream is our own deflate and
  generally differs from the original writer's (so do the compressed sizes and offsets).
  A zip64 extra record is not kept verbatim: it only carries sizes/offsets, so it is dropped on
  read and rebuilt on write where the original had one.
* **Splitting a story XML part** (:func:`split_children`) into the top-level children of its
  story container at byte offsets, with a small scanner instead of an XML parser: the slices
  are taken from the original bytes, so they concatenate back to the part by construction.

Also here: hardened XML parsing, and [Content_Types].xml / relationship parsing shared by the
atomizer and the audit.
"""

from __future__ import annotations

import io
import posixpath
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable

from lxml import etree

from .errors import PackageError

# --------------------------------------------------------------------------- zip format

STORED = zipfile.ZIP_STORED
DEFLATED = zipfile.ZIP_DEFLATED

_LOCAL_SIG = b"PK\x03\x04"
_CENTRAL_SIG = b"PK\x01\x02"
_EOCD_SIG = b"PK\x05\x06"
_ZIP64_EOCD_SIG = b"PK\x06\x06"
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_DESCRIPTOR_SIG = b"PK\x07\x08"

_LOCAL = struct.Struct("<4sHHHHHLLLHH")  # sig, version needed, flags, method, time, date, crc, csize, usize, nlen, xlen
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_EXTRA_ID = 0x0001
_U32 = 0xFFFFFFFF

FLAG_ENCRYPTED = 0x0001
FLAG_DESCRIPTOR = 0x0008
FLAG_UTF8 = 0x0800

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


@dataclass(frozen=True)
class MemberHeader:
    """Everything needed to write one zip member back, except its bytes.

    Central directory fields first, then the local header fields that may differ from them.
    ``extra``/``local_extra`` never contain a zip64 record (``zip64``/``local_zip64`` say whether
    one was there; it is rebuilt on write).
    """

    name: str
    compress_type: int
    date_time: tuple[int, int, int, int, int, int]
    flag_bits: int
    create_system: int
    create_version: int
    extract_version: int
    reserved: int
    volume: int
    internal_attr: int
    external_attr: int
    extra: bytes
    comment: bytes
    zip64: bool
    local_version: int  # the whole 16-bit "version needed" field of the local header
    local_flag_bits: int
    local_date_time: tuple[int, int, int, int, int, int]
    local_extra: bytes
    local_zip64: bool
    local_sizes_zeroed: bool  # streamed writers leave CRC/sizes zero when a data descriptor follows
    descriptor: str | None  # "signed" | "unsigned" | None (no data descriptor)

    def to_json(self) -> dict:
        return {
            "compress_type": self.compress_type,
            "date_time": list(self.date_time),
            "flag_bits": self.flag_bits,
            "create_system": self.create_system,
            "create_version": self.create_version,
            "extract_version": self.extract_version,
            "reserved": self.reserved,
            "volume": self.volume,
            "internal_attr": self.internal_attr,
            "external_attr": self.external_attr,
            "extra": self.extra.hex(),
            "comment": self.comment.hex(),
            "zip64": self.zip64,
            "local": {
                "version": self.local_version,
                "flag_bits": self.local_flag_bits,
                "date_time": list(self.local_date_time),
                "extra": self.local_extra.hex(),
                "zip64": self.local_zip64,
                "sizes_zeroed": self.local_sizes_zeroed,
                "descriptor": self.descriptor,
            },
        }

    @classmethod
    def from_json(cls, name: str, d: dict) -> MemberHeader:
        local = d["local"]
        return cls(
            name=name,
            compress_type=int(d["compress_type"]),
            date_time=tuple(int(x) for x in d["date_time"]),
            flag_bits=int(d["flag_bits"]),
            create_system=int(d["create_system"]),
            create_version=int(d["create_version"]),
            extract_version=int(d["extract_version"]),
            reserved=int(d["reserved"]),
            volume=int(d["volume"]),
            internal_attr=int(d["internal_attr"]),
            external_attr=int(d["external_attr"]),
            extra=bytes.fromhex(d["extra"]),
            comment=bytes.fromhex(d["comment"]),
            zip64=bool(d["zip64"]),
            local_version=int(local["version"]),
            local_flag_bits=int(local["flag_bits"]),
            local_date_time=tuple(int(x) for x in local["date_time"]),
            local_extra=bytes.fromhex(local["extra"]),
            local_zip64=bool(local["zip64"]),
            local_sizes_zeroed=bool(local["sizes_zeroed"]),
            descriptor=local["descriptor"],
        )

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


@dataclass(frozen=True)
class ZipEntry:
    """One member as found in a zip: its header plus where its bytes are."""

    header: MemberHeader
    raw_name: bytes  # central directory name bytes
    local_name: bytes  # local header name bytes (must equal raw_name)
    local_compress_type: int
    crc: int
    compress_size: int
    file_size: int
    header_offset: int
    data_offset: int
    end_offset: int  # after the compressed data and the data descriptor, if any

    @property
    def name(self) -> str:
        return self.header.name


@dataclass(frozen=True)
class ZipListing:
    entries: list[ZipEntry]
    comment: bytes
    central_dir_offset: int
    central_dir_end: int
    eocd_offset: int  # where the end-of-central-directory record starts (-1 if not where expected)
    size: int


def _dos_date_time(d: int, t: int) -> tuple[int, int, int, int, int, int]:
    # Same decoding as zipfile; the packing in _pack_dos inverts it for every 16-bit value.
    return ((d >> 9) + 1980, (d >> 5) & 0xF, d & 0x1F, t >> 11, (t >> 5) & 0x3F, (t & 0x1F) * 2)


def _pack_dos(dt: tuple[int, ...]) -> tuple[int, int]:
    y, mo, d, h, mi, s = dt
    return ((y - 1980) << 9) | (mo << 5) | d, (h << 11) | (mi << 5) | (s // 2)


def _strip_zip64(extra: bytes) -> tuple[bytes, bool]:
    """Remove the zip64 record from an extra field; tolerate a malformed tail by keeping it as is."""
    out, found, pos = [], False, 0
    while pos + 4 <= len(extra):
        tp, ln = struct.unpack_from("<HH", extra, pos)
        end = pos + 4 + ln
        if end > len(extra):
            break
        if tp == _ZIP64_EXTRA_ID:
            found = True
        else:
            out.append(extra[pos:end])
        pos = end
    out.append(extra[pos:])
    return b"".join(out), found


def _local_zip64_sizes(extra: bytes) -> tuple[int, int] | None:
    pos = 0
    while pos + 4 <= len(extra):
        tp, ln = struct.unpack_from("<HH", extra, pos)
        if tp == _ZIP64_EXTRA_ID and ln >= 16:
            return struct.unpack_from("<QQ", extra, pos + 4)
        pos += 4 + ln
    return None


def encode_name(header: MemberHeader) -> bytes:
    # zipfile decoded the name with UTF-8 when bit 11 is set, else cp437 (a bijection on bytes).
    return header.name.encode("utf-8" if header.flag_bits & FLAG_UTF8 else "cp437")


def read_zip(data: bytes) -> ZipListing:
    """List a zip's members with byte-exact header metadata. Raises PackageError if unreadable."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
        comment = zf.comment
        central_dir_offset = zf.start_dir
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        raise PackageError(f"not a readable zip: {exc}") from exc

    entries: list[ZipEntry] = []
    central_dir_end = central_dir_offset
    for info in infos:
        raw_name = info.orig_filename.encode("utf-8" if info.flag_bits & FLAG_UTF8 else "cp437")
        central_dir_end += _CENTRAL.size + len(raw_name) + len(info.extra) + len(info.comment)
        entries.append(_read_entry(data, info, raw_name))

    eocd_offset = len(data) - _EOCD.size - len(comment)
    if eocd_offset < 0 or data[eocd_offset:eocd_offset + 4] != _EOCD_SIG:
        eocd_offset = -1
    return ZipListing(entries, comment, central_dir_offset, central_dir_end, eocd_offset, len(data))


def _read_entry(data: bytes, info: zipfile.ZipInfo, raw_name: bytes) -> ZipEntry:
    off = info.header_offset
    if off < 0 or off + _LOCAL.size > len(data):
        raise PackageError(f"{info.orig_filename}: local header outside the file")
    sig, lversion, lflags, lmethod, ltime, ldate, lcrc, lcsize, lusize, nlen, xlen = _LOCAL.unpack_from(data, off)
    if sig != _LOCAL_SIG:
        raise PackageError(f"{info.orig_filename}: no local header at offset {off}")
    name_end = off + _LOCAL.size + nlen
    data_offset = name_end + xlen
    if data_offset > len(data):
        raise PackageError(f"{info.orig_filename}: local header runs past the end of the file")
    local_name = data[off + _LOCAL.size:name_end]
    local_extra, local_zip64 = _strip_zip64(data[name_end:data_offset])
    central_extra, central_zip64 = _strip_zip64(info.extra)

    end = data_offset + info.compress_size
    descriptor = None
    if lflags & FLAG_DESCRIPTOR:
        signed = data[end:end + 4] == _DESCRIPTOR_SIG
        descriptor = "signed" if signed else "unsigned"
        sizes = 16 if local_zip64 else 8
        end += (4 if signed else 0) + 4 + sizes
    zip64_sizes = _local_zip64_sizes(data[name_end:data_offset]) if local_zip64 else None
    sizes_zeroed = lcrc == 0 and lcsize in (0, _U32) and lusize in (0, _U32) and (
        zip64_sizes is None or zip64_sizes == (0, 0)
    )

    header = MemberHeader(
        name=info.orig_filename,
        compress_type=info.compress_type,
        date_time=tuple(info.date_time),
        flag_bits=info.flag_bits,
        create_system=info.create_system,
        create_version=info.create_version,
        extract_version=info.extract_version,
        reserved=info.reserved,
        volume=info.volume,
        internal_attr=info.internal_attr,
        external_attr=info.external_attr,
        extra=central_extra,
        comment=info.comment,
        zip64=central_zip64,
        local_version=lversion,
        local_flag_bits=lflags,
        local_date_time=_dos_date_time(ldate, ltime),
        local_extra=local_extra,
        local_zip64=local_zip64,
        local_sizes_zeroed=bool(lflags & FLAG_DESCRIPTOR) and sizes_zeroed,
        descriptor=descriptor,
    )
    return ZipEntry(
        header=header,
        raw_name=raw_name,
        local_name=local_name,
        local_compress_type=lmethod,
        crc=info.CRC,
        compress_size=info.compress_size,
        file_size=info.file_size,
        header_offset=off,
        data_offset=data_offset,
        end_offset=end,
    )


class MemberTooLarge(PackageError):
    """Inflating a member produced more bytes than the cap allowed."""

    def __init__(self, name: str, cap: int) -> None:
        super().__init__(f"{name}: inflates beyond {cap} bytes")
        self.cap = cap


def inflate(data: bytes, entry: ZipEntry, cap: int | None = None) -> bytes:
    """The member's uncompressed bytes, checking the deflate stream ends and, without a cap, the CRC.

    With ``cap``, at most ``cap`` bytes are ever produced (MemberTooLarge beyond): the declared
    sizes are not trusted. Size and CRC checks against the headers are then the caller's job.
    """
    raw = memoryview(data)[entry.data_offset:entry.data_offset + entry.compress_size]
    if len(raw) != entry.compress_size:
        raise PackageError(f"{entry.name}: compressed data runs past the end of the file")
    if entry.header.compress_type == STORED:
        if cap is not None and len(raw) > cap:
            raise MemberTooLarge(entry.name, cap)
        out = raw.tobytes()
    elif entry.header.compress_type == DEFLATED:
        inflater = zlib.decompressobj(-15)
        try:
            if cap is None:
                out = inflater.decompress(raw)
            else:
                out = inflater.decompress(raw, cap + 1)
                if len(out) > cap:
                    raise MemberTooLarge(entry.name, cap)
        except zlib.error as exc:
            raise PackageError(f"{entry.name}: corrupt deflate stream: {exc}") from exc
        if not inflater.eof:
            raise PackageError(f"{entry.name}: truncated deflate stream")
    else:
        raise PackageError(f"{entry.name}: unsupported compression method {entry.header.compress_type}")
    if cap is None and (len(out) != entry.file_size or zlib.crc32(out) != entry.crc):
        raise PackageError(f"{entry.name}: size or CRC does not match the zip headers")
    return out


def _level_for(header: MemberHeader) -> int:
    # Deflate option bits 1-2 record how the original writer compressed (normal, maximum, fast,
    # super fast); honouring them keeps the rewrite in the spirit of the original and is fast
    # for Word's usual "super fast".
    return (6, 9, 1, 1)[(header.flag_bits >> 1) & 3]


def write_zip(
    members: Iterable[tuple[MemberHeader, bytes]],
    comment: bytes = b"",
    compresslevel: int | None = None,
) -> bytes:
    """Write members (header, uncompressed bytes) in the given order into a new zip."""
    chunks: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    count = 0
    for h, payload in members:
        count += 1
        crc = zlib.crc32(payload)
        if h.compress_type == STORED:
            body = payload
        elif h.compress_type == DEFLATED:
            deflater = zlib.compressobj(compresslevel if compresslevel is not None else _level_for(h), zlib.DEFLATED, -15)
            body = deflater.compress(payload) + deflater.flush()
        else:
            raise PackageError(f"{h.name}: cannot write compression method {h.compress_type}")
        usize, csize = len(payload), len(body)
        name = encode_name(h)

        local_zip64 = h.local_zip64 or usize >= _U32 or csize >= _U32
        l_crc, l_csize, l_usize = (0, 0, 0) if h.local_sizes_zeroed else (crc, csize, usize)
        local_extra = h.local_extra
        if local_zip64:
            local_extra = struct.pack("<HHQQ", _ZIP64_EXTRA_ID, 16, l_usize, l_csize) + local_extra
            l_csize = l_usize = _U32
        ldate, ltime = _pack_dos(h.local_date_time)
        chunks.append(_LOCAL.pack(_LOCAL_SIG, h.local_version, h.local_flag_bits, h.compress_type, ltime, ldate,
                                  l_crc, l_csize, l_usize, len(name), len(local_extra)))
        chunks.append(name)
        chunks.append(local_extra)
        chunks.append(body)
        header_offset = offset
        offset += _LOCAL.size + len(name) + len(local_extra) + csize
        if h.descriptor:
            sig = _DESCRIPTOR_SIG if h.descriptor == "signed" else b""
            fmt = "<LQQ" if local_zip64 else "<LLL"
            desc = sig + struct.pack(fmt, crc, csize, usize)
            chunks.append(desc)
            offset += len(desc)

        central_zip64 = h.zip64 or usize >= _U32 or csize >= _U32 or header_offset >= _U32
        c_usize, c_csize, c_offset, extra = usize, csize, header_offset, h.extra
        if central_zip64:
            fields = [usize, csize] + ([header_offset] if header_offset >= _U32 else [])
            extra = struct.pack(f"<HH{len(fields)}Q", _ZIP64_EXTRA_ID, 8 * len(fields), *fields) + extra
            c_usize = c_csize = _U32
            if header_offset >= _U32:
                c_offset = _U32
        cdate, ctime = _pack_dos(h.date_time)
        central.append(_CENTRAL.pack(_CENTRAL_SIG, h.create_version, h.create_system, h.extract_version, h.reserved,
                                     h.flag_bits, h.compress_type, ctime, cdate, crc, c_csize, c_usize,
                                     len(name), len(extra), len(h.comment), h.volume, h.internal_attr,
                                     h.external_attr, c_offset))
        central.append(name)
        central.append(extra)
        central.append(h.comment)

    central_bytes = b"".join(central)
    if count > 0xFFFF or offset >= _U32 or len(central_bytes) >= _U32:
        raise PackageError("package too large for a non-zip64 end record")  # far beyond the audit limits
    chunks.append(central_bytes)
    chunks.append(_EOCD.pack(_EOCD_SIG, 0, 0, count, count, len(central_bytes), offset, len(comment)))
    chunks.append(comment)
    return b"".join(chunks)


# --------------------------------------------------------------------------- hardened XML

def hardened_parser() -> etree.XMLParser:
    """An lxml parser that never expands entities, loads DTDs or touches the network."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        collect_ids=False,
    )


_DTD_MARKERS = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_DTD_MARKERS_TEXT = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def has_dtd_markup(data: bytes) -> bool:
    """True if the XML bytes carry a DOCTYPE or ENTITY declaration (also in UTF-16)."""
    if _DTD_MARKERS.search(data):
        return True
    encoding = utf16_encoding(data)
    if encoding:
        try:
            return bool(_DTD_MARKERS_TEXT.search(data.decode(encoding)))
        except UnicodeDecodeError:
            return False
    return False


def utf16_encoding(data: bytes) -> str | None:
    """'utf-16-le' / 'utf-16-be' when the bytes look like UTF-16 XML (BOM or '<' sniffing)."""
    head = data[:2]
    if head in (b"\xff\xfe", b"<\x00"):
        return None if data[:4] == b"\xff\xfe\x00\x00" else "utf-16-le"  # FF FE 00 00 is UTF-32
    if head in (b"\xfe\xff", b"\x00<"):
        return None if data[:4] == b"\x00\x00\xfe\xff" else "utf-16-be"
    return None


def local_name(tag: object) -> str:
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


# --------------------------------------------------------------------------- content types, relationships

@dataclass(frozen=True)
class ContentTypes:
    defaults: dict[str, str]  # lower-case extension -> content type
    overrides: dict[str, str]  # lower-case part name without the leading slash -> content type

    def of(self, member_name: str) -> str | None:
        ct = self.overrides.get(member_name.lower())
        if ct is not None:
            return ct
        base = member_name.rsplit("/", 1)[-1]
        if "." not in base:
            return None
        return self.defaults.get(base.rsplit(".", 1)[-1].lower())


def parse_content_types(root: etree._Element) -> ContentTypes:
    defaults, overrides = {}, {}
    for el in root:
        name = local_name(el.tag)
        if name == "Default":
            defaults[(el.get("Extension") or "").lower()] = (el.get("ContentType") or "").strip()
        elif name == "Override":
            overrides[(el.get("PartName") or "").lstrip("/").lower()] = (el.get("ContentType") or "").strip()
    return ContentTypes(defaults, overrides)


@dataclass(frozen=True)
class Relationship:
    rels_part: str
    source_part: str  # "" for the package itself (_rels/.rels)
    id: str
    type: str
    target: str
    external: bool


def rels_source(rels_part: str) -> str | None:
    """The part a relationships part belongs to ('word/_rels/document.xml.rels' -> 'word/document.xml')."""
    folder, _, base = rels_part.rpartition("/")
    if not base.lower().endswith(".rels"):
        return None
    parent, _, rels_dir = folder.rpartition("/") if "/" in folder else ("", "", folder)
    if rels_dir.lower() != "_rels":
        return None
    source = base[: -len(".rels")]
    return f"{parent}/{source}" if parent else source


def parse_relationships(rels_part: str, root: etree._Element) -> list[Relationship]:
    source = rels_source(rels_part) or ""
    rels = []
    for el in root:
        if local_name(el.tag) != "Relationship":
            continue
        rels.append(Relationship(
            rels_part=rels_part,
            source_part=source,
            id=el.get("Id") or "",
            type=(el.get("Type") or "").strip(),
            target=el.get("Target") or "",
            external=(el.get("TargetMode") or "").strip().lower() == "external",
        ))
    return rels


def resolve_target(source_part: str, target: str) -> str | None:
    """The member name an internal relationship target points to; None if it escapes the package."""
    target = target.split("#", 1)[0]
    if target.startswith("/"):
        joined = target.lstrip("/")
    else:
        joined = posixpath.join(posixpath.dirname(source_part), target)
    parts: list[str] = []
    for seg in joined.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(seg)
    return "/".join(parts)


# --------------------------------------------------------------------------- story scanner

class _Syntax:
    """Literals and patterns for scanning either bytes (ASCII-compatible encodings) or str (UTF-16)."""

    def __init__(self, conv: Callable[[str], bytes | str]) -> None:
        self.conv = conv
        self.lt = conv("<")
        self.bom = conv("\ufeff") if conv is str else b"\xef\xbb\xbf"
        self.comment_open, self.comment_close = conv("<!--"), conv("-->")
        self.cdata_open, self.cdata_close = conv("<![CDATA["), conv("]]>")
        self.pi_open, self.pi_close = conv("<?"), conv("?>")
        self.decl_open = conv("<!")
        self.end_open = conv("</")
        self.slash = conv("/")
        self.space = re.compile(conv(r"[ \t\r\n]*"))
        self.name = re.compile(conv(r"[^\s/>]+"))
        # Rest of a start tag: '>' may appear inside quoted attribute values, never outside.
        self.tag_rest = re.compile(conv(r"[^>\"']*(?:(?:\"[^\"]*\"|'[^']*')[^>\"']*)*>"))
        self._element_patterns: dict = {}
        # One token at the story container's level: text up to '<', then an end tag (group 2),
        # a comment/CDATA/PI (group 3) or a start tag (name in group 4). Anything else ('<!DOCTYPE',
        # unterminated constructs) does not match, and the part is kept whole.
        self.top_token = re.compile(
            conv(r"([^<]*)<(?:(/)|(!--.*?-->|!\[CDATA\[.*?\]\]>|\?.*?\?>)|([^\s/>!?<]+)"
                 r"[^>\"']*(?:(?:\"[^\"]*\"|'[^']*')[^>\"']*)*>)"),
            re.S,
        )
        self.special_kinds = {conv("!"): "comment", conv("?"): "pi"}

    def element_pattern(self, qname):
        """Comments/CDATA/PIs (to skip), an end tag of ``qname`` (group 1) or its start (group 2)."""
        pattern = self._element_patterns.get(qname)
        if pattern is None:
            q = re.escape(qname)
            # The leading '<' stays outside every group: that lets the regex engine skip ahead
            # to the next '<' in C instead of trying each position (a 6x difference).
            pattern = re.compile(
                self.conv(r"<(?:!--.*?-->|!\[CDATA\[.*?\]\]>|\?.*?\?>|(/") + q + self.conv(r"\s*>)|(")
                + q + self.conv(r"(?=[\s/>])))"),
                re.S,
            )
            self._element_patterns[qname] = pattern
        return pattern


_BYTES = _Syntax(lambda s: s.encode("ascii") if s.isascii() else s.encode("utf-8"))
_TEXT = _Syntax(str)


class _Unsplittable(Exception):
    pass


def _start_tag(buf, syn: _Syntax, lt: int):
    """Parse the start tag at ``lt``: (qname, end offset, self-closing)."""
    m = syn.name.match(buf, lt + 1)
    if not m:
        raise _Unsplittable("bad start tag")
    rest = syn.tag_rest.match(buf, m.end())
    if not rest:
        raise _Unsplittable("unterminated start tag")
    end = rest.end()
    return m.group(), end, buf[end - 2:end - 1] == syn.slash


def _skip_special(buf, syn: _Syntax, lt: int):
    """Comment, CDATA section or PI at ``lt``: (kind, end offset), or None if it is a tag."""
    for opener, closer, kind in (
        (syn.comment_open, syn.comment_close, "comment"),
        (syn.cdata_open, syn.cdata_close, "cdata"),
        (syn.pi_open, syn.pi_close, "pi"),
    ):
        if buf.startswith(opener, lt):
            close = buf.find(closer, lt + len(opener))
            if close < 0:
                raise _Unsplittable(f"unterminated {kind}")
            return kind, close + len(closer)
    if buf.startswith(syn.decl_open, lt):
        raise _Unsplittable("DOCTYPE or other declaration")  # never split such a part
    return None


def _element_end(buf, syn: _Syntax, qname, content_start: int) -> int:
    """Offset just past the end tag closing an element of ``qname`` whose content starts here.

    Only tags of the same qname can affect the nesting count ('<' is illegal in attribute values,
    so outside comments/CDATA/PIs every '<' starts a tag), which lets one C-level regex search
    jump over a whole paragraph, and a few over text boxes' nested paragraphs.
    """
    search = syn.element_pattern(qname).search
    depth, pos = 1, content_start
    while True:
        m = search(buf, pos)
        if m is None:
            raise _Unsplittable(f"unclosed element {qname!r}")
        if m.group(1) is not None:  # end tag
            depth -= 1
            if depth == 0:
                return m.end()
            pos = m.end()
        elif m.group(2) is not None:  # nested start tag of the same name
            rest = syn.tag_rest.match(buf, m.end())
            if rest is None:
                raise _Unsplittable("unterminated start tag")
            pos = rest.end()
            if buf[pos - 2:pos - 1] != syn.slash:
                depth += 1
        else:  # comment, CDATA or PI
            pos = m.end()


def _local(qname) -> str:
    if isinstance(qname, bytes):
        qname = qname.decode("utf-8", "replace")
    return qname.rsplit(":", 1)[-1]


def _qname_text(qname) -> str:
    return qname.decode("utf-8", "replace") if isinstance(qname, bytes) else qname


def _scan(buf, syn: _Syntax, container_path: Callable[[str], tuple[str, ...]]) -> list[tuple[str, int, int]]:
    pos = len(syn.bom) if buf.startswith(syn.bom) else 0
    # Prolog: XML declaration, PIs, comments, whitespace up to the root element.
    while True:
        pos = syn.space.match(buf, pos).end()
        if not buf.startswith(syn.lt, pos):
            raise _Unsplittable("no root element")
        special = _skip_special(buf, syn, pos)
        if special is None:
            break
        pos = special[1]
    root, tag_end, self_closing = _start_tag(buf, syn, pos)
    if self_closing:
        raise _Unsplittable("empty root element")

    container = root
    content_start = tag_end
    for wanted in container_path(_local(root)):
        p = content_start
        while True:
            lt = buf.find(syn.lt, p)
            if lt < 0 or buf.startswith(syn.end_open, lt):
                raise _Unsplittable(f"no {wanted} element")
            special = _skip_special(buf, syn, lt)
            if special is not None:
                p = special[1]
                continue
            qname, tag_end, self_closing = _start_tag(buf, syn, lt)
            if _local(qname) == wanted:
                if self_closing:  # e.g. <w:body/>: nothing to split
                    return [("prefix", 0, tag_end), ("suffix", tag_end, len(buf))]
                container, content_start = qname, tag_end
                break
            p = tag_end if self_closing else _element_end(buf, syn, qname, tag_end)

    segments = [("prefix", 0, content_start)]
    append = segments.append
    match = syn.top_token.match
    slash = syn.slash
    kinds: dict = {}
    p = content_start
    while True:
        m = match(buf, p)
        if m is None:
            raise _Unsplittable("unexpected markup in the story container")
        lt = m.end(1)
        if lt > p:
            append(("text", p, lt))
        qname = m.group(4)
        if qname is not None:
            known = kinds.get(qname)
            if known is None:
                known = kinds[qname] = ("block:" + _qname_text(qname), syn.element_pattern(qname).search)
            kind, search_element = known
            end = m.end()
            if buf[end - 2:end - 1] != slash:
                # Fast path: the next tag of this name is its own end tag (no nesting, no comments).
                close = search_element(buf, end)
                if close is not None and close.group(1) is not None:
                    end = close.end()
                else:
                    end = _element_end(buf, syn, qname, end)
            append((kind, lt, end))
            p = end
        elif m.group(3) is not None:
            special = m.group(3)
            kind = "cdata" if special.startswith(syn.cdata_open[1:]) else syn.special_kinds[special[:1]]
            append((kind, lt, m.end()))
            p = m.end()
        else:  # end tag: must close the container
            closing = syn.name.match(buf, lt + 2)
            if not closing or closing.group() != container:
                raise _Unsplittable("mismatched end tag")
            append(("suffix", lt, len(buf)))
            return segments


def split_children(
    data: bytes, container_path: Callable[[str], tuple[str, ...]]
) -> list[tuple[str, int, int]] | None:
    """Split an XML part at the top-level children of its story container, by byte offsets.

    ``container_path(root_local_name)`` gives the local names leading from the root to the
    container (``("body",)`` for w:document, ``()`` when the root itself is the container).
    Returns ``(kind, start, end)`` segments that tile ``data`` exactly: "prefix", then "text"
    (whitespace or stray text), "comment", "pi", "cdata" or "block:<qname>" for each child, then
    "suffix". Returns None — never raises — when the part is not something this scanner can
    split exactly (DOCTYPE, UTF-32, undecodable UTF-16, malformed markup): callers keep such a
    part whole.
    """
    if not data:
        return None
    encoding = utf16_encoding(data)
    try:
        if encoding is None:
            if data[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00", b"\x00\x00\x00<", b"<\x00\x00\x00"):
                return None  # UTF-32: not worth a scanner of its own
            segments = _scan(data, _BYTES, container_path)
        else:
            text = data.decode(encoding)
            char_segments = _scan(text, _TEXT, container_path)
            segments = _char_to_byte_segments(text, encoding, char_segments)
    except Exception:  # noqa: BLE001 - any surprise degrades to "keep the part whole", which is lossless
        return None
    position = 0
    for _, start, end in segments:  # the contract: contiguous, in order, covering every byte
        if start != position or end < start:
            return None
        position = end
    return segments if position == len(data) else None


def _char_to_byte_segments(text: str, encoding: str, segments):
    out, byte_pos = [], 0
    for kind, start, end in segments:
        width = len(text[start:end].encode(encoding))  # 2 bytes per char, 4 for astral ones
        out.append((kind, byte_pos, byte_pos + width))
        byte_pos += width
    return out
