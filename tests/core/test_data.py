"""astra.core.data: typed tables from a session's data files; every hostile file is a DataProblem, never a crash."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile
from pathlib import Path

import openpyxl
import pytest

from astra.core.data import Limits, read_file, read_tables
from astra.ooxml.zip import MemberHeader, read_zip, write_zip

SAMPLE_CSV = Path(__file__).parents[2] / "astra" / "samples" / "readings.csv"


def one_table(name: str, data: bytes, limits: Limits = Limits()):
    tables, problems = read_file(name, data, limits)
    assert problems == [], problems
    assert len(tables) == 1
    return tables[0]


def one_problem(name: str, data: bytes, limits: Limits = Limits()):
    tables, problems = read_file(name, data, limits)
    assert tables == []
    assert len(problems) == 1
    assert problems[0].source == name
    return problems[0]


def types(table) -> dict[str, str]:
    return {c.name: c.type for c in table.columns}


def xlsx(*sheets: tuple[str, list[list]]) -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets:
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def rezip(data: bytes, change) -> bytes:
    """The same zip with members changed by ``change(name, body) -> [(name, body), ...]``."""
    src = zipfile.ZipFile(io.BytesIO(data))
    members = []
    for info in src.infolist():
        for name, body in change(info.filename, src.read(info)):
            members.append((MemberHeader.new(name), body))
    return write_zip(members)


# --- CSV -------------------------------------------------------------------------------------------------------------

def test_the_sample_csv_is_typed():
    table = one_table("data/readings.csv", SAMPLE_CSV.read_bytes())
    assert table.id == "data/readings.csv" and table.sheet is None
    assert types(table) == {"sensor": "text", "location": "text", "pressure_kpa": "decimal",
                            "temperature_c": "decimal", "recorded_at": "datetime"}
    first = table.to_json()["rows"][0]
    assert first[:4] == ["P-101", "north inlet", 412.5, 11.2]
    assert first[4] == {"value": "2026-11-20T09:15:00+00:00", "text": "2026-11-20T09:15:00Z"}
    assert table.to_json()["header"] == [c.name for c in table.columns]
    json.dumps(table.to_json(), allow_nan=False)


def test_types_integer_boolean_date_text_and_nulls():
    data = b"id,count,ok,day,code,note\n1,10,yes,2026-01-02,007,\n2,-3,No,2026-01-31,010,x\n3,,TRUE,,,y\n"
    table = one_table("data/t.csv", data)
    assert types(table) == {"id": "integer", "count": "integer", "ok": "boolean", "day": "date", "code": "text",
                            "note": "text"}
    rows = table.to_json()["rows"]
    assert rows[0] == [1, 10, True, {"value": "2026-01-02", "text": "2026-01-02"}, "007", None]
    assert rows[2] == [3, None, True, None, None, "y"]


def test_integers_and_decimals_mixed_make_a_decimal_column():
    table = one_table("data/t.csv", b"v\n1\n2.5\n1e3\n")
    assert types(table) == {"v": "decimal"}
    assert [r[0] for r in table.rows] == [1.0, 2.5, 1000.0]


def test_an_overflowing_number_is_text_not_infinity():
    table = one_table("data/t.csv", b"v\n1e400\n2\n")
    assert types(table) == {"v": "text"}


def test_common_date_formats_keep_the_original_text_and_the_format():
    table = one_table("data/t.csv", b"a;b;c\n01/02/2026;02/13/2026;20.11.2026 09:15\n03/04/2026;12/01/2026;"
                                    b"21.11.2026 10:00\n")
    cols = {c.name: (c.type, c.format) for c in table.columns}
    assert cols == {"a": ("date", "%d/%m/%Y"), "b": ("date", "%m/%d/%Y"), "c": ("datetime", "%d.%m.%Y %H:%M")}
    assert table.rows[0][0] == {"value": "2026-02-01", "text": "01/02/2026"}  # day first when ambiguous
    assert table.rows[0][1] == {"value": "2026-02-13", "text": "02/13/2026"}  # month first when only that fits
    assert table.rows[1][2] == {"value": "2026-11-21T10:00:00", "text": "21.11.2026 10:00"}


def test_a_date_column_with_one_non_date_is_text():
    table = one_table("data/t.csv", b"d\n2026-01-02\nsoon\n")
    assert types(table) == {"d": "text"}
    assert table.rows[0][0] == "2026-01-02"


@pytest.mark.parametrize("delimiter", [b",", b";", b"\t", b"|"])
def test_the_delimiter_is_sniffed(delimiter):
    data = delimiter.join([b"a", b"b", b"c"]) + b"\n" + delimiter.join([b"1", b"x y", b"3.5"]) + b"\n"
    table = one_table("data/t.csv", data)
    assert [c.name for c in table.columns] == ["a", "b", "c"]
    assert table.rows == ((1, "x y", 3.5),)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1", "utf-16"])
def test_encodings(encoding):
    table = one_table("data/t.csv", "städt,n\nMünchen,1\n".encode(encoding))
    assert [c.name for c in table.columns] == ["städt", "n"]
    assert table.rows == (("München", 1),)


def test_quoted_fields_with_delimiters_and_newlines():
    table = one_table("data/t.csv", b'a,b\n"x, y","line 1\nline 2"\n')
    assert table.rows == (("x, y", "line 1\nline 2"),)


@pytest.mark.parametrize("data", [b"a,b,c\n1,2,3\n4,5\n", b"a,b,c\n1,2,3\n4,5,6,7\n"])
def test_a_ragged_csv_is_refused(data):
    assert one_problem("data/t.csv", data).reason == "ragged_row"


def test_an_unterminated_quote_is_malformed():
    assert one_problem("data/t.csv", b'a,b\n"x,1\n').reason == "malformed"


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 50, bytes(range(1, 32)) * 40])
def test_binary_garbage_named_csv_is_refused(data):
    assert one_problem("data/t.csv", data).reason == "not_text"


def test_duplicate_header_names_are_refused():
    assert one_problem("data/t.csv", b"a,a\n1,2\n").reason == "duplicate_column"


def test_an_empty_header_name_gets_a_position_name():
    assert [c.name for c in one_table("data/t.csv", b"a,\n1,2\n").columns] == ["a", "column_2"]


def test_an_empty_file_is_reported():
    assert one_problem("data/t.csv", b"").reason == "empty"
    assert one_problem("data/t.csv", b"\n\n").reason == "empty"


def test_caps_bytes_rows_columns_cells():
    limits = Limits(max_bytes=100, max_rows=3, max_columns=3, max_cell_chars=5)
    assert one_problem("data/t.csv", b"a\n" + b"1\n" * 60, limits).reason == "too_large"
    assert one_problem("data/t.csv", b"a\n1\n2\n3\n4\n", limits).reason == "too_many_rows"
    assert one_table("data/t.csv", b"a\n1\n2\n3\n", limits).rows == ((1,), (2,), (3,))
    assert one_problem("data/t.csv", b"a,b,c,d\n1,2,3,4\n", limits).reason == "too_many_columns"
    assert one_problem("data/t.csv", b"a\n123456\n", limits).reason == "cell_too_long"


def test_a_huge_csv_is_refused_before_parsing():
    limits = Limits(max_bytes=1_000_000)
    problem = one_problem("data/huge.csv", b"a,b\n" + b"1,2\n" * 300_000, limits)
    assert problem.reason == "too_large" and "1200004 bytes" in problem.detail


def test_a_csv_over_the_column_or_row_cap_is_refused_before_pandas_parses_it(monkeypatch):
    # pandas' python engine built all 2.4 M fields of such a 4.8 MB row (200 s, 5.5 GB) before the cap applied.
    import pandas

    def parse(*args, **kwargs):
        raise AssertionError("pandas parsed a file the caps refuse")

    monkeypatch.setattr(pandas, "read_csv", parse)
    wide = one_problem("data/wide.csv", b"a," * 2_400_000)
    assert (wide.reason, wide.detail) == ("too_many_columns", "line 1: 2400001 fields, over the cap of 200 columns")
    late = one_problem("data/t.csv", b"a,b\n1,2\n" + b",".join([b"x"] * 201) + b"\n")
    assert (late.reason, late.detail) == ("too_many_columns", "line 3: 201 fields, over the cap of 200 columns")
    limits = Limits(max_rows=3)
    assert one_problem("data/t.csv", b"a\n1\n\n2\n3\n4\n", limits).reason == "too_many_rows"


def test_blank_lines_and_quoted_line_breaks_do_not_count_against_the_row_cap():
    limits = Limits(max_rows=2)
    table = one_table("data/t.csv", b'a,b\n\n"x\ny\nz",1\n  \n"w",2\n\n', limits)
    assert table.rows == (("x\ny\nz", 1), ("w", 2))


def test_the_delimiter_sniffer_sees_the_first_lines_only(monkeypatch):
    # csv.Sniffer's doublequote regex is quadratic in a run of punctuation: 16 K characters of ',"' take 2 s, so a
    # 5 MB line would take hours. It must see a bounded sample.
    seen = []
    sniff = csv.Sniffer.sniff
    monkeypatch.setattr(csv.Sniffer, "sniff", lambda self, sample, delimiters=None: (
        seen.append(len(sample)), sniff(self, sample, delimiters))[1])
    assert one_problem("data/t.csv", b',"' * 2_000_000).reason == "too_many_columns"
    assert one_table("data/t.csv", b"a;b\n" + b"1;2\n" * 5000).rows[-1] == (1, 2)
    assert seen == [4096, 79]  # the start of one long line; the first 20 lines of a file of short ones


def test_a_long_header_name_is_shortened_in_the_problem():
    problem = one_problem("data/t.csv", b"x" * 5000 + b"," + b"x" * 5000 + b"\n1,2\n")
    assert problem.reason == "duplicate_column" and len(problem.detail) < 120


# --- JSON ------------------------------------------------------------------------------------------------------------

def test_json_list_of_objects_unions_keys_in_order():
    data = json.dumps([{"a": 1, "b": "2026-01-02"}, {"c": True, "a": 2}]).encode()
    table = one_table("data/t.json", data)
    assert types(table) == {"a": "integer", "b": "date", "c": "boolean"}
    assert table.rows == ((1, {"value": "2026-01-02", "text": "2026-01-02"}, None), (2, None, True))


def test_json_columns_and_rows():
    data = json.dumps({"columns": ["x", "y"], "rows": [[1.5, "a"], [2, None]]}).encode()
    table = one_table("data/t.json", data)
    assert types(table) == {"x": "decimal", "y": "text"}
    assert table.rows == ((1.5, "a"), (2.0, None))


@pytest.mark.parametrize("data, reason", [
    (b"{not json", "malformed"),
    (b'{"columns": ["a"], "rows": [[1, 2]]}', "ragged_row"),
    (b'{"columns": ["a"], "rows": [[{"deep": 1}]]}', "nested_value"),
    (b'[{"a": [1, 2]}]', "nested_value"),
    (b'[{"a": NaN}]', "malformed"),
    (b'[{"a": 1e400}]', "malformed"),
    (b'[1, 2]', "not_tabular"),
    (b'{"a": 1}', "not_tabular"),
    (b'"text"', "not_tabular"),
    (b"[]", "empty"),
    ("[{\"a\": \"\xe9\"}]".encode("latin-1"), "encoding"),
    (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
])
def test_hostile_json_is_a_problem(data, reason):
    assert one_problem("data/t.json", data).reason == reason


def test_json_too_many_columns():
    data = json.dumps([{f"c{i}": i for i in range(5)}]).encode()
    assert one_problem("data/t.json", data, Limits(max_columns=4)).reason == "too_many_columns"


# --- XLSX ------------------------------------------------------------------------------------------------------------

def test_xlsx_every_sheet_is_a_table_with_native_types():
    data = xlsx(("Readings", [["sensor", "kpa", "day", "at", "ok"],
                              ["P1", 412.5, dt.datetime(2026, 1, 2), dt.datetime(2026, 1, 2, 9, 30), True],
                              ["P2", 3, dt.datetime(2026, 1, 3), dt.datetime(2026, 1, 3, 10, 0), False]]),
                ("Blank", []),
                ("Codes", [["code"], ["A"], [None], ["B"]]))
    tables, problems = read_file("data/book.xlsx", data)
    assert problems == []
    assert [t.id for t in tables] == ["data/book.xlsx#Readings", "data/book.xlsx#Codes"]
    readings = tables[0]
    assert types(readings) == {"sensor": "text", "kpa": "decimal", "day": "date", "at": "datetime", "ok": "boolean"}
    assert readings.rows[0] == ("P1", 412.5, {"value": "2026-01-02", "text": "2026-01-02"},
                                {"value": "2026-01-02T09:30:00", "text": "2026-01-02T09:30:00"}, True)
    assert tables[1].rows == (("A",), ("B",))  # a blank row carries nothing and is skipped, as in CSV


def test_xlsx_formulas_are_not_evaluated():
    book = openpyxl.Workbook()
    book.active.append(["a", "b"])
    book.active.append([2, "=A2*100"])
    out = io.BytesIO()
    book.save(out)
    (table,) = read_file("data/f.xlsx", out.getvalue())[0]
    assert table.rows == ((2, None),)  # no cached value was saved; the formula is neither run nor shown


def test_a_bad_sheet_is_reported_and_the_others_kept():
    data = xlsx(("Good", [["a"], [1]]), ("Dup", [["a", "a"], [1, 2]]))
    tables, problems = read_file("data/b.xlsx", data)
    assert [t.id for t in tables] == ["data/b.xlsx#Good"]
    assert [(p.sheet, p.reason) for p in problems] == [("Dup", "duplicate_column")]


def test_xlsx_row_and_column_caps():
    limits = Limits(max_rows=2, max_columns=2)
    tables, problems = read_file("data/b.xlsx", xlsx(("S", [["a"], [1], [2], [3]])), limits)
    assert tables == [] and [p.reason for p in problems] == ["too_many_rows"]
    tables, problems = read_file("data/b.xlsx", xlsx(("S", [["a", "b", "c"], [1, 2, 3]])), limits)
    assert tables == [] and [p.reason for p in problems] == ["too_many_columns"]


def test_a_lying_sheet_dimension_does_not_pad_rows():
    # The dimension claims 16384 columns and a million rows; the table is what the sheet holds.
    # (Its cost is measured nowhere here: speed belongs in bench/, not in a timed test.)
    rows = [["a"]] + [[i] for i in range(3000)]
    data = rezip(xlsx(("S", rows)), lambda name, body: [(name, body.replace(b'ref="A1:A3001"',
                                                                            b'ref="A1:XFD1048576"'))])
    table = one_table("data/b.xlsx", data)
    assert table.rows[:2] == ((0,), (1,)) and len(table.rows) == 3000
    assert len(table.columns) == 1 and all(len(row) == 1 for row in table.rows)


def test_macro_enabled_workbooks_are_refused():
    plain = xlsx(("S", [["a"], [1]]))
    assert one_problem("data/m.xlsm", plain).reason == "macro_enabled"
    with_vba = rezip(plain, lambda name, body: [(name, body)] + ([("xl/vbaProject.bin", b"\x00" * 64)]
                                                                   if name == "xl/workbook.xml" else []))
    assert one_problem("data/m.xlsx", with_vba).reason == "macro_enabled"
    macro_type = rezip(plain, lambda name, body: [(name, body.replace(
        b"spreadsheetml.sheet.main+xml", b"ms-excel.sheet.macroEnabled.main+xml"))])
    assert one_problem("data/m.xlsx", macro_type).reason == "macro_enabled"


def test_an_xlsx_bomb_is_refused_by_declared_size():
    bomb = rezip(xlsx(("S", [["a"], [1]])), lambda name, body: [(name, body)] + (
        [("xl/padding.xml", b" " * 40_000_000)] if name == "xl/workbook.xml" else []))
    assert len(bomb) < 200_000
    problem = one_problem("data/bomb.xlsx", bomb)
    assert problem.reason == "zip_bomb"


def test_an_xlsx_member_inflating_past_its_declared_size_is_a_bomb():
    data = xlsx(("S", [["a"], [1]]))
    listing = read_zip(data)
    entry = next(e for e in listing.entries if e.name == "xl/worksheets/sheet1.xml")
    # Lower the uncompressed size the central directory declares (offset 24 of its record).
    pos = data.index(b"xl/worksheets/sheet1.xml", listing.central_dir_offset) - 46
    assert data[pos:pos + 4] == b"PK\x01\x02"
    lied = data[:pos + 24] + (entry.file_size // 4).to_bytes(4, "little") + data[pos + 28:]
    assert one_problem("data/b.xlsx", lied).reason == "zip_bomb"


def test_a_dtd_in_an_xlsx_part_is_refused():
    dtd = b'<!DOCTYPE x [<!ENTITY a "aaaa">]>'
    data = rezip(xlsx(("S", [["a"], [1]])), lambda name, body: [(name, dtd + body if name == "xl/workbook.xml"
                                                                  else body)])
    assert one_problem("data/b.xlsx", data).reason == "unsafe_xml"


def sheet_part(body: bytes, part: str = "xl/worksheets/sheet1.xml") -> bytes:
    """A one-sheet workbook whose sheet holds ``body``, stored as ``part`` (the relationships point to it)."""
    def change(name, old):
        if name == "xl/worksheets/sheet1.xml":
            return [(part, body)]
        return [(name, old.replace(b"worksheets/sheet1.xml", part.removeprefix("xl/").encode()))]
    return rezip(xlsx(("S", [["a"], [1]])), change)


SHEET = ('<?xml version="1.0" encoding="{encoding}" standalone="yes"?>{dtd}<worksheet xmlns='
         '"http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="inlineStr">'
         '<is><t>{text}</t></is></c></row><row r="2"><c r="A2"><v>1</v></c></row></sheetData></worksheet>')
BOMB_DTD = '<!DOCTYPE worksheet [<!ENTITY e "' + "X" * 1000 + '">]>'


def test_a_sheet_part_named_anything_is_read_and_checked():
    clean = SHEET.format(encoding="UTF-8", dtd="", text="name").encode()
    assert one_table("data/b.xlsx", sheet_part(clean, "xl/worksheets/sheet1.bin")).rows == ((1,),)
    bomb = SHEET.format(encoding="UTF-8", dtd=BOMB_DTD, text="&e;").encode()
    problem = one_problem("data/b.xlsx", sheet_part(bomb, "xl/worksheets/sheet1.bin"))
    assert (problem.reason, problem.detail) == ("unsafe_xml", "xl/worksheets/sheet1.bin declares a DTD")


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
@pytest.mark.parametrize("dtd", [BOMB_DTD, ""])
def test_a_wide_encoded_sheet_is_refused_with_or_without_a_dtd(codec, dtd):
    # expat reads UTF-16 (by its BOM, or by the NULs around the first '<'), where '<!DOCTYPE' is not those bytes.
    body = SHEET.format(encoding=codec.upper()[:6], dtd=dtd, text="&e;" if dtd else "name").encode(codec)
    problem = one_problem("data/b.xlsx", sheet_part(body))
    assert (problem.reason, problem.detail) == ("unsafe_xml", "xl/worksheets/sheet1.xml is UTF-16/32 XML; "
                                                               "workbook parts are UTF-8")


@pytest.mark.parametrize("encoding, reason", [("utf-8", None), ("US-ASCII", None), ("UTF-7", "unsafe_xml"),
                                              ("ISO-8859-1", "unsafe_xml"), ("UTF-16", "unsafe_xml")])
def test_an_xml_part_declaring_another_encoding_than_utf8_is_refused(encoding, reason):
    data = sheet_part(SHEET.format(encoding=encoding, dtd="", text="name").encode())
    if reason is None:
        assert one_table("data/b.xlsx", data).rows == ((1,),)
    else:
        problem = one_problem("data/b.xlsx", data)
        assert (problem.reason, problem.detail) == (reason, f"xl/worksheets/sheet1.xml declares the encoding "
                                                            f"'{encoding}'; workbook parts are UTF-8")


def test_binary_members_in_utf16_or_not_xml_are_kept():
    # Excel stores printer settings as a DEVMODE blob that starts with the printer's name in UTF-16.
    devmode = "HP LaserJet 4000".ljust(32, "\0").encode("utf-16-le") + bytes(range(256))
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    data = rezip(xlsx(("S", [["a"], [1]])), lambda name, body: [(name, body)] + (
        [("xl/printerSettings/printerSettings1.bin", devmode), ("xl/media/image1.png", png)]
        if name == "xl/workbook.xml" else []))
    assert one_table("data/b.xlsx", data).rows == ((1,),)


@pytest.mark.parametrize("data, reason", [
    (b"PK\x03\x04 not really a zip", "malformed"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, "unsupported_format"),
    (b"plain text", "malformed"),
])
def test_not_a_workbook(data, reason):
    assert one_problem("data/b.xlsx", data).reason == reason


def test_a_zip_that_is_not_a_workbook_is_malformed():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("hello.xml", "<a/>")
    assert one_problem("data/b.xlsx", out.getvalue()).reason == "malformed"


# --- Many files ------------------------------------------------------------------------------------------------------

def test_read_tables_reports_every_file_in_path_order():
    files = [("data/z.csv", b"a\n1\n"), ("data/notes.txt", b"hello"), ("data/a.json", b"[{\"a\": 1}]"),
             ("data/bad.csv", b"\x00\x01")]
    result = read_tables(files)
    assert [t.id for t in result.tables] == ["data/a.json", "data/z.csv"]
    assert [(p.source, p.reason) for p in result.problems] == [("data/bad.csv", "not_text"),
                                                                ("data/notes.txt", "unsupported_format")]
    assert read_tables(list(reversed(files))) == result
