"""CONFIG_SVC: each tenant's zone map and style map, versioned in Postgres, cached in Redis."""

from astra.config_svc.service import (
    ConfigCacheUnavailable,
    ConfigService,
    ConfigSnapshot,
    InvalidConfig,
    TenantNotFound,
    VersionNotFound,
)

__all__ = [
    "ConfigCacheUnavailable",
    "ConfigService",
    "ConfigSnapshot",
    "InvalidConfig",
    "TenantNotFound",
    "VersionNotFound",
]
