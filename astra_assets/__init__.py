"""The Dagster layer: assets, checks and the Definitions object. Thin: engines live in astra/."""
