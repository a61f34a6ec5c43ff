"""The intent engine's contracts on a small CLINC150 subset with the real (1-layer) MiniLM: seconds, not minutes."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from astra.core.intent import store
from astra.core.intent.data import DEFAULT_DATASET, OOS, DataError, Example, evaluation_examples, read_domains
from astra.core.intent.encoder import Encoder, packaged_minilm
from astra.core.intent.finetune import TorchEncoder, export, fine_tune
from astra.core.intent.metrics import choose_threshold, score
from astra.core.intent.model import ARTIFACT_FILES, IntentModel, PackedTexts, Prediction, _version
from astra.core.intent.store import ModelIntegrityError
from tests.conftest import run_cli

INTENTS = ("translate", "transfer", "book_flight", "weather", "alarm", "pay_bill")


def _subset(split: str, oos_split: str, per_intent: int, oos: int) -> list[list[str]]:
    data = json.loads(DEFAULT_DATASET.read_text())
    rows = [r for intent in INTENTS for r in [r for r in data[split] if r[1] == intent][:per_intent]]
    return rows + data[oos_split][:oos]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A CLINC150-layout file: 6 intents, 15 training rows each, 30 oos; 5 val rows each, 10 oos."""
    path = tmp_path_factory.mktemp("data") / "small.json"
    path.write_text(json.dumps({
        "train": _subset("train", "oos_train", 15, 0)[: 6 * 15], "oos_train": _subset("train", "oos_train", 0, 30),
        "val": _subset("val", "oos_val", 5, 0)[: 6 * 5], "oos_val": _subset("val", "oos_val", 0, 10),
    }))
    return path


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """The packaged MiniLM cut to one layer, exported as served (int8 ONNX): real weights, a fraction of the cost."""
    path = tmp_path_factory.mktemp("enc") / "base-encoder"
    export(TorchEncoder.load(packaged_minilm(), layers=1), path)
    return path


@pytest.fixture(scope="module")
def model(small_data, encoder_dir):
    data = json.loads(small_data.read_text())
    train = [Example(t, i) for t, i in data["train"]] + [Example(t, OOS) for t, _ in data["oos_train"]]
    return IntentModel.train(train, Encoder.load(encoder_dir), calibration=evaluation_examples(small_data))


def test_predictions_carry_intent_domain_confidence_oos_and_version(model):
    texts = ["how do i say thank you in french", "what is the capital of mongolia's neighbour's moon"]
    predictions = model.classify(texts)
    assert all(isinstance(p, Prediction) for p in predictions) and len(predictions) == 2
    first = predictions[0]
    assert first.intent == "translate" and first.domain == read_domains()["translate"] == "travel"
    assert not first.oos and 0 < first.confidence <= 1 and first.top_intent == "translate"
    assert all(p.model_version == model.version and len(model.version) == 16 for p in predictions)
    for p in predictions:
        assert p.oos == (p.intent == OOS) and (p.domain is None) == p.oos
    assert set(model.metrics) == {"in_scope_accuracy", "oos_recall", "oos_precision", "n"}


def test_threshold_marks_low_confidence_out_of_scope(model):
    strict = IntentModel(model.encoder, model.head, 1.01, model.domains, model.training)
    assert all(p.oos and p.intent == OOS for p in strict.classify(["how do i say thank you in french"]))


def test_save_load_round_trip_gives_identical_predictions(model, tmp_path, val_texts):
    saved = model.save(tmp_path / "m")
    assert saved["manifest_sha256"] == hashlib.sha256((tmp_path / "m" / "manifest.json").read_bytes()).hexdigest()
    for name, digest in saved["files"].items():
        assert hashlib.sha256((tmp_path / "m" / name).read_bytes()).hexdigest() == digest
    loaded = IntentModel.load(tmp_path / "m")
    assert loaded.version == model.version
    assert loaded.classify(val_texts) == model.classify(val_texts)
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["metrics"] == model.metrics and manifest["version"] == model.version
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "m")


@pytest.fixture
def val_texts(small_data):
    return [e.text for e in evaluation_examples(small_data)]


@pytest.mark.parametrize("damage", ["flip_head_byte", "flip_encoder_byte", "drop_file", "edit_manifest_version"])
def test_load_refuses_a_tampered_artifact(model, tmp_path, damage):
    model.save(tmp_path / "m")
    root = tmp_path / "m"
    if damage == "flip_head_byte":
        target = root / "arrays" / "dense.npy"
        data = bytearray(target.read_bytes())
        data[-1] ^= 1
        target.write_bytes(bytes(data))
    elif damage == "flip_encoder_byte":
        target = root / "encoder" / "encoder.json"
        target.write_text(target.read_text().replace("}", " }", 1))
    elif damage == "drop_file":
        (root / "head.json").unlink()
    else:
        manifest = json.loads((root / "manifest.json").read_text())
        manifest["version"] = "0" * 16
        (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError):
        IntentModel.load(root)


def _relisted(root, manifest: dict) -> None:
    """Write ``manifest`` with the version recomputed from the files it lists: consistent, so only the file-set
    check can refuse it."""
    payload = {n: d for n, d in manifest["files"].items() if not n.startswith("encoder/")}
    manifest["version"] = _version(payload, manifest["encoder_sha256"])
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_load_reads_no_file_its_manifest_does_not_list(model, tmp_path):
    """head.json unlisted and edited (another threshold): the version still matches the listed files, but load
    would read an unverified file; it is refused, as is a manifest listing a file load never reads."""
    root = tmp_path / "m"
    model.save(root)
    original = json.loads((root / "manifest.json").read_text())
    head_bytes = (root / "head.json").read_bytes()
    (root / "head.json").write_text(json.dumps({**json.loads(head_bytes), "threshold": 0.99}))
    manifest = json.loads(json.dumps(original))
    del manifest["files"]["head.json"]
    _relisted(root, manifest)
    with pytest.raises(ModelIntegrityError, match="not listed: 'head.json'"):
        IntentModel.load(root)
    (root / "head.json").write_bytes(head_bytes)
    (root / "extra.json").write_text("{}")
    manifest = json.loads(json.dumps(original))
    manifest["files"]["extra.json"] = hashlib.sha256(b"{}").hexdigest()
    _relisted(root, manifest)
    with pytest.raises(ModelIntegrityError, match="unknown: 'extra.json'"):
        IntentModel.load(root)
    (root / "manifest.json").write_text(json.dumps(original))
    assert IntentModel.load(root).threshold == model.threshold  # a stray file nobody lists is not read
    assert set(original["files"]) == ARTIFACT_FILES


def test_a_loaded_model_maps_its_training_set_and_still_updates(model, tmp_path):
    """Serving does not hold the training set (it only serves update): its arrays are memory-mapped, its texts
    decoded when asked; an update of the loaded model is the update of the model it was saved from."""
    model.save(tmp_path / "m")
    loaded = IntentModel.load(tmp_path / "m")
    assert all(isinstance(a, np.memmap) for a in (loaded.training.embeddings, loaded.training.weights))
    assert isinstance(loaded.training.texts, PackedTexts) and isinstance(loaded.training.texts.utf8, np.memmap)
    assert list(loaded.training.texts) == list(model.training.texts)
    assert list(loaded.training.labels) == list(model.training.labels)
    corrections = [Example("ring me at six tomorrow", "alarm"), Example(model.training.texts[3], "weather")]
    assert loaded.update(corrections).version == model.update(corrections).version
    target = tmp_path / "m" / "arrays" / "embeddings.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="embeddings.npy changed"):
        loaded.update(corrections)
    target.unlink()
    with pytest.raises(ModelIntegrityError, match="embeddings.npy cannot be read"):
        loaded.update(corrections)


def test_packed_texts_keep_any_unicode_text():
    texts = ["é à ü", "emoji 🎉 ok", "x", "日本語のテキスト"]
    packed = PackedTexts.pack(texts)
    assert list(packed) == texts and len(packed) == 4 and packed[-1] == texts[-1]
    with pytest.raises(IndexError):
        packed[4]


def test_update_learns_a_new_intent_and_keeps_every_old_one(model):
    new = [Example(t, "track_parcel", "logistics") for t in (
        "where is my parcel right now", "track my package from the courier", "has my parcel shipped yet",
        "when will the courier deliver my package", "give me the tracking status of my parcel")]
    updated = model.update(new)
    assert set(model.head.labels) < set(updated.head.labels) and "track_parcel" in updated.head.labels
    assert updated.head.labels[: len(model.head.labels)] == model.head.labels
    assert updated.version != model.version
    answer = updated.classify(["where is my parcel right now"])[0]
    assert answer.intent == "track_parcel" and answer.domain == "logistics" and answer.model_version == updated.version
    assert model.classify(["where is my parcel right now"])[0].intent != "track_parcel"  # the old model is untouched
    still = updated.classify(["how do i say thank you in french", "set an alarm for 7 am"])
    assert [p.intent for p in still] == ["translate", "alarm"]


def test_a_correction_replaces_the_training_row_with_the_same_text(model):
    text = model.training.texts[0]
    wrong_before = model.training.labels[0]
    updated = model.update([Example(text.upper(), "weather" if wrong_before != "weather" else "alarm")])
    assert sum(t.lower() == text.lower() for t in updated.training.texts) == 1
    assert len(updated.training.texts) == len(model.training.texts)
    assert set(updated.head.labels) == set(model.head.labels)


def test_score_follows_clinc150_definitions():
    figures = score(["a", OOS, "b", OOS, "c"], ["a", "a", "b", OOS, OOS])
    assert figures == {"in_scope_accuracy": round(2 / 3, 4), "oos_recall": 0.5, "oos_precision": 0.5, "n": 5}
    assert score(["a"], ["a"])["oos_recall"] is None


def test_threshold_is_chosen_to_reach_oos_recall():
    probs = np.array([0.9, 0.8, 0.3, 0.35, 0.2])
    labels = ["a", "b", "a", "b", "a"]
    expected = ["a", "b", OOS, OOS, OOS]
    threshold = choose_threshold(probs, labels, expected)
    assert 0.35 < threshold <= 0.8


def test_bad_rows_are_data_errors(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"val": [["ok", "x"], ["no intent"]]}))
    with pytest.raises(DataError, match=r"val\[1\]"):
        evaluation_examples(tmp_path / "bad.json")
    (tmp_path / "none.json").write_text(json.dumps({"train": []}))
    with pytest.raises(DataError, match="no val/oos_val or test/oos_test"):
        evaluation_examples(tmp_path / "none.json")
    (tmp_path / "empty.json").write_text(json.dumps({"val": [], "oos_val": [["what is love", "oos"]]}))
    with pytest.raises(DataError, match="split 'val' is empty"):
        evaluation_examples(tmp_path / "empty.json")
    (tmp_path / "surrogate.json").write_text('{"val": [["half an emoji \\ud83c", "x"]]}')
    with pytest.raises(DataError, match=r"val\[0\] holds a lone surrogate"):
        evaluation_examples(tmp_path / "surrogate.json")


# ---- the CLI ----------------------------------------------------------------------------------------------------


def test_cli_train_then_eval_prints_one_json_object(small_data, encoder_dir, tmp_path):
    env = {"ASTRA_STATE_DIR": str(tmp_path / "state")}
    trained = run_cli("core", "train", "--tenant", "acme", "--data", str(small_data), "--base", str(encoder_dir),
                      "--json", env=env)
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout)
    assert (tmp_path / "state" / "models" / "acme" / store.LATEST).read_text().strip() == result["version"]
    evaluated = run_cli("core", "eval", str(small_data), "--json", "--model",
                        str(tmp_path / "state" / "models" / "acme"), env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    lines = evaluated.stdout.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert set(figures) == {"in_scope_accuracy", "oos_recall", "oos_precision", "n", "p50_ms", "p99_ms",
                            "model_version"}
    assert figures["n"] == 40 and figures["model_version"] == result["version"]
    assert 0 <= figures["in_scope_accuracy"] <= 1 and 0 < figures["p50_ms"] <= figures["p99_ms"]


@pytest.mark.parametrize("content", ["{not json", json.dumps({"train": []}), json.dumps({"val": [["a"]]}),
                                     json.dumps({"val": []}), "[" * 100_000, "1" * 5_000])
def test_cli_eval_bad_file_is_exit_2_and_one_line(tmp_path, content, model):
    model.save(tmp_path / "m")
    (tmp_path / "bad.json").write_text(content)
    res = run_cli("core", "eval", str(tmp_path / "bad.json"), "--json", "--model", str(tmp_path / "m"))
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.json" in lines[0]


def test_cli_eval_refuses_a_tampered_model_with_exit_2(tmp_path, small_data, model):
    model.save(tmp_path / "m")
    shutil.copyfile(tmp_path / "m" / "arrays" / "mean.npy", tmp_path / "m" / "arrays" / "scale.npy")
    res = run_cli("core", "eval", str(small_data), "--json", "--model", str(tmp_path / "m"))
    assert res.returncode == 2 and "sha256" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_fine_tune_builds_a_truncated_encoder_served_as_onnx(tmp_path):
    texts = ["wake me at six", "set an alarm for noon", "what's the weather", "is it raining today"] * 4
    labels = ["alarm", "alarm", "weather", "weather"] * 4
    tuned = fine_tune(texts, labels, layers=1, epochs=1, batch_size=4)
    assert len(tuned.model.encoder.layer) == 1
    assert all(not w.requires_grad for w in tuned.model.embeddings.parameters())
    with torch.no_grad():
        expected = tuned.embed(texts[:4]).numpy()
        before = TorchEncoder.load(packaged_minilm(), layers=1).embed(texts[:4]).numpy()
    exact = export(tuned, tmp_path / "fp32", quantize=False)
    assert np.allclose(exact.encode(texts[:4]), expected, atol=1e-4)  # same graph, padding masked in a batch
    served = export(tuned, tmp_path / "int8")
    assert json.loads((tmp_path / "int8" / "encoder.json").read_text())["weights"] == "int8"
    assert sorted(p.name for p in (tmp_path / "int8").iterdir()) == ["encoder.json", "model.onnx", "tokenizer.json"]
    assert (tmp_path / "int8" / "model.onnx").stat().st_size < (tmp_path / "fp32" / "model.onnx").stat().st_size / 3
    assert np.all(_cosine(served.encode(texts[:4]), expected) > 0.95)
    assert not np.allclose(expected, before, atol=1e-3)  # the weights did move
    assert Encoder.load(tmp_path / "int8").sha256 == served.sha256
    with pytest.raises(FileExistsError):
        export(tuned, tmp_path / "int8")


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_a_text_encodes_the_same_alone_or_among_others(encoder_dir):
    """int8 activations are quantized over the whole input: a text is encoded alone, so training and serving (any
    request size) see the same embedding."""
    encoder = Encoder.load(encoder_dir)
    texts = ["hi", "please transfer one hundred dollars from checking to my savings account today"]
    assert np.array_equal(encoder.encode(texts[:1]), encoder.encode(texts)[:1])
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_ngram_vectors_are_scikit_learns_tfidf(model):
    from sklearn.feature_extraction.text import TfidfVectorizer

    ngrams = model.head.ngrams
    reference = TfidfVectorizer(analyzer=ngrams.analyze, sublinear_tf=True, min_df=2).fit(model.training.texts)
    texts = ["How do I say thank you in French", "set an alarm alarm alarm for 7 am", "zzzz", ""]
    assert reference.vocabulary_ == ngrams.vocabulary
    matrix = ngrams.transform(texts).toarray()
    assert np.allclose(matrix, reference.transform(texts).toarray(), atol=1e-6)
    for text, row in zip(texts, matrix, strict=True):  # serving's per-utterance vector is training's row
        columns, values = ngrams.vector(text)
        served = np.zeros(ngrams.size, np.float32)
        served[columns] = values
        assert np.allclose(served, row, atol=1e-6)


def test_training_on_a_base_model_reuses_its_embeddings(model, monkeypatch):
    seen: list[str] = []
    original = Encoder.encode

    def counting(self, texts, progress=None):
        seen.extend(texts)
        return original(self, texts, progress)

    monkeypatch.setattr(Encoder, "encode", counting)
    tenant_rows = [Example(t, i) for t, i in zip(model.training.texts, model.training.labels, strict=True)]
    tenant = IntentModel.train([*tenant_rows, Example("ring the bell at dawn", "alarm")], model, tenant="acme")
    assert seen == ["ring the bell at dawn"]
    assert tenant.threshold == model.threshold and tenant.tenant == "acme"


@pytest.mark.parametrize(("content", "message"), [
    (json.dumps({"train": [["text only"]], "oos_train": []}), "train[0] is not [text, intent]"),
    (json.dumps({"train": [], "oos_train": [["hi", "oos"]]}), "split 'train' is empty"),
    (json.dumps({"train": [["hi", "greet"]], "val": []}), "split 'val' is empty"),
    ("[" * 100_000, "nested too deeply"),
])
def test_cli_train_bad_data_is_exit_2_and_one_line_before_any_model_work(tmp_path, content, message):
    """Refused before the base encoder is looked at: none exists here, so going further would start fine-tuning."""
    (tmp_path / "bad.json").write_text(content)
    res = run_cli("core", "train", "--data", str(tmp_path / "bad.json"), "--base", str(tmp_path / "no-encoder"),
                  env={"ASTRA_STATE_DIR": str(tmp_path)})
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "models").exists() and not (tmp_path / "no-encoder").exists()


@pytest.mark.parametrize("tenant", ["../../etc", "Acme", "acme/x"])
def test_cli_train_refuses_a_tenant_that_is_not_a_slug(tmp_path, tenant):
    res = run_cli("core", "train", "--tenant", tenant, "--data", str(tmp_path / "unused.json"),
                  "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "invalid tenant" in res.stderr
    assert not (tmp_path / "out").exists()
