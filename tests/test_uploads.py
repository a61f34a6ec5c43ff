"""The uploads scanner over a real S3 server (moto): nothing missed however keys sort, bounded
work per tick, fair across tenants, a small cursor, refused uploads read once."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from astra import uploads
from astra.uploads import Budget, MeteredS3, scan

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3):
    name = f"scan-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


class Judge:
    """Records what it is asked to judge; answers `answer(key)` (True: settled)."""

    def __init__(self, answer=lambda key: True):
        self.keys: list[str] = []
        self.answer = answer

    def __call__(self, obj) -> bool:
        self.keys.append(obj.key)
        return self.answer(obj.key)


def sweep(s3, bucket, state, ticks, judge=None, **kw):
    judge = judge or Judge()
    for _ in range(ticks):
        state = scan(MeteredS3(s3), bucket, "templates", state, judge=judge, **kw).state
    return judge.keys, state


def put(s3, bucket, key, body=b"1"):
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_new_and_changed_keys_are_judged_once_whatever_their_order(s3, bucket):
    put(s3, bucket, "m/templates/a.docx")
    found, state = sweep(s3, bucket, None, 2)
    assert found == ["m/templates/a.docx"]
    # A tenant that sorts before the ring position, a re-upload with new bytes, an unchanged key.
    put(s3, bucket, "a/templates/x.docx")
    put(s3, bucket, "m/templates/a.docx", b"2")
    found, state = sweep(s3, bucket, state, 2)
    assert sorted(found) == ["a/templates/x.docx", "m/templates/a.docx"]
    assert sweep(s3, bucket, state, 2)[0] == []


def test_pages_of_stray_root_objects_do_not_stall_the_tenant_ring(s3, bucket):
    put(s3, bucket, "acme/templates/t.docx")
    for i in range(5):
        put(s3, bucket, f"b-stray-{i}", b"x")
    put(s3, bucket, "zeta/templates/t.docx")
    found, _ = sweep(s3, bucket, None, 2, budget=Budget(page=3))
    assert sorted(found) == ["acme/templates/t.docx", "zeta/templates/t.docx"]


def test_only_the_area_and_accepted_keys_are_judged(s3, bucket):
    put(s3, bucket, "acme/templates/t.docx")
    put(s3, bucket, "acme/templates/notes.txt")
    put(s3, bucket, "acme/sessions/s/v1/manifest.json", b"{}")
    found, _ = sweep(s3, bucket, None, 1, accept=lambda k: k.endswith(".docx"))
    assert found == ["acme/templates/t.docx"]


def test_an_upload_left_for_later_is_judged_again_on_the_next_sweep(s3, bucket):
    put(s3, bucket, "acme/templates/t.docx")
    flaky = Judge(answer=lambda key: len(flaky.keys) > 1)  # fails the first time (an S3 fault)
    found, _ = sweep(s3, bucket, None, 3, judge=flaky)
    assert found == ["acme/templates/t.docx", "acme/templates/t.docx"]


def test_one_tenants_junk_cannot_starve_another_and_each_tick_is_bounded(s3, bucket):
    for i in range(120):
        put(s3, bucket, f"a-junk/templates/j{i:03d}.docx")
    put(s3, bucket, "z-good/templates/report.docx")
    budget = Budget(per_tenant=20, page=10)
    judge = Judge()
    s3m = MeteredS3(s3)
    result = scan(s3m, bucket, "templates", None, judge=judge, budget=budget)
    assert "z-good/templates/report.docx" in judge.keys  # the good tenant's turn came in the first tick
    assert len(judge.keys) < 20 and s3m.requests <= 20 + 5  # the junk tenant's share, plus listings
    assert len(json.dumps(result.state)) < 2000
    # The junk is worked off over later ticks, each bounded, none judged twice (more junk than the
    # cursor remembers: what it forgot is answered by `settled`, as the sensors' recorded refusals do).
    state = result.state
    for _ in range(40):
        state = scan(MeteredS3(s3), bucket, "templates", state, judge=judge, budget=budget,
                     settled=lambda obj: obj.key in judge.keys).state
    assert sorted(judge.keys) == sorted(set(judge.keys)) and len(judge.keys) == 121


def test_the_tick_stops_at_its_request_budget(s3, bucket):
    for t in range(6):
        put(s3, bucket, f"t{t}/templates/x.docx")
    s3m = MeteredS3(s3)
    result = scan(s3m, bucket, "templates", None, judge=Judge(), budget=Budget(requests=4))
    assert result.out_of_budget and s3m.requests <= 5 and len(result.tenants_visited) < 6
    # The next tick continues with the next tenant, not from the start.
    following = scan(MeteredS3(s3), bucket, "templates", result.state, judge=Judge(), budget=Budget(requests=4))
    assert following.tenants_visited[0] not in result.tenants_visited


def test_refused_uploads_are_read_once_and_the_cursor_stays_bounded(s3, bucket, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_SEEN", 5)
    monkeypatch.setattr(uploads, "MARGIN_SECONDS", 0)
    for i in range(30):
        put(s3, bucket, f"junk/templates/j{i:02d}.docx")
    time.sleep(1.1)  # the first sweep starts after the junk's LastModified second
    judge = Judge()
    _, state = sweep(s3, bucket, None, 1, judge=judge)
    assert len(judge.keys) == 30
    assert sum(len(s) for s in state["seen"].values()) <= 5
    # Past the seen cap, the tenant's mark (the sweep's start) keeps the old junk from being re-read.
    _, state = sweep(s3, bucket, state, 3, judge=judge)
    assert len(judge.keys) == 30
    put(s3, bucket, "junk/templates/j05.docx", b"re-uploaded")
    sweep(s3, bucket, state, 1, judge=judge)
    assert judge.keys[30:] == ["junk/templates/j05.docx"]


def test_a_tenant_that_is_not_ready_waits_and_is_judged_once_ready(s3, bucket):
    put(s3, bucket, "acme/templates/t.docx")
    put(s3, bucket, "beta/templates/t.docx")
    ready = {"acme": "no config yet"}
    judge = Judge()
    first = scan(MeteredS3(s3), bucket, "templates", None, judge=judge, ready=lambda t: ready.get(t))
    assert judge.keys == ["beta/templates/t.docx"]
    assert first.waiting == {"acme": "no config yet"} and first.newly_waiting == ["acme"]
    second = scan(MeteredS3(s3), bucket, "templates", first.state, judge=judge, ready=lambda t: ready.get(t))
    assert second.waiting == {"acme": "no config yet"} and second.newly_waiting == []  # said once
    ready.clear()
    scan(MeteredS3(s3), bucket, "templates", second.state, judge=judge)
    assert judge.keys == ["beta/templates/t.docx", "acme/templates/t.docx"]


@pytest.mark.parametrize("tenants", [["acme", "acme-eu"], ["demo", "demo-2", "demo-3"], ["acme", "acme.bak"]])
def test_tenants_whose_names_extend_another_are_never_starved(s3, bucket, tenants):
    """S3 sorts "acme-eu/" before "acme/": the ring's wrap must compare prefixes, not bare names."""
    for tenant in tenants:
        put(s3, bucket, f"{tenant}/templates/first.docx")
    found, state = sweep(s3, bucket, None, 2)
    assert sorted(found) == sorted(f"{t}/templates/first.docx" for t in tenants)
    for round_ in range(3):  # every later upload, of every tenant, is found within two ticks
        for tenant in tenants:
            put(s3, bucket, f"{tenant}/templates/r{round_}.docx")
        found, state = sweep(s3, bucket, state, 2)
        assert sorted(found) == sorted(f"{t}/templates/r{round_}.docx" for t in tenants)
