"""`astra core train|eval`: the intent engine's training and its benchmark interface."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from astra.cli.common import console, emit_json, errors, fail, out
from astra.core.intent import store
from astra.core.intent.data import DEFAULT_DATASET, EVAL_SPLITS, TRAIN_SPLITS, DataError, read_dataset, split_pair
from astra.core.intent.store import ModelIntegrityError
from astra.tenancy import InvalidKey, validate_model_owner

app = typer.Typer(help="CORE: intents from what was said.", no_args_is_help=True)
_BAD_INPUT = (DataError, ModelIntegrityError, FileNotFoundError)


@app.callback()
def core() -> None:
    """CORE: intents from what was said."""


def _bar(disabled: bool = False) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=disabled)


@app.command()
def train(
    tenant: str = typer.Option(store.BASE_TENANT, "--tenant", "-t", help="whose model (default: the base model)"),
    data: Path = typer.Option(DEFAULT_DATASET, "--data", help="CLINC150-layout JSON file, or a directory holding one"),
    out_dir: Path = typer.Option(None, "--out", help="models directory of the tenant (default .astra/models/<tenant>)"),
    base: Path = typer.Option(None, "--base", help="base encoder directory (default .astra/models/base-encoder)"),
    layers: int = typer.Option(4, "--layers", help="encoder layers kept when the base encoder is built"),
    epochs: float = typer.Option(2.0, "--epochs", help="fine-tuning epochs when the base encoder is built"),
    publish: bool = typer.Option(False, "--publish", help="then upload it to the assets bucket, register it in "
                                 "model_registry and announce MODEL_UPDATED (the base model only; needs the stack: "
                                 "`astra stack up`)"),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Train a tenant's intent model: the head on the base encoder (built once by fine-tuning if absent),
    the out-of-scope threshold chosen on the file's val split. Exit 2 for bad data."""
    with errors():
        try:
            validate_model_owner(tenant)  # it names a directory: never a path
            if publish and tenant != store.BASE_TENANT:
                # A tenant's model reaches the service only through LEARN's holdout gate (intent_model).
                raise InvalidKey(f"--publish publishes the base model only: {tenant!r}'s model is published by "
                                 "LEARN (intent_model), behind its holdout gate")
            rows = read_dataset(data)
            examples = split_pair(rows, TRAIN_SPLITS)
            held_out = split_pair(rows, EVAL_SPLITS) if any(s in rows for s, _ in EVAL_SPLITS) else []
        except (DataError, InvalidKey) as exc:
            raise fail(str(exc), 2) from None
        stack = _Stack.connect() if publish else None  # before minutes of training: an unreachable stack fails now
        from astra.core.intent import training  # only now: bad data is refused without loading torch

        with _bar(json_out) as bar:
            tasks: dict[str, int] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done, total=total)

            result = training.train_tenant(
                examples, held_out, tenant=tenant, out_dir=out_dir or store.tenant_dir(tenant),
                base=base or store.default_base_encoder(), layers=layers, epochs=epochs, progress=progress,
            )
        if stack is not None:
            result["published"] = stack.publish(tenant, Path(result["path"]))
    if json_out:
        emit_json(result)
    else:
        out.print(f"model {result['version']} for {tenant}: {result['path']}", markup=False)
        built = f" (base encoder built in {result['fine_tune_seconds']:.0f} s)" if result["fine_tune_seconds"] else ""
        out.print(f"  trained in {result['train_seconds']:.1f} s on {result['examples']} examples{built}")
        for key, value in result["metrics"].items():
            out.print(f"  {key}: {value}")
        if "published" in result:
            published = result["published"]
            announced = "announced" if published["announced"] else "queued in the outbox (Redis did not take it)"
            out.print(f"  published: {tenant} registry version {published['registry_version']}, "
                      f"{published['uri']}, MODEL_UPDATED {announced}")


class _Stack:
    """The services a publication needs (Postgres, Redis, the assets bucket), each checked reachable."""

    def __init__(self, settings, engine, redis_client, s3):
        self.settings, self.engine, self.redis, self.s3 = settings, engine, redis_client, s3

    @classmethod
    def connect(cls) -> _Stack:
        import redis
        import sqlalchemy
        from botocore.exceptions import BotoCoreError, ClientError

        from astra import s3 as s3_lib
        from astra.db.engine import make_engine
        from astra.settings import Settings

        settings = Settings.from_env()
        engine = make_engine(settings.require("database_url"))
        redis_client = redis.Redis.from_url(settings.require("redis_url"), socket_connect_timeout=2)
        s3 = s3_lib.client(settings)
        for name, check in (("Postgres", lambda: engine.connect().close()), ("Redis", redis_client.ping),
                            ("S3", lambda: s3.head_bucket(Bucket=settings.assets_bucket))):
            try:
                check()
            except (sqlalchemy.exc.SQLAlchemyError, redis.RedisError, BotoCoreError, ClientError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise RuntimeError(f"cannot publish: {name} is not reachable ({first}); run `astra stack up` "
                                   "and source .astra/stack.env") from None
        return cls(settings, engine, redis_client, s3)

    def publish(self, tenant: str, directory: Path) -> dict:
        import tempfile

        from sqlalchemy import func, select

        from astra.core.model_store import TOPIC, ModelStore, drain_outbox
        from astra.db.schema import outbox

        with tempfile.TemporaryDirectory() as unused_cache:  # publishing never fetches
            record = ModelStore(self.engine, self.s3, self.settings.assets_bucket, unused_cache).publish(
                tenant, directory)
        drain_outbox(self.engine, self.redis, self.settings.redis_prefix)
        with self.engine.connect() as conn:
            pending = conn.execute(select(func.count()).select_from(outbox).where(
                outbox.c.tenant_id == tenant, outbox.c.topic == TOPIC, outbox.c.published_at.is_(None))).scalar()
        announced = pending == 0
        return {"registry_version": record.registry_version, "model_version": record.model_version,
                "uri": record.uri, "sha256": record.sha256, "announced": announced}


@app.command("eval")
def evaluate(
    path: Path = typer.Argument(..., help="CLINC150-layout JSON: val/oos_val or test/oos_test rows [text, intent]"),
    model_dir: Path = typer.Option(None, "--model", help="model or tenant directory (default .astra/models/base)"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Classify every utterance one at a time on ONE thread; print accuracy, OOS recall/precision and latency."""
    with errors():
        try:
            examples = split_pair(read_dataset(path), EVAL_SPLITS)
            model_path = store.resolve_model(model_dir or store.tenant_dir(store.BASE_TENANT))
        except _BAD_INPUT as exc:
            raise fail(str(exc), 2) from None
        from astra.core.intent.metrics import score
        from astra.core.intent.model import IntentModel

        try:
            model = IntentModel.load(model_path, threads=1)  # the benchmark is per utterance on ONE thread
        except _BAD_INPUT as exc:
            raise fail(str(exc), 2) from None
        model.classify([examples[0].text])  # first call pays lazy initialisation; not a measurement
        predicted, elapsed = [], []
        with _bar(json_out) as bar:
            task = bar.add_task("classifying", total=len(examples))
            for example in examples:
                start = time.perf_counter()
                predicted.append(model.classify([example.text])[0].intent)
                elapsed.append((time.perf_counter() - start) * 1000)
                bar.advance(task)
        figures = score(predicted, [e.intent for e in examples])
        figures |= {"p50_ms": round(float(np.percentile(elapsed, 50)), 3),
                    "p99_ms": round(float(np.percentile(elapsed, 99)), 3), "model_version": model.version}
    if json_out:
        emit_json(figures)
    else:
        for key, value in figures.items():
            out.print(f"{key}: {value}")
