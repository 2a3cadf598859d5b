"""The raw store's manifest (`data/raw/manifest.csv`): one row per ingested pair, written by ingest and
read by validate, prepare and the quality benches."""

MANIFEST_FIELDS = [
    "pair_id", "stem", "image_path", "mask_path", "image_sha256", "mask_sha256",
    "image_bytes", "mask_bytes", "source_drop", "source_image", "source_mask",
    "received_at", "vendor", "license", "version", "superseded_by",
]
