"""Server-rendered HTML of the station: plain string templates, every value escaped (`e`)."""

from __future__ import annotations

import html
from datetime import datetime
from urllib.parse import urlencode

from backdrop.data.predlog import utcnow


def e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def layout(title: str, body: str, user: str | None = None, csrf: str = "", active: str = "") -> str:
    nav = ""
    if user:
        links = "".join(f'<a href="{href}" class="{"on" if active == key else ""}">{label}</a>'
                        for key, href, label in (("queue", "/queue", "Queue"), ("dashboard", "/dashboard", "Dashboard")))
        nav = (f'<nav>{links}<span class="who">{e(user)}</span>'
               f'<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{e(csrf)}">'
               f'<button type="submit">Sign out</button></form></nav>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} · backdrop review</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="/static/review.css"></head>'
            f'<body><header><strong>backdrop</strong> review station{nav}</header><main>{body}</main></body></html>')


def login(csrf: str, error: str = "") -> str:
    err = f'<p class="error" id="error">{e(error)}</p>' if error else ""
    body = (f'<h1>Sign in</h1>{err}<form method="post" action="/login" class="login">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            f'<label>User <input name="username" id="username" autocomplete="username" required></label>'
            f'<label>Password <input name="password" id="password" type="password" autocomplete="current-password" '
            f'required></label><button type="submit" id="signin">Sign in</button></form>')
    return layout("Sign in", body)


def _age(at: datetime) -> str:
    minutes = max(0, int((utcnow() - at).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h" if minutes < 48 * 60 else f"{minutes // 1440} d"


def _pct(x) -> str:
    return "–" if x is None else f"{x:.1%}"


def queue(rows, counts: dict, filters: dict, clusters: list[str], models: list[str], user: str, csrf: str,
          page: int, page_size: int) -> str:
    def options(values, current, label):
        opts = [f'<option value="">{label}</option>'] + [
            f'<option value="{e(v)}"{" selected" if v == current else ""}>{e(v)}</option>' for v in values]
        return "".join(opts)

    stats = (f'<div class="counts"><span><b id="n-waiting">{counts["waiting"]}</b> waiting</span>'
             f'<span><b id="n-done">{counts["done_today"]}</b> done today</span>'
             f'<span><b>{_pct(counts["share_routed"])}</b> routed (24 h: {counts["routed_24h"]} of '
             f'{counts["predicted_24h"]})</span></div>')
    form = (f'<form method="get" action="/queue" class="filters">'
            f'<select name="cluster">{options(clusters, filters["cluster"], "all clusters")}</select>'
            f'<select name="model">{options(models, filters["model"], "all models")}</select>'
            f'<select name="kind">{options(["routed", "audit"], filters["kind"], "routed + audit")}</select>'
            f'<select name="status">{options(["waiting", "approved", "rejected", "fixed"], filters["status"], "any status")}'
            f'</select><input name="max_age_h" type="number" min="0" step="any" placeholder="max age (h)" '
            f'value="{e(filters["max_age_h"] or "")}"><select name="order">'
            f'<option value="confidence"{" selected" if filters["order"] == "confidence" else ""}>least confident first</option>'
            f'<option value="newest"{" selected" if filters["order"] == "newest" else ""}>newest first</option>'
            f'</select><button type="submit">Filter</button></form>')
    trs = "".join(
        f'<tr class="{e(r.item.kind)}"><td><a href="/item/{r.item.id}" class="open">'
        f'<img src="/item/{r.item.id}/cutout" loading="lazy" alt="" class="thumb"></a></td>'
        f'<td><a href="/item/{r.item.id}" class="open">{e(r.item.name)}</a></td><td>{e(r.item.kind)}</td>'
        f'<td>{r.item.confidence:.3f}</td><td>{e("–" if r.cluster is None else f"c{r.cluster}")}'
        f'{" " + e(r.cluster_name) if r.cluster_name else ""}</td><td>{e(r.model_version or r.item.model)}</td>'
        f'<td>{_age(r.item.queued_at)}</td><td>{e(r.item.status)}</td></tr>' for r in rows)
    more = urlencode({k: v for k, v in {**filters, "page": page + 1}.items() if v not in ("", None)})
    pager = f'<p><a href="/queue?{e(more)}">next page</a></p>' if len(rows) == page_size else ""
    table = (f'<table id="queue"><thead><tr><th></th><th>photo</th><th>kind</th><th>confidence</th><th>cluster</th>'
             f'<th>model</th><th>age</th><th>status</th></tr></thead><tbody>{trs}</tbody></table>' if rows
             else '<p class="empty">Nothing waiting. Well done.</p>')
    return layout("Queue", f"<h1>Review queue</h1>{stats}{form}{table}{pager}", user, csrf, "queue")


def item(row, user: str, csrf: str, next_id: int | None, error: str = "", width: int = 0, height: int = 0) -> str:
    it = row.item
    err = f'<p class="error" id="error">{e(error)}</p>' if error else ""
    decided = ""
    if it.status != "waiting":
        decided = (f'<p class="decided" id="decided">{e(it.status)} by {e(it.reviewer)} at '
                   f'{it.decided_at:%Y-%m-%d %H:%M} UTC{": " + e(it.reason) if it.reason else ""}'
                   f'{f" · published as {e(it.published)}" if it.published else ""}</p>')
    nxt = f'<a href="/item/{next_id}" id="next" class="button">Next (n)</a>' if next_id else \
        '<a href="/queue" id="next" class="button">Queue (n)</a>'
    cluster = "–" if row.cluster is None else f"c{row.cluster} {row.cluster_name or ''}"
    hidden = f'<input type="hidden" name="csrf" value="{e(csrf)}">'
    body = f'''<h1>{e(it.name)} <small class="kind {e(it.kind)}">{e(it.kind)}</small></h1>{err}{decided}
<p class="meta">confidence {it.confidence:.3f} · cluster {e(cluster)} · model {e(row.model_version or it.model)} ·
photo {width}×{height} · image id <code>{e(it.image_id)}</code></p>
<div class="views">
 <figure><img src="/item/{it.id}/photo" alt="photo" id="photo-img"><figcaption>photo</figcaption></figure>
 <figure class="checker"><img src="/item/{it.id}/cutout" alt="cut-out"><figcaption>cut-out over a checkerboard</figcaption></figure>
 <figure class="white"><img src="/item/{it.id}/cutout" alt="cut-out on white"><figcaption>over the shop's white</figcaption></figure>
</div>
<div class="actions">
 <form method="post" action="/item/{it.id}/approve" id="approve-form" class="inline">{hidden}
  <button type="submit" id="approve" class="good">Approve (a)</button></form>
 <form method="post" action="/item/{it.id}/reject" id="reject-form" class="inline">{hidden}
  <input name="reason" id="reason" placeholder="reason, e.g. not a product photo" required>
  <button type="submit" id="reject" class="bad">Reject (r)</button></form>
 {nxt}
</div>
<section class="editor" id="editor" data-item="{it.id}" data-width="{width}" data-height="{height}"
 data-csrf="{e(csrf)}">
 <h2>Fix the mask</h2>
 <div class="tools">
  <button type="button" data-tool="brush" id="tool-brush" class="on">Brush (b)</button>
  <button type="button" data-tool="eraser" id="tool-eraser">Eraser (e)</button>
  <button type="button" data-tool="pan" id="tool-pan">Pan (space)</button>
  <label>size <input type="range" id="brush-size" min="1" max="200" value="24"></label>
  <button type="button" id="zoom-in">+</button><button type="button" id="zoom-out">−</button>
  <button type="button" id="zoom-fit">fit</button>
  <button type="button" id="undo">Undo (ctrl+z)</button>
  <label><input type="checkbox" id="overlay" checked> overlay</label>
  <button type="button" id="save-fix" class="good">Save fix</button>
  <span id="editor-status"></span>
 </div>
 <canvas id="canvas" width="900" height="600"></canvas>
</section>
<form method="post" action="/item/{it.id}/upload" enctype="multipart/form-data" class="upload" id="upload-form">{hidden}
 <label>or upload a corrected mask (PNG at {width}×{height}) <input type="file" name="mask" accept="image/png" required></label>
 <button type="submit">Upload</button></form>
<script src="/static/review.js"></script>'''
    return layout(it.name, body, user, csrf, "queue")


def _chart(series: dict[str, list[tuple[datetime, float]]], threshold: float) -> str:
    """An inline SVG line chart of IoU over time, one line per scope."""
    points = [p for values in series.values() for p in values]
    if not points:
        return '<p class="empty">No monitored IoU yet: the monitoring DAG writes a point each run.</p>'
    w, h, pad = 760, 260, 40
    t0, t1 = min(p[0] for p in points), max(p[0] for p in points)
    span = max((t1 - t0).total_seconds(), 1.0)
    lo = min(min(p[1] for p in points), threshold) - 0.01
    lo = max(0.0, lo)

    def xy(at, v):
        return (pad + (at - t0).total_seconds() / span * (w - 2 * pad),
                h - pad - (v - lo) / max(1.0 - lo, 1e-6) * (h - 2 * pad))

    colours = ["#222", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    lines, legend = [], []
    for i, (key, values) in enumerate(sorted(series.items(), key=lambda kv: (kv[0] != "overall", kv[0]))):
        c = colours[i % len(colours)]
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(a, v) for a, v in values))
        lines.append(f'<polyline fill="none" stroke="{c}" stroke-width="{3 if key == "overall" else 1.5}" points="{pts}"/>')
        lines.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{c}"/>' for x, y in (xy(a, v) for a, v in values))
        legend.append(f'<span style="color:{c}">■ {e(key)}</span>')
    _, ty = xy(t0, threshold)
    axis = (f'<line x1="{pad}" y1="{ty:.1f}" x2="{w - pad}" y2="{ty:.1f}" stroke="#c00" stroke-dasharray="4 3"/>'
            f'<text x="{w - pad}" y="{ty - 4:.1f}" text-anchor="end" font-size="11" fill="#c00">threshold {threshold}</text>'
            f'<text x="{pad}" y="{h - 8}" font-size="11">{t0:%m-%d %H:%M}</text>'
            f'<text x="{w - pad}" y="{h - 8}" font-size="11" text-anchor="end">{t1:%m-%d %H:%M} UTC</text>'
            f'<text x="4" y="{pad}" font-size="11">1.0</text><text x="4" y="{h - pad}" font-size="11">{lo:.2f}</text>')
    return (f'<svg id="iou-chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
            f'aria-label="monitored IoU per cluster">{axis}{"".join(lines)}</svg><p class="legend">{" ".join(legend)}</p>')


def dashboard(data: dict, user: str, csrf: str) -> str:
    champ = data["champion"]
    if champ.get("error"):
        champion = f'<p>Champion: unavailable ({e(champ["error"])})</p>'
    else:
        champion = (f'<p id="champion">Champion <b>{e(champ["name"])} v{e(champ["version"])}</b> '
                    f'(@{e(champ["alias"])}) · <a href="{e(champ["url"])}" target="_blank" rel="noopener">'
                    f'MLflow run {e(champ["run_id"][:8])}</a></p>')
    state = data["alert_state"]
    firing = (f'<p class="bad" id="alert-open">Alert open: {e(state["incident_id"])} since {e(state["opened_at"])} '
              f'({e(state["scopes"])})</p>' if state and state["firing"] else '<p class="good" id="alert-open">No open alert.</p>')
    events = "".join(f'<tr><td>{e(ev["at"])}</td><td>{e(ev["kind"])}</td><td>{e(ev["incident_id"])}</td>'
                     f'<td>{e(ev["summary"])}</td></tr>' for ev in data["events"])
    events = (f'<table><thead><tr><th>at (UTC)</th><th>kind</th><th>incident</th><th>summary</th></tr></thead>'
              f'<tbody>{events}</tbody></table>' if events else '<p class="empty">No alert sent yet.</p>')
    thr = "".join(f"<tr><td>{e(d)}</td><td>{e(w)}</td><td>{n}</td></tr>" for d, w, n in data["throughput"])
    thr = (f'<table id="throughput"><thead><tr><th>day</th><th>reviewer</th><th>decisions</th></tr></thead>'
           f'<tbody>{thr}</tbody></table>' if thr else '<p class="empty">No decisions in the last 7 days.</p>')
    r = data["routing"]
    routing = (f'<ul id="routing"><li>routed decided: {r["routed_decided"]}, needed a fix: {r["routed_needed_fix"]} '
               f'({_pct(r["routed_needed_fix_share"])})</li><li>audit decided: {r["audit_decided"]}, bad: '
               f'{r["audit_bad"]} ({_pct(r["audit_bad_share"])}) of {r["published"]} published</li>'
               f'<li>share of bad cut-outs routing caught (estimated from the audit): {_pct(r["routing_recall"])}</li></ul>')
    body = (f'<h1>Quality dashboard</h1>{champion}<h2>Monitored IoU per cluster (alert sample: audit, not routed)</h2>'
            f'{_chart(data["series"], data["threshold"])}<h2>Alerts</h2>{firing}{events}'
            f'<h2>Routing, last 7 days</h2>{routing}<h2>Reviewer throughput</h2>{thr}')
    return layout("Dashboard", body, user, csrf, "dashboard")
