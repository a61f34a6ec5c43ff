"""INGEST: atomization, upload audit, zone and style map extraction, asset dedup registry."""
