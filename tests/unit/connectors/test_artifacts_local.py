"""The filesystem artifact store: round trips, atomic writes, checksums, and no key or URI that
climbs out of its folder, whatever the ids and names (hypothesis)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios.connectors.artifacts import ArtifactChecksumError, ArtifactNotFoundError, ArtifactTooLargeError
from aios.connectors.artifacts.base import ArtifactError
from aios.connectors.artifacts.local import LocalArtifactStore
from aios.schemas.artifacts import ArtifactNameError, ArtifactRef, artifact_key, project_prefix
from aios.schemas.limits import ID_PATTERN

IDS = st.from_regex(ID_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 128)


async def test_a_round_trip_is_checked_and_listed(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    key = artifact_key("shop", "t1", 1, "docs/README.md")
    ref = await store.save(key, "docs/README.md", b"# hello\n")
    assert ref == ArtifactRef("docs/README.md", 8, hashlib.sha256(b"# hello\n").hexdigest(),
                              (tmp_path / "artifacts/shop/t1/1/docs/README.md").as_uri())
    assert await store.load(ref) == b"# hello\n"
    assert [o.key for o in await store.list_prefix(project_prefix("shop"), 10)] == [key]
    assert not [p for p in (tmp_path / "artifacts").rglob(".part-*")], "no temporary file is left"
    (tmp_path / "artifacts/shop/t1/1/docs/README.md").write_bytes(b"# HELLO\n")
    with pytest.raises(ArtifactChecksumError, match="changed or damaged"):
        await store.load(ref)


async def test_misuse_is_a_typed_error_that_says_what_to_fix(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path, max_bytes=4)
    with pytest.raises(ArtifactTooLargeError, match="AIOS_ARTIFACTS_MAX_BYTES"):
        await store.save("p/t/1/a", "a", b"12345")
    with pytest.raises(ArtifactNotFoundError):
        await store.read("p/t/1/missing")
    with pytest.raises(ArtifactError, match="leaves the store's folder"):
        await store.read("../outside")
    with pytest.raises(ArtifactNameError, match="e.g. 'src/main.py'"):
        await store.save("p/t/1/x", "../x", b"1")
    assert store.key_of((tmp_path / "p/t/1/a").as_uri()) == "p/t/1/a"
    for foreign in ("file:///etc/passwd", (tmp_path / "p/../../x").as_uri(), "file://host/p", "s3://b/p/t/1/a",
                    tmp_path.as_uri()):
        assert store.key_of(foreign) is None, foreign


@settings(max_examples=200)
@given(project=IDS, task=IDS, attempt=st.integers(1, 10_000), name=st.text(max_size=60))
def test_no_key_leaves_the_root_whatever_the_ids_and_the_name(
        tmp_path_factory: pytest.TempPathFactory, project: str, task: str, attempt: int, name: str) -> None:
    root = tmp_path_factory.getbasetemp() / "hypothesis-root"
    store = LocalArtifactStore(root)
    try:
        key = artifact_key(project, task, attempt, name)
    except ArtifactNameError:
        return
    path = (root / key).resolve()
    assert path.is_relative_to(root.resolve()) and path != root.resolve()
    assert key.startswith(project_prefix(project, task))
    assert store.key_of(store.uri(key)) == key
    ref = asyncio.run(store.save(key, name, name.encode("utf-8", "surrogatepass")))
    assert store.key_of(ref.uri) == key
