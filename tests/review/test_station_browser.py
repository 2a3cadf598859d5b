"""The review station in a real headless Chromium (Debian's, through Selenium): a reviewer signs in,
opens the queue and a routed photo, paints a correction with the mouse and saves it; approves one
photo and rejects another. The screenshots in the README are taken here: with
BACKDROP_DOCS_SCREENSHOTS=1 into docs/img/review-*.png, else into the test's tmp folder (so `make test`
leaves the checkout clean).
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from tests.browser import chromium, screenshot

from .conftest import PASSWORD, REPO, USER

pytestmark = pytest.mark.slow
IMG = REPO / "docs" / "img" if os.environ.get("BACKDROP_DOCS_SCREENSHOTS") == "1" else None


def _wait(driver, condition, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _item(params, item_id):
    from backdrop.data.predlog import sessions
    from backdrop.monitoring.audit import ReviewItem

    with sessions(params.monitoring)() as s:
        return s.get(ReviewItem, item_id)


def _largest_waiting(params) -> int:
    """The waiting routed item whose prediction has the most foreground (an empty one cannot be approved
    as a correction: the intake refuses an empty mask)."""
    from backdrop.data.predlog import Prediction, sessions
    from backdrop.monitoring.audit import ReviewItem

    with sessions(params.monitoring)() as s:
        return s.scalar(select(ReviewItem.id).join(Prediction, Prediction.id == ReviewItem.prediction_id)
                        .where(ReviewItem.status == "waiting", ReviewItem.kind == "routed")
                        .order_by(Prediction.coverage.desc()).limit(1))


def _register_champion(params) -> str:
    """A registered version with the champion alias in the project's MLflow store (SQLite); its run id."""
    from mlflow import MlflowClient

    from backdrop.config import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(params))
    run = client.create_run(client.create_experiment("backdrop"), run_name="train")
    name = params.register_.model_name
    client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, params.register_.alias, version.version)
    return run.info.run_id


def _waiting(params, kind: str) -> list[int]:
    from backdrop.data.predlog import Prediction, sessions
    from backdrop.monitoring.audit import ReviewItem

    with sessions(params.monitoring)() as s:
        return list(s.scalars(select(ReviewItem.id).join(Prediction, Prediction.id == ReviewItem.prediction_id)
                              .where(ReviewItem.status == "waiting", ReviewItem.kind == kind)
                              .order_by(Prediction.coverage.desc())))


def _open_first(driver, url, kind="routed", item_id=None):
    """Open the queue and click a photo: the first of `kind`, or `item_id`."""
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/queue?kind={kind}")
    css = f'#queue a.open[href="/item/{item_id}"]' if item_id else "#queue a.open"
    driver.find_element(By.CSS_SELECTOR, css).click()
    _wait(driver, lambda d: d.find_element(By.ID, "editor").get_attribute("data-ready") == "1")
    return int(driver.current_url.rstrip("/").split("/")[-1])


def test_reviewer_fixes_approves_and_rejects_in_the_browser(station, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from backdrop.data.predlog import Correction, Prediction, Store, read_mask, sessions
    from backdrop.monitoring.run import evaluate

    params, url = station.params, station.url
    with chromium(1280, 1400) as driver:
        # sign in: a wrong password is refused first
        driver.get(f"{url}/queue")
        assert driver.current_url.endswith("/login")
        driver.find_element(By.ID, "username").send_keys(USER)
        driver.find_element(By.ID, "password").send_keys("wrong password")
        driver.find_element(By.ID, "signin").click()
        # the refusal is a new page: wait for it rather than reading the one still on screen
        error = _wait(driver, lambda d: (d.find_elements(By.ID, "error") or [None])[0])
        assert "Wrong user or password" in error.text
        driver.find_element(By.ID, "username").clear()
        driver.find_element(By.ID, "username").send_keys(USER)
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "signin").click()
        _wait(driver, lambda d: d.current_url.endswith("/queue"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#queue tbody tr")
        assert len(rows) == 6 and int(driver.find_element(By.ID, "n-waiting").text) == 6  # 4 routed + 2 audit
        # every row's cut-out thumbnail is served and decodes (they load lazily: wait for them)
        _wait(driver, lambda d: d.execute_script(
            "const t = [...document.querySelectorAll('img.thumb')];"
            "t.forEach(i => i.loading = 'eager');"
            "return t.length === 6 && t.every(i => i.complete && i.naturalWidth > 0);"))
        screenshot(driver, (IMG or tmp_path) / "review-queue.png")

        # 1. fix: paint a stroke across the photo with the mouse, save
        fix_id = _open_first(driver, url)
        item = _item(params, fix_id)
        assert item.kind == "routed" and item.status == "waiting"
        routed_cutout = (station.project / "review" / item.cutout).read_bytes()
        canvas = driver.find_element(By.ID, "canvas")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        w, h = canvas.size["width"], canvas.size["height"]
        chain = ActionChains(driver).move_to_element_with_offset(canvas, 0, -h // 3).click_and_hold()
        for i in range(8):  # a zig-zag stroke down the middle of the photo (brush 24 photo pixels)
            chain.move_by_offset(w // 30 * (1 if i % 2 else -1), h // 12)
        chain.release().perform()
        screenshot(driver, (IMG or tmp_path) / "review-item.png")
        driver.find_element(By.ID, "save-fix").click()
        _wait(driver, lambda d: f"/item/{fix_id}" not in d.current_url)

        fixed = _item(params, fix_id)
        assert fixed.status == "fixed" and fixed.reviewer == USER and fixed.correction_id is not None
        store = Store.from_params(params.monitoring)
        with sessions(params.monitoring)() as s:
            corr = s.get(Correction, fixed.correction_id)
            pred = s.get(Prediction, corr.prediction_id)
        assert corr.source == "review" and corr.image_id == fixed.image_id
        mask = read_mask(store, corr.mask_path)  # the correction's mask exists, at the photo's size
        assert mask.shape == (pred.height, pred.width) and set(np.unique(mask)) <= {0, 255}
        predicted = read_mask(store, pred.mask_path) >= 128
        assert (mask >= 128).sum() > predicted.sum()  # the brush added foreground
        assert corr.iou is not None and 0.0 < corr.iou < 1.0  # the monitoring IoU for that photo
        published = station.project / "cutouts" / fixed.published
        assert published.exists() and published.read_bytes() != routed_cutout
        alpha = np.asarray(Image.open(published).getchannel("A"))
        assert np.array_equal(alpha >= 128, mask >= 128)  # published with the corrected mask
        old_alpha = np.asarray(Image.open(io.BytesIO(routed_cutout)).getchannel("A"))
        assert not np.array_equal(alpha >= 128, old_alpha >= 128)

        # 2. approve with the keyboard shortcut: the routed cut-out is published as it was
        approve_id = _open_first(driver, url, item_id=_largest_waiting(params))
        driver.find_element(By.TAG_NAME, "body").send_keys("a")
        _wait(driver, lambda d: f"/item/{approve_id}" not in d.current_url)
        approved = _item(params, approve_id)
        assert approved.status == "approved" and approved.reviewer == USER
        assert (station.project / "cutouts" / approved.published).read_bytes() == \
            (station.project / "review" / approved.cutout).read_bytes()
        with sessions(params.monitoring)() as s:
            assert s.get(Correction, approved.correction_id).iou == pytest.approx(1.0)  # approved = right

        # 3. reject with a reason (r focuses the reason, r again submits)
        reject_id = _open_first(driver, url)
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("r")
        driver.switch_to.active_element.send_keys("two products in one photo")
        driver.find_element(By.ID, "reject").click()
        _wait(driver, lambda d: f"/item/{reject_id}" not in d.current_url)
        rejected = _item(params, reject_id)
        assert rejected.status == "rejected" and rejected.reason == "two products in one photo"
        assert rejected.published is None

        # 4. the audit items (published already): approve one, upload a corrected mask file for the other
        first, second = _waiting(params, "audit")
        _open_first(driver, url, kind="audit", item_id=first)
        driver.find_element(By.ID, "approve").click()
        _wait(driver, lambda d: f"/item/{first}" not in d.current_url)
        _open_first(driver, url, kind="audit", item_id=second)
        photo = Image.open(station.project / "review" / _item(params, second).photo)
        upload = np.zeros((photo.height, photo.width), np.uint8)
        upload[photo.height // 4: 3 * photo.height // 4, photo.width // 4: 3 * photo.width // 4] = 255
        Image.fromarray(upload).save(station.project / "upload-mask.png")
        driver.find_element(By.CSS_SELECTOR, "#upload-form input[type=file]").send_keys(
            str(station.project / "upload-mask.png"))
        driver.find_element(By.CSS_SELECTOR, "#upload-form button").click()
        _wait(driver, lambda d: f"/item/{second}" not in d.current_url)
        assert _item(params, second).status == "fixed"
        audit_iou = []
        with sessions(params.monitoring)() as s:
            for audit_id in (first, second):
                corr_id = _item(params, audit_id).correction_id
                if corr_id is not None:  # an approved empty cut-out is no mask to measure
                    audit_iou.append(s.get(Correction, corr_id).iou)
        ev = evaluate(params, report=False)  # what the monitoring DAG's evaluate task runs
        assert ev.overall["n"] == len(audit_iou) >= 1  # the audit items only, not the routed ones
        assert ev.overall["iou_mean"] == pytest.approx(float(np.mean(audit_iou)))
        assert ev.routing["routed_decided"] == 3 and ev.routing["routed_needed_fix"] == 2

        run_id = _register_champion(params)
        driver.get(f"{url}/dashboard")
        assert driver.find_element(By.ID, "iou-chart")
        link = driver.find_element(By.CSS_SELECTOR, "#champion a")
        assert link.get_attribute("href").endswith(f"/runs/{run_id}")
        assert "Champion" in driver.page_source and "routed decided: 3" in driver.find_element(By.ID, "routing").text
        assert USER in driver.find_element(By.ID, "throughput").text
        screenshot(driver, (IMG or tmp_path) / "review-dashboard.png")

    with sessions(params.monitoring)() as s:  # history: every decision kept with its correction
        sources = s.scalars(select(Correction.source)).all()
    assert sources.count("review") == 2 + len(audit_iou)  # fix, approve, the audit ones (a rejection adds none)
