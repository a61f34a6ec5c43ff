"""The catalog of intents and domains that template zones may bind to."""

from __future__ import annotations

from dagster import ConfigurableResource

from astra.ingest.zones import load_known_intents
from astra.settings import DEFAULT_INTENT_CATALOG
from resources.env import env_or


class IntentCatalogResource(ConfigurableResource):
    path: str = DEFAULT_INTENT_CATALOG

    @classmethod
    def from_env(cls) -> IntentCatalogResource:
        return cls(path=env_or("intent_catalog", DEFAULT_INTENT_CATALOG))

    def known_intents(self) -> set[str]:
        return load_known_intents(self.path)
