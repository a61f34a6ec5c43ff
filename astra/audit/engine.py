"""`audit`: from one document back to its evidence, every hop re-read and re-hashed (no Dagster import).

The walk, for the document a session version built (`document_binary`, or `v2_clone_binary` for a V2 clone):

  document        the S3 version its materialization recorded, re-hashed (sha256, size); what its key serves now;
                  its content-addressed blob
  materialization the Dagster event: run id, asset key, partition, data version = sha256; the session's other
                  materializations (handover, custody, transcript, intent output) present; the handover record
                  agrees with its materialization and with the document's metadata
  intent_output   the JSON blob re-hashed; its model, config and transcript agree with the document's; its
                  materialization (run id)
  model           the model_registry row of that model version (the tenant's or the base's), not rejected;
                  manifest.json re-hashed = the row's sha256; every file re-hashed = the manifest's
  transcript      the blob re-hashed; its materialization; an uploaded transcript re-read and re-parsed to the
                  same document; ASR: model and LM hashes recorded and matching the materialization
  config          the tenant_config_versions row read from Postgres (not the cache): maps pass the schemas; their
                  hash = the tenant_config materialization's maps_sha256; CONFIG_SVC serves the same snapshot;
                  its template is the document's
  template        the atoms manifest, every atom fetched and the package re-assembled (each part checked), its
                  sha256 = the config's template sha256; the template_atoms materialization
  custody         GUARD's check_custody on the handover's custody record (ledger entry, object re-hashed, COMPLIANCE
                  retention and date, chain) plus the WORM checkpoints; which checkpoint covers the entry
  manifest        the manifest blob re-hashed, validated against its JSON Schema, the files it names = the
                  handover record's, each file's durable copy re-hashed
A V2 clone adds `parent` (the parent's document at the recorded S3 version re-hashed, then the parent walked the same
way, `AuditReport.parent`) and `comparison_reports` (the tenant's comparison reports that fed the tenant model the
clone was classified with, each re-hashed).

S3 and database faults raise (they are not evidence); what is missing or differs is a failed check.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import Engine, or_, select

from astra import s3 as s3_lib
from astra.audit.model import AuditReport, BadTarget, Hop, Materialization, MaterializationSource, RecordMissing
from astra.builder.check import BLOCKING_CHECKS
from astra.config_svc.validation import maps_sha256
from astra.db.schema import model_registry, tenant_config_versions
from astra.ingest.store import BlobStore, atoms_manifest_key, blob_uri
from astra.settings import Settings
from astra.tenancy import InvalidKey, SessionKey

DOCUMENT = "document_binary"
CLONE = "v2_clone_binary"
NO_VERSION = "none (bucket not versioned)"  # astra_assets.builder.NO_VERSION
BASE_MODEL_OWNER = "base"  # astra.core.intent.store.BASE_TENANT
_SHA = re.compile(r"[0-9a-f]{64}")
_DOC_KEY = re.compile(r"(?P<tenant>[a-z0-9-]+)/documents/(?P<session>[a-z0-9-]+)/v(?P<version>[0-9]+)\.docx")
_BLOB_KEY = re.compile(r"(?P<tenant>[a-z0-9-]+)/blobs/sha256/[0-9a-f]{2}/(?P<sha>[0-9a-f]{64})")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    partition: str
    asset: str
    event: Materialization


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _short(sha: Any) -> str:
    return f"{sha[:12]}…" if isinstance(sha, str) and len(sha) > 12 else str(sha)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


HISTORY_LIMIT = 100_000  # events of one asset partition read when looking for one
RECORDS_LIMIT = 10_000_000  # document materializations read when looking a sha256 up (paged by the source)


class Auditor:
    def __init__(self, s3, settings: Settings, engine: Engine, source: MaterializationSource,
                 config_service=None, progress: Progress | None = None):
        self.s3, self.settings, self.engine, self.source = s3, settings, engine, source
        self.config_service = config_service
        self.progress = progress or (lambda _what: None)
        self.assets = settings.assets_bucket

    # -- what the user named -------------------------------------------------------------------

    def resolve(self, target: str) -> Target:
        """The document materialization `target` names: a sha256, an s3:// URI or a partition key; BadTarget else."""
        target = target.strip()
        if _SHA.fullmatch(target):
            return self._by_sha(target)
        if target.startswith("s3://"):
            bucket, key = _split(target)
            if m := _DOC_KEY.fullmatch(key):
                try:
                    session = SessionKey(m["tenant"], m["session"], int(m["version"]))
                except InvalidKey as exc:
                    raise BadTarget(str(exc)) from None
                return self._by_partition(session.partition_key, uri=target)
            if m := _BLOB_KEY.fullmatch(key):
                return self._by_sha(m["sha"], tenant=m["tenant"])
            raise BadTarget(f"{target} is not a document of ASTRA's (expected s3://<assets>/<tenant>/documents/"
                            "<session>/v<n>.docx or a blob s3://<assets>/<tenant>/blobs/sha256/<xx>/<sha256>)")
        if "--" in target:
            try:
                session = SessionKey.parse(target)
            except InvalidKey as exc:
                raise BadTarget(str(exc)) from None
            return self._by_partition(session.partition_key)
        raise BadTarget(f"{target!r} is neither a document sha256 (64 lowercase hex), an s3:// URI nor a "
                        "<tenant>--<session>--v<n> partition key")

    def _by_partition(self, partition: str, uri: str | None = None) -> Target:
        found = [(asset, ev) for asset in (DOCUMENT, CLONE)
                 if (ev := self.source.latest(asset, partition)) is not None and "sha256" in ev.metadata]
        if not found:
            session = SessionKey.parse(partition)
            key = f"{session.tenant}/documents/{session.session_id}/v{session.version}.docx"
            try:
                self.s3.head_object(Bucket=self.assets, Key=key)
            except ClientError:
                raise BadTarget(f"no document was built for {partition} (no {DOCUMENT} or {CLONE} materialization)") \
                    from None
            raise RecordMissing(f"{partition}: s3://{self.assets}/{key} is there but Dagster holds no {DOCUMENT} or "
                                f"{CLONE} materialization of it: its record is gone (wiped?), nothing can be verified")
        asset, event = max(found, key=lambda f: f[1].timestamp)
        if uri is not None and event.metadata.get("uri") != uri:
            raise BadTarget(f"{uri} is not where {partition}'s document was stored ({event.metadata.get('uri')})")
        return Target(partition, asset, event)

    def _by_sha(self, sha: str, tenant: str | None = None) -> Target:
        found = [(asset, ev) for asset in (DOCUMENT, CLONE) for ev in self.source.records(asset, limit=RECORDS_LIMIT)
                 if ev.metadata.get("sha256") == sha and ev.partition
                 and (tenant is None or ev.partition.startswith(f"{tenant}--"))]
        if not found:
            raise BadTarget(f"no document with sha256 {sha} was materialized ({DOCUMENT}, {CLONE})")
        tenants = sorted({ev.partition.split("--", 1)[0] for _, ev in found})
        if len(tenants) > 1:  # the same bytes built for two tenants: the auditor says which
            raise BadTarget(f"documents of {len(tenants)} tenants have sha256 {sha} ({', '.join(tenants)}): give the "
                            "document's <tenant>--<session>--v<n> instead")
        asset, event = max(found, key=lambda f: f[1].timestamp)
        return Target(event.partition, asset, event)

    # -- the walk ----------------------------------------------------------------------------------

    def audit(self, target: str) -> AuditReport:
        return self.walk(self.resolve(target), target)

    def walk(self, t: Target, asked: str) -> AuditReport:
        report = AuditReport(asked, t.partition, t.asset)
        session = SessionKey.parse(t.partition)
        meta = t.event.metadata
        record = self._record(session)
        steps: list[tuple[str, Callable[[Hop], Any]]] = [
            ("document", lambda h: self.hop_document(h, meta)),
            ("materialization", lambda h: self.hop_materialization(h, t, record)),
        ]
        intent_doc: dict = {}
        source_record = record
        if t.asset == CLONE:
            steps.append(("parent", lambda h: self.hop_parent(h, meta, report)))
            try:
                source = SessionKey.parse(meta.get("source_partition", ""))
                source_record = self._record(source) if source != session else record
            except InvalidKey:
                source_record = None
        steps += [
            ("intent_output", lambda h: intent_doc.update(self.hop_intent_output(h, t, meta) or {})),
            ("model", lambda h: self.hop_model(h, session.tenant, meta, intent_doc, t.asset == CLONE)),
            ("transcript", lambda h: self.hop_transcript(h, meta, intent_doc, source_record)),
            ("config", lambda h: self.hop_config(h, session.tenant, meta, record)),
            ("template", lambda h: self.hop_template(h, session.tenant, meta)),
            ("custody", lambda h: self.hop_custody(h, session, record)),
            ("manifest", lambda h: self.hop_manifest(h, t.partition, record)),
        ]
        if t.asset == CLONE:
            steps.append(("comparison_reports", lambda h: self.hop_reports(h, session.tenant, meta)))
        for hop_id, run in steps:
            hop = Hop(hop_id, _TITLES[hop_id])
            self.progress(f"{t.partition}: {hop.title}")
            if record is None and hop_id not in ("document", "materialization"):
                hop.fail("handover record", f"{t.partition} has no handover record in s3://{self.assets}: "
                         "nothing past the document can be traced")
            else:
                run(hop)
            report.hops.append(hop)
        return report

    def _record(self, session: SessionKey) -> dict | None:
        from astra.orchestrator.handover import load_record

        return load_record(self.s3, self.assets, session)

    # -- S3 helpers ------------------------------------------------------------------------------

    def _rehash(self, uri: str, version_id: str | None = None) -> tuple[str, int, dict] | None:
        bucket, key = _split(uri)
        try:
            return s3_lib.stream_sha256(self.s3, bucket, key, None if version_id in (None, NO_VERSION) else version_id)
        except ClientError as exc:
            if s3_lib.is_missing(exc):
                return None
            raise

    def _blob_check(self, hop: Hop, name: str, tenant: str, sha: str, what: str) -> bytes | None:
        """The tenant's blob of `sha`, re-hashed: its bytes when they hash right."""
        uri = blob_uri(self.assets, tenant, sha)
        try:
            data = BlobStore(self.s3, self.assets, tenant).get(sha)
        except KeyError:
            hop.fail(name, f"the {what} {uri} is missing")
            return None
        digest = hashlib.sha256(data).hexdigest()
        if hop.check(name, digest == sha, f"{uri} re-hashed: {_short(digest)}" if digest == sha else
                     f"the {what} {uri} reads sha256 {digest}, not {sha}"):
            return data
        return None

    def _event_with(self, asset: str, partition: str | None, key: str, value: Any) -> Materialization | None:
        # Every event of the partition (a tenant's config versions, its template uploads): a window of the newest
        # would call an old version missing.
        return next((e for e in self.source.history(asset, partition, limit=HISTORY_LIMIT)
                     if e.metadata.get(key) == value), None)

    # -- hops --------------------------------------------------------------------------------------

    def hop_document(self, hop: Hop, meta: dict) -> None:
        uri, vid, sha, size = meta.get("uri"), meta.get("version_id"), meta.get("sha256"), meta.get("size")
        hop.subject = f"{uri} (version {vid})"
        hop.facts.update(sha256=sha, size=size, version_id=vid, blob_uri=meta.get("blob_uri"))
        got = self._rehash(uri, vid)
        if got is None:
            hop.fail("stored version re-hashed", f"{uri} version {vid} (the materialized document) is gone")
        else:
            digest, n, resp = got
            hop.check("stored version re-hashed", (digest, n) == (sha, size),
                      f"{uri} version {vid}: sha256 {_short(digest)}, {n} bytes" if (digest, n) == (sha, size) else
                      f"{uri} version {vid} reads sha256 {digest} ({n} bytes); its materialization recorded "
                      f"{sha} ({size} bytes)")
        current = self._rehash(uri)
        if current is None:
            hop.fail("key serves it", f"{uri} serves nothing now (deleted, or hidden by a delete marker)")
        else:
            digest, n, resp = current
            now = resp.get("VersionId")
            hop.check("key serves it", digest == sha,
                      f"{uri} serves version {now} with the same bytes" if digest == sha else
                      f"{uri} now serves version {now} with sha256 {digest} ({n} bytes), not the materialized "
                      f"{sha}: the document was overwritten after it was built")
        blob = meta.get("blob_uri")
        if blob:
            got = self._rehash(blob)
            hop.check("blob re-hashed", got is not None and got[0] == sha,
                      f"{blob} holds the same bytes" if got is not None and got[0] == sha else
                      f"{blob} is missing" if got is None else f"{blob} reads sha256 {got[0]}, not {sha}")

    def hop_materialization(self, hop: Hop, t: Target, record: dict | None) -> None:
        ev, meta = t.event, t.event.metadata
        hop.subject = f"{t.asset}[{t.partition}] run {ev.run_id}"
        hop.facts.update(run_id=ev.run_id, asset_key=t.asset, partition=t.partition,
                         materialized_at=_when(ev.timestamp), data_version=ev.data_version)
        hop.check("data version", ev.data_version == meta.get("sha256"),
                  f"data version = sha256 {_short(ev.data_version)}" if ev.data_version == meta.get("sha256") else
                  f"data version {ev.data_version!r} is not the recorded sha256 {meta.get('sha256')!r}")
        if t.asset == DOCUMENT:
            hop.check("source partition", meta.get("source_partition") == t.partition,
                      f"built from its own inputs ({t.partition})" if meta.get("source_partition") == t.partition
                      else f"metadata says it was built from {meta.get('source_partition')!r}, not {t.partition}")
        upstream = ["session_handover", "custody_audio"] + (["transcript", "intent_output"] if t.asset == DOCUMENT
                                                             else [])
        runs = {}
        for asset in upstream:
            up = self.source.latest(asset, t.partition)
            if up is None:
                hop.fail(f"{asset} materialized", f"{asset}[{t.partition}] has no materialization")
            else:
                runs[asset] = up.run_id
        hop.facts["upstream_runs"] = runs
        status = self.source.run_status(ev.run_id)
        hop.facts["run_status"] = status
        # The event must come from a run of that partition that succeeded: an event reported outside any run (Dagster's
        # report_runless_asset_event, open to anyone who can reach the instance) carries whatever metadata it was given.
        hop.check("made by a run", bool(ev.run_id) and status == "SUCCESS",
                  f"run {ev.run_id} succeeded" if ev.run_id and status == "SUCCESS" else
                  "the materialization was reported outside any run" if not ev.run_id else
                  f"run {ev.run_id} is {'unknown to the instance' if status is None else status}")
        launched_for = self.source.run_partition(ev.run_id)
        hop.check("run of this partition", launched_for == t.partition,
                  f"run launched for {t.partition}" if launched_for == t.partition else
                  f"the run was launched for {launched_for!r}, not {t.partition}")
        self._checks_passed(hop, ev.run_id, t.asset, t.partition, _DOCUMENT_CHECKS)
        if "custody_audio" in runs:
            self._checks_passed(hop, runs["custody_audio"], "custody_audio", t.partition, ("custody_verified",))
        if record is None:
            hop.fail("handover record", f"no handover record for {t.partition} in s3://{self.assets}")
            return
        handover = self.source.latest("session_handover", t.partition)
        if handover is not None:
            hm = handover.metadata
            wanted = {"manifest_sha256": record["manifest"]["sha256"], "config_version": record["config_version"],
                      "template_sha256": record["template_sha256"],
                      "ledger_seq": (record["custody"] or {}).get("ledger_seq", 0)}
            differs = [f"{k}: record {v!r}, materialization {hm.get(k)!r}" for k, v in wanted.items() if hm.get(k) != v]
            hop.check("handover record = its materialization", not differs,
                      f"record and session_handover run {handover.run_id} agree" if not differs else
                      "the handover record differs from its materialization: " + "; ".join(differs))
        differs = [f"{k}: document {meta.get(k)!r}, handover {record[k]!r}"
                   for k in ("config_version", "template_sha256") if meta.get(k) != record[k]]
        hop.check("built with the pinned config", not differs,
                  f"config v{record['config_version']}, template {_short(record['template_sha256'])}" if not differs
                  else "; ".join(differs))

    def _checks_passed(self, hop: Hop, run_id: str, asset: str, partition: str, names: tuple[str, ...]) -> None:
        """The blocking checks of `asset` evaluated in `run_id` (for `partition` when they say) all passed."""
        found = {c.check_name: c.passed for c in self.source.check_results(run_id)
                 if c.asset_key == asset and c.partition in (None, partition)}
        missing = [n for n in names if n not in found]
        failed = [n for n in names if found.get(n) is False]
        hop.check(f"{asset} checks passed", not missing and not failed,
                  f"{', '.join(names)} passed in run {run_id}" if not missing and not failed else
                  f"run {run_id}: " + "; ".join([f"{n} failed" for n in failed] +
                                                [f"{n} has no evaluation" for n in missing]))

    def hop_parent(self, hop: Hop, meta: dict, report: AuditReport) -> None:
        partition, sha = meta.get("parent_partition"), meta.get("parent_sha256")
        uri, vid = meta.get("parent_uri"), meta.get("parent_version_id")
        hop.subject = f"{partition} ({uri} version {vid})"
        hop.facts.update(parent_partition=partition, parent_sha256=sha, parent_unchanged=meta.get("parent_unchanged"))
        got = self._rehash(uri, vid) if uri else None
        hop.check("parent document re-hashed", got is not None and got[0] == sha,
                  f"{uri} version {vid} re-hashed: {_short(sha)}" if got is not None and got[0] == sha else
                  f"the parent's document {uri} version {vid} is missing" if got is None else
                  f"the parent's document {uri} version {vid} reads sha256 {got[0]}, not the recorded {sha}")
        try:
            SessionKey.parse(partition or "")
        except InvalidKey:
            hop.fail("parent walked", f"parent partition {partition!r} is not a session partition")
            return
        parent = None
        for asset in (DOCUMENT, CLONE):
            ev = self._event_with(asset, partition, "sha256", sha)
            if ev is not None:
                parent = Target(partition, asset, ev)
                break
        if parent is None:
            hop.fail("parent materialization", f"no materialization of {partition}'s document recorded sha256 {sha}")
            return
        report.parent = self.walk(parent, partition)
        hop.check("parent walked", report.parent.ok,
                  f"every hop of {partition} verified" if report.parent.ok else
                  f"{partition}: {len(report.parent.failure_lines())} failed check(s), listed under the parent")

    def hop_intent_output(self, hop: Hop, t: Target, meta: dict) -> dict | None:
        tenant = t.partition.split("--", 1)[0]
        sha = meta.get("intent_output_sha256")
        hop.subject = blob_uri(self.assets, tenant, sha or "?")
        hop.facts.update(sha256=sha)
        if not isinstance(sha, str) or not _SHA.fullmatch(sha):
            hop.fail("recorded", f"the document's metadata names no intent output sha256 ({sha!r})")
            return None
        data = self._blob_check(hop, "artifact re-hashed", tenant, sha, "intent output")
        if t.asset == DOCUMENT:
            ev = self._event_with("intent_output", t.partition, "sha256", sha)
            if ev is None:
                hop.fail("materialization", f"no intent_output materialization of {t.partition} recorded sha256 {sha}")
            else:
                hop.check("materialization", True, f"intent_output run {ev.run_id} recorded it")
                hop.facts["run_id"] = ev.run_id
        if data is None:
            return None
        doc = json.loads(data)
        differs = [f"{k}: intent output {doc.get(k)!r}, document {meta.get(k)!r}"
                   for k in ("config_version", "transcript_sha256") if doc.get(k) != meta.get(k)]
        model = doc.get("model_version") or "none (no utterances)"
        if model != meta.get("model_version"):
            differs.append(f"model_version: intent output {model!r}, document {meta.get('model_version')!r}")
        hop.check("agrees with the document", not differs,
                  f"model {model}, config v{doc.get('config_version')}" if not differs else "; ".join(differs))
        hop.facts.update(model_version=model, utterances=doc.get("counts", {}).get("utterances"))
        return doc

    def hop_model(self, hop: Hop, tenant: str, meta: dict, intent_doc: dict, clone: bool) -> None:
        version = meta.get("model_version")
        hop.subject = f"model {version}"
        if not isinstance(version, str) or version.startswith("none"):
            said = intent_doc.get("counts", {}).get("utterances") if intent_doc else None
            hop.check("no model asked", said == 0, "no utterance: no model was asked" if said == 0 else
                      f"the document names no model but its intent output has {said!r} utterances")
            return
        uris = {owner: f"s3://{self.assets}/models/{owner}/{version}/" for owner in (tenant, BASE_MODEL_OWNER)}
        with self.engine.connect() as conn:
            rows = conn.execute(select(model_registry).where(or_(
                *[(model_registry.c.tenant_id == owner) & (model_registry.c.uri == uri) for owner, uri in uris.items()]
            )).order_by(model_registry.c.created_at)).all()
        if not rows:
            hop.fail("registry row", f"model_registry has no row for model {version} (tenant {tenant} or base)")
            return
        row = rows[-1]
        hop.facts.update(registry_tenant=row.tenant_id, registry_version=row.version, status=row.status,
                         uri=row.uri, manifest_sha256=row.sha256, registered_at=str(row.created_at))
        hop.check("registry row", row.status != "rejected",
                  f"{row.tenant_id} v{row.version} ({row.status})" if row.status != "rejected" else
                  f"{row.tenant_id} v{row.version} is a rejected model: it was never served")
        got = self._rehash(row.uri + "manifest.json")
        if got is None:
            hop.fail("manifest re-hashed", f"{row.uri}manifest.json is missing")
            return
        if not hop.check("manifest re-hashed", got[0] == row.sha256,
                         f"{row.uri}manifest.json = the registry's sha256" if got[0] == row.sha256 else
                         f"{row.uri}manifest.json reads sha256 {got[0]}, the registry row says {row.sha256}"):
            return
        bucket, key = _split(row.uri + "manifest.json")
        manifest = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        hop.check("manifest version", manifest.get("version") == version,
                  f"manifest names version {version}" if manifest.get("version") == version else
                  f"manifest names version {manifest.get('version')!r}, not {version}")
        files = manifest.get("files") or {}
        bad = []
        for name, sha in sorted(files.items()):
            got = self._rehash(row.uri + name)
            if got is None or got[0] != sha:
                bad.append(f"{name} " + ("missing" if got is None else f"reads {_short(got[0])}, not {_short(sha)}"))
        hop.check("artifact files re-hashed", files and not bad,
                  f"{len(files)} file(s) re-hashed" if files and not bad else
                  "the manifest lists no files" if not files else "; ".join(bad))

    def hop_transcript(self, hop: Hop, meta: dict, intent_doc: dict, record: dict | None) -> None:
        sha = meta.get("transcript_sha256")
        source_partition = meta.get("source_partition")
        tenant = (source_partition or "").split("--", 1)[0]
        hop.subject = blob_uri(self.assets, tenant, sha or "?")
        if intent_doc and intent_doc.get("transcript_sha256") != sha:
            hop.fail("intent output read it", f"the intent output was made from transcript "
                     f"{intent_doc.get('transcript_sha256')!r}, the document says {sha!r}")
        if not isinstance(sha, str) or not _SHA.fullmatch(sha):
            hop.fail("recorded", f"the document's metadata names no transcript sha256 ({sha!r})")
            return
        data = self._blob_check(hop, "artifact re-hashed", tenant, sha, "transcript")
        ev = self._event_with("transcript", source_partition, "sha256", sha)
        if ev is None:
            hop.fail("materialization", f"no transcript materialization of {source_partition} recorded sha256 {sha}")
        else:
            hop.check("materialization", True, f"transcript run {ev.run_id} recorded it")
            hop.facts["run_id"] = ev.run_id
        if data is None or record is None:
            if record is None:
                hop.fail("source record", f"no handover record of {source_partition}")
            return
        doc = json.loads(data)
        source = doc.get("source")
        hop.facts.update(source=source, origin=doc.get("origin"), asr_model_sha256=doc.get("asr_model_sha256"),
                         lm_sha256=doc.get("lm_sha256"))
        files = {f["role"]: f for f in record["files"]}
        if source == "manifest":
            f = files.get("transcript")
            if f is None:
                hop.fail("uploaded transcript", "the transcript says it was uploaded, the handover has no transcript")
                return
            from astra.canonical import canonical_json
            from astra.core.transcribe import from_manifest

            try:
                redone = hashlib.sha256(canonical_json(from_manifest(self.s3, f))).hexdigest()
            except Exception as exc:  # noqa: BLE001 — a damaged copy is a finding, named
                hop.fail("uploaded transcript re-parsed", f"{f['blob_uri']}: {exc}")
                return
            hop.check("uploaded transcript re-parsed", redone == sha,
                      f"{f['path']} (sha256 {_short(f['sha256'])}) parses to this transcript" if redone == sha else
                      f"{f['path']} parses to a transcript of sha256 {redone}, not {sha}")
        elif source == "asr":
            f = files.get("audio")
            ok_hashes = all(isinstance(doc.get(k), str) and _SHA.fullmatch(doc[k])
                            for k in ("asr_model_sha256", "lm_sha256"))
            hop.check("ASR model and LM recorded", ok_hashes,
                      f"ASR model {_short(doc.get('asr_model_sha256'))}, LM {_short(doc.get('lm_sha256'))}" if ok_hashes
                      else "the transcript does not name the ASR model and LM sha256")
            if ev is not None:
                differs = [k for k in ("asr_model_sha256", "lm_sha256") if ev.metadata.get(k) != doc.get(k)]
                hop.check("ASR hashes = materialization", not differs,
                          "as recorded by the run" if not differs else f"{differs} differ from the run's metadata")
            self._asr_artifacts(hop, doc)
            hop.check("recognized from the session audio", f is not None and doc.get("origin_sha256") == f["sha256"],
                      "origin = the handed-over audio" if f is not None and doc.get("origin_sha256") == f["sha256"]
                      else f"the transcript's origin sha256 {doc.get('origin_sha256')!r} is not the audio's")
        else:
            hop.check("no transcript source", not ({"audio", "transcript"} & set(files)),
                      "a data-only session: empty transcript" if not ({"audio", "transcript"} & set(files)) else
                      "the transcript is empty but the session has audio or a transcript")

    def _asr_artifacts(self, hop: Hop, doc: dict) -> None:
        """The acoustic model installed here and the in-domain LM in this machine's cache, re-hashed against the
        transcript's record. An LM not in the cache fails: what cannot be re-hashed is not verified."""
        from astra.core.asr import acoustic_model_dir, directory_sha256
        from astra.core.transcribe import LM_CACHE
        from astra.stack.stack import state_dir

        asr = directory_sha256(acoustic_model_dir())
        hop.check("acoustic model re-hashed", asr == doc.get("asr_model_sha256"),
                  f"the installed acoustic model hashes to {_short(asr)}, as recorded" if asr ==
                  doc.get("asr_model_sha256") else f"the installed acoustic model hashes to {asr}; the transcript was "
                  f"made with {doc.get('asr_model_sha256')}: not the model recorded")
        lm = doc.get("lm_sha256")
        arpa = state_dir() / LM_CACHE / str(lm) / "lm.arpa"
        if not arpa.is_file():
            # Not verified is not passed: audit where the LM is cached (the run's machine), or rebuild it there.
            hop.check("language model re-hashed", False,
                      f"LM {lm} is not in this machine's cache ({arpa.parent}): it cannot be re-hashed here")
            return
        digest = hashlib.sha256(arpa.read_bytes()).hexdigest()
        hop.check("language model re-hashed", digest == lm, f"{arpa} re-hashed: {_short(digest)}" if digest == lm else
                  f"{arpa} hashes to {digest}, not the recorded LM {lm}")

    def hop_config(self, hop: Hop, tenant: str, meta: dict, record: dict) -> None:
        from astra.config_svc.service import check_config

        version = record["config_version"]
        hop.subject = f"CONFIG_SVC {tenant} v{version}"
        with self.engine.connect() as conn:
            row = conn.execute(select(tenant_config_versions).where(
                tenant_config_versions.c.tenant_id == tenant, tenant_config_versions.c.version == version)).first()
        if row is None:
            hop.fail("version row", f"tenant_config_versions has no row {tenant} v{version}")
            return
        digest = maps_sha256(row.zone_map, row.style_map)
        hop.facts.update(version=version, template_sha256=row.template_sha256, template_name=row.template_name,
                         created_by_run=row.created_by_run, created_at=str(row.created_at), maps_sha256=digest,
                         zones=[z.get("id") for z in row.zone_map.get("zones", [])])
        problems = check_config(row.zone_map, row.style_map, row.template_sha256)
        hop.check("maps pass the schemas", not problems, "zone map and style map valid" if not problems else
                  "; ".join(problems))
        hop.check("template", row.template_sha256 == meta.get("template_sha256"),
                  f"template {_short(row.template_sha256)} = the document's" if row.template_sha256 ==
                  meta.get("template_sha256") else
                  f"the row names template {row.template_sha256}, the document {meta.get('template_sha256')}")
        ev = self._event_with("tenant_config", tenant, "config_version", version)
        if ev is None:
            hop.check("materialization", not re.fullmatch(r"[0-9a-f-]{36}", row.created_by_run or ""),
                      f"published outside Dagster (by {row.created_by_run!r}): no tenant_config materialization"
                      if not re.fullmatch(r"[0-9a-f-]{36}", row.created_by_run or "") else
                      f"run {row.created_by_run} published it but no tenant_config materialization records v{version}")
        else:
            hop.facts["run_id"] = ev.run_id
            same = ev.metadata.get("maps_sha256") == digest
            hop.check("maps = materialization", same,
                      f"maps hash {_short(digest)} = tenant_config run {ev.run_id}'s" if same else
                      f"the row's zone/style maps hash to {digest}; tenant_config run {ev.run_id} published "
                      f"{ev.metadata.get('maps_sha256')}: the row was changed after it was published")
            hop.check("published by that run", row.created_by_run == ev.run_id,
                      f"created_by_run {ev.run_id}" if row.created_by_run == ev.run_id else
                      f"the row says created_by_run {row.created_by_run!r}, the materialization's run is {ev.run_id}")
        if self.config_service is not None:
            snap = self.config_service.snapshot(tenant, version)
            served = maps_sha256(snap.zone_map, snap.style_map)
            hop.check("CONFIG_SVC serves it", served == digest and snap.template_sha256 == row.template_sha256,
                      "the service's snapshot (cache or store) is the row" if served == digest else
                      f"CONFIG_SVC serves maps hashing to {served}, the row's hash to {digest}")

    def hop_template(self, hop: Hop, tenant: str, meta: dict) -> None:
        from astra.ingest.errors import ReassemblyError
        from astra.ingest.template_ingest import load_manifest, rebuild_template

        sha = meta.get("template_sha256")
        hop.subject = f"s3://{self.assets}/{atoms_manifest_key(tenant, sha)}"
        try:
            manifest = load_manifest(self.s3, self.assets, tenant, sha)
        except ClientError as exc:
            if not s3_lib.is_missing(exc):
                raise
            hop.fail("atoms manifest", f"{hop.subject} is missing")
            return
        counts = manifest.get("counts", {})
        hop.facts.update(template_sha256=sha, name=manifest.get("template", {}).get("name"),
                         parts=counts.get("parts"), atoms=counts.get("atoms"))
        hop.check("atoms manifest", manifest.get("template", {}).get("sha256") == sha,
                  f"names template {_short(sha)}" if manifest.get("template", {}).get("sha256") == sha else
                  f"names template {manifest.get('template', {}).get('sha256')!r}, not {sha}")
        try:
            rebuilt = rebuild_template(self.s3, self.assets, tenant, manifest)
        except (ReassemblyError, KeyError) as exc:
            hop.fail("atoms re-assembled", f"cannot re-assemble the template from its atoms: {exc}")
            return
        digest = hashlib.sha256(rebuilt).hexdigest()
        hop.check("atoms re-assembled", digest == sha,
                  f"{counts.get('atoms')} atoms re-assembled to sha256 {_short(digest)}" if digest == sha else
                  f"the atoms re-assemble to sha256 {digest}, not the template's {sha}")
        ev = self._event_with("template_atoms", tenant, "sha256", sha)
        hop.check("materialization", ev is not None,
                  f"template_atoms run {ev.run_id}" if ev is not None else
                  f"no template_atoms materialization of {tenant} recorded sha256 {sha}")

    def hop_custody(self, hop: Hop, session: SessionKey, record: dict) -> None:
        from astra.guard import check_custody, verify_tenant_checkpoints
        from astra.guard.ledger import CustodyLedger

        custody = record.get("custody")
        audio = [f for f in record["files"] if f["role"] == "audio"]
        if custody is None:
            hop.subject = "no audio"
            hop.check("data-only session", not audio and not record["manifest"]["document"].get("audio"),
                      "the manifest names no audio and nothing is held" if not audio else
                      "the session has audio but the handover record holds no custody copy")
            return
        hop.subject = f"s3://{custody['bucket']}/{custody['key']} (version {custody['version_id']})"
        hop.facts.update(sha256=custody["sha256"], version_id=custody["version_id"], ledger_seq=custody["ledger_seq"],
                         retention=f"{custody['retention_mode']} until {custody['retain_until']}")
        held_for = (custody.get("tenant"), custody.get("session_id"), custody.get("version"))
        hop.check("held for this session", held_for == (session.tenant, session.session_id, session.version),
                  f"the custody copy was made for {session.partition_key}" if held_for ==
                  (session.tenant, session.session_id, session.version) else
                  f"the custody copy was made for {held_for!r}, not {session.partition_key}")
        hop.check("the session's audio", bool(audio) and audio[0]["sha256"] == custody["sha256"],
                  f"{audio[0]['path']} = the custody copy's sha256" if audio and audio[0]["sha256"] ==
                  custody["sha256"] else "the custody copy is not the handed-over audio")
        head = s3_lib.head(self.s3, custody["bucket"], custody["key"], custody["version_id"], checksum=False)
        if head is not None:
            until = head.get("ObjectLockRetainUntilDate")
            hop.facts["object_lock"] = f"{head.get('ObjectLockMode')} until {until.isoformat() if until else None}"
        problems = check_custody(self.s3, self.settings, self.engine, custody)
        by_check: dict[str, list[str]] = {name: [] for name in _CUSTODY_CHECKS.values()}
        for problem in problems:  # "<kind>: <detail>" (astra.guard.check_custody)
            kind = problem.split(":", 1)[0]
            by_check[_CUSTODY_CHECKS.get(kind, "guard object re-hashed")].append(problem)
        passed = {
            "ledger entry": f"seq {custody['ledger_seq']} (entry hash {_short(custody['ledger_entry_hash'])}) records "
                            "this copy",
            "guard object re-hashed": f"version {custody['version_id']} re-hashed: {_short(custody['sha256'])}, "
                                      "and the key still serves it",
            "retention": f"{(head or {}).get('ObjectLockMode', custody['retention_mode'])} until at least the "
                         f"ledger's {custody['retain_until']}",
            "chain": "the tenant's hash chain re-walked from genesis: intact",
        }
        for name, found in by_check.items():
            hop.check(name, not found, passed[name] if not found else " | ".join(found))
        worm = verify_tenant_checkpoints(self.engine, self.s3, self.settings.guard_bucket, session.tenant)
        hop.check("WORM checkpoints", not worm, "the ledger agrees with every locked checkpoint object" if not worm
                  else " | ".join(f"{p.kind}: {p.detail}" for p in worm))
        cp = CustodyLedger(self.engine).last_checkpoint(session.tenant)
        covered = cp is not None and cp.size >= custody["ledger_seq"]
        hop.facts["checkpoint"] = f"size {cp.size}, root {cp.merkle_root}" if cp else "none yet"
        hop.facts["covered_by_checkpoint"] = covered
        seq = custody["ledger_seq"]
        if by_check["chain"] or worm:
            hop.fail("chain up to a checkpoint", f"entry seq {seq}: the chain or its checkpoints do not verify (above)")
        else:
            # Until a checkpoint covers it, the entry is only as good as the database: a superuser could rewrite the
            # tail with every hash recomputed. Not verified is not passed.
            hop.check("chain up to a checkpoint", covered,
                      f"entry seq {seq} is inside checkpoint size {cp.size} (root {_short(cp.merkle_root)})"
                      if covered else f"entry seq {seq} is after the newest checkpoint "
                      f"({'size ' + str(cp.size) if cp else 'none'}): not yet anchored outside the database; run "
                      "`astra guard verify` (the custody_audit schedule does) and audit again")

    def hop_manifest(self, hop: Hop, partition: str, record: dict) -> None:
        from astra.orchestrator.manifest import ManifestRejected, parse_manifest

        m = record["manifest"]
        tenant = record["session"]["tenant"]
        hop.subject = m.get("blob_uri", "")
        hop.facts.update(key=m.get("key"), sha256=m.get("sha256"))
        data = self._blob_check(hop, "manifest re-hashed", tenant, m["sha256"], "manifest")
        if data is not None:
            try:
                parsed = parse_manifest(m["key"], data)
            except ManifestRejected as exc:
                hop.fail("schema", str(exc))
                parsed = None
            if parsed is not None:
                hop.check("schema", True, "valid against session_manifest.schema.json")
                named = sorted(f.path for f in parsed.files)
                held = sorted(f["path"] for f in record["files"])
                hop.check("names the handed-over files", named == held,
                          f"{len(named)} file(s): {', '.join(named)}" if named == held else
                          f"the manifest names {named}, the handover record holds {held}")
                hop.check("session", parsed.session.partition_key == partition,
                          f"manifest of {partition}" if parsed.session.partition_key == partition else
                          f"the manifest is {parsed.session.partition_key}'s, not {partition}'s")
        bad = []
        for f in record["files"]:
            got = self._rehash(f["blob_uri"])
            if got is None or (got[0], got[1]) != (f["sha256"], f["size"]):
                said = "missing" if got is None else f"reads sha256 {got[0]} ({got[1]} bytes), not {f['sha256']}"
                bad.append(f"{f['path']}: {f['blob_uri']} {said}")
        hop.check("session files re-hashed", not bad, f"{len(record['files'])} durable copies re-hashed" if not bad
                  else "; ".join(bad))

    def hop_reports(self, hop: Hop, tenant: str, meta: dict) -> None:
        version = meta.get("model_version")
        hop.subject = f"comparison reports behind model {version}"
        with self.engine.connect() as conn:
            row = conn.execute(select(model_registry).where(
                model_registry.c.tenant_id == tenant,
                model_registry.c.uri == f"s3://{self.assets}/models/{tenant}/{version}/")).first()
        if row is None:
            hop.check("model trained on feedback", True,
                      f"model {version} is not {tenant}'s own (the base model): no comparison report fed it")
            return
        cutoff = row.created_at.timestamp()
        reports = [e for e in self.source.records("comparison_report")
                   if (e.partition or "").startswith(f"{tenant}--") and e.timestamp <= cutoff]
        hop.facts["reports"] = [f"{e.partition} run {e.run_id}" for e in reports]
        if not reports:
            hop.fail("comparison reports", f"{tenant}'s model {version} has no comparison report before it")
            return
        bad = []
        for e in reports:
            sha = e.metadata.get("sha256")
            got = self._rehash(e.metadata.get("blob_uri") or blob_uri(self.assets, tenant, sha))
            if got is None or got[0] != sha:
                bad.append(f"{e.partition}: " + ("missing" if got is None else f"reads {_short(got[0])}, not {sha}"))
        hop.check("comparison reports re-hashed", not bad,
                  f"{len(reports)} report(s) re-hashed" if not bad else "; ".join(bad))


# the blocking checks of the document assets (astra_assets.builder: OPENS, NO_FORBIDDEN, ZONES_PRESENT)
_DOCUMENT_CHECKS = BLOCKING_CHECKS

# check_custody's problem kinds → the custody hop's checks
_CUSTODY_CHECKS = {"ledger": "ledger entry", "object_missing": "guard object re-hashed",
                   "object_changed": "guard object re-hashed", "retention_weakened": "retention", "chain": "chain"}

_TITLES = {
    "document": "document binary",
    "materialization": "materialization",
    "parent": "parent version",
    "intent_output": "intent output",
    "model": "model version",
    "transcript": "transcript",
    "config": "config version",
    "template": "template",
    "custody": "audio under custody",
    "manifest": "manifest",
    "comparison_reports": "comparison reports",
}


def audit(target: str, *, s3, settings: Settings, engine: Engine, source: MaterializationSource,
          config_service=None, progress: Progress | None = None) -> AuditReport:
    """Walk and re-verify the chain of the document `target` names (see the module docstring). BadTarget when
    `target` names no document ASTRA built."""
    return Auditor(s3, settings, engine, source, config_service, progress).audit(target)
