"""Labelled utterances in CLINC150's JSON layout, and the domain map (``domains.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from astra.settings import DEFAULT_INTENT_CATALOG

OOS = "oos"  # CLINC150's label for out-of-scope utterances
DEFAULT_DATASET = Path(DEFAULT_INTENT_CATALOG).parent / "clinc150_full_train_val.json"
# Splits that hold the labelled examples of each role, in order of preference.
TRAIN_SPLITS = (("train", "oos_train"),)
EVAL_SPLITS = (("val", "oos_val"), ("test", "oos_test"))


class DataError(ValueError):
    """A data file that is not in CLINC150's layout; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Example:
    text: str
    intent: str  # "oos" for out-of-scope
    domain: str | None = None  # for an intent the domain map does not know (e.g. a tenant's own)


def read_dataset(path: str | Path) -> dict:
    """The JSON object in ``path`` (a file, or a directory holding ``clinc150_full_train_val.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_DATASET.name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except RecursionError:  # json nests one Python call per bracket
        raise DataError(f"{path}: not JSON (nested too deeply)") from None
    except ValueError as exc:  # not UTF-8, not JSON, or an integer past Python's digit limit
        raise DataError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with CLINC150 splits")
    data["__path__"] = str(path)
    return data


def examples(data: dict, split: str) -> list[Example]:
    """The rows of one split, each checked to be ``[text, intent]`` with non-empty strings."""
    rows = data.get(split)
    if not isinstance(rows, list):
        raise DataError(f"{data.get('__path__')}: split {split!r} is missing or not a list")
    out = []
    for n, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 2 and all(isinstance(v, str) and v.strip() for v in row)):
            raise DataError(f"{data.get('__path__')}: {split}[{n}] is not [text, intent]")
        if not all(_is_unicode_text(v) for v in row):
            raise DataError(f"{data.get('__path__')}: {split}[{n}] holds a lone surrogate (\\ud800-\\udfff), not text")
        out.append(Example(row[0], row[1]))
    return out


def _is_unicode_text(value: str) -> bool:
    """JSON may spell lone UTF-16 surrogates (``"\\ud800"``); a model stores its texts as UTF-8, which has none."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def split_pair(data: dict, choices: tuple[tuple[str, str], ...]) -> list[Example]:
    """In-scope and out-of-scope rows of the first split pair the file has (e.g. val + oos_val). The in-scope split
    must have rows: there is nothing to train or measure without them (the out-of-scope one may be empty)."""
    for in_scope, out_of_scope in choices:
        if in_scope in data:
            rows = examples(data, in_scope)
            if not rows:
                raise DataError(f"{data.get('__path__')}: split {in_scope!r} is empty")
            oos = examples(data, out_of_scope) if out_of_scope in data else []
            return rows + [Example(e.text, OOS) for e in oos]
    wanted = " or ".join(f"{a}/{b}" for a, b in choices)
    raise DataError(f"{data.get('__path__')}: no {wanted} split")


def training_examples(path: str | Path = DEFAULT_DATASET) -> list[Example]:
    return split_pair(read_dataset(path), TRAIN_SPLITS)


def evaluation_examples(path: str | Path) -> list[Example]:
    return split_pair(read_dataset(path), EVAL_SPLITS)


def read_domains(path: str | Path = DEFAULT_INTENT_CATALOG) -> dict[str, str]:
    """intent -> domain from a ``{domain: [intent, ...]}`` file."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: cannot read the domain map ({exc or type(exc).__name__})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise DataError(f"{path}: expected an object mapping domain -> list of intents")
    return {intent: domain for domain, intents in raw.items() for intent in intents}
