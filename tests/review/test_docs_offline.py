"""The API's /docs (Swagger UI) and /redoc load every asset from the installed package, not a CDN.

The browser test renders both in Debian's headless Chromium, which has no network here: the pages
only fill in when the packaged JavaScript runs.
"""

from __future__ import annotations

import re
import threading

import pytest
import yaml

from tests.browser import wait_until_up

from .conftest import REPO, free_port


@pytest.fixture()
def api_params(tmp_path, monkeypatch):
    from backdrop.config import load_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["serve"].update({"model": "official:u2netp", "review_dir": str(tmp_path / "review")})
    raw["monitoring"].update({"record_predictions": False})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    return load_params(tmp_path / "params.yaml")


def test_docs_pages_reference_only_packaged_assets(api_params):
    from fastapi.testclient import TestClient

    from backdrop.serving.api import create_app

    client = TestClient(create_app(api_params))  # no lifespan: the model is not loaded for this
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200, path
        urls = re.findall(r'(?:src|href)="([^"]+)"|url: ?\'([^\']+)\'', page.text)
        flat = [u for pair in urls for u in pair if u]
        assert flat and all(u.startswith("/") for u in flat), (path, flat)  # nothing from another host
        assert "cdn" not in page.text.lower() and "fonts.googleapis" not in page.text
        for url in flat:
            if url.startswith("/docs-static/"):
                asset = client.get(url)
                assert asset.status_code == 200 and len(asset.content) > 4000, url
    assert client.get("/docs-static/../params.yaml").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "backdrop"


@pytest.mark.slow
def test_swagger_ui_and_redoc_render_offline_in_chromium(api_params):
    import uvicorn
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from backdrop.serving.api import create_app
    from tests.browser import chromium

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(api_params), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/docs", 60, "API")
        with chromium() as driver:
            driver.get(f"{url}/docs")
            WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"))
            assert "backdrop" in driver.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
            assert any("/v1/remove" in el.text for el in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
            driver.get(f"{url}/redoc")
            WebDriverWait(driver, 30).until(lambda d: "/v1/remove" in d.find_element(By.TAG_NAME, "body").text)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
