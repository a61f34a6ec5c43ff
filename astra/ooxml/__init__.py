"""The OOXML layer (placeholder, filled in below)."""
