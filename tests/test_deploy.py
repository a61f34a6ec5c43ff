"""deploy/ (issue 12 §4): every file is loaded and validated by a well-kept validator, then checked for what
the validators cannot see; each validator is also shown to reject a broken copy.

- Kubernetes manifests (deploy/k8s/): kubernetes-validate, the Kubernetes JSON Schemas it bundles (strict:
  an unknown field is an error), for the oldest and newest Kubernetes supported; then the `astra` arguments
  parsed by the real command, ports / names / labels agreeing, secrets only as Secret references. The probe
  script is run as the Deployment runs it, against a real `astra serve ingest` over TLS.
- Dagster's Helm chart values (deploy/helm/): the chart's keys (Dagster 1.13, read from the chart's schema
  models), its Kubernetes-typed values against the same Kubernetes schemas, the code location's arguments
  parsed by `dagster api grpc`, and the run queue equal to deploy/dagster.yaml's.
- deploy/dagster.yaml: Dagster's own instance config schema.
- CloudFormation (deploy/aws/): cfn-lint, then the Object Lock properties against astra/settings.py.
- The AWS CLI lines of docs/deploy.md: botocore's S3 model, then run through boto3 against moto.
Helm itself is not run: Dagster's chart is served only from Dagster's Helm repository (docs/deploy.md).
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import shlex
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import boto3
import botocore.session
import jsonschema
import kubernetes_validate
import pytest
import yaml
from botocore import xform_name
from botocore.validate import ParamValidator
from referencing import Registry, Resource

from astra.settings import DEFAULT_RETENTION_DAYS, ENV, MAX_RETENTION_DAYS, MIN_RETENTION_DAYS, Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCS = ROOT / "docs" / "deploy.md"
K8S_VERSIONS = ("1.30.0", "1.37.0")  # the oldest Kubernetes docs/deploy.md supports, and the newest bundled
NEWEST = K8S_VERSIONS[-1]
# Every file in deploy/ and what checks it; a file not listed here fails test_every_file_in_deploy_is_checked.
CHECKED = {
    "dagster.yaml": "Dagster's instance config schema",
    "helm/dagster-values.yaml": "the chart's keys + Kubernetes type schemas",
    "k8s/astra-env.yaml": "kubernetes-validate",
    "k8s/grpc-probe.yaml": "kubernetes-validate + run against astra serve ingest",
    "k8s/ingest.yaml": "kubernetes-validate",
    "k8s/core.yaml": "kubernetes-validate",
    "k8s/jobs/migrate.yaml": "kubernetes-validate",
    "aws/guard-bucket.yaml": "cfn-lint",
}
MANIFESTS = sorted((DEPLOY / "k8s").rglob("*.yaml"))
# name in manifests -> (Service, port, the ASTRA_* target naming it)
SERVERS = {"ingest": ("astra-ingest", 50051, ENV["ingest_target"]), "core": ("astra-core", 50052, ENV["core_target"])}
# Never a literal value in a manifest or in the values: only from a Secret.
SECRET_VARS = {ENV["database_url"], ENV["redis_url"], ENV["service_token"], "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "DAGSTER_PG_PASSWORD"}


def docs_of(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def objects() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"].get("name") or d["metadata"]["generateName"]): d
            for p in MANIFESTS for d in docs_of(p)}


def values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "dagster-values.yaml").read_text())


def user_deployment(vals: dict) -> dict:
    (deployment,) = vals["dagster-user-deployments"]["deployments"]
    return deployment


def container(server: str) -> dict:
    (c,) = objects()[("Deployment", SERVERS[server][0])]["spec"]["template"]["spec"]["containers"]
    return c


def test_every_file_in_deploy_is_checked():
    present = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()}
    assert present == set(CHECKED), "a file in deploy/ needs a check here (or a listed one is gone)"
    assert {p.relative_to(DEPLOY).as_posix() for p in MANIFESTS} == {k for k in CHECKED if k.startswith("k8s/")}


# ---- Kubernetes manifests ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_manifest_is_valid_kubernetes(path, version):
    docs = docs_of(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def _set(obj: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    obj[last] = value


POD = "spec.template.spec"


@pytest.mark.parametrize("dotted, value", [
    (f"{POD}.containers.0.ports.0.containerPort", "50051"),                   # a string, not a port number
    (f"{POD}.containers.0.readinessProbe.exec.commnd", ["python"]),           # a misspelt field (strict)
    (f"{POD}.containers.0.startupProbe.exec.command", "python probe.py"),     # a string, not an argv list
    (f"{POD}.containers.0.env.1.valueFrom.secretKeyRef", {"name": "astra-secrets"}),  # no key
    (f"{POD}.containers.0.livenessProbe.grpc", {"service": "x"}),             # grpc probe without its port
    ("spec.replicas", "two"),
])
def test_the_validator_rejects_a_broken_deployment(dotted, value):
    broken = copy.deepcopy(objects()[("Deployment", "astra-ingest")])
    _set(broken, dotted, value)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, NEWEST, strict=True)


def test_a_tls_grpc_probe_needs_kubernetes_1_37():
    """`grpc.mode: TLS` (KEP-4939) is the native probe's only way to speak TLS; no older schema has it,
    which is why the services' probes run deploy/k8s/grpc-probe.yaml instead."""
    dep = copy.deepcopy(objects()[("Deployment", "astra-ingest")])
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {"grpc": {"port": 50051, "mode": "TLS"}}
    kubernetes_validate.validate(dep, "1.37.0", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, "1.36.0", strict=True)


@pytest.mark.parametrize("server", SERVERS)
def test_servers_bind_all_interfaces_with_arguments_the_command_accepts(server):
    import typer

    from astra.cli import main, serve_cmd

    assert any(g.typer_instance is serve_cmd.app and g.name == "serve" for g in main.app.registered_groups)
    c = container(server)
    assert c["command"] == ["astra"] and c["args"][:2] == ["serve", server]
    command = typer.main.get_command(serve_cmd.app).commands[server]
    params = command.make_context(server, list(c["args"][2:])).params
    # ASTRA binds loopback by default; in a pod it must listen on the pod's address, which it allows only
    # with the token and TLS (astra.grpc_auth.check_exposure) - never with --insecure-no-auth.
    assert params["host"] == "0.0.0.0" and params["port"] == SERVERS[server][1]
    assert params["insecure_no_auth"] is False


@pytest.mark.parametrize("server", SERVERS)
def test_names_ports_and_labels_agree(server):
    name, port, target_var = SERVERS[server]
    objs = objects()
    dep, svc = objs[("Deployment", name)], objs[("Service", name)]
    pdb = objs[("PodDisruptionBudget", name)]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for selector in (dep["spec"]["selector"]["matchLabels"], svc["spec"]["selector"],
                     pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    (cport,) = container(server)["ports"]
    (sport,) = svc["spec"]["ports"]
    assert cport["containerPort"] == port and sport["port"] == port and sport["targetPort"] == cport["name"]
    # Clients find the service through the target in astra-env.
    assert objs[("ConfigMap", "astra-env")]["data"][target_var] == f"{name}:{port}"


def _mounts(server: str) -> dict[str, dict]:
    """mountPath -> the pod volume mounted there."""
    pod = objects()[("Deployment", SERVERS[server][0])]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in container(server)["volumeMounts"]}


@pytest.mark.parametrize("server", SERVERS)
def test_tls_and_the_probes_are_wired_to_their_volumes(server):
    name, port, _ = SERVERS[server]
    c, mounts = container(server), _mounts(server)
    env = {e["name"]: e for e in c["env"]}
    tls_dir = next(path for path, v in mounts.items() if v.get("secret", {}).get("secretName") == "astra-grpc-tls")
    probe_dir = next(path for path, v in mounts.items()
                     if v.get("configMap", {}).get("name") == "astra-grpc-probe")
    # kubernetes.io/tls Secret keys; the server gets cert + key, and no client CA (that would be mTLS).
    assert env[ENV["grpc_tls_cert"]]["value"] == f"{tls_dir}/tls.crt"
    assert env[ENV["grpc_tls_key"]]["value"] == f"{tls_dir}/tls.key"
    assert ENV["grpc_tls_ca"] not in env
    script = objects()[("ConfigMap", "astra-grpc-probe")]["data"]
    probe = ["python", f"{probe_dir}/health_probe.py", str(port), name, f"{tls_dir}/ca.crt"]
    assert "health_probe.py" in script
    assert c["startupProbe"]["exec"]["command"] == probe
    assert c["readinessProbe"]["exec"]["command"] == probe
    assert c["livenessProbe"]["tcpSocket"]["port"] == c["ports"][0]["name"]


def _all_env() -> list[tuple[str, dict]]:
    """(where, EnvVar) of every container in the manifests and of the code location in the values."""
    found = []
    for (kind, name), obj in objects().items():
        if kind in ("Deployment", "Job"):
            for c in obj["spec"]["template"]["spec"]["containers"]:
                found += [(f"{kind}/{name}", e) for e in c.get("env", [])]
    found += [("values", e) for e in user_deployment(values()).get("env", [])]
    return found


def test_secrets_come_only_from_secret_references():
    env = _all_env()
    assert {e["name"] for _, e in env} >= {ENV["service_token"], ENV["database_url"], ENV["redis_url"]}
    for where, e in env:
        if e["name"] in SECRET_VARS:
            assert "value" not in e and "secretKeyRef" in e["valueFrom"], (where, e["name"])
    config = objects()[("ConfigMap", "astra-env")]["data"]
    assert not SECRET_VARS & set(config)
    vals = values()
    assert "postgresqlPassword" not in vals["postgresql"] and vals["generatePostgresqlPasswordSecret"] is False
    assert {"name": "astra-secrets"} in user_deployment(vals)["envSecrets"]


def test_every_astra_variable_is_one_astra_reads():
    config = objects()[("ConfigMap", "astra-env")]["data"]
    names = {n for n in config if n.startswith("ASTRA_")} | {e["name"] for _, e in _all_env()}
    assert {n for n in names if n.startswith("ASTRA_")} <= set(ENV.values())
    # The shared settings are valid ASTRA settings (retention within bounds, ...); servers and clients
    # read the same ConfigMap, so it must not carry a client CA (it would make the servers demand mTLS).
    Settings.from_env(config)
    assert ENV["grpc_tls_ca"] not in config
    assert all(isinstance(v, str) for v in config.values())


def test_one_image_everywhere():
    images = {c["image"] for (kind, _), obj in objects().items() if kind in ("Deployment", "Job")
              for c in obj["spec"]["template"]["spec"]["containers"]}
    image = user_deployment(values())["image"]
    assert images == {f"{image['repository']}:{image['tag']}"}


# The probe, run as the Deployment runs it, against a real `astra serve ingest` over TLS.


def _write_pki(d: Path, server_name: str) -> None:
    """ca.crt, and tls.crt / tls.key for `server_name` only (no IP address), as cert-manager would write."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def cert(subject, key, issuer, issuer_key, ca, sans=()):
        now = datetime.datetime.now(datetime.UTC)
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
        return b.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    (d / "ca.crt").write_bytes(cert("deploy test CA", ca_key, "deploy test CA", ca_key, True))
    (d / "tls.crt").write_bytes(cert(server_name, key, "deploy test CA", ca_key, False, (server_name,)))
    (d / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))


def _serving_target(proc: subprocess.Popen, timeout: float = 30) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box or "serving on" not in box[0]:
        proc.kill()
        raise AssertionError(f"no 'serving on' line: {box!r}; stderr: {proc.stderr.read()}")
    return box[0].split("serving on ")[1].split()[0]


@pytest.mark.integration
def test_the_probe_passes_against_serve_ingest_over_tls_and_fails_once_it_is_gone(pg_url, tmp_path):
    """The manifest's own args (but loopback and a free port), env and probe command; only the mount paths
    are this test's folders."""
    name = SERVERS["ingest"][0]
    c, mounts = container("ingest"), _mounts("ingest")
    remap = {}
    for path, volume in mounts.items():
        local = remap[path] = tmp_path / volume["name"]
        local.mkdir()
        if volume.get("configMap"):
            data = objects()[("ConfigMap", volume["configMap"]["name"])]["data"]
            for key, text in data.items():
                (local / key).write_text(text)
        elif volume.get("secret", {}).get("secretName") == "astra-grpc-tls":
            _write_pki(local, name)

    def local(path: str) -> str:
        for mount, folder in remap.items():
            if path.startswith(mount + "/"):
                return str(folder / path[len(mount) + 1:])
        return path

    args = list(c["args"])
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", "0"
    env = {**os.environ, ENV["database_url"]: pg_url, ENV["service_token"]: uuid.uuid4().hex * 2,
           **{e["name"]: local(e["value"]) for e in c["env"] if "value" in e}}
    env.pop(ENV["grpc_tls_ca"], None)
    server = subprocess.Popen([str(Path(sys.executable).with_name("astra")), *args], env=env, cwd=ROOT, text=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        target = _serving_target(server)
        port = target.rsplit(":", 1)[1]
        command = [local(a) for a in c["readinessProbe"]["exec"]["command"]]
        command[0], command[2] = sys.executable, port

        def probe(argv):
            return subprocess.run(argv, capture_output=True, text=True, timeout=30)

        ok = probe(command)
        assert ok.returncode == 0, ok.stderr
        # Under another name the certificate does not verify: the probe checks TLS, not just the port.
        assert probe([*command[:3], "astra-core", *command[4:]]).returncode != 0
        server.terminate()
        assert server.wait(timeout=30) == 0
        gone = probe(command)
        assert gone.returncode != 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


# ---- Dagster's Helm chart values ----------------------------------------------------------------------

# The keys ASTRA sets, as Dagster's chart 1.13 declares them (helm/dagster/schema/schema/charts/: the pydantic
# models its values.schema.json is generated from; extra="forbid" where the chart forbids extra keys).
_K8S = {"type": "object"}  # Kubernetes-typed values are checked against the Kubernetes schemas below
CHART_SUBSET = {
    "type": "object",
    "required": ["global", "dagster-user-deployments", "runLauncher", "postgresql",
                 "generatePostgresqlPasswordSecret", "dagsterDaemon", "telemetry"],
    "additionalProperties": False,
    "properties": {
        "global": {"type": "object", "required": ["postgresqlSecretName"],
                   "properties": {"postgresqlSecretName": {"type": "string", "minLength": 1}}},
        "dagster-user-deployments": {
            "type": "object", "required": ["enabled", "enableSubchart", "deployments"],
            "properties": {
                "enabled": {"const": True}, "enableSubchart": {"const": True},
                "deployments": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["name", "image", "port", "dagsterApiGrpcArgs"],
                    "properties": {
                        "name": {"type": "string"},
                        "image": {"type": "object", "additionalProperties": False,
                                  "required": ["repository", "tag", "pullPolicy"],
                                  "properties": {"repository": {"type": "string"}, "tag": {"type": "string"},
                                                 "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}},
                        "dagsterApiGrpcArgs": {"type": "array", "items": {"type": "string"}},
                        "port": {"type": "integer"},
                        "includeConfigInLaunchedRuns": {
                            "type": "object", "required": ["enabled"], "additionalProperties": False,
                            "properties": {"enabled": {"type": "boolean"}}},
                        "envConfigMaps": {"type": "array", "items": _K8S},
                        "envSecrets": {"type": "array", "items": _K8S},
                        "env": {"type": "array", "items": _K8S},
                        "volumes": {"type": "array", "items": _K8S},
                        "volumeMounts": {"type": "array", "items": _K8S},
                        "resources": _K8S,
                    }}}}},
        "runLauncher": {
            "type": "object", "required": ["type", "config"], "additionalProperties": False,
            "properties": {
                "type": {"enum": ["CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"]},
                "config": {"type": "object", "additionalProperties": False, "properties": {
                    "k8sRunLauncher": {"type": "object", "additionalProperties": False, "properties": {
                        "runK8sConfig": {"type": "object", "additionalProperties": False, "properties": {
                            k: {"type": "object"} for k in ("containerConfig", "podSpecConfig",
                                                            "podTemplateSpecMetadata", "jobSpecConfig",
                                                            "jobMetadata")}}}}}}}},
        "postgresql": {
            "type": "object", "additionalProperties": False,
            "required": ["enabled", "postgresqlHost", "postgresqlUsername", "postgresqlDatabase", "postgresqlScheme"],
            "properties": {"enabled": {"type": "boolean"}, "postgresqlHost": {"type": "string", "minLength": 1},
                           "postgresqlUsername": {"type": "string"}, "postgresqlDatabase": {"type": "string"},
                           "postgresqlParams": {"type": "object"},
                           # SQLAlchemy 2.1 reads postgresql:// as psycopg 3, where dagster-postgres' NOTIFY fails.
                           "postgresqlScheme": {"const": "postgresql+psycopg2"},
                           "service": {"type": "object", "additionalProperties": False, "required": ["port"],
                                       "properties": {"port": {"type": "integer"}}}}},
        "generatePostgresqlPasswordSecret": {"type": "boolean"},
        "dagsterDaemon": {
            "type": "object", "additionalProperties": False, "required": ["enabled", "runCoordinator"],
            "properties": {
                "enabled": {"type": "boolean"},
                "runCoordinator": {
                    "type": "object", "additionalProperties": False, "required": ["enabled", "type", "config"],
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "type": {"enum": ["QueuedRunCoordinator", "CustomRunCoordinator"]},
                        "config": {"type": "object", "additionalProperties": False, "properties": {
                            "queuedRunCoordinator": {
                                "type": "object", "additionalProperties": False, "properties": {
                                    "maxConcurrentRuns": {"type": "integer"},
                                    "tagConcurrencyLimits": {"type": "array", "items": {
                                        "type": "object", "additionalProperties": False,
                                        "required": ["key", "limit"], "properties": {
                                            "key": {"type": "string"}, "limit": {"type": "integer"},
                                            "value": {"anyOf": [{"type": "string"}, {
                                                "type": "object", "additionalProperties": False,
                                                "required": ["applyLimitPerUniqueValue"],
                                                "properties": {"applyLimitPerUniqueValue": {"type": "boolean"}}}]}}}},
                                    "dequeueIntervalSeconds": {"type": "integer"},
                                    "dequeueNumWorkers": {"type": "integer"},
                                    "dequeueUseThreads": {"type": "boolean"}}}}}}},
                "sensors": {"type": "object", "required": ["useThreads"], "additionalProperties": False,
                            "properties": {"useThreads": {"type": "boolean"}, "numWorkers": {"type": "integer"},
                                           "numSubmitWorkers": {"type": "integer"}}}}},
        "telemetry": {"type": "object", "required": ["enabled"], "additionalProperties": False,
                      "properties": {"enabled": {"type": "boolean"}}},
    },
}


def _k8s_type_validator(type_file: str) -> jsonschema.Draft202012Validator:
    """A validator of one Kubernetes type (e.g. secretenvsource-v1) from kubernetes-validate's strict schemas."""
    from kubernetes_validate.utils import schema_contents

    folder = f"kubernetes-json-schema/v{NEWEST}-local-strict"
    schema = schema_contents(f"{folder}/{type_file}.json", NEWEST)
    defs = schema_contents(f"{folder}/_definitions.json", NEWEST)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _k8s_typed(vals: dict) -> list[tuple[str, object]]:
    """(Kubernetes type, value) of every Kubernetes-typed value ASTRA sets in the chart's values."""
    d = user_deployment(vals)
    typed = [("configmapenvsource-v1", x) for x in d["envConfigMaps"]]
    typed += [("secretenvsource-v1", x) for x in d["envSecrets"]]
    typed += [("envvar-v1", x) for x in d["env"]]
    typed += [("volume-v1", x) for x in d["volumes"]] + [("volumemount-v1", x) for x in d["volumeMounts"]]
    run = vals["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]
    return typed + [("resourcerequirements-v1", run["resources"])]


def _check_values(vals: dict) -> None:
    jsonschema.validate(vals, CHART_SUBSET)
    for type_file, value in _k8s_typed(vals):
        _k8s_type_validator(type_file).validate(value)


def test_values_use_the_charts_keys_and_valid_kubernetes_types():
    _check_values(values())


@pytest.mark.parametrize("breakage", [
    lambda v: user_deployment(v).update(envSecrets=["astra-secrets"]),               # a name, not {name: ...}
    lambda v: user_deployment(v).update(dagsterApiGrpcArg=["-m", "x"]),              # not a key of the chart
    lambda v: v["runLauncher"].update(type="K8sRunLaunchr"),
    lambda v: v["postgresql"].update(postgresqlHost=""),
    lambda v: user_deployment(v)["volumes"][0]["secret"].update(secretNam="x"),      # a Kubernetes typo
    lambda v: v["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"].update(maxConcurrentRun=1),
    lambda v: v.update(dagsterDeamon={"enabled": True}),
])
def test_the_values_check_rejects_a_broken_copy(breakage):
    vals = values()
    breakage(vals)
    with pytest.raises(jsonschema.ValidationError):
        _check_values(vals)


def test_the_code_location_is_workspace_yamls_and_dagster_accepts_its_arguments():
    from dagster._cli.api import api_cli

    d = user_deployment(values())
    (location,) = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    grpc_args = api_cli.commands["grpc"].make_context("grpc", [*d["dagsterApiGrpcArgs"], "--port", str(d["port"])])
    assert grpc_args.params["module_name"] == location["python_module"]["module_name"]
    assert d["name"] == location["python_module"]["location_name"]
    assert d["includeConfigInLaunchedRuns"]["enabled"] is True
    # The chart passes the code location's `resources` to its runs, over the run launcher's (runK8sConfig).
    assert "resources" not in d
    vals = values()
    assert vals["runLauncher"]["type"] == "K8sRunLauncher"
    assert vals["postgresql"]["enabled"] is False and vals["dagsterDaemon"]["enabled"] is True


def _instance_config(text: str, tmp_path: Path) -> dict:
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text(text)
    return dagster_instance_config(str(tmp_path))[0]


def test_deploy_dagster_yaml_is_a_valid_instance_and_the_values_queue_runs_as_it_does(tmp_path):
    instance = _instance_config((DEPLOY / "dagster.yaml").read_text(), tmp_path)
    assert "postgres" in instance["storage"]
    daemon = values()["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert queued["maxConcurrentRuns"] == instance["run_queue"]["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == instance["run_queue"]["tag_concurrency_limits"]
    assert daemon["sensors"] == {"useThreads": instance["sensors"]["use_threads"],
                                 "numWorkers": instance["sensors"]["num_workers"]}
    assert values()["telemetry"]["enabled"] == instance["telemetry"]["enabled"]


def test_dagsters_instance_schema_rejects_a_broken_dagster_yaml(tmp_path):
    from dagster._core.errors import DagsterInvalidConfigError

    broken = (DEPLOY / "dagster.yaml").read_text().replace("max_concurrent_runs: 10", "max_concurrent_runs: ten")
    assert "ten" in broken
    with pytest.raises(DagsterInvalidConfigError):
        _instance_config(broken, tmp_path)


# ---- The guard bucket: CloudFormation ------------------------------------------------------------------

GUARD_CFN = DEPLOY / "aws" / "guard-bucket.yaml"


def _cfn_lint(text: str) -> list:
    from cfnlint.api import ManualArgs, lint

    return lint(text, config=ManualArgs(regions=["us-east-1"]))


def test_cfn_lint_passes_the_guard_bucket():
    assert _cfn_lint(GUARD_CFN.read_text()) == []


@pytest.mark.parametrize("old, new", [
    ("Mode: COMPLIANCE", "Mode: COMPLIANT"),
    ("ObjectLockEnabled: true", "ObjectLockEnabled: sure"),
    ("Status: Enabled", "Status: On"),
    ("Days: !Ref RetentionDays", "Dayz: !Ref RetentionDays"),
])
def test_cfn_lint_rejects_a_broken_guard_bucket(old, new):
    text = GUARD_CFN.read_text()
    assert old in text
    assert _cfn_lint(text.replace(old, new))


def _guard_template() -> dict:
    from cfnlint.decode import decode_str

    template, matches = decode_str(GUARD_CFN.read_text())
    assert not matches
    return template


def test_the_guard_bucket_is_locked_in_compliance_mode_within_astras_bounds():
    template = _guard_template()
    (bucket,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::S3::Bucket"]
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain" and bucket["UpdateReplacePolicy"] == "Retain"
    assert props["ObjectLockEnabled"] is True
    lock = props["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    assert lock["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
    assert lock["Rule"]["DefaultRetention"]["Days"] == {"Ref": "RetentionDays"}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(props["PublicAccessBlockConfiguration"].values())
    days = template["Parameters"]["RetentionDays"]
    assert (days["MinValue"], days["MaxValue"], days["Default"]) == (
        MIN_RETENTION_DAYS, MAX_RETENTION_DAYS, DEFAULT_RETENTION_DAYS)


# ---- The guard bucket: the AWS CLI lines of docs/deploy.md ------------------------------------------------


def _cli_calls(text: str) -> list[tuple[str, dict]]:
    """(S3 operation, API parameters) of each `aws s3api` line in the sh blocks of `text`, through botocore's
    model: `--kebab-name` is the member whose xform_name it is, a flag alone is True, JSON is parsed."""
    model = botocore.session.get_session().get_service_model("s3")
    operations = {xform_name(op).replace("_", "-"): op for op in model.operation_names}
    calls = []
    blocks = text.split("```sh\n")[1:]
    for line in (ln for b in blocks for ln in b.split("```")[0].splitlines()):
        if not line.startswith("aws s3api "):
            continue
        words = shlex.split(line)
        op = operations[words[2]]
        members = {xform_name(m).replace("_", "-"): m for m in model.operation_model(op).input_shape.members}
        params, i = {}, 3
        while i < len(words):
            member = members[words[i].removeprefix("--")]
            if i + 1 < len(words) and not words[i + 1].startswith("--"):
                raw = words[i + 1]
                params[member] = json.loads(raw) if raw.startswith("{") else raw
                i += 2
            else:
                params[member], i = True, i + 1
        calls.append((op, params))
    return calls


def _validate_calls(calls) -> None:
    model = botocore.session.get_session().get_service_model("s3")
    for op, params in calls:
        report = ParamValidator().validate(params, model.operation_model(op).input_shape)
        assert not report.has_errors(), f"{op}: {report.generate_report()}"


def test_the_cli_lines_are_valid_s3_calls_that_lock_in_compliance_mode():
    calls = _cli_calls(DOCS.read_text())
    _validate_calls(calls)
    ops = dict(calls)
    assert ops["CreateBucket"]["ObjectLockEnabledForBucket"] is True
    lock = ops["PutObjectLockConfiguration"]["ObjectLockConfiguration"]
    assert lock == {"ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": DEFAULT_RETENTION_DAYS}}}
    # The same lock as the CloudFormation template's at its default retention.
    cfn = next(r for r in _guard_template()["Resources"].values() if r["Type"] == "AWS::S3::Bucket")
    cfn_lock = copy.deepcopy(cfn["Properties"]["ObjectLockConfiguration"])
    cfn_lock["Rule"]["DefaultRetention"]["Days"] = DEFAULT_RETENTION_DAYS
    assert lock == cfn_lock


def test_botocore_rejects_a_broken_cli_line():
    text = DOCS.read_text()
    assert '"Days": 365' in text
    with pytest.raises(AssertionError, match="Days"):
        _validate_calls(_cli_calls(text.replace('"Days": 365', '"Days": "a year"')))
    with pytest.raises(KeyError):  # an option S3's CreateBucket does not have
        _cli_calls(text.replace("--object-lock-enabled-for-bucket", "--object-lock-enabled"))


@pytest.mark.integration
def test_the_cli_lines_make_a_compliance_locked_bucket_on_s3(moto_endpoint, aws_credentials):
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = f"astra-guard-deploy-{uuid.uuid4().hex[:10]}"
    for op, params in _cli_calls(DOCS.read_text()):
        getattr(client, xform_name(op))(**{**params, "Bucket": bucket})
    lock = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    retention = lock["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"]) == ("COMPLIANCE", DEFAULT_RETENTION_DAYS)
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert all(client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    # A version written without a lock of its own gets the default: COMPLIANCE, not deletable.
    version = client.put_object(Bucket=bucket, Key="probe", Body=b"x", ChecksumAlgorithm="SHA256")["VersionId"]
    head = client.head_object(Bucket=bucket, Key="probe", VersionId=version)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(client.exceptions.ClientError):
        client.delete_object(Bucket=bucket, Key="probe", VersionId=version)
