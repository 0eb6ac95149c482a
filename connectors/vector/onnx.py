"""Local sentence embeddings: an ONNX export of all-MiniLM-L6-v2 run with onnxruntime.

The model folder is a setting (``AIOS_EMBEDDING_MODEL_DIR``); nothing is downloaded at run time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aios.connectors.vector.base import (
    EXTRA_HINT,
    EmbeddingDependencyError,
    EmbeddingError,
    EmbeddingModelError,
    embedding_output,
    unit_rows,
)

SETTING = "AIOS_EMBEDDING_MODEL_DIR"
_REQUIRED_FILES = ("model.onnx", "tokenizer.json")


def _import_backends() -> tuple[Any, Any]:
    try:
        import onnxruntime
        import tokenizers
    except ImportError as exc:
        raise EmbeddingDependencyError(
            f"local embeddings need onnxruntime and tokenizers ({exc.name} is missing): {EXTRA_HINT}"
        ) from exc
    return onnxruntime, tokenizers


def _model_error(model_dir: Path, problem: str) -> EmbeddingModelError:
    return EmbeddingModelError(
        f"embedding model folder {model_dir}: {problem}. Set {SETTING} to a folder holding an ONNX "
        "export of all-MiniLM-L6-v2 (model.onnx, tokenizer.json, config.json)"
    )


class OnnxEmbedder:
    """Mean-pooled, L2-normalised sentence vectors from a BERT-style ONNX encoder.

    Thread-safe for concurrent ``embed`` calls (onnxruntime sessions are; the tokenizer is only
    read). Inputs are sorted by length before batching so padding stays short.
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        batch_size: int = 32,
        max_length: int = 256,
        intra_op_threads: int = 2,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_length < 2:
            raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {max_length}")
        ort, tokenizers = _import_backends()
        self.model_dir = Path(model_dir).expanduser()
        self.batch_size = batch_size
        if not self.model_dir.is_dir():
            raise _model_error(self.model_dir, "not a directory")
        missing = [name for name in _REQUIRED_FILES if not (self.model_dir / name).is_file()]
        if missing:
            raise _model_error(self.model_dir, f"missing {', '.join(missing)}")

        config = self._read_config()
        model_max = int(config.get("max_position_embeddings", max_length))
        self.max_length = min(max_length, model_max)

        try:
            self._tokenizer = tokenizers.Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises a bare Exception for unparsable files
            raise _model_error(self.model_dir, f"tokenizer.json does not load ({exc})") from exc
        pad_id = int(config.get("pad_token_id", 0))
        pad_token = self._tokenizer.id_to_token(pad_id) or "[PAD]"
        # tokenizer.json ships with fixed 128-token padding and truncation; sentence-transformers
        # truncates at 256 and pads only to the longest text of a batch.
        self._tokenizer.enable_truncation(max_length=self.max_length)
        self._tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, intra_op_threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: the export's initializer notices are noise
        try:
            self._session = ort.InferenceSession(
                str(self.model_dir / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's pybind errors share no public base class
            raise _model_error(self.model_dir, f"model.onnx does not load ({exc})") from exc

        inputs = {i.name for i in self._session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= inputs:
            raise _model_error(self.model_dir, f"model.onnx inputs are {sorted(inputs)}, not a BERT encoder")
        self._input_names = inputs
        outputs = self._session.get_outputs()
        self._output_name: str = outputs[0].name  # last_hidden_state [batch, seq, dim]
        self._dimension = self._output_dimension(outputs[0].shape, config)

    def _read_config(self) -> dict[str, Any]:
        path = self.model_dir / "config.json"
        if not path.is_file():
            return {}
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _model_error(self.model_dir, f"config.json is unreadable ({exc})") from exc
        return loaded if isinstance(loaded, dict) else {}

    def _output_dimension(self, shape: Sequence[object], config: dict[str, Any]) -> int:
        last = shape[-1] if shape else None
        if isinstance(last, int) and last > 0:
            return last
        hidden = config.get("hidden_size")
        if isinstance(hidden, int) and hidden > 0:
            return hidden
        raise _model_error(self.model_dir, "cannot tell the embedding size (no static output dim, no hidden_size)")

    @property
    def dimension(self) -> int:
        """Length of every vector this model returns (384 for all-MiniLM-L6-v2)."""
        return self._dimension

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed ``texts`` into an ``(n, dimension)`` float32 array of unit vectors, in input order."""
        out = embedding_output(texts, self._dimension)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self._embed_batch([texts[i] for i in chunk])
        return out

    def embed_one(self, text: str) -> NDArray[np.float32]:
        """The ``(dimension,)`` vector of one text."""
        vector: NDArray[np.float32] = self.embed([text])[0]
        return vector

    def _embed_batch(self, texts: list[str]) -> NDArray[np.float32]:
        encodings = self._tokenizer.encode_batch(texts)
        input_ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        feeds: dict[str, NDArray[np.int64]] = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.asarray([e.type_ids for e in encodings], dtype=np.int64)
        try:
            hidden = self._session.run([self._output_name], feeds)[0]
        except Exception as exc:  # onnxruntime's pybind errors share no public base class
            raise EmbeddingError(f"onnxruntime failed on a batch of {len(texts)} texts: {exc}") from exc
        states: NDArray[np.float32] = np.asarray(hidden, dtype=np.float32)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return unit_rows(pooled)
