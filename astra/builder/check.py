"""Checks on a built document: what the Dagster asset checks run on ``document_binary``.

:func:`check_document` — the document opens with python-docx; it holds no forbidden construct
(the INGEST audit's refusals: macros, OLE/ActiveX, altChunk, hostile fields, external
relationships other than hyperlinks, DTDs; and beyond it: fields other than PAGE, NUMPAGES and
DATE, and any external relationship, hyperlinks included); every zone of the zone map is
present as an ``astra:`` content control, once (``mc:Fallback`` copies aside), and none inside a
field (Word replaces a field's result whenever it updates the field); every content control stands where
ECMA-376 lets one stand (:data:`astra.ingest.zones.CONTROL_PARENTS`, the one list INGEST refuses templates
by too, read through ``mc:AlternateContent``); no ``{{ zone_id }}``
placeholder text is left outside the zones, in any story, note or comment part, ``mc:Fallback``
branches included (a placeholder is a zone BUILDER did not fill; inside a zone it is the user's own
text). Only a control tagged with a zone id of the zone map is a zone: any other ``astra:`` control
is ordinary content, and hides nothing. Placeholder texts are found by
:func:`astra.ingest.zones.placeholder_texts`, the function INGEST refuses templates with, so a
template INGEST accepts never fails this check for a placeholder BUILDER does not replace.

A docxtpl template's zone map (``"language": "jinja"``, issue 11): only its marked zones (``"marked": true``) are
``astra:`` content controls of the output, so only they must be present, each once and none inside a field; the
other checks are the same. DECISION: no placeholder text is looked for. Rendering a docxtpl template replaces every
tag of it, so a ``{{ name }}`` in its output is text of the session's data (an utterance that says it), not a zone
left unfilled.

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
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from astra.ingest.audit import audit
from astra.ingest.zones import CONTROL_PARENTS, control_place, field_depths, placeholder_texts, zone_control_id
from astra.ooxml.errors import PackageError
from astra.ooxml.fields import field_instructions
from astra.ooxml.ns import MC, W, qname
from astra.ooxml.package import Package, write_package
from astra.ooxml.partname import rels_source
from astra.ooxml.wordml import element_path, story_parts

# The blocking checks of a built document (document_binary, v2_clone_binary), which the audit requires passed.
OPENS, NO_FORBIDDEN, ZONES_PRESENT = "document_opens", "no_forbidden_construct", "every_zone_present"
BLOCKING_CHECKS = (OPENS, NO_FORBIDDEN, ZONES_PRESENT)

ALLOWED_FIELDS = frozenset({"PAGE", "NUMPAGES", "DATE"})
PDF_MAX_ZONE_ROWS = 300  # table rows per zone in the copy LibreOffice converts (a few seconds of layout)
PDF_MAX_ZONE_BLOCKS = 1_000  # paragraphs and tables per zone in that copy


@dataclass(frozen=True)
class CheckFinding:
    code: str  # does_not_open, forbidden_construct, field_not_allowed, external_relationship, zone_missing,
    # duplicate_zone, zone_in_field, misplaced_control, placeholder_left
    detail: str

    def to_json(self) -> dict:
        return {"code": self.code, "detail": self.detail}


@dataclass
class CheckReport:
    findings: list[CheckFinding] = field(default_factory=list)
    zones_found: list[str] = field(default_factory=list)  # the ids of the astra: controls, in document order

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
        zones = controlled_zones(zone_map)
        zone_ids = {zone["id"] for zone in zones}
        controls = _zone_controls(pkg)
        report.zones_found = [zone_id for zone_id, _, _ in controls]
        _check_zone_controls(pkg, controls, zone_ids, report)
        _check_control_places(pkg, report)
        if zone_map.get("language") != "jinja":
            _check_placeholders(pkg, zone_ids, report)
    except PackageError as exc:
        report.findings.append(CheckFinding("does_not_open", str(exc)))
        return report
    for zone in zones:
        if zone["id"] not in report.zones_found:
            report.findings.append(CheckFinding("zone_missing", f"zone {zone['id']!r} has no astra content control"))
    return report


def controlled_zones(zone_map: dict) -> list[dict]:
    """The zones of ``zone_map`` a built document holds as ``astra:`` content controls: every zone, but of a docxtpl
    template's zone map only the marked ones (the others are names its tags read, with no place of their own)."""
    zones = zone_map.get("zones") or []
    if zone_map.get("language") == "jinja":
        return [zone for zone in zones if zone.get("marked") is True]
    return list(zones)


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


def _zone_controls(pkg: Package) -> list[tuple[str, str, etree._Element]]:
    """(zone id, part, control) of the ``astra:`` content controls in the story parts, in document order; a
    text box's ``mc:Fallback`` copy of a zone is not counted again (the zone grammar skips it too)."""
    found = []
    for part in story_parts(pkg):
        for sdt in pkg.xml(part).iter(W.sdt):
            zone_id = zone_control_id(sdt)
            if zone_id is not None and not any(a.tag == MC.Fallback for a in sdt.iterancestors()):
                found.append((zone_id, part, sdt))
    return found


def _check_zone_controls(pkg: Package, controls: list, zone_ids: set[str], report: CheckReport) -> None:
    """A zone of the zone map held by two controls (LEARN could not tell which is the zone), or inside a field
    (complex, or simple) whose result Word replaces on update, taking the zone's content and control with it."""
    zones = [(zone_id, part, sdt) for zone_id, part, sdt in controls if zone_id in zone_ids]
    for zone_id, count in sorted(Counter(zone_id for zone_id, _, _ in zones).items()):
        if count > 1:
            report.findings.append(CheckFinding("duplicate_zone", f"zone {zone_id!r} has {count} astra content "
                                                "controls; one zone is one control"))

    def is_zone(sdt: etree._Element) -> bool:
        return zone_control_id(sdt) in zone_ids

    for part in dict.fromkeys(part for _, part, _ in zones):
        here = [(zone_id, sdt) for zone_id, zone_part, sdt in zones if zone_part == part]
        depths = field_depths(pkg.xml(part), [sdt for _, sdt in here], is_zone)
        for zone_id, sdt in here:
            if depths[sdt] or any(a.tag == W.fldSimple for a in sdt.iterancestors()):
                report.findings.append(CheckFinding("zone_in_field", f"zone {zone_id!r} is inside a field in {part}: "
                                                    "Word replaces a field's result when it updates the field"))


def _check_control_places(pkg: Package, report: CheckReport) -> None:
    """A content control (a zone's or any other) where none may stand: invalid markup, which Word refuses to open or
    "repairs", maybe dropping the control and the zone with it."""
    for part in story_parts(pkg):
        root = pkg.xml(part)
        for sdt in root.iter(W.sdt):
            place = control_place(sdt)
            if place.tag not in CONTROL_PARENTS:
                zone_id = zone_control_id(sdt)
                what = f"the content control of zone {zone_id!r}" if zone_id else "a content control"
                report.findings.append(CheckFinding("misplaced_control", f"{what} stands in {qname(place.tag)} in "
                                                    f"{part} ({element_path(sdt, root)}), where no content control "
                                                    "may stand"))


def _check_placeholders(pkg: Package, zone_ids: set[str], report: CheckReport) -> None:
    found = Counter((text.part, text.zone_id) for text in placeholder_texts(pkg, zone_ids))
    parts = list(dict.fromkeys(part for part, _ in found))  # in the order the parts were read
    for (part, zone_id), count in sorted(found.items(), key=lambda item: (parts.index(item[0][0]), item[0][1])):
        report.findings.append(CheckFinding("placeholder_left", f"{{{{ {zone_id} }}}} ({count}x) is left as "
                                            f"text outside the zones in {part}"))


def _astra_control(sdt: etree._Element) -> bool:
    return zone_control_id(sdt) is not None


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
        if not _astra_control(sdt):
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
