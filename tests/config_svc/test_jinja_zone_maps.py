"""CONFIG_SVC and docxtpl templates' zone maps (issue 11): "language": "jinja", kinds flag and record, fields,
marked, zone ids that are Jinja identifiers; a map mixing the two languages' zones is refused."""

from __future__ import annotations

import pytest
import redis

from astra.config_svc import ConfigService, InvalidConfig
from astra.config_svc.service import check_config
from astra.db import make_engine
from tests.config_svc.maps import SHA, jinja_maps, maps


def test_a_jinja_zone_map_is_a_valid_config():
    assert check_config(*jinja_maps(), SHA) == []
    zone_map, style_map = jinja_maps()
    zone_map["zones"][1]["fields"].append("Unit price")  # a string key, r['Unit price'], matched to a header
    assert check_config(zone_map, style_map, SHA) == []


def _jinja_problems(edit) -> list[str]:
    zone_map, style_map = jinja_maps()
    edit(zone_map)
    return check_config(zone_map, style_map, SHA)


@pytest.mark.parametrize("edit, field", [
    (lambda zm: zm["zones"][0].update(kind="image"), "zone_map.zones[0].kind"),  # no image zone in docxtpl's
    (lambda zm: zm["zones"][0].update(declared_by="placeholder"), "zone_map.zones[0].declared_by"),
    (lambda zm: zm["zones"][0].pop("marked"), "zone_map.zones[0]"),
    (lambda zm: zm["zones"][0].pop("declared_by"), "zone_map.zones[0]"),
    (lambda zm: zm["zones"][3].update(speaker=True), "zone_map.zones[3]"),  # the template's expressions decide
    (lambda zm: zm["zones"][0].update(fields=["name", "name"]), "zone_map.zones[0].fields"),
    (lambda zm: zm["zones"][0].update(fields=[]), "zone_map.zones[0].fields"),
    (lambda zm: zm["zones"][0].update(fields=[""]), "zone_map.zones[0].fields[0]"),
    (lambda zm: zm["zones"][0].update(marked="yes"), "zone_map.zones[0].marked"),
    (lambda zm: zm.update(language="docxtpl"), "zone_map.language"),
    (lambda zm: zm["zones"][0].update(id="9lives"), "zone_map.zones[0].id"),
    (lambda zm: zm["zones"][0].update(id="x" * 65), "zone_map.zones[0].id"),
])
def test_a_jinja_zone_map_is_held_to_its_language(edit, field):
    problems = _jinja_problems(edit)
    assert problems and problems[0].startswith(field + ":"), problems


@pytest.mark.parametrize("kind", ["flag", "record", "table"])
def test_the_fallback_zone_of_a_jinja_map_takes_utterances(kind):
    problems = _jinja_problems(lambda zm: zm["zones"][4].update(kind=kind))
    assert problems == [f"zone_map.fallback_zone: 'notes' is a {kind} zone; the fallback zone receives utterances "
                        "and must be a text or list zone"]


@pytest.mark.parametrize("edit, field", [
    (lambda zm: zm["zones"][0].update(kind="flag"), "zone_map.zones[0].kind"),
    (lambda zm: zm["zones"][0].update(kind="record"), "zone_map.zones[0].kind"),
    (lambda zm: zm["zones"][0].update(declared_by="jinja"), "zone_map.zones[0].declared_by"),
    (lambda zm: zm["zones"][0].update(marked=True), "zone_map.zones[0]"),
    (lambda zm: zm["zones"][0].update(fields=["a"]), "zone_map.zones[0]"),
])
def test_a_grammar_zone_map_has_no_jinja_zone(edit, field):
    zone_map, style_map = maps()
    edit(zone_map)
    problems = check_config(zone_map, style_map, SHA)
    assert problems and problems[0].startswith(field + ":"), problems


def test_grammar_zone_ids_may_hold_capitals_too():
    zone_map, style_map = maps()
    zone_map["zones"][0]["id"] = "Summary_2"
    style_map["zones"] = {"Summary_2": style_map["zones"]["summary"]}
    assert check_config(zone_map, style_map, SHA) == []


@pytest.mark.integration
def test_a_jinja_zone_map_is_published_and_read_back(pg_url, redis_url, redis_prefix, tenant):
    svc = ConfigService(make_engine(pg_url), redis.Redis.from_url(redis_url), redis_prefix)
    zone_map, style_map = jinja_maps()
    assert svc.publish(tenant, zone_map, style_map, SHA, "run-jinja") == 1
    snap = svc.snapshot(tenant)  # the cache's copy
    assert snap.zone_map == zone_map and snap.style_map == style_map
    svc.redis.delete(svc.cache_key(tenant))
    snap = svc.snapshot(tenant)  # Postgres's, validated again on the way
    assert snap.zone_map == zone_map and snap.style_map == style_map
    zone_map["zones"][2]["kind"] = "image"
    with pytest.raises(InvalidConfig, match=r"zone_map\.zones\[2\]\.kind"):
        svc.publish(tenant, zone_map, style_map, SHA, "run-bad")
