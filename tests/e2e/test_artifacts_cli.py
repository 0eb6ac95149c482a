"""``aios artifacts list|get`` as a user runs them, on the filesystem store and on a real
S3-compatible server (moto's, over HTTP); and ``aios submit --wait``'s printing of a whole output."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from aios.cli.artifacts import result_text
from aios.schemas.artifacts import OUTPUT_ARTIFACT, artifact_key
from aios.schemas.limits import excerpt
from aios.streams.artifacts import open_artifact_store
from aios.streams.settings import Settings, load_settings
from tests.e2e.conftest import Cli
from tests.integration.s3_server import BUCKET, MotoS3

pytestmark = pytest.mark.integration

CODE = "print('hello from the agent')\n"


def settings_of(cli: Cli) -> Settings:
    flat = {k.removeprefix("AIOS_").lower(): v for k, v in cli.env.items() if k.startswith("AIOS_ARTIFACTS_")}
    return load_settings(data_dir=Path(cli.env["AIOS_DATA_DIR"]), **flat)


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_list_and_get_an_agents_files(cli: Cli, backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if backend == "s3":
        moto: MotoS3 = request.getfixturevalue("moto")
        cli.env.update({"AIOS_ARTIFACTS_URL": f"s3://{BUCKET}/{cli.env['AIOS_TOPIC_PREFIX']}",
                        "AIOS_ARTIFACTS_ENDPOINT": moto.url,
                        "AIOS_ARTIFACTS_ACCESS_KEY_ID": moto.credentials.access_key_id,
                        "AIOS_ARTIFACTS_SECRET_ACCESS_KEY": moto.credentials.secret_access_key})
    store = open_artifact_store(settings_of(cli))
    ref = asyncio.run(store.save(artifact_key("shop", "build", 2, "src/hello.py"), "src/hello.py", CODE.encode()))
    asyncio.run(store.save(artifact_key("other", "x", 1, "a.txt"), "a.txt", b"other project"))

    listed = cli.json("artifacts", "list", "--project", "shop")
    assert listed == {"project_id": "shop", "artifacts": [{"path": "build/2/src/hello.py", "size": len(CODE),
                                                           "uri": ref.uri}]}
    assert "build/2/src/hello.py" in cli.run("artifacts", "list", "-p", "shop").stdout
    assert cli.json("artifacts", "list", "-p", "shop", "--task", "nothing")["artifacts"] == []

    assert cli.run("artifacts", "get", "build/2/src/hello.py", "--project", "shop").stdout == CODE
    out = tmp_path / "hello.py"
    got = cli.json("artifacts", "get", ref.uri, "-o", str(out))
    assert got == {"uri": ref.uri, "size": len(CODE), "sha256": hashlib.sha256(CODE.encode()).hexdigest(),
                   "written_to": str(out)}
    assert out.read_text() == CODE == cli.json("artifacts", "get", ref.uri)["content"]


def test_get_says_what_is_wrong(cli: Cli) -> None:
    missing = cli.run("artifacts", "get", "build/1/none.txt", "--project", "shop", check=False)
    assert missing.returncode == 1 and "no artifact" in missing.stderr
    foreign = cli.run("artifacts", "get", "s3://someone-elses/bucket/key", check=False)
    assert foreign.returncode == 1 and "not in this deployment's artifact store" in foreign.stderr
    no_project = cli.run("artifacts", "get", "build/1/x.txt", check=False)
    assert no_project.returncode == 2 and "--project" in no_project.stderr
    bad_id = cli.run("artifacts", "list", "--project", "a/b", check=False)
    assert bad_id.returncode == 2 and "is not an id" in bad_id.stderr
    bad_url = cli.run("artifacts", "list", "-p", "shop", check=False)
    assert bad_url.returncode == 0
    cli.env["AIOS_ARTIFACTS_URL"] = "ftp://nowhere"
    refused = cli.run("artifacts", "list", "-p", "shop", check=False)
    assert refused.returncode == 1 and "AIOS_ARTIFACTS_URL" in refused.stderr


def test_submit_wait_prints_the_whole_output_not_its_excerpt(cli: Cli) -> None:
    settings = settings_of(cli)
    whole = "a long answer line\n" * 10_000
    ref = asyncio.run(open_artifact_store(settings).save(
        artifact_key("shop", "t", 1, OUTPUT_ARTIFACT), OUTPUT_ARTIFACT, whole.encode()))
    shown = excerpt(whole, 4_000, ref.uri)
    result = {"project_id": "shop", "task_id": "t", "status": "succeeded", "output": shown,
              "artifacts": [ref.to_event()]}
    assert result_text(settings, result, shown) == whole
    assert result_text(settings, {**result, "artifacts": []}, shown) == shown
