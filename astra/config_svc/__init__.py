"""CONFIG_SVC: each tenant's zone map and style map, versioned in Postgres, cached in Redis."""

from astra.config_svc.service import (
    ConfigService,
    ConfigSnapshot,
    InvalidConfig,
    TenantNotFound,
    VersionNotFound,
)

__all__ = ["ConfigService", "ConfigSnapshot", "InvalidConfig", "TenantNotFound", "VersionNotFound"]
