"""The Jinja2 environment docxtpl templates are parsed and rendered in: a sandbox with an allow-list.

DECISION: :class:`jinja2.sandbox.ImmutableSandboxedEnvironment`, with its attribute and item lookups replaced by
data lookups only: ``x.name`` and ``x["name"]`` read a key of a mapping, ``x[0]`` an item of a list or string,
``loop.index`` (and the loop's other counters) a loop's state; nothing else has attributes, so no method, dunder or
Python internal is reachable (``"".__class__`` is undefined, and the template that writes it is refused before).
Autoescape is always on and cannot be switched off (``{% autoescape false %}`` is refused, ``|safe`` is not a
filter here). Only the filters and tests listed here exist; the one global is a bounded ``range``.

Every render runs under a :class:`RenderBudget`: loop iterations, the items filters walk, the characters the
template itself makes (``~``, ``+``, ``*``, ``replace``, ``join``, ``indent``, ``format``…, counted *before* they are
made, so a doubling ``{% with %}`` chain stops at the cap instead of filling memory) and a deadline, checked at
every iteration and every filter.

Every value written goes through :func:`finalize`: cleaned of what XML cannot carry
(:func:`astra.builder.sanitize.clean_text`), escaped, a line end made a line break and a tab a tab: a template's
output position is always inside a ``w:t`` (docxtpl's run and paragraph forms go through their own filters).
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any

from jinja2 import ChainableUndefined, nodes
from jinja2 import filters as jinja_filters
from jinja2 import tests as jinja_tests
from jinja2.runtime import LoopContext, markup_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer
from markupsafe import Markup, escape

from astra.builder.sanitize import clean_text, escape_attr

from .errors import RenderError

MAX_RANGE = 10_000  # the largest literal range(n) a loop may iterate
MAX_REPEAT_CHARS = 100_000  # what "x" * n, replace() and format() may make of one value
MAX_FORMAT_WIDTH = 1_000  # a width or precision in a %-format (format filter), an indent
MAX_GRID_SPAN = 63  # Word's most columns in a table
MAX_PIECES = 10_000  # the batches or slices a batch()/slice() may make

# What is reachable on a loop's state (LoopContext); loop.cycle is the one call a template may make on it.
LOOP_ATTRIBUTES = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth",
                             "depth0", "previtem", "nextitem", "cycle", "changed"})

_BREAK = Markup('</w:t><w:br/><w:t xml:space="preserve">')
_TAB = Markup('</w:t><w:tab/><w:t xml:space="preserve">')
_FILL = re.compile(r"[0-9A-Fa-f]{6}|auto")
_FORMAT_SPEC = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")



@dataclass
class _Budget:
    iterations: int  # loop items left
    items: int  # items filters may still walk
    chars: int  # characters the template may still make
    deadline: float  # time.monotonic()


# The budget of the render under way (None: no render, e.g. while analysing: nothing is evaluated then).
_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("astra_render_budget", default=None)


class RenderBudget:
    """``with RenderBudget(iterations=…, items=…, chars=…, seconds=…):`` around one document's render."""

    def __init__(self, *, iterations: int, items: int, chars: int, seconds: float) -> None:
        self.limits = (iterations, items, chars, seconds)

    def __enter__(self) -> None:
        iterations, items, chars, seconds = self.limits
        self._token = _BUDGET.set(_Budget(iterations, items, chars, time.monotonic() + seconds))

    def __exit__(self, *exc: object) -> None:
        _BUDGET.reset(self._token)


def _budget() -> _Budget | None:
    budget = _BUDGET.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise RenderError("the render ran past its time limit for one document")
    return budget


def spend_chars(count: int, what: str) -> None:
    """Before the template makes ``count`` characters (or list items) of a value: pay them, or stop the render."""
    if count > MAX_REPEAT_CHARS * 100:  # no single value of the template's own making is this large
        raise RenderError(f"{what} would make a value of {count:,} characters or items")
    budget = _budget()
    if budget is not None:
        budget.chars -= count
        if budget.chars < 0:
            raise RenderError(f"{what}: the template made more text than its cap for one document")


def _spend_items(count: int) -> None:
    budget = _budget()
    if budget is not None:
        budget.items -= count
        if budget.items < 0:
            raise RenderError("the template's filters walked more items than their cap for one document")


def _walked(value: object) -> object:
    """A filter's input, paid for: a sized one at once, an iterator (another filter's output) item by item."""
    if isinstance(value, (str, Mapping, Sequence, set, frozenset)):
        _spend_items(len(value))
        return value
    if isinstance(value, Iterator):
        return _walked_items(value)
    return value


def _walked_items(items: Iterator) -> Iterator:
    for item in items:
        _spend_items(1)
        yield item


# What may be written as text: data (and Jinja's undefined, printed as nothing).
_DATA = (str, int, float, bool, type(None), Mapping, list, tuple, range, ChainableUndefined)
MAX_INT_BITS = 4_096  # a number the template makes: about 1,200 digits (a product of products grows without end)


def shown(value: object) -> str:
    """``str(value)`` when the value is data through and through; else the render stops. A generator, a function or
    a method prints as its memory address: the same template and data would not give the same document twice (and
    the address is nothing a document should show)."""
    if isinstance(value, str):
        return value
    stack, seen, size = [value], 0, 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_REPEAT_CHARS:
            raise RenderError("a value of more than 100,000 nested items cannot be written as text")
        if not isinstance(item, _DATA):
            raise RenderError(f"a {type(item).__name__} is not a value a document can show (make it text or a list "
                              "first, e.g. with |join or |list)")
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        size += len(item) + 4 if isinstance(item, str) else 8  # quotes, separators; a number's digits are capped
    if isinstance(value, (Mapping, list, tuple)):
        spend_chars(size, "writing a list or mapping as text")  # a list of one long text repeated is made here
    return str(value)


def finalize(value: object) -> object:
    """Every ``{{ }}`` value: Markup (from ``|e`` or ASTRA's own filters) as is; anything else as clean, escaped
    text with its line ends as breaks and its tabs as tabs (a ``w:t`` holds neither)."""
    if isinstance(value, Markup):
        return value
    text = clean_text("" if isinstance(value, ChainableUndefined) else shown(value))
    if "\n" not in text and "\t" not in text:
        return escape(text)
    return _TAB.join(_BREAK.join(escape(line) for line in part.split("\n")) for part in text.split("\t"))


def runs_xml(value: object, rpr: str) -> Markup:
    """``{{r x}}``: the value as runs with the tag's run properties (a line end a break, a tab a tab)."""
    text = "" if isinstance(value, ChainableUndefined) or value is None else clean_text(str(value))
    if not text:
        return Markup("")
    return Markup(f'<w:r>{rpr}<w:t xml:space="preserve">') + finalize(text) + Markup("</w:t></w:r>")


def paragraphs_xml(value: object, ppr: str, rpr: str) -> Markup:
    """``{{p x}}``: the value as paragraphs, one per line, each with the tag paragraph's properties and the tag
    run's; a value of several items (a list) gives a paragraph per item."""
    if isinstance(value, ChainableUndefined) or value is None:
        return Markup("")
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        for line in clean_text(str(item)).split("\n"):
            out.append(Markup(f"<w:p>{ppr}<w:r>{rpr}<w:t xml:space=\"preserve\">") + finalize(line)
                       + Markup("</w:t></w:r></w:p>"))
    return Markup("").join(out)


def attribute_value(value: object) -> Markup:
    """A value written into an attribute (``cellbg``, ``colspan``, ``hm``): cleaned and escaped for it."""
    return Markup(escape_attr("" if isinstance(value, ChainableUndefined) else str(value)))


def grid_span(value: object) -> Markup:
    """``{% colspan n %}``: a whole number of grid columns, 1 to 63 (Word's most), else the render stops."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_GRID_SPAN:
        raise RenderError(f"colspan {str(value)[:40]!r} is not a whole number of columns from 1 to {MAX_GRID_SPAN}")
    return Markup(str(value))


def cell_fill(value: object) -> Markup:
    """``{% cellbg c %}``: a colour as Word writes one (six hex digits, or ``auto``), else the render stops."""
    text = "" if isinstance(value, ChainableUndefined) else str(value).strip().lstrip("#")
    if not _FILL.fullmatch(text):
        raise RenderError(f"cellbg {text[:40]!r} is not a colour (six hex digits such as 'FF0000', or 'auto')")
    return Markup(text)


def counted(iterable: object) -> Iterator:
    """Every loop's iterable goes through this: the render's iteration budget is spent item by item, and a render
    past it stops with :class:`RenderError` (a loop nested in a loop over data multiplies; this bounds it)."""
    if isinstance(iterable, ChainableUndefined) or iterable is None:
        return
    if isinstance(iterable, Mapping):
        iterable = list(iterable)
    for item in iterable:  # type: ignore[union-attr]
        budget = _budget()
        if budget is not None:
            budget.iterations -= 1
            if budget.iterations < 0:
                raise RenderError("the template's loops ran past their cap of iterations for one document")
        yield item


# --------------------------------------------------------------------------- bounded versions of some filters


def _bounded_text(text: str, what: str) -> str:
    if len(text) > MAX_REPEAT_CHARS:
        raise RenderError(f"{what} made a value of {len(text):,} characters (cap {MAX_REPEAT_CHARS:,})")
    return text


def _format(value: object, *args: object, **kwargs: object) -> str:
    spec = str(value)
    for match in _FORMAT_SPEC.finditer(spec):
        for number in match.groups():
            if number == "*" or (number and int(number) > MAX_FORMAT_WIDTH):
                raise RenderError(f"format {spec!r}: a width or precision over {MAX_FORMAT_WIDTH} (or '*')")
    spend_chars(len(spec) + sum(len(str(a)) for a in args) + sum(len(str(v)) for v in kwargs.values()), "format")
    return _bounded_text(jinja_filters.do_format(spec, *args, **kwargs), "format")


def _replace(eval_ctx: Any, s: str, old: str, new: str, count: int | None = None) -> str:
    text, old, new = str(s), str(old), str(new)
    times = text.count(old) if old else len(text) + 1
    if count is not None and isinstance(count, int) and count >= 0:
        times = min(times, count)
    spend_chars(len(text) + times * max(0, len(new) - len(old)), "replace")
    return _bounded_text(str(jinja_filters.do_replace(eval_ctx, s, old, new, count)), "replace")


def _center(value: str, width: int = 80) -> str:
    width = min(int(width), MAX_REPEAT_CHARS)
    spend_chars(max(width, len(str(value))), "center")
    return str(value).center(width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    """Jinja's indent on plain text (its Markup branch would mark a width given as text safe: data written raw)."""
    if isinstance(width, bool) or not isinstance(width, (int, str)):
        raise RenderError("indent takes a number of spaces or a text")
    if isinstance(width, int) and not 0 <= width <= MAX_FORMAT_WIDTH:
        raise RenderError(f"indent width {width} is not from 0 to {MAX_FORMAT_WIDTH}")
    text, width = shown(s), width if isinstance(width, int) else str(width)
    spend_chars(len(text) + (text.count("\n") + 1) * (width if isinstance(width, int) else len(width)), "indent")
    return _bounded_text(str(jinja_filters.do_indent(text, width, first, blank)), "indent")


def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    items = list(value)
    spend_chars(sum(len(str(item)) for item in items) + len(str(d)) * len(items), "join")
    return jinja_filters.do_join(eval_ctx, items, d, attribute)


def _wordwrap(environment: Any, s: str, width: int = 79, *args: Any, **kwargs: Any) -> str:
    spend_chars(2 * len(str(s)), "wordwrap")
    return jinja_filters.do_wordwrap(environment, s, width, *args, **kwargs)


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Iterator:
    if not isinstance(linecount, int) or not 1 <= linecount <= MAX_PIECES:
        raise RenderError(f"batch({str(linecount)[:20]}): a batch size from 1 to {MAX_PIECES:,}")
    return jinja_filters.do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator:
    if not isinstance(slices, int) or not 1 <= slices <= MAX_PIECES:
        raise RenderError(f"slice({str(slices)[:20]}): a number of slices from 1 to {MAX_PIECES:,}")
    return jinja_filters.do_slice(value, slices, fill_with)


def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """Numbers only: a sum of lists or texts would be a concatenation outside every cap."""
    if isinstance(start, bool) or not isinstance(start, (int, float)):
        raise RenderError("sum adds numbers (its start is a number)")
    total = start
    get = jinja_filters.make_attrgetter(environment, attribute) if attribute is not None else None
    for item in (map(get, iterable) if get else iterable):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise RenderError(f"sum adds numbers, not a {type(item).__name__}")
        total += item
    return total


_sum.jinja_pass_arg = jinja_filters.do_sum.jinja_pass_arg  # type: ignore[attr-defined]
_replace.jinja_pass_arg = jinja_filters.do_replace.jinja_pass_arg  # type: ignore[attr-defined]
_join.jinja_pass_arg = jinja_filters.do_join.jinja_pass_arg  # type: ignore[attr-defined]
_wordwrap.jinja_pass_arg = jinja_filters.do_wordwrap.jinja_pass_arg  # type: ignore[attr-defined]


def _as_is(value: object) -> object:
    """``|e``, ``|escape``, ``|forceescape``: every value is escaped once when written, so these change nothing (as
    Jinja's Markup they would skip the cleaning of control characters, and Markup's methods — ``|e|upper`` — would
    write broken XML)."""
    return value


def _tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> str:
    """JSON text (sorted keys), as plain text: cleaned and escaped when written, like any value."""
    return str(jinja_filters.do_tojson(eval_ctx, value, indent))


_tojson.jinja_pass_arg = jinja_filters.do_tojson.jinja_pass_arg  # type: ignore[attr-defined]


def _listed(function: Any) -> Any:
    """A filter that yields (select, map, batch…) made to return a list: no generator exists in a render, so none is
    ever printed (as its address) or walked twice."""

    @wraps(function)  # copies jinja_pass_arg too (it is in the function's __dict__)
    def listed(*args: Any, **kwargs: Any) -> list:
        return list(function(*args, **kwargs))

    return listed


def _concat(items: list) -> str:
    """``a ~ b``: Jinja's own join (Markup-aware), paid for before it is made."""
    texts = [item if isinstance(item, Markup) else shown(item) for item in items]
    spend_chars(sum(len(text) for text in texts), "'~'")
    return markup_join(texts)


# The filters that yield their result (a generator in Jinja): here they return lists.
YIELDING = frozenset({"batch", "map", "reject", "rejectattr", "select", "selectattr", "slice", "unique", "items"})
# The filters that walk a collection: each call pays for its input's items.
WALKING = frozenset({"batch", "dictsort", "groupby", "items", "join", "last", "list", "map", "max", "min", "reject",
                     "rejectattr", "reverse", "select", "selectattr", "slice", "sort", "sum", "tojson", "unique"})


# The filters that read their value as text: a list or mapping given to one is written as text first (paid for), and
# each call pays for the text it makes (times what it may grow by).
TEXTUAL = {"capitalize": 1, "center": 1, "filesizeformat": 1, "format": 1, "indent": 1, "lower": 1, "replace": 1,
           "string": 1, "striptags": 1, "title": 1, "trim": 1, "truncate": 1, "upper": 1, "urlencode": 3,
           "wordcount": 0, "wordwrap": 1}


def _with_value(function: Any, prepare: Callable[[Any], Any]) -> Any:
    """``function`` with its filtered value (after Jinja's own first argument, when it takes one) passed through
    ``prepare`` first. ``wraps`` keeps ``jinja_pass_arg`` (it is in the function's ``__dict__``)."""
    at = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @wraps(function)
    def filtered(*args: Any, **kwargs: Any) -> Any:
        if len(args) > at:
            args = (*args[:at], prepare(args[at]), *args[at + 1:])
        return function(*args, **kwargs)

    return filtered


def _textual(name: str, function: Any) -> Any:
    growth = TEXTUAL[name]

    def as_text(value: Any) -> Any:
        if not isinstance(value, (str, int, float)) and name != "urlencode":
            value = shown(value)
        if isinstance(value, str):
            spend_chars(growth * len(value), name)
        return value

    return _with_value(function, as_text)


def _whole_number(value: Any, default: int = 0, base: int = 10) -> int:
    """``|int``: Jinja's, with the number's size capped (a hex text escapes Python's own 4,300-digit limit)."""
    if isinstance(value, str) and len(value) > MAX_INT_BITS // 3:
        raise RenderError(f"|int of a text of {len(value):,} characters")
    result = jinja_filters.do_int(value, default, base)
    if abs(result).bit_length() > MAX_INT_BITS:
        raise RenderError("|int would make a number of more than ~1,200 digits")
    return result


def _walking(function: Any) -> Any:
    """A filter paid for by the items it walks (and checked against the deadline on every call)."""
    return _with_value(function, _walked)


# docxtpl templates use Jinja's own filters; these are the ones that only ever read data and make text or data
# of bounded size. Left out on purpose: safe, xmlattr, urlize, pprint, random (not deterministic), and any filter
# reaching object attributes other than data (attr reads through the sandbox's data lookup, so it stays).
FILTERS: dict[str, Any] = {
    **{name: jinja_filters.FILTERS[name] for name in (
        "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "filesizeformat",
        "first", "float", "forceescape", "groupby", "int", "items", "last", "length", "list", "lower", "map",
        "max", "min", "reject", "rejectattr", "reverse", "round", "select", "selectattr", "sort", "string",
        "striptags", "title", "tojson", "trim", "truncate", "unique", "upper", "urlencode", "wordcount")},
    "format": _format,
    "replace": _replace,
    "center": _center,
    "indent": _indent,
    "join": _join,
    "wordwrap": _wordwrap,
    "batch": _batch,
    "slice": _slice,
    "sum": _sum,
}
FILTERS.update({"e": _as_is, "escape": _as_is, "forceescape": _as_is, "tojson": _tojson})
FILTERS.update({name: _listed(FILTERS[name]) for name in YIELDING})
FILTERS["int"] = _whole_number
FILTERS.update({name: _textual(name, FILTERS[name]) for name in TEXTUAL})
FILTERS = {name: _walking(function) if name in WALKING else function for name, function in FILTERS.items()}
TESTS: dict[str, Any] = {name: jinja_tests.TESTS[name] for name in (
    "boolean", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false", "filter", "float", "ge", "gt",
    "greaterthan", "in", "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number",
    "odd", "sameas", "sequence", "string", "test", "true", "undefined", "upper", "==", "!=", "<", "<=", ">", ">=")}
# ASTRA's own filters, named so no template can call them (a tag holding "_astra" is refused).
INTERNAL_FILTERS = {"_astra_runs": runs_xml, "_astra_paragraphs": paragraphs_xml, "_astra_attr": attribute_value,
                    "_astra_span": grid_span, "_astra_fill": cell_fill,
                    "_astra_counted": counted, "_astra_concat": _concat}


class TemplateEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox (see the module docstring)."""

    intercepted_binops = frozenset({"+", "-", "*", "**", "%", "//", "/"})
    intercepted_unops = frozenset({"-", "+"})

    def __init__(self) -> None:
        # optimized=False: Jinja folds constant expressions while compiling, which would run a filter on literals
        # (`[1]|batch(10**9)`) at upload, outside every cap.
        super().__init__(autoescape=True, finalize=finalize, undefined=ChainableUndefined, keep_trailing_newline=True,
                         optimized=False,
                         auto_reload=False, cache_size=0)
        self.filters = {**FILTERS, **INTERNAL_FILTERS}
        self.tests = dict(TESTS)
        self.globals = {"range": self._range}
        self.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}

    @staticmethod
    def _range(*args: int) -> range:
        result = range(*args)
        if len(result) > MAX_RANGE:
            raise RenderError(f"range() of {len(result):,} items (cap {MAX_RANGE:,})")
        return result

    # Data lookups only: a key of a mapping, an item of a sequence, a loop's counters.
    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            return obj[attribute] if attribute in obj else self.undefined(obj=obj, name=attribute)
        if isinstance(obj, LoopContext) and attribute in LOOP_ATTRIBUTES:
            return getattr(obj, attribute)
        if isinstance(obj, jinja_filters._GroupTuple) and attribute in ("grouper", "list"):  # groupby's groups
            return getattr(obj, attribute)
        return self.undefined(obj=obj, name=attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, jinja_filters._GroupTuple) and argument in ("grouper", "list"):  # map(attribute=…)
            return getattr(obj, argument)
        if isinstance(obj, Mapping):
            try:
                return obj[argument] if argument in obj else self.undefined(obj=obj, name=argument)
            except TypeError:  # an unhashable key
                return self.undefined(obj=obj, name=argument)
        if isinstance(obj, (Sequence, str)) and isinstance(argument, (int, slice)) and not isinstance(argument, bool):
            try:
                return obj[argument]
            except IndexError:
                return self.undefined(obj=obj, name=argument)
        return self.undefined(obj=obj, name=argument)

    def call_unop(self, context: Any, operator: str, arg: Any) -> Any:
        _budget()  # the deadline, between operators too
        return self.unop_table[operator](arg)

    def call_filter(self, name: str, value: Any, args: Any = None, kwargs: Any = None, context: Any = None,
                    eval_ctx: Any = None) -> Any:
        """A filter called by name (``map('upper')``, ``select``…): only the template's filters, never ASTRA's own
        (``map('_astra_runs', xml)`` would write the data as raw XML)."""
        if name not in FILTERS:
            raise RenderError(f"no filter named {str(name)[:40]!r}")
        return super().call_filter(name, value, args, kwargs, context, eval_ctx)

    def call_test(self, name: str, value: Any, args: Any = None, kwargs: Any = None, context: Any = None,
                  eval_ctx: Any = None) -> Any:
        if name not in TESTS:
            raise RenderError(f"no test named {str(name)[:40]!r}")
        return super().call_test(name, value, args, kwargs, context, eval_ctx)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _budget()  # the deadline, between operators too
        if operator == "**":
            raise RenderError("'**' is not allowed")
        if operator in ("*", "+") and _is_int(left) and _is_int(right) and (
                abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS):
            raise RenderError(f"'{operator}' would make a number of more than ~1,200 digits")
        if operator == "%" and isinstance(left, str):
            raise RenderError("'%' on text is not allowed: use the format filter")
        if operator == "*" and (_is_sized(left) or _is_sized(right)):
            count = right if _is_sized(left) else left
            size = len(left if _is_sized(left) else right)
            if not isinstance(count, int) or count * size > MAX_REPEAT_CHARS:
                raise RenderError(f"repeating a value to {MAX_REPEAT_CHARS:,}+ items or characters is not allowed")
            spend_chars(max(0, count) * size, "'*'")
        if operator == "+" and _is_sized(left) and _is_sized(right):
            spend_chars(len(left) + len(right), "'+'")
        try:
            return self.binop_table[operator](left, right)
        except ZeroDivisionError:
            raise RenderError(f"division by zero in '{operator}'") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sized(value: object) -> bool:
    return isinstance(value, (str, list, tuple))


class _Bounded(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_astra_counted", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), "_astra_concat", [], [], None, None,
                            lineno=node.lineno)


def bounded(template: nodes.Template) -> nodes.Template:
    """``template`` with every ``for`` iterating through :func:`counted` and every ``~`` paid for before it is made
    (in place; returned)."""
    return _Bounded().visit(template)


__all__ = ["FILTERS", "INTERNAL_FILTERS", "LOOP_ATTRIBUTES", "MAX_RANGE", "TESTS", "RenderBudget",
           "TemplateEnvironment", "attribute_value", "bounded", "counted", "finalize", "spend_chars",
           "paragraphs_xml", "runs_xml"]
