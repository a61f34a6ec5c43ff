"""`astra core train|eval`: the intent engine's training and its benchmark interface."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer
from rich.markup import escape
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
    layers: int = typer.Option(3, "--layers", help="encoder layers kept when the base encoder is built"),
    epochs: float = typer.Option(1.5, "--epochs", help="fine-tuning epochs when the base encoder is built"),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Train a tenant's intent model: the head on the base encoder (built once by fine-tuning if absent),
    the out-of-scope threshold chosen on the file's val split. Exit 2 for bad data."""
    with errors():
        try:
            validate_model_owner(tenant)  # it names a directory: never a path
            rows = read_dataset(data)
            examples = split_pair(rows, TRAIN_SPLITS)
            held_out = split_pair(rows, EVAL_SPLITS) if any(s in rows for s, _ in EVAL_SPLITS) else []
        except (DataError, InvalidKey) as exc:
            raise fail(escape(str(exc)), 2) from None  # file names and messages are not markup
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
    if json_out:
        emit_json(result)
    else:
        out.print(f"model {result['version']} for {tenant}: {result['path']}")
        built = f" (base encoder built in {result['fine_tune_seconds']:.0f} s)" if result["fine_tune_seconds"] else ""
        out.print(f"  trained in {result['train_seconds']:.1f} s on {result['examples']} examples{built}")
        for key, value in result["metrics"].items():
            out.print(f"  {key}: {value}")


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
            raise fail(escape(str(exc)), 2) from None  # file names and messages are not markup
        import torch  # only now: a bad file is refused without loading torch

        from astra.core.intent.metrics import score
        from astra.core.intent.model import IntentModel

        try:
            model = IntentModel.load(model_path)
        except _BAD_INPUT as exc:
            raise fail(escape(str(exc)), 2) from None  # file names and messages are not markup
        torch.set_num_threads(1)
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
