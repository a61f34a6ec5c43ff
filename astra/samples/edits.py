"""A user's edits of a generated .docx, made the way a Word user's save looks to a reader (the same package, its XML
rewritten, through python-docx): paragraphs found by text moved between zones' content controls, retyped, deleted or
added; formatting changed; controls removed. The demo, the learning-loop bench and the LEARN tests edit documents
with it."""

from __future__ import annotations

import copy
import io

import docx
from docx.oxml.ns import qn


class DocumentEdit:
    """A user's edit of a .docx, through python-docx: find paragraphs by text, move them between zones' content
    controls, change their text or formatting, add or delete paragraphs, remove controls."""

    def __init__(self, data: bytes) -> None:
        self.doc = docx.Document(io.BytesIO(data))

    def save(self) -> bytes:
        out = io.BytesIO()
        self.doc.save(out)
        return out.getvalue()

    def control(self, zone_id: str):
        """The w:sdt of a zone (main document, headers)."""
        for root in self._roots():
            for sdt in root.iter(qn("w:sdt")):
                tag = sdt.find(f"{qn('w:sdtPr')}/{qn('w:tag')}")
                if tag is not None and tag.get(qn("w:val")).split(";")[0] == f"astra:{zone_id}":
                    return sdt
        raise KeyError(zone_id)

    def content(self, zone_id: str):
        return self.control(zone_id).find(qn("w:sdtContent"))

    def paragraph(self, text: str):
        """The w:p whose text contains ``text``."""
        for root in self._roots():
            for p in root.iter(qn("w:p")):
                if text in "".join(t.text or "" for t in p.iter(qn("w:t"))):
                    return p
        raise KeyError(text)

    def move(self, text: str, zone_id: str) -> None:
        """Cut the paragraph holding ``text`` and paste it at the end of the zone."""
        p = self.paragraph(text)
        p.getparent().remove(p)
        self.content(zone_id).append(p)

    def set_text(self, text: str, new_text: str) -> None:
        """Replace ``text`` in its paragraph's runs (the lead run, if any, stays)."""
        p = self.paragraph(text)
        for t in p.iter(qn("w:t")):
            if t.text and text in t.text:
                t.text = t.text.replace(text, new_text)
                return
        raise KeyError(text)

    def delete(self, text: str) -> None:
        p = self.paragraph(text)
        p.getparent().remove(p)

    def add(self, zone_id: str, text: str) -> None:
        """A new paragraph at the end of the zone, styled like its first paragraph if it has one."""
        content = self.content(zone_id)
        first = content.find(qn("w:p"))
        p = copy.deepcopy(first) if first is not None else content.makeelement(qn("w:p"), {})
        for child in list(p):
            if child.tag != qn("w:pPr"):
                p.remove(child)
        run = p.makeelement(qn("w:r"), {})
        t = run.makeelement(qn("w:t"), {})
        t.text = text
        run.append(t)
        p.append(run)
        content.append(p)

    def bold(self, text: str) -> None:
        """Make every run of the paragraph holding ``text`` bold."""
        for run in self.paragraph(text).iter(qn("w:r")):
            rpr = run.find(qn("w:rPr"))
            if rpr is None:
                rpr = run.makeelement(qn("w:rPr"), {})
                run.insert(0, rpr)
            if rpr.find(qn("w:b")) is None:
                rpr.insert(0, rpr.makeelement(qn("w:b"), {}))

    def unwrap(self, zone_id: str) -> None:
        """Word's "Remove content control": the content stays, the control goes."""
        sdt = self.control(zone_id)
        for child in list(sdt.find(qn("w:sdtContent"))):
            sdt.addprevious(child)
        sdt.getparent().remove(sdt)

    def remove_control(self, zone_id: str) -> None:
        """The control deleted with its content."""
        sdt = self.control(zone_id)
        sdt.getparent().remove(sdt)

    def retag(self, zone_id: str, tag: str) -> None:
        self.control(zone_id).find(f"{qn('w:sdtPr')}/{qn('w:tag')}").set(qn("w:val"), tag)

    def copy_control(self, zone_id: str) -> None:
        sdt = self.control(zone_id)
        sdt.addnext(copy.deepcopy(sdt))

    def set_cell(self, row: int, column: int, text: str, zone_id: str = "measurements") -> None:
        table = self.content(zone_id).find(qn("w:tbl"))
        cell = table.findall(qn("w:tr"))[row].findall(qn("w:tc"))[column]
        ts = list(cell.iter(qn("w:t")))
        ts[0].text = text
        for t in ts[1:]:
            t.text = ""

    def outside(self, old: str, new: str) -> None:
        """Change text outside the zones (a heading, the intro)."""
        self.set_text(old, new)

    def _roots(self):
        yield self.doc.element.body
        for section in self.doc.sections:
            yield section.header._element
