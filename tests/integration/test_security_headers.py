"""Every answer says `X-Content-Type-Options: nosniff`, and pages and JSON carry a Content-Security-Policy
that lets a page run only what this server sent (the browser tests, tests/e2e/test_studio_browser.py and
test_docs_offline.py, show the studio and Swagger UI still work under it)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from fastapi.testclient import TestClient

from serve_app.api import ingress

pytestmark = pytest.mark.integration


@pytest.fixture
def client(local_service):
    ingress.install(local_service)
    with TestClient(ingress.app, raise_server_exceptions=False) as client:
        yield client


def directives(policy: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in policy.split(";") if part.strip())}


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/", 200),
        ("GET", "/studio/main.js", 200),
        ("GET", "/studio/studio.css", 200),
        ("GET", "/docs", 200),
        ("GET", "/docs/assets/swagger-ui-bundle.js", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/healthz", 200),
        ("GET", "/v1/videos", 200),
        ("GET", "/v1/videos/video_" + "0" * 32, 404),
        ("GET", "/nowhere", 404),
        ("POST", "/v1/videos", 415),  # refused by the gate, before any route
        ("DELETE", "/v1/models", 405),  # a method the route does not take
    ],
)
def test_every_answer_forbids_sniffing_its_type(client, method, path, status):
    response = client.request(method, path, content=b"x" if method == "POST" else None)
    assert response.status_code == status
    assert response.headers["x-content-type-options"] == "nosniff"
    if response.headers["content-type"].startswith(("text/html", "application/json")):
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_an_internal_error_forbids_sniffing_too(client, local_service, monkeypatch):
    # Starlette answers a 500 from its outermost layer, outside the middleware that adds the headers.
    monkeypatch.setattr(local_service, "models", lambda: 1 / 0)
    response = client.get("/v1/models")
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_json_answers_may_load_nothing(client):
    for response in (
        client.get("/v1/videos"),
        client.get("/v1/videos/nope"),
        client.post("/v1/videos", json={}),
    ):
        assert directives(response.headers["content-security-policy"])["default-src"] == ["'none'"]


def test_the_studio_runs_only_its_own_files(client):
    page = client.get("/")
    policy = directives(page.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]  # the API and its event streams
    assert "blob:" in policy["media-src"] and "blob:" in policy["img-src"]  # media fetched with a key
    # Nothing inline that the policy would block: the page links its script and style sheet only.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=", page.text)
    assert (
        client.get("/studio/index.html").headers["content-security-policy"]
        == page.headers["content-security-policy"]
    )


def test_the_studio_s_modules_are_all_served_as_javascript(client):
    # A browser runs a module only when it comes with a JavaScript type, and one module missing from the
    # server (or the wheel: package-data takes studio/*) stops the whole page.
    page = client.get("/").text
    assert re.search(r'<script type="module" src="studio/main\.js"></script>', page)
    seen: set[str] = set()
    waiting = ["main.js"]
    while waiting:
        name = waiting.pop()
        seen.add(name)
        response = client.get(f"/studio/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].split(";")[0] == "text/javascript", name
        imported = re.findall(r'^import [^;]*? from "\./([\w-]+\.js)";', response.text, re.MULTILINE)
        waiting += [module for module in imported if module not in seen]
    assert seen == {path.name for path in ingress.STUDIO.glob("*.js")}


def test_the_docs_page_runs_its_one_inline_script_by_its_hash(client):
    page = client.get("/docs")
    policy = directives(page.headers["content-security-policy"])
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert policy["script-src"] == ["'self'", f"'sha256-{digest}'"]
    assert "'unsafe-eval'" not in policy["script-src"] and "'unsafe-inline'" not in policy["script-src"]
