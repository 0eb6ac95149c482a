"""The S3 artifact store against a real S3-compatible server (moto's, over HTTP, with IAM auth on):
bucket, upload, download, listing, checksums, and access refused without valid credentials."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aios.connectors.artifacts import (
    ArtifactAccessError,
    ArtifactChecksumError,
    ArtifactConfig,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    open_artifacts,
)
from aios.connectors.artifacts.s3 import S3ArtifactStore
from aios.connectors.errors import StoreUnavailableError
from aios.schemas.artifacts import artifact_key, project_prefix
from aios.schemas.errors import ConfigError
from tests.integration.local_servers import free_port
from tests.integration.s3_server import BUCKET, MotoS3

pytestmark = pytest.mark.integration


def config(moto: MotoS3, tmp_path: Path, *, prefix: str = "team-a", key_id: str | None = "",
           secret: str | None = "", **more: object) -> ArtifactConfig:
    return ArtifactConfig(
        data_dir=tmp_path, url=f"s3://{BUCKET}/{prefix}", endpoint=moto.url,
        access_key_id=moto.credentials.access_key_id if key_id == "" else key_id,
        secret_access_key=moto.credentials.secret_access_key if secret == "" else secret, **more)  # type: ignore[arg-type]


async def test_an_artifact_goes_up_to_the_bucket_and_comes_back_whole(moto: MotoS3, tmp_path: Path) -> None:
    store = open_artifacts(config(moto, tmp_path))
    assert isinstance(store, S3ArtifactStore)
    data = "def handler():\n    return 'é ok'\n".encode() * 1000
    key = artifact_key("shop", "t1", 1, "src/handler.py")
    ref = await store.save(key, "src/handler.py", data)
    assert ref.uri == f"s3://{BUCKET}/team-a/shop/t1/1/src/handler.py"
    assert (ref.size, ref.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    # The bucket, seen by another client, holds the same bytes under the prefix.
    body = moto.s3().get_object(Bucket=BUCKET, Key=f"team-a/{key}")["Body"].read()
    assert body == data
    assert await store.load(ref) == data
    listed = await store.list_prefix(project_prefix("shop"), 100)
    assert [(o.key, o.size, o.uri) for o in listed] == [(key, len(data), ref.uri)]
    assert await store.list_prefix(project_prefix("other"), 100) == []


async def test_a_rewrite_replaces_and_a_listing_is_bounded(moto: MotoS3, tmp_path: Path) -> None:
    store = open_artifacts(config(moto, tmp_path, prefix="bounded"))
    for i in range(5):
        await store.save(artifact_key("p", "t", 1, f"f{i}.txt"), f"f{i}.txt", b"one")
    ref = await store.save(artifact_key("p", "t", 1, "f0.txt"), "f0.txt", b"two")
    assert await store.load(ref) == b"two"
    listed = await store.list_prefix(project_prefix("p", "t"), 3)
    assert [o.key.rsplit("/", 1)[-1] for o in listed] == ["f0.txt", "f1.txt", "f2.txt"]


async def test_a_changed_object_fails_its_checksum(moto: MotoS3, tmp_path: Path) -> None:
    store = open_artifacts(config(moto, tmp_path))
    key = artifact_key("shop", "t2", 1, "report.md")
    ref = await store.save(key, "report.md", b"all tests pass")
    moto.s3().put_object(Bucket=BUCKET, Key=f"team-a/{key}", Body=b"all tests fail")  # same size, other bytes
    with pytest.raises(ArtifactChecksumError, match="sha256"):
        await store.load(ref)


async def test_access_is_refused_without_credentials_or_with_wrong_ones(moto: MotoS3, tmp_path: Path) -> None:
    good = open_artifacts(config(moto, tmp_path))
    key = artifact_key("shop", "t3", 1, "secret.txt")
    await good.save(key, "secret.txt", b"for the team only")
    unsigned = open_artifacts(config(moto, tmp_path, key_id=None, secret=None))
    wrong_secret = open_artifacts(config(moto, tmp_path, secret="not-the-secret"))
    unknown_key = open_artifacts(config(moto, tmp_path, key_id="AKIAUNKNOWN", secret="whatever"))
    for store in (unsigned, wrong_secret, unknown_key):
        with pytest.raises(ArtifactAccessError, match="AIOS_ARTIFACTS_ACCESS_KEY_ID"):
            await store.read(key)
    for store in (wrong_secret, unknown_key):
        with pytest.raises(ArtifactAccessError):
            await store.list_prefix(project_prefix("shop"), 10)
        with pytest.raises(ArtifactAccessError):
            await store.save(artifact_key("shop", "t3", 1, "forged.txt"), "forged.txt", b"x")
    # moto answers an unsigned PUT or listing with 500 (its handler wants an Authorization header)
    # where S3 says 403: refused either way; a 5xx is the store's trouble, so it reads as unavailable.
    with pytest.raises((ArtifactAccessError, StoreUnavailableError)):
        await unsigned.list_prefix(project_prefix("shop"), 10)
    with pytest.raises((ArtifactAccessError, StoreUnavailableError)):
        await unsigned.save(artifact_key("shop", "t3", 1, "forged.txt"), "forged.txt", b"x")
    assert moto.s3().get_object(Bucket=BUCKET, Key=f"team-a/{key}")["Body"].read() == b"for the team only"
    listed = moto.s3().list_objects_v2(Bucket=BUCKET, Prefix="team-a/shop/t3/")["Contents"]
    assert [o["Key"] for o in listed] == [f"team-a/{key}"]  # nothing was written without a valid key


async def test_missing_objects_foreign_uris_and_size_limits_are_typed_errors(moto: MotoS3, tmp_path: Path) -> None:
    store = open_artifacts(config(moto, tmp_path, max_bytes=1024))
    with pytest.raises(ArtifactNotFoundError):
        await store.read(artifact_key("shop", "gone", 1, "x.txt"))
    with pytest.raises(ArtifactTooLargeError, match="AIOS_ARTIFACTS_MAX_BYTES"):
        await store.save(artifact_key("shop", "t4", 1, "big.bin"), "big.bin", b"x" * 1025)
    assert store.key_of(f"s3://{BUCKET}/team-a/shop/t4/1/a.txt") == "shop/t4/1/a.txt"
    for foreign in (f"s3://{BUCKET}/team-b/shop/t4/1/a.txt", "s3://other-bucket/team-a/shop/t4/1/a.txt",
                    f"s3://{BUCKET}/team-a/shop/../../x", "file:///etc/passwd", "kafka://aios.attempts/0/1"):
        assert store.key_of(foreign) is None


async def test_a_store_that_does_not_answer_is_unavailable_not_the_records_fault(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    store = open_artifacts(ArtifactConfig(data_dir=tmp_path, url=f"s3://{BUCKET}", endpoint=closed,
                                          access_key_id="k", secret_access_key="s", timeout_s=2.0))
    with pytest.raises(StoreUnavailableError, match="did not answer"):
        await store.read("p/t/1/a.txt")


def test_a_bad_url_says_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="s3://bucket"):
        open_artifacts(ArtifactConfig(data_dir=tmp_path, url="ftp://host/x"))
    with pytest.raises(ConfigError, match="absolute folder"):
        open_artifacts(ArtifactConfig(data_dir=tmp_path, url="file:relative"))
