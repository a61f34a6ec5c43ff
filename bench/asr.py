"""ASR word error rate and real-time factor: pocketsphinx's default LM beside the in-domain LM built from CLINC150
train, on CLINC150 VAL utterances spoken by espeak-ng (fixed voice and speed; wavs generated into a temp dir).

The reference is the utterance as spoken (astra.core.lm.spoken_words), so numbers and symbols count as the words the
voice says. Each clip goes the production path: ffmpeg conversion, VAD segmentation, decoding.
Goal for the in-domain LM: WER <= 10 % and >= 5x faster than real time.

    python bench/asr.py [--n 200] [--cache-dir DIR] [--lw 6.5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astra.core.asr import DecoderOptions, Recognizer  # noqa: E402
from astra.core.audio import load_pcm  # noqa: E402
from astra.core.lm import build_language_model, spoken_words  # noqa: E402

CLINC150 = ROOT.parent / "shared" / "datasets" / "clinc150" / "clinc150_full_train_val.json"
VOICE, SPEED = "en-us+f2", 140


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words (substitutions, deletions, insertions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def val_sample(path: Path, n: int) -> list[list[str]]:
    """n val utterances spread evenly over the split (so over every intent), as spoken words."""
    rows = json.loads(path.read_text())["val"]
    step = max(len(rows) // n, 1)
    return [spoken_words(text) for text, _ in rows[::step][:n]]


def speak(words: list[str], path: Path) -> None:
    subprocess.run(["espeak-ng", "-v", VOICE, "-s", str(SPEED), "-w", str(path), " ".join(words)],
                   check=True, timeout=60, capture_output=True)


def run(recognizer: Recognizer, clips: list[tuple[list[str], bytes]]) -> dict:
    errors = words = 0
    audio_seconds = decode_seconds = 0.0
    for reference, pcm in clips:
        started = time.perf_counter()
        hypothesis = " ".join(u.text for u in recognizer.recognize(pcm)).split()
        decode_seconds += time.perf_counter() - started
        audio_seconds += len(pcm) / 32000
        errors += word_errors(reference, hypothesis)
        words += len(reference)
    return {"wer": errors / words, "rtf": decode_seconds / audio_seconds, "words": words,
            "audio_s": audio_seconds, "decode_s": decode_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "astra-lm-cache"))
    parser.add_argument("--lw", type=float, default=DecoderOptions.lw)
    parser.add_argument("--only-in-domain", action="store_true")
    args = parser.parse_args()
    data = json.loads(CLINC150.read_text())
    started = time.perf_counter()
    lm = build_language_model([t for t, _ in data["train"] + data["oos_train"]], args.cache_dir)
    this_run = time.perf_counter() - started
    print(f"in-domain LM {lm.sha256[:12]}: {lm.ngram_counts} n-grams, {lm.vocabulary_size} words, "
          f"{lm.size_bytes / 1e6:.1f} MB, built in {lm.build_seconds:.1f} s (this run {this_run:.1f} s, cached), "
          f"{lm.dropped_words} OOV training words dropped")
    with tempfile.TemporaryDirectory() as tmp:
        clips = []
        for i, words in enumerate(val_sample(CLINC150, args.n)):
            speak(words, Path(tmp) / f"{i}.wav")
            clips.append((words, load_pcm(Path(tmp) / f"{i}.wav").data))
    options = DecoderOptions(lw=args.lw)
    systems = [("in-domain LM", Recognizer(lm, options))]
    if not args.only_in_domain:
        systems.insert(0, ("default LM", Recognizer(None, DecoderOptions())))
    print(f"{len(clips)} CLINC150 val utterances, espeak-ng voice {VOICE} at {SPEED} wpm")
    print(f"{'system':<14} {'WER':>7} {'RTF':>6} {'x real time':>12} {'words':>6} {'audio s':>8}")
    for name, recognizer in systems:
        r = run(recognizer, clips)
        print(f"{name:<14} {r['wer']:>7.1%} {r['rtf']:>6.3f} {1 / r['rtf']:>11.1f}x {r['words']:>6} "
              f"{r['audio_s']:>8.1f}")


if __name__ == "__main__":
    main()
