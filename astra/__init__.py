"""ASTRA engines and services. Plain Python: nothing under astra/ imports Dagster."""
