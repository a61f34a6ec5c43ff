"""`astra guard verify` as a user runs it: a subprocess over the real services.

Runs the real console script once `guard` is wired into astra/cli/main.py; until then it runs
astra.cli.guard_cmd's typer app the same way (`python -c`), so the tests hold either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from astra.guard.checkpoints import checkpoint_key
from tests.conftest import ROOT, run_cli
from tests.guard.conftest import custody_n, superuser_sql

pytestmark = pytest.mark.integration


def guard_wired() -> bool:
    from astra.cli import main

    return any(g.name == "guard" for g in main.app.registered_groups)


def astra_guard(*args: str, env: dict[str, str]):
    if guard_wired():
        return run_cli("guard", *args, env=env)
    code = "from astra.cli.guard_cmd import app; app(prog_name='astra guard')"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120, cwd=ROOT)


def test_verify_intact_json_exit_0(engine, s3, settings, tenant, use_stack_env):
    custody_n(engine, s3, settings, tenant, 2)
    res = astra_guard("verify", "--tenant", tenant, "--json", env=use_stack_env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"tenants": 1, "entries": 2, "ok": True, "problems": []}


def test_verify_tampered_json_exit_1(engine, s3, settings, tenant, use_stack_env):
    custody_n(engine, s3, settings, tenant, 3)
    superuser_sql(engine, ("DELETE FROM custody_ledger WHERE tenant_id = :t AND seq = 2", {"t": tenant}))
    res = astra_guard("verify", "--tenant", tenant, "--json", "--orphan-grace", "0", env=use_stack_env)
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] is False and report["entries"] == 2
    assert {"tenant": tenant, "seq": 2, "kind": "deleted"}.items() <= report["problems"][0].items()
    assert {p["kind"] for p in report["problems"]} == {"deleted", "orphan_object"}


def test_verify_human_output(engine, s3, settings, tenant, use_stack_env):
    custody_n(engine, s3, settings, tenant, 1)
    ok = astra_guard("verify", "--tenant", tenant, env=use_stack_env)
    assert ok.returncode == 0 and "custody intact" in ok.stdout and f"checkpoint {tenant}: size 1" in ok.stdout
    assert f"locked copy s3://{use_stack_env['ASTRA_GUARD_BUCKET']}/{checkpoint_key(tenant, 1)}" in ok.stdout
    superuser_sql(engine, ("UPDATE custody_ledger SET entry = entry || ' ' WHERE tenant_id = :t", {"t": tenant}))
    bad = astra_guard("verify", "--tenant", tenant, env=use_stack_env)
    assert bad.returncode == 1 and "edited" in bad.stdout and "problem" in bad.stdout


def test_verify_errors_are_one_line_exit_1(use_stack_env):
    res = astra_guard("verify", "--tenant", "Not_A_Slug", env=use_stack_env)
    assert res.returncode == 1 and "invalid tenant" in res.stderr and "Traceback" not in res.stderr
    res = astra_guard("verify", env={**use_stack_env, "ASTRA_DATABASE_URL": ""})
    assert res.returncode == 1 and "ASTRA_DATABASE_URL" in res.stderr


def test_verify_unknown_tenant_exit_2_one_line(engine, tenant, use_stack_env):
    res = astra_guard("verify", "--tenant", tenant, env=use_stack_env)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"unknown tenant '{tenant}'" in lines[0] and res.stdout == ""
    with engine.begin() as conn:  # a tenant that exists but holds nothing yet is an intact, empty audit
        conn.execute(text("INSERT INTO tenants (tenant_id) VALUES (:t)"), {"t": tenant})
    assert astra_guard("verify", "--tenant", tenant, env=use_stack_env).returncode == 0


def test_verify_tail_and_checkpoint_rows_rewritten_exit_1(engine, s3, settings, tenant, use_stack_env):
    """The superuser's rewrite the database cannot see: the WORM checkpoint object makes it exit 1."""
    custody_n(engine, s3, settings, tenant, 2)
    assert astra_guard("verify", "--tenant", tenant, "--json", env=use_stack_env).returncode == 0
    forged = "replace(entry, '\"source_uri\":\"s3://', '\"source_uri\":\"s3://forged-')"
    superuser_sql(engine, (f"UPDATE custody_ledger SET entry = {forged}, entry_hash = encode(sha256("
                           f"decode(prev_hash, 'hex') || convert_to({forged}, 'UTF8')), 'hex') "
                           "WHERE tenant_id = :t AND seq = 2", {"t": tenant}))
    superuser_sql(engine, ("DELETE FROM custody_checkpoints WHERE tenant_id = :t", {"t": tenant}),
                  table="custody_checkpoints")
    res = astra_guard("verify", "--tenant", tenant, "--json", "--orphan-grace", "0", env=use_stack_env)
    assert res.returncode == 1, res.stderr
    found = {p["kind"] for p in json.loads(res.stdout)["problems"]}
    assert found == {"worm_checkpoint_mismatch", "checkpoint_row_missing"}
