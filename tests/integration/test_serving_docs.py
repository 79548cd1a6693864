"""The API's /docs and /redoc pages load everything from the API, nothing from a CDN.

FastAPI's own pages make the browser fetch Swagger UI and ReDoc from a public CDN (and
fonts from Google): a request the project promises never to make, and a blank page
offline. Here a real uvicorn serves the pages; every script and stylesheet they name must
be a same-origin URL the server answers with the right type, and headless Chromium, with
every outside request refused, must draw the scoring endpoint from them without asking
for anything outside.
"""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from serving_support import (
    LoggedModels,
    logged_models,
    register_versions,
    running_server,
    serving_env,
    unique_model_name,
)

from serving.server import ServingProcess

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, with none of Chromium's own calls home (updates, sync, component fetches).
CHROMIUM_ARGS = [
    "--headless",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The content type each kind of asset must come back with.
EXPECTED_TYPES = {"script": "javascript", "stylesheet": "text/css", "icon": "image/"}


class AssetLinks(HTMLParser):
    """Every ``<script src>`` and ``<link href>`` of a page, with the kind it loads."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script" and named.get("src"):
            self.found.append(("script", named["src"] or ""))
        elif tag == "link" and named.get("href"):
            rel = (named.get("rel") or "").split()
            kind = "stylesheet" if "stylesheet" in rel else "icon" if "icon" in rel else "other"
            self.found.append((kind, named["href"] or ""))


def asset_links(page: str) -> list[tuple[str, str]]:
    parser = AssetLinks()
    parser.feed(page)
    return parser.found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    models: LoggedModels = logged_models(tmp_path_factory.getbasetemp())
    name = unique_model_name()
    register_versions(models, name, 1)
    home = tmp_path_factory.mktemp("docs-home")
    with running_server(home, serving_env(home, models, name)) as process:
        yield process


@pytest.fixture
def api(server: ServingProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "kinds"),
    [("/docs", {"script", "stylesheet", "icon"}), ("/redoc", {"script", "icon"})],
)
def test_every_asset_of_a_docs_page_is_same_origin_and_served(
    api: httpx.Client, path: str, kinds: set[str]
) -> None:
    page = api.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "://" not in page.text, "the page names an absolute URL"
    links = asset_links(page.text)
    assert {kind for kind, _ in links} == kinds
    origin = urlsplit(str(api.base_url))
    for kind, url in links:
        absolute = urlsplit(urljoin(str(page.url), url))
        assert (absolute.scheme, absolute.netloc) == (origin.scheme, origin.netloc), url
        asset = api.get(absolute.geturl())
        assert asset.status_code == 200, url
        assert EXPECTED_TYPES[kind] in asset.headers["content-type"], (url, asset.headers)
        assert len(asset.content) > 1000, url


def test_the_default_pages_are_gone_and_the_assets_folder_stays_closed(
    api: httpx.Client,
) -> None:
    """FastAPI's OAuth redirect page (unused here) is not served; no path climbs out of the
    assets folder, which is a package's directory."""
    assert api.get("/docs/oauth2-redirect").status_code == 404
    assert api.get("/docs/assets/%2e%2e/core.py").status_code == 404
    assert "/docs" not in api.get("/openapi.json").json()["paths"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")
@pytest.mark.parametrize(
    ("path", "drawn"), [("/docs", "/v1/score"), ("/redoc", "Score one transaction")]
)
def test_a_browser_draws_the_page_with_every_outside_request_refused(
    server: ServingProcess, path: str, drawn: str
) -> None:
    from playwright.sync_api import Route, sync_playwright

    host = urlsplit(server.url).hostname
    outside: list[str] = []

    def local_only(route: Route) -> None:
        """Sees every request that would go to the network; ReDoc's built-in logo from its
        maker's CDN never gets here, blocked first by the page's own policy."""
        if urlsplit(route.request.url).hostname == host:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("blockedbyclient")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", local_only)
            page.goto(f"{server.url}{path}")
            page.get_by_text(drawn).filter(visible=True).first.wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle", timeout=30_000)
        finally:
            browser.close()
    assert outside == []
