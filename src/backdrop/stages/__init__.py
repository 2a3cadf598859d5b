"""Pipeline stages: each a plain function, called by the CLI, dvc.yaml and the Airflow DAGs alike."""
