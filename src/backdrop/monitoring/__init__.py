"""Monitoring loop: prediction log, corrections intake, IoU drift, alerts and the retraining trigger.

Modules import their heavy dependencies (SQLAlchemy, numpy, PIL, evidently, mlflow) lazily or at module
level only where they are needed, so `backdrop --help` and the DAG files stay cheap.
"""
