"""What a docxtpl template may write, and what its zones are: both read off Jinja's own syntax tree.

:func:`check_allowed` refuses (``jinja_forbidden``, naming the tag) anything outside the allow-list: a filter or
test not in :mod:`astra.template_language.sandbox`, an attribute beginning with ``_`` (``__class__``), a call other
than ``range(<literal>)`` and ``loop.cycle(...)``, ``import``/``include``/``extends``/``macro``/``call``/``block``,
``{% filter %}`` blocks (they would rewrite the document's XML, not its text), ``{% autoescape %}``, recursive
loops, ``**``, and a loop without a bound (``range`` of anything but a literal up to
:data:`~astra.template_language.sandbox.MAX_RANGE`).

:func:`find_zones` gives each top-level name (``jinja2.meta.find_undeclared_variables``) its kind by the shape it
is used with (design: docs/templates.md): iterated by a row loop -> ``table``; by any other loop -> ``list``;
read with attributes or indexes -> ``record``; written or computed with -> ``text``; only tested -> ``flag``.
A loop's ``fields`` are the attributes read on its loop variable; a record's, those read on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from jinja2 import meta, nodes

from .errors import TemplateLanguageError
from .sandbox import FILTERS, INTERNAL_FILTERS, MAX_RANGE, TESTS
from .source import PartSource, Tag

ZONE_ID_MAX = 64
KIND_RANK = {"table": 5, "list": 4, "record": 3, "text": 2, "flag": 1}
_GLOBALS = frozenset({"range", "loop", "_astra_raw"})
_ALLOWED = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.Const, nodes.Name, nodes.Getattr,
            nodes.Getitem, nodes.Slice, nodes.Filter, nodes.Test, nodes.CondExpr, nodes.And, nodes.Or, nodes.Not,
            nodes.Neg, nodes.Pos, nodes.Compare, nodes.Operand, nodes.Add, nodes.Sub, nodes.Mul, nodes.Div,
            nodes.FloorDiv, nodes.Mod, nodes.Concat, nodes.List, nodes.Tuple, nodes.Dict, nodes.Pair,
            nodes.Keyword, nodes.For, nodes.If, nodes.Assign, nodes.AssignBlock, nodes.With, nodes.Call)
_REFUSED = {
    nodes.Macro: "macros are not allowed", nodes.CallBlock: "call blocks are not allowed",
    nodes.Import: "import is not allowed", nodes.FromImport: "import is not allowed",
    nodes.Include: "include is not allowed", nodes.Extends: "extends is not allowed",
    nodes.Block: "blocks are not allowed",
    nodes.FilterBlock: "{% filter %} blocks are not allowed (they would rewrite the document's XML, not its text)",
    nodes.Scope: "{% autoescape %} is not allowed (escaping is always on)",
    nodes.ScopedEvalContextModifier: "{% autoescape %} is not allowed (escaping is always on)",
    nodes.EvalContextModifier: "{% autoescape %} is not allowed (escaping is always on)",
    nodes.Pow: "'**' is not allowed", nodes.NSRef: "namespace assignments are not allowed",
    nodes.AssignBlock: "{% set x %}…{% endset %} is not allowed (it would capture the document's XML as a value): "
                       "use {% set x = … %}",
}


@dataclass
class ZoneUse:
    id: str
    kind: str
    fields: list[str] = field(default_factory=list)
    part: str = ""
    tag: Tag | None = None
    mark: tuple | None = None  # how to mark it: ("inline"|"block"|"table", tag) or ("range", start, end)


def _walk(node: nodes.Node, path: tuple = ()) -> Iterator[tuple[nodes.Node, tuple]]:
    """Every node under ``node`` with its path of (ancestor, field) pairs from the root."""
    yield node, path
    for name, value in node.iter_fields():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, nodes.Node):
                yield from _walk(item, (*path, (node, name)))


def _fail(source: PartSource, node: nodes.Node, message: str) -> TemplateLanguageError:
    """The refusal, naming the tag ``node`` (or the first node under it with a line of its own) comes from."""
    tag = None
    for candidate in (node, *node.find_all(nodes.Node)):
        tag = source.tag_at(getattr(candidate, "lineno", None))
        if tag is not None:
            break
    where = f"{tag.written!r}: " if tag else ""
    return TemplateLanguageError("jinja_forbidden", where + message,
                                 tag.location if tag else {"part": "/" + source.part})


def check_allowed(template: nodes.Template, source: PartSource) -> None:
    for node, path in _walk(template):
        for kind, why in _REFUSED.items():
            if isinstance(node, kind):
                raise _fail(source, node, why)
        if not isinstance(node, _ALLOWED):
            raise _fail(source, node, f"{type(node).__name__} is not allowed in a template")
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise _fail(source, node, f"attribute {node.attr!r}: only data is readable (no '_' names)")
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and \
                isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
            raise _fail(source, node, f"item {node.arg.value!r}: only data is readable (no '_' names)")
        if isinstance(node, nodes.Filter) and node.name not in FILTERS and not (
                node.name in INTERNAL_FILTERS and _generated(source, node)):
            raise _fail(source, node, f"unknown filter {node.name!r} (allowed: {', '.join(sorted(FILTERS))})")
        if isinstance(node, nodes.Test) and node.name not in TESTS:
            raise _fail(source, node, f"unknown test {node.name!r} (allowed: {', '.join(sorted(TESTS))})")
        if isinstance(node, nodes.Name) and node.ctx in ("store", "param") and (
                node.name in ("loop", "range") or node.name.startswith("_")):
            raise _fail(source, node, f"name {node.name!r} cannot be assigned: it is the template's own "
                        "(loop's state, range, or a '_' name)")
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name.startswith("__"):
            raise _fail(source, node, f"name {node.name!r}: names beginning with '__' are not data")
        if isinstance(node, nodes.For) and node.recursive:
            raise _fail(source, node, "recursive loops are not allowed (their depth has no bound)")
        if isinstance(node, nodes.Call):
            _check_call(node, path, source)
        _check_value_use(node, path, source)
        if isinstance(node, _BLOCKS) and sum(isinstance(a, _BLOCKS) for a, _ in path) >= MAX_BLOCK_DEPTH:
            raise _fail(source, node, f"loops nested more than {MAX_BLOCK_DEPTH} deep")


MAX_BLOCK_DEPTH = 16  # loops in loops: Python compiles at most 20 nested loops (an if or a with is no such block)
_BLOCKS = (nodes.For,)


def _check_value_use(node: nodes.Node, path: tuple, source: PartSource) -> None:
    """``range`` only called, ``loop`` only read by its counters, ``loop.cycle``/``loop.changed`` only called:
    as values they are a function or Jinja's own state, printed as a memory address."""
    parent, where = path[-1] if path else (None, None)
    called = isinstance(parent, nodes.Call) and where == "node"
    if isinstance(node, nodes.Name) and node.ctx == "load" and node.name == "range" and not called:
        raise _fail(source, node, "range is only called (range(<number>)), never used as a value")
    if isinstance(node, nodes.Name) and node.ctx == "load" and node.name == "loop" and not (
            isinstance(parent, nodes.Getattr) and where == "node"):
        raise _fail(source, node, "loop is only read by its counters (loop.index, loop.first…)")
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == "loop" and \
            node.attr in ("cycle", "changed") and not called:
        raise _fail(source, node, f"loop.{node.attr} is only called (loop.{node.attr}(…))")


def _generated(source: PartSource, node: nodes.Node) -> bool:
    """ASTRA's own filters appear only in tags ASTRA wrote (a template's tag holding ``_astra`` is refused)."""
    tag = source.tag_at(node.lineno)
    return tag is not None and "_astra" not in tag.written


def _check_call(node: nodes.Call, path: tuple, source: PartSource) -> None:
    callee = node.node
    if isinstance(callee, nodes.Getattr) and isinstance(callee.node, nodes.Name) and callee.node.name == "loop" \
            and callee.attr == "cycle" and not node.dyn_args and not node.dyn_kwargs:
        return
    if isinstance(callee, nodes.Name) and callee.name == "range":
        if node.kwargs or node.dyn_args or node.dyn_kwargs or not 1 <= len(node.args) <= 3 or not all(
                isinstance(arg, nodes.Const) and isinstance(arg.value, int) for arg in node.args):
            raise _fail(source, node, "a loop without a bound: range() takes literal numbers only (loop over "
                        "the data instead)")
        if len(range(*(arg.value for arg in node.args))) > MAX_RANGE:
            raise _fail(source, node, f"range() of more than {MAX_RANGE:,} items")
        return
    raise _fail(source, node, "calls are not allowed (only range(<number>) and loop.cycle(...)); "
                "for a mapping's items use the 'items' filter")


# --------------------------------------------------------------------------- zones


def _root_name(node: nodes.Node) -> nodes.Name | None:
    """The name under a chain of filters (``X|sort|reverse`` -> X)."""
    while isinstance(node, nodes.Filter):
        node = node.node
    return node if isinstance(node, nodes.Name) else None


def _bound_here(path: tuple, name: str) -> bool:
    """Whether ``name`` is bound by a loop or ``with`` around the node (in the loop's body, not its iterable)."""
    for ancestor, where in path:
        if isinstance(ancestor, nodes.For) and where in ("body", "else_", "test"):
            if any(n.name == name for n in ancestor.target.find_all(nodes.Name)) or \
                    (isinstance(ancestor.target, nodes.Name) and ancestor.target.name == name):
                return True
        if isinstance(ancestor, nodes.With) and where == "body":
            if any(isinstance(t, nodes.Name) and t.name == name for t in ancestor.targets):
                return True
    return False


def _fields_of(variable: nodes.Node, body: list[nodes.Node]) -> list[str]:
    """Attributes (and string keys) read on a loop variable in the loop's body."""
    if not isinstance(variable, nodes.Name):
        return []
    found: list[str] = []
    for statement in body:
        for node, _ in _walk(statement):
            key = None
            if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and \
                    node.node.name == variable.name:
                key = node.attr
            elif isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) and \
                    node.node.name == variable.name and isinstance(node.arg, nodes.Const) and \
                    isinstance(node.arg.value, str):
                key = node.arg.value
            if key is not None and key not in found:
                found.append(key)
    return found


def find_zones(template: nodes.Template, source: PartSource, zones: dict[str, ZoneUse]) -> None:
    """Add the zones ``template`` (the part ``source``) uses to ``zones`` (by id, first use first)."""
    names = meta.find_undeclared_variables(template) - _GLOBALS
    for node, path in _walk(template):
        if not (isinstance(node, nodes.Name) and node.ctx == "load" and node.name in names):
            continue
        if _bound_here(path, node.name):
            continue
        kind, fields, mark = _use(node, path, source)
        tag = source.tag_at(node.lineno)
        if len(node.name) > ZONE_ID_MAX or not node.name.isascii():
            raise TemplateLanguageError(
                "bad_zone_id", f"{tag.written if tag else node.name!r}: name {node.name!r} must be ASCII letters, "
                f"digits and '_', at most {ZONE_ID_MAX} characters", tag.location if tag else None)
        zone = zones.get(node.name)
        if zone is None:
            zones[node.name] = ZoneUse(node.name, kind, list(fields), source.part, tag)
            zone = zones[node.name]
        else:
            if KIND_RANK[kind] > KIND_RANK[zone.kind]:
                zone.kind = kind
            zone.fields += [f for f in fields if f not in zone.fields]
        if mark is not None and zone.mark is None:
            zone.mark = mark
    for zone in zones.values():  # a mark made for one kind does not fit a zone another use made bigger
        if zone.mark is not None and zone.mark[-1] != zone.kind:
            zone.mark = None


def _use(node: nodes.Name, path: tuple, source: PartSource) -> tuple[str, list[str], tuple | None]:
    """(kind, fields, mark) of one use of a top-level name."""
    chain = list(reversed(path))
    i = 0
    while i < len(chain) and isinstance(chain[i][0], nodes.Filter) and chain[i][1] == "node":
        i += 1
    parent, where = chain[i] if i < len(chain) else (None, None)
    top = len(path) >= 2 and isinstance(path[0][0], nodes.Template) and i == len(chain) - 2
    if isinstance(parent, nodes.For) and where == "iter":
        tag = source.tag_at(parent.lineno)
        kind = "table" if tag is not None and tag.level == "tr" else "list"
        fields = _fields_of(parent.target, parent.body)
        mark = None
        if len(path) == 2 + i and isinstance(path[0][0], nodes.Template) and tag is not None:
            if tag.level == "tr":
                mark = ("table", tag, kind)
            elif tag.level == "p":
                end = _matching_end(source, tag)
                if end is not None and end.level == "p":
                    mark = ("range", tag, end, kind)
        return kind, fields, mark
    if isinstance(parent, nodes.Getattr) and where == "node":
        return "record", [parent.attr], None
    if isinstance(parent, nodes.Getitem) and where == "node":
        arg = parent.arg
        return "record", [arg.value] if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else [], None
    if any(isinstance(a, (nodes.If, nodes.CondExpr)) and w == "test" or isinstance(a, nodes.Test) and w == "node"
           for a, w in path):
        return "flag", [], None
    mark = None
    if top and isinstance(parent, nodes.Output):
        tag = source.tag_at(node.lineno)
        if tag is not None and tag.opener == "{{":
            form = "block" if tag.level == "p" else "inline"
            mark = (form, tag, "text")
    return "text", [], mark


def _matching_end(source: PartSource, start: Tag) -> Tag | None:
    """The ``{% endfor %}`` closing the ``{% for %}`` of ``start``, counting loops between them."""
    tags = source.tags_in_source()
    depth = 0
    for tag in tags[tags.index(start):]:
        word = tag.inner.split(None, 1)[0] if tag.inner else ""
        if tag.opener != "{%":
            continue
        if word == "for":
            depth += 1
        elif word == "endfor":
            depth -= 1
            if depth == 0:
                return tag
    return None
