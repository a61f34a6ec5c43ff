"""Byte-exact zip reading and writing for OPC packages.

* **Reading** (:func:`read_zip`): every member with every header field needed to write it back
  member for member — central directory *and* local header fields, because real writers make
  them differ (Word pads the local extra field; some tools put a host byte in the local
  "version needed"; streamed zips use data descriptors with zeroed local sizes).
  :func:`inflate` decompresses one member, optionally with an output cap, so callers never
  trust the declared sizes.
* **Writing** (:func:`write_zip`) from that metadata. The *uncompressed* bytes, names, order
  and header fields come back identical; the *compressed* stream is our own deflate and
  generally differs from the original writer's (so do the compressed sizes and offsets).
  A zip64 extra record is not kept verbatim: it only carries sizes/offsets, so it is dropped on
  read and rebuilt on write where the original had one. :meth:`MemberHeader.new` gives the
  header of a freshly written member (fixed timestamp, no host quirks) for deterministic output.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import PackageError

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


# A fixed timestamp for members this layer writes: the same inputs give the same bytes.
FIXED_DATE_TIME = (2024, 1, 1, 0, 0, 0)

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

    @classmethod
    def new(cls, name: str, date_time: tuple[int, int, int, int, int, int] = FIXED_DATE_TIME,
            compress_type: int = DEFLATED) -> MemberHeader:
        """The header of a member written from scratch: plain, deterministic, no host quirks."""
        flags = 0 if name.isascii() else FLAG_UTF8
        return cls(
            name=name, compress_type=compress_type, date_time=date_time, flag_bits=flags, create_system=0,
            create_version=20, extract_version=20, reserved=0, volume=0, internal_attr=0, external_attr=0,
            extra=b"", comment=b"", zip64=False, local_version=20, local_flag_bits=flags,
            local_date_time=date_time, local_extra=b"", local_zip64=False, local_sizes_zeroed=False,
            descriptor=None,
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


@dataclass(frozen=True)
class Precompressed:
    """A member's data as already compressed (copied from another zip's member): written as is,
    without inflating and deflating it again."""

    compress_type: int
    data: bytes  # the compressed stream
    crc: int  # of the uncompressed bytes
    size: int  # uncompressed size

    @classmethod
    def of(cls, data: bytes, entry: ZipEntry) -> Precompressed:
        """The member ``entry`` of the zip ``data``, as stored there."""
        start = entry.data_offset
        return cls(entry.header.compress_type, data[start:start + entry.compress_size], entry.crc, entry.file_size)


def write_zip(
    members: Iterable[tuple[MemberHeader, bytes | Precompressed]],
    comment: bytes = b"",
    compresslevel: int | None = None,
) -> bytes:
    """Write members (header, uncompressed bytes or :class:`Precompressed` data) in the given order
    into a new zip."""
    chunks: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    count = 0
    for h, payload in members:
        count += 1
        if isinstance(payload, Precompressed):
            if payload.compress_type != h.compress_type:
                raise PackageError(f"{h.name}: precompressed with method {payload.compress_type}, "
                                   f"header says {h.compress_type}")
            crc, body, usize = payload.crc, payload.data, payload.size
        else:
            crc, usize = zlib.crc32(payload), len(payload)
            if h.compress_type == STORED:
                body = payload
            elif h.compress_type == DEFLATED:
                level = compresslevel if compresslevel is not None else _level_for(h)
                deflater = zlib.compressobj(level, zlib.DEFLATED, -15)
                body = deflater.compress(payload) + deflater.flush()
            else:
                raise PackageError(f"{h.name}: cannot write compression method {h.compress_type}")
        csize = len(body)
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


