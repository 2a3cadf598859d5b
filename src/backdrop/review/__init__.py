"""The review station: a web page where reviewers approve, reject or fix the cut-outs routing held
back and the audit sample, feeding the monitoring loop (`backdrop review serve`).

Server-rendered pages (`pages.py`), one vanilla-JS canvas editor (`static/review.js`); every asset
ships in the wheel, nothing comes from a CDN. Decisions go through the corrections intake
(`monitoring/corrections.py`) and are kept in the prediction log (`monitoring/audit.py`).
"""
