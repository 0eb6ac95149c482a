"""One value per query parameter: a repeated one is a 400 that names it, whatever the names and values."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from aios.api.hardening import SingleQueryValues


async def echo(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.query_params))


CLIENT = TestClient(SingleQueryValues(Starlette(routes=[Route("/", echo)])))
NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=10)
VALUES = st.text(st.characters(codec="utf-8"), max_size=10)


@given(params=st.dictionaries(NAMES, VALUES, max_size=5))
def test_each_name_once_passes_through(params: dict[str, str]) -> None:
    r = CLIENT.get("/?" + urlencode(params))
    assert r.status_code == 200 and r.json() == params


@given(params=st.dictionaries(NAMES, VALUES, max_size=4), repeated=NAMES, values=st.lists(VALUES, min_size=2, max_size=5))
def test_a_repeated_name_is_refused_and_named(params: dict[str, str], repeated: str, values: list[str]) -> None:
    query = [(k, v) for k, v in params.items() if k != repeated] + [(repeated, v) for v in values]
    r = CLIENT.get("/?" + urlencode(query))
    assert r.status_code == 400
    assert f"query parameter {repeated!r} given {len(values)} times" in r.json()["detail"]
