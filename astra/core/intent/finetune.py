"""Building the base encoder (training time only, torch): the packaged MiniLM cut to its first layers, fine-tuned
once with cross-entropy on the intents, then exported to ONNX with mean pooling inside the graph, its operators fused
for ONNX Runtime and its weights quantized to int8 — what `astra.core.intent.encoder.Encoder` serves.

Why cut and quantize: serving runs on one thread of a 2-core machine with a p99 goal of 5 ms per utterance; int8
ONNX Runtime runs the first layers several times faster than torch does (figures in docs). The fine-tuned encoder is
built once; tenants retrain only the head on top of it, which is what keeps retraining cheap.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import onnx  # noqa: E402 — after the offline switches
import torch  # noqa: E402
from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: E402
from onnxruntime.transformers.optimizer import optimize_model  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from astra.core.intent.encoder import GRAPH, MAX_TOKENS, META, TOKENIZER, Encoder, Progress, packaged_minilm  # noqa: E402

transformers_logging.set_verbosity_error()  # stderr is for our one error line, not per-weight progress bars
transformers_logging.disable_progress_bar()

OPSET = 17


class TorchEncoder:
    """The trainable form: a (possibly truncated) BERT-style encoder and its fast tokenizer, mean-pooled."""

    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, path: str | Path, layers: int | None = None) -> TorchEncoder:
        # Eager attention: the exported graph must take the padding mask as an input for every batch; the fused
        # kernels' paths depend on the example traced.
        model = AutoModel.from_pretrained(str(path), local_files_only=True, attn_implementation="eager")
        if layers is not None and layers < len(model.encoder.layer):
            model.encoder.layer = model.encoder.layer[:layers]
            model.config.num_hidden_layers = layers
        return cls(model, AutoTokenizer.from_pretrained(str(path), local_files_only=True))

    def tokens(self, texts: Sequence[str]) -> dict:
        return self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=MAX_TOKENS)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokens(texts)
        return self.pooled(batch["input_ids"], batch["attention_mask"])


class _Pooled(torch.nn.Module):
    """What the ONNX graph computes: token ids and mask in, the mean-pooled sentence embedding out."""

    def __init__(self, encoder: TorchEncoder):
        super().__init__()
        self.model = encoder.model
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder.pooled(input_ids, attention_mask)


def fine_tune(
    texts: Sequence[str], labels: Sequence[str], *, layers: int = 3, epochs: float = 3.0, batch_size: int = 32,
    seed: int = 0, progress: Progress | None = None,
) -> TorchEncoder:
    """Cross-entropy fine-tuning of the packaged MiniLM's first ``layers`` layers with a throw-away linear head."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    encoder = TorchEncoder.load(packaged_minilm(), layers=layers)
    for weight in encoder.model.embeddings.parameters():
        weight.requires_grad_(False)  # 12 M of the 17 M weights; freezing them makes each step ≈ 2x cheaper
    names = sorted(set(labels))
    index = {name: k for k, name in enumerate(names)}
    head = torch.nn.Linear(encoder.model.config.hidden_size, len(names))
    rows = list(zip(texts, (index[label] for label in labels), strict=True))
    steps = max(1, int(len(rows) / batch_size * epochs))
    trainable = [w for w in encoder.model.parameters() if w.requires_grad]
    optimizer = torch.optim.AdamW([{"params": trainable}, {"params": head.parameters()}], lr=1e-4, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[1e-4, 3e-3], total_steps=steps, pct_start=0.1)
    loss_of = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    encoder.model.train()
    batches: list[list[tuple[str, int]]] = []
    for step in range(steps):
        if not batches:
            batches = _length_bucketed(rows, batch_size, rng)
        chunk = batches.pop()
        logits = head(encoder.embed([t for t, _ in chunk]))
        loss = loss_of(logits, torch.tensor([y for _, y in chunk]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress:
            progress("fine-tuning", step + 1, steps)
    encoder.model.eval()
    return encoder


def _length_bucketed(rows: list[tuple[str, int]], batch_size: int, rng: random.Random) -> list[list[tuple[str, int]]]:
    """One epoch's batches in random order, each of texts of similar length (drawn from a random pool of 64
    batches): little padding, so cheaper steps than random batches."""
    rows = rows[:]
    rng.shuffle(rows)
    pool = batch_size * 64
    batches = []
    for start in range(0, len(rows), pool):
        ordered = sorted(rows[start:start + pool], key=lambda row: len(row[0]))
        batches += [ordered[k:k + batch_size] for k in range(0, len(ordered), batch_size)]
    rng.shuffle(batches)
    return batches


def _no_preprocessing_hint(record: logging.LogRecord) -> bool:
    return "pre-processing before quantization" not in record.getMessage()


def export(encoder: TorchEncoder, path: Path, *, quantize: bool = True) -> Encoder:
    """Write ``encoder`` to ``path`` (absent) as a served encoder directory and load it. Written in a staging
    directory first, then renamed: a half-written encoder is never taken for a finished one."""
    if path.exists():
        raise FileExistsError(f"{path} exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    config = encoder.model.config
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        traced = staging / "traced.onnx"
        example = encoder.tokens(["hello", "a longer example sentence"])  # padded: the mask must stay an input
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about paths this graph never takes (a KV cache, negative gather indices).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Pooled(encoder), (example["input_ids"], example["attention_mask"]), str(traced),
                input_names=["input_ids", "attention_mask"], output_names=["embedding"], opset_version=OPSET,
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                              "embedding": {0: "batch"}},
                dynamo=False,  # the TorchScript exporter: the dynamo one needs onnxscript, which is not installed
            )
        encoder.model.eval()  # the exporter leaves the module in training mode (dropout on): put it back
        fused = optimize_model(str(traced), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, opt_level=1)
        if quantize:
            fused.save_model_to_file(str(staging / "fused.onnx"))
            # Per-channel weight scales: on CLINC150 val 96.8 % in-scope (per-tensor 96.5 %, fp32 96.7 %) at the
            # same speed. DefaultTensorType: the fused operators (ONNX Runtime's contrib domain) have no shape
            # inference.
            root = logging.getLogger()
            root.addFilter(_no_preprocessing_hint)  # the transformer optimizer above is this graph's pre-processing
            try:
                quantize_dynamic(staging / "fused.onnx", staging / GRAPH, weight_type=QuantType.QInt8,
                                 per_channel=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            finally:
                root.removeFilter(_no_preprocessing_hint)
            (staging / "fused.onnx").unlink()
        else:
            fused.save_model_to_file(str(staging / GRAPH))
        traced.unlink()
        encoder.tokenizer.backend_tokenizer.save(str(staging / TOKENIZER))
        meta = {"dim": config.hidden_size, "layers": config.num_hidden_layers, "pooling": "mean", "opset": OPSET,
                "weights": "int8" if quantize else "fp32", "per_channel": quantize, "max_tokens": MAX_TOKENS}
        (staging / META).write_text(json.dumps(meta, sort_keys=True, indent=1) + "\n", encoding="utf-8")
        staging.chmod(0o755)  # mkdtemp's is 0700; the directory is read like any model file
        staging.replace(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Encoder.load(path)
