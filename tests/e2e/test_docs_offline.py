"""/docs works on a machine without internet: Swagger UI's assets come from the ingress itself."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.fixtures.serve import Deployed

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def app(cpu_app: Deployed) -> Deployed:
    return cpu_app


def test_docs_render_every_operation_with_the_network_cut_off(app, browser):
    ours = urlsplit(app.url).netloc
    elsewhere: list[str] = []
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        # A script or style the page's Content-Security-Policy blocks is reported as a console error.
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)

        def offline(route):  # only this server answers: anything else fails as it would with no network
            if urlsplit(route.request.url).netloc == ours:
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort()

        page.route("**/*", offline)
        policy = page.goto(f"{app.url}/docs").headers["content-security-policy"]
        page.wait_for_selector(".opblock", timeout=30_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
    finally:
        context.close()

    assert elsewhere == [] and errors == []
    assert (
        "script-src 'self' 'sha256-" in policy
    )  # Swagger UI ran under a policy that blocks other inline code
    assert any(path.endswith("/v1/videos") for path in paths)
    assert any("remix" in path for path in paths) and any("extensions" in path for path in paths)
    assert app.client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert app.client.get("/redoc").status_code == 404  # it would load its script from a CDN
