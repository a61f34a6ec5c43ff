"""Dynamic partitions of ARCHITECTURE §3. Keys are lowercase [a-z0-9-] (astra.tenancy enforces it)."""

from dagster import DynamicPartitionsDefinition

tenants_partitions = DynamicPartitionsDefinition(name="tenants")  # key = tenant slug
sessions_partitions = DynamicPartitionsDefinition(name="sessions")  # key = <tenant>--<session_id>--v<n>
