"""Every JSON error answers with a `detail` (DESIGN.md §6), whichever engine wrote it."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from onbehalf.http_app import ErrorDetail


def _app() -> ErrorDetail:
    async def aegra_style(request: Request) -> Response:
        return JSONResponse({"error": "not_found", "message": "Thread 'x' not found",
                             "details": None}, status_code=404)

    async def langgraph_style(request: Request) -> Response:
        return JSONResponse({"detail": "Thread not found"}, status_code=404)

    async def plain(request: Request) -> Response:
        return PlainTextResponse("nope", status_code=500)

    async def fine(request: Request) -> Response:
        return JSONResponse({"message": "hello"})

    return ErrorDetail(Starlette(routes=[
        Route("/aegra", aegra_style), Route("/langgraph", langgraph_style),
        Route("/plain", plain), Route("/fine", fine)]))


def test_an_error_with_only_a_message_gets_that_message_as_detail() -> None:
    answer = TestClient(_app()).get("/aegra")
    assert answer.status_code == 404
    assert answer.json() == {"detail": "Thread 'x' not found", "error": "not_found",
                             "message": "Thread 'x' not found", "details": None}
    assert int(answer.headers["content-length"]) == len(answer.content)


def test_other_answers_are_left_as_they_are() -> None:
    client = TestClient(_app())
    assert client.get("/langgraph").json() == {"detail": "Thread not found"}
    assert client.get("/plain").text == "nope"
    fine = client.get("/fine")
    assert fine.status_code == 200 and json.loads(fine.content) == {"message": "hello"}
