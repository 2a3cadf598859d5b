"""Data sources: synthetic studio packshots with exact masks (:mod:`backdrop.data.synth`)."""
