"""`make demo`: the main path on the embedded stack (or on the stack that is already up).

Each step drives the real pieces — the upload goes to S3, the sensor tick and its runs go
through a DagsterInstance under .astra/dagster_home (the one `make dev` shows) — and checks what
a user would look at. The demo exits 1 if a step does not produce what it should.
"""

import json
import os
import sys
import uuid

from rich.console import Console
from rich.table import Table

from astra import s3 as s3_lib
from astra.runtime import config_service
from astra.settings import Settings
from astra.stack.stack import Stack, running_stack

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
    from astra.ingest.sample_template import build_sample_template

    client = s3_lib.client(settings)
    base = f"{tenant}/templates/field_inspection"
    client.put_object(Bucket=settings.uploads_bucket, Key=base + ".zones.json", Body=json.dumps(sidecar).encode())
    client.put_object(Bucket=settings.uploads_bucket, Key=base + ".docx", Body=build_sample_template(),
                      ChecksumAlgorithm="SHA256")  # the template last: the sensor acts on it
    return base + ".docx"


def run_sensor(dagster, name: str, tenant: str):
    from astra_assets.definitions import defs
    from astra_assets.local_runner import tick

    outcome = tick(defs, dagster, name, log_level="WARNING")
    runs = [r for r in outcome.results if r.dagster_run.tags.get("astra/tenant") == tenant]
    for run in runs:
        status = "[green]success[/]" if run.success else "[red]failed[/]"
        keys = sorted({m.asset_key.to_user_string() for m in run.get_asset_materialization_events()
                       for m in [m.event_specific_data.materialization]})
        console.print(f"  run {run.run_id[:8]} ({name}, partition {tenant}): {status}; materialized {', '.join(keys) or '-'}")
    return runs


def step_template(dagster, settings: Settings, tenant: str) -> None:
    """INGEST → CONFIG_SVC: a template upload becomes config version 1, a revised sidecar version 2."""
    from astra.ingest.sample_template import sample_sidecar

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
        accepts = ", ".join([*acc.get("intents", []), *acc.get("domains", []), acc.get("data", ""), acc.get("media", ""),
                             "fallback" if acc.get("fallback") else ""]).strip(", ")
        table.add_row(z["id"], z["kind"], z["label"], accepts.replace(", ,", ","), f"{z['location']['part']} #{z['location']['block']}")
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
    expect(svc.snapshot(tenant).version == 2, f"the current version (2) is served through the cache {svc.cache_key(tenant)}")


def main() -> int:
    tenant = f"demo-{uuid.uuid4().hex[:6]}"
    try:
        with running_stack(say=lambda m: console.print(f"[dim]stack:[/] {m}")):
            settings = Settings.from_env()
            console.print(f"[bold]ASTRA demo[/] — tenant [cyan]{tenant}[/]")
            dagster = instance()
            step_template(dagster, settings, tenant)
    except DemoFailed as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        return 1
    console.print("[bold green]demo complete[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
