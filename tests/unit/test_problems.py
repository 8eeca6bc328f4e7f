from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from gekko.correlation import CorrelationIdMiddleware
from gekko.problems import ProblemError, install_problem_handlers


class Body(BaseModel):
    quantity: float = Field(gt=0)


def make_app() -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(CorrelationIdMiddleware)

    @app.post("/things")
    async def things(body: Body) -> dict:
        return {"ok": body.quantity}

    @app.get("/conflict")
    async def conflict() -> dict:
        raise ProblemError(409, "already there", slug="exists")

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("secret internals: password=hunter2")

    return TestClient(app)


def test_validation_error_is_422_problem_with_errors():
    resp = make_app().post("/things", json={"quantity": -1})
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert {"type", "title", "status", "detail", "errors"} <= set(body)
    assert body["status"] == 422
    assert "quantity" in body["detail"]
    assert body["errors"][0]["loc"] == "body.quantity"


def test_malformed_json_is_a_4xx_problem():
    resp = make_app().post(
        "/things", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert 400 <= resp.status_code < 500
    assert resp.headers["content-type"] == "application/problem+json"


def test_not_found_and_method_not_allowed_are_problems():
    client = make_app()
    nf = client.get("/nowhere")
    assert nf.status_code == 404 and nf.json()["title"] == "Not Found"
    assert nf.headers["content-type"] == "application/problem+json"
    assert client.get("/things").status_code == 405


def test_problem_error_keeps_status_and_type():
    resp = make_app().get("/conflict", headers={"X-Correlation-ID": "abc-1"})
    assert resp.status_code == 409
    body = resp.json()
    assert body["type"].endswith("/exists") and body["detail"] == "already there"
    assert body["correlation_id"] == "abc-1" == resp.headers["x-correlation-id"]


def test_unhandled_error_is_500_problem_without_internals():
    resp = make_app().get("/boom")
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/problem+json"
    assert "hunter2" not in resp.text and "Traceback" not in resp.text
    assert resp.json()["correlation_id"] == resp.headers["x-correlation-id"]
