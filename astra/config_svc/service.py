"""Tenant Config Service: the single source of truth for each tenant's zone map and style map.

Postgres holds every version (1, 2, 3… per tenant, gap-free); Redis is a read-through cache of
the latest one at `<prefix>:config:<tenant>`, a hash `{version, snapshot}`.

How no reader sees an older version once `publish` returns:
  1. before commit, publish *reserves* version N in the cache (version = N, snapshot removed);
     if Redis cannot take the reservation, nothing is published;
  2. a hash without a snapshot is a miss: readers go to Postgres;
  3. every cache write is a compare-and-set that only accepts a higher version, or the reserved
     one: a reader holding N-1 cannot put it back;
  4. after commit, publish fills in N; if that write is lost, readers fill it from Postgres.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import redis
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from astra.config_svc import validation
from astra.db.schema import tenant_config_versions as tcv
from astra.db.schema import tenants
from astra.tenancy import validate_slug

log = logging.getLogger(__name__)

CACHE_TTL_SECONDS = 3600
# A reservation whose publish never commits stops the cache from filling for this long.
RESERVATION_TTL_SECONDS = 60
# After a Redis error, readers go straight to Postgres for this long instead of paying a
# connect timeout on every read while Redis is down.
CACHE_BACKOFF_SECONDS = 5.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Every script first clears a key that is not a hash (junk of another type would make each call
# fail with WRONGTYPE), and reads a version that is not a number as "no version".
_CLEAR_WRONG_TYPE = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
"""

# KEYS[1] cache key; ARGV[1] version; ARGV[2] snapshot JSON; ARGV[3] ttl.
_CAS_LUA = _CLEAR_WRONG_TYPE + """
local cur = tonumber(redis.call('HGET', KEYS[1], 'version'))
local filled = redis.call('HEXISTS', KEYS[1], 'snapshot') == 1
local v = tonumber(ARGV[1])
if (not cur) or cur < v or (cur == v and not filled) then
  redis.call('HSET', KEYS[1], 'version', ARGV[1], 'snapshot', ARGV[2])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 1
end
return 0
"""

# KEYS[1] cache key; ARGV[1] the snapshot found bad ("" when the key was of the wrong type).
# Drops it only if nobody replaced it since.
_DROP_BAD_LUA = _CLEAR_WRONG_TYPE + """
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'snapshot') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS[1] cache key; ARGV[1] version being published; ARGV[2] ttl. Runs while the publisher holds
# the tenant's row lock, so ARGV[1] is Postgres's next version: whatever the cache holds (a
# higher version from a restored or foreign database, junk) is wrong and is replaced.
_RESERVE_LUA = _CLEAR_WRONG_TYPE + """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


class TenantNotFound(LookupError):
    def __init__(self, tenant: str):
        super().__init__(f"tenant {tenant!r} has no configuration")
        self.tenant = tenant


class VersionNotFound(LookupError):
    def __init__(self, tenant: str, version: int):
        super().__init__(f"tenant {tenant!r} has no configuration version {version}")
        self.tenant, self.version = tenant, version


class ConfigCacheUnavailable(RuntimeError):
    """Publishing needs the cache to take the new version's reservation; Redis did not answer."""


class InvalidConfig(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("invalid configuration: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ConfigSnapshot:
    tenant: str
    version: int
    zone_map: dict[str, Any]
    style_map: dict[str, Any]
    template_sha256: str
    created_by_run: str
    created_at: str
    template_name: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


class BadCacheEntry(ValueError):
    """A cache entry that is not a valid snapshot of the tenant it is stored under."""


_SNAPSHOT_TYPES = {f: t for f, t in (("tenant", str), ("version", int), ("zone_map", dict), ("style_map", dict),
                                     ("template_sha256", str), ("created_by_run", str), ("created_at", str))}


def parse_cached(raw: bytes | str, tenant: str, cached_version: bytes | str | None) -> ConfigSnapshot:
    """The snapshot in a cache entry, checked against the key it was read from: it must parse, carry
    every field with its type, name this tenant, and agree with the hash's version field. The cache
    is a copy; nothing in it is trusted more than Postgres."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCacheEntry(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BadCacheEntry("not a JSON object")
    unknown = set(doc) - {f.name for f in fields(ConfigSnapshot)}
    if unknown:
        raise BadCacheEntry(f"unknown fields {sorted(unknown)}")
    for name, kind in _SNAPSHOT_TYPES.items():
        if not isinstance(doc.get(name), kind) or (kind is int and isinstance(doc[name], bool)):
            raise BadCacheEntry(f"field {name!r} missing or not {kind.__name__}")
    if doc.get("template_name") is not None and not isinstance(doc["template_name"], str):
        raise BadCacheEntry("field 'template_name' not a string")
    if doc["tenant"] != tenant:
        raise BadCacheEntry(f"holds tenant {doc['tenant']!r}'s snapshot")
    problems = _cached_snapshot_problems(raw if isinstance(raw, bytes) else raw.encode())
    if problems:
        raise BadCacheEntry(f"snapshot does not validate: {problems[0]}")
    if cached_version is None or str(doc["version"]) != (cached_version.decode() if isinstance(cached_version, bytes)
                                                         else str(cached_version)):
        raise BadCacheEntry(f"snapshot version {doc['version']} disagrees with the entry's version {cached_version!r}")
    return ConfigSnapshot(**doc)


@lru_cache(maxsize=256)
def _cached_snapshot_problems(raw: bytes) -> tuple[str, ...]:
    """Schema problems of a cached snapshot's maps, remembered per exact entry: a reader validates
    each distinct entry once, not on every read (jsonschema costs milliseconds; a hit, microseconds)."""
    doc = json.loads(raw)
    return tuple(check_config(doc["zone_map"], doc["style_map"], doc["template_sha256"]))


def check_config(zone_map: Any, style_map: Any, template_sha256: Any) -> list[str]:
    """Every problem with a candidate config, each naming the field."""
    problems = validation.errors("zone_map", zone_map) + validation.errors("style_map", style_map)
    if not isinstance(template_sha256, str) or not _SHA256.match(template_sha256):
        problems.append("template_sha256: must be 64 lowercase hex characters")
    if problems:
        return problems
    ids = [z["id"] for z in zone_map["zones"]]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        problems.append(f"zone_map.zones: duplicate zone ids {dupes}")
    if zone_map["fallback_zone"] not in ids:
        problems.append(f"zone_map.fallback_zone: {zone_map['fallback_zone']!r} is not one of the zones")
    unknown = sorted(set(style_map["zones"]) - set(ids))
    if unknown:
        problems.append(f"style_map.zones: styles for unknown zones {unknown}")
    return problems


class ConfigService:
    def __init__(self, engine: Engine, redis_client: redis.Redis | None, key_prefix: str = "astra"):
        self.engine = engine
        self.redis = redis_client
        self.key_prefix = key_prefix
        self._cas = redis_client.register_script(_CAS_LUA) if redis_client is not None else None
        self._reserve = redis_client.register_script(_RESERVE_LUA) if redis_client is not None else None
        self._drop_bad = redis_client.register_script(_DROP_BAD_LUA) if redis_client is not None else None
        self._cache_down_until = 0.0

    def cache_key(self, tenant: str) -> str:
        return f"{self.key_prefix}:config:{tenant}"

    # -- writes -------------------------------------------------------------------------------

    def publish(
        self,
        tenant: str,
        zone_map: dict[str, Any],
        style_map: dict[str, Any],
        template_sha256: str,
        created_by_run: str,
        template_name: str | None = None,
    ) -> int:
        validate_slug(tenant)
        problems = check_config(zone_map, style_map, template_sha256)
        if problems:
            raise InvalidConfig(problems)
        with self.engine.begin() as conn:
            conn.execute(pg_insert(tenants).values(tenant_id=tenant).on_conflict_do_nothing())
            # The row lock serializes publishers of one tenant, so max+1 is gap-free and unique.
            conn.execute(select(tenants.c.tenant_id).where(tenants.c.tenant_id == tenant).with_for_update())
            version = conn.execute(
                select(func.coalesce(func.max(tcv.c.version), 0) + 1).where(tcv.c.tenant_id == tenant)
            ).scalar_one()
            self._cache_reserve(tenant, version)  # inside the transaction: no reservation, no publish
            row = conn.execute(
                insert(tcv)
                .values(
                    tenant_id=tenant,
                    version=version,
                    zone_map=zone_map,
                    style_map=style_map,
                    template_sha256=template_sha256,
                    template_name=template_name,
                    created_by_run=created_by_run,
                )
                .returning(tcv.c.created_at)
            ).one()
        snap = ConfigSnapshot(
            tenant, version, zone_map, style_map, template_sha256, created_by_run, row.created_at.isoformat(),
            template_name,
        )
        self._cache_put(snap)
        return version

    # -- reads --------------------------------------------------------------------------------

    def snapshot(self, tenant: str, version: int | None = None) -> ConfigSnapshot:
        validate_slug(tenant)
        cached = self._cache_get(tenant)
        if cached is not None and (version is None or cached.version == version):
            return cached
        snap = self._load(tenant, version)
        if version is None and self._cache_usable():
            self._cache_put(snap)
        return snap

    def history(self, tenant: str) -> list[dict[str, Any]]:
        validate_slug(tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    tcv.c.version, tcv.c.template_name, tcv.c.template_sha256, tcv.c.created_by_run, tcv.c.created_at
                )
                .where(tcv.c.tenant_id == tenant)
                .order_by(tcv.c.version)
            ).all()
        if not rows:
            raise TenantNotFound(tenant)
        return [
            {
                "version": r.version,
                "template_name": r.template_name,
                "template_sha256": r.template_sha256,
                "created_by_run": r.created_by_run,
                "created_at": r.created_at.isoformat(),
            }
            for r in rows
        ]

    def _load(self, tenant: str, version: int | None) -> ConfigSnapshot:
        query = select(tcv).where(tcv.c.tenant_id == tenant)
        query = query.where(tcv.c.version == version) if version is not None else query
        with self.engine.connect() as conn:
            row = conn.execute(query.order_by(tcv.c.version.desc()).limit(1)).one_or_none()
        if row is None:
            if version is not None and self._tenant_exists(tenant):
                raise VersionNotFound(tenant, version)
            raise TenantNotFound(tenant)
        return ConfigSnapshot(
            tenant=row.tenant_id,
            version=row.version,
            zone_map=row.zone_map,
            style_map=row.style_map,
            template_sha256=row.template_sha256,
            created_by_run=row.created_by_run,
            created_at=row.created_at.isoformat(),
            template_name=row.template_name,
        )

    def _tenant_exists(self, tenant: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(
                select(text("1")).select_from(tcv).where(tcv.c.tenant_id == tenant).limit(1)
            ).first() is not None

    # -- cache --------------------------------------------------------------------------------

    def _cache_usable(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._cache_down_until

    def _cache_failed(self, exc: Exception, what: str) -> None:
        self._cache_down_until = time.monotonic() + CACHE_BACKOFF_SECONDS
        log.warning("config cache unavailable (%s), %s: %s", type(exc).__name__, what, exc)

    def _cache_get(self, tenant: str) -> ConfigSnapshot | None:
        if not self._cache_usable():
            return None
        try:
            cached_version, raw = self.redis.hmget(self.cache_key(tenant), ["version", "snapshot"])
        except redis.ResponseError as exc:  # WRONGTYPE: junk under the key, not an unavailable cache
            log.warning("config cache entry %s is bad (%s): served from Postgres", self.cache_key(tenant), exc)
            self._drop_bad_entry(tenant, b"")
            return None
        except redis.RedisError as exc:
            self._cache_failed(exc, f"reading {tenant} from Postgres")
            return None
        if not raw:
            return None
        try:
            return parse_cached(raw, tenant, cached_version)
        except BadCacheEntry as exc:
            # A miss: Postgres serves, and the entry is dropped so the next read fills a good one.
            log.warning("config cache entry %s is bad (%s): served from Postgres", self.cache_key(tenant), exc)
            self._drop_bad_entry(tenant, raw)
            return None

    def _drop_bad_entry(self, tenant: str, raw: bytes) -> None:
        try:
            self._drop_bad(keys=[self.cache_key(tenant)], args=[raw])
        except redis.RedisError as exc:
            self._cache_failed(exc, f"bad entry for {tenant} not dropped")

    def _cache_reserve(self, tenant: str, version: int) -> None:
        if self._reserve is None:
            return
        try:
            self._reserve(keys=[self.cache_key(tenant)], args=[version, RESERVATION_TTL_SECONDS])
        except redis.RedisError as exc:
            self._cache_failed(exc, f"{tenant} v{version} not published")
            raise ConfigCacheUnavailable(
                f"cannot publish {tenant} v{version}: the config cache (Redis) did not take the new version, and "
                f"readers could keep an older one ({type(exc).__name__}); nothing was written"
            ) from exc

    def _cache_put(self, snap: ConfigSnapshot) -> None:
        if self._cas is None:
            return
        try:
            self._cas(keys=[self.cache_key(snap.tenant)], args=[snap.version, snap.to_json(), CACHE_TTL_SECONDS])
        except redis.RedisError as exc:
            # Harmless: the reservation keeps older versions out; readers fill it from Postgres.
            self._cache_failed(exc, f"{snap.tenant} v{snap.version} not cached")
