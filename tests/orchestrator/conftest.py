"""Handover fixtures: the test services, a real registry gRPC server on loopback, a config."""

from __future__ import annotations

import pytest
import redis

from astra.config_svc import ConfigService
from astra.db import make_engine
from astra.orchestrator.handover import Handover
from astra.orchestrator.registry_client import RegistryClient
from astra.stack.processes import free_port
from tests.config_svc.maps import SHA, maps


@pytest.fixture
def config_service(pg_url, redis_url, redis_prefix) -> ConfigService:
    return ConfigService(make_engine(pg_url), redis.Redis.from_url(redis_url), redis_prefix)


@pytest.fixture
def configured_tenant(tenant, config_service) -> str:
    config_service.publish(tenant, *maps(), SHA, "test", template_name="field_inspection")
    return tenant


def make_handover(settings, s3, pg_url, config_service, target: str | None) -> Handover:
    return Handover(s3=s3, settings=settings, engine=make_engine(pg_url), config=config_service,
                    registry=RegistryClient(target) if target else None)


@pytest.fixture
def handover(settings, s3, pg_url, config_service, registry_server) -> Handover:
    return make_handover(settings, s3, pg_url, config_service, registry_server.target)


@pytest.fixture
def dead_registry_handover(settings, s3, pg_url, config_service) -> Handover:
    return make_handover(settings, s3, pg_url, config_service, f"127.0.0.1:{free_port()}")
