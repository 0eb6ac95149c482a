"""Provider embeddings through the real openai SDK against the local wire-format fake server."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from pydantic import SecretStr

from aios.agents.llm.servers.openai import FakeOpenAI, fake_embedding, status
from aios.connectors.vector.base import EmbeddingError
from aios.connectors.vector.openai import OpenAIEmbedder
from aios.schemas.errors import ConfigError
from aios.streams.engine.runtime import open_embedder
from aios.streams.settings import load_settings


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def embedder(fake: FakeOpenAI) -> Iterator[OpenAIEmbedder]:
    made = OpenAIEmbedder("text-embedding-3-small", api_key="sk-test", base_url=fake.base_url, batch_size=2,
                          max_retries=0)
    yield made
    made.close()


def test_vectors_are_unit_length_in_input_order_and_batched(fake: FakeOpenAI, embedder: OpenAIEmbedder) -> None:
    texts = ["alpha", "beta", "gamma", "delta", "alpha"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = np.asarray(fake_embedding("gamma", 384), dtype=np.float32)
    assert np.allclose(vectors[2], expected / np.linalg.norm(expected), atol=1e-5)
    assert np.allclose(vectors[0], vectors[4])
    bodies = [r.body for r in fake.requests]
    assert [b["input"] for b in bodies] == [["alpha", "beta"], ["gamma", "delta"], ["alpha"]]
    assert {b["model"] for b in bodies} == {"text-embedding-3-small"} and {b["dimensions"] for b in bodies} == {384}
    assert embedder.embed([]).shape == (0, 384)


def test_a_rejected_key_says_what_to_set(fake: FakeOpenAI, embedder: OpenAIEmbedder) -> None:
    fake.script(status(401))
    with pytest.raises(EmbeddingError, match="AIOS_OPENAI_API_KEY.*AIOS_EMBEDDINGS=local"):
        embedder.embed(["x"])


def test_a_server_error_is_an_embedding_error(fake: FakeOpenAI, embedder: OpenAIEmbedder) -> None:
    fake.script(status(500))
    with pytest.raises(EmbeddingError, match="text-embedding-3-small failed"):
        embedder.embed(["x"])


def test_a_single_string_is_refused(embedder: OpenAIEmbedder) -> None:
    with pytest.raises(TypeError, match="wrap a single text"):
        embedder.embed("x")  # type: ignore[arg-type]


def test_settings_choose_the_embedder_and_say_what_is_missing(fake: FakeOpenAI) -> None:
    with pytest.raises(ConfigError, match="AIOS_EMBEDDINGS='cohere:embed': use 'local' or 'openai:<model>'"):
        load_settings(embeddings="cohere:embed")
    keyless = load_settings(embeddings="openai:text-embedding-3-small").replace(openai_api_key=None)
    with pytest.raises(ConfigError, match="needs AIOS_OPENAI_API_KEY"):
        open_embedder(keyless)
    chosen = open_embedder(keyless.replace(openai_api_key=SecretStr("sk-test"),
                                                     openai_base_url=fake.base_url, embedding_dimension=64))
    assert isinstance(chosen, OpenAIEmbedder) and chosen.dimension == 64
    assert chosen.embed(["one"]).shape == (1, 64)
    chosen.close()
