"""Vector memory on qdrant-client local mode (on disk) with the real MiniLM embedder."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aios.connectors.errors import ConnectorError, StoreQueryError, StoreUnavailableError
from aios.connectors.vector.base import MemoryItem, collection_name, point_id
from aios.connectors.vector.onnx import OnnxEmbedder
from aios.connectors.vector.qdrant import VectorMemory

pytestmark = pytest.mark.integration

RELEVANT = "The Kafka consumer group kept rebalancing, so the worker stalled and stopped processing tasks."
PARAPHRASE = "why does my stream worker freeze while its consumers keep getting reassigned partitions?"

DISTRACTORS = [
    # cooking
    "Knead the sourdough for ten minutes and let it rise overnight in the fridge.",
    "A good risotto needs warm stock added one ladle at a time.",
    "Caramelise the onions slowly over low heat for a sweeter soup.",
    "Marinate the chicken in yoghurt, garlic and cumin before grilling.",
    "Fresh basil, pine nuts and parmesan make a classic pesto.",
    "Let the steak rest for five minutes before slicing it.",
    "Whisk the egg whites until they form stiff peaks for the meringue.",
    # sports
    "The striker scored twice in the second half to win the derby.",
    "She finished the marathon in under three hours on a hot day.",
    "The tennis final went to a fifth-set tie-break.",
    "Our basketball team lost by a single point at the buzzer.",
    "The cyclist attacked on the last mountain climb of the stage.",
    "The cricket match was abandoned because of heavy rain.",
    "He swims forty lengths of the pool every morning before work.",
    # astronomy
    "Jupiter's great red spot is a storm larger than the Earth.",
    "A total solar eclipse will cross the country next spring.",
    "The telescope captured a spiral galaxy millions of light years away.",
    "Saturn's rings are made mostly of ice particles and rock.",
    "The comet's tail always points away from the Sun.",
    "Astronomers found an exoplanet in the habitable zone of a red dwarf.",
    "The Perseid meteor shower peaks in the middle of August.",
    # gardening
    "Prune the roses in late winter before new growth starts.",
    "Tomatoes need plenty of sun and regular deep watering.",
    "Compost kitchen scraps to enrich the vegetable beds.",
    "Plant tulip bulbs in autumn, about fifteen centimetres deep.",
    "Slugs have eaten all the lettuce seedlings again.",
    "Mulch around the shrubs keeps the soil moist in summer.",
    "The apple tree needs a pollination partner to bear fruit.",
    # finance
    "Index funds spread risk across hundreds of companies.",
    "The central bank raised interest rates by a quarter point.",
    "Pay off the credit card balance in full to avoid interest.",
    "Her pension contributions are matched by her employer.",
    "The quarterly earnings beat analysts' expectations.",
    "A mortgage offer usually depends on your deposit and income.",
    "Inflation eroded the value of their savings last year.",
    # travel
    "The night train from Vienna arrives in Venice at dawn.",
    "Pack light layers for a hiking trip in the Alps.",
    "Our flight was delayed three hours because of fog.",
    "The old town is best explored on foot early in the morning.",
    "Remember to renew your passport before booking the trip.",
    # music and arts
    "The orchestra played Beethoven's ninth symphony to a full hall.",
    "She practises scales on the piano for an hour each day.",
    "The museum's new exhibition features impressionist paintings.",
    "The band's new album mixes jazz with electronic beats.",
    "He carved the sculpture from a single block of marble.",
    # health and pets
    "Drink water regularly and stretch after long runs.",
    "The dog needs a walk twice a day and loves chasing balls.",
    "Cats sleep for up to sixteen hours a day.",
    "A balanced breakfast keeps energy steady until lunch.",
    "The vet recommended a vaccine booster for the puppy.",
    # history and home
    "The Roman aqueduct carried water over fifty kilometres.",
    "The castle was rebuilt after a fire in the sixteenth century.",
    "Paint the hallway a light colour to make it feel bigger.",
    "The washing machine leaks when the drum is overloaded.",
    "Fix the squeaky door hinge with a drop of oil.",
]


def _repo_root() -> Path:
    return next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


@pytest.fixture(scope="session")
def model_dir() -> Path:
    path = Path(__file__).resolve().parents[2].parent / "shared/models/all-MiniLM-L6-v2-onnx"
    if not (path / "model.onnx").is_file():
        pytest.fail(f"the embedding model folder {path} is missing; it should sit at ../shared/models/ "
                    f"next to the repository {_repo_root()} (AIOS_EMBEDDING_MODEL_DIR in production)")
    return path


@pytest.fixture(scope="session")
def embedder(model_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(model_dir)


@pytest.fixture
def memory(tmp_path: Path, embedder: OnnxEmbedder) -> Iterator[VectorMemory]:
    with VectorMemory.local(tmp_path / "qdrant", embedder=embedder) as mem:
        assert mem.ensure_collection() is True
        yield mem


def _item(n: int, text: str, *, project: str = "p1", kind: str = "turn", scope: str = "session") -> MemoryItem:
    return MemoryItem(memory_id=f"mem-{n}", text=text, project=project, scope=scope, scope_id="s1",
                      role="general", kind=kind, ts=1_764_000_000_000 + n, task_id=f"task-{n}")


def test_upsert_then_search_returns_the_memory_with_its_payload(memory: VectorMemory) -> None:
    assert memory.collection == collection_name("aios") == "aios-memory"
    assert memory.upsert([_item(1, RELEVANT), _item(2, DISTRACTORS[0])]) == 2

    hits = memory.search(PARAPHRASE, top_k=2)

    assert [h.id for h in hits] == ["mem-1", "mem-2"]
    top = hits[0]
    assert top.text == RELEVANT
    assert 0.3 < top.score <= 1.0001 and hits[1].score < top.score
    assert top.payload | {"text": None} == {
        "memory_id": "mem-1", "text": None, "project": "p1", "scope": "session", "scope_id": "s1",
        "role": "general", "kind": "turn", "ts": 1_764_000_000_001, "task_id": "task-1", "privacy": "normal",
    }


def test_reupserting_the_same_memory_ids_keeps_the_count(memory: VectorMemory) -> None:
    items = [_item(n, text) for n, text in enumerate(DISTRACTORS[:10])]
    memory.upsert(items)
    memory.upsert(items)
    memory.upsert([_item(3, "an edited third memory")])

    assert memory.count() == 10
    assert point_id("mem-3") == point_id("mem-3") != point_id("mem-4")
    hits = memory.search("an edited third memory", top_k=1)
    assert hits[0].id == "mem-3" and hits[0].text == "an edited third memory"


def test_filters_by_project_kind_and_scope(memory: VectorMemory) -> None:
    memory.upsert([
        _item(1, "deploy the payment service on Friday", project="alpha", kind="turn"),
        _item(2, "deploy the payment service on Monday", project="beta", kind="turn"),
        _item(3, "summary: payment service deployment plans", project="alpha", kind="summary"),
        _item(4, "deploy the payment service at noon", project="alpha", kind="turn", scope="task"),
    ])
    query = "when do we deploy the payment service?"

    assert {h.id for h in memory.search(query, 10, project="alpha")} == {"mem-1", "mem-3", "mem-4"}
    assert {h.id for h in memory.search(query, 10, project="beta")} == {"mem-2"}
    assert {h.id for h in memory.search(query, 10, project="alpha", kind="summary")} == {"mem-3"}
    assert {h.id for h in memory.search(query, 10, project="alpha", scope="task")} == {"mem-4"}
    assert memory.search(query, 10, project="gamma") == []
    assert memory.count(project="alpha") == 3 and memory.count(kind="summary") == 1


def test_score_threshold_drops_weak_matches(memory: VectorMemory) -> None:
    memory.upsert([_item(1, RELEVANT)] + [_item(n, t) for n, t in enumerate(DISTRACTORS[:8], start=10)])

    everything = memory.search(PARAPHRASE, top_k=20)
    strong = memory.search(PARAPHRASE, top_k=20, score_threshold=0.4)

    assert len(everything) == 9
    assert [h.id for h in strong] == ["mem-1"], [(h.id, round(h.score, 3)) for h in everything]
    assert all(h.score >= 0.4 for h in strong)


def test_the_related_memory_ranks_first_among_fifty_distractors(memory: VectorMemory) -> None:
    assert len(DISTRACTORS) >= 50
    items = [_item(n, text) for n, text in enumerate(DISTRACTORS, start=100)] + [_item(1, RELEVANT)]
    memory.upsert(items)
    assert memory.count() == len(DISTRACTORS) + 1

    hits = memory.search(PARAPHRASE, top_k=5)

    ranked = [(h.id, round(h.score, 3), h.text[:40]) for h in hits]
    assert hits[0].id == "mem-1", ranked
    assert hits[0].score - hits[1].score > 0.1, ranked


def test_search_by_vector_matches_search_by_text(memory: VectorMemory, embedder: OnnxEmbedder) -> None:
    memory.upsert([_item(1, RELEVANT), _item(2, DISTRACTORS[5])])
    by_text = memory.search(PARAPHRASE, top_k=2)
    by_vector = memory.search(embedder.embed_one(PARAPHRASE), top_k=2)
    assert [(h.id, round(h.score, 5)) for h in by_text] == [(h.id, round(h.score, 5)) for h in by_vector]
    with pytest.raises(ValueError, match="384"):
        memory.search([0.1, 0.2, 0.3])


def test_delete_removes_by_memory_id(memory: VectorMemory) -> None:
    memory.upsert([_item(1, RELEVANT), _item(2, DISTRACTORS[1])])
    memory.delete(["mem-1", "mem-never-indexed"])
    assert memory.count() == 1
    assert [h.id for h in memory.search(PARAPHRASE, top_k=5)] == ["mem-2"]


def test_reopening_the_folder_sees_the_persisted_points(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    folder = tmp_path / "qdrant"
    with VectorMemory.local(folder, embedder=embedder) as first:
        first.ensure_collection()
        first.upsert([_item(n, t) for n, t in enumerate(DISTRACTORS[:20])] + [_item(1000, RELEVANT)])

    with VectorMemory.local(folder, embedder=embedder) as reopened:
        assert reopened.ensure_collection() is False
        assert reopened.count() == 21
        assert reopened.search(PARAPHRASE, top_k=1)[0].id == "mem-1000"


def test_a_second_client_on_a_held_folder_is_a_clear_error(memory: VectorMemory) -> None:
    with pytest.raises(StoreUnavailableError, match="in use.*AIOS_QDRANT_URL"):
        VectorMemory.local(memory.where)


def test_a_collection_of_another_dimension_is_not_reused(memory: VectorMemory) -> None:
    memory.close()
    with VectorMemory.local(memory.where, dimension=8) as other:
        with pytest.raises(StoreQueryError, match="384-d vectors but the embedder gives 8-d"):
            other.ensure_collection()
        other.recreate()
        other.upsert([_item(1, "x")], vectors=np.ones((1, 8), dtype=np.float32))
        assert other.count() == 1


def test_text_search_without_an_embedder_says_what_to_pass(tmp_path: Path) -> None:
    with VectorMemory.local(tmp_path / "q") as mem:
        mem.ensure_collection()
        with pytest.raises(ConnectorError, match="no embedder"):
            mem.search("hello")


def test_an_unreachable_server_is_store_unavailable(embedder: OnnxEmbedder) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mem = VectorMemory.server(f"http://127.0.0.1:{port}", embedder=embedder, timeout_s=2)
    with pytest.raises(StoreUnavailableError, match="not reachable.*AIOS_QDRANT_URL"):
        mem.ensure_collection()
    mem.close()


def test_the_name_is_an_alias_of_a_generation_that_a_swap_replaces(memory: VectorMemory) -> None:
    first = memory.target()
    assert first.startswith(f"{memory.collection}--")
    memory.upsert([_item(1, RELEVANT)])
    generation = memory.generation("next")
    generation.create()
    generation.upsert([_item(2, DISTRACTORS[0]), _item(3, DISTRACTORS[1])])
    assert memory.count() == 1  # readers still see the old generation

    assert memory.swap_in(generation) == first

    assert memory.target() == generation.collection and memory.count() == 2
    assert not memory._client.collection_exists(first)


def test_a_collection_made_before_aliases_is_replaced_by_the_first_swap(tmp_path: Path,
                                                                         embedder: OnnxEmbedder) -> None:
    with VectorMemory.local(tmp_path / "q", embedder=embedder) as mem:
        legacy = mem.with_collection(mem.collection)
        legacy.create()  # a real collection under the name, as older versions made it
        legacy.upsert([_item(1, RELEVANT)])
        assert mem.ensure_collection() is False and mem.target() == mem.collection
        generation = mem.generation("g1")
        generation.create()
        generation.upsert([_item(2, DISTRACTORS[0])])

        assert mem.swap_in(generation) == mem.collection

        assert mem.target() == generation.collection
        assert [h.id for h in mem.search(PARAPHRASE, 5)] == ["mem-2"]


@pytest.mark.parametrize("projects", [3, 60])  # most searches exact from the top candidates; most fall back
def test_filtered_local_search_matches_an_exhaustive_ranking(memory: VectorMemory, projects: int) -> None:
    rng = np.random.default_rng(projects)
    vectors = rng.standard_normal((600, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    memory.upsert([_item(n, f"v{n}", project=f"p{n % projects}", kind=("turn", "summary")[n % 2])
                   for n in range(600)], vectors=vectors)
    for q in rng.standard_normal((15, 384)).astype(np.float32):
        q /= np.linalg.norm(q)
        scores = vectors @ q
        for project, kind, threshold in (("p1", None, None), ("p2", "turn", None), ("p0", None, 0.05)):
            expected = [f"mem-{n}" for n in np.argsort(-scores)
                        if n % projects == int(project[1:]) and (kind is None or ("turn", "summary")[n % 2] == kind)
                        and (threshold is None or scores[n] >= threshold)][:5]
            hits = memory.search(q, 5, project=project, kind=kind, score_threshold=threshold)
            assert [h.id for h in hits] == expected


def test_provider_embeddings_index_and_recall_through_the_settings(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from aios.agents.llm.servers.openai import FakeOpenAI
    from aios.streams.engine.runtime import open_vector_memory
    from aios.streams.settings import load_settings

    with FakeOpenAI() as fake:
        s = load_settings(data_dir=tmp_path, embeddings="openai:text-embedding-3-small",
                          openai_api_key=SecretStr("sk-test"), openai_base_url=fake.base_url)
        with open_vector_memory(s) as vm:
            vm.upsert([_item(n, text) for n, text in enumerate(DISTRACTORS[:20])])
            # The fake's vectors are hashes of the text, so only the same text is close: it ranks first.
            hits = vm.search(DISTRACTORS[7], 3)
            assert hits[0].id == "mem-7" and hits[0].score > 0.99 > hits[1].score
        assert any(r.path == "/v1/embeddings" for r in fake.requests)
