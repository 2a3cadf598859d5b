"""backdrop: takes the background out of e-commerce product photos.

Nothing heavy is imported here: the CLI and the Airflow DAGs import stage modules lazily.
"""

__version__ = "0.1.0"
