"""Checks on a built document: what the Dagster asset checks run on ``document_binary``.

:func:`check_document` — the document opens with python-docx; it holds no forbidden construct
(the INGEST audit's refusals: macros, OLE/ActiveX, altChunk, hostile fields, external
relationships other than hyperlinks, DTDs; and beyond it: fields other than PAGE, NUMPAGES and
DATE, and any external relationship, hyperlinks included); every zone of the zone map is
present as an ``astra:`` content control; no ``{{ zone_id }}`` placeholder text is left outside
the ``astra:`` controls, in any story, note or comment part, ``mc:Fallback`` branches included
(a placeholder is a zone BUILDER did not fill; inside a control it is the user's own text).

DECISION: with the ``template`` given, the fields and external hyperlinks the template itself
carries are allowed (each as many times as the template has it): they sit outside the zones,
BUILDER copies them byte for byte and the template passed the audit on upload. BUILDER never
writes either, so one more than the template has is a fault.

:func:`convert_to_pdf` — LibreOffice headless converts the document to PDF (Debian's
``libreoffice-writer-nogui``; ``scripts/system-deps.sh`` installs it). A separate function
because it takes seconds and a binary the engine does not otherwise need.

DECISION: LibreOffice's layout time grows about quadratically with a table's rows (one table of
2,500 rows takes ~70 s, 5,000 rows over 170 s), so a large session's document would fail the
blocking "opens" check by timeout, once and for good. The PDF check therefore converts
:func:`pdf_check_copy`: the document with each ``astra:`` zone cut to its first
:data:`PDF_MAX_ZONE_ROWS` table rows (over all its tables, each table keeping at least its header
row) and its first :data:`PDF_MAX_ZONE_BLOCKS` blocks (plus its last, which may carry a section
break). Everything outside the zones is the audited template, whole. What is left out is made by
the same code from the same kind of cleaned text as what is kept, and the whole document is still
opened by python-docx and judged by every structural check above; the copy's cuts are reported
(:class:`PdfCopy`), so the check's metadata says how much LibreOffice saw. Scaling the timeout
instead would let one session hold a worker for many minutes and still fail beyond some size. A
conversion that overruns its timeout raises :class:`ConversionTimeout`, which says so.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from astra.ingest.audit import audit
from astra.ingest.zones import TAG_PREFIX, ZONE_ID_RE, TemplateRefused, parse_tag
from astra.ooxml.errors import PackageError
from astra.ooxml.fields import field_instructions
from astra.ooxml.ns import MC, W
from astra.ooxml.package import Package, write_package
from astra.ooxml.partname import rels_source
from astra.ooxml.wordml import story_parts, wval

ALLOWED_FIELDS = frozenset({"PAGE", "NUMPAGES", "DATE"})
PDF_MAX_ZONE_ROWS = 300  # table rows per zone in the copy LibreOffice converts (a few seconds of layout)
PDF_MAX_ZONE_BLOCKS = 1_000  # paragraphs and tables per zone in that copy


@dataclass(frozen=True)
class CheckFinding:
    code: str  # does_not_open, forbidden_construct, field_not_allowed, external_relationship, zone_missing,
    # placeholder_left
    detail: str

    def to_json(self) -> dict:
        return {"code": self.code, "detail": self.detail}


@dataclass
class CheckReport:
    findings: list[CheckFinding] = field(default_factory=list)
    zones_found: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings

    def to_json(self) -> dict:
        return {"passed": self.passed, "findings": [f.to_json() for f in self.findings],
                "zones_found": self.zones_found}


def check_document(data: bytes, zone_map: dict, *, template: bytes | None = None) -> CheckReport:
    report = CheckReport()
    try:
        import docx  # python-docx: the reader most Python consumers of the document will use

        docx.Document(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - whatever python-docx raises, the document does not open
        report.findings.append(CheckFinding("does_not_open", f"python-docx cannot open it: {exc}"))
        return report
    for finding in audit(data, "document.docx").refusals:
        report.findings.append(CheckFinding("forbidden_construct", f"{finding.code} at {finding.location}: "
                                            f"{finding.message}"))
    try:
        pkg = Package.read(data)
        allowed_fields, allowed_links = _template_allowances(template)
        _check_fields(pkg, allowed_fields, report)
        _check_external(pkg, allowed_links, report)
        report.zones_found = _zone_controls(pkg)
        _check_placeholders(pkg, report)
    except PackageError as exc:
        report.findings.append(CheckFinding("does_not_open", str(exc)))
        return report
    for zone in zone_map.get("zones") or []:
        if zone["id"] not in report.zones_found:
            report.findings.append(CheckFinding("zone_missing", f"zone {zone['id']!r} has no astra content control"))
    return report


def _xml_parts(pkg: Package) -> list[str]:
    return [m for m in pkg.members if m.lower().endswith(".xml")]


def _field_codes(pkg: Package) -> Counter:
    codes: Counter = Counter()
    for name in _xml_parts(pkg):
        for instruction in field_instructions(pkg.xml(name)):
            codes[(instruction.name, " ".join(instruction.code.split()))] += 1
    return codes


def _external_links(pkg: Package) -> Counter:
    links: Counter = Counter()
    for name in pkg.members:
        source = rels_source(name)
        if source is None:
            continue
        for rel in pkg.relationships(source):
            if rel.external:
                links[(rel.type, rel.target)] += 1
    return links


def _template_allowances(template: bytes | None) -> tuple[Counter, Counter]:
    if template is None:
        return Counter(), Counter()
    pkg = Package.read(template)
    return _field_codes(pkg), _external_links(pkg)


def _check_fields(pkg: Package, allowed: Counter, report: CheckReport) -> None:
    extra = _field_codes(pkg) - allowed
    for (name, code), count in sorted(extra.items()):
        if name not in ALLOWED_FIELDS:
            report.findings.append(CheckFinding("field_not_allowed", f"{name or 'unnamed'} field {code[:100]!r} "
                                                f"({count}x) is not PAGE, NUMPAGES or DATE"))


def _check_external(pkg: Package, allowed: Counter, report: CheckReport) -> None:
    extra = _external_links(pkg) - allowed
    for (rel_type, target), _count in sorted(extra.items()):
        report.findings.append(CheckFinding("external_relationship",
                                            f"external {rel_type.rsplit('/', 1)[-1]} relationship to {target!r}"))


def _zone_controls(pkg: Package) -> list[str]:
    """Zone ids of the ``astra:`` content controls in the story parts, in document order; a text box's
    ``mc:Fallback`` copy of a zone is not counted again (the zone grammar skips it too)."""
    found = []
    for part in story_parts(pkg):
        for sdt in pkg.xml(part).iter(W.sdt):
            if not _is_zone(sdt) or any(a.tag == MC.Fallback for a in sdt.iterancestors()):
                continue
            tag = wval(sdt.find(f"{W.sdtPr}/{W.tag}"))
            try:
                found.append(parse_tag(tag)[0])
            except TemplateRefused:
                continue
    return found


_PLACEHOLDER = re.compile(r"\{\{\s*(" + ZONE_ID_RE.pattern + r")\s*\}\}")
# Parts holding text besides the stories: Word shows them, and a placeholder there is as stray.
_NOTE_PARTS = ("footnotes", "endnotes", "comments")


def _check_placeholders(pkg: Package, report: CheckReport) -> None:
    main = pkg.main_document()
    parts = story_parts(pkg) + [name for kind in _NOTE_PARTS for name in pkg.related(main, kind)]
    for part in dict.fromkeys(parts):
        for zone_id, count in sorted(Counter(_stray_placeholders(pkg.xml(part))).items()):
            report.findings.append(CheckFinding("placeholder_left", f"{{{{ {zone_id} }}}} ({count}x) is left as "
                                                f"text outside the zones in {part}"))


def _stray_placeholders(root: etree._Element) -> list[str]:
    """Zone ids of the ``{{ zone_id }}`` texts in the paragraphs under ``root`` (across their runs, each
    paragraph's own text), the content of ``astra:`` controls left out."""
    found: list[str] = []

    def walk(el: etree._Element, texts: list[str] | None) -> None:
        for child in el:
            tag = child.tag
            if not isinstance(tag, str):
                continue
            if tag == W.t:
                if texts is not None:
                    texts.append(child.text or "")
            elif tag == W.p:
                own: list[str] = []
                walk(child, own)
                found.extend(_PLACEHOLDER.findall("".join(own)))
            elif tag == W.sdt and _is_zone(child):
                if texts is not None:
                    texts.append("\n")  # text before and after a zone is not one placeholder
            else:
                walk(child, texts)

    walk(root, None)
    return found


def _is_zone(sdt: etree._Element) -> bool:
    tag = wval(sdt.find(f"{W.sdtPr}/{W.tag}"))
    return tag is not None and tag.strip().lower().startswith(TAG_PREFIX)


# --------------------------------------------------------------------------- LibreOffice


class ConversionError(RuntimeError):
    """LibreOffice is missing, or could not convert the document."""


class ConversionTimeout(ConversionError):
    """LibreOffice did not finish converting within the timeout (the same document would time out again)."""


@dataclass(frozen=True)
class PdfCopy:
    docx: bytes  # what LibreOffice is given
    rows_left_out: int  # table rows of the zones beyond PDF_MAX_ZONE_ROWS
    blocks_left_out: int  # zone paragraphs and tables beyond PDF_MAX_ZONE_BLOCKS


def pdf_check_copy(data: bytes, *, max_rows: int = PDF_MAX_ZONE_ROWS,
                   max_blocks: int = PDF_MAX_ZONE_BLOCKS) -> PdfCopy:
    """The document with each ``astra:`` zone cut for the LibreOffice check (see the module docstring); the
    document itself when nothing is over the caps. Raises ConversionError when the package cannot be read."""
    try:
        pkg = Package.read(data)
        changed: dict[str, bytes] = {}
        rows_out = blocks_out = 0
        for part in story_parts(pkg):
            root = pkg.xml(part)
            part_rows = part_blocks = 0
            for content in _zone_contents(root):
                rows, blocks = _cut_zone(content, max_rows, max_blocks)
                part_rows, part_blocks = part_rows + rows, part_blocks + blocks
            if part_rows or part_blocks:
                changed[part] = etree.tostring(root, encoding="UTF-8", xml_declaration=True, standalone=True)
                rows_out, blocks_out = rows_out + part_rows, blocks_out + part_blocks
        if not changed:
            return PdfCopy(data, 0, 0)
        members = [(name, changed[name] if name in changed else pkg.precompressed(name)) for name in pkg.members]
        return PdfCopy(write_package(members), rows_out, blocks_out)
    except PackageError as exc:
        raise ConversionError(f"the copy for LibreOffice cannot be made: {exc}") from None


def _zone_contents(root: etree._Element) -> list[etree._Element]:
    """The ``w:sdtContent`` of every outermost ``astra:`` content control under ``root``."""
    found: list[etree._Element] = []
    for sdt in root.iter(W.sdt):
        if not _is_zone(sdt):
            continue
        content = sdt.find(W.sdtContent)
        if content is not None and not any(ancestor in found for ancestor in sdt.iterancestors(W.sdtContent)):
            found.append(content)
    return found


def _cut_zone(content: etree._Element, max_rows: int, max_blocks: int) -> tuple[int, int]:
    """Cut one zone's content in place: rows over ``max_rows`` (a table keeps its first row), then blocks over
    ``max_blocks`` (the last one stays). Returns (rows, blocks) removed."""
    rows_removed = 0
    budget = max_rows
    for table in list(content.iter(W.tbl)):
        rows = table.findall(W.tr)
        keep = max(budget, 1)
        for row in rows[keep:]:
            table.remove(row)
        rows_removed += max(len(rows) - keep, 0)
        budget = max(budget - min(len(rows), keep), 0)
    blocks = [child for child in content if isinstance(child.tag, str)]
    doomed = blocks[max_blocks - 1:-1] if len(blocks) > max_blocks else []
    for block in doomed:
        content.remove(block)
    return rows_removed, len(doomed)


def soffice_path() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def convert_to_pdf(data: bytes, *, timeout: float = 180.0) -> bytes:
    """The document converted to PDF by LibreOffice headless (a private profile per call, so
    concurrent conversions do not fight over one)."""
    binary = soffice_path()
    if binary is None:
        raise ConversionError("LibreOffice (soffice) is not installed: apt-get install libreoffice-writer-nogui")
    with tempfile.TemporaryDirectory(prefix="astra-pdf-") as tmp:
        work = Path(tmp)
        source = work / "document.docx"
        source.write_bytes(data)
        command = [binary, f"-env:UserInstallation={(work / 'profile').as_uri()}", "--headless", "--norestore",
                   "--convert-to", "pdf", "--outdir", str(work), str(source)]
        # Its own session: soffice hands the work to child processes, and a timeout must end them all.
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                   env={**os.environ, "HOME": str(work)})
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise ConversionTimeout(f"LibreOffice did not finish the conversion within {timeout:g} s (stopped): the "
                                    "document is not shown to convert, and would time out again") from None
        pdf = work / "document.pdf"
        if process.returncode != 0 or not pdf.exists() or not pdf.read_bytes().startswith(b"%PDF"):
            detail = (stderr or stdout).decode("utf-8", "replace").strip().splitlines()
            raise ConversionError(f"LibreOffice could not convert the document: {detail[-1] if detail else 'no PDF'}")
        return pdf.read_bytes()
