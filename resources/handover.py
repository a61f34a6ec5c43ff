"""The session handover's collaborators as one named bundle (ARCHITECTURE §2, ORCHESTRATOR).

`session_handover` and the temporary-upload clean-up both hand over sessions; they get the same
`Handover` from here instead of assembling S3, buckets, Postgres, CONFIG_SVC and the registry
each in their own way."""

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource

from astra.guard.custody import prepare_client
from astra.orchestrator.handover import Handover
from resources.config_store import ConfigStoreResource
from resources.postgres import PostgresResource
from resources.registry import IngestRegistryResource
from resources.storage import StorageLayout


class HandoverResource(ConfigurableResource):
    s3: S3Resource
    storage: StorageLayout
    postgres: PostgresResource
    config_store: ConfigStoreResource
    registry: IngestRegistryResource

    def handover(self) -> Handover:
        return Handover(
            s3=prepare_client(self.s3.get_client()),
            settings=self.storage.settings(self.s3.endpoint_url),
            engine=self.postgres.engine(),
            config=self.config_store.service(),
            registry=self.registry.client(),
        )
