"""The one table of OOXML namespace URIs, content types and relationship types.

Every other module spells a namespace through here. ``W.p`` is the Clark name
``"{http://schemas.openxmlformats.org/wordprocessingml/2006/main}p"``. ISO/IEC 29500 *Strict*
documents use other URIs for the same vocabulary: :data:`STRICT_TO_TRANSITIONAL` maps them, and
:func:`astra.ooxml.xml.parse_xml` rewrites them on parse so readers know one vocabulary.
"""

from __future__ import annotations

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
R_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
A_NS = "http://schemas.openxmlformats.org/drawingml/2006/main"
MC_NS = "http://schemas.openxmlformats.org/markup-compatibility/2006"
WP_NS = "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing"
PIC_NS = "http://schemas.openxmlformats.org/drawingml/2006/picture"
WPS_NS = "http://schemas.microsoft.com/office/word/2010/wordprocessingShape"
W14_NS = "http://schemas.microsoft.com/office/word/2010/wordml"
W15_NS = "http://schemas.microsoft.com/office/word/2012/wordml"
V_NS = "urn:schemas-microsoft-com:vml"
M_NS = "http://schemas.openxmlformats.org/officeDocument/2006/math"
PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
CONTENT_TYPES_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
SML_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"

W_STRICT_NS = "http://purl.oclc.org/ooxml/wordprocessingml/main"
R_STRICT_NS = "http://purl.oclc.org/ooxml/officeDocument/relationships"
A_STRICT_NS = "http://purl.oclc.org/ooxml/drawingml/main"

STRICT_TO_TRANSITIONAL = {W_STRICT_NS: W_NS, R_STRICT_NS: R_NS, A_STRICT_NS: A_NS}

# Prefixes as Word writes them; used to print readable paths and to declare namespaces.
PREFIXES = {
    W_NS: "w",
    R_NS: "r",
    A_NS: "a",
    MC_NS: "mc",
    WP_NS: "wp",
    PIC_NS: "pic",
    WPS_NS: "wps",
    W14_NS: "w14",
    W15_NS: "w15",
    V_NS: "v",
    M_NS: "m",
}
NSMAP = {prefix: uri for uri, prefix in PREFIXES.items()}


class Names:
    """Attribute access to the Clark names of one namespace: ``W.p`` -> ``{ns}p``."""

    def __init__(self, ns: str) -> None:
        self.ns = ns

    def __getattr__(self, local: str) -> str:
        if local.startswith("_"):
            raise AttributeError(local)
        return f"{{{self.ns}}}{local}"

    def __call__(self, local: str) -> str:
        return f"{{{self.ns}}}{local}"


W = Names(W_NS)
R = Names(R_NS)
A = Names(A_NS)
MC = Names(MC_NS)


def local_name(tag: object) -> str:
    """``{ns}local`` -> ``local``; "" for comments and processing instructions."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def qname(tag: str) -> str:
    """``{ns}local`` -> ``w:local`` using the known prefixes (else the bare local name)."""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        prefix = PREFIXES.get(ns)
        return f"{prefix}:{local}" if prefix else local
    return tag


# --------------------------------------------------------------------------- relationship types

RT_TRANSITIONAL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
RT_STRICT = "http://purl.oclc.org/ooxml/officeDocument/relationships/"
RT_MS = "http://schemas.microsoft.com/office/2006/relationships/"
RT_MS_2011 = "http://schemas.microsoft.com/office/2011/relationships/"


def rel_types(kind: str) -> frozenset[str]:
    """Both spellings (transitional and strict) of a relationship type, e.g. ``rel_types("hyperlink")``."""
    return frozenset({RT_TRANSITIONAL + kind, RT_STRICT + kind})


def rel_kind(rel_type: str) -> str:
    """The last segment of a relationship type URI (``.../hyperlink`` -> ``hyperlink``)."""
    return rel_type.rstrip().rsplit("/", 1)[-1]


# --------------------------------------------------------------------------- content types

CT_RELATIONSHIPS = "application/vnd.openxmlformats-package.relationships+xml"
CT_WML = "application/vnd.openxmlformats-officedocument.wordprocessingml."
CT_DOCUMENT_MAIN = CT_WML + "document.main+xml"
CT_TEMPLATE_MAIN = CT_WML + "template.main+xml"
CT_DOCM_MAIN = "application/vnd.ms-word.document.macroEnabled.main+xml"
CT_DOTM_MAIN = "application/vnd.ms-word.template.macroEnabledTemplate.main+xml"
CT_DOCX = CT_WML + "document"  # a whole .docx (an upload's Content-Type)
CT_THEME = "application/vnd.openxmlformats-officedocument.theme+xml"

# The parts that hold document content ("stories"), by content type.
STORY_CONTENT_TYPES = frozenset({
    CT_DOCUMENT_MAIN,
    CT_TEMPLATE_MAIN,
    CT_DOCM_MAIN,
    CT_DOTM_MAIN,
    CT_WML + "header+xml",
    CT_WML + "footer+xml",
    CT_WML + "footnotes+xml",
    CT_WML + "endnotes+xml",
    CT_WML + "comments+xml",
    CT_WML + "document.glossary+xml",
})
