"""The per-tenant head: a multinomial logistic regression over the encoder's embedding and sparse TF-IDF n-grams.

Convex and small (≈ 150 classes × (384 + n-gram) weights), so it trains from scratch in seconds with full-batch
L-BFGS and an update warm-starts from the current weights; new intents get new rows, old rows are never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import TfidfVectorizer


@dataclass
class HeadConfig:
    l2: float = 1e-4  # weight decay per example, chosen on val
    sparse_weight: float = 1.0  # scale of the TF-IDF block against the standardized embedding
    use_sparse: bool = True
    max_iter: int = 150
    update_iter: int = 40


class NGrams:
    """Word 1–2-grams and character 2–5-grams inside word boundaries, TF-IDF weighted, rows L2-normalized."""

    def __init__(self, vocabulary: dict[str, int] | None = None, idf: np.ndarray | None = None):
        min_df = 2 if vocabulary is None else 1  # a gram seen once is noise at fit time
        self.vectorizer = TfidfVectorizer(analyzer=self.analyze, sublinear_tf=True, min_df=min_df)
        if vocabulary is not None:
            self.vectorizer.vocabulary_ = vocabulary
            self.vectorizer.idf_ = idf

    @staticmethod
    def analyze(text: str) -> list[str]:
        words = text.lower().split()
        grams = [f"w:{w}" for w in words] + [f"w:{a} {b}" for a, b in zip(words, words[1:], strict=False)]
        for word in words:
            padded = f" {word} "
            grams += [f"c:{padded[i:i + n]}" for n in range(2, 6) for i in range(len(padded) - n + 1)]
        return grams

    def fit(self, texts: list[str]) -> NGrams:
        self.vectorizer.fit(texts)
        return self

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        return self.vectorizer.transform(texts).tocsr().astype(np.float32)

    @property
    def size(self) -> int:
        return len(self.vectorizer.vocabulary_)

    def state(self) -> tuple[dict[str, int], np.ndarray]:
        return {k: int(v) for k, v in self.vectorizer.vocabulary_.items()}, self.vectorizer.idf_.astype(np.float64)


@dataclass
class Head:
    labels: list[str]
    mean: np.ndarray  # embedding standardization, fixed at the first full fit
    scale: np.ndarray
    dense: np.ndarray  # [dim, classes]
    sparse: np.ndarray  # [n-grams, classes] (zero columns when sparse features are off)
    bias: np.ndarray  # [classes]
    ngrams: NGrams | None

    def logits(self, embeddings: np.ndarray, texts: list[str]) -> np.ndarray:
        out = ((embeddings - self.mean) / self.scale) @ self.dense + self.bias
        if self.ngrams is not None:
            out += self.ngrams.transform(texts) @ self.sparse
        return out

    def probabilities(self, embeddings: np.ndarray, texts: list[str]) -> np.ndarray:
        z = self.logits(embeddings, texts)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)


def _sparse_tensor(matrix: sp.csr_matrix) -> torch.Tensor:
    coo = matrix.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data), coo.shape, check_invariants=False).coalesce()


def _optimize(
    dense_x: np.ndarray, sparse_x: sp.csr_matrix | None, y: np.ndarray, weights: np.ndarray,
    start: tuple[np.ndarray, np.ndarray, np.ndarray], config: HeadConfig, max_iter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xd = torch.from_numpy(dense_x)
    xs = _sparse_tensor(sparse_x) if sparse_x is not None else None
    wd, ws, b = (torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in start)
    target = torch.from_numpy(y)
    sample_weight = torch.from_numpy(weights.astype(np.float32))
    params = [wd, b] + ([ws] if xs is not None else [])
    optimizer = torch.optim.LBFGS(params, lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        z = xd @ wd + b
        if xs is not None:
            z = z + torch.sparse.mm(xs, ws * config.sparse_weight)
        loss = (torch.nn.functional.cross_entropy(z, target, reduction="none") * sample_weight).sum()
        loss = loss / sample_weight.sum() + config.l2 * ((wd * wd).sum() + (ws * ws).sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    scale = config.sparse_weight
    return wd.detach().numpy(), ws.detach().numpy() * scale, b.detach().numpy()


def fit(
    embeddings: np.ndarray, texts: list[str], labels: list[str], config: HeadConfig,
    weights: np.ndarray | None = None, previous: Head | None = None,
) -> Head:
    """A head over ``labels``; with ``previous`` it warm-starts, keeps its label order and n-gram vocabulary."""
    names = list(previous.labels) if previous else []
    names += sorted(set(labels) - set(names))
    index = {name: k for k, name in enumerate(names)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    weights = np.ones(len(labels), dtype=np.float32) if weights is None else weights
    if previous is None:
        mean, scale = embeddings.mean(axis=0), embeddings.std(axis=0) + 1e-6
        ngrams = NGrams().fit(texts) if config.use_sparse else None
    else:
        mean, scale, ngrams = previous.mean, previous.scale, previous.ngrams
    dense_x = ((embeddings - mean) / scale).astype(np.float32)
    sparse_x = ngrams.transform(texts) if ngrams is not None else None
    start = _start(previous, dense_x, y, len(names), ngrams.size if ngrams else 0, config)
    dense, sparse, bias = _optimize(
        dense_x, sparse_x, y, weights, start, config, config.update_iter if previous else config.max_iter
    )
    return Head(names, mean, scale, dense, sparse, bias, ngrams)


def _start(previous: Head | None, dense_x: np.ndarray, y: np.ndarray, classes: int, grams: int, config: HeadConfig):
    """Zeros for a fresh fit; the previous weights (plus class-mean rows for new intents) for an update."""
    if previous is None:
        return (np.zeros((dense_x.shape[1], classes), np.float32), np.zeros((grams, classes), np.float32),
                np.zeros(classes, np.float32))
    old = len(previous.labels)
    dense = np.zeros((dense_x.shape[1], classes), np.float32)
    dense[:, :old] = previous.dense
    for k in range(old, classes):
        dense[:, k] = dense_x[y == k].mean(axis=0) * 0.1
    sparse = np.zeros((grams, classes), np.float32)
    sparse[:, :old] = previous.sparse / config.sparse_weight
    bias = np.full(classes, float(np.mean(previous.bias)), np.float32)
    bias[:old] = previous.bias
    return dense, sparse, bias
