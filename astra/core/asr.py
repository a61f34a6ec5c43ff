"""Offline speech recognition with pocketsphinx: the en-us acoustic model shipped in its wheel, decoded with the
tenant's in-domain language model (astra.core.lm) or, without one, pocketsphinx's default model.

Long audio is cut at silences by pocketsphinx's voice-activity Segmenter; each speech segment is one utterance with
start/end times, its text, a confidence (the mean lattice posterior of its words: the posterior of the whole
hypothesis is ~0 for any sentence of more than a few words, so it says nothing),
and the sha256 of the acoustic model and of the language model that produced it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import pocketsphinx

from astra.core.audio import BYTES_PER_SAMPLE, SAMPLE_RATE
from astra.core.lm import LanguageModel

_FILLER = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\+\+.*\+\+)$")
# Silence kept around each speech segment so a word cut by the VAD's decision window is not clipped.
_PAD_SECONDS = 0.25


@dataclass(frozen=True)
class DecoderOptions:
    """Decoder settings, tuned on CLINC150 val (bench/asr.py); `lw` is the language weight."""

    lw: float = 6.5
    beam: float = 1e-60
    wbeam: float = 1e-40
    fwdflat: bool = True
    bestpath: bool = True
    vad_mode: int = 2
    vad_window: float = 0.3


@dataclass(frozen=True)
class RecognizedUtterance:
    id: str
    start: float
    end: float
    text: str
    confidence: float
    asr_model_sha256: str
    lm_sha256: str

    def to_json(self) -> dict:
        return asdict(self)


def acoustic_model_dir() -> str:
    return os.path.join(pocketsphinx.get_model_path(), "en-us", "en-us")


@cache
def directory_sha256(path: str) -> str:
    """sha256 over a model directory's files (relative name and bytes, in name order)."""
    digest = hashlib.sha256()
    for name in sorted(p.relative_to(path).as_posix() for p in Path(path).rglob("*") if p.is_file()):
        digest.update(name.encode() + b"\0" + (Path(path) / name).read_bytes() + b"\0")
    return digest.hexdigest()


@cache
def file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Recognizer:
    """One pocketsphinx decoder, reused for every segment (not thread-safe: one Recognizer per thread)."""

    language_model: LanguageModel | None = None
    options: DecoderOptions = field(default_factory=DecoderOptions)

    def __post_init__(self) -> None:
        config = {"hmm": acoustic_model_dir(), "loglevel": "FATAL", "samprate": SAMPLE_RATE,
                  "lw": self.options.lw, "beam": self.options.beam, "wbeam": self.options.wbeam,
                  "fwdflat": self.options.fwdflat, "bestpath": self.options.bestpath}
        if self.language_model is not None:
            config["lm"], config["dict"] = str(self.language_model.arpa_path), str(self.language_model.dict_path)
        self._decoder = pocketsphinx.Decoder(**config)
        self.asr_model_sha256 = directory_sha256(config["hmm"])
        self.lm_sha256 = self.language_model.sha256 if self.language_model else file_sha256(self._decoder.config["lm"])

    def decode(self, pcm: bytes) -> tuple[str, float]:
        """Text and confidence (mean word posterior) of one speech segment (16 kHz mono s16le)."""
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        if hypothesis is None:
            return "", 0.0
        words = [(re.sub(r"\(\d+\)$", "", s.word), s.prob) for s in self._decoder.seg()]
        spoken = [(w, p) for w, p in words if not _FILLER.match(w)]
        if not spoken:
            return "", 0.0
        if not self.options.bestpath:  # no lattice, no posteriors
            return " ".join(w for w, _ in spoken), 1.0
        confidence = sum(min(max(float(p), 0.0), 1.0) for _, p in spoken) / len(spoken)
        return " ".join(w for w, _ in spoken), confidence

    def recognize(self, pcm: bytes) -> list[RecognizedUtterance]:
        """Every speech segment of the audio that decodes to at least one word, in time order."""
        out = []
        for start, end, segment in speech_segments(pcm, self.options):
            text, confidence = self.decode(segment)
            if text:
                out.append(RecognizedUtterance(id=f"u{len(out) + 1}", start=round(start, 2), end=round(end, 2),
                                               text=text, confidence=round(confidence, 4),
                                               asr_model_sha256=self.asr_model_sha256, lm_sha256=self.lm_sha256))
        return out


def speech_segments(pcm: bytes, options: DecoderOptions = DecoderOptions()) -> list[tuple[float, float, bytes]]:
    """(start s, end s, padded pcm) for each stretch of speech. Trailing silence is appended so speech running to
    the end of the audio still closes its segment."""
    segmenter = pocketsphinx.Segmenter(window=options.vad_window, vad_mode=options.vad_mode, sample_rate=SAMPLE_RATE)
    bytes_per_second = SAMPLE_RATE * BYTES_PER_SAMPLE
    tail = bytes(int(options.vad_window * 2 * bytes_per_second) // 2 * 2)
    found = []
    for seg in segmenter.segment(io.BytesIO(pcm + tail)):
        start = max(seg.start_time - _PAD_SECONDS, 0.0)
        end = min(seg.end_time + _PAD_SECONDS, len(pcm) / bytes_per_second)
        if end > start:
            found.append((start, end, pcm[int(start * bytes_per_second) // 2 * 2:int(end * bytes_per_second) // 2 * 2]))
    return found
