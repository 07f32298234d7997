"""Helm release records (Secrets `sh.helm.release.v1.<name>.v<N>`) in the storage namespace.

A record is listed by Helm's own labels (`owner=helm`, `name=<release>`) and read without
decoding: its `status` and `version` labels and rudder's annotations are enough to decide
what to do, so only the records an action needs are decompressed. rudder's records carry
two extra labels naming the HelmRelease that drives them and annotations with the chart
and values digests of the revision; Helm ignores both, and a record the Helm CLI wrote
lacks them, which is how an out-of-band revision is noticed. A revision is *created*,
never applied or replaced: a second writer of the same revision gets AlreadyExists.
"""

from __future__ import annotations

import base64
import datetime
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from rudder.kube.client import JSON, ApiError, KubeClient
from rudder.kube.shared_watch import SharedWatches, kept_form
from rudder.kube.versions import at_least
from rudder.kube.watch import resource_version
from rudder.release.codec import Release, decode_release, release_secret

OWNER_NAME_LABEL = "rudder.dev/owner-name"
OWNER_NAMESPACE_LABEL = "rudder.dev/owner-namespace"
CHART_DIGEST_ANNOTATION = "rudder.dev/chart-digest"
VALUES_DIGEST_ANNOTATION = "rudder.dev/values-digest"
GENERATION_ANNOTATION = "rudder.dev/generation"
INSTANCE_ANNOTATION = "rudder.dev/operator-instance"
# On a revision marked failed because its attempt was cut short (a crash, a lost leader, an
# API server failure), not because the release failed: it is tried again.
INTERRUPTED_ANNOTATION = "rudder.dev/interrupted"


class RevisionExists(Exception):
    """Another writer created this revision first; this action must not proceed."""


@dataclass(frozen=True)
class Owner:
    namespace: str
    name: str

    def labels(self) -> dict[str, str]:
        return {OWNER_NAMESPACE_LABEL: self.namespace, OWNER_NAME_LABEL: self.name}

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Summary:
    """The few facts of a revision that status shows, kept so a record is decoded once."""

    first_deployed: str | None
    last_deployed: str | None
    chart_version: str
    description: str


# (uid, resourceVersion) -> Summary; a record's content never changes under one version.
_SUMMARIES: OrderedDict[tuple[str, str], Summary] = OrderedDict()
_SUMMARY_CACHE_SIZE = 8192


@dataclass(frozen=True)
class Record:
    """One stored revision, as listed (decoded on demand)."""

    secret: JSON = field(repr=False)

    @property
    def meta(self) -> JSON:
        metadata: JSON = self.secret.get("metadata", {})
        return metadata

    @property
    def secret_name(self) -> str:
        return str(self.meta.get("name", ""))

    @property
    def labels(self) -> Mapping[str, str]:
        return self.meta.get("labels") or {}

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.meta.get("annotations") or {}

    @property
    def version(self) -> int:
        return int(self.labels.get("version", "0") or 0)

    @property
    def status(self) -> str:
        return str(self.labels.get("status", ""))

    @property
    def owner(self) -> Owner | None:
        name, namespace = self.labels.get(OWNER_NAME_LABEL), self.labels.get(OWNER_NAMESPACE_LABEL)
        return Owner(namespace, name) if name and namespace else None

    @property
    def written_by_rudder(self) -> bool:
        """rudder stamps its records with annotations; Helm copies a release's labels into
        the revisions it writes (a CLI rollback keeps rudder's owner labels) but never
        annotations, so these tell rudder's own revisions apart."""
        return CHART_DIGEST_ANNOTATION in self.annotations

    @property
    def chart_digest(self) -> str | None:
        return self.annotations.get(CHART_DIGEST_ANNOTATION)

    @property
    def values_digest(self) -> str | None:
        return self.annotations.get(VALUES_DIGEST_ANNOTATION)

    @property
    def operator_instance(self) -> str | None:
        return self.annotations.get(INSTANCE_ANNOTATION)

    @property
    def interrupted(self) -> bool:
        return self.annotations.get(INTERRUPTED_ANNOTATION) == "true"

    @property
    def created(self) -> datetime.datetime:
        stamp = str(self.meta.get("creationTimestamp", "1970-01-01T00:00:00Z"))
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    @property
    def summary(self) -> Summary:
        key = (str(self.meta.get("uid", "")), str(self.meta.get("resourceVersion", "")))
        found = _SUMMARIES.get(key)
        if found is None:
            release = self.release
            info = release.info
            metadata = release.chart.metadata if release.chart else None
            found = Summary(
                first_deployed=info.first_deployed.format()
                if info and info.first_deployed
                else None,
                last_deployed=info.last_deployed.format() if info and info.last_deployed else None,
                chart_version=metadata.version if metadata else "",
                description=info.description if info else "",
            )
            _SUMMARIES[key] = found
            if len(_SUMMARIES) > _SUMMARY_CACHE_SIZE:
                _SUMMARIES.popitem(last=False)
        else:
            _SUMMARIES.move_to_end(key)
        return found

    @cached_property
    def release(self) -> Release:
        # data.release is base64 on the wire over Helm's own base64(gzip(json)).
        payload = base64.b64decode(self.secret.get("data", {}).get("release", "")).decode()
        return decode_release(payload)


@dataclass(frozen=True)
class Stamp:
    """What rudder writes beside Helm's labels on a record it creates or updates."""

    owner: Owner
    chart_digest: str
    values_digest: str
    generation: int
    instance: str

    def annotations(self) -> dict[str, str]:
        return {
            CHART_DIGEST_ANNOTATION: self.chart_digest,
            VALUES_DIGEST_ANNOTATION: self.values_digest,
            GENERATION_ANNOTATION: str(self.generation),
            INSTANCE_ANNOTATION: self.instance,
        }


# The API server's limit on a Secret's data (and so on one stored revision, as for Helm).
SECRET_DATA_LIMIT = 1024 * 1024


class ReleaseTooLarge(Exception):
    def __init__(self, name: str, version: int, size: int) -> None:
        super().__init__(
            f"revision {version} of release {name} encodes to {size / 1024**2:.2f} MiB; a "
            f"release Secret holds at most {SECRET_DATA_LIMIT / 1024**2:.0f} MiB (the chart "
            "renders too much: split it or shrink what it embeds)"
        )
        self.size = size


def secret_name(release_name: str, version: int) -> str:
    return f"sh.helm.release.v1.{release_name}.v{version}"


# Every Helm release record carries it: the shared watch of a namespace's records.
HELM_OWNED = "owner=helm"
# A namespace's records are watched while a release there reconciles at least this often
# (longer than the default interval, so the steady path reads nothing).
RECORDS_LINGER = 20 * 60.0
# The record bodies kept in memory, all identities together: rudder's own writes and the
# records of its direct reads. Past it, the least recently used go (and are listed again).
BODIES_BUDGET = 64 * 1024 * 1024


class RecordBodies:
    """Whole record Secrets, the newest version of each (by uid) within a byte budget. A
    record's content never changes under one version, and an identity that may list a
    record's metadata may list the record itself, so a body is shared whoever read or wrote
    it. Only the newest version is kept: a cache shows each object at its newest, so an
    older body (a pending revision's, once it is updated) is never asked for again."""

    def __init__(self, budget: int = BODIES_BUDGET) -> None:
        self.budget = budget
        self.size = 0
        self._bodies: OrderedDict[str, tuple[str, JSON, int]] = OrderedDict()  # by uid

    @staticmethod
    def key(secret: JSON) -> tuple[str, str]:
        meta = secret.get("metadata") or {}
        return str(meta.get("uid", "")), str(meta.get("resourceVersion", ""))

    def keep(self, secret: JSON) -> None:
        uid, version = self.key(secret)
        if not uid or not version:
            return
        kept = self._bodies.get(uid)
        if kept is not None:
            if kept[0] == version or not at_least(version, kept[0]):
                self._bodies.move_to_end(uid)  # read again (or an older read): recently used
                return
            self.size -= self._bodies.pop(uid)[2]
        size = sum(len(str(value)) for value in (secret.get("data") or {}).values()) + 1024
        self._bodies[uid] = (version, kept_form(secret), size)
        self.size += size
        while self.size > self.budget and self._bodies:
            _, (_, _, dropped) = self._bodies.popitem(last=False)
            self.size -= dropped

    def get(self, meta_only: JSON) -> JSON | None:
        """The whole record a metadata-only one stands for, if kept at that version."""
        uid, version = self.key(meta_only)
        kept = self._bodies.get(uid)
        if kept is None or kept[0] != version:
            return None
        self._bodies.move_to_end(uid)
        return kept[1]


_BODIES = RecordBodies()


class ReleaseStore:
    """Reads and writes release records as one identity. With `watches`, a release's
    records are found in a shared metadata-only watch of the namespace's Helm records,
    once it has caught up with this process's own writes of the release, and their bodies
    in `RecordBodies`; otherwise (and without `watches`, or `fresh`) one list."""

    def __init__(self, kube: KubeClient, watches: SharedWatches | None = None) -> None:
        self.kube = kube
        self.watches = watches

    def as_user(self, user: str | None) -> ReleaseStore:
        return ReleaseStore(self.kube.impersonate(user), self.watches)

    @staticmethod
    def _collection(namespace: str) -> str:
        return f"/api/v1/namespaces/{namespace}/secrets"

    async def history(
        self, namespace: str, release_name: str, *, fresh: bool = False
    ) -> list[Record]:
        """Every revision of the release, oldest first; `fresh` reads the API directly
        (uninstall acts on what the API holds, whatever a watch last saw)."""
        path = self._collection(namespace)
        items = None if fresh else await self._cached(namespace, release_name)
        if items is None:
            listed = await self.kube.get(path, labelSelector=f"{HELM_OWNED},name={release_name}")
            items = [item for item in listed.get("items", []) if isinstance(item, dict)]
            for item in items:
                _BODIES.keep(item)
                # The cache must hold at least what this list showed (the floor keeps the
                # newest), not the list's own version, which only a later write would reach.
                self._wrote(path, release_name, resource_version(item), Record(item).secret_name)
        records = [Record(item) for item in items]
        return sorted(records, key=lambda record: record.version)

    async def _cached(self, namespace: str, release_name: str) -> list[JSON] | None:
        """The release's records from the shared watch and the kept bodies; None when they
        cannot answer (yet)."""
        if self.watches is None:
            return None
        path = self._collection(namespace)
        key = self._floor_key(path, release_name)
        floors = self.watches.floors
        async with self.watches.use(
            self.kube, path, label_selector=HELM_OWNED, metadata_only=True, linger=RECORDS_LINGER
        ) as cached:
            if cached is None or not await cached.wait_synced():
                return None
            floor = floors.floor(key)  # after the wait: a write meanwhile raised it
            if floor is not None:
                gone = not any(cached.get((namespace, name)) for name in floor.absent)
                if not gone or not cached.caught_up(floor.version):
                    return None
                floors.met(key, floor, cached.version)
            bodies = []
            for item in cached.items():
                if (item.get("metadata", {}).get("labels") or {}).get("name") != release_name:
                    continue
                body = _BODIES.get(item)
                if body is None:
                    return None  # not kept (a restart, the budget): one list brings it
                bodies.append(body)
            return bodies

    def _wrote(self, path: str, release_name: str, version: str | None, name: str) -> None:
        """Keep the version of a write (or what a direct read showed) of the release's
        record `name`: the shared watch is acted on only once it has caught up with it."""
        if self.watches is not None:
            self.watches.floors.wrote(self._floor_key(path, release_name), version, name)

    def _floor_key(self, path: str, release_name: str) -> Hashable:
        assert self.watches is not None
        return self.watches.floor_key(self.kube, path, release_name)

    @staticmethod
    def new_secret(release: Release, stamp: Stamp) -> JSON:
        """The Secret that stores a new revision; ReleaseTooLarge when the API server would
        refuse it (so the caller can refuse before it changes anything)."""
        body = release_secret(release, extra_labels=stamp.owner.labels(), update=False)
        body.setdefault("metadata", {}).setdefault("annotations", {}).update(stamp.annotations())
        encoded = str(body.get("data", {}).get("release", ""))
        size = len(encoded) * 3 // 4 - encoded[-2:].count("=")  # bytes once base64-decoded
        if size > SECRET_DATA_LIMIT:
            raise ReleaseTooLarge(release.name, release.version, size)
        return body

    async def create(self, secret: JSON) -> Record:
        """Store a new revision (`new_secret`); RevisionExists if another writer did first."""
        namespace = str(secret.get("metadata", {}).get("namespace", ""))
        path = self._collection(namespace)
        try:
            created = await self.kube.request("POST", path, body=secret)
        except ApiError as error:
            if error.code == 409:
                raise RevisionExists(str(secret.get("metadata", {}).get("name", ""))) from error
            raise
        _BODIES.keep(created)
        record = Record(created)
        self._wrote(
            path, record.labels.get("name", ""), resource_version(created), record.secret_name
        )
        return record

    async def update(
        self, record: Record, release: Release, *, interrupted: bool = False
    ) -> Record:
        """Rewrite a revision (e.g. pending -> deployed), keeping rudder's labels and
        annotations; the resourceVersion makes a concurrent change fail, not vanish.
        `interrupted` marks a failed revision as one to try again."""
        ours = {k: v for k, v in record.labels.items() if k.startswith("rudder.dev/")}
        body = release_secret(release, extra_labels=ours, update=True)
        meta = body.setdefault("metadata", {})
        meta["resourceVersion"] = record.meta.get("resourceVersion")
        annotations = meta.setdefault("annotations", {})
        annotations.update(
            {
                k: v
                for k, v in record.annotations.items()
                if k.startswith("rudder.dev/") and k != INTERRUPTED_ANNOTATION
            }
        )
        if interrupted:
            annotations[INTERRUPTED_ANNOTATION] = "true"
        path = self._collection(release.namespace)
        updated = await self.kube.request("PUT", f"{path}/{record.secret_name}", body=body)
        _BODIES.keep(updated)
        self._wrote(path, release.name, resource_version(updated), record.secret_name)
        return Record(updated)

    async def delete(self, namespace: str, name: str) -> None:
        path = self._collection(namespace)
        try:
            await self.kube.request("DELETE", f"{path}/{name}")
        except ApiError as error:
            if error.code != 404:
                raise  # not known to be gone: a cache that still holds it may be right
        if self.watches is not None:
            # A deletion's version is not known: the cache counts once it lacks the name.
            release_name = name.removeprefix("sh.helm.release.v1.").rsplit(".v", 1)[0]
            self.watches.floors.deleted(self._floor_key(path, release_name), name)
