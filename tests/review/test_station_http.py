"""Access rules of the review station over plain HTTP: sign-in, CSRF, session expiry, confinement."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from .conftest import PASSWORD, USER

pytestmark = pytest.mark.slow


def _csrf(text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


def sign_in(url: str, password: str = PASSWORD) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=url, follow_redirects=False, timeout=30)
    page = client.get("/login")
    return client, client.post("/login", data={"csrf": _csrf(page.text), "username": USER, "password": password})


def test_sign_in_refuses_a_wrong_password_and_a_missing_csrf_token(station):
    client, wrong = sign_in(station.url, "not the password")
    assert wrong.status_code == 401 and "Wrong user or password" in wrong.text
    assert "backdrop_review" not in client.cookies  # no session
    assert client.get("/queue").status_code == 303  # still signed out: sent to /login

    anon = httpx.Client(base_url=station.url, timeout=30)
    anon.get("/login")
    no_token = anon.post("/login", data={"username": USER, "password": PASSWORD})
    assert no_token.status_code == 403 and "CSRF" in no_token.text

    client, ok = sign_in(station.url)
    assert ok.status_code == 303 and ok.headers["location"] == "/queue"
    queue = client.get("/queue")
    assert queue.status_code == 200 and 'id="queue"' in queue.text
    item = re.search(r'href="/item/(\d+)"', queue.text).group(1)
    forged = client.post(f"/item/{item}/approve", data={})
    assert forged.status_code == 403  # a signed-in session without the form's token cannot act
    wrong_token = client.post(f"/item/{item}/reject", data={"csrf": "x" * 43, "reason": "forged"})
    assert wrong_token.status_code == 403
    again = client.get(f"/item/{item}")
    assert again.status_code == 200 and 'id="decided"' not in again.text  # nothing was decided

    token = _csrf(again.text)
    assert client.post(f"/item/{item}/reject", data={"csrf": token, "reason": "  "}).status_code == 303
    assert 'id="decided"' not in client.get(f"/item/{item}").text  # a rejection needs a reason
    done = client.post(f"/item/{item}/reject", data={"csrf": token, "reason": "blurred photo"})
    assert done.status_code == 303
    late = client.post(f"/item/{item}/approve", data={"csrf": token}, follow_redirects=True)
    assert "already rejected by alice" in late.text  # a second decision does not overwrite the first
    assert "rejected by alice" in client.get(f"/item/{item}").text


def test_sessions_expire_and_cannot_be_forged():
    from backdrop.review.auth import Signer, hash_password, verify_password

    hashed = hash_password("pw")
    assert hashed.startswith("scrypt$") and verify_password("pw", hashed) and not verify_password("pw2", hashed)
    signer = Signer("key", minutes=1)
    cookie = signer.issue("alice", now=1000.0)
    assert signer.session(cookie, now=1030.0).user == "alice"
    assert signer.session(cookie, now=1061.0) is None  # expired
    assert Signer("other key", minutes=1).session(cookie, now=1030.0) is None  # another key's cookie
    assert signer.session(cookie.replace("alice", "admin"), now=1030.0) is None  # edited
    assert signer.session(signer.issue("alice"), now=time.time() + 61) is None


def test_nothing_is_served_from_outside_the_stores(station):
    from backdrop.data.predlog import sessions
    from backdrop.monitoring.audit import ReviewItem
    from backdrop.review.store import OutsideStoreError, confined

    client, _ = sign_in(station.url)
    client.get("/queue")  # syncs the queue into the log
    secret = station.project / "secret.txt"
    secret.write_text("private")
    with sessions(station.params.monitoring)() as s, s.begin():
        item = s.query(ReviewItem).order_by(ReviewItem.id.desc()).first()
        item_id, original = item.id, item.photo
        item.photo = "../secret.txt"  # a tampered queue row
    try:
        refused = client.get(f"/item/{item_id}/photo")
        assert refused.status_code == 404 and "private" not in refused.text
    finally:
        with sessions(station.params.monitoring)() as s, s.begin():
            s.get(ReviewItem, item_id).photo = original
    with pytest.raises(OutsideStoreError):
        confined(station.project / "review", "/etc/passwd")
    assert client.get("/static/../params.yaml").status_code == 404
    assert httpx.get(f"{station.url}/item/{item_id}/photo").status_code in (303, 307)  # signed out: no picture


def test_dashboard_links_the_champion_to_its_mlflow_run(tmp_path, monkeypatch):
    """A real MLflow registry (SQLite): the champion alias resolves to its version and run page."""
    from mlflow import MlflowClient

    from backdrop.config import load_params, tracking_uri
    from backdrop.review.app import champion

    from .conftest import write_params

    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params(write_params(tmp_path, {}))
    assert "error" in champion(params)  # no registered model yet: said, not raised
    client = MlflowClient(tracking_uri=tracking_uri(params))
    exp = client.create_experiment("backdrop-test")
    run = client.create_run(exp, run_name="train")
    name = params.register_.model_name
    client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, params.register_.alias, version.version)
    got = champion(params)
    assert got["version"] == version.version and got["run_id"] == run.info.run_id
    assert got["url"] == f"{params.monitoring.mlflow_ui_url}/#/experiments/{exp}/runs/{run.info.run_id}"


def test_cli_hashes_passwords_and_reports_routing(station):
    import json

    from typer.testing import CliRunner

    from backdrop.cli import app
    from backdrop.review.auth import verify_password

    runner = CliRunner()
    out = runner.invoke(app, ["review", "hash-password", "--password", "s3cret"])
    assert out.exit_code == 0 and verify_password("s3cret", out.stdout.strip())
    report = runner.invoke(app, ["review", "report", "--params", str(station.project / "params.yaml")])
    assert report.exit_code == 0, report.output
    got = json.loads(report.stdout)
    assert got["published"] >= 2 and "routing_recall" in got  # the audit photos were published
