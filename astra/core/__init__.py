"""CORE: turns a session's speech and data into typed content bound to the template's zones (plain Python)."""
