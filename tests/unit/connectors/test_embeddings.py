"""The ONNX all-MiniLM-L6-v2 loader against sentence-transformers' own vectors, and its unhappy paths."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from aios.connectors.errors import ConnectorError
from aios.connectors.vector.base import EmbeddingDependencyError, EmbeddingModelError
from aios.connectors.vector.onnx import OnnxEmbedder

MODEL_SUBDIR = "shared/models/all-MiniLM-L6-v2-onnx"


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    return next(p for p in here.parents if (p / "pyproject.toml").is_file())


@pytest.fixture(scope="session")
def model_dir() -> Path:
    path = _repo_root().parent / MODEL_SUBDIR
    if not (path / "model.onnx").is_file():
        pytest.fail(f"the embedding model folder {path} is missing (AIOS_EMBEDDING_MODEL_DIR points at it "
                    "in production); it should sit at ../shared/models/ next to the repository")
    return path


@pytest.fixture(scope="session")
def embedder(model_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(model_dir)


def test_vectors_match_the_sentence_transformers_reference(embedder: OnnxEmbedder, model_dir: Path) -> None:
    reference = json.loads((model_dir / "reference_embeddings.json").read_text())
    assert reference["pooling"] == "mean" and reference["normalized"] is True
    expected = np.asarray(reference["embeddings"], dtype=np.float32)

    got = embedder.embed(reference["sentences"])

    assert got.shape == expected.shape == (5, 384)
    cosines = (got * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    max_abs = float(np.abs(got - expected).max())
    measured = f"cosines={np.round(cosines, 7).tolist()} max_abs_diff={max_abs:.2e}"
    assert cosines.min() >= 0.999, measured
    assert max_abs < 1e-4, measured  # the reference is rounded to 6 decimals


def test_vectors_are_unit_float32_and_independent_of_batching(embedder: OnnxEmbedder) -> None:
    texts = ["short", "a somewhat longer sentence that forces padding of the short one", "", "mid length text"]
    batched = embedder.embed(texts)
    single = np.stack([embedder.embed_one(t) for t in texts])
    small_batches = OnnxEmbedder(embedder.model_dir, batch_size=1).embed(texts)

    assert batched.dtype == np.float32 and batched.shape == (4, embedder.dimension)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, single, atol=1e-5)  # padding must not leak into the mean
    np.testing.assert_allclose(batched, small_batches, atol=1e-5)


def test_long_text_is_truncated_not_rejected(embedder: OnnxEmbedder) -> None:
    assert embedder.max_length == 256
    words = "the orchestrator assigns tasks to specialist agents " * 400
    vector = embedder.embed([words])
    assert vector.shape == (1, 384)
    assert np.isfinite(vector).all()


def test_empty_input_is_an_empty_matrix(embedder: OnnxEmbedder) -> None:
    empty = embedder.embed([])
    assert empty.shape == (0, 384)
    assert empty.dtype == np.float32
    assert embedder.dimension == 384


def test_a_bare_string_is_refused(embedder: OnnxEmbedder) -> None:
    with pytest.raises(TypeError, match="sequence of texts"):
        embedder.embed("not a list")


def test_a_missing_folder_names_the_folder_and_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(EmbeddingModelError, match="AIOS_EMBEDDING_MODEL_DIR") as info:
        OnnxEmbedder(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, ConnectorError)


def test_an_incomplete_folder_lists_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EmbeddingModelError, match=r"missing model\.onnx, tokenizer\.json.*AIOS_EMBEDDING_MODEL_DIR"):
        OnnxEmbedder(tmp_path)


def test_a_corrupt_model_file_is_a_clear_error(tmp_path: Path, model_dir: Path) -> None:
    shutil.copy(model_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "model.onnx").write_bytes(b"this is not an onnx graph")
    with pytest.raises(EmbeddingModelError, match=r"model\.onnx does not load.*AIOS_EMBEDDING_MODEL_DIR"):
        OnnxEmbedder(tmp_path)


def test_a_corrupt_tokenizer_is_a_clear_error(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json")
    (tmp_path / "model.onnx").symlink_to(model_dir / "model.onnx")
    with pytest.raises(EmbeddingModelError, match=r"tokenizer\.json does not load"):
        OnnxEmbedder(tmp_path)


@pytest.mark.parametrize("module", ["onnxruntime", "tokenizers"])
def test_a_missing_backend_names_the_extra(module: str, monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(EmbeddingDependencyError, match=r"pip install 'aios\[vector\]'") as info:
        OnnxEmbedder(model_dir)
    assert module in str(info.value)


def test_bad_arguments_are_refused(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        OnnxEmbedder(model_dir, batch_size=0)
    with pytest.raises(ValueError, match="max_length"):
        OnnxEmbedder(model_dir, max_length=1)
