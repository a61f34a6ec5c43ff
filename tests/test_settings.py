"""The settings table: custody retention between its floor and its ceiling, read strictly."""

from __future__ import annotations

import pytest

from astra.settings import MAX_RETENTION_DAYS, MIN_RETENTION_DAYS, InvalidSetting, Settings


@pytest.mark.parametrize("raw", ["29", "1", "0", "-5", "3650000", "99999999999", "30.5", "1e3", "3_0", "٣٠", "abc",
                                 "0x1e"])
def test_retention_outside_the_bounds_or_not_a_number_is_refused(raw):
    with pytest.raises(InvalidSetting) as err:
        Settings.from_env({"ASTRA_GUARD_RETENTION_DAYS": raw})
    assert "ASTRA_GUARD_RETENTION_DAYS" in str(err.value)


@pytest.mark.parametrize("raw,days", [("30", 30), (" 365 ", 365), (str(MAX_RETENTION_DAYS), MAX_RETENTION_DAYS)])
def test_retention_within_the_bounds_is_taken(raw, days):
    assert Settings.from_env({"ASTRA_GUARD_RETENTION_DAYS": raw}).guard_retention_days == days


def test_a_settings_object_cannot_be_built_below_the_floor():
    with pytest.raises(InvalidSetting):
        Settings(guard_retention_days=MIN_RETENTION_DAYS - 1)
    assert Settings().guard_retention_days >= MIN_RETENTION_DAYS


def test_unset_variables_take_the_defaults():
    s = Settings.from_env({})
    assert (s.database_url, s.uploads_bucket, s.guard_retention_days) == (None, "astra-uploads", 365)


def test_the_base_model_owner_is_no_customer_tenant():
    from astra.tenancy import BASE_MODEL_OWNER, InvalidKey, SessionKey, validate_model_owner, validate_slug

    with pytest.raises(InvalidKey, match="reserved"):
        validate_slug(BASE_MODEL_OWNER)
    with pytest.raises(InvalidKey, match="reserved"):
        SessionKey(BASE_MODEL_OWNER, "visit-1", 1)
    assert validate_model_owner(BASE_MODEL_OWNER) == BASE_MODEL_OWNER
    assert validate_slug("base", what="session id") == "base"  # only tenants are reserved
    assert validate_model_owner("acme") == "acme"
    with pytest.raises(InvalidKey):
        validate_model_owner("Not A Slug")


def test_the_model_stores_root_is_no_tenant():
    """models/<tenant>/… holds every tenant's models in the assets bucket: a tenant "models" would live inside it."""
    from astra.tenancy import MODEL_STORE_ROOT, InvalidKey, validate_slug

    with pytest.raises(InvalidKey, match="reserved"):
        validate_slug(MODEL_STORE_ROOT)
