"""IntentModel: a once-fine-tuned encoder plus a per-tenant head, classify/update, and a verified artifact directory.

The artifact is a plain directory: ``encoder/`` (byte copies of the base encoder's served files: its int8 ONNX
graph and tokenizer, no torch weights), ``.npy`` arrays (deterministic bytes), JSON side files, and
``manifest.json`` listing every file's sha256, the version and the metrics. The version is derived from the files'
digests, so the same bytes give the same version and ``load`` can recompute it: a tampered file, a missing file, a
manifest that does not list exactly the files ``load`` reads, or an edited manifest is refused.

The training set (embeddings, labels, texts packed as UTF-8) is only for ``update``: a loaded model maps it from its
files instead of reading it (≈ 13 MB of a CLINC150-size model stays on disk while serving), and an update checks those
files against the manifest again before it uses them.

Loading and classifying need numpy, onnxruntime and tokenizers only; training and updating also fit the head
(torch's L-BFGS, scikit-learn's n-gram vocabulary), imported when they run.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import time
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from astra.core.intent import head as head_lib
from astra.core.intent.data import OOS, Example, read_domains
from astra.core.intent.encoder import FILES as ENCODER_FILES
from astra.core.intent.encoder import Encoder, Progress, default_threads, files_digest
from astra.core.intent.metrics import choose_threshold, score
from astra.core.intent.store import ModelIntegrityError, file_sha256

FORMAT = 3  # 3: training texts as UTF-8 arrays, memory-mapped (2: a JSON list, read whole); 1 held torch weights
MANIFEST = "manifest.json"
CORRECTION_WEIGHT = 2.0  # a correction outweighs the example it overrides being gone: it is a deliberate label
_HEAD_ARRAYS = ("mean", "scale", "dense", "sparse", "bias")  # read into memory: every classification uses them
_TRAINING_ARRAYS = ("embeddings", "targets", "weights", "text_utf8", "text_ends")  # memory-mapped: updates only
_JSON_FILES = ("ngrams.json", "head.json", "domains.json")
# Exactly what load() reads; a manifest listing anything else (or less) is refused.
ARTIFACT_FILES = frozenset({f"arrays/{name}.npy" for name in _HEAD_ARRAYS + _TRAINING_ARRAYS}
                           | set(_JSON_FILES) | {f"encoder/{name}" for name in ENCODER_FILES})
_shared_encoders: weakref.WeakValueDictionary[tuple[str, int], Encoder] = weakref.WeakValueDictionary()


@dataclass(frozen=True)
class Prediction:
    intent: str  # "oos" when out of scope
    domain: str | None
    confidence: float  # probability of the answer the head ranked first (an in-scope intent or oos)
    oos: bool
    model_version: str
    top_intent: str  # the best in-scope intent even when out of scope, for review


class PackedTexts(Sequence[str]):
    """Texts as one UTF-8 byte array and each text's end offset: two arrays a loaded model maps from its files, so
    its training texts cost no memory until an update reads them."""

    def __init__(self, utf8: np.ndarray, ends: np.ndarray):
        self.utf8, self.ends = utf8, ends

    @classmethod
    def pack(cls, texts: Sequence[str]) -> PackedTexts:
        encoded = [t.encode("utf-8") for t in texts]
        return cls(np.frombuffer(b"".join(encoded), np.uint8), np.cumsum([len(e) for e in encoded], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, k: int) -> str:  # a slice is not needed by anyone: only an index
        if not -len(self) <= k < len(self):
            raise IndexError(k)
        k %= len(self)
        start = int(self.ends[k - 1]) if k else 0
        return self.utf8[start:int(self.ends[k])].tobytes().decode("utf-8")


class _LabelNames(Sequence[str]):
    """Each row's label name from its index into the head's labels, without a list of names per row."""

    def __init__(self, targets: np.ndarray, names: list[str]):
        self.targets, self.names = targets, names

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, k: int) -> str:
        return self.names[self.targets[k]]


@dataclass
class TrainingSet:
    """What the head was fitted on; kept so an update refits without re-encoding everything. A loaded model's is
    memory-mapped from ``files`` (path -> sha256), which ``checked`` verifies again before an update reads them."""

    texts: Sequence[str]
    labels: Sequence[str]
    embeddings: np.ndarray  # float16 [n, dim]
    weights: np.ndarray  # float32 [n]
    files: dict[Path, str] = field(default_factory=dict)

    def checked(self) -> TrainingSet:
        for path, expected in self.files.items():
            try:
                same = file_sha256(path) == expected
            except OSError as exc:
                raise ModelIntegrityError(f"{path} cannot be read since the model was loaded: {exc.strerror}") from None
            if not same:
                raise ModelIntegrityError(f"{path} changed since the model was loaded (sha256 mismatch)")
        return self


@dataclass
class IntentModel:
    encoder: Encoder
    head: head_lib.Head
    threshold: float
    domains: dict[str, str]
    training: TrainingSet
    config: head_lib.HeadConfig = field(default_factory=head_lib.HeadConfig)
    tenant: str = "base"
    metrics: dict = field(default_factory=dict)
    version: str = ""

    # ---- training -------------------------------------------------------------------------------------------

    @classmethod
    def train(
        cls, examples: Sequence[Example], base: Encoder | IntentModel, *, calibration: Sequence[Example] = (),
        tenant: str = "base", domains: dict[str, str] | None = None, config: head_lib.HeadConfig | None = None,
        threshold: float | None = None, progress: Progress | None = None,
    ) -> IntentModel:
        """A head over ``examples`` on the base encoder. The oos threshold is chosen on ``calibration``
        (held-out data, never the training rows); without it, the base model's threshold (or 0) is kept."""
        if not examples:
            raise ValueError("no training examples")
        encoder = base.encoder if isinstance(base, IntentModel) else base
        cached = base.training if isinstance(base, IntentModel) else None
        texts, labels = [e.text for e in examples], [e.intent for e in examples]
        embeddings = _encode_with_cache(encoder, texts, cached, progress)
        config = config or head_lib.HeadConfig()
        fitted = head_lib.fit(embeddings, texts, labels, config)
        domain_map = {**(domains if domains is not None else read_domains()), **_explicit_domains(examples)}
        training = TrainingSet(texts, labels, embeddings.astype(np.float16), np.ones(len(texts), np.float32))
        fallback = base.threshold if isinstance(base, IntentModel) else 0.0
        model = cls(encoder, fitted, fallback if threshold is None else threshold, domain_map, training, config, tenant)
        if calibration:
            probs = model._probabilities([e.text for e in calibration])  # encoded once for both uses
            if threshold is None:
                model.threshold = model.calibrate(probs, calibration)
            model.metrics = score([p.intent for p in model._decide(probs)], [e.intent for e in calibration])
        model.version = model.content_version()
        return model

    def calibrate(self, probs: np.ndarray, held_out: Sequence[Example]) -> float:
        best = probs.argmax(axis=1)
        return choose_threshold(probs.max(axis=1), [self.head.labels[k] for k in best], [e.intent for e in held_out])

    def update(self, corrections: Sequence[Example]) -> IntentModel:
        """A new model (this one is untouched): the head refitted, warm-started, on the training set plus
        ``corrections``. A correction replaces the training rows with the same text. Every intent the model had
        keeps its column, even one whose examples were all relabelled."""
        if not corrections:
            return self
        old = self.training.checked()
        texts, labels = list(old.texts), list(old.labels)  # each read once from a loaded model's files
        fixed = {_norm(c.text) for c in corrections}
        keep = [i for i, t in enumerate(texts) if _norm(t) not in fixed]
        new_embeddings = self.encoder.encode([c.text for c in corrections]).astype(np.float16)
        training = TrainingSet(
            [texts[i] for i in keep] + [c.text for c in corrections],
            [labels[i] for i in keep] + [c.intent for c in corrections],
            np.vstack([old.embeddings[keep], new_embeddings]),
            np.concatenate([old.weights[keep], np.full(len(corrections), CORRECTION_WEIGHT, np.float32)]),
        )
        fitted = head_lib.fit(training.embeddings.astype(np.float32), training.texts, training.labels, self.config,
                              weights=training.weights, previous=self.head)
        domains = {**self.domains, **_explicit_domains(corrections)}
        metrics = {"updated_from": self.version, "corrections": len(corrections), "before_update": self.metrics}
        model = IntentModel(self.encoder, fitted, self.threshold, domains, training, self.config, self.tenant, metrics)
        model.version = model.content_version()
        return model

    # ---- inference -------------------------------------------------------------------------------------------

    @functools.cached_property
    def _in_scope(self) -> np.ndarray:
        return np.array([label != OOS for label in self.head.labels])

    def _probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return self.head.probabilities(self.encoder.encode(list(texts)), list(texts))

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        return self._decide(self._probabilities(texts)) if texts else []

    def _decide(self, probs: np.ndarray) -> list[Prediction]:
        labels = self.head.labels
        masked = np.where(self._in_scope, probs, -1.0)
        return [self._prediction(row, labels, int(top.argmax())) for row, top in zip(probs, masked, strict=True)]

    def _prediction(self, row: np.ndarray, labels: list[str], top: int) -> Prediction:
        best = int(row.argmax())
        confidence = float(row[best])
        oos = labels[best] == OOS or confidence < self.threshold
        intent = OOS if oos else labels[best]
        return Prediction(intent, None if oos else self.domains.get(intent), round(confidence, 4), oos,
                          self.version, labels[top])

    def evaluate(self, examples: Sequence[Example]) -> dict:
        predictions = self.classify([e.text for e in examples])
        return score([p.intent for p in predictions], [e.intent for e in examples])

    # ---- artifact --------------------------------------------------------------------------------------------

    def _payload(self) -> dict[str, bytes]:
        """Every file but the encoder's and the manifest, as deterministic bytes."""
        training = self.training.checked()
        index = {label: k for k, label in enumerate(self.head.labels)}
        texts = PackedTexts.pack(list(training.texts))
        arrays = {
            "mean": self.head.mean, "scale": self.head.scale, "dense": self.head.dense, "sparse": self.head.sparse,
            "bias": self.head.bias, "embeddings": training.embeddings,
            "targets": np.array([index[x] for x in training.labels], np.int32),
            "weights": training.weights, "text_utf8": texts.utf8, "text_ends": texts.ends,
        }
        files = {f"arrays/{name}.npy": _npy(value) for name, value in arrays.items()}
        vocabulary, idf = self.head.ngrams.state() if self.head.ngrams else ({}, np.zeros(0))
        files["ngrams.json"] = _json({"vocabulary": vocabulary, "idf": idf.tolist()})
        files["head.json"] = _json({"labels": self.head.labels, "threshold": self.threshold,
                                    "config": asdict(self.config), "tenant": self.tenant,
                                    "dense_share": self.head.dense_share})
        files["domains.json"] = _json(self.domains)
        return files

    def content_version(self) -> str:
        digests = {name: _sha(data) for name, data in self._payload().items()}
        return _version(digests, self.encoder.sha256)

    def save(self, directory: str | Path) -> dict:
        """Write the artifact into ``directory`` (created; must be empty or absent). Returns the file digests and
        the manifest's own sha256."""
        directory = Path(directory)
        if directory.exists() and any(directory.iterdir()):
            raise FileExistsError(f"{directory} is not empty")
        digests = {}
        for name, data in self._payload().items():
            digests[name] = _write(directory / name, data)
        (directory / "encoder").mkdir(parents=True, exist_ok=True)
        for name in ENCODER_FILES:
            shutil.copyfile(self.encoder.path / name, directory / "encoder" / name)
            digests[f"encoder/{name}"] = file_sha256(directory / "encoder" / name)
        manifest = {"format": FORMAT, "version": self.version, "tenant": self.tenant,
                    "encoder_sha256": self.encoder.sha256, "threshold": self.threshold,
                    "labels": len(self.head.labels), "examples": len(self.training.texts),
                    "metrics": self.metrics, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "files": dict(sorted(digests.items()))}
        manifest_sha = _write(directory / MANIFEST, _json(manifest))
        return {"files": manifest["files"], "manifest_sha256": manifest_sha, "version": self.version}

    @classmethod
    def load(cls, directory: str | Path, threads: int | None = None) -> IntentModel:
        """The verified artifact in ``directory``; its encoder runs on ``threads`` intra-op threads (default:
        ``ASTRA_INTENT_THREADS``, else one)."""
        directory = Path(directory)
        manifest = _verified_manifest(directory)
        encoder = _shared_encoder(directory / "encoder", manifest["encoder_sha256"], threads or default_threads())
        arrays = {n: np.load(directory / f"arrays/{n}.npy", allow_pickle=False) for n in _HEAD_ARRAYS}
        mapped = {n: np.load(directory / f"arrays/{n}.npy", mmap_mode="r", allow_pickle=False)
                  for n in _TRAINING_ARRAYS}
        info = json.loads((directory / "head.json").read_text(encoding="utf-8"))
        grams = json.loads((directory / "ngrams.json").read_text(encoding="utf-8"))
        config = head_lib.HeadConfig(**info["config"])
        ngrams = head_lib.NGrams(grams["vocabulary"], np.array(grams["idf"])) if grams["vocabulary"] else None
        labels = info["labels"]
        fitted = head_lib.Head(labels, arrays["mean"], arrays["scale"], arrays["dense"], arrays["sparse"],
                               arrays["bias"], ngrams, info["dense_share"])
        files = {directory / f"arrays/{n}.npy": manifest["files"][f"arrays/{n}.npy"] for n in _TRAINING_ARRAYS}
        training = TrainingSet(PackedTexts(mapped["text_utf8"], mapped["text_ends"]),
                               _LabelNames(mapped["targets"], labels), mapped["embeddings"], mapped["weights"], files)
        domains = json.loads((directory / "domains.json").read_text(encoding="utf-8"))
        return cls(encoder, fitted, info["threshold"], domains, training, config, info["tenant"],
                   manifest.get("metrics", {}), manifest["version"])


def _verified_manifest(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelIntegrityError(f"{directory}: no {MANIFEST}") from None
    except (ValueError, RecursionError) as exc:
        raise ModelIntegrityError(f"{directory}/{MANIFEST}: not JSON ({exc or type(exc).__name__})") from None
    if not isinstance(manifest, dict):
        raise ModelIntegrityError(f"{directory}/{MANIFEST}: not a JSON object")
    if manifest.get("format") != FORMAT:
        raise ModelIntegrityError(f"{directory}: unknown model format {manifest.get('format')!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != ARTIFACT_FILES:
        listed = set(files) if isinstance(files, dict) else set()
        unlisted, unknown = sorted(ARTIFACT_FILES - listed), sorted(listed - ARTIFACT_FILES)
        raise ModelIntegrityError(f"{directory}: the manifest must list exactly the model's files"
                                  + (f"; not listed: {_some(unlisted)}" if unlisted else "")
                                  + (f"; unknown: {_some(unknown)}" if unknown else ""))
    for name, expected in files.items():
        path = (directory / name).resolve()
        if directory.resolve() not in path.parents:
            raise ModelIntegrityError(f"{directory}: {name} leads outside the model (a link)")
        if not path.is_file():
            raise ModelIntegrityError(f"{directory}: {name} is missing")
        if file_sha256(path) != expected:
            raise ModelIntegrityError(f"{directory}: {name} does not match its sha256 in the manifest")
    payload = {n: d for n, d in files.items() if not n.startswith("encoder/")}
    encoder_files = {n.removeprefix("encoder/"): d for n, d in files.items() if n.startswith("encoder/")}
    if files_digest(encoder_files) != manifest.get("encoder_sha256") or \
            _version(payload, manifest.get("encoder_sha256", "")) != manifest.get("version"):
        raise ModelIntegrityError(f"{directory}: the manifest's version does not match its files")
    return manifest


def _some(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(repr(n[:80]) for n in names[:shown]) + more


def _shared_encoder(path: Path, sha256: str, threads: int) -> Encoder:
    """Models on the same base encoder share one copy in memory (the encoder is most of a model's size)."""
    encoder = _shared_encoders.get((sha256, threads))
    if encoder is None:
        encoder = Encoder.load(path, threads)
        _shared_encoders[(sha256, threads)] = encoder
    return encoder


def _encode_with_cache(encoder: Encoder, texts: list[str], cached: TrainingSet | None,
                       progress: Progress | None) -> np.ndarray:
    """Embeddings, reusing those the base model already computed for the same texts (same encoder)."""
    known = {t: i for i, t in enumerate(cached.texts)} if cached is not None else {}
    missing = [t for t in dict.fromkeys(texts) if t not in known]
    fresh = dict(zip(missing, encoder.encode(missing, progress), strict=True)) if missing else {}
    return np.stack([fresh[t] if t in fresh else cached.embeddings[known[t]].astype(np.float32) for t in texts])


def _explicit_domains(examples: Sequence[Example]) -> dict[str, str]:
    return {e.intent: e.domain for e in examples if e.domain}


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return _sha(data)


def _version(payload_digests: dict[str, str], encoder_sha256: str) -> str:
    return _sha(_json({"encoder": encoder_sha256, "files": dict(sorted(payload_digests.items()))}))[:16]
