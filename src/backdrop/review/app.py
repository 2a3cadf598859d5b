"""The review station's FastAPI app: sign-in, queue, one photo with its editor, decisions, dashboard.

Every page but `/login`, `/static/*` and `/healthz` needs a signed, unexpired session (else a
redirect to `/login`); every POST needs the session's CSRF token (else 403). Pictures are served
by item id from the review folder, the published cut-outs and the monitoring store only.
"""


import io
import logging
import time
from datetime import timedelta
from importlib import resources

from backdrop.config import Params, tracking_uri
from backdrop.review import pages
from backdrop.review.auth import LOGIN_COOKIE, SESSION_COOKIE, signer_from_env, verify_password
from backdrop.review.store import AlreadyDecided, OutsideStoreError, ReviewStore

log = logging.getLogger(__name__)

STATIC = {"review.js": "text/javascript", "review.css": "text/css"}
MAX_MASK_BYTES = 50_000_000


def champion(params: Params) -> dict:
    """The registry's champion and a link to its MLflow run (an `error` key when it cannot be read)."""
    rp = params.register_
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri(params))
        mv = client.get_model_version_by_alias(rp.model_name, rp.alias)
        run = client.get_run(mv.run_id)
        base = params.monitoring.mlflow_ui_url.rstrip("/")
        return {"name": rp.model_name, "alias": rp.alias, "version": mv.version, "run_id": mv.run_id,
                "url": f"{base}/#/experiments/{run.info.experiment_id}/runs/{mv.run_id}"}
    except Exception as exc:  # no registry, no champion yet: the dashboard still shows the rest
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def dashboard_data(params: Params, store: ReviewStore, champ: dict) -> dict:
    from sqlalchemy import select

    from backdrop.data.predlog import AlertEvent, AlertState, sessions, utcnow
    from backdrop.monitoring.alerts import RULE
    from backdrop.monitoring.audit import routing_report
    from backdrop.monitoring.drift import time_series

    series: dict[str, list] = {}
    for p in time_series(params, since=utcnow() - timedelta(days=30)):
        if p.scope in ("overall", "cluster"):
            key = "overall" if p.scope == "overall" else ("unclustered" if p.key == "none" else f"c{p.key}")
            series.setdefault(key, []).append((p.at, p.iou_mean))
    with sessions(params.monitoring)() as s:
        st = s.get(AlertState, RULE)
        state = {"firing": st.firing, "incident_id": st.incident_id, "opened_at": st.opened_at,
                 "scopes": st.scopes} if st else None
        events = [{"at": f"{ev.at:%Y-%m-%d %H:%M}", "kind": ev.kind, "incident_id": ev.incident_id,
                   "summary": ev.summary} for ev in s.scalars(select(AlertEvent).order_by(AlertEvent.at.desc()).limit(20))]
    now = utcnow()
    return {"series": series, "threshold": params.monitoring.threshold, "champion": champ, "alert_state": state,
            "events": events, "throughput": store.throughput(),
            "routing": routing_report(params, now - timedelta(days=7), now + timedelta(seconds=1))}


def create_app(params: Params):
    """The station for `params` (review:, serve: review/out folders, monitoring: log and store)."""
    from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

    rp = params.review
    signer = signer_from_env(rp.secret_env, rp.session_minutes)
    store = ReviewStore(params)
    cached: dict[str, tuple[float, dict]] = {}
    app = FastAPI(title="backdrop review", docs_url=None, redoc_url=None, openapi_url=None)

    def session_of(request: Request):
        return signer.session(request.cookies.get(SESSION_COOKIE))

    def need_user(request: Request):
        sess = session_of(request)
        if sess is None or sess.user not in rp.users:
            raise HTTPException(303, headers={"Location": "/login"})
        return sess

    async def need_csrf(request: Request):
        """The session (signed in) whose CSRF token the form carries; 403 otherwise."""
        sess = need_user(request)
        form = await request.form()
        if not signer.check_csrf(sess.nonce, form.get("csrf")):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        return sess, form

    def html(text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(text, status, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                                   "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                                                                  "style-src 'self' 'unsafe-inline'"})

    @app.exception_handler(OutsideStoreError)
    async def _outside(_request: Request, exc: OutsideStoreError):
        log.warning("refused: %s", exc)
        return Response("not found", 404)

    @app.exception_handler(AlreadyDecided)
    async def _decided(request: Request, exc: AlreadyDecided):
        from urllib.parse import quote

        item_id = request.path_params.get("item_id")
        return RedirectResponse(f"/item/{item_id}?error={quote(str(exc))}", 303)

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.get("/static/{name}")
    def static(name: str):
        if name not in STATIC:
            raise HTTPException(404)
        data = resources.files("backdrop.review").joinpath("static", name).read_bytes()
        return Response(data, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})

    @app.get("/login")
    def login_page(request: Request):
        nonce = request.cookies.get(LOGIN_COOKIE) or signer.login_nonce()
        resp = html(pages.login(signer.csrf(nonce)))
        resp.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict")
        return resp

    @app.post("/login")
    async def login(request: Request):
        form = await request.form()
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not signer.check_csrf(nonce, form.get("csrf")):
            return html(pages.login(signer.csrf(nonce or ""), "Missing or wrong CSRF token: reload the page."), 403)
        user, password = str(form.get("username", "")), str(form.get("password", ""))
        hashed = rp.users.get(user)
        if hashed is None or not verify_password(password, hashed):
            log.warning("review sign-in refused for %r", user[:64])
            return html(pages.login(signer.csrf(nonce), "Wrong user or password."), 401)
        resp = RedirectResponse("/queue", 303)
        resp.set_cookie(SESSION_COOKIE, signer.issue(user), max_age=int(rp.session_minutes * 60), httponly=True,
                        samesite="strict")
        return resp

    @app.post("/logout")
    async def logout(request: Request):
        await need_csrf(request)
        resp = RedirectResponse("/login", 303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    @app.get("/")
    def root():
        return RedirectResponse("/queue", 303)

    @app.get("/queue")
    def queue(request: Request, cluster: str = "", model: str = "", kind: str = "", status: str = "waiting",
              order: str = "confidence", max_age_h: float | None = None, page: int = 1):
        sess = need_user(request)
        store.sync()
        if cluster and cluster != "none" and not cluster.isdigit():
            raise HTTPException(422, "cluster must be a number or none")
        page = max(1, page)
        rows = store.listing(cluster=cluster, model=model, kind=kind, status=status, order=order,
                             max_age_h=max_age_h, limit=rp.page_size, offset=(page - 1) * rp.page_size)
        clusters, models = store.facets()
        filters = {"cluster": cluster, "model": model, "kind": kind, "status": status, "order": order,
                   "max_age_h": max_age_h}
        return html(pages.queue(rows, store.counts(), filters, clusters, models, sess.user,
                                signer.csrf(sess.nonce), page, rp.page_size))

    def item_or_404(item_id: int):
        row = store.get(item_id)
        if row is None:
            raise HTTPException(404, f"no review item {item_id}")
        return row

    @app.get("/next")
    def next_item(request: Request, after: int | None = None):
        need_user(request)
        store.sync()
        nid = store.next_waiting(after)
        return RedirectResponse(f"/item/{nid}" if nid else "/queue", 303)

    @app.get("/item/{item_id}")
    def item(request: Request, item_id: int, error: str = ""):
        from PIL import Image

        sess = need_user(request)
        row = item_or_404(item_id)
        with Image.open(store.photo_path(row.item)) as img:
            width, height = img.size
        return html(pages.item(row, sess.user, signer.csrf(sess.nonce), store.next_waiting(item_id), error[:300],
                               width, height))

    @app.get("/item/{item_id}/{what}")
    def picture(request: Request, item_id: int, what: str):
        from PIL import Image

        need_user(request)
        it = item_or_404(item_id).item
        if what == "photo":
            return FileResponse(store.photo_path(it), headers={"Cache-Control": "private, max-age=60"})
        if what == "cutout":
            return FileResponse(store.cutout_path(it), headers={"Cache-Control": "private, max-age=60"})
        if what == "published":
            path = store.published_path(it)
            if path is None or not path.exists():
                raise HTTPException(404, "not published")
            return FileResponse(path, headers={"Cache-Control": "no-store"})
        if what == "mask":  # the mask the editor starts from: the correction if any, else the prediction
            mask = store.correction_mask(it)
            mask = store.predicted_mask(it) if mask is None else mask
            buf = io.BytesIO()
            Image.fromarray(mask.astype("uint8") * 255, mode="L").save(buf, format="PNG", compress_level=1)
            return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"})
        raise HTTPException(404)

    def after(item_id: int):
        nid = store.next_waiting(item_id)
        return RedirectResponse(f"/item/{nid}" if nid else "/queue", 303)

    @app.post("/item/{item_id}/approve")
    async def approve(request: Request, item_id: int):
        sess, _ = await need_csrf(request)
        item_or_404(item_id)
        store.approve(item_id, sess.user)
        return after(item_id)

    @app.post("/item/{item_id}/reject")
    async def reject(request: Request, item_id: int):
        sess, form = await need_csrf(request)
        item_or_404(item_id)
        reason = str(form.get("reason", ""))
        if not reason.strip():
            return RedirectResponse(f"/item/{item_id}?error=a+rejection+needs+a+reason", 303)
        store.reject(item_id, sess.user, reason)
        return after(item_id)

    async def take_mask(request: Request, item_id: int, mask: UploadFile):
        from urllib.parse import quote

        from backdrop.monitoring.corrections import CorrectionError

        sess, _ = await need_csrf(request)
        item_or_404(item_id)
        data = await mask.read(MAX_MASK_BYTES + 1)
        if len(data) > MAX_MASK_BYTES:
            return RedirectResponse(f"/item/{item_id}?error=mask+file+too+large", 303)
        try:
            store.fix(item_id, sess.user, data, mask.filename or "mask.png")
        except CorrectionError as exc:
            return RedirectResponse(f"/item/{item_id}?error={quote(f'{exc.reason}: {exc}')}", 303)
        return after(item_id)

    @app.post("/item/{item_id}/fix")
    async def fix(request: Request, item_id: int, mask: UploadFile = File(...), csrf: str = Form("")):  # noqa: B008
        return await take_mask(request, item_id, mask)

    @app.post("/item/{item_id}/upload")
    async def upload(request: Request, item_id: int, mask: UploadFile = File(...), csrf: str = Form("")):  # noqa: B008
        return await take_mask(request, item_id, mask)

    @app.get("/dashboard")
    def dashboard(request: Request):
        sess = need_user(request)
        store.sync()
        hit = cached.get("champion")
        if hit is None or time.monotonic() - hit[0] > 60:
            hit = cached["champion"] = (time.monotonic(), champion(params))
        return html(pages.dashboard(dashboard_data(params, store, hit[1]), sess.user, signer.csrf(sess.nonce)))

    return app
