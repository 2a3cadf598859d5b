"""MLflow in the production profile: a real tracking server on PostgreSQL, artifacts proxied to S3.

A run is logged, a model registered twice and the `champion` alias moved — all over HTTP — and the
model is loaded back through the alias (artifacts come back through the server's proxy).
"""

from __future__ import annotations

import uuid

import pytest
import requests

pytestmark = pytest.mark.slow


@pytest.fixture()
def client(mlflow_server):
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server["url"])
    try:
        yield mlflow.MlflowClient(tracking_uri=mlflow_server["url"])
    finally:
        mlflow.set_tracking_uri(previous)


def test_backend_store_is_the_throwaway_postgresql_database(mlflow_server):
    import sqlalchemy as sa

    engine = sa.create_engine(mlflow_server["db_url"])
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert {"experiments", "runs", "registered_models", "model_versions",
            "registered_model_aliases"} <= tables


def test_log_register_and_move_champion_over_http(client, mlflow_server):
    import boto3
    import mlflow
    import pandas as pd

    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input * 2

    exp_id = client.create_experiment("prod-test-" + uuid.uuid4().hex[:8])  # server's artifact root
    assert client.get_experiment(exp_id).artifact_location.startswith("mlflow-artifacts:")
    name = "backdrop-prod-test-" + uuid.uuid4().hex[:8]
    versions = []
    for step in range(2):
        with mlflow.start_run(experiment_id=exp_id):
            mlflow.log_param("step", step)
            mlflow.log_metric("test_iou_mean", 0.5 + step / 10)
            info = mlflow.pyfunc.log_model(name="model", python_model=Doubler(), pip_requirements=[])
        versions.append(mlflow.register_model(info.model_uri, name).version)
    assert versions == ["1", "2"]

    api = mlflow_server["url"] + "/api/2.0/mlflow"
    for version in versions:  # move the alias with plain HTTP, as any client in any language could
        r = requests.post(api + "/registered-models/alias", timeout=10,
                          json={"name": name, "alias": "champion", "version": version})
        assert r.status_code == 200, r.text
        got = requests.get(api + "/registered-models/alias", params={"name": name, "alias": "champion"},
                           timeout=10)
        assert got.status_code == 200 and got.json()["model_version"]["version"] == version, got.text
    assert client.get_model_version_by_alias(name, "champion").version == "2"

    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")  # downloaded through the proxy
    assert model.predict(pd.DataFrame({"x": [1.0, 2.0]}))["x"].tolist() == [2.0, 4.0]

    store = mlflow_server["artifacts"].removeprefix("s3://")
    bucket, prefix = store.split("/", 1)
    s3 = boto3.client("s3", endpoint_url=mlflow_server["s3_endpoint"], region_name="us-east-1",
                      aws_access_key_id="backdrop-test", aws_secret_access_key="backdrop-test-secret")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    assert any(k.endswith("MLmodel") for k in keys), keys
