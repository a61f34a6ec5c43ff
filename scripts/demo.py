"""`make demo`: the main path on the embedded stack (or on the stack that is already up).

Each step drives the real pieces — the upload goes to S3, the sensor tick and its runs go
through a DagsterInstance under .astra/dagster_home (the one `make dev` shows), intents come
from the stack's `astra serve core` — and checks what a user would look at. The demo exits 1 if
a step does not produce what it should.

The base intent model is trained on the first run only (a few minutes: the encoder is
fine-tuned once) and kept under .astra/models/base (LATEST); later runs publish that one.

The documents it builds are downloaded to .astra/demo/<session partition>.docx, with the PDF
LibreOffice makes of each and its first page as a PNG next to it.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from astra import s3 as s3_lib
from astra.runtime import config_service
from astra.settings import Settings
from astra.stack.stack import Stack, running_stack, state_dir
from astra.tenancy import SessionKey

console = Console(soft_wrap=True, width=max(Console().width, 130))


class DemoFailed(RuntimeError):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailed(what)
    console.print(f"  [green]✓[/] {what}")


def instance():
    from dagster import DagsterInstance

    from astra.cli.dev_cmd import dagster_home

    os.environ["DAGSTER_HOME"] = str(dagster_home(Stack()))
    return DagsterInstance.get()


def upload_template(settings: Settings, tenant: str, sidecar: dict) -> str:
    from astra.samples.templates import build_sample_template

    client = s3_lib.client(settings)
    base = f"{tenant}/templates/field_inspection"
    client.put_object(Bucket=settings.uploads_bucket, Key=base + ".zones.json", Body=json.dumps(sidecar).encode())
    client.put_object(Bucket=settings.uploads_bucket, Key=base + ".docx", Body=build_sample_template(),
                      ChecksumAlgorithm="SHA256")  # the template last: the sensor acts on it
    return base + ".docx"


def run_sensor(dagster, name: str, tenant: str):
    from astra_assets.definitions import build_definitions
    from astra_assets.local_runner import tick

    outcome = tick(build_definitions(), dagster, name, log_level="WARNING")
    runs = [r for r in outcome.results if r.dagster_run.tags.get("astra/tenant") == tenant]
    for run in runs:
        status = "[green]success[/]" if run.success else "[red]failed[/]"
        keys = sorted({m.asset_key.to_user_string() for m in run.get_asset_materialization_events()
                       for m in [m.event_specific_data.materialization]})
        console.print(
            f"  run {run.run_id[:8]} ({name}, partition {tenant}): {status}; materialized {', '.join(keys) or '-'}"
        )
    return runs


def step_template(dagster, settings: Settings, tenant: str) -> None:
    """INGEST → CONFIG_SVC: a template upload becomes config version 1, a revised sidecar version 2."""
    from astra.samples.templates import sample_sidecar

    console.rule("[bold]1. Template → INGEST (audit, atoms, zones) → CONFIG_SVC")
    key = upload_template(settings, tenant, sample_sidecar())
    console.print(f"  uploaded s3://{settings.uploads_bucket}/{key} (+ sidecar)")
    runs = run_sensor(dagster, "template_upload_sensor", tenant)
    expect(len(runs) == 1 and runs[0].success, "template_upload_sensor started one run and it succeeded")
    checks = {e.check_name: e.passed for e in runs[0].get_asset_check_evaluations()}
    expect(all(checks.values()) and len(checks) == 2, f"asset checks passed: {', '.join(checks)}")

    svc = config_service(settings)
    snap = svc.snapshot(tenant)
    table = Table("zone", "kind", "label", "accepts", "location", title=f"zone map of {tenant}, config v{snap.version}")
    for z in snap.zone_map["zones"]:
        acc = z["accepts"]
        accepts = ", ".join([*acc.get("intents", []), *acc.get("domains", []), acc.get("data", ""),
                             acc.get("media", ""), "fallback" if acc.get("fallback") else ""]).strip(", ")
        table.add_row(z["id"], z["kind"], z["label"], accepts.replace(", ,", ","),
                      f"{z['location']['part']} #{z['location']['block']}")
    console.print(table)

    revised = sample_sidecar()
    revised["zones"]["notes"]["label"] = "Inspector notes (revised)"
    upload_template(settings, tenant, revised)
    console.print("  uploaded a revised sidecar for the same template")
    runs = run_sensor(dagster, "template_upload_sensor", tenant)
    expect(len(runs) == 1 and runs[0].success, "the changed upload ran again")
    versions = Table("version", "notes label", "template sha256", "read from")
    for version in (1, 2):
        s = svc.snapshot(tenant, version=version) if version == 1 else svc.snapshot(tenant)
        cached = svc.redis.hget(svc.cache_key(tenant), "version")
        source = "Redis cache" if cached and int(cached) == s.version else "Postgres"
        notes = next(z["label"] for z in s.zone_map["zones"] if z["id"] == "notes")
        versions.add_row(str(s.version), notes, s.template_sha256[:16] + "…", source)
    console.print(versions)
    expect([h["version"] for h in svc.history(tenant)] == [1, 2], "CONFIG_SVC holds versions 1 and 2")
    expect(svc.snapshot(tenant).version == 2,
           f"the current version (2) is served through the cache {svc.cache_key(tenant)}")


def upload_sample_session(settings: Settings, tenant: str) -> SessionKey:
    """The sample session without its transcript file: CORE hears what was said from the audio."""
    from astra.orchestrator.upload import upload_session
    from astra.samples import session_files

    session = SessionKey(tenant, f"inspection-{uuid.uuid4().hex[:6]}", 1)
    files = {path: body for path, body in session_files().items() if path != "transcript.txt"}
    upload_session(s3_lib.client(settings), settings.uploads_bucket, session, "field_inspection", files)
    console.print(f"  uploaded {', '.join(files)} then manifest.json to "
                  f"s3://{settings.uploads_bucket}/{tenant}/sessions/{session.session_id}/v1/")
    return session


def show_handover(dagster, settings: Settings, session) -> dict:
    from dagster import AssetKey, AssetRecordsFilter

    from astra.orchestrator.handover import load_record

    record = load_record(s3_lib.client(settings), settings.assets_bucket, session)
    table = Table("file", "sha256", "bytes", "dedup", "durable copy", title=f"handover of {session.partition_key}")
    for f in record["files"]:
        table.add_row(f["path"], f["sha256"][:12] + "…", str(f["size"]), f["dedup"],
                      f["blob_uri"].replace(f"s3://{settings.assets_bucket}/", "assets:/"))
    console.print(table)
    meta = dagster.fetch_materializations(AssetRecordsFilter(
        asset_key=AssetKey("session_handover"), asset_partitions=[session.partition_key]), limit=1).records[0]
    dedup = meta.asset_materialization.metadata["dedup"].value
    console.print(f"  session_handover metadata: dedup = [bold]{dedup}[/], "
                  f"config_version = {record['config_version']}")
    return record


def step_base_model(settings: Settings, tenant: str) -> str:
    """CORE: the base intent model is in the registry, and the stack's intent service serves it."""
    from astra.core.core_client import IntentClient
    from astra.core.intent.model import IntentModel
    from astra.core.intent.store import BASE_TENANT, ModelIntegrityError, resolve_model, tenant_dir
    from astra.core.model_store import ModelStore, drain_outbox
    from astra.db import make_engine

    console.rule("[bold]2. CORE base intent model → model registry → astra serve core")
    engine = make_engine(settings.database_url)
    store = ModelStore(engine, s3_lib.client(settings), settings.assets_bucket, Stack().root / "publisher-cache")
    record = store.latest(BASE_TENANT)
    if record is not None:
        console.print(f"  the registry already has base model v{record.registry_version} ({record.model_version})")
    else:
        try:
            model_dir = resolve_model(tenant_dir(BASE_TENANT))
            IntentModel.load(model_dir)  # as the service will: a model an older ASTRA saved is trained again
            console.print(f"  reusing the base model trained on an earlier run: {model_dir}")
        except FileNotFoundError:
            model_dir = train_base_model()
        except ModelIntegrityError as exc:
            console.print(f"  [yellow]the base model of an earlier run does not load ({exc})[/]")
            model_dir = train_base_model()
        record = store.publish(BASE_TENANT, model_dir)
        drain_outbox(engine, redis_client(settings), settings.redis_prefix)
        console.print(f"  published base model v{record.registry_version} ({record.model_version}) to "
                      f"{record.uri}; MODEL_UPDATED sent")
    client = IntentClient.from_settings(settings, deadline_s=10)
    served = wait_for_version(client, tenant, record.model_version, seconds=60)
    client.close()
    expect(served, f"astra serve core at {settings.core_target} serves base model {record.model_version} "
                   "(hot-loaded on MODEL_UPDATED, no restart)")
    return record.model_version


def train_base_model() -> Path:
    """Train the base model on CLINC150 (train + oos_train; threshold on val) into .astra/models/base."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from astra.core.intent import training
    from astra.core.intent.data import DEFAULT_DATASET, EVAL_SPLITS, TRAIN_SPLITS, read_dataset, split_pair
    from astra.core.intent.store import BASE_TENANT, default_base_encoder, tenant_dir

    console.print("  [yellow]no base model on this machine yet: training it now. This first run takes a few "
                  "minutes (the encoder is fine-tuned once); later runs reuse it (.astra/models/base/LATEST).[/]")
    rows = read_dataset(DEFAULT_DATASET)
    with Progress(TextColumn("  {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        result = training.train_tenant(split_pair(rows, TRAIN_SPLITS), split_pair(rows, EVAL_SPLITS),
                                       tenant=BASE_TENANT, out_dir=tenant_dir(BASE_TENANT),
                                       base=default_base_encoder(), progress=progress)
    console.print(f"  trained base model {result['version']} on {result['examples']} examples in "
                  f"{result['train_seconds']:.0f} s (encoder fine-tuned in {result['fine_tune_seconds']:.0f} s)")
    return Path(result["path"])


def redis_client(settings: Settings):
    import redis

    return redis.Redis.from_url(settings.redis_url)


def wait_for_version(client, tenant: str, version: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.classify(tenant, ["what's the weather like today"]).model_version == version:
            return True
        time.sleep(0.2)
    return False


def step_session(dagster, settings: Settings, tenant: str, base_version: str):
    """ORCHESTRATOR + GUARD + CORE: a session upload handed over, its audio under verified custody,
    transcribed, and its utterances and data bound to the template's zones."""
    from astra.db import make_engine
    from astra.guard.custody import prepare_client
    from astra.guard.verify import verify

    console.rule("[bold]3. Session → ORCHESTRATOR handover (dedup over gRPC) → GUARD custody → CORE transcript, "
                 "intents, zones")
    session = upload_sample_session(settings, tenant)
    runs = run_sensor(dagster, "session_upload_sensor", tenant)
    expect(len(runs) == 1 and runs[0].success, "session_upload_sensor started one handover run and it succeeded")
    record = show_handover(dagster, settings, session)
    expect(record["dedup"]["status"] == "registered", "dedup statuses came from the registry (astra serve ingest)")
    checks = {e.check_name: e.passed for e in runs[0].get_asset_check_evaluations()}
    custody = record["custody"]
    console.print(f"  audio in custody: s3://{custody['bucket']}/{custody['key']}\n"
                  f"    version {custody['version_id']}, {custody['retention_mode']} until {custody['retain_until']}, "
                  f"ledger seq {custody['ledger_seq']}")
    expect(checks.get("custody_verified") is True,
           "custody_audio check custody_verified passed (copy, retention, sha256, ledger)")
    report = verify(make_engine(settings.database_url), prepare_client(s3_lib.client(settings)), settings,
                    tenant=tenant)
    expect(report.ok, f"astra guard verify --tenant {tenant}: {report.to_dict()['entries']} ledger entries, "
                      "chain and objects intact")
    left = s3_lib.client(settings).list_objects_v2(Bucket=settings.uploads_bucket,
                                                   Prefix=f"{tenant}/sessions/{session.session_id}/").get("KeyCount", 0)
    expect(left == 0, "the temporary upload is gone (deleted only after custody was verified)")
    show_transcript(dagster, settings, session)
    show_intent_output(dagster, settings, session, record, base_version)
    return session, runs[0], record


def latest_metadata(dagster, asset: str, partition: str) -> dict:
    from dagster import AssetKey, AssetRecordsFilter

    records = dagster.fetch_materializations(AssetRecordsFilter(
        asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1).records
    expect(bool(records), f"the same run materialized {asset} (no manual step)")
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def read_document(settings: Settings, tenant: str, sha256: str) -> dict:
    from astra.ingest.store import BlobStore

    return json.loads(BlobStore(s3_lib.client(settings), settings.assets_bucket, tenant).get(sha256))


def show_transcript(dagster, settings: Settings, session) -> None:
    from astra.samples import HERE

    meta = latest_metadata(dagster, "transcript", session.partition_key)
    document = read_document(settings, session.tenant, meta["sha256"])
    script = (HERE / "session_transcript.txt").read_text().strip()
    console.print(f"  spoken (espeak-ng reading the audio's script): [dim]{script}[/]")
    table = Table("#", "start s", "end s", "heard", "confidence",
                  title=f"transcript of {session.partition_key} ({document['duration_seconds']:.1f} s of audio)")
    for u in document["utterances"]:
        table.add_row(u["id"], f"{u['start']:.2f}", f"{u['end']:.2f}", u["text"],
                      f"{u['confidence']:.2f}" if u.get("confidence") is not None else "-")
    console.print(table)
    expect(document["source"] == "asr" and document["utterances"],
           f"transcript from the audio: {len(document['utterances'])} utterances by pocketsphinx")
    lm = document["lm_sha256"] or ""
    expect(bool(lm), f"decoded with the in-domain language model built from CLINC150 train (sha256 {lm[:12]}…)")


def show_intent_output(dagster, settings: Settings, session, record: dict, base_version: str) -> None:
    meta = latest_metadata(dagster, "intent_output", session.partition_key)
    document = read_document(settings, session.tenant, meta["sha256"])
    table = Table("utterance", "intent", "domain", "confidence", "zone", "flags",
                  title=f"intent output of {session.partition_key}: model {document['model_version']}, "
                        f"config v{document['config_version']}")
    for u in document["utterances"]:
        table.add_row(u["text"], u["intent"], u["domain"] or "-", f"{u['confidence']:.2f}", u["zone"],
                      ", ".join(u["flags"]) or "-")
    console.print(table)
    expect(document["model_version"] == base_version,
           f"classified by astra serve core with model {base_version} (recorded in the output)")
    expect(document["config_version"] == record["config_version"],
           f"bound to the zones of config v{record['config_version']}, the version the handover pinned")
    zones = {z["id"]: z for z in document["zones"]}
    bound_zones = sorted({u["zone"] for u in document["utterances"] if u["zone"] != document["fallback_zone"]})
    console.print(f"  utterances per zone: {meta['per_zone']}; out of scope {meta['out_of_scope']}, "
                  f"low confidence {meta['low_confidence']}")
    expect(all(u["zone"] in zones for u in document["utterances"]),
           f"every utterance bound to a zone (beyond the fallback '{document['fallback_zone']}': "
           f"{', '.join(bound_zones) or 'none'})")
    for t in document["tables"]:
        rows = Table(*(f"{c['name']} ({c['type']})" for c in t["columns"]),
                     title=f"{t['id']} → zone {t['zone']} ({t['row_count']} rows)")
        for row in t["rows"]:
            rows.add_row(*(cell_text(v) for v in row))
        console.print(rows)
    csv = [t for t in document["tables"] if t["source"] == "data/readings.csv"]
    expect(len(csv) == 1 and csv[0]["zone"] is not None and zones[csv[0]["zone"]]["kind"] == "table",
           f"data/readings.csv bound to the table zone '{csv[0]['zone'] if csv else None}' with typed columns")
    expect(not document["data_problems"], "no data problems")


def cell_text(value) -> str:
    """A table cell as the session's file had it (a date keeps its text beside its parsed value)."""
    if isinstance(value, dict):
        return str(value.get("text", value.get("value")))
    return "" if value is None else str(value)


def step_document(dagster, settings: Settings, session, run, record: dict, base_version: str) -> dict:
    """BUILDER: the session's run ended with its document, stored in S3 and checked; the demo downloads it, opens
    it and renders its first page."""
    console.rule("[bold]4. BUILDER → document_binary: the session's .docx in S3, checked, on disk")
    meta = latest_metadata(dagster, "document_binary", session.partition_key)
    show_document_metadata(meta, f"document_binary of {session.partition_key}")
    expect_checks(run, "document_binary")
    expect(meta["config_version"] == record["config_version"] and meta["model_version"] == base_version,
           f"built from config v{record['config_version']} (pinned at the handover) and the intents of model "
           f"{base_version}")
    path = download_document(settings, meta, session)
    texts = opened_zones(path)
    zones = config_service(settings).snapshot(session.tenant, record["config_version"]).zone_map["zones"]
    show_fills(meta, texts, zones, f"zones of {path.name} as python-docx reads them")
    expect(set(texts) == {z["id"] for z in zones},
           f"python-docx opens {path.name}: each of the {len(zones)} zones is an astra: content control")
    expect(meta["fills"]["measurements"] == 1 and meta["fills"]["site_photo"] == 1,
           "data/readings.csv is a Word table in 'measurements' and media/site.png is embedded in 'site_photo'")
    png = render_first_page(path)
    console.print(f"  [bold]the document:[/] {path}\n  [bold]its page 1:[/]   {png}")
    return meta


def show_document_metadata(meta: dict, title: str, parent: bool = False) -> None:
    table = Table("metadata", "value", title=title)
    rows = [("uri", meta["uri"]), ("S3 version id", meta["version_id"]), ("blob", meta["blob_uri"]),
            ("sha256", meta["sha256"]), ("size", f"{meta['size']} bytes"),
            ("config version", f"v{meta['config_version']}"), ("model version", meta["model_version"]),
            ("template sha256", meta["template_sha256"][:16] + "…"), ("zones filled", str(meta["zones_filled"])),
            ("problems", json.dumps(meta["problems"]) if meta["problems"] else "none")]
    if parent:
        rows += [("parent", meta["parent_partition"]), ("parent S3 version id", meta["parent_version_id"]),
                 ("parent sha256", meta["parent_sha256"]),
                 ("parent config / model", f"v{meta['parent_config_version']} / {meta['parent_model_version']}"),
                 ("parent unchanged", str(meta["parent_unchanged"]))]
    for name, value in rows:
        table.add_row(name, escape(str(value)))
    console.print(table)


def show_fills(meta: dict, texts: dict[str, str], zones: list[dict], title: str) -> None:
    table = Table("zone", "kind", "items filled", "text in the document", title=title)
    for z in zones:
        text = escape(texts[z["id"]]) if z["id"] in texts else "[red]missing[/]"
        table.add_row(z["id"], z["kind"], str(meta["fills"].get(z["id"], 0)), text or "-")
    console.print(table)


def expect_checks(run, asset: str) -> None:
    from astra_assets.builder import NO_FORBIDDEN, OPENS, ZONES_PRESENT

    claims = {OPENS: "python-docx opens it and LibreOffice headless converts it to PDF",
              NO_FORBIDDEN: "no macro, OLE/ActiveX, altChunk, external relationship, or field beyond "
                            "PAGE/NUMPAGES/DATE",
              ZONES_PRESENT: "every zone of the pinned config version is an astra: content control"}
    verdicts = {e.check_name: e.passed for e in run.get_asset_check_evaluations()
                if e.asset_key.to_user_string() == asset}
    for name, claim in claims.items():
        expect(verdicts.get(name) is True, f"blocking check {asset}:{name} passed ({claim})")


def download_document(settings: Settings, meta: dict, session) -> Path:
    """The S3 version the materialization recorded, to .astra/demo/<partition>.docx."""
    bucket, _, key = meta["uri"].removeprefix("s3://").partition("/")
    body = s3_lib.client(settings).get_object(Bucket=bucket, Key=key, VersionId=meta["version_id"])["Body"].read()
    expect(hashlib.sha256(body).hexdigest() == meta["sha256"] and len(body) == meta["size"],
           f"downloaded S3 version {meta['version_id']} of {meta['uri']}: the recorded sha256 and size")
    path = state_dir() / "demo" / f"{session.partition_key}.docx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


STORY_PART = re.compile(r"/word/(document|header\d*|footer\d*)\.xml")


def opened_zones(path: Path) -> dict[str, str]:
    """The text of each astra: content control (the zones) of the document, read with python-docx: its
    paragraphs joined by ' | ', '(image)' for a picture."""
    import docx
    from docx.oxml.ns import qn

    document = docx.Document(str(path))
    texts = {}
    for part in document.part.package.iter_parts():
        if not STORY_PART.fullmatch(str(part.partname)):
            continue
        for sdt in part.element.iter(qn("w:sdt")):
            tag = sdt.find(f"{qn('w:sdtPr')}/{qn('w:tag')}")
            value = tag.get(qn("w:val"), "") if tag is not None else ""
            if not value.startswith("astra:"):
                continue
            paragraphs = ["".join(t.text or "" for t in p.iter(qn("w:t"))) for p in sdt.iter(qn("w:p"))]
            pictures = ["(image)"] * len(list(sdt.iter(qn("w:drawing"))))
            texts[value.removeprefix("astra:").split(";")[0]] = " | ".join([*filter(None, paragraphs), *pictures])
    return texts


def render_first_page(path: Path) -> Path:
    """LibreOffice → <name>.pdf → pdftoppm → <name>.png (page 1, 60 dpi), next to the document."""
    from astra.builder.check import ConversionError, convert_to_pdf

    try:
        pdf = convert_to_pdf(path.read_bytes())
    except ConversionError as exc:
        raise DemoFailed(f"cannot render {path}: {exc}") from exc
    pdf_path = path.with_suffix(".pdf")
    pdf_path.write_bytes(pdf)
    command = ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", str(pdf_path),
               str(path.with_suffix(""))]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    except FileNotFoundError:
        raise DemoFailed("pdftoppm is not installed: apt-get install poppler-utils (make runs "
                         "scripts/system-deps.sh)") from None
    except subprocess.CalledProcessError as exc:
        raise DemoFailed(f"pdftoppm could not render {pdf_path}: "
                         f"{exc.stderr.decode('utf-8', 'replace').strip()}") from None
    png = path.with_suffix(".png")
    expect(png.exists() and png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"),
           f"page 1 rendered: LibreOffice → {pdf_path.name} ({len(pdf)} bytes) → pdftoppm → {png.name}")
    return png


def watch_versions(client, tenant: str, text: str, answers: list, stop: threading.Event) -> None:
    import grpc

    while not stop.is_set():
        try:
            answers.append((time.time(), client.classify(tenant, [text]).model_version))
        except grpc.RpcError:
            answers.append((time.time(), None))
        time.sleep(0.01)


def step_clone(dagster, settings: Settings, parent, parent_meta: dict) -> None:
    """BUILDER: after a config change, a V2 clone of the first session is built from v1's transcript, data and
    media with the current config and model; v1's document stays as it was."""
    from astra.core.core_client import IntentClient
    from astra.orchestrator.upload import upload_session
    from astra.samples.templates import sample_sidecar

    console.rule("[bold]5. Config change → V2 clone of the first session → v2_clone_binary (current config and "
                 "model)")
    tenant = parent.tenant
    client = s3_lib.client(settings)
    parent_before = document_state(client, parent_meta["uri"])
    svc = config_service(settings)
    previous = svc.snapshot(tenant).version
    rerouted = sample_sidecar()
    rerouted["zones"]["notes"]["label"] = "Inspector notes (revised)"
    rerouted["zones"]["summary"] = {"intents": [], "domains": ["travel"]}
    rerouted["zones"]["action_items"] = {"domains": ["home", "work", "banking"]}
    upload_template(settings, tenant, rerouted)
    console.print("  uploaded a sidecar that routes banking to the action items (the summary keeps travel)")
    runs = run_sensor(dagster, "template_upload_sensor", tenant)
    version = svc.snapshot(tenant).version
    expect(len(runs) == 1 and runs[0].success and version == previous + 1,
           f"the template path published config v{version} (was v{previous})")

    clone = SessionKey(tenant, parent.session_id, parent.version + 1)
    note = "Rebuild after the zone map change."
    upload_session(client, settings.uploads_bucket, clone, "field_inspection", {"transcript.txt": note.encode()},
                   clone_of=parent.version)
    console.print(f"  uploaded {clone.partition_key} with clone_of v{parent.version} (an upload carries a file: its "
                  "transcript.txt is a note, not an input; a clone's words are its parent's)")
    runs = run_sensor(dagster, "session_upload_sensor", tenant)
    expect(len(runs) == 1 and runs[0].success, "session_upload_sensor started one run for the clone and it succeeded")
    selected = sorted(key.to_user_string() for key in runs[0].dagster_run.asset_selection)
    expect(selected == ["custody_audio", "session_handover", "v2_clone_binary"],
           f"the clone's run selected {', '.join(selected)} (no transcript or intents of its own)")
    meta = latest_metadata(dagster, "v2_clone_binary", clone.partition_key)
    show_document_metadata(meta, f"v2_clone_binary of {clone.partition_key}", parent=True)
    expect_checks(runs[0], "v2_clone_binary")
    intents = IntentClient.from_settings(settings, deadline_s=10)
    served = intents.classify(tenant, ["what's the weather like today"]).model_version
    intents.close()
    expect(meta["config_version"] == version and meta["parent_config_version"] == parent_meta["config_version"],
           f"built with the new config v{version} (v1 was built with v{parent_meta['config_version']})")
    expect(meta["model_version"] == served and meta["parent_model_version"] == parent_meta["model_version"],
           f"classified again by the model served now, {served} (v1: {parent_meta['model_version']})")
    expect((meta["parent_partition"], meta["parent_sha256"], meta["parent_version_id"])
           == (parent.partition_key, parent_meta["sha256"], parent_meta["version_id"]),
           f"its metadata names the parent {parent.partition_key}: its sha256 and S3 version")
    expect(meta["source_partition"] == parent.partition_key and meta["transcript_sha256"]
           == parent_meta["transcript_sha256"], "built from the parent's transcript, data and media")
    parent_after = document_state(client, parent_meta["uri"])
    expect(parent_before == parent_after == ([parent_meta["version_id"]], parent_meta["sha256"])
           and meta["parent_unchanged"],
           f"v1's document unchanged: one S3 version {parent_meta['version_id']}, sha256 "
           f"{parent_meta['sha256'][:12]}… before and after")

    show_rebinding(settings, tenant, parent_meta, meta)
    path = download_document(settings, meta, clone)
    texts = opened_zones(path)
    zones = svc.snapshot(tenant, version).zone_map["zones"]
    show_fills(meta, texts, zones, f"zones of {path.name} as python-docx reads them")
    banking = [u for u in read_document(settings, tenant, meta["intent_output_sha256"])["utterances"]
               if u["domain"] == "banking"]
    expect(bool(banking) and all(u["zone"] == "action_items" and u["text"] in texts["action_items"]
                                 for u in banking),
           f"config v{version} at work: {len(banking)} banking utterance(s) in the action items of {path.name}")
    expect(note not in "".join(texts.values()), "the clone's own note is in no zone")
    png = render_first_page(path)
    console.print(f"  [bold]the V2 document:[/] {path}\n  [bold]its page 1:[/]      {png}")


def document_state(client, uri: str) -> tuple[list[str], str | None]:
    """The S3 version ids of a documents key and the SHA-256 of its newest version."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    listed = client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    found = s3_lib.head(client, bucket, key)
    return [v["VersionId"] for v in listed if v["Key"] == key], s3_lib.full_object_sha256(found) if found else None


def show_rebinding(settings: Settings, tenant: str, parent_meta: dict, meta: dict) -> None:
    """Each utterance of the parent's transcript as v1 and v2 classified and bound it."""
    before = read_document(settings, tenant, parent_meta["intent_output_sha256"])
    after = {u["id"]: u for u in read_document(settings, tenant, meta["intent_output_sha256"])["utterances"]}
    table = Table("utterance", f"v1: model {parent_meta['model_version']}, config v{parent_meta['config_version']}",
                  f"v2: model {meta['model_version']}, config v{meta['config_version']}",
                  title="the parent's utterances, classified and bound again")
    for u in before["utterances"]:
        again = after[u["id"]]
        table.add_row(u["text"], f"{u['intent']} → {u['zone']}", f"{again['intent']} → {again['zone']}")
    console.print(table)


def step_fail_open(dagster, settings: Settings, tenant: str) -> None:
    """The registry stops: a session still completes with dedup skipped, and is reconciled later."""
    from astra.db import make_engine
    from astra.orchestrator.reconcile import pending_count
    from astra.stack import processes
    from astra_assets.definitions import build_definitions

    console.rule("[bold]6. The dedup registry goes down: fail open, reconcile later")
    stack = Stack(say=lambda m: console.print(f"  [dim]stack:[/] {m}"))
    ingest = stack.load().get("ingest")
    if ingest is None or not ingest.started_here:
        console.print("  the ingest service is not part of this stack (ASTRA_INGEST_TARGET is set): step skipped")
        return
    processes.stop_tree(ingest.pid)
    console.print(f"  stopped astra serve ingest (pid {ingest.pid}) at {ingest.url}")
    session = upload_sample_session(settings, tenant)
    runs = run_sensor(dagster, "session_upload_sensor", tenant)
    expect(len(runs) == 1 and runs[0].success, "the session completed without the registry")
    record = show_handover(dagster, settings, session)
    expect(record["dedup"]["status"] == "skipped",
           f"dedup: skipped ({record['dedup']['reason']}), every file taken as new")
    engine = make_engine(settings.database_url)
    expect(pending_count(engine, tenant) == 1, "a reconciliation is queued in the outbox")
    os.environ.update(stack.up())  # brings the registry back (on a new port)
    result = build_definitions().resolve_job_def("dedup_reconcile_job").execute_in_process(
        instance=dagster, run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    expect(result.success and pending_count(engine, tenant) == 0,
           "dedup_reconcile job registered them once the registry was back (outbox drained)")


def step_learn(dagster, settings: Settings, session, document_meta: dict, record: dict) -> None:
    """LEARN: the user corrects the first session's document (one utterance moved to another zone, one edited, one
    deleted) and uploads it; the comparison report, the retrain, the holdout gate, MODEL_UPDATED, and the running
    astra serve core answering with the new model while a client classifies in a loop."""
    from astra.core.core_client import IntentClient
    from astra.samples.edits import DocumentEdit

    console.rule("[bold]7. LEARN: the user's corrections → comparison report → retrain → holdout gate → "
                 "MODEL_UPDATED → hot reload")
    tenant = session.tenant
    zones = {z["id"]: z for z in
             config_service(settings).snapshot(tenant, document_meta["config_version"]).zone_map["zones"]}
    output = read_document(settings, tenant, document_meta["intent_output_sha256"])
    moved, edited, deleted, target = pick_corrections(output, zones)
    path = state_dir() / "demo" / f"{session.partition_key}.docx"
    edit = DocumentEdit(path.read_bytes())
    edit.move(moved["text"], target)
    edit.set_text(edited["text"], edited["text"].rstrip(".") + ", checked on site.")
    edit.delete(deleted["text"])
    corrected = edit.save()
    corrected_path = path.with_name(f"{session.partition_key}.corrected.docx")
    corrected_path.write_bytes(corrected)
    changes = Table("the user", "utterance", "was in", title=f"{corrected_path.name}: what the user changed")
    changes.add_row(f"moved to {target}", escape(moved["text"]), moved["zone"])
    changes.add_row("edited", escape(edited["text"]), edited["zone"])
    changes.add_row("deleted", escape(deleted["text"]), deleted["zone"])
    console.print(changes)
    key = f"{tenant}/feedback/{session.session_id}/v{session.version}.docx"
    s3_lib.client(settings).put_object(Bucket=settings.uploads_bucket, Key=key, Body=corrected)
    console.print(f"  uploaded s3://{settings.uploads_bucket}/{key}")

    client = IntentClient.from_settings(settings, deadline_s=5)
    probe = moved["text"]
    before = client.classify(tenant, [probe])
    answers: list[tuple[float, str | None]] = []  # (time, version or None for a failed call)
    stop = threading.Event()
    watcher = threading.Thread(target=watch_versions, args=(client, tenant, probe, answers, stop), daemon=True)
    watcher.start()
    try:
        runs = run_sensor(dagster, "feedback_upload_sensor", tenant)
        expect(len(runs) == 1 and runs[0].success, "feedback_upload_sensor started one run and comparison_report "
                                                   "succeeded")
        report_meta = latest_metadata(dagster, "comparison_report", session.partition_key)
        show_report(settings, report_meta)
        expect(report_meta["document_sha256"] == document_meta["sha256"],
               f"compared with the exact binary v{session.version} produced (sha256 "
               f"{document_meta['sha256'][:12]}…), model {report_meta['model_version']}, config "
               f"v{report_meta['config_version']}")
        runs = run_sensor(dagster, "learn_feedback_sensor", tenant)
        expect(len(runs) == 1 and runs[0].success,
               "learn_feedback_sensor stored the examples (consumer group learn) and the intent_model run succeeded")
        model_meta = latest_metadata(dagster, "intent_model", tenant)
        gate = {e.check_name: e.passed for e in runs[0].get_asset_check_evaluations()}
        console.print(f"  retrained in {model_meta['retrain_s']} s from {model_meta['corrections_used']} "
                      f"correction(s) ({model_meta['corrections_held_back']} held back for the gate): model "
                      f"{model_meta['model_version']}, registry v{model_meta['registry_version']}, "
                      f"{model_meta['status']}\n  holdout gate: {escape(model_meta['gate_reason'])}")
        expect(gate.get("holdout_gate") is True and model_meta["status"] == "active",
               "blocking check intent_model:holdout_gate passed: the model is active and MODEL_UPDATED went "
               "through the outbox")
        new_version = model_meta["model_version"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(v == new_version for _, v in answers):
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        stop.set()
        watcher.join(timeout=10)
    first_new = next((t for t, v in answers if v == new_version), None)
    expect(first_new is not None, f"astra serve core answered with {new_version} "
                                  f"({len(answers)} calls by a client classifying in a loop)")
    expect(all(v is not None for _, v in answers), "no call failed during the swap")
    expect(all(v == new_version for t, v in answers if t >= first_new), "once swapped, every answer came from the "
                                                                          "new version")
    after = client.classify(tenant, [probe])
    client.close()
    console.print(f"  '{escape(probe)}': {before.intents[0][0]} ({before.model_version}) → "
                  f"{after.intents[0][0]} ({after.model_version})")


def pick_corrections(output: dict, zones: dict) -> tuple[dict, dict, dict, str]:
    """What the demo's user corrects: the last utterance the model put in a zone of its own is moved to the notes
    (the fallback zone: "this is a remark, not a task": the sample's pressure readings end up there when the model
    takes them for a request), the first other one of such a zone is edited, and the first remark of the notes is
    deleted (it does not belong in the report)."""
    fallback = next(z["id"] for z in zones.values() if z["accepts"].get("fallback"))
    written = [u for u in output["utterances"] if zones.get(u.get("zone"), {}).get("kind") in ("text", "list")]
    placed = [u for u in written if u["zone"] != fallback]
    remarks = [u for u in written if u["zone"] == fallback]
    if len(placed) < 2 or not remarks:
        raise DemoFailed(f"the document holds {len(placed)} utterance(s) outside the {fallback} zone and "
                         f"{len(remarks)} in it; the demo needs 2 and 1")
    return placed[-1], placed[0], remarks[0], fallback


def show_report(settings: Settings, meta: dict) -> None:
    bucket, _, key = meta["uri"].removeprefix("s3://").partition("/")
    report = json.loads(s3_lib.client(settings).get_object(Bucket=bucket, Key=key)["Body"].read())
    counts = {k: v for k, v in report["counts"].items() if v}
    console.print(f"  comparison report {meta['uri']} (sha256 {meta['sha256'][:12]}…): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    table = Table("example", "text", "label", "from → to", title="labelled examples (to the stream astra:feedback)")
    for example in report["examples"]:
        table.add_row(example["kind"], escape(example["text"]), example["intent"],
                      f"{example['from_zone'] or '-'} → {example['to_zone'] or '-'}")
    console.print(table)
    expect(counts.get("moved", 0) >= 1 and counts.get("edited", 0) >= 1 and counts.get("deleted", 0) >= 1,
           "the report found the move, the edit and the deletion")


def step_docxtpl() -> None:
    """A template the tenant already has, written for docxtpl: its zones, and its document from a JSON context."""
    from astra.samples.docxtpl_invoice import build_invoice_template, invoice_context

    console.rule("[bold]8. A docxtpl template (Jinja in Word) → its zones → a document from a JSON context, "
                 "always escaped, in a sandbox")
    folder = state_dir() / "demo" / "docxtpl"
    folder.mkdir(parents=True, exist_ok=True)
    template, context, out = folder / "invoice.docx", folder / "invoice.json", folder / "invoice-built.docx"
    template.write_bytes(build_invoice_template())
    context.write_text(json.dumps(invoice_context(), indent=2, ensure_ascii=False))
    astra = str(Path(sys.executable).with_name("astra"))
    zones = subprocess.run([astra, "ingest", "zones", str(template), "--json"], capture_output=True, text=True,
                           timeout=120)
    expect(zones.returncode == 0, f"astra ingest zones {template.name}: accepted")
    table = Table("zone", "kind", "fields", "marked", title="its zones, read off the Jinja expressions")
    zone_map = json.loads(zones.stdout)["zone_map"]
    for zone in zone_map["zones"]:
        table.add_row(zone["id"], zone["kind"], ", ".join(zone.get("fields", [])), "yes" if zone["marked"] else "")
    console.print(table)
    expect(zone_map["language"] == "jinja" and {z["id"]: z["kind"] for z in zone_map["zones"]}.get("items") == "table",
           "the row loop's list is a table zone whose columns are the fields its row reads")
    console.print(f"  $ astra build --template {template} --data {context} --out {out}")
    built = subprocess.run([astra, "build", "--template", str(template), "--data", str(context), "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    expect(built.returncode == 0 and out.exists(), f"{built.stdout.strip().splitlines()[0] if built.stdout else out}")
    texts = _docx_text(out)
    expect("Smith & Sons <Leeds>" in texts and "Call-out \"urgent\"" in texts,
           "the context's & < > and quotes are text in the document, not XML")
    png = render_first_page(out)
    console.print(f"  [bold]the document:[/] {out}\n  [bold]its page 1:[/]   {png}")


def _docx_text(path: Path) -> str:
    """Every w:t of the body, in order (content controls and the tables in them included)."""
    import zipfile

    from lxml import etree

    with zipfile.ZipFile(path) as package:
        root = etree.fromstring(package.read("word/document.xml"))
    return "".join(t.text or "" for t in root.iter("{http://schemas.openxmlformats.org/wordprocessingml/2006/main}t"))


def main() -> int:
    tenant = f"demo-{uuid.uuid4().hex[:6]}"
    try:
        with running_stack(say=lambda m: console.print(f"[dim]stack:[/] {m}")):
            settings = Settings.from_env()
            console.print(f"[bold]ASTRA demo[/] — tenant [cyan]{tenant}[/]")
            dagster = instance()
            step_template(dagster, settings, tenant)
            base_version = step_base_model(settings, tenant)
            session, run, record = step_session(dagster, settings, tenant, base_version)
            document = step_document(dagster, settings, session, run, record, base_version)
            step_clone(dagster, settings, session, document)
            step_fail_open(dagster, settings, tenant)
            step_learn(dagster, settings, session, document, record)
            step_docxtpl()
    except DemoFailed as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        return 1
    console.print("[bold green]demo complete[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
