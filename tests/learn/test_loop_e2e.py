"""LEARN end to end on the real stack (issue 10 §2): labelled examples → the feedback stream → Postgres → retrain →
candidate → holdout gate → promote (MODEL_UPDATED in the outbox) → drain → Redis pub/sub → a running
`astra serve core` subprocess answers with the new model version, while a classify loop runs the whole time.

The server reconciles with the registry only at start (``--reconcile 3600``): a model it serves later came through
the event, so a queued event that was not published is visible as a model not served.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import select

from astra.core.core_client import IntentClient
from astra.core.intent.data import DEFAULT_DATASET, Example
from astra.core.intent.model import IntentModel
from astra.core.intent.store import BASE_TENANT
from astra.core.model_store import ACTIVE, CANDIDATE, REJECTED, ModelRecord, ModelStore, channel, drain_outbox
from astra.db import make_engine
from astra.db.schema import outbox
from astra.learn.examples import LabelledExample
from astra.learn.feedback import FeedbackConsumer, corrections, latest_revision, publish_examples, settle
from astra.learn.gate import GateVerdict, build_holdout, holdout_gate
from astra.learn.retrain import retrain
from astra.stack.processes import free_port
from tests.conftest import ROOT
from tests.core.test_model_store import tiny_encoder  # noqa: F401 — a fixture of base_model

pytestmark = pytest.mark.integration

# Pairs a tiny model confuses (flight/hotel, transfer/bill, reminder/its update): the base misroutes enough.
INTENTS = ("book_flight", "book_hotel", "transfer", "pay_bill", "bill_balance", "reminder", "reminder_update",
           "weather")
BASE_ROWS = 5  # training utterances per intent the base has seen
CANDIDATE_ROWS = slice(BASE_ROWS, 45)  # where the user finds misrouted utterances
ROTATED = dict(zip(INTENTS, INTENTS[1:] + INTENTS[:1], strict=True))  # a poisoner's wrong zone for each intent
PROBE = ["book me a flight to boston", "what is the weather like tomorrow"]
EVENT_KEYS = {"event", "tenant", "model_version", "uri", "sha256", "published_at"}


@pytest.fixture(scope="module")
def train_rows() -> dict[str, list[str]]:
    """CLINC150 train utterances of each intent, in the dataset's order."""
    rows: dict[str, list[str]] = {intent: [] for intent in INTENTS}
    for text, intent in json.loads(DEFAULT_DATASET.read_text())["train"]:
        if intent in rows:
            rows[intent].append(text)
    return rows


@pytest.fixture(scope="module")
def engine(pg_url):
    return make_engine(pg_url)


@pytest.fixture(scope="module")
def store(settings, s3, engine, tmp_path_factory) -> ModelStore:
    return ModelStore(engine, s3, settings.assets_bucket, tmp_path_factory.mktemp("learn-publisher-cache"))


@pytest.fixture(scope="module")
def base_model(tiny_encoder, train_rows, store, engine, redis_url, redis_prefix,  # noqa: F811
               tmp_path_factory) -> IntentModel:
    """A tiny base model, published as the registry's newest active base model (what the server serves a tenant
    without a model of its own)."""
    examples = [Example(text, intent) for intent in INTENTS for text in train_rows[intent][:BASE_ROWS]]
    model = IntentModel.train(examples, tiny_encoder, tenant=BASE_TENANT)
    directory = tmp_path_factory.mktemp("learn-base") / model.version
    model.save(directory)
    store.publish(BASE_TENANT, directory)
    drain_outbox(engine, redis.Redis.from_url(redis_url), redis_prefix)
    return model


@pytest.fixture(scope="module")
def core_service(stack_env, base_model, tmp_path_factory):
    """A real `astra serve core` process on loopback with the stack's token: (its target, its token, its log)."""
    state = tmp_path_factory.mktemp("learn-core-state")
    log_path = state / "serve-core.log"
    env = {**os.environ, **stack_env, "ASTRA_STATE_DIR": str(state), "ASTRA_CORE_TARGET": ""}
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("astra")), "serve", "core", "--port", "0",
                                 "--reconcile", "3600", "--grace", "1"],
                                env=env, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert "serving on 127.0.0.1:" in line, log_path.read_text()[-3000:]
        yield line.split("serving on ", 1)[1].split()[0], stack_env["ASTRA_SERVICE_TOKEN"], log_path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            proc.kill()


@pytest.fixture
def client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def feedback_prefix(redis_prefix) -> str:
    """The feedback stream of this test alone: a consumer of the run's stream would take other tests' entries."""
    return f"{redis_prefix}:{uuid.uuid4().hex[:8]}"


class ClassifyLoop(threading.Thread):
    """Classify for the tenant back to back until stopped: every answer's model version, every failure."""

    def __init__(self, target: str, token: str, tenant: str):
        super().__init__(name="classify-loop", daemon=True)
        self.client, self.tenant = IntentClient(target, token, deadline_s=5), tenant
        self.versions: list[str] = []
        self.failures: list[str] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.versions.append(self.client.classify(self.tenant, PROBE).model_version)
            except Exception as exc:  # noqa: BLE001 — every failure is a finding the test reports
                self.failures.append(repr(exc))

    def wait_for(self, version: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.versions and self.versions[-1] == version:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=10)
        self.client.close()

    def __enter__(self) -> ClassifyLoop:
        """Started, and answering: the loop runs before anything is learned."""
        self.start()
        deadline = time.monotonic() + 10
        while not self.versions and not self.failures and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.versions, self.failures
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def moved(tenant: str, pairs: list[tuple[str, str, str]], model_version: str, round_name: str) -> list[LabelledExample]:
    """The labelled examples of a user's moves: (text, the zone's intent it was in, the intent of the zone it was
    moved to), as the comparator derives them from one feedback document."""
    report = hashlib.sha256(f"{tenant} {round_name}".encode()).hexdigest()  # stands for the comparison report's
    return [LabelledExample(tenant=tenant, session=f"{tenant}--{round_name}--v1", utterance_key=f"u{k}", text=text,
                            intent=to_intent, kind="moved", from_zone=f"zone_{from_intent}",
                            to_zone=f"zone_{to_intent}", model_version=model_version, report_sha256=report)
            for k, (text, from_intent, to_intent) in enumerate(pairs, start=1)]


def misrouted(model: IntentModel, train_rows: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """Utterances the model puts in the wrong zone: (text, its answer, the right intent)."""
    rows = [(text, intent) for intent in INTENTS for text in train_rows[intent][CANDIDATE_ROWS]]
    answers = model.classify([text for text, _ in rows])
    return [(text, answer.intent, intent) for (text, intent), answer in zip(rows, answers, strict=True)
            if answer.intent != intent]


def learning_round(*, tenant: str, examples: list[LabelledExample], client: redis.Redis, engine, prefix: str,
                   store: ModelStore, tmp_path: Path) -> tuple[ModelRecord, GateVerdict]:
    """What LEARN does with a round of corrections, step by step: the stream, Postgres, the retrain from the base
    plus every accepted correction, the candidate, the gate on the tenant's holdout, the verdict."""
    assert publish_examples(client, prefix, examples)
    consumer = FeedbackConsumer(client, engine, prefix, f"learn-{uuid.uuid4().hex[:6]}")
    consumer.ensure_group()
    assert consumer.consume(count=len(examples) + 10).stored == {tenant: len(examples)}
    revision = latest_revision(engine, tenant)
    training = [e.to_example() for e in corrections(engine, tenant, holdout=False, up_to_revision=revision)]
    held_back = [e.to_example() for e in corrections(engine, tenant, holdout=True, up_to_revision=revision)]
    assert training and held_back, "the round needs examples on both sides of the holdout split"
    base = store.load(store.latest(BASE_TENANT), IntentModel.load)
    own = store.latest(tenant)
    current = store.load(own, IntentModel.load) if own else None
    model = retrain(base, tenant, training, current)
    model.save(tmp_path / model.version)
    record = store.publish(tenant, tmp_path / model.version, status=CANDIDATE)
    assert store.latest(tenant) == own and outbox_rows(engine, tenant) == []  # a candidate: not served, not announced
    served = current or base  # the gate compares with what the tenant is served now
    verdict = holdout_gate(served, model, build_holdout(served, held_back), base=base)
    if verdict.passed:
        record = store.promote(tenant, record.registry_version, verdict.metrics)
    else:
        record = store.reject(tenant, record.registry_version, verdict.reason, verdict.metrics)
    settle(engine, tenant, revision, accepted=verdict.passed, registry_version=record.registry_version)
    return record, verdict


def outbox_rows(engine, tenant: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(select(outbox).where(outbox.c.tenant_id == tenant)
                                                  .order_by(outbox.c.id)).mappings()]


def events_for(pubsub, tenant: str, seconds: float) -> list[dict]:
    """The MODEL_UPDATED messages of the tenant received within ``seconds`` (other tests' queued events pass by)."""
    found, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline and not found:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None and json.loads(message["data"]).get("tenant") == tenant:
            found.append(json.loads(message["data"]))
    return found


def test_corrections_reach_the_running_server_with_no_failed_request(
        core_service, base_model, train_rows, store, engine, settings, client, redis_prefix, feedback_prefix,
        tenant, tmp_path):
    target, token, log_path = core_service
    pairs = misrouted(base_model, train_rows)
    assert len(pairs) >= 40, pairs  # held back one in five: both sides of the split get some
    listener = client.pubsub()
    listener.subscribe(channel(redis_prefix))
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    with ClassifyLoop(target, token, tenant) as loop:
        record, verdict = learning_round(
            tenant=tenant, examples=moved(tenant, pairs, base_model.version, "round1"), client=client,
            engine=engine, prefix=feedback_prefix, store=store, tmp_path=tmp_path)
        assert verdict.passed, verdict.reason
        assert record.status == ACTIVE and store.latest(tenant) == record
        assert [row["published_at"] for row in outbox_rows(engine, tenant)] == [None]  # queued, not yet sent
        assert loop.versions[-1] == base_model.version  # nothing announced: the server still serves the base
        assert drain_outbox(engine, client, redis_prefix) >= 1
        assert loop.wait_for(record.model_version, 10), log_path.read_text()[-3000:]
        time.sleep(0.3)  # a few answers after the switch: it never goes back
    assert loop.failures == []
    switched = loop.versions.index(record.model_version)
    assert switched > 0 and set(loop.versions[:switched]) == {base_model.version}
    assert set(loop.versions[switched:]) == {record.model_version}
    assert store.record(tenant, record.registry_version).status == ACTIVE
    assert store.record(tenant, record.registry_version).metrics["gate"]["passed"] is True
    (row,) = outbox_rows(engine, tenant)
    assert row["published_at"] is not None and row["topic"] == "model.updated"
    (event,) = events_for(listener, tenant, 5)
    listener.close()
    assert set(event) == EVENT_KEYS and event == row["payload"]
    manifest_sha = hashlib.sha256((tmp_path / record.model_version / "manifest.json").read_bytes()).hexdigest()
    assert {k: v for k, v in event.items() if k != "published_at"} == {
        "event": "MODEL_UPDATED", "tenant": tenant, "model_version": record.model_version,
        "uri": f"s3://{settings.assets_bucket}/models/{tenant}/{record.model_version}/", "sha256": manifest_sha}
    assert datetime.fromisoformat(event["published_at"]).utcoffset() is not None


def test_an_event_queued_while_redis_is_down_goes_out_when_it_is_back(
        core_service, base_model, train_rows, store, engine, client, redis_prefix, feedback_prefix, tenant,
        tmp_path):
    target, token, log_path = core_service
    with ClassifyLoop(target, token, tenant) as loop:
        record, verdict = learning_round(
            tenant=tenant, examples=moved(tenant, misrouted(base_model, train_rows), base_model.version, "round1"),
            client=client, engine=engine, prefix=feedback_prefix, store=store, tmp_path=tmp_path)
        assert verdict.passed and record.status == ACTIVE, verdict.reason
        down = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        assert drain_outbox(engine, down, redis_prefix) == 0
        (row,) = outbox_rows(engine, tenant)
        assert row["published_at"] is None
        assert not loop.wait_for(record.model_version, 1.5)  # not announced: still the base
        assert drain_outbox(engine, client, redis_prefix) >= 1
        assert loop.wait_for(record.model_version, 10), log_path.read_text()[-3000:]
    assert loop.failures == []
    assert set(loop.versions) == {base_model.version, record.model_version}
    (row,) = outbox_rows(engine, tenant)
    assert row["published_at"] is not None and row["payload"]["model_version"] == record.model_version


def test_a_poisoned_round_is_rejected_never_announced_never_served(
        core_service, base_model, train_rows, store, engine, client, redis_prefix, feedback_prefix, tenant,
        tmp_path):
    target, token, _ = core_service
    # Everything the base knows and more, moved to the wrong zones.
    wrong = [(text, intent, ROTATED[intent]) for intent in INTENTS for text in train_rows[intent][:20]]
    with ClassifyLoop(target, token, tenant) as loop:
        record, verdict = learning_round(
            tenant=tenant, examples=moved(tenant, wrong, base_model.version, "poisoned"), client=client,
            engine=engine, prefix=feedback_prefix, store=store, tmp_path=tmp_path)
        assert not verdict.passed and verdict.reason.startswith("worse than the current model on "), verdict.reason
        assert record.status == REJECTED and store.record(tenant, record.registry_version).status == REJECTED
        assert store.record(tenant, record.registry_version).metrics["gate"]["reason"] == verdict.reason
        assert store.latest(tenant) is None and outbox_rows(engine, tenant) == []
        # Even told its model changed, the server reads the registry, where nothing of the tenant's is active.
        client.publish(channel(redis_prefix), json.dumps(record.event(datetime.now().astimezone().isoformat())))
        assert not loop.wait_for(record.model_version, 2.0)
    assert loop.failures == []
    assert set(loop.versions) == {base_model.version}
    # The rejected round trains nothing more: its examples are settled as rejected.
    assert corrections(engine, tenant, holdout=False) == [] and corrections(engine, tenant, holdout=True) == []
