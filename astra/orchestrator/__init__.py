"""ORCHESTRATOR: runs a session (config snapshot, dedup registration over gRPC, custody handover)."""
