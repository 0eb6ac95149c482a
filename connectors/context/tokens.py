"""Token counting for context budgets, with the MiniLM tokenizer from the embedding model folder.

tiktoken would be the obvious choice, but it downloads its BPE files at run time and AIOS must
run offline; the WordPiece tokenizer already shipped with the embedding model needs no network.
Counts are an estimate of an LLM's tokens, not its exact billing count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aios.connectors.errors import ConnectorError

WHITESPACE_LABEL = "whitespace (fallback: no tokenizer.json in the model folder)"


_CACHE_ENTRIES = 8192


class TokenCounter:
    """Counts tokens of texts; build with :meth:`from_model_dir`."""

    def __init__(self, tokenizer: Any | None, *, label: str) -> None:
        self._tokenizer = tokenizer
        self.label = label  # names what counts: the tokenizer file, or the labelled fallback
        # Prompts re-count the same recent turns for every task of a project; tokenizing them
        # again was most of the agent's CPU. Bounded: cleared when full.
        self._cache: dict[str, int] = {}

    @classmethod
    def from_model_dir(cls, model_dir: Path | str) -> TokenCounter:
        """The model folder's ``tokenizer.json``; a whitespace count only when the folder has none."""
        path = Path(model_dir).expanduser() / "tokenizer.json"
        if not path.is_file():
            return cls(None, label=WHITESPACE_LABEL)
        try:
            import tokenizers
        except ImportError as exc:
            raise ConnectorError("token counting needs tokenizers: pip install 'aios[vector]'") from exc
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for unparsable files
            raise ConnectorError(f"{path} does not load as a tokenizer ({exc}); set AIOS_EMBEDDING_MODEL_DIR") from exc
        # The file ships with 128-token truncation and padding for the encoder: a count needs neither.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return cls(tokenizer, label=str(path))

    @property
    def is_fallback(self) -> bool:
        return self._tokenizer is None

    def count(self, text: str) -> int:
        """Tokens in ``text`` (no special tokens)."""
        if not text:
            return 0
        if self._tokenizer is None:
            return len(text.split())
        cached = self._cache.get(text)
        if cached is None:
            cached = len(self._tokenizer.encode(text, add_special_tokens=False).ids)
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.clear()
            self._cache[text] = cached
        return cached

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, in one batched call."""
        if self._tokenizer is None:
            return [len(t.split()) for t in texts]
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def truncate(self, text: str, budget: int) -> str:
        """The longest prefix of ``text`` with at most ``budget`` tokens, cut at a token boundary."""
        if budget <= 0:
            return ""
        if self._tokenizer is None:
            words = text.split()
            return text if len(words) <= budget else " ".join(words[:budget])
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        if len(encoding.ids) <= budget:
            return text
        end = encoding.offsets[budget - 1][1]
        return text[:end]
