"""In-domain LM builder, audio conversion and refusals, and pocketsphinx recognition end to end.

Clips are spoken by espeak-ng and converted by ffmpeg in the test; those tests skip only when a binary is missing.
The LM for recognition is built once per session from every 4th CLINC150 train sentence.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from astra.core import lm
from astra.core.asr import Recognizer
from astra.core.audio import AudioError, load_pcm, probe

CLINC150 = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "clinc150" / "clinc150_full_train_val.json"
VOICE = "en-us+f2"
needs_audio_tools = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("ffmpeg")
                                            and shutil.which("ffprobe")),
                                       reason="espeak-ng, ffmpeg or ffprobe is not installed (apt: espeak-ng ffmpeg)")
CORPUS = ["transfer one hundred dollars to my savings account", "what is my savings balance",
          "transfer money to checking", "what is the weather", "zyxwq is not a word at all"]


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = reference.split(), hypothesis.split()
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / len(ref)


def speak(text: str, path: Path) -> Path:
    subprocess.run(["espeak-ng", "-v", VOICE, "-s", "140", "-w", str(path), text], check=True, timeout=30,
                   capture_output=True)
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=60, capture_output=True)


# --- the language model builder -------------------------------------------------------------------------------


def test_spoken_words_spell_out_numbers_money_times_and_codes():
    assert lm.spoken_words("Transfer $100 to my 401k at 5:30pm on the 3rd!") == (
        "transfer one hundred dollars to my four hundred one k at five thirty p m on the third").split()
    assert lm.spoken_words("W2, 15% of 2,500 in 2019; 3.25 & 07") == (
        "w two fifteen percent of two thousand five hundred in twenty nineteen three point two five and zero seven"
    ).split()
    assert lm.ordinal(22) == "twenty second" and lm.ordinal(40) == "fortieth" and lm.cardinal(1_000_001) == \
        "one million one"


def test_unknown_word_breaks_the_sentence_into_runs():
    vocabulary = {"a": 1, "b": 1, "c": 1}
    assert lm.runs_in_vocabulary(["a", "b", "zz", "c"], vocabulary) == [["<s>", "a", "b"], ["c", "</s>"]]
    assert lm.runs_in_vocabulary(["zz"], vocabulary) == []
    assert lm.runs_in_vocabulary(["zz", "yy", "a"], vocabulary) == [["a", "</s>"]]


def kn_model() -> lm.KneserNey:
    pronunciations = lm.cmudict()
    runs = [r for s in CORPUS for r in lm.runs_in_vocabulary(lm.spoken_words(s), pronunciations)]
    return lm.KneserNey(lm.NgramCounts.from_runs(runs))


@pytest.mark.parametrize("context", [(), ("<s>",), ("transfer",), ("<s>", "transfer"), ("to", "my"),
                                     ("savings", "account"), ("zebra", "weather"), ("is",)])
def test_every_distribution_sums_to_one(context):
    model = kn_model()
    words = [w for w in model.vocabulary if w != "<s>"]
    assert math.isclose(sum(model.prob(w, context) for w in words), 1.0, abs_tol=1e-9)
    assert all(model.prob(w, context) > 0 for w in words)


def read_arpa(path: Path) -> tuple[dict[int, int], dict[tuple, tuple[float, float]]]:
    header, grams, order = {}, {}, 0
    for line in path.read_text().splitlines():
        if line.startswith("ngram "):
            n, count = line[6:].split("=")
            header[int(n)] = int(count)
        elif line.endswith("-grams:"):
            order = int(line[1])
        elif order and line and not line.startswith("\\"):
            fields = line.split("\t")
            grams[tuple(fields[1].split())] = (float(fields[0]), float(fields[2]) if len(fields) > 2 else 0.0)
    return header, grams


def arpa_log10(grams: dict, word: str, context: tuple) -> float:
    if context + (word,) in grams:
        return grams[context + (word,)][0]
    return grams.get(context, (0.0, 0.0))[1] + arpa_log10(grams, word, context[1:])


def test_arpa_header_counts_and_backoff_reproduce_the_model(tmp_path):
    built = lm.build_language_model(CORPUS, tmp_path)
    header, grams = read_arpa(built.arpa_path)
    for n in (1, 2, 3):
        assert header[n] == sum(1 for g in grams if len(g) == n) == built.ngram_counts[n - 1]
    model = kn_model()
    for word, context in [("account", ("my", "savings")), ("checking", ("transfer", "money")),
                          ("weather", ("my", "savings")), ("balance", ("to",)), ("</s>", ("is", "the")),
                          ("transfer", ())]:
        assert math.isclose(arpa_log10(grams, word, context), math.log10(model.prob(word, context)), abs_tol=2e-5)
    assert "zyxwq" not in {g[0] for g in grams} and built.dropped_words == 1
    dictionary = built.dict_path.read_text().splitlines()
    assert "account AH K AW N T" in dictionary and not any(line.startswith("<s>") for line in dictionary)


def test_built_model_is_cached_by_input_and_identified_by_sha256(tmp_path):
    first = lm.build_language_model(CORPUS, tmp_path)
    again = lm.build_language_model(CORPUS, tmp_path)
    other = lm.build_language_model(CORPUS[:2], tmp_path)
    assert first == again and first.sha256 != other.sha256
    assert first.arpa_path.parent.name == first.sha256
    first.arpa_path.write_text("tampered")
    assert lm.build_language_model(CORPUS, tmp_path).sha256 == first.sha256  # rebuilt, not trusted
    with pytest.raises(ValueError, match="no training sentence"):
        lm.build_language_model(["zyxwq qqqzx"], tmp_path)


# --- audio ------------------------------------------------------------------------------------------------------


@needs_audio_tools
@pytest.mark.parametrize("suffix, channels, rate", [(".wav", 2, 44100), (".ogg", 2, 48000), (".mp3", 1, 22050),
                                                    (".m4a", 1, 8000)])
def test_each_container_converts_to_16k_mono(tmp_path, suffix, channels, rate):
    source = speak("what is my balance", tmp_path / "source.wav")
    clip = tmp_path / f"clip{suffix}"
    ffmpeg("-i", str(source), "-ac", str(channels), "-ar", str(rate), str(clip))
    pcm = load_pcm(clip)
    assert (pcm.source.channels, pcm.source.sample_rate) == (channels, rate)
    assert abs(pcm.duration_seconds - probe(source).duration_seconds) < 0.1
    assert len(pcm.data) % 2 == 0


@needs_audio_tools
def test_refusals_not_audio_empty_too_long_and_unsupported(tmp_path):
    cases = {}
    (tmp_path / "text.wav").write_text("this is not audio at all\n" * 20)
    cases["text.wav"] = "text.wav: not audio"
    (tmp_path / "empty.mp3").write_bytes(b"")
    cases["empty.mp3"] = "empty.mp3: empty file"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", str(tmp_path / "zero.wav"))
    cases["zero.wav"] = "zero.wav: empty audio"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=32x32:d=1", str(tmp_path / "video.m4a"))
    cases["video.m4a"] = "video.m4a: not audio (no audio stream)"
    (tmp_path / "notes.flac").write_bytes(b"fLaC")
    cases["notes.flac"] = "notes.flac: unsupported audio type .flac"
    cases["missing.wav"] = "missing.wav: no such file"
    for name, message in cases.items():
        with pytest.raises(AudioError) as caught:
            load_pcm(tmp_path / name)
        assert str(caught.value).startswith(message), str(caught.value)
    long_clip = speak("one two three four five", tmp_path / "long.wav")
    with pytest.raises(AudioError, match=r"^long.wav: audio lasts \d s, over the 1 s cap$"):
        load_pcm(long_clip, max_seconds=1.0)


# --- recognition --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def in_domain_lm(tmp_path_factory) -> lm.LanguageModel:
    if not CLINC150.exists():
        pytest.skip(f"CLINC150 is not at {CLINC150}")
    train = [text for text, _ in json.loads(CLINC150.read_text())["train"]]
    return lm.build_language_model(train[::4], tmp_path_factory.mktemp("lm"))


@needs_audio_tools
def test_in_domain_lm_recognises_speech_split_at_silence(tmp_path, in_domain_lm):
    first = speak("transfer one hundred dollars to my savings account", tmp_path / "a.wav")
    second = speak("what is the weather like today", tmp_path / "b.wav")
    ffmpeg("-i", str(first), "-i", str(second), "-filter_complex",
           "[0]apad=pad_dur=1.5[a];[a][1]concat=n=2:v=0:a=1", "-ar", "16000", str(tmp_path / "both.wav"))
    recognizer = Recognizer(in_domain_lm)
    utterances = recognizer.recognize(load_pcm(tmp_path / "both.wav").data)
    assert len(utterances) == 2
    (u1, u2) = utterances
    assert 0 <= u1.start < u1.end < u2.start < u2.end
    assert wer("transfer one hundred dollars to my savings account", u1.text) <= 0.25, u1.text
    assert wer("what is the weather like today", u2.text) <= 0.34, u2.text
    assert all(0.0 <= u.confidence <= 1.0 for u in utterances)
    # The mean word posterior: a sentence heard well is confident (the whole-hypothesis posterior was ~0 for any).
    assert u1.confidence > 0.5, u1.confidence
    assert u1.lm_sha256 == in_domain_lm.sha256 and len(u1.asr_model_sha256) == 64


@needs_audio_tools
def test_default_lm_is_identified_too(tmp_path):
    recognizer = Recognizer(None)
    assert len(recognizer.lm_sha256) == 64 and recognizer.asr_model_sha256 == Recognizer(None).asr_model_sha256
    assert recognizer.recognize(bytes(32000)) == []  # one second of silence: no utterance
