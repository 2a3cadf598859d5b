"""Serving: model specs → preprocessing → engines behind one `Segmenter` protocol, and what uses them.

* `specs`       — a spec (`champion`, `models:/...`, `model.pt`, `official:u2netp`, `.onnx`) resolved to
                  the model, its size and its pass settings (zoom, TTA); `NoModelError`.
* `base`        — the `Segmenter` protocol (`size`, `source`, `probabilities`, `predict_batch`,
                  `stream`) and its `Prediction`.
* `segmenter`   — `load_segmenter(spec, engine, precision, params=...)`: the one factory.
* `torch_engine`, `onnx_fast` (+ `quantize`) — the engines; `preprocess` — what they share.
* `remove` (`backdrop remove`), `api` (`backdrop serve`), `watch` (`backdrop watch`, the inference
  DAG), `runtime` (alias reload for the API) — the callers; `outputs`, `images`, `review` — output
  composition, upload decoding, review routing.

Every entry point takes its `Params` explicitly; only the CLI, the uvicorn factory and the DAGs read
params.yaml. Nothing heavy is imported here: `backdrop.serving.trigger` is imported by the Airflow DAG
at parse time, and the CLI imports each module only when its command runs.
"""
