"""Serving: the fast ONNX path, the HTTP API, the upload watcher and review routing.

Nothing heavy is imported here: `backdrop.serving.trigger` is imported by the Airflow DAG at parse
time, and the CLI imports each module only when its command runs.
"""
