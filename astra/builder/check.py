"""Checks on a built document: what the Dagster asset checks run on ``document_binary``.

:func:`check_document` — the document opens with python-docx; it holds no forbidden construct
(the INGEST audit's refusals: macros, OLE/ActiveX, altChunk, hostile fields, external
relationships other than hyperlinks, DTDs; and beyond it: fields other than PAGE, NUMPAGES and
DATE, and any external relationship, hyperlinks included); every zone of the zone map is
present as an ``astra:`` content control.

DECISION: with the ``template`` given, the fields and external hyperlinks the template itself
carries are allowed (each as many times as the template has it): they sit outside the zones,
BUILDER copies them byte for byte and the template passed the audit on upload. BUILDER never
writes either, so one more than the template has is a fault.

:func:`convert_to_pdf` — LibreOffice headless converts the document to PDF (Debian's
``libreoffice-writer-nogui``; ``scripts/system-deps.sh`` installs it). A separate function
because it takes seconds and a binary the engine does not otherwise need.
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

from astra.ingest.audit import audit
from astra.ingest.zones import TAG_PREFIX, TemplateRefused, parse_tag
from astra.ooxml.errors import PackageError
from astra.ooxml.fields import field_instructions
from astra.ooxml.ns import W
from astra.ooxml.package import Package
from astra.ooxml.partname import rels_source
from astra.ooxml.wordml import story_parts, wval

ALLOWED_FIELDS = frozenset({"PAGE", "NUMPAGES", "DATE"})


@dataclass(frozen=True)
class CheckFinding:
    code: str  # does_not_open, forbidden_construct, field_not_allowed, external_relationship, zone_missing
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
    """Zone ids of the ``astra:`` content controls in the story parts, in document order."""
    found = []
    for part in story_parts(pkg):
        for sdt in pkg.xml(part).iter(W.sdt):
            tag = wval(sdt.find(f"{W.sdtPr}/{W.tag}"))
            if tag is None or not tag.strip().lower().startswith(TAG_PREFIX):
                continue
            try:
                found.append(parse_tag(tag)[0])
            except TemplateRefused:
                continue
    return found


# --------------------------------------------------------------------------- LibreOffice


class ConversionError(RuntimeError):
    """LibreOffice is missing, or could not convert the document."""


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
            raise ConversionError(f"LibreOffice did not finish within {timeout:g} s") from None
        pdf = work / "document.pdf"
        if process.returncode != 0 or not pdf.exists() or not pdf.read_bytes().startswith(b"%PDF"):
            detail = (stderr or stdout).decode("utf-8", "replace").strip().splitlines()
            raise ConversionError(f"LibreOffice could not convert the document: {detail[-1] if detail else 'no PDF'}")
        return pdf.read_bytes()
