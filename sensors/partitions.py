"""What both upload sensors do with the partitions they discover."""

from dagster import DynamicPartitionsDefinition, SensorEvaluationContext


def add_new_partitions(context: SensorEvaluationContext, partitions_def: DynamicPartitionsDefinition,
                       keys: list[str]) -> list:
    """The dynamic-partition request for the keys the instance does not have yet (or none)."""
    new = [k for k in dict.fromkeys(keys) if not context.instance.has_dynamic_partition(partitions_def.name, k)]
    return [partitions_def.build_add_request(new)] if new else []
