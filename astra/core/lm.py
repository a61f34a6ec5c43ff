"""The in-domain language model: an interpolated Kneser-Ney trigram in ARPA form, built from a tenant's
training utterances, with a pronunciation dictionary restricted to its vocabulary.

The built model is an artifact identified by the sha256 of its ARPA bytes and cached under a directory
given by the caller; the same sentences, cmudict and builder version give the same bytes (and sha256).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pocketsphinx

# Bumped whenever the builder's output for the same input changes, so cached artifacts are not reused.
BUILDER_VERSION = "kn3-1"
ORDER = 3
BOS, EOS = "<s>", "</s>"

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
    "seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_EXCEPTIONS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                       "nine": "ninth", "twelve": "twelfth"}
_SYMBOLS = {"&": " and ", "+": " plus ", "%": " percent ", "@": " at ", "=": " equals ", "#": " number "}


def cardinal(n: int) -> str:
    """English words for a non-negative integer ("one hundred twenty three")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return cardinal(head) + " " + name + ("" if rest == 0 else " " + cardinal(rest))
    raise AssertionError("unreachable")


def ordinal(n: int) -> str:
    words = cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_EXCEPTIONS:
        words[-1] = _ORDINAL_EXCEPTIONS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _number(digits: str) -> str:
    """Plain numbers as a speaker says them: years in pairs, long digit strings digit by digit."""
    if len(digits) > 1 and digits.startswith("0") or len(digits) > 9:
        return " ".join(_ONES[int(d)] for d in digits)
    n = int(digits)
    if len(digits) == 4 and 1100 <= n <= 2099 and n % 100 != 0 and not 2000 <= n <= 2009:
        return cardinal(n // 100) + " " + (cardinal(n % 100) if n % 100 >= 10 else "oh " + cardinal(n % 100))
    return cardinal(n)


def _clock(match: re.Match) -> str:
    hour, minute = int(match[1]), int(match[2])
    words = cardinal(hour)
    if minute:
        words += " " + (cardinal(minute) if minute >= 10 else "oh " + cardinal(minute))
    return f" {words} "


_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"(\d+):(\d\d)"), _clock),
    (re.compile(r"\$(\d+)(?:\.(\d\d))?"),
     lambda m: f" {_number(m[1])} dollars " + (f"and {cardinal(int(m[2]))} cents " if m[2] and int(m[2]) else "")),
    (re.compile(r"(\d+)\.(\d+)"), lambda m: f" {_number(m[1])} point {' '.join(_ONES[int(d)] for d in m[2])} "),
    (re.compile(r"\b(\d+)(?:st|nd|rd|th)\b"), lambda m: f" {ordinal(int(m[1]))} "),
    (re.compile(r"(\d),(\d{3})\b"), lambda m: m[1] + m[2]),
    (re.compile(r"(\d+)"), lambda m: f" {_number(m[1])} "),
]


def spoken_words(text: str) -> list[str]:
    """Lowercase words as spoken: numbers, money, times and symbols spelled out, punctuation dropped.

    Letter-digit codes ("w2", "ab123") are read letter by letter; an apostrophe inside a word is kept.
    """
    text = text.lower()
    for symbol, words in _SYMBOLS.items():
        text = text.replace(symbol, words)
    text = re.sub(r"\b([a-z]{1,3})(\d+)", lambda m: " ".join(m[1]) + " " + m[2], text)
    text = re.sub(r"(\d+)(am|pm|k)\b", lambda m: m[1] + " " + " ".join(m[2]), text)
    for pattern, replace in _RULES:
        text = pattern.sub(replace, text)
    return re.findall(r"[a-z]+(?:'[a-z]+)*", text)


@cache
def cmudict(path: str | None = None) -> dict[str, list[str]]:
    """word -> pronunciations (phone strings) from the cmudict shipped in the pocketsphinx wheel."""
    path = path or os.path.join(pocketsphinx.get_model_path(), "en-us", "cmudict-en-us.dict")
    entries: dict[str, list[str]] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line in f:
            word, _, phones = line.strip().partition(" ")
            if phones:
                entries[re.sub(r"\(\d+\)$", "", word)].append(phones.split("#")[0].strip())
    return dict(entries)


def runs_in_vocabulary(words: Sequence[str], vocabulary: dict) -> list[list[str]]:
    """The sentence as padded runs of known words: an unknown word breaks the sentence, so no n-gram spans it."""
    runs, current = [], [BOS]
    for word in words:
        if word in vocabulary:
            current.append(word)
            continue
        if any(w != BOS for w in current):
            runs.append(current)
        current = []
    current.append(EOS)
    if len(current) > 1:
        runs.append(current)
    return runs


@dataclass
class NgramCounts:
    """Raw counts per order (tuples of words); the basis of every probability."""

    counts: list[Counter]  # counts[k] holds (k+1)-grams

    @classmethod
    def from_runs(cls, runs: Iterable[Sequence[str]], order: int = ORDER) -> NgramCounts:
        counts = [Counter() for _ in range(order)]
        for run in runs:
            for k in range(order):
                for i in range(len(run) - k):
                    counts[k][tuple(run[i:i + k + 1])] += 1
        counts[0].pop((BOS,), None)
        return cls(counts)


def _discount(counts: Counter) -> float:
    """Ney's estimate D = n1 / (n1 + 2 n2) from the count-of-counts, kept inside (0, 1)."""
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    if n1 == 0 or n2 == 0:
        return 0.5
    return min(max(n1 / (n1 + 2 * n2), 0.05), 0.95)


def _kn_counts(raw: list[Counter]) -> list[Counter]:
    """Counts each order is estimated from: raw for the top order and for n-grams starting at <s>
    (which have no left word), continuation counts (distinct left words) for the rest."""
    order = len(raw)
    used = [Counter() for _ in range(order)]
    used[-1] = Counter(raw[-1])
    for k in range(order - 1):
        for gram in raw[k + 1]:
            used[k][gram[1:]] += 1
        for gram, c in raw[k].items():
            if gram[0] == BOS:
                used[k][gram] = c
            else:
                # A run after an unknown word starts without a left word: list it with no count of its own,
                # so every prefix of a listed n-gram is listed (ARPA needs its backoff weight).
                used[k].setdefault(gram, 0)
    return used


class KneserNey:
    """Interpolated Kneser-Ney with one discount per order; `prob` is the exact model the ARPA file encodes."""

    def __init__(self, counts: NgramCounts):
        self.order = len(counts.counts)
        self.used = _kn_counts(counts.counts)
        self.discounts = [_discount(c) for c in self.used]
        self.vocabulary = sorted({g[0] for g in self.used[0]} | {BOS})
        self._uniform = 1.0 / (len(self.vocabulary) - 1)
        self.context_total: list[Counter] = [Counter() for _ in range(self.order)]
        self.context_types: list[Counter] = [Counter() for _ in range(self.order)]
        for k, grams in enumerate(self.used):
            for gram, c in grams.items():
                self.context_total[k][gram[:-1]] += c
                self.context_types[k][gram[:-1]] += c > 0

    def backoff_weight(self, context: tuple[str, ...]) -> float:
        """gamma(context) = D * N1+(context .) / c(context); 1 for an unseen context."""
        k = len(context)
        total = self.context_total[k][context]
        if total == 0:
            return 1.0
        return self.discounts[k] * self.context_types[k][context] / total

    def prob(self, word: str, context: tuple[str, ...] = ()) -> float:
        """P(word | context); the unigram level interpolates with the uniform distribution over the vocabulary."""
        context = context[len(context) - self.order + 1:] if len(context) >= self.order else context
        k = len(context)
        lower = self.prob(word, context[1:]) if context else self._uniform
        total = self.context_total[k][context]
        if total == 0:
            return lower
        seen = max(self.used[k][context + (word,)] - self.discounts[k], 0.0) / total
        return seen + self.backoff_weight(context) * lower


def _log10(p: float) -> str:
    return "-99" if p <= 0 else f"{math.log10(p):.6f}"


def write_arpa(model: KneserNey, path: Path) -> list[int]:
    """ARPA backoff form of the interpolated model: each listed n-gram carries its interpolated probability and
    each context its gamma, which is exactly the backoff weight that keeps every distribution summing to one."""
    grams = [sorted(model.used[0])] + [sorted(model.used[k]) for k in range(1, model.order)]
    grams[0] = sorted(set(grams[0]) | {(BOS,)})
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\\data\\\n")
        for k, listed in enumerate(grams):
            f.write(f"ngram {k + 1}={len(listed)}\n")
        for k, listed in enumerate(grams):
            f.write(f"\n\\{k + 1}-grams:\n")
            for gram in listed:
                p = 0.0 if gram == (BOS,) else model.prob(gram[-1], gram[:-1])
                line = f"{_log10(p)}\t{' '.join(gram)}"
                if k < model.order - 1 and gram[-1] != EOS:
                    line += f"\t{_log10(model.backoff_weight(gram))}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
    return [len(listed) for listed in grams]


def write_dictionary(vocabulary: Iterable[str], path: Path, pronunciations: dict[str, list[str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for word in sorted(vocabulary):
            for i, phones in enumerate(pronunciations.get(word, [])):
                f.write(f"{word if i == 0 else f'{word}({i + 1})'} {phones}\n")


@dataclass(frozen=True)
class LanguageModel:
    """A built model: the ARPA file, its restricted dictionary, and its identity (sha256 of the ARPA bytes)."""

    sha256: str
    arpa_path: Path
    dict_path: Path
    ngram_counts: tuple[int, ...]
    vocabulary_size: int
    sentences: int
    dropped_words: int
    build_seconds: float

    @property
    def size_bytes(self) -> int:
        return self.arpa_path.stat().st_size


def _input_key(sentences: Sequence[str]) -> str:
    digest = hashlib.sha256(BUILDER_VERSION.encode())
    for sentence in sentences:
        digest.update(sentence.encode() + b"\n")
    return digest.hexdigest()


def _load_cached(cache_dir: Path, key: str) -> LanguageModel | None:
    index = cache_dir / "inputs" / f"{key}.json"
    if not index.exists():
        return None
    meta = json.loads(index.read_text())
    arpa = cache_dir / meta["sha256"] / "lm.arpa"
    if not arpa.exists() or hashlib.sha256(arpa.read_bytes()).hexdigest() != meta["sha256"]:
        return None
    return LanguageModel(arpa_path=arpa, dict_path=arpa.with_name("lm.dict"),
                         **{k: tuple(v) if k == "ngram_counts" else v for k, v in meta.items()})


def _store(cache_dir: Path, key: str, arpa_tmp: Path, meta: dict, vocabulary: Iterable[str]) -> LanguageModel:
    home = cache_dir / meta["sha256"]
    home.mkdir(parents=True, exist_ok=True)
    write_dictionary(vocabulary, home / "lm.dict.tmp", cmudict())
    os.replace(home / "lm.dict.tmp", home / "lm.dict")
    os.replace(arpa_tmp, home / "lm.arpa")
    (cache_dir / "inputs").mkdir(exist_ok=True)
    index_tmp = cache_dir / "inputs" / f"{key}.json.tmp"
    index_tmp.write_text(json.dumps(meta, sort_keys=True))
    os.replace(index_tmp, cache_dir / "inputs" / f"{key}.json")
    return LanguageModel(arpa_path=home / "lm.arpa", dict_path=home / "lm.dict",
                         **{k: tuple(v) if k == "ngram_counts" else v for k, v in meta.items()})


def build_language_model(sentences: Sequence[str], cache_dir: str | Path) -> LanguageModel:
    """Build (or reuse from `cache_dir`) the in-domain trigram for these training sentences.

    Words outside the pocketsphinx cmudict break a sentence into runs (no n-gram spans them) and are counted
    in `dropped_words`.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _input_key(sentences)
    cached = _load_cached(cache_dir, key)
    if cached is not None:
        return cached
    started = time.perf_counter()
    pronunciations = cmudict()
    runs, dropped = [], 0
    for sentence in sentences:
        words = spoken_words(sentence)
        dropped += sum(1 for w in words if w not in pronunciations)
        runs.extend(runs_in_vocabulary(words, pronunciations))
    if not runs:
        raise ValueError("no training sentence has a word in the pronunciation dictionary")
    model = KneserNey(NgramCounts.from_runs(runs))
    with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".arpa", delete=False) as tmp:
        arpa_tmp = Path(tmp.name)
    ngram_counts = write_arpa(model, arpa_tmp)
    meta = {"sha256": hashlib.sha256(arpa_tmp.read_bytes()).hexdigest(), "ngram_counts": ngram_counts,
            "vocabulary_size": len(model.vocabulary) - 1, "sentences": len(sentences), "dropped_words": dropped,
            "build_seconds": round(time.perf_counter() - started, 3)}
    return _store(cache_dir, key, arpa_tmp, meta, (w for w in model.vocabulary if w not in (BOS, EOS)))


def clinc150_sentences(path: str | Path, split: str = "train") -> list[str]:
    """The texts of one split of a CLINC150-layout file (rows [text, intent]), read in place."""
    with open(path, encoding="utf-8") as f:
        return [row[0] for row in json.load(f)[split]]
