"""`make demo`: the main path on the embedded stack (or on the stack that is already up).

Each step prints what it did and what a user would look at. The demo fails (exit 1) if a step
does not produce what it should.
"""

from __future__ import annotations

import sys
import time
import uuid

from rich.console import Console
from rich.table import Table

from astra.runtime import config_service
from astra.settings import Settings
from astra.stack.stack import running_stack

console = Console(soft_wrap=True)


class DemoFailed(RuntimeError):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailed(what)
    console.print(f"  [green]✓[/] {what}")


def step_config(tenant: str) -> None:
    """CONFIG_SVC: publish a tenant's config twice, read both versions back through the cache."""
    from astra.ingest.sample_template import build_sample_template, sample_sidecar
    from astra.ingest.zones import extract_maps
    import hashlib

    console.rule("[bold]1. CONFIG_SVC — versioned tenant config, Postgres + Redis cache")
    settings = Settings.from_env()
    svc = config_service(settings)
    template = build_sample_template()
    maps = extract_maps(template, sample_sidecar())
    sha = hashlib.sha256(template).hexdigest()
    v1 = svc.publish(tenant, maps.zone_map, maps.style_map, sha, "demo")
    edited = dict(maps.zone_map, zones=[dict(z) for z in maps.zone_map["zones"]])
    edited["zones"][0]["label"] = edited["zones"][0]["label"] + " (revised)"
    v2 = svc.publish(tenant, edited, maps.style_map, sha, "demo")
    table = Table("version", "zones", "first zone label", "template sha256", "served from")
    for version in (v1, v2):
        t0 = time.perf_counter()
        snap = svc.snapshot(tenant) if version == v2 else svc.snapshot(tenant, version=version)
        ms = (time.perf_counter() - t0) * 1000
        cached_version = svc.redis.hget(svc.cache_key(tenant), "version")
        source = "Redis cache" if cached_version and int(cached_version) == snap.version else "Postgres"
        table.add_row(str(snap.version), str(len(snap.zone_map["zones"])), snap.zone_map["zones"][0]["label"],
                      snap.template_sha256[:12] + "…", f"{source} ({ms:.2f} ms)")
    console.print(table)
    expect((v1, v2) == (1, 2), "versions 1 and 2 published")
    expect(svc.snapshot(tenant).version == 2, f"current version read back through the cache key {svc.cache_key(tenant)}")


def main() -> int:
    tenant = f"demo-{uuid.uuid4().hex[:6]}"
    try:
        with running_stack(say=lambda m: console.print(f"[dim]stack:[/] {m}")):
            console.print(f"[bold]ASTRA demo[/] — tenant [cyan]{tenant}[/]")
            step_config(tenant)
    except DemoFailed as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        return 1
    console.print("[bold green]demo complete[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
