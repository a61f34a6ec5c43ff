"""Split a story part at the top-level blocks of its story container, by byte offsets.

:func:`split_children` uses a small scanner instead of an XML parser: the slices are taken from
the original bytes, so they concatenate back to the part by construction (what a lossless
atomizer needs, and what lets a writer replace one block and keep every other byte).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .xml import utf16_encoding


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
