"""Upload audit for .docx packages: runs on the raw bytes BEFORE anything is stored or atomized.

``audit(data, filename, limits)`` returns an :class:`AuditReport`; ``audit_or_raise`` raises
:class:`~astra.ingest.errors.AuditRefused` instead when the report has a refusal. Every finding
has a stable ``code``, a ``severity`` ("refuse" or "info"), a human message and a ``location``:
the upload's file name, a member name, ``<rels part>#<relationship Id>``, or for a nested
package ``<embedding member>!<member inside it>``.

What is refused (codes in :class:`Code`):

* Not a package: oversized upload, an OLE compound file (legacy binary .doc or an *encrypted*
  OOXML document, which Office wraps in OLE), bytes that are not a zip.
* Zip structure: too many members, bytes outside any member (leading, trailing, or between
  members: polyglots and hidden payloads — and the atomizer could not keep them), overlapping
  members (a zip-bomb technique), local/central header disagreement, encrypted members,
  compression methods other than stored/deflate.
* Zip bombs: caps on each member, on the total (nested packages included) and on the
  compression ratio of members above ``ratio_floor_bytes``; checked on the declared sizes AND
  while inflating, with an output cap, so headers that lie are caught too (and reported).
* Member names: absolute, ``..``, backslashes, control characters, duplicates (compared
  case-insensitively, as OPC part names are).
* Not a Word document: no ``[Content_Types].xml``, no main document part (or one whose content
  type is not WordprocessingML).
* Active content: VBA projects (vbaProject.bin, vbaData.xml, their relationships/content types),
  macro-enabled content types and .docm/.dotm names, ActiveX controls, OLE objects (oleObject*.bin,
  the oleObject relationship or content type, and any embedded OLE compound file), and embedded
  packages carrying any of these (nested zips are opened recursively up to ``max_nesting``).
* Relationships with ``TargetMode="External"`` other than hyperlinks (attached templates,
  linked images, frames, OLE links, subdocuments, anything else), internal targets with a URI
  scheme, and internal targets escaping the package root.
* XML: any DOCTYPE or ENTITY declaration (XXE, entity expansion), or malformed XML, in any XML
  part. Parsing uses a hardened lxml parser (no entity resolution, no DTD loading, no network,
  no huge trees), and declarations are refused before the parser even sees them.

Recorded, not refused (severity "info"):

* External hyperlinks: also listed in ``report.hyperlinks``.
* DECISION: embedded OOXML packages *without* macros, ActiveX or OLE content (for instance an
  .xlsx chart workbook under word/embeddings, relationship type .../package) are allowed and
  recorded as ``embedded_package``. They are inert data to Word until a user opens them, and
  refusing them would refuse every document with a native chart. Their contents are audited
  with the same rules, recursively.

Content that runs or fetches something when the document is opened (refused, one code each):

* Word fields, in ``w:fldSimple/@w:instr`` or in ``w:instrText`` runs (split across runs, nested,
  spanning paragraphs; see :mod:`astra.ooxml.fields`), in every XML part: ``field_dde`` (DDE,
  DDEAUTO), ``field_include`` (INCLUDETEXT, INCLUDEPICTURE, INCLUDE, IMPORT, RD: load another
  file), ``field_link`` (LINK, DATABASE: live links and queries), ``field_macro`` (MACROBUTTON),
  ``hyperlink_unsafe_scheme`` (a HYPERLINK field to an unsafe target, below).
  DECISION: fields are judged against an ALLOW-LIST of harmless field types (:data:`SAFE_FIELDS`:
  page numbers, dates, document properties, cross-references, TOC/index, numbering, formulas,
  mail-merge and form fields, citations); any other field type is refused as ``field_unknown``,
  so a field type Word adds tomorrow, or one we did not think of (PRINT sends raw printer
  code), is refused until someone judges it. An allowed field whose instruction names a URL,
  a ``file:``/UNC/drive path or a script scheme is refused as ``field_remote_path``.
  Fields are read the ways a reader may read them (:mod:`astra.ooxml.fields`): each
  ``mc:AlternateContent`` branch alone, tracked changes accepted, rejected and every mix inside
  one field code, stray instruction runs each alone; any reading refused refuses the document.
  ``field_computed_name``: nested fields build the field's name (``{ {QUOTE 68 68 69…} … }``: only
  running them tells its type). ``field_nested``: a field nested in the code of a field other than
  :data:`NESTING_FIELDS` (IF, =, SET, mail-merge conditions), where it could build a path or a
  target. ``field_tracked_changes``: more tracked changes in one field code than can be judged.
* ``mail_merge_data_source``: a ``w:mailMerge`` naming a data source, connection string or query
  (Word opens it, or runs the query, when the document opens).
* ``alt_chunk``: ``w:altChunk`` elements or aFChunk relationships (imported HTML/MHT/RTF, which
  can load remote content).
* ``web_extension``: Office add-ins (webextension / taskpane parts, relationships, content types).
* ``attached_template_external``: an attachedTemplate relationship with an external target, or an
  internal one naming no part (``//server/share/t.dotm``): Word fetches the template on open.
* ``hyperlink_unsafe_scheme``: a hyperlink whose target is a ``file:`` URL, a UNC path
  (``\\\\server\\share``, ``//server``), a drive path, or any scheme outside
  :data:`SAFE_LINK_SCHEMES` (http, https, mailto, tel, ftp) — ``javascript:``, ``vbscript:``,
  ``data:``, ``ms-msdt:``… Relative targets without a scheme (another file beside the document)
  are recorded like web links: opening one takes a click and Word's warning. Hyperlink
  relationships are judged this way whatever their TargetMode.

Part names: relationship targets are percent-decoded and resolved in ONE place
(:func:`astra.ooxml.partname.resolve_target`), and the main document is chosen by the rule
:class:`~astra.ooxml.package.Package` uses (:func:`~astra.ooxml.package.main_document_part`), so
the audit judges the part every reader takes. Content types are compared without parameters
(``…+xml; charset=utf-8``), and a part that parses as XML is scanned whatever its name or type.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field
from urllib.parse import unquote

from lxml import etree

from astra.ooxml.errors import PackageError
from astra.ooxml.fields import NESTED, FieldInstruction, computed_name, field_instructions, field_name
from astra.ooxml.ns import (
    CT_DOCM_MAIN,
    CT_DOCUMENT_MAIN,
    CT_DOTM_MAIN,
    CT_TEMPLATE_MAIN,
    W_NS,
    W_STRICT_NS,
    rel_kind,
    rel_types,
)
from astra.ooxml.package import main_document_part
from astra.ooxml.partname import member_name_problems, resolve_target
from astra.ooxml.rels import ContentTypes, media_type, parse_content_types, parse_relationships
from astra.ooxml.xml import ForbiddenDtd, parse_xml
from astra.ooxml.zip import FLAG_ENCRYPTED, OLE_MAGIC, MemberTooLarge, ZipListing, inflate, read_zip

from .errors import AuditRefused

MiB = 1024 * 1024

REFUSE = "refuse"
INFO = "info"


class Code:
    """Finding codes (stable strings: stored in reports and matched by callers)."""

    UPLOAD_TOO_LARGE = "upload_too_large"
    OLE_COMPOUND_FILE = "ole_compound_file"
    NOT_A_ZIP = "not_a_zip"
    ZIP_TOO_MANY_MEMBERS = "zip_too_many_members"
    ZIP_UNREFERENCED_DATA = "zip_unreferenced_data"
    ZIP_OVERLAPPING_MEMBERS = "zip_overlapping_members"
    ZIP_HEADER_MISMATCH = "zip_header_mismatch"
    ZIP_ENCRYPTED_MEMBER = "zip_encrypted_member"
    ZIP_UNSUPPORTED_COMPRESSION = "zip_unsupported_compression"
    ZIP_BOMB_RATIO = "zip_bomb_ratio"
    ZIP_BOMB_MEMBER = "zip_bomb_member"
    ZIP_BOMB_TOTAL = "zip_bomb_total"
    ZIP_SIZE_MISMATCH = "zip_size_mismatch"
    ZIP_CRC_MISMATCH = "zip_crc_mismatch"
    ZIP_CORRUPT_MEMBER = "zip_corrupt_member"
    MEMBER_NAME_ABSOLUTE = "member_name_absolute"
    MEMBER_NAME_TRAVERSAL = "member_name_traversal"
    MEMBER_NAME_BACKSLASH = "member_name_backslash"
    MEMBER_NAME_INVALID = "member_name_invalid"
    MEMBER_NAME_DUPLICATE = "member_name_duplicate"
    MISSING_CONTENT_TYPES = "missing_content_types"
    MISSING_MAIN_DOCUMENT = "missing_main_document"
    MACRO_VBA_PROJECT = "macro_vba_project"
    MACRO_ENABLED_CONTENT_TYPE = "macro_enabled_content_type"
    MACRO_ENABLED_FILENAME = "macro_enabled_filename"
    ACTIVEX_CONTROL = "activex_control"
    OLE_OBJECT = "ole_object"
    EMBEDDED_PACKAGE_WITH_MACROS = "embedded_package_with_macros"
    EMBEDDED_PACKAGE_UNREADABLE = "embedded_package_unreadable"
    EMBEDDED_NESTING_TOO_DEEP = "embedded_nesting_too_deep"
    EXTERNAL_RELATIONSHIP = "external_relationship"
    RELATIONSHIP_TARGET_OUTSIDE_PACKAGE = "relationship_target_outside_package"
    XML_DTD = "xml_dtd"
    XML_MALFORMED = "xml_malformed"
    FIELD_DDE = "field_dde"
    FIELD_INCLUDE = "field_include"
    FIELD_LINK = "field_link"
    FIELD_MACRO = "field_macro"
    FIELD_REMOTE_PATH = "field_remote_path"
    FIELD_UNKNOWN = "field_unknown"
    FIELD_COMPUTED_NAME = "field_computed_name"
    FIELD_NESTED = "field_nested"
    FIELD_TRACKED_CHANGES = "field_tracked_changes"
    MAIL_MERGE_DATA_SOURCE = "mail_merge_data_source"
    ALT_CHUNK = "alt_chunk"
    WEB_EXTENSION = "web_extension"
    ATTACHED_TEMPLATE_EXTERNAL = "attached_template_external"
    HYPERLINK_UNSAFE_SCHEME = "hyperlink_unsafe_scheme"
    # info
    HYPERLINK_EXTERNAL = "hyperlink_external"
    EMBEDDED_PACKAGE = "embedded_package"


# Refusals that mean "this carries executable or active content"; an embedded package with any
# of them makes its embedding member refused too.
_ACTIVE_CONTENT_CODES = frozenset({
    Code.MACRO_VBA_PROJECT, Code.MACRO_ENABLED_CONTENT_TYPE, Code.MACRO_ENABLED_FILENAME,
    Code.ACTIVEX_CONTROL, Code.OLE_OBJECT, Code.EMBEDDED_PACKAGE_WITH_MACROS,
})

HYPERLINK_REL_TYPES = rel_types("hyperlink")

# Compared lower-cased. Macro-enabled mains are Word documents too; they are refused as
# macro-enabled instead.
WORD_MAIN_CONTENT_TYPES = frozenset(
    ct.lower() for ct in (CT_DOCUMENT_MAIN, CT_TEMPLATE_MAIN, CT_DOCM_MAIN, CT_DOTM_MAIN)
)
_VBA_CONTENT_TYPES = frozenset({"application/vnd.ms-office.vbaproject", "application/vnd.ms-word.vbadata+xml"})
_ACTIVEX_CONTENT_TYPES = frozenset({"application/vnd.ms-office.activex+xml", "application/vnd.ms-office.activex"})
_OLE_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.oleobject"
_MACRO_EXTENSIONS = (".docm", ".dotm", ".xlsm", ".xltm", ".xlam", ".pptm", ".potm", ".ppsm", ".ppam", ".sldm")

_ACTIVEX_NAME = re.compile(r"activex\d*\.(?:xml|bin)")
_OLE_NAME = re.compile(r"oleobject\d*\.bin")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_NAME_PROBLEMS = {  # astra.ooxml.partname.member_name_problems -> (code, message)
    "invalid": (Code.MEMBER_NAME_INVALID, "member name is empty or has control characters"),
    "absolute": (Code.MEMBER_NAME_ABSOLUTE, "absolute member name"),
    "traversal": (Code.MEMBER_NAME_TRAVERSAL, "member name with a '..' segment (path traversal)"),
    "backslash": (Code.MEMBER_NAME_BACKSLASH, "member name with a backslash"),
}
_DRIVE = re.compile(r"^[A-Za-z][:|]")  # "c|/x" is the legacy file-URL spelling of c:
_ZIP_MAGIC = b"PK\x03\x04"

# Field types that run or fetch something, with the finding each one gets.
HOSTILE_FIELDS = {
    "DDE": Code.FIELD_DDE,
    "DDEAUTO": Code.FIELD_DDE,
    "INCLUDETEXT": Code.FIELD_INCLUDE,
    "INCLUDEPICTURE": Code.FIELD_INCLUDE,
    "INCLUDE": Code.FIELD_INCLUDE,
    "IMPORT": Code.FIELD_INCLUDE,
    "RD": Code.FIELD_INCLUDE,
    "LINK": Code.FIELD_LINK,
    "DATABASE": Code.FIELD_LINK,
    "MACROBUTTON": Code.FIELD_MACRO,
}
# Field types that only compute text from the document itself, its properties or the user.
SAFE_FIELDS = frozenset({
    "=", "ADDIN", "ADDRESSBLOCK", "ADVANCE", "ASK", "AUTHOR", "AUTONUM", "AUTONUMLGL", "AUTONUMOUT",
    "AUTOTEXT", "AUTOTEXTLIST", "BARCODE", "BIBLIOGRAPHY", "BIDIOUTLINE", "CITATION", "COMMENTS",
    "COMPARE", "CREATEDATE", "DATE", "DISPLAYBARCODE", "DOCPROPERTY", "DOCVARIABLE", "EDITTIME", "EMBED",
    "EQ", "FILENAME", "FILESIZE", "FILLIN", "FORMCHECKBOX", "FORMDROPDOWN", "FORMTEXT", "GLOSSARY",
    "GOTOBUTTON", "GREETINGLINE", "HYPERLINK", "IF", "INDEX", "INFO", "KEYWORDS", "LASTSAVEDBY",
    "LISTNUM", "MERGEBARCODE", "MERGEFIELD", "MERGEREC", "MERGESEQ", "NEXT", "NEXTIF", "NOTEREF",
    "NUMCHARS", "NUMPAGES", "NUMWORDS", "PAGE", "PAGEREF", "PRINTDATE", "PRIVATE", "QUOTE", "REF",
    "REVNUM", "SAVEDATE", "SECTION", "SECTIONPAGES", "SEQ", "SET", "SHAPE", "SKIPIF", "STYLEREF",
    "SUBJECT", "SYMBOL", "TA", "TC", "TEMPLATE", "TIME", "TITLE", "TOA", "TOC", "USERADDRESS",
    "USERINITIALS", "USERNAME", "XE",
})
# DECISION: the only fields whose code may hold other fields. Conditions and formulas compare or
# compute values (their nested MERGEFIELD/PAGE/REF results are data, never a field type or a path);
# SET stores a value in a bookmark. Anywhere else a nested field can build the field's arguments
# ({ HYPERLINK { QUOTE 102 105 108 101 ... } }), so it is refused as field_nested.
NESTING_FIELDS = frozenset({"IF", "=", "COMPARE", "SKIPIF", "NEXTIF", "SET"})
SAFE_LINK_SCHEMES = frozenset({"http", "https", "mailto", "tel", "ftp"})

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# Browsers and Word drop blanks, controls and format characters (NBSP, U+2028, BOM, zero-width) in a scheme.
_INVISIBLE = re.compile(r"[\x00-\x20\x7f\x85\xa0\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\ufeff]")
# In a field instruction a backslash is written twice; after unescaping, a remote path is a URL,
# a file:/script URL, or a UNC or drive path (c:\\…) at the start of an argument.
_REMOTE_IN_FIELD = re.compile(
    r'(?i)(?:[a-z][a-z0-9+.-]*://|\b(?:file|javascript|vbscript|data|mhtml|ms-[a-z-]+):'
    r'|(?:^|[\s"])(?:\\\\|//)[^\s"\\/]|(?:^|[\s"])[a-z]:[\\/])'
)
_WEB_EXTENSION_CONTENT_TYPES = frozenset({
    "application/vnd.ms-office.webextension+xml", "application/vnd.ms-office.webextensiontaskpanes+xml",
})
_W_NAMESPACES = (W_NS, W_STRICT_NS)
_ALT_CHUNK_TAGS = tuple(f"{{{ns}}}altChunk" for ns in _W_NAMESPACES)
_MAIL_MERGE_TAGS = tuple(f"{{{ns}}}mailMerge" for ns in _W_NAMESPACES)
# DECISION: a w:mailMerge naming where its records come from is refused (Word opens the source,
# runs the query — ODBC, OLE DB, a remote workbook — when the document opens); one without
# (only mainDocumentType, destination, ...) describes a layout and passes.
_MAIL_MERGE_SOURCE_ELEMENTS = frozenset({"connectString", "query", "dataSource", "headerSource", "udl", "src"})


def unsafe_link_reason(target: str) -> str | None:
    """Why a hyperlink target is unsafe to click in Word, or None (web/mail links, relative paths)."""
    text = target
    for _ in range(3):  # "%2566ile:" decodes to "%66ile:", then to "file:"
        text = _INVISIBLE.sub("", unquote(text))
    if text.startswith(("\\\\", "//", "\\/", "/\\")):
        return "a UNC / network path"
    if _DRIVE.match(text):
        return "a local drive path"
    m = _SCHEME.match(text)
    if m and m.group(1).lower() not in SAFE_LINK_SCHEMES:
        return f"the {m.group(1).lower()}: scheme"
    return None


# In a field code a switch is a backslash and ONE character (\l, \*, \@); anything glued to it is
# its argument. A token starting with two backslashes is an escaped UNC path, not a switch.
_FIELD_TOKEN = re.compile(r'"([^"]*)"?|([^\s"]+)')
_SWITCH = re.compile(r'\\[^\s\\"]')
_TOOLTIP_SWITCH = "\\o"  # its text is shown, never followed


def field_arguments(code: str) -> list[tuple[str | None, str]]:
    """(switch or None, argument) for every argument after the field name, unescaped; a switch
    without an argument is (switch, "")."""
    tokens = [(m.group(1) is not None, m.group(1) if m.group(1) is not None else m.group(2))
              for m in _FIELD_TOKEN.finditer(code)][1:]  # [0] is the field name
    arguments: list[tuple[str | None, str]] = []
    for quoted, token in tokens:
        if not quoted and _SWITCH.match(token):
            arguments.append((token[:2].lower(), token[2:].replace("\\\\", "\\")))
        else:
            arguments.append((None, token.replace("\\\\", "\\")))
    return arguments


def _hyperlink_field_targets(code: str) -> list[str]:
    """Every argument of a HYPERLINK field a reader may follow: all but the tooltip text."""
    targets, after_tooltip = [], False
    for switch, argument in field_arguments(code):
        if switch is not None:
            after_tooltip = switch == _TOOLTIP_SWITCH and not argument
            if argument and switch != _TOOLTIP_SWITCH:
                targets.append(argument)
            continue
        if not after_tooltip:
            targets.append(argument)
        after_tooltip = False
    return targets


def judge_field(code: str) -> tuple[str, str] | None:
    """(finding code, reason) when a field code (nested fields marked by NESTED) runs or fetches
    something, or cannot be judged without running it; None when harmless."""
    name = field_name(code)
    if name in HOSTILE_FIELDS:
        return HOSTILE_FIELDS[name], f"{name} field (runs or loads content when the document opens)"
    if computed_name(code):
        return Code.FIELD_COMPUTED_NAME, "field whose type is built by nested fields (known only by running them)"
    if NESTED in code and name not in NESTING_FIELDS:
        return Code.FIELD_NESTED, f"{name} field with a field nested in its code (only {sorted(NESTING_FIELDS)} may)"
    if name == "HYPERLINK":
        for target in _hyperlink_field_targets(code):
            reason = unsafe_link_reason(target)
            if reason:
                return Code.HYPERLINK_UNSAFE_SCHEME, f"HYPERLINK field to {target!r} ({reason})"
        return None
    if name and name not in SAFE_FIELDS:
        return Code.FIELD_UNKNOWN, f"{name} field is not on the list of harmless field types"
    if _REMOTE_IN_FIELD.search(code.replace("\\\\", "\\")):
        return Code.FIELD_REMOTE_PATH, f"{name or 'empty'} field names a remote, drive or file path"
    return None


@dataclass(frozen=True)
class AuditLimits:
    max_upload_bytes: int = 50 * MiB
    max_total_uncompressed: int = 200 * MiB  # all members, nested packages included
    max_member_uncompressed: int = 100 * MiB
    max_ratio: float = 100.0
    max_members: int = 5000  # per package
    max_nesting: int = 3  # embedded packages inside embedded packages
    # Tiny members legitimately compress far beyond 100:1 (runs of zeros, repeated XML); they
    # cannot blow memory up, so the ratio cap only applies from this uncompressed size on.
    ratio_floor_bytes: int = 1 * MiB


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str  # REFUSE | INFO
    message: str
    location: str

    def to_dict(self) -> dict:
        return {"code": self.code, "severity": self.severity, "message": self.message, "location": self.location}


@dataclass(frozen=True)
class Hyperlink:
    location: str  # "<rels part>#<Id>" (prefixed with "<member>!" inside embedded packages)
    source_part: str
    id: str
    target: str

    def to_dict(self) -> dict:
        return {"location": self.location, "source_part": self.source_part, "id": self.id, "target": self.target}


@dataclass
class AuditReport:
    filename: str
    size: int
    sha256: str | None  # None when the upload was too large to be read at all
    findings: list[Finding] = field(default_factory=list)
    hyperlinks: list[Hyperlink] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.refusals

    @property
    def refusals(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == REFUSE]

    def codes(self, severity: str | None = None) -> set[str]:
        return {f.code for f in self.findings if severity is None or f.severity == severity}

    def to_dict(self) -> dict:
        return {
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
            "passed": self.passed,
            "findings": [f.to_dict() for f in self.findings],
            "hyperlinks": [h.to_dict() for h in self.hyperlinks],
        }


def audit(data: bytes, filename: str = "upload.docx", limits: AuditLimits = AuditLimits()) -> AuditReport:
    """Audit an uploaded .docx; never raises on hostile input, everything ends up in the report."""
    if len(data) > limits.max_upload_bytes:
        report = AuditReport(filename, len(data), None)
        report.findings.append(Finding(
            Code.UPLOAD_TOO_LARGE, REFUSE,
            f"upload is {len(data)} bytes, over the {limits.max_upload_bytes}-byte limit", filename,
        ))
        return report
    report = AuditReport(filename, len(data), hashlib.sha256(data).hexdigest())
    _Auditor(report, limits).run(data, filename)
    return report


def audit_or_raise(data: bytes, filename: str = "upload.docx", limits: AuditLimits = AuditLimits()) -> AuditReport:
    """Like :func:`audit`, but raise AuditRefused (carrying the report) if anything is refused."""
    report = audit(data, filename, limits)
    if not report.passed:
        raise AuditRefused(report)
    return report


class _Auditor:
    def __init__(self, report: AuditReport, limits: AuditLimits) -> None:
        self.report = report
        self.limits = limits
        self.declared_total = 0  # sum of declared sizes, all packages
        self.inflated_total = 0  # bytes actually inflated, all packages
        self._seen: set[tuple[str, str]] = set()

    # ---------------------------------------------------------------- findings

    def refuse(self, code: str, location: str, message: str) -> None:
        self._add(Finding(code, REFUSE, message, location))

    def info(self, code: str, location: str, message: str) -> None:
        self._add(Finding(code, INFO, message, location))

    def _add(self, finding: Finding) -> None:
        key = (finding.code, finding.location)
        if key not in self._seen:  # one finding per problem and place, however it was spotted
            self._seen.add(key)
            self.report.findings.append(finding)

    # ---------------------------------------------------------------- top level

    def run(self, data: bytes, filename: str) -> None:
        if data.startswith(OLE_MAGIC):
            self.refuse(Code.OLE_COMPOUND_FILE, filename,
                        "encrypted or legacy binary document (OLE compound file, not an OOXML zip): "
                        "save it as an unencrypted .docx")
            return
        if filename.lower().endswith((".docm", ".dotm")):
            self.refuse(Code.MACRO_ENABLED_FILENAME, filename, "macro-enabled file type (.docm/.dotm)")
        self.package(data, where=filename, prefix="", depth=0)

    def package(self, data: bytes, where: str, prefix: str, depth: int) -> None:
        """Audit one zip package; ``prefix`` is prepended to member names in locations."""
        top = depth == 0
        try:
            listing = read_zip(data)
        except PackageError as exc:
            if top:
                self.refuse(Code.NOT_A_ZIP, where, f"not a zip package: {exc}")
            else:
                self.refuse(Code.EMBEDDED_PACKAGE_UNREADABLE, where, f"embedded zip cannot be read: {exc}")
            return
        if len(listing.entries) > self.limits.max_members:
            self.refuse(Code.ZIP_TOO_MANY_MEMBERS, where,
                        f"{len(listing.entries)} members, over the {self.limits.max_members} limit")
            return

        self.check_layout(data, listing, where, prefix)
        skip = self.check_headers_and_names(listing, prefix)
        payloads = self.inflate_members(data, listing, where, prefix, skip)
        if payloads is None:
            return
        types, parsed = self.check_xml(payloads, prefix)
        rels = {name: root for name, root in parsed.items() if name.lower().endswith(".rels")}
        if top:
            self.check_main_document(payloads, types, rels)
        self.check_members(payloads, types, prefix, depth)
        self.check_relationships(rels, prefix)
        self.check_active_markup(parsed, prefix)

    # ---------------------------------------------------------------- zip structure

    def check_layout(self, data: bytes, listing: ZipListing, where: str, prefix: str) -> None:
        expected = 0
        for entry in sorted(listing.entries, key=lambda e: e.header_offset):
            if entry.header_offset > expected:
                self.refuse(Code.ZIP_UNREFERENCED_DATA, prefix + entry.name,
                            f"{entry.header_offset - expected} bytes before this member belong to no member")
            elif entry.header_offset < expected:
                self.refuse(Code.ZIP_OVERLAPPING_MEMBERS, prefix + entry.name,
                            "member data overlaps another member (overlapping-entry zip bomb or corrupt zip)")
            expected = max(expected, entry.end_offset)
        if listing.central_dir_offset > expected:
            self.refuse(Code.ZIP_UNREFERENCED_DATA, where,
                        f"{listing.central_dir_offset - expected} bytes before the central directory "
                        "belong to no member")
        elif listing.central_dir_offset < expected:
            self.refuse(Code.ZIP_OVERLAPPING_MEMBERS, where, "member data overlaps the central directory")
        if listing.eocd_offset < 0:
            self.refuse(Code.ZIP_UNREFERENCED_DATA, where, "bytes after the end of the zip")
        elif listing.eocd_offset != listing.central_dir_end:
            gap = data[listing.central_dir_end:listing.eocd_offset]
            is_zip64_end = gap.startswith(b"PK\x06\x06") and gap[-20:-16] == b"PK\x06\x07"
            if not is_zip64_end:
                self.refuse(Code.ZIP_UNREFERENCED_DATA, where,
                            f"{len(gap)} bytes between the central directory and its end record")

    def check_headers_and_names(self, listing: ZipListing, prefix: str) -> set[int]:
        """Per-member header and name checks; returns indexes of members not to inflate."""
        skip: set[int] = set()
        seen: dict[str, str] = {}
        for i, entry in enumerate(listing.entries):
            name, loc, h = entry.name, prefix + entry.name, entry.header
            if entry.local_name != entry.raw_name or entry.local_compress_type != h.compress_type:
                self.refuse(Code.ZIP_HEADER_MISMATCH, loc, "local header disagrees with the central directory")
                skip.add(i)
            if h.flag_bits & FLAG_ENCRYPTED:
                self.refuse(Code.ZIP_ENCRYPTED_MEMBER, loc, "encrypted zip member")
                skip.add(i)
            if h.compress_type not in (0, 8):
                self.refuse(Code.ZIP_UNSUPPORTED_COMPRESSION, loc,
                            f"compression method {h.compress_type} (only stored and deflate are accepted)")
                skip.add(i)
            for problem in member_name_problems(name):
                code, message = _NAME_PROBLEMS[problem]
                self.refuse(code, loc, message)
            key = name.lower()
            if key in seen:
                self.refuse(Code.MEMBER_NAME_DUPLICATE, loc,
                            f"duplicate member name (same part as {seen[key]!r}; OPC names are case-insensitive)")
            else:
                seen[key] = name
        return skip

    def _ratio_exceeded(self, size: int, compressed: int) -> bool:
        return size >= self.limits.ratio_floor_bytes and size > self.limits.max_ratio * max(compressed, 1)

    def inflate_members(self, data: bytes, listing: ZipListing, where: str, prefix: str,
                        skip: set[int]) -> dict[str, bytes] | None:
        """Inflate every member under the caps; None if the package must not be looked at further."""
        limits = self.limits
        self.declared_total += sum(e.file_size for e in listing.entries)
        if self.declared_total > limits.max_total_uncompressed:
            self.refuse(Code.ZIP_BOMB_TOTAL, where,
                        f"declared uncompressed size {self.declared_total} bytes is over the "
                        f"{limits.max_total_uncompressed}-byte limit")
            return None
        payloads: dict[str, bytes] = {}
        for i, entry in enumerate(listing.entries):
            loc = prefix + entry.name
            if i in skip:
                continue
            if entry.file_size > limits.max_member_uncompressed:
                self.refuse(Code.ZIP_BOMB_MEMBER, loc,
                            f"declared size {entry.file_size} bytes is over the "
                            f"{limits.max_member_uncompressed}-byte member limit")
                continue
            if self._ratio_exceeded(entry.file_size, entry.compress_size):
                self.refuse(Code.ZIP_BOMB_RATIO, loc,
                            f"compression ratio {entry.file_size / max(entry.compress_size, 1):.0f}:1 is over "
                            f"{limits.max_ratio:.0f}:1")
                continue
            room = limits.max_total_uncompressed - self.inflated_total
            cap = min(limits.max_member_uncompressed, room)
            try:
                out = inflate(data, entry, cap)
            except MemberTooLarge:
                if entry.file_size <= cap:
                    self.refuse(Code.ZIP_SIZE_MISMATCH, loc,
                                f"header declares {entry.file_size} bytes but the data inflates to more than {cap}")
                if cap < limits.max_member_uncompressed:
                    self.refuse(Code.ZIP_BOMB_TOTAL, loc,
                                f"inflating this member takes the package over the "
                                f"{limits.max_total_uncompressed}-byte total limit")
                    return None
                self.refuse(Code.ZIP_BOMB_MEMBER, loc,
                            f"inflates beyond the {limits.max_member_uncompressed}-byte member limit")
                continue
            except PackageError as exc:
                self.refuse(Code.ZIP_CORRUPT_MEMBER, loc, str(exc))
                continue
            self.inflated_total += len(out)
            if len(out) != entry.file_size:
                self.refuse(Code.ZIP_SIZE_MISMATCH, loc,
                            f"header declares {entry.file_size} bytes but the data inflates to {len(out)}")
            elif zlib.crc32(out) != entry.crc:
                self.refuse(Code.ZIP_CRC_MISMATCH, loc, "CRC-32 does not match the data")
            if self._ratio_exceeded(len(out), entry.compress_size):
                self.refuse(Code.ZIP_BOMB_RATIO, loc,
                            f"compression ratio {len(out) / max(entry.compress_size, 1):.0f}:1 is over "
                            f"{limits.max_ratio:.0f}:1")
                continue
            payloads.setdefault(entry.name, out)
        return payloads

    # ---------------------------------------------------------------- XML

    def check_xml(self, payloads: dict[str, bytes], prefix: str
                  ) -> tuple[ContentTypes | None, dict[str, etree._Element]]:
        """Parse every XML part; returns the content types and every parsed part (by member name)."""
        ct_name = _find(payloads, "[Content_Types].xml")
        types = None
        if ct_name is not None:
            root = self.parse_xml(ct_name, payloads[ct_name], prefix)
            if root is not None:
                types = parse_content_types(root)
        parsed: dict[str, etree._Element] = {}
        for name, payload in payloads.items():
            if name == ct_name or name.endswith("/"):
                continue
            if _is_xml(name, types):
                root = self.parse_xml(name, payload, prefix)
            else:
                root = _parse_quietly(payload) if _looks_like_xml(payload) else None
            if root is not None:
                parsed[name] = root
        return types, parsed

    def parse_xml(self, name: str, payload: bytes, prefix: str) -> etree._Element | None:
        try:
            # Declarations are refused before any parser sees them (XXE, billion laughs).
            return parse_xml(payload, prefix + name, normalise_strict=False)
        except ForbiddenDtd:
            self.refuse(Code.XML_DTD, prefix + name, "XML part declares a DOCTYPE or ENTITY (XXE / entity expansion)")
        except PackageError as exc:
            self.refuse(Code.XML_MALFORMED, prefix + name, str(exc))
        return None

    # ---------------------------------------------------------------- OPC

    def check_main_document(self, payloads: dict[str, bytes], types: ContentTypes | None,
                            rels: dict[str, etree._Element]) -> None:
        if _find(payloads, "[Content_Types].xml") is None:
            self.refuse(Code.MISSING_CONTENT_TYPES, "[Content_Types].xml", "package has no [Content_Types].xml")
        package_rels = _find(rels, "_rels/.rels")
        relationships = parse_relationships(package_rels, rels[package_rels]) if package_rels else []
        main = main_document_part(relationships, lambda name: _find(payloads, name) is not None)
        if main is None:
            named = [r.target_part for r in relationships if rel_kind(r.type) == "officeDocument" and r.target_part]
            self.refuse(Code.MISSING_MAIN_DOCUMENT, named[0] if named else "_rels/.rels",
                        "no main document part (officeDocument relationship in _rels/.rels to an existing part)")
            return
        member = _find(payloads, main)
        content_type = types.of(member) if types else None
        if types is not None and media_type(content_type) not in WORD_MAIN_CONTENT_TYPES:
            self.refuse(Code.MISSING_MAIN_DOCUMENT, member,
                        f"main part has content type {content_type!r}, not a WordprocessingML document")

    def check_members(self, payloads: dict[str, bytes], types: ContentTypes | None, prefix: str, depth: int) -> None:
        for name, payload in payloads.items():
            if name.endswith("/"):
                continue
            loc = prefix + name
            lower = name.lower()
            base = lower.rsplit("/", 1)[-1]
            content_type = (types.of(name) if types else None) or ""
            ct = media_type(content_type)
            if "macroenabled" in ct:
                self.refuse(Code.MACRO_ENABLED_CONTENT_TYPE, loc, f"macro-enabled content type {content_type}")
            if base.endswith(_MACRO_EXTENSIONS):
                self.refuse(Code.MACRO_ENABLED_FILENAME, loc, "macro-enabled Office file embedded")
            # One finding per member, most specific first: VBA projects and ActiveX binaries are
            # OLE compound files themselves.
            if base in ("vbaproject.bin", "vbadata.xml") or ct in _VBA_CONTENT_TYPES:
                self.refuse(Code.MACRO_VBA_PROJECT, loc, "VBA macro project")
            elif "/activex/" in "/" + lower or _ACTIVEX_NAME.fullmatch(base) or ct in _ACTIVEX_CONTENT_TYPES:
                self.refuse(Code.ACTIVEX_CONTROL, loc, "ActiveX control")
            elif _OLE_NAME.fullmatch(base) or ct == _OLE_CONTENT_TYPE or payload.startswith(OLE_MAGIC):
                self.refuse(Code.OLE_OBJECT, loc, "binary OLE object (may carry macros or executables)")
            elif payload.startswith(_ZIP_MAGIC):
                self.check_embedded_package(loc, payload, depth)
            if "/webextensions/" in "/" + lower or ct in _WEB_EXTENSION_CONTENT_TYPES:
                self.refuse(Code.WEB_EXTENSION, loc, "Office add-in (web extension) part")

    def check_embedded_package(self, loc: str, payload: bytes, depth: int) -> None:
        if depth + 1 > self.limits.max_nesting:
            self.refuse(Code.EMBEDDED_NESTING_TOO_DEEP, loc,
                        f"embedded packages nested deeper than {self.limits.max_nesting} levels")
            return
        before = len(self.report.findings)
        self.package(payload, where=loc, prefix=loc + "!", depth=depth + 1)
        nested = [f for f in self.report.findings[before:] if f.severity == REFUSE]
        if any(f.code in _ACTIVE_CONTENT_CODES for f in nested):
            self.refuse(Code.EMBEDDED_PACKAGE_WITH_MACROS, loc,
                        "embedded package carries macros, ActiveX or OLE objects")
        elif not nested:
            self.info(Code.EMBEDDED_PACKAGE, loc, "embedded package without macros (allowed)")

    def check_relationships(self, rels: dict[str, etree._Element], prefix: str) -> None:
        for rels_part, root in rels.items():
            for rel in parse_relationships(rels_part, root):
                loc = f"{prefix}{rels_part}#{rel.id}"
                kind = rel.type.rsplit("/", 1)[-1]
                is_hyperlink = rel.type in HYPERLINK_REL_TYPES
                if kind in ("webextension", "webextensiontaskpanes"):
                    self.refuse(Code.WEB_EXTENSION, loc, f"relationship to an Office add-in (Type {rel.type})")
                elif kind == "aFChunk":
                    self.refuse(Code.ALT_CHUNK, loc, "altChunk import (HTML/MHT/RTF that can load remote content)")
                if is_hyperlink and not rel.external and rel.target.startswith("#"):
                    continue  # a bookmark in the source part itself
                # A hyperlink is judged by its target whatever its TargetMode says (Word follows
                # "//server/x" or " file:..." either way); so is an attached template that names no part.
                outside = resolve_target(rel.source_part, rel.target) is None
                if rel.external or is_hyperlink or (kind == "attachedTemplate" and outside):
                    if is_hyperlink:
                        self.check_hyperlink(rel, loc)
                    elif kind == "attachedTemplate":
                        self.refuse(Code.ATTACHED_TEMPLATE_EXTERNAL, loc,
                                    f'attached template "{rel.target}" is fetched when the document opens')
                    else:
                        self.refuse(Code.EXTERNAL_RELATIONSHIP, loc,
                                    f'external {kind} relationship to "{rel.target}" (Type {rel.type})')
                    continue
                if _URI_SCHEME.match(rel.target):
                    self.refuse(Code.EXTERNAL_RELATIONSHIP, loc,
                                f'{kind} relationship targets a URI "{rel.target}" without TargetMode '
                                f"(Type {rel.type})")
                    continue
                if outside:
                    self.refuse(Code.RELATIONSHIP_TARGET_OUTSIDE_PACKAGE, loc,
                                f'{kind} relationship target "{rel.target}" points outside the package')
                if kind in ("vbaProject", "wordVbaData"):
                    self.refuse(Code.MACRO_VBA_PROJECT, loc, f"relationship to a VBA project (Type {rel.type})")
                elif kind in ("control", "activeXControlBinary"):
                    self.refuse(Code.ACTIVEX_CONTROL, loc, f"relationship to an ActiveX control (Type {rel.type})")
                elif kind == "oleObject":
                    self.refuse(Code.OLE_OBJECT, loc, f"relationship to an OLE object (Type {rel.type})")

    def check_hyperlink(self, rel, loc: str) -> None:
        reason = unsafe_link_reason(rel.target)
        if reason:
            self.refuse(Code.HYPERLINK_UNSAFE_SCHEME, loc, f'hyperlink to "{rel.target}" ({reason})')
            return
        self.report.hyperlinks.append(Hyperlink(loc, rel.source_part, rel.id, rel.target))
        self.info(Code.HYPERLINK_EXTERNAL, loc, f"external hyperlink to {rel.target}")

    def check_active_markup(self, parsed: dict[str, etree._Element], prefix: str) -> None:
        """Fields and altChunks in every XML part (stories, but also anything Word might render)."""
        for name, root in parsed.items():
            if name.lower().endswith(".rels"):
                continue
            loc = prefix + name
            for instruction in field_instructions(root):
                self.check_field(instruction, loc)
            if next(root.iter(*_ALT_CHUNK_TAGS), None) is not None:
                self.refuse(Code.ALT_CHUNK, loc, "w:altChunk imports an HTML/MHT/RTF part (can load remote content)")
            if any(_has_data_source(merge) for merge in root.iter(*_MAIL_MERGE_TAGS)):
                self.refuse(Code.MAIL_MERGE_DATA_SOURCE, loc,
                            "mail merge with a data source, connection string or query (opened or run on open)")

    def check_field(self, field: FieldInstruction, loc: str) -> None:
        """Judge the field code under every accept/reject combination of its tracked changes."""
        variants = field.variants()
        if variants is None:
            self.refuse(Code.FIELD_TRACKED_CHANGES, loc,
                        f"field code with {len(field.revisions())} tracked changes (too many readings to judge)")
            return
        for code in variants:
            verdict = judge_field(code)
            if verdict:
                finding, reason = verdict
                self.refuse(finding, loc, f"{reason}: {code.replace(NESTED, '{…}').strip()[:200]!r}")


def _has_data_source(mail_merge: etree._Element) -> bool:
    return any(etree.QName(el).localname in _MAIL_MERGE_SOURCE_ELEMENTS
               for el in mail_merge.iter() if isinstance(el.tag, str))


def _parse_quietly(payload: bytes) -> etree._Element | None:
    """A part declared as something else that parses as XML anyway: scanned for fields like the
    rest (a reader may take it for a story), but its failing to parse is no finding."""
    try:
        return parse_xml(payload, "", normalise_strict=False)
    except (ForbiddenDtd, PackageError):
        return None


def _find(mapping: dict, name: str) -> str | None:
    """The key equal to ``name`` ignoring case (OPC part names are case-insensitive)."""
    if name in mapping:
        return name
    lower = name.lower()
    return next((key for key in mapping if key.lower() == lower), None)


def _is_xml(name: str, types: ContentTypes | None) -> bool:
    if name.lower().endswith((".xml", ".rels")):
        return True
    content_type = media_type(types.of(name) if types else None)
    return content_type.endswith("+xml") or content_type in ("application/xml", "text/xml")


def _looks_like_xml(payload: bytes) -> bool:
    return payload.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<") or payload.startswith((b"\xff\xfe", b"\xfe\xff"))
