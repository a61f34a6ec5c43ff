"""Serving an intent model needs numpy, onnxruntime and tokenizers only: no torch, transformers, scikit-learn, scipy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from astra.core.intent.encoder import THREADS_ENV, Encoder
from astra.core.intent.model import IntentModel
from astra.core.intent.store import ModelIntegrityError
from tests.conftest import ROOT
from tests.core.test_model_store import tiny_encoder, tiny_models  # noqa: F401 — fixtures

TRAINING_ONLY = ("torch", "transformers", "sklearn", "scipy")
SERVE = """
import json, sys
import astra.core.service
from astra.core.intent.model import IntentModel
model = IntentModel.load(sys.argv[1])
answer = model.classify(["translate hello into french", "what is the weather"])
print(json.dumps({"intents": [p.intent for p in answer], "version": model.version,
                  "threads": model.encoder.session.get_session_options().intra_op_num_threads,
                  "loaded": [name for name in sys.argv[2:] if name in sys.modules]}))
"""


def test_loading_and_classifying_import_no_training_library(tiny_models):  # noqa: F811
    directory, model = tiny_models[0]
    done = subprocess.run([sys.executable, "-c", SERVE, str(directory), *TRAINING_ONLY], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["loaded"] == []
    assert result["version"] == model.version and result["threads"] == 1
    assert result["intents"] == [p.intent for p in model.classify(["translate hello into french",
                                                                   "what is the weather"])]


def test_the_artifact_holds_the_served_encoder_and_no_torch_weights(tiny_models):  # noqa: F811
    directory, _ = tiny_models[0]
    manifest = json.loads((directory / "manifest.json").read_text())
    assert sorted(n for n in manifest["files"] if n.startswith("encoder/")) == \
        ["encoder/encoder.json", "encoder/model.onnx", "encoder/tokenizer.json"]
    assert json.loads((directory / "encoder" / "encoder.json").read_text())["weights"] == "int8"


def test_threads_default_to_one_and_are_configurable(tiny_encoder, monkeypatch):  # noqa: F811
    def intra_op(encoder: Encoder) -> int:
        return encoder.session.get_session_options().intra_op_num_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert intra_op(Encoder.load(tiny_encoder.path)) == 1
    assert intra_op(Encoder.load(tiny_encoder.path, threads=2)) == 2
    monkeypatch.setenv(THREADS_ENV, "2")
    assert intra_op(Encoder.load(tiny_encoder.path)) == 2
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(ValueError, match=THREADS_ENV):
        Encoder.load(tiny_encoder.path)


def test_models_on_one_encoder_share_it_per_thread_count(tiny_models):  # noqa: F811
    (dir_a, _), (dir_b, _) = tiny_models[0], tiny_models[1]
    a, b = IntentModel.load(dir_a, threads=1), IntentModel.load(dir_b, threads=1)
    assert a.encoder is b.encoder
    assert IntentModel.load(dir_a, threads=2).encoder is not a.encoder


def test_a_graph_that_onnx_runtime_cannot_load_is_an_integrity_error(tiny_encoder, tmp_path):  # noqa: F811
    broken = tmp_path / "encoder"
    shutil.copytree(tiny_encoder.path, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(ModelIntegrityError, match="cannot be loaded"):
        Encoder.load(broken)
    (broken / "model.onnx").unlink()
    with pytest.raises(ModelIntegrityError, match="model.onnx"):
        Encoder.load(broken)
