"""`astra build`: the session's document from local files, with the platform's BUILDER engine.

``--data CONTEXT.json`` fills zones straight from a JSON object keyed by zone id: a string for a
text zone (one paragraph; line breaks kept), a list of strings for a list zone (one item each), a
list of objects for a table zone (columns in order of first appearance, typed as session data is),
a file path or a list of paths for an image zone (relative to the JSON file). Zones left out stay
empty. Bad input (not a .docx, a template the audit or the zone grammar refuses, an unknown zone,
a value of the wrong shape, a missing or refused image) exits 2 with one line and writes nothing.
An image the document has no room for (a picture control holds one; the document's image budget) is left
out with a warning of the summary (``images_left_out``).

A docxtpl template (its tags in docxtpl's language, issue 11) with ``--data`` is rendered with the JSON object as
its context, as it is: the names its tags read, any JSON values (``astra.builder.local.render_context``); a name the
template does not read is a warning. A template using a construct outside the sandbox's allow-list, or data that
makes the render fail (a loop cap, a division by zero), exits 2 with one line. ``--sidecar`` is for ``--session``
then: ``--data`` needs no zone map. With ``--session`` it builds through the platform's BUILDER like any template.

Before any work: ``--out`` must name a new file or a regular file to replace (not a folder, a symlink, a
device, the template), in a folder that exists and can be written; ``--locale`` one whose date and number
format the builder knows. Inputs are read as regular files only, each under its cap (the template: INGEST's
upload cap; an image: the builder's image cap). The document is written to a temporary file beside ``--out``
and renamed over it, with the mode of any new file (0666 less the umask).

``--session DIR`` takes a session folder (what ``astra session upload`` takes, or that with its
``manifest.json``) through CORE and BUILDER offline: its transcript, else speech recognition of its
audio; the utterances classified by the local intent model (``--model``, by default the base model
``astra core train`` saves) and bound with its ``data/`` tables; its ``media/`` images embedded
(``astra.builder.local``). A folder, manifest, transcript or audio the platform would refuse, or no
model, exits 2 with one line and writes nothing; what the platform would report (a bad data file or
image, utterances out of scope, a manifest locale with no known format) is a warning of the summary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.markup import escape

from astra.cli.common import console, emit_json, errors, fail, out

# The build problems that leave an image out of the document: the builder refused it (unreadable, too large) or the
# document had no room for it (a picture control holds one; the document's image budget).
LEFT_OUT = ("image_refused", "image_dropped")


def build_command(
    template: Path = typer.Option(..., "--template", help="the template .docx"),
    sidecar: Path = typer.Option(None, "--sidecar", help="the template's <name>.zones.json"),
    data: Path = typer.Option(None, "--data", help="JSON object: zone id -> content (or --session)"),
    session: Path = typer.Option(None, "--session", help="a session folder: transcript or audio, data/, media/ "
                                 "(or --data)"),
    out_path: Path = typer.Option(..., "--out", help="where to write the .docx; an existing file there is replaced "
                                  "atomically (whole or not at all)"),
    model: Path = typer.Option(None, "--model", help="--session: the intent model directory (default: the base "
                               "model under the state dir)"),
    locale: str = typer.Option(None, "--locale", help="locale for dates and numbers in tables, e.g. en-GB; one "
                               "with no known format is refused (--session: the session's locale, instead of its "
                               "manifest's)"),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Build a document from a template and either a JSON object of zone contents or a session folder."""
    # Imported here: the engines (pandas, ONNX Runtime, pocketsphinx) load only when a document is built.
    from astra.builder import local
    from astra.builder.engine import BuildError
    from astra.core.audio import AudioError
    from astra.core.binding import BindingError
    from astra.core.intent.store import ModelIntegrityError
    from astra.core.transcript import TranscriptError
    from astra.orchestrator.manifest import ManifestRejected
    from astra.orchestrator.upload import UnsupportedSession
    from astra.template_language import uses_jinja

    bad_input = (local.BadInput, BuildError, UnsupportedSession, ManifestRejected, TranscriptError, AudioError,
                 BindingError, ModelIntegrityError)
    with errors():
        try:
            if (data is None) == (session is None):
                raise local.BadInput("give exactly one of --data CONTEXT.json and --session DIR")
            if model is not None and session is None:
                raise local.BadInput("--model is for --session: --data fills zones without classifying")
            # Judged before any work: a wrong --out or --locale is said at once, not after seconds of speech.
            local.check_output(out_path, template, (sidecar, data))
            if locale is not None:
                local.check_locale(locale)
            docx = local.read_template(template)
            # A docxtpl template renders --data as its context; one of bare {{ name }}s ASTRA's grammar refuses
            # (a name used twice) is a docxtpl template too (INGEST's rule: its zone map says "jinja").
            grammar = None if data is None or uses_jinja(docx) else local.template_maps(docx, sidecar)
            if data is not None and (grammar is None or grammar.zone_map.get("language") == "jinja"):
                if sidecar is not None:
                    raise local.BadInput("--sidecar is for --session with a docxtpl template: --data renders the "
                                         "JSON object as the template's context, with no zone map")
                if locale is not None:
                    raise local.BadInput("--locale formats a session's table cells: a docxtpl template's --data is "
                                         "rendered as it is, with no cell to format")
                result = local.render_context(docx, data)
                summary = _summary(out_path, result, result.problems)
            elif data is not None:
                result = local.build_from_context(grammar, data, locale)
                summary = _summary(out_path, result, result.problems)
            else:
                template_maps = local.template_maps(docx, sidecar)
                folder = local.read_session(session)
                with _progress() as progress:
                    built = local.build_from_session(template_maps, folder, model=model, locale=locale,
                                                     progress=progress)
                result = built.result
                summary = _session_summary(out_path, built)
            local.write_atomically(out_path, result.docx)
        except bad_input as exc:
            raise fail(str(exc), 2) from None
        if json_out:
            emit_json(summary)
        else:
            _print(summary)


@contextmanager
def _progress() -> Iterator[Callable[[str], None]]:
    """The step under way, on stderr while it runs (speech recognition takes seconds); nothing when piped."""
    with console.status("reading the session") as status:
        yield lambda step: status.update(escape(step))


def _summary(out_path: Path, result, problems) -> dict:
    return {"out": str(out_path), "sha256": result.sha256, "size": result.size, "fills": result.fills,
            "problems": [p.to_json() for p in problems],
            "images_left_out": [{"zone": p.zone, "detail": p.detail} for p in problems if p.code in LEFT_OUT]}


def _session_summary(out_path: Path, built) -> dict:
    from astra.builder.local import locale_format_known

    document, transcript = built.intent_output, built.transcript
    return {**_summary(out_path, built.result, built.problems),
            "locale_format_known": document["locale"] is None or locale_format_known(document["locale"]),
            "transcript": {"source": transcript["source"], "origin": transcript["origin"],
                           "utterances": transcript["utterance_count"],
                           "duration_seconds": transcript["duration_seconds"]},
            "model_version": document["model_version"], "locale": document["locale"],
            "counts": document["counts"], "data_problems": document["data_problems"],
            "unbound_tables": document["unbound_tables"], "fallback_zone": document["fallback_zone"]}


def _print(summary: dict) -> None:
    def say(line: str) -> None:
        out.print(line, markup=False)  # paths and zone ids are not markup

    say(f"wrote {summary['out']} ({summary['size']} bytes, sha256 {summary['sha256'][:16]}…)")
    if "transcript" in summary:
        t, counts = summary["transcript"], summary["counts"]
        said = {"manifest": f"from {t['origin']}", "asr": f"recognized from {t['origin']}",
                "none": "none (no transcript or audio)"}[t["source"]]
        say(f"  transcript: {t['utterances']} utterance(s) {said}; intent model {summary['model_version'] or '-'}")
        flagged = [f"{counts[flag]} {flag.replace('_', ' ')}" for flag in
                   ("out_of_scope", "unmatched", "low_confidence", "locale_unsupported") if counts[flag]]
        if flagged:
            say(f"  utterances: {', '.join(flagged)} (out of scope and unmatched go to "
                f"{summary['fallback_zone']!r})")
    left_out = Counter(image["zone"] for image in summary["images_left_out"])
    for zone, fill in summary["fills"].items():
        say(f"  {zone}: {fill['items']} {fill['kind']} item(s)" + (f", {fill['rows']} rows" if "rows" in fill else "")
            + (f", {left_out[zone]} left out" if left_out[zone] else ""))
    for image in summary["images_left_out"]:
        say(f"  warning: {image['zone'] or 'session'}: image left out: {image['detail']}")
    for problem in summary["problems"]:
        if problem["code"] not in LEFT_OUT:
            say(f"  warning: {problem['zone'] or 'session'}: {problem['detail']}")
    if not summary.get("locale_format_known", True):
        say(f"  warning: locale {summary['locale']!r} (the manifest's): no date and number format known for it, "
            "table cells written with ISO dates and a decimal point")
    for problem in summary.get("data_problems", []):
        say(f"  warning: {problem['source']}: {problem['reason']}: {problem['detail']}")
    for table in summary.get("unbound_tables", []):
        say(f"  warning: {table}: no table zone takes it")
