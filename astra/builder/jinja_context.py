"""The Jinja context of a docxtpl template's build: what each zone's name holds when the template renders.

:func:`jinja_context` turns the intent output (CORE's utterances and bound tables, per zone) into one value per
zone of a ``"language": "jinja"`` zone map (issue 11):

* ``text``: the zone's utterance texts joined by ``"\\n"`` (``""`` when none); a line break in the document.
* ``list``: one :class:`DataRecord` per utterance, with ``text``, ``speaker``, ``start``, ``end`` and ``intent``,
  shown as its text (``{{ item }}`` writes the utterance, ``{{ item.speaker }}`` its speaker).
* ``table``: the rows of the zone's bound tables, each a :class:`DataRecord` of header -> cell text (written as
  :class:`astra.builder.cells.CellFormat` writes a table cell). Each of the zone's ``fields`` (the names the template
  reads on its loop variable) is a key too: the header of that name, else the header equal to it case-insensitively
  with every character other than a letter or digit read as ``_`` (``unit_price`` reads ``Unit Price``).
* ``record``: the first row of the zone's first bound table, as a table zone's row (an empty record when none).
* ``flag``: whether any utterance raised the zone (the intent output's ``raised_by``; the utterance itself is shown
  in the zone it is bound to).

A name a record does not hold is undefined, which the template shows as ``""`` (a column the session's table lacks
shows empty, as docxtpl shows an undefined name). Texts are cleaned (:func:`astra.builder.sanitize.clean_text`) and
cut as BUILDER cuts zones: a text or list zone at ``max_zone_chars`` characters, a cell at ``max_cell_chars`` (with
an ellipsis); the cuts are counted in the zone's fill (``truncated_chars``, ``cells_truncated``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from .cells import CellFormat
from .sanitize import clean_text, truncate

ELLIPSIS = "\u2026"


class ContextError(ValueError):
    """The intent output does not fit the zone map (a zone lists an utterance or table it does not hold)."""


class DataRecord(Mapping):
    """A read-only mapping of names to values (a list item, a table row), written as ``shown`` when a tag outputs it
    whole. The template reads it by key, ``r.desc`` as ``r["desc"]`` (the sandbox reads data by key only, so a
    column named ``items`` is that column, not a method)."""

    __slots__ = ("_values", "_shown")

    def __init__(self, values: Mapping[str, object], shown: str) -> None:
        self._values = dict(values)
        self._shown = shown

    def __getitem__(self, name: str) -> object:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __str__(self) -> str:
        return self._shown

    def __repr__(self) -> str:
        return f"DataRecord({self._values!r}, {self._shown!r})"


@dataclass
class JinjaContext:
    values: dict[str, object]  # zone id -> what its name holds when the template renders
    fills: dict[str, dict] = field(default_factory=dict)  # zone id -> {"kind", "items", ...} as BuildResult.fills


def jinja_context(zones: Sequence[Mapping], intent_output: Mapping, cells: CellFormat, *, max_zone_chars: int,
                  max_cell_chars: int) -> JinjaContext:
    """The context of ``zones`` (the zone map's: ``id``, ``kind``, ``fields``) from ``intent_output`` (see the
    module docstring). Raises :class:`ContextError` when a zone entry names an utterance or a table the intent output
    does not hold."""
    utterances = {u["id"]: u for u in intent_output.get("utterances") or []}
    tables = {t["id"]: t for t in intent_output.get("tables") or []}
    entries = {e["id"]: e for e in intent_output.get("zones") or []}
    context = JinjaContext({})
    for zone in zones:
        zone_id, kind = zone["id"], zone["kind"]
        entry = entries.get(zone_id) or {}
        said = [_look_up(utterances, uid, zone_id, "utterance") for uid in entry.get("utterances") or []]
        bound = [_look_up(tables, tid, zone_id, "table") for tid in entry.get("tables") or []]
        fill: dict = {"kind": kind, "items": 0}
        if kind == "text":
            texts = _capped(said, max_zone_chars, fill)
            value: object = "\n".join(texts)
        elif kind == "list":
            value = [_item(u, text) for u, text in zip(said, _capped(said, max_zone_chars, fill), strict=False)]
        elif kind in ("table", "record"):
            fields = tuple(zone.get("fields") or ())
            rows: list[DataRecord] = []
            cut = 0
            for table in bound:
                for row, over in _rows(table, fields, cells, max_cell_chars):
                    rows.append(row)
                    cut += over
                    if kind == "record":
                        break
                if kind == "record" and rows:
                    break
            if kind == "table":
                value = rows
                fill.update(items=len(bound), rows=len(rows))
            else:
                value = rows[0] if rows else DataRecord({}, "")
                fill["items"] = len(rows)
            if cut:
                fill["cells_truncated"] = cut
        elif kind == "flag":
            raised = [_look_up(utterances, uid, zone_id, "utterance") for uid in entry.get("raised_by") or []]
            value = bool(raised)
            fill["items"] = len(raised)
        else:
            raise ContextError(f"zone {zone_id!r} has kind {kind!r}, which a docxtpl template does not give")
        context.values[zone_id] = value
        context.fills[zone_id] = fill
    return context


def _look_up(known: dict[str, dict], key: str, zone_id: str, what: str) -> dict:
    if key not in known:
        raise ContextError(f"zone {zone_id!r} lists {what} {key!r}, which the intent output does not hold")
    return known[key]


def _capped(said: list[dict], limit: int, fill: dict) -> list[str]:
    """The clean texts of ``said`` in order, cut at ``limit`` characters in all (the zone's cap); the count written
    and the characters cut go into ``fill``."""
    budget, cut, texts = limit, 0, []
    for utterance in said:
        text = clean_text(str(utterance.get("text") or ""))
        if cut or not budget and text:
            cut += len(text)
            continue
        text, over = truncate(text, budget)
        budget -= len(text)
        cut += over
        texts.append(text)
    fill["items"] = len(texts)
    if cut:
        fill["truncated_chars"] = cut
    return texts


def _item(utterance: dict, text: str) -> DataRecord:
    values = {"text": text, "speaker": clean_text(str(utterance.get("speaker") or "")),
              "start": utterance.get("start"), "end": utterance.get("end"),
              "intent": clean_text(str(utterance.get("intent") or ""))}
    return DataRecord(values, text)


def field_key(name: str) -> str:
    """``name`` as a header and a field are matched when not equal: case folded, every character other than a
    letter or digit read as ``_``."""
    return "".join(c if c.isalnum() else "_" for c in name.casefold())


def header_for_fields(header: Sequence[str], fields: Sequence[str]) -> dict[str, str]:
    """field -> the header it reads, for each field some header answers (an equal header first)."""
    matched = {}
    by_key: dict[str, str] = {}
    for name in header:
        by_key.setdefault(field_key(name), name)
    for name in fields:
        if name in header:
            matched[name] = name
        elif field_key(name) in by_key:
            matched[name] = by_key[field_key(name)]
    return matched


def _rows(table: dict, fields: tuple[str, ...], cells: CellFormat, max_cell_chars: int,
          ) -> Iterator[tuple[DataRecord, int]]:
    """(row, cells cut) for each row of ``table``: header -> cell text, and each field it answers."""
    columns = table.get("columns") or [{"name": h, "type": "text"} for h in table.get("header") or []]
    header = [clean_text(str(c.get("name") or "")) for c in columns]
    types = [c.get("type") or "text" for c in columns]
    by_field = header_for_fields(header, fields)
    for raw in table.get("rows") or []:
        values: dict[str, object] = {}
        texts, cut = [], 0
        for name, column_type, value in zip(header, types, raw, strict=False):
            text, over = truncate(clean_text(cells.text(column_type, value)), max_cell_chars)
            if over:
                text, cut = text + ELLIPSIS, cut + 1
            values.setdefault(name, text)
            texts.append(text)
        for name, column in by_field.items():
            values.setdefault(name, values.get(column, ""))
        yield DataRecord(values, ", ".join(texts)), cut
