"""RegisterAssets over real gRPC on loopback: statuses, errors, health, graceful shutdown, and the
orchestrator client's fail-open behaviour (dead port, slow server, database down, recovery)."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from astra.ingest.registry import AssetRegistry, Digest, Outcome, registry_engine
from astra.ingest.registry_server import SERVICE_NAME, serve
from astra.orchestrator.registry_client import RegisterResult, RegistryClient, RegistryError
from astra.protos import ingest_registry_pb2 as pb
from astra.stack import processes
from tests.registry.conftest import TOKEN, new_digest, request, stub

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_of(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def test_new_then_duplicate_over_grpc(server, settings, tenant):
    a, b = new_digest("audio.wav", "audio/wav"), new_digest("data/x.csv", "text/csv")
    first = stub(server.target).RegisterAssets(request(tenant, a, b), timeout=5)
    assert [(s.sha256, s.status) for s in first.statuses] == [(a.sha256, pb.AssetStatus.NEW),
                                                              (b.sha256, pb.AssetStatus.NEW)]
    blob = f"{tenant}/blobs/sha256/{a.sha256[:2]}/{a.sha256}"
    assert first.statuses[0].canonical_uri == f"s3://{settings.assets_bucket}/{blob}"
    client = RegistryClient(server.target, deadline_s=2)
    again = client.register(tenant, [b, a])
    assert again.skipped_reason is None and not again.skipped
    assert [(s.sha256, s.outcome) for s in again.statuses] == [(b.sha256, Outcome.DUPLICATE),
                                                              (a.sha256, Outcome.DUPLICATE)]
    assert again.statuses[1].canonical_uri == first.statuses[0].canonical_uri


def test_other_tenant_learns_nothing_over_grpc(server, tenant):
    d = new_digest()
    client = RegistryClient(server.target, deadline_s=2)
    assert client.register(tenant, [d]).statuses[0].is_new
    other = client.register(tenant + "-b", [d]).statuses[0]
    assert other.outcome is Outcome.NEW and other.canonical_uri.split("/")[3] == tenant + "-b"


def test_concurrent_calls_for_one_digest_yield_one_new(server, tenant):
    d, n = new_digest(), 32
    client = RegistryClient(server.target, deadline_s=10)
    barrier = threading.Barrier(n)
    results: list[RegisterResult] = []

    def call():
        barrier.wait()
        results.append(client.register(tenant, [d]))

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == n and not any(r.skipped for r in results)
    outcomes = sorted(r.statuses[0].outcome.value for r in results)
    assert outcomes == ["DUPLICATE"] * (n - 1) + ["NEW"]
    assert len({r.statuses[0].canonical_uri for r in results}) == 1


@pytest.mark.parametrize(
    "tenant_, digest, fragment",
    [
        ("Not A Slug", new_digest(), "tenant: invalid tenant"),
        (None, Digest("g" * 64, 1), "assets[0].sha256: must be 64 lowercase hex"),
        (None, Digest("ab" * 32, -5), "assets[0].size: must be an integer >= 0"),
    ],
)
def test_invalid_input_is_invalid_argument(server, tenant, tenant_, digest, fragment):
    with pytest.raises(grpc.RpcError) as err:
        stub(server.target).RegisterAssets(request(tenant_ or tenant, digest), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in err.value.details()
    # The client does not fail open on a bad request: it raises.
    with pytest.raises(RegistryError) as cerr:
        RegistryClient(server.target, deadline_s=2).register(tenant_ or tenant, [digest])
    assert cerr.value.code == grpc.StatusCode.INVALID_ARGUMENT and fragment in str(cerr.value)


def test_health_serving_then_not_serving_and_in_flight_call_drains(registry, tenant):
    srv = serve("127.0.0.1:0", registry, delay_s=0.4, token=TOKEN)
    try:
        assert health_of(srv.target) == SERVING
        assert health_of(srv.target, SERVICE_NAME) == SERVING
        ch = grpc.insecure_channel(srv.target)
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
        assert next(watch).status == SERVING
        d = new_digest()
        in_flight = stub(srv.target).RegisterAssets.future(request(tenant, d), timeout=10)
        time.sleep(0.1)  # the call is now in the server, sleeping its 0.4 s
        stopper = threading.Thread(target=srv.graceful_stop, kwargs={"grace_s": 5, "announce_s": 0.3})
        t0 = time.monotonic()
        stopper.start()
        assert next(watch).status == NOT_SERVING
        watch.cancel()
        assert health_of(srv.target, SERVICE_NAME) == NOT_SERVING  # still answering during the announce
        assert health_of(srv.target) == NOT_SERVING
        response = in_flight.result(timeout=5)  # drained, not cut
        assert [(s.sha256, s.status) for s in response.statuses] == [(d.sha256, pb.AssetStatus.NEW)]
        stopper.join(5)
        assert not stopper.is_alive() and time.monotonic() - t0 < 2
        # Stopped: new calls are refused, and the client fails open on that.
        assert RegistryClient(srv.target).register(tenant, [new_digest()]).skipped_reason == "unavailable"
        ch.close()
    finally:
        srv.stop(0)


def test_client_fails_open_fast_on_a_dead_port(tenant):
    target = f"127.0.0.1:{processes.free_port()}"
    client = RegistryClient(target)
    for _ in range(3):
        t0 = time.perf_counter()
        result = client.register(tenant, [new_digest()])
        elapsed = time.perf_counter() - t0
        assert result == RegisterResult(None, "unavailable") and result.skipped
        assert elapsed < 0.2, elapsed


def test_client_fails_open_on_a_slow_server(registry, tenant):
    srv = serve("127.0.0.1:0", registry, delay_s=0.2, token=TOKEN)
    try:
        client = RegistryClient(srv.target)  # the 50 ms default
        assert client.deadline_s == 0.05
        t0 = time.perf_counter()
        result = client.register(tenant, [new_digest()])
        elapsed = time.perf_counter() - t0
        assert result == RegisterResult(None, "deadline exceeded")
        assert 0.045 <= elapsed < 0.2, elapsed  # gave up at its deadline, never waited for the answer
    finally:
        srv.graceful_stop(0)


def test_client_fails_open_when_the_database_is_down(settings, tenant):
    dead_db = f"postgresql://postgres@127.0.0.1:{processes.free_port()}/nowhere"
    engine = registry_engine(dead_db, pool_size=2)
    srv = serve("127.0.0.1:0", AssetRegistry(engine, settings.assets_bucket), token=TOKEN)
    try:
        with pytest.raises(grpc.RpcError) as err:
            stub(srv.target).RegisterAssets(request(tenant, new_digest()), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert RegistryClient(srv.target, deadline_s=2).register(tenant, [new_digest()]).skipped_reason == "unavailable"
    finally:
        srv.graceful_stop(0)
        engine.dispose()


def test_client_recovers_when_the_server_comes_back(registry, tenant):
    target = f"127.0.0.1:{processes.free_port()}"
    client = RegistryClient(target)
    d = new_digest()
    assert client.register(tenant, [d]).skipped_reason == "unavailable"  # nothing there yet
    srv = serve(target, registry, token=TOKEN)
    try:
        deadline = time.monotonic() + 3
        while (result := client.register(tenant, [d])).skipped and time.monotonic() < deadline:
            time.sleep(0.02)
        found_after = 3 - (deadline - time.monotonic())
        assert not result.skipped and result.statuses[0].is_new
        assert found_after < 1.5, found_after  # backoff capped at 1 s, not gRPC's default 120 s
    finally:
        srv.graceful_stop(0)
    assert client.register(tenant, [d]).skipped_reason == "unavailable"  # down again: fails open
    srv = serve(target, registry, token=TOKEN)
    try:
        deadline = time.monotonic() + 3
        while (result := client.register(tenant, [d])).skipped and time.monotonic() < deadline:
            time.sleep(0.02)
        assert result.statuses[0].outcome is Outcome.DUPLICATE
    finally:
        srv.graceful_stop(0)


def test_one_channel_per_process_and_target():
    from astra.orchestrator import registry_client

    target = f"127.0.0.1:{processes.free_port()}"
    assert registry_client.channel(target) is registry_client.channel(target)
    assert RegistryClient(target)._stub is not None
    assert registry_client.channel(target) is not registry_client.channel(f"127.0.0.1:{processes.free_port()}")


def test_calls_queued_behind_a_busy_lane_run_as_one_batch(registry_engine_, settings, tenant):
    from astra.ingest.registry_server import Batcher

    class SlowFirstBatch(AssetRegistry):
        sizes: list[int] = []

        def register_validated(self, requests):
            self.sizes.append(len(requests))
            if len(self.sizes) == 1:
                time.sleep(0.3)  # the only lane is busy: the next calls queue
            return super().register_validated(requests)

    reg = SlowFirstBatch(registry_engine_, settings.assets_bucket)
    batcher = Batcher(reg, lanes=1)
    shared, other = new_digest(), tenant + "-b"
    results: dict[int, list] = {}

    def call(i):
        results[i] = batcher.register(tenant if i % 2 == 0 else other, [shared, new_digest()])

    first = threading.Thread(target=call, args=(0,))
    first.start()
    time.sleep(0.1)
    rest = [threading.Thread(target=call, args=(i,)) for i in range(1, 13)]
    for t in rest:
        t.start()
    for t in [first, *rest]:
        t.join(10)
    assert reg.sizes[0] == 1 and sum(reg.sizes) == 13 and max(reg.sizes[1:]) >= 2, reg.sizes
    for who in (0, 1):  # per tenant: exactly one NEW for the shared digest, every own digest NEW
        mine = [results[i] for i in results if i % 2 == who]
        assert sorted(r[0].outcome.value for r in mine) == ["DUPLICATE"] * (len(mine) - 1) + ["NEW"]
        assert all(r[1].is_new for r in mine)
        assert len({r[0].canonical_uri for r in mine}) == 1


def test_calls_whose_client_is_gone_are_not_run(registry, tenant):
    """A call whose deadline has passed ends DEADLINE_EXCEEDED (the server may notice before the
    client's own timer fires: CANCELLED there would make the client raise instead of failing open)."""
    from astra.ingest.registry_server import AssetRegistryServicer, Batcher, ClientGone

    class Context:
        def __init__(self, remaining, active):
            self.remaining, self.active, self.aborted = remaining, active, None

        def time_remaining(self):
            return self.remaining

        def is_active(self):
            return self.active

        def abort(self, code, details):
            self.aborted = (code, details)
            raise RuntimeError("aborted")

    d = new_digest()
    with pytest.raises(ClientGone) as gone:
        Batcher(registry).register(tenant, [d], Context(-0.01, False))
    assert gone.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    for remaining, active, code in ((-0.001, True, grpc.StatusCode.DEADLINE_EXCEEDED),
                                    (5.0, False, grpc.StatusCode.CANCELLED)):
        ctx = Context(remaining, active)
        with pytest.raises(RuntimeError, match="aborted"):
            AssetRegistryServicer(registry, batcher=Batcher(registry)).RegisterAssets(request(tenant, d), ctx)
        assert ctx.aborted[0] == code
    assert registry.register(tenant, [d])[0].is_new  # none of them ran
