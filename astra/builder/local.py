"""A document from local files, with no platform: what ``astra build`` runs (ISSUE 9 §3).

Two ways to fill a template's zones, both ending in :func:`astra.builder.engine.build`:

* :func:`build_from_context`: a JSON object keyed by zone id (structured data, no speech).
* :func:`render_context`: a docxtpl template (:func:`astra.template_language.uses_jinja`) and a JSON object of the
  names its tags read, rendered as it is (docxtpl's own use, with ASTRA's sandbox, caps and escaping): no zone map,
  so a template the platform would refuse for want of a fallback zone renders too.
* :func:`build_from_session`: a session folder through CORE, then BUILDER, as the platform's assets do it, with
  local stand-ins for what the platform serves: the local intent model instead of IntentService, the folder's
  files instead of the handover's durable copies.

A session folder is either what ``astra session upload`` takes (judged by the upload's own rules: exactly one
file per role at most, supported types, nothing else, no symlink out of the folder) or such a folder with its
``manifest.json``, as it sits in the uploads bucket (judged as the session sensor judges an upload: the published
schema, and every file it names present; files it does not name are left out, as the handover leaves them).
The manifest gives the session's locale.

The transcript is the session's transcript file, else speech recognition of its audio with the in-domain LM (the
one the transcript asset builds, from the same cache), else empty (a data-only session). The utterances are
classified by the local model (``astra core train`` makes it) and bound with the session's ``data/`` tables to the
template's zones by :func:`astra.core.binding.bind`; ``media/`` images fill the image zones.

Bad input is a :class:`BadInput` (or the refusing engine's own error) with one line; nothing is written then.
What the platform reports rather than refuses (a malformed data file, a bad image, an utterance out of scope)
stays a problem of the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from astra.builder.cells import LOCALES as CELL_LOCALES
from astra.builder.engine import BuildCaps, BuildProblem, BuildResult, build
from astra.core.audio import DEFAULT_MAX_SECONDS
from astra.core.binding import bind, normalise_locale
from astra.core.core_client import Classified, IntentAnswer
from astra.core.data import DataProblem, DataSet, Limits, read_tables
from astra.core.intent.model import IntentModel
from astra.core.intent.store import BASE_TENANT, resolve_model, tenant_dir
from astra.core.intent_output import Classify, classify_utterances
from astra.core.transcribe import LM_CACHE, LanguageModelSource, choose_source, empty_document, recognize_file
from astra.core.transcript import parse_transcript, transcript_document
from astra.ingest.audit import AuditLimits, audit
from astra.ingest.zones import TemplateRefused, extract_maps
from astra.orchestrator.manifest import MAX_MANIFEST_BYTES, ManifestRejected, check_schema
from astra.orchestrator.upload import read_session_folder, session_roles
from astra.settings import Settings
from astra.stack.stack import state_dir
from astra.template_language import JinjaTemplate, RenderError, TemplateLanguageError

MANIFEST = "manifest.json"

Progress = Callable[[str], None]


class BadInput(ValueError):
    """The command's input is wrong: one line, nothing written."""


@dataclass(frozen=True)
class Template:
    docx: bytes
    zone_map: dict
    style_map: dict


@dataclass(frozen=True)
class LocalSession:
    """A session folder: its files by path in the session (``data/readings.csv``) and role, and its locale."""

    root: Path
    files: tuple[dict, ...]  # {"role", "path"}, as a handover record lists them (choose_source reads these)
    locale: str | None  # the manifest's, when the folder has one

    def paths(self, role: str) -> list[str]:
        return sorted(f["path"] for f in self.files if f["role"] == role)

    def file(self, path: str) -> Path:
        return self.root / path


@dataclass(frozen=True)
class SessionBuild:
    result: BuildResult
    transcript: dict
    intent_output: dict
    problems: list[BuildProblem]  # the build's, plus media left out before the build (too large to read)


# --------------------------------------------------------------------------- files

# A data file or sidecar is text typed or exported by hand: far under this, which refuses a wrong path (a disk image,
# a log) at once instead of parsing it.
MAX_JSON_BYTES = 16 * 1024 * 1024
# All the image files a data file names, each counted once. Pictures are stored scaled down to their shown size, so
# what is read may well exceed the document's picture cap (BuildCaps.max_document_image_bytes), but not by this much.
MAX_CONTEXT_IMAGE_BYTES = 4 * BuildCaps().max_document_image_bytes


def read_bytes(path: Path, what: str, max_bytes: int) -> bytes:
    """A regular file's bytes, refused unread when it is something else (a folder, a device such as /dev/zero, a
    FIFO) or larger than ``max_bytes``."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # judged before opening: opening a device or FIFO can block
            kind = "a folder" if path.is_dir() else "not a regular file"
            raise BadInput(f"{what} is {kind}: {path}")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO swapped in since does not block
    except FileNotFoundError:
        raise BadInput(f"{what} not found: {path}") from None
    except OSError as exc:
        raise BadInput(f"{what} cannot be read: {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise BadInput(f"{what} is not a regular file: {path}")
        size = opened.st_size
        if size <= max_bytes:
            data = fh.read(max_bytes + 1)  # no more, whatever the size said: the file may be growing
            size = len(data)
    if size > max_bytes:
        raise BadInput(f"{what} {path} is larger than the {max_bytes}-byte limit")
    return data


def read_json(path: Path, what: str) -> object:
    raw = read_bytes(path, what, MAX_JSON_BYTES)
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{what} {path} is not valid JSON: {exc}") from None
    except ValueError:  # the one other ValueError of json.loads: an integer past Python's int-string limit
        raise BadInput(f"{what} {path} holds an integer of more than {sys.get_int_max_str_digits()} digits") \
            from None
    except RecursionError:
        raise BadInput(f"{what} {path} nests arrays or objects too deep to read") from None


def check_output(path: Path, template: Path, inputs: tuple[Path | None, ...] = ()) -> None:
    """Judge ``--out`` before a build, which may take seconds of speech: a ``.docx`` file (new, or a regular file to
    replace) in a folder that exists and can be written, and none of the command's inputs (nothing given is lost)."""
    if path.suffix.lower() != ".docx":
        raise BadInput(f"--out {path} does not end in .docx: name the document to write")
    if path.is_symlink():  # os.replace would replace the link itself, not the file it names
        raise BadInput(f"--out {path} is a symbolic link: name the file itself")
    if path.exists():
        if path.is_dir():
            raise BadInput(f"--out {path} is a folder: name the .docx file to write in it")
        if not path.is_file():  # a device, a FIFO: replacing it would remove it
            raise BadInput(f"--out {path} is not a regular file")
        if template.exists() and path.samefile(template):
            raise BadInput(f"--out {path} is the template itself: write the document elsewhere")
        for given in inputs:
            if given is not None and given.exists() and path.samefile(given):
                raise BadInput(f"--out {path} is one of the inputs ({given}): write the document elsewhere")
    folder = path.parent
    if not folder.is_dir():
        raise BadInput(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"output folder is not writable: {folder}")


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, then rename it over ``path``: a failed write leaves
    nothing behind, and an existing file is replaced whole or not at all. The file gets the mode of any new file
    (0666 less the umask), not the owner-only mode of a temporary file."""
    tmp = path.parent / f".astra-build-{secrets.token_hex(8)}.docx"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_locale(locale: str) -> None:
    """A ``--locale`` the builder has no date and number format for is refused: a typo would otherwise give ISO
    dates without a word."""
    if not locale_format_known(locale):
        known = ", ".join(sorted(CELL_LOCALES))
        raise BadInput(f"--locale {locale!r}: no date and number format for it (known: {known}; "
                       "without --locale, dates are ISO)")


def locale_format_known(locale: str) -> bool:
    """Whether table cells are written in ``locale``'s format (matched as :class:`CellFormat` matches it: the tag,
    then the language) rather than ISO."""
    tag = normalise_locale(locale)
    return tag in CELL_LOCALES or tag.split("-")[0] in CELL_LOCALES


def read_template(path: Path) -> bytes:
    """The template's bytes, refused as INGEST's audit refuses an upload."""
    docx = read_bytes(path, "template", AuditLimits().max_upload_bytes)
    report = audit(docx, path.name)
    if not report.passed:
        first = report.refusals[0]
        raise BadInput(f"template refused: {first.code} at {first.location}: {first.message}")
    return docx


def load_template(path: Path, sidecar_path: Path | None) -> Template:
    """The template, refused as INGEST refuses an upload (the audit, then the zone grammar), and its maps."""
    return template_maps(read_template(path), sidecar_path)


def template_maps(docx: bytes, sidecar_path: Path | None) -> Template:
    """The audited template's maps, as INGEST makes them (the zone grammar, or a docxtpl template's zones)."""
    sidecar = read_json(sidecar_path, "sidecar") if sidecar_path else None
    try:
        maps = extract_maps(docx, sidecar)
    except TemplateRefused as exc:
        raise BadInput(f"template refused: {exc}") from None
    return Template(docx, maps.zone_map, maps.style_map)


# --------------------------------------------------------------------------- --data: a JSON object by zone id


def build_from_context(template: Template, context_path: Path, locale: str | None, *,
                       max_image_bytes_total: int = MAX_CONTEXT_IMAGE_BYTES) -> BuildResult:
    """The document of a JSON object keyed by zone id (``astra build --data``). An image it names that the
    builder refuses is bad input here: the user named that very file."""
    context = read_json(context_path, "data file")
    intent_output, media = context_intent_output(template.zone_map, context, context_path.parent, locale,
                                                 max_image_bytes_total=max_image_bytes_total)
    result = build(template.docx, template.zone_map, template.style_map, intent_output, media, locale=locale)
    refused = [p for p in result.problems if p.code == "image_refused"]
    if refused:
        raise BadInput(f"zone {refused[0].zone!r}: image refused: {refused[0].detail}")
    return result


def render_context(docx: bytes, context_path: Path, caps: BuildCaps = BuildCaps()) -> BuildResult:
    """A docxtpl template rendered with the JSON object of ``context_path`` as its context, as it is. A name of the
    object the template does not read is a problem of the result (``unused_data``: a misspelt name shows nothing)."""
    try:
        template = JinjaTemplate.read(docx)
    except TemplateLanguageError as exc:
        raise BadInput(f"template refused: {exc}") from None
    context = read_json(context_path, "data file")
    if not isinstance(context, dict):
        raise BadInput("the data file must hold a JSON object keyed by the names the template reads")
    try:
        rendered = template.render(context, caps.render)
    except RenderError as exc:
        raise BadInput(f"the template cannot be rendered with this data: {exc}") from None
    fills = {}
    for zone in template.zones:
        value = context.get(zone.id)
        if isinstance(value, list):
            items = len(value)
        else:
            items = int(bool(value)) if zone.kind == "flag" else int(value is not None)
        fills[zone.id] = {"kind": zone.kind, "items": items}
    read = {zone.id for zone in template.zones}
    problems = [BuildProblem(name, "unused_data", f"the template reads no name {name!r}: left out")
                for name in context if name not in read]
    return BuildResult(rendered, hashlib.sha256(rendered).hexdigest(), dict(sorted(fills.items())), problems)


def context_intent_output(zone_map: dict, context: object, base: Path, locale: str | None, *,
                          max_image_bytes_total: int = MAX_CONTEXT_IMAGE_BYTES) -> tuple[dict, dict]:
    """The JSON object as an intent output document (what CORE hands BUILDER) and its media (see
    :class:`_ContextImages`)."""
    if not isinstance(context, dict):
        raise BadInput("the data file must hold a JSON object keyed by zone id")
    kinds = {z["id"]: z["kind"] for z in zone_map["zones"]}
    unknown = [key for key in context if key not in kinds]
    if unknown:
        raise BadInput(f"the data names zone {unknown[0]!r}, which the template does not declare "
                       f"(zones: {', '.join(kinds)})")
    utterances: list[dict] = []
    tables: list[dict] = []
    images = _ContextImages(base, max_image_bytes_total)
    zones = []
    for zone_id, kind in kinds.items():
        entry: dict = {"id": zone_id, "kind": kind, "utterances": [], "tables": []}
        value = context.get(zone_id)
        if value is None:
            zones.append(entry)
            continue
        if kind == "text":
            texts = [_expect(isinstance(value, str), value, zone_id, "a string")]
        elif kind == "list":
            texts = _expect(isinstance(value, list) and all(isinstance(v, str) for v in value), value, zone_id,
                            "a list of strings")
        else:
            texts = []
        for text in texts:
            utterances.append({"id": f"{zone_id}-{len(utterances) + 1}", "text": text, "speaker": None})
            entry["utterances"].append(utterances[-1]["id"])
        if kind == "table":
            _expect(isinstance(value, list) and value and all(isinstance(v, dict) for v in value), value, zone_id,
                    "a non-empty list of objects")
            dataset = read_tables([(f"data/{zone_id}.json", json.dumps(value).encode("utf-8"))])
            if dataset.problems:
                raise BadInput(f"zone {zone_id!r}: {dataset.problems[0].detail}")
            tables.append(dataset.tables[0].to_json())
            entry["tables"].append(tables[-1]["id"])
        if kind == "image":
            paths = [value] if isinstance(value, str) else value
            _expect(isinstance(paths, list) and paths and all(isinstance(p, str) for p in paths), value, zone_id,
                    "a file path or a list of file paths")
            entry["media"] = [images.name(raw, zone_id) for raw in paths]
        zones.append(entry)
    return {"locale": locale, "utterances": utterances, "tables": tables, "zones": zones}, images.media


class _ContextImages:
    """The image files a data file names, read once per file however often and however spelled it is named
    (``site.png``, ``./site.png``, its absolute path, a link to it: one resolved path, one read, one media name),
    each under the builder's per-image cap and all together under ``max_total_bytes``, judged from each file's size
    before it is read. A data file naming one 20 MB photo in a thousand zones reads 20 MB, and one naming a
    thousand photos is refused before reading gigabytes."""

    def __init__(self, base: Path, max_total_bytes: int) -> None:
        self.base, self.max_total_bytes = base, max_total_bytes
        self.media: dict[str, bytes] = {}  # media name (the file's first spelling) -> bytes
        self.names: dict[Path, str] = {}  # resolved path -> media name
        self.total = 0

    def name(self, raw: str, zone_id: str) -> str:
        """The media name of the file ``raw`` names, reading the file if it is new."""
        what = f"image for zone {zone_id!r}"
        if "\x00" in raw:  # no file name holds one (the OS calls refuse it with a ValueError)
            raise BadInput(f"{what} names no file: the path {raw!r} holds a NUL character")
        path = Path(raw) if Path(raw).is_absolute() else self.base / raw
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop (Python < 3.13)
            raise BadInput(f"{what} cannot be read: {path}: {exc}") from None
        if resolved not in self.names:
            per_image = BuildCaps().max_image_bytes
            try:
                size = min(resolved.stat().st_size, per_image)  # one over the per-image cap: read_bytes says so
            except OSError:
                size = 0  # read_bytes says what is wrong with it
            self._count(size, path)  # before reading: a file past the total is not read at all
            data = read_bytes(path, what, per_image)
            self._count(len(data) - size, path)  # it may have grown or shrunk since
            self.names[resolved] = raw
            self.media[raw] = data
        return self.names[resolved]

    def _count(self, size: int, path: Path) -> None:
        self.total += size
        if self.total > self.max_total_bytes:
            raise BadInput(f"the images the data file names come to more than {self.max_total_bytes} bytes together "
                           f"(at {path}): name fewer or smaller images")


def _expect(ok: bool, value: object, zone_id: str, shape: str):
    if not ok:
        raise BadInput(f"zone {zone_id!r} needs {shape}, not {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- --session: a session folder


def read_session(folder: Path) -> LocalSession:
    """The session folder, judged (see the module docstring). Raises UnsupportedSession, ManifestRejected or
    BadInput, each with one line."""
    if not (folder / MANIFEST).exists() and not (folder / MANIFEST).is_symlink():
        files = read_session_folder(folder)
        by_role = session_roles(files)
        entries = tuple({"role": role, "path": path} for role, paths in sorted(by_role.items()) for path in paths)
        return LocalSession(folder.resolve(), entries, None)
    root = folder.resolve()
    manifest_path = folder / MANIFEST
    where = str(manifest_path)
    if not manifest_path.is_file() or not manifest_path.resolve().is_relative_to(root):
        raise ManifestRejected(where, "not a file of the folder")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestRejected(where, f"manifest is {manifest_path.stat().st_size} bytes, more than "
                                      f"{MAX_MANIFEST_BYTES}")
    try:
        doc = json.loads(manifest_path.read_bytes())
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON; absurd nesting
        raise ManifestRejected(where, f"not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    check_schema(where, doc)
    named = [("audio", doc.get("audio")), ("transcript", doc.get("transcript"))]
    named += [("data", p) for p in doc["data"]] + [("media", p) for p in doc["media"]]
    entries = tuple({"role": role, "path": path} for role, path in named if path)
    absent = [f["path"] for f in entries if not _inside(root, folder / f["path"])]
    if absent:
        raise ManifestRejected(where, f"names files that are not in the folder: {', '.join(absent)}")
    return LocalSession(root, entries, doc.get("locale"))


def _inside(root: Path, path: Path) -> bool:
    """A regular file of the folder (a symlink may lead to another file of it, not out of it)."""
    return path.is_file() and path.resolve().is_relative_to(root)


def default_language_model() -> LanguageModelSource:
    """The in-domain LM the transcript asset uses: built from the intent catalog's training utterances, cached
    under the state dir."""
    return LanguageModelSource.beside_catalog(Settings.from_env().intent_catalog, state_dir() / LM_CACHE)


def load_intent_model(model: Path | None) -> IntentModel:
    """The local intent model: ``model`` (a model directory, or a tenant directory whose LATEST names one), by
    default the base model ``astra core train`` saves under the state dir."""
    path = model if model is not None else tenant_dir(BASE_TENANT)
    try:
        return IntentModel.load(resolve_model(path))
    except FileNotFoundError:
        if model is None:
            raise BadInput(f"no intent model: {path} holds none; run `astra core train` (or pass --model DIR)") \
                from None
        raise BadInput(f"--model {model}: no model there; run `astra core train` or name a model directory") \
            from None


def local_classifier(model: IntentModel) -> Classify:
    """IntentService's Classify answered by the model in this process."""
    def classify(texts: Sequence[str]) -> Classified:
        return Classified(model.version, [IntentAnswer(p.intent, p.domain, p.confidence, p.oos)
                                          for p in model.classify(texts)])
    return classify


def session_transcript(session: LocalSession, lm_source: LanguageModelSource, progress: Progress,
                       max_audio_seconds: float = DEFAULT_MAX_SECONDS) -> dict:
    """The transcript document from the source the transcript asset would choose (transcript, audio, none)."""
    source, f = choose_source({"files": session.files})
    if source == "manifest":
        utterances = parse_transcript(session.file(f["path"]))
        return transcript_document(utterances, source="manifest", origin=f["path"])
    if source == "none":
        return empty_document()
    progress(f"transcribing {f['path']} (speech recognition, in-domain LM)")
    return recognize_file(session.file(f["path"]), f["path"], lm_source, max_audio_seconds)


def session_data(session: LocalSession, limits: Limits = Limits()) -> DataSet:
    """Tables and problems of the session's ``data/`` files; a file over the size cap is refused unread."""
    files, refused = [], []
    for path in session.paths("data"):
        size = session.file(path).stat().st_size
        if size > limits.max_bytes:
            refused.append(DataProblem(path, "too_large", f"{size} bytes, over the {limits.max_bytes}-byte cap"))
        else:
            files.append((path, session.file(path).read_bytes()))
    data = read_tables(files, limits)
    data.problems = sorted([*refused, *data.problems], key=lambda p: (p.source, p.sheet or ""))
    return data


def session_media(session: LocalSession, caps: BuildCaps) -> tuple[dict[str, bytes], list[BuildProblem]]:
    """The session's images by path (``media/site.png``); one over the builder's byte cap is left out unread."""
    media, problems = {}, []
    for path in session.paths("media"):
        size = session.file(path).stat().st_size
        if size > caps.max_image_bytes:
            too_large = f"{path}: too_large: {size} bytes, over the {caps.max_image_bytes}-byte limit"
            problems.append(BuildProblem(None, "image_refused", too_large))
        else:
            media[path] = session.file(path).read_bytes()
    return media, problems


def build_from_session(template: Template, session: LocalSession, *, model: Path | None = None,
                       lm_source: LanguageModelSource | None = None, locale: str | None = None,
                       caps: BuildCaps = BuildCaps(), progress: Progress = lambda step: None) -> SessionBuild:
    """The session's document: transcript, classified by the local model, bound with its data to the template's
    zones, built with its media. ``locale`` (else the manifest's) is the session's locale."""
    locale = locale or session.locale
    source, _ = choose_source({"files": session.files})
    # The model is loaded before speech recognition: a missing model is said now, not after the audio.
    if source != "none":
        progress("loading the intent model")
    intent_model = None if source == "none" else load_intent_model(model)
    transcript = session_transcript(session, lm_source or default_language_model(), progress)
    progress(f"classifying {transcript['utterance_count']} utterances")
    classified, model_version = ([], None) if intent_model is None else \
        classify_utterances(transcript["utterances"], local_classifier(intent_model))
    intent_output = bind(template.zone_map, classified, session_data(session), locale=locale,
                         model_version=model_version)
    progress("building the document")
    media, left_out = session_media(session, caps)
    result = build(template.docx, template.zone_map, template.style_map, intent_output, media, locale=locale,
                   caps=caps)
    return SessionBuild(result, transcript, intent_output, [*left_out, *result.problems])
