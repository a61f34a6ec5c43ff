"""A session's structured data (``data/*.csv|json|xlsx``) read into typed tables.

:func:`read_tables` takes every file of the session's ``data/`` folder as ``(path, bytes)`` — the path relative to
the version folder, e.g. ``data/readings.csv`` — and returns the tables it could read and one :class:`DataProblem`
per file (or sheet) it refused. A file is never a crash and never silently dropped: a refusal says which file and why
(``reason`` is a stable code, ``detail`` one human line).

Formats:

* **CSV** (``.csv``, ``.tsv``): encoding utf-8 (with or without BOM), utf-16 with a BOM, else latin-1; delimiter
  sniffed among ``, ; tab |`` in the first lines; parsed by pandas (python engine: a short row comes back as missing
  fields, a long one as an error, so a ragged file is refused rather than padded). Blank lines are skipped. A record
  over the column cap, or rows over the row cap, are refused by a csv-module pass before pandas builds any field.
* **JSON** (``.json``): a list of objects (columns in order of first appearance; a missing key is null) or
  ``{"columns": [...], "rows": [[...], ...]}``. Cells must be scalars; NaN/Infinity are refused.
* **XLSX** (``.xlsx``): every non-empty worksheet becomes its own table (``sheet`` names it), so no sheet is dropped.
  Macro-enabled content (``.xlsm``, a VBA project, a macro-enabled content type) and legacy/encrypted OLE files are
  refused. Before openpyxl sees the bytes, the zip's declared sizes are checked against a cap, every member (whatever
  its name: relationship targets decide what openpyxl parses) is inflated with its declared size as the cap (a member
  that inflates beyond what it declares is a bomb), a DTD is refused and so is an XML part in any encoding but UTF-8
  (UTF-16/32, EBCDIC or declared; Excel writes none); openpyxl then reads values only (``data_only``: cached
  results, no formula evaluated) in read-only mode.

The first non-empty row is the header. Column types are inferred over the whole column: ``boolean``, ``integer``,
``decimal``, ``date``, ``datetime`` or ``text`` (the first that every non-empty cell fits, in that order). Dates are
ISO 8601 or one common format for the whole column (``format`` names it; day-first is tried before month-first, so
``01/02/2026`` is 1 February unless another cell of the column only fits month-first). A date cell is
``{"value": ISO, "text": original}``; other cells are plain JSON values; an empty cell is null.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from astra.ooxml.errors import PackageError
from astra.ooxml.zip import OLE_MAGIC, MemberTooLarge, inflate, read_zip

CSV_SUFFIXES = (".csv", ".tsv")
MACRO_SUFFIXES = (".xlsm", ".xltm", ".xlsb", ".xlam")
TYPES = ("boolean", "integer", "decimal", "date", "datetime", "text")
_DELIMITERS = ",;\t|"
_SNIFF_CHARS = 4_096
_TRUE, _FALSE = {"true", "yes"}, {"false", "no"}
_INTEGER = re.compile(r"[+-]?(0|[1-9][0-9]*)")  # a leading zero (an id, a postcode) stays text
_DECIMAL = re.compile(r"[+-]?((0|[1-9][0-9]*)(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ISO_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}.{0,26}")
_DATE_FORMATS = ("%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%d %b %Y", "%d %B %Y", "%b %d, %Y",
                 "%B %d, %Y")
_DATETIME_FORMATS = tuple(f"{d} {t}" for d in _DATE_FORMATS[:5] for t in ("%H:%M", "%H:%M:%S"))
_MAX_DATE_CHARS = 40
_MACRO_CONTENT_TYPE = b"macroenabled"
_DTD_MARKUP = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")  # UTF-16 LE/BE (and UTF-32 LE), UTF-32 BE
_EBCDIC_XML = b"\x4c\x6f\xa7\x94"  # '<?xm' in EBCDIC, which libxml2 detects
_XML_ENCODING = re.compile(rb"(?:\xef\xbb\xbf)?<\?xml\s[^>]*?\bencoding\s*=\s*[\"']([^\"']*)[\"']")
_UTF8_NAMES = {b"utf-8", b"utf8", b"us-ascii", b"ascii"}


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 5_000_000  # per file, as stored
    max_rows: int = 10_000  # data rows per table, header excluded
    max_columns: int = 200
    max_cell_chars: int = 2_000
    max_inflated_bytes: int = 30_000_000  # an XLSX's members together, as declared and as inflated
    max_zip_members: int = 1_000


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # one of TYPES
    format: str | None = None  # dates: "iso" or the strptime pattern the whole column fits

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "format": self.format}


@dataclass(frozen=True)
class Table:
    source: str  # path relative to the version folder, e.g. data/readings.csv
    sheet: str | None
    columns: tuple[Column, ...]
    rows: tuple[tuple, ...]  # JSON-able cells, one per column

    @property
    def id(self) -> str:
        return self.source if self.sheet is None else f"{self.source}#{self.sheet}"

    def to_json(self) -> dict:
        return {"id": self.id, "source": self.source, "sheet": self.sheet, "header": [c.name for c in self.columns],
                "columns": [c.to_json() for c in self.columns], "rows": [list(r) for r in self.rows],
                "row_count": len(self.rows)}


@dataclass(frozen=True)
class DataProblem:
    source: str
    reason: str  # stable code: too_large, not_text, malformed, ragged_row, ...
    detail: str
    sheet: str | None = None

    def to_json(self) -> dict:
        return {"source": self.source, "sheet": self.sheet, "reason": self.reason, "detail": self.detail}


@dataclass
class DataSet:
    tables: list[Table] = field(default_factory=list)
    problems: list[DataProblem] = field(default_factory=list)


class _Refused(Exception):
    def __init__(self, reason: str, detail: str, sheet: str | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.sheet = reason, detail, sheet


def read_tables(files: Iterable[tuple[str, bytes]], limits: Limits = Limits()) -> DataSet:
    """Tables and problems of a session's data files, in path order (the same files give the same result)."""
    out = DataSet()
    for source, data in sorted(files, key=lambda f: f[0]):
        tables, problems = read_file(source, data, limits)
        out.tables.extend(tables)
        out.problems.extend(problems)
    return out


def read_file(source: str, data: bytes, limits: Limits = Limits()) -> tuple[list[Table], list[DataProblem]]:
    """One file's tables (several for a workbook) and problems; every refusal becomes a DataProblem."""
    try:
        _check_size(data, limits)
        suffix = PurePosixPath(source).suffix.lower()
        if suffix in CSV_SUFFIXES:
            return [_csv_table(source, data, limits)], []
        if suffix == ".json":
            return [_json_table(source, data, limits)], []
        if suffix in MACRO_SUFFIXES:
            raise _Refused("macro_enabled", f"{suffix} workbooks may carry macros and are not read")
        if suffix == ".xlsx":
            return _xlsx_tables(source, data, limits)
        raise _Refused("unsupported_format", f"{suffix or 'no extension'}: expected .csv, .tsv, .json or .xlsx")
    except _Refused as exc:
        return [], [DataProblem(source, exc.reason, exc.detail, exc.sheet)]


def _check_size(data: bytes, limits: Limits) -> None:
    if not data:
        raise _Refused("empty", "the file is empty")
    if len(data) > limits.max_bytes:
        raise _Refused("too_large", f"{len(data)} bytes, over the {limits.max_bytes}-byte cap")


# --- CSV -------------------------------------------------------------------------------------------------------------

def _decode_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise _Refused("encoding", f"not valid utf-16: {exc.reason}") from None
    if b"\x00" in data:
        raise _Refused("not_text", "binary content (NUL bytes), not a text table")
    controls = len(data) - len(data.translate(None, bytes(set(range(32)) - {9, 10, 12, 13})))
    if controls > len(data) // 100:
        raise _Refused("not_text", f"{controls} control bytes: binary content, not a text table")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # every byte string is latin-1: the last resort for legacy exports


def _sniff_delimiter(text: str) -> str:
    # The Sniffer's doublequote regex is quadratic in a run of punctuation (16 K characters of ',"' take 2 s, a 5 MB
    # line hours), so it sees whole lines of the first 4 K characters only (or the start of one long line).
    head = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS and "\n" in head:
        head = head[:head.rindex("\n")]  # whole lines only, when there are several
    sample = "\n".join(head.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return ","


def _csv_table(source: str, data: bytes, limits: Limits) -> Table:
    # pandas and openpyxl are imported when a file is read, not with this module: the Dagster code server imports the
    # assets (and so this module) but never reads a table, and they are ~70 MB of its memory (bench/footprint.py).
    import pandas as pd

    text = _decode_text(data)
    delimiter = "\t" if source.lower().endswith(".tsv") else _sniff_delimiter(text)
    _check_csv_shape(text, delimiter, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = pd.read_csv(io.StringIO(text), sep=delimiter, header=None, dtype=object, keep_default_na=False,
                                engine="python", skip_blank_lines=True, nrows=limits.max_rows + 2, quotechar='"')
    except pd.errors.EmptyDataError:
        raise _Refused("empty", "no rows") from None
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        reason = "ragged_row" if "Expected" in str(exc) else "malformed"
        raise _Refused(reason, f"not a readable CSV: {_one_line(exc)}") from None
    rows = frame.values.tolist()
    if len(rows) > limits.max_rows + 1:
        raise _Refused("too_many_rows", f"more than {limits.max_rows} data rows")
    for n, row in enumerate(rows):
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in row):
            raise _Refused("ragged_row", f"row {n + 1} has fewer fields than the first row ({len(row)})")
    return _build_table(source, None, rows, limits)


def _check_csv_shape(text: str, delimiter: str, limits: Limits) -> None:
    """Refuse a record wider than the column cap, or more rows than the row cap, before pandas parses anything.

    pandas' python engine materialises every field of every row before a cap can be applied: a 5 MB one-row file of
    2.4 M fields took minutes and gigabytes. csv.reader (the reader under that engine, with the same dialect) yields
    one record at a time in C, so the first record over a cap stops the pass.
    """
    records = 0
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quotechar='"')
    try:
        for record in reader:
            if len(record) > limits.max_columns:
                raise _Refused("too_many_columns", f"line {reader.line_num}: {len(record)} fields, over the cap of "
                               f"{limits.max_columns} columns")
            if len(record) > 1 or (record and record[0].strip()):  # pandas skips blank lines too
                records += 1
                if records > limits.max_rows + 1:  # the header is not a data row
                    raise _Refused("too_many_rows", f"more than {limits.max_rows} data rows")
    except csv.Error as exc:
        raise _Refused("malformed", f"not a readable CSV: {_one_line(exc)}") from None


# --- JSON ------------------------------------------------------------------------------------------------------------

def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _json_table(source: str, data: bytes, limits: Limits) -> Table:
    try:
        doc = json.loads(data.decode("utf-8-sig"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise _Refused("encoding", f"JSON must be utf-8: {exc.reason}") from None
    except RecursionError:
        raise _Refused("too_deep", "nested too deep") from None
    except ValueError as exc:
        raise _Refused("malformed", f"not JSON: {_one_line(exc)}") from None
    if isinstance(doc, list):
        header, rows = _records(doc, limits)
    elif isinstance(doc, dict) and set(doc) == {"columns", "rows"}:
        header, rows = _columns_rows(doc)
    else:
        raise _Refused("not_tabular", 'expected a list of objects or {"columns": [...], "rows": [[...]]}')
    for n, row in enumerate(rows):
        for name, value in zip(header, row, strict=True):
            _check_scalar(value, n + 1, name)
    return _build_table(source, None, [header, *rows], limits)


def _records(doc: list, limits: Limits) -> tuple[list, list]:
    if not all(isinstance(item, dict) for item in doc):
        raise _Refused("not_tabular", "a JSON list must hold objects only")
    header: dict[str, None] = {}
    for item in doc:
        header.update(dict.fromkeys(item))
        if len(header) > limits.max_columns:
            raise _Refused("too_many_columns", f"more than {limits.max_columns} columns")
    return list(header), [[item.get(k) for k in header] for item in doc]


def _columns_rows(doc: dict) -> tuple[list, list]:
    header, rows = doc["columns"], doc["rows"]
    if not (isinstance(header, list) and all(isinstance(c, str) for c in header)):
        raise _Refused("not_tabular", '"columns" must be a list of strings')
    if not (isinstance(rows, list) and all(isinstance(r, list) for r in rows)):
        raise _Refused("not_tabular", '"rows" must be a list of lists')
    for n, row in enumerate(rows):
        if len(row) != len(header):
            raise _Refused("ragged_row", f"row {n + 1} has {len(row)} values for {len(header)} columns")
    return header, rows


def _check_scalar(value: object, row: int, column: str) -> None:
    if isinstance(value, (dict, list)):
        raise _Refused("nested_value", f"row {row}, column {_shown(column)}: a cell must be a scalar, not an "
                       "object/array")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Refused("malformed", f"row {row}, column {_shown(column)}: {value} is not a finite number")


# --- XLSX ------------------------------------------------------------------------------------------------------------

def _xlsx_tables(source: str, data: bytes, limits: Limits) -> tuple[list[Table], list[DataProblem]]:
    import openpyxl  # when a workbook is read (see _csv_table)

    _check_workbook_zip(data, limits)
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True, keep_links=False)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many unrelated types on hostile input
        raise _Refused("malformed", f"not a readable workbook: {_one_line(exc)}") from None
    tables, problems = [], []
    try:
        for sheet in book.worksheets:
            try:
                rows = _sheet_rows(sheet, limits)
                if rows:
                    tables.append(_build_table(source, sheet.title, rows, limits))
            except _Refused as exc:
                problems.append(DataProblem(source, exc.reason, exc.detail, sheet.title))
            except Exception as exc:  # noqa: BLE001 - a corrupt sheet stream fails inside openpyxl's parser
                problems.append(DataProblem(source, "malformed", f"unreadable sheet: {_one_line(exc)}", sheet.title))
    finally:
        book.close()
    return tables, problems


def _check_workbook_zip(data: bytes, limits: Limits) -> None:
    if data.startswith(OLE_MAGIC):
        raise _Refused("unsupported_format", "an OLE file (legacy .xls or an encrypted workbook), not .xlsx")
    try:
        listing = read_zip(data)
    except PackageError as exc:
        raise _Refused("malformed", f"not a readable .xlsx: {exc}") from None
    entries = listing.entries
    declared = sum(e.file_size for e in entries)
    if len(entries) > limits.max_zip_members or declared > limits.max_inflated_bytes:
        raise _Refused("zip_bomb", f"{len(entries)} members declaring {declared} bytes, over the caps")
    for entry in entries:
        if entry.name.lower().endswith("vbaproject.bin"):
            raise _Refused("macro_enabled", "the workbook carries a VBA project")
        _check_member(data, entry)


def _check_member(data: bytes, entry) -> None:
    """Refuse a member that inflates past its declared size, or that an XML parser could read as a DTD.

    Every member is checked, whatever its name: openpyxl follows relationship targets, so a worksheet may be called
    ``sheet1.bin``. The parsers under openpyxl (expat, libxml2) also read UTF-16/32 and take an encoding from the XML
    declaration, where ``<!DOCTYPE`` is not those bytes; Excel writes every part in UTF-8, so any other encoding is
    refused outright.
    """
    # zipfile (under openpyxl) stops at the declared size, but a member that inflates beyond it is hostile anyway.
    try:
        body = inflate(data, entry, cap=entry.file_size)
    except MemberTooLarge:
        raise _Refused("zip_bomb", f"{entry.name} inflates beyond its declared {entry.file_size} bytes") from None
    except PackageError as exc:
        raise _Refused("malformed", str(exc)) from None
    if body.startswith(_WIDE_BOMS) or b"\x00" in body[:4]:
        # UTF-16/32 (a parser knows them by a BOM or by NULs around the first '<'): without the NULs, an XML
        # document's ASCII markup reads as ASCII. A printer-settings blob is wide text too, but no XML.
        if body.replace(b"\x00", b"").lstrip(b"\xff\xfe \t\r\n").startswith(b"<"):
            raise _Refused("unsafe_xml", f"{entry.name} is UTF-16/32 XML; workbook parts are UTF-8")
    elif body.startswith(_EBCDIC_XML):
        raise _Refused("unsafe_xml", f"{entry.name} is EBCDIC XML; workbook parts are UTF-8")
    else:
        declared = _XML_ENCODING.match(body)
        if declared and declared.group(1).lower() not in _UTF8_NAMES:
            raise _Refused("unsafe_xml", f"{entry.name} declares the encoding "
                           f"{declared.group(1).decode('ascii', 'replace')!r}; workbook parts are UTF-8")
    if _DTD_MARKUP.search(body):
        raise _Refused("unsafe_xml", f"{entry.name} declares a DTD")
    if entry.name == "[Content_Types].xml" and _MACRO_CONTENT_TYPE in body.lower():
        raise _Refused("macro_enabled", "the workbook's content type is macro-enabled")


def _sheet_rows(sheet, limits: Limits) -> list[list]:
    sheet.reset_dimensions()  # a declared dimension is not trusted: rows are not padded to it
    rows: list[list] = []
    for values in sheet.iter_rows(values_only=True):
        row = list(values)
        while row and (row[-1] is None or (isinstance(row[-1], str) and not row[-1].strip())):
            row.pop()
        if not row:
            continue
        if len(row) > limits.max_columns:
            raise _Refused("too_many_columns", f"{len(row)} columns, over the cap of {limits.max_columns}")
        if len(rows) > limits.max_rows:
            raise _Refused("too_many_rows", f"more than {limits.max_rows} data rows")
        rows.append([_xlsx_cell(v) for v in row])
    return rows


def _xlsx_cell(value: object) -> object:
    if isinstance(value, dt.datetime) and value.time() == dt.time(0) and value.tzinfo is None:
        return value.date()  # Excel keeps every date as a date-time; midnight means a date
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (dt.time, dt.timedelta)):
        return str(value)
    return value


# --- Typing ----------------------------------------------------------------------------------------------------------

def _build_table(source: str, sheet: str | None, rows: list[list], limits: Limits) -> Table:
    rows = [[None if isinstance(v, str) and not v.strip() else v for v in r] for r in rows]
    width = max((len(r) for r in rows), default=0)
    if width == 0:
        raise _Refused("empty", "no header row", sheet)
    header, body = rows[0], rows[1:]
    if width > limits.max_columns:
        raise _Refused("too_many_columns", f"{width} columns, over the cap of {limits.max_columns}", sheet)
    if len(body) > limits.max_rows:
        raise _Refused("too_many_rows", f"{len(body)} data rows, over the cap of {limits.max_rows}", sheet)
    names = _column_names(header, width, sheet)
    body = [r + [None] * (width - len(r)) for r in body]
    _check_cells(body, names, limits, sheet)
    columns = [_column(name, [r[i] for r in body]) for i, name in enumerate(names)]
    cells = [[_cell(col, r[i]) for i, col in enumerate(columns)] for r in body]
    return Table(source, sheet, tuple(columns), tuple(tuple(r) for r in cells))


def _column_names(header: list, width: int, sheet: str | None) -> list[str]:
    names = [_as_text(v).strip() if v is not None else "" for v in header] + [""] * (width - len(header))
    names = [name or f"column_{i + 1}" for i, name in enumerate(names)]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise _Refused("duplicate_column", f"column {_shown(name)} appears twice in the header", sheet)
        seen.add(name)
    return names


def _check_cells(body: list[list], names: list[str], limits: Limits, sheet: str | None) -> None:
    for name in names:
        if len(name) > limits.max_cell_chars:
            raise _Refused("cell_too_long", f"a header name is over {limits.max_cell_chars} characters", sheet)
    for n, row in enumerate(body):
        for name, value in zip(names, row, strict=True):
            if isinstance(value, str) and len(value) > limits.max_cell_chars:
                raise _Refused("cell_too_long", f"row {n + 1}, column {_shown(name)}: {len(value)} characters, over "
                               f"the cap of {limits.max_cell_chars}", sheet)


def _column(name: str, values: list) -> Column:
    present = [v for v in values if v is not None]
    if not present:
        return Column(name, "text")
    if all(_is_boolean(v) for v in present):
        return Column(name, "boolean")
    if all(_is_integer(v) for v in present):
        return Column(name, "integer")
    if all(_is_decimal(v) for v in present):
        return Column(name, "decimal")
    for kind, formats in (("date", ("iso", *_DATE_FORMATS)), ("datetime", ("iso", *_DATETIME_FORMATS))):
        for fmt in formats:
            if all(_parse_date(v, kind, fmt) is not None for v in present):
                return Column(name, kind, fmt)
    return Column(name, "text")


def _is_boolean(v: object) -> bool:
    return isinstance(v, bool) or (isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE)


def _is_integer(v: object) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, str) and _INTEGER.fullmatch(v.strip()) is not None)


def _is_decimal(v: object) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    return isinstance(v, str) and _DECIMAL.fullmatch(v.strip()) is not None and math.isfinite(float(v))


def _parse_date(v: object, kind: str, fmt: str) -> dt.date | None:
    """The date (kind "date") or date-time a cell holds in format ``fmt``, else None."""
    if isinstance(v, dt.datetime):
        return v if kind == "datetime" else None
    if isinstance(v, dt.date):
        return dt.datetime.combine(v, dt.time(0)) if kind == "datetime" else v
    if not isinstance(v, str) or len(v) > _MAX_DATE_CHARS:
        return None
    text = v.strip()
    try:
        if fmt == "iso":
            if kind == "date":
                return dt.date.fromisoformat(text) if _ISO_DATE.fullmatch(text) else None
            ok = _ISO_DATE.fullmatch(text) or _ISO_DATETIME.fullmatch(text)
            return dt.datetime.fromisoformat(text) if ok else None
        parsed = dt.datetime.strptime(text, fmt)
    except ValueError:
        return None
    return parsed.date() if kind == "date" else parsed


def _cell(column: Column, v: object) -> object:
    if v is None:
        return None
    kind = column.type
    if kind == "boolean":
        return v if isinstance(v, bool) else v.strip().lower() in _TRUE
    if kind == "integer":
        return int(v.strip()) if isinstance(v, str) else v
    if kind == "decimal":
        return float(v.strip()) if isinstance(v, str) else float(v)
    if kind in ("date", "datetime"):
        return {"value": _parse_date(v, kind, column.format).isoformat(), "text": _as_text(v)}
    return _as_text(v)


def _as_text(v: object) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    return str(v)


def _shown(name: str) -> str:
    """A column name for a one-line detail: a hostile header name can be megabytes long."""
    return repr(name if len(name) <= 60 else name[:57] + "...")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
