"""GUARD: WORM custody of session audio (S3 Object Lock), a hash-chained ledger, and its audit."""

from astra.guard.checkpoints import CheckpointConflict, record_checkpoint
from astra.guard.custody import (
    CustodyError,
    CustodyRecord,
    audio_entry_key,
    check_custody,
    guard_key,
    place_in_custody,
    prepare_client,
    take_custody,
    verify_custody,
)
from astra.guard.ledger import GENESIS_HASH, Checkpoint, CustodyLedger, LedgerEntry, canonical_json, chain_hash
from astra.guard.merkle import merkle_root, merkle_root_hex
from astra.guard.verify import (
    Problem,
    UnknownTenant,
    VerifyReport,
    verify,
    verify_chain,
    verify_tenant_checkpoints,
)

__all__ = [
    "GENESIS_HASH",
    "Checkpoint",
    "CheckpointConflict",
    "CustodyError",
    "CustodyLedger",
    "CustodyRecord",
    "LedgerEntry",
    "Problem",
    "UnknownTenant",
    "VerifyReport",
    "audio_entry_key",
    "canonical_json",
    "chain_hash",
    "check_custody",
    "guard_key",
    "merkle_root",
    "merkle_root_hex",
    "place_in_custody",
    "prepare_client",
    "record_checkpoint",
    "take_custody",
    "verify",
    "verify_chain",
    "verify_custody",
    "verify_tenant_checkpoints",
]
