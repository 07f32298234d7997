"""What must hold after every chaos scenario, read from the cluster as a user would read it:
the HelmReleases, Helm's release Secrets, the Helm CLIs' `history`, the live objects and
the API server's audit log. Each check returns a `Check` (name, ok, detail) for the report.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import audit
from conftest import Cluster
from helpers import condition

Key = tuple[str, str]  # (namespace, name) of a HelmRelease, and of its release
Identity = tuple[str, str, str, str]  # (API group, kind, namespace, name) of an object
JSON = dict[str, Any]

PENDING = frozenset({"pending-install", "pending-upgrade", "pending-rollback"})
SUCCEEDED = frozenset({"deployed", "superseded"})
MANAGED_BY = ("app.kubernetes.io/managed-by", "Helm")
RELEASE_NAME = "meta.helm.sh/release-name"
RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"
GENERATION = "rudder.dev/generation"  # the HelmRelease generation a revision was written for
DETAIL_ITEMS = 8  # examples quoted per failed check, so the report stays readable


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""

    def as_json(self) -> JSON:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def _examples(items: Iterable[object]) -> str:
    listed = [str(item) for item in items]
    more = f" (+{len(listed) - DETAIL_ITEMS} more)" if len(listed) > DETAIL_ITEMS else ""
    return "; ".join(listed[:DETAIL_ITEMS]) + more


def check(name: str, failures: Sequence[object], passed: str = "") -> Check:
    return Check(name, not failures, _examples(failures) if failures else passed)


# -- reading -------------------------------------------------------------------------------


def get_items(cluster: Cluster, *args: str) -> list[JSON]:
    """`kubectl get ARGS -o json` items; raises on failure (an unreadable cluster fails)."""
    result = cluster.kubectl("get", *args, "-o", "json")
    items: list[JSON] = json.loads(result.stdout).get("items", [])
    return items


def decode_release(secret: Mapping[str, Any]) -> JSON:
    """Helm's record: base64 (the Secret's encoding) over base64(gzip(json))."""
    payload = base64.b64decode(base64.b64decode(secret["data"]["release"]))
    loaded: JSON = json.loads(gzip.decompress(payload))
    return loaded


def helm_chart_label(release: Mapping[str, Any]) -> str:
    metadata = (release.get("chart") or {}).get("metadata") or {}
    return f"{metadata.get('name')}-{metadata.get('version')}"


@dataclass(frozen=True)
class Revision:
    """One release Secret, as its labels and its decoded record say."""

    namespace: str
    release: str
    version: int
    status: str
    secret_name: str
    generation: int | None
    description: str
    manifest: str
    chart: str  # name-version, as `helm history` shows it
    created: str

    @classmethod
    def of(cls, secret: Mapping[str, Any]) -> Revision:
        meta = secret["metadata"]
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        body = decode_release(secret)
        generation = annotations.get(GENERATION)
        return cls(
            namespace=meta["namespace"],
            release=labels.get("name", ""),
            version=int(labels.get("version", "0")),
            status=labels.get("status", ""),
            secret_name=meta["name"],
            generation=int(generation) if generation else None,
            description=str((body.get("info") or {}).get("description", "")),
            manifest=str(body.get("manifest", "")),
            chart=str(helm_chart_label(body)),
            created=str(meta.get("creationTimestamp", "")),
        )

    def brief(self) -> str:
        return f"v{self.version} {self.status} gen={self.generation} {self.description!r}"

    def as_json(self) -> JSON:
        """For the report's evidence: everything but the manifest."""
        return {
            "version": self.version,
            "status": self.status,
            "generation": self.generation,
            "chart": self.chart,
            "created": self.created,
            "description": self.description,
        }


@dataclass
class Snapshot:
    """One scenario's HelmReleases and their releases' records, read once."""

    helmreleases: dict[Key, JSON]
    revisions: dict[Key, list[Revision]]  # oldest first

    @classmethod
    def read(cls, kube: Cluster, selector: str) -> Snapshot:
        hrs = {
            (hr["metadata"]["namespace"], hr["metadata"]["name"]): hr
            for hr in get_items(kube, "helmreleases.rudder.dev", "-A", "-l", selector)
        }
        namespaces = {ns for ns, _ in hrs}
        revisions: dict[Key, list[Revision]] = defaultdict(list)
        for secret in get_items(kube, "secrets", "-A", "-l", "owner=helm"):
            if secret["metadata"]["namespace"] in namespaces:
                revision = Revision.of(secret)
                revisions[(revision.namespace, revision.release)].append(revision)
        for records in revisions.values():
            records.sort(key=lambda r: r.version)
        return cls(hrs, dict(revisions))

    def records(self, key: Key) -> list[Revision]:
        return self.revisions.get(key, [])

    def evidence(self) -> JSON:
        """Every release's history and its HelmRelease's conditions, for reading a failure."""
        return {
            f"{ns}/{name}": {
                "generation": hr["metadata"].get("generation"),
                "conditions": (hr.get("status") or {}).get("conditions", []),
                "revisions": [r.as_json() for r in self.records((ns, name))],
            }
            for (ns, name), hr in sorted(self.helmreleases.items())
        }


# -- HelmReleases and release records --------------------------------------------------------


def not_converged(helmreleases: Mapping[Key, JSON]) -> dict[str, str]:
    """HelmReleases not Ready=True at their latest generation, with what they say instead."""
    waiting = {}
    for (ns, name), hr in helmreleases.items():
        ready = condition(hr, "Ready")
        generation = hr["metadata"].get("generation")
        observed = (hr.get("status") or {}).get("observedGeneration")
        if ready.get("status") != "True" or observed != generation:
            waiting[f"{ns}/{name}"] = (
                f"gen {generation} observed {observed} Ready={ready.get('status')} "
                f"{ready.get('reason')}: {str(ready.get('message'))[:160]}"
            )
    return waiting


def check_records(snapshot: Snapshot, *, max_successes: Mapping[Key, int]) -> list[Check]:
    """Release Secrets: nothing pending, revisions 1..n, one deployed (the latest, written
    for the HelmRelease's current generation), no generation recorded as a success twice,
    and no more successful revisions than waves that reached the release."""
    pending: list[str] = []
    gaps: list[str] = []
    deployed: list[str] = []
    generations: list[str] = []
    doubled: list[str] = []
    excess: list[str] = []
    status_mismatch: list[str] = []
    for key, hr in sorted(snapshot.helmreleases.items()):
        records = snapshot.records(key)
        where = f"{key[0]}/{key[1]}"
        if not records:
            gaps.append(f"{where}: no release records")
            continue
        pending += [f"{where} {r.brief()}" for r in records if r.status in PENDING]
        versions = [r.version for r in records]
        if versions != list(range(1, len(records) + 1)):
            gaps.append(f"{where}: revisions {versions}")
        live = [r for r in records if r.status == "deployed"]
        if len(live) != 1 or live[0] is not records[-1]:
            deployed.append(f"{where}: deployed {[r.version for r in live]} of {versions}")
        elif live[0].generation != hr["metadata"].get("generation"):
            generations.append(
                f"{where}: deployed v{live[0].version} is for generation {live[0].generation}, "
                f"the HelmRelease is at {hr['metadata'].get('generation')}"
            )
        successes = [r for r in records if r.status in SUCCEEDED]
        twice = [g for g, n in Counter(r.generation for r in successes).items() if n > 1]
        if twice:
            doubled.append(
                f"{where}: generation(s) {twice} recorded as a success twice: "
                + ", ".join(r.brief() for r in successes if r.generation in twice)
            )
        allowed = max_successes.get(key)
        if allowed is not None and len(successes) > allowed:
            excess.append(f"{where}: {len(successes)} successful revisions for {allowed} waves")
        reported = ((hr.get("status") or {}).get("release") or {}).get("revision")
        if reported != records[-1].version:
            status_mismatch.append(
                f"{where}: status.release.revision {reported}, latest v{records[-1].version}"
            )
    total = sum(len(snapshot.records(k)) for k in snapshot.helmreleases)
    return [
        check("no pending release Secret", pending),
        check("revisions contiguous 1..n", gaps, f"{total} revisions"),
        check("one deployed revision, the latest", deployed),
        check("deployed revision is for the current generation", generations),
        check("no generation recorded as a success twice", doubled),
        check("successful revisions <= waves", excess),
        check("status.release names the latest revision", status_mismatch),
    ]


def failed_revisions(snapshot: Snapshot) -> dict[str, int]:
    """Failed revisions by description (with the revision number dropped): the fault's
    footprint in the history, for the report."""
    counts: Counter[str] = Counter()
    for key in snapshot.helmreleases:
        for record in snapshot.records(key):
            if record.status == "failed":
                counts[record.description.replace(record.release, "<release>")[:200]] += 1
    return dict(counts.most_common())


# -- the Helm CLIs -------------------------------------------------------------------------


def check_helm_history(kube: Cluster, snapshot: Snapshot, *, helm3_sample: int) -> list[Check]:
    """`helm history` (v4 for every release, v3 for the first `helm3_sample`) lists the same
    revisions with the same statuses (the Secrets' labels) and charts (their records)."""
    problems: dict[str, list[str]] = {"helm": [], "helm3": []}
    for index, key in enumerate(sorted(snapshot.helmreleases)):
        expected = [(r.version, r.status, r.chart) for r in snapshot.records(key)]
        for cli in ("helm", "helm3"):
            if cli == "helm3" and index >= helm3_sample:
                continue
            run = kube.run(cli, "history", key[1], "-n", key[0], "--max", "100000", "-o", "json",
                           check=False)  # fmt: skip
            if run.returncode != 0:
                problems[cli].append(f"{key[0]}/{key[1]}: {run.stderr.strip()[:200]}")
                continue
            shown = [
                (int(h["revision"]), str(h["status"]), str(h["chart"]))
                for h in json.loads(run.stdout)
            ]
            if shown != expected:
                problems[cli].append(f"{key[0]}/{key[1]}: helm {shown} secrets {expected}")
    n = len(snapshot.helmreleases)
    return [
        check("helm v4 history = release Secrets", problems["helm"], f"{n} releases"),
        check(
            "helm v3 history = release Secrets",
            problems["helm3"],
            f"{min(n, helm3_sample)} releases",
        ),
    ]


# -- objects -------------------------------------------------------------------------------


def identity_of(obj: Mapping[str, Any], default_namespace: str) -> Identity:
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    meta = obj.get("metadata") or {}
    return (group, str(obj.get("kind", "")), meta.get("namespace") or default_namespace,
            str(meta.get("name", "")))  # fmt: skip


def manifest_identities(manifest: str, namespace: str) -> list[Identity]:
    found = []
    for document in yaml.safe_load_all(manifest):
        if isinstance(document, dict) and document.get("kind"):
            found.append(identity_of(document, namespace))
    return found


def namespaced_kinds(kube: Cluster) -> list[str]:
    """Every listable namespaced resource type the API server serves (events aside)."""
    out = kube.kubectl("api-resources", "--verbs=list", "--namespaced=true", "-o", "name")
    return [r for r in out.stdout.split() if r not in ("events", "events.events.k8s.io")]


def managed_objects(kube: Cluster, namespaces: Iterable[str]) -> list[JSON]:
    """Every object labelled as managed by Helm in `namespaces`, of any kind."""
    wanted = set(namespaces)
    kinds = ",".join(namespaced_kinds(kube))
    label = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
    return [
        obj
        for obj in get_items(kube, kinds, "-A", "-l", label)
        if obj["metadata"].get("namespace") in wanted
    ]


def check_objects(kube: Cluster, snapshot: Snapshot) -> list[Check]:
    """Each object of a deployed manifest exists and is annotated as that release's; no
    object is claimed by two releases; every object labelled as managed by a release of
    this scenario is in that release's deployed manifest (nothing orphaned)."""
    owner_of: dict[Identity, Key] = {}
    claimed_twice = []
    for key in snapshot.helmreleases:
        live = [r for r in snapshot.records(key) if r.status == "deployed"]
        if not live:
            continue
        for identity in manifest_identities(live[-1].manifest, key[0]):
            if identity in owner_of and owner_of[identity] != key:
                claimed_twice.append(f"{identity} by {owner_of[identity]} and {key}")
            owner_of[identity] = key
    objects = managed_objects(kube, {ns for ns, _ in snapshot.helmreleases})
    seen: Counter[Identity] = Counter()
    orphans, wrong_owner = [], []
    for obj in objects:
        identity = identity_of(obj, "")
        seen[identity] += 1
        annotations = obj["metadata"].get("annotations") or {}
        named: Key = (annotations.get(RELEASE_NAMESPACE, ""), annotations.get(RELEASE_NAME, ""))
        if named not in snapshot.helmreleases:
            continue  # another scenario's release (namespaces are per scenario anyway)
        owner = owner_of.get(identity)
        if owner is None:
            orphans.append(f"{identity[1]} {identity[2]}/{identity[3]} (release {named[1]})")
        elif owner != named:
            wrong_owner.append(f"{identity} annotated {named}, in the manifest of {owner}")
    missing = [f"{i[1]} {i[2]}/{i[3]}" for i in owner_of if seen[i] == 0]
    duplicated = [str(i) for i, n in seen.items() if n > 1]
    return [
        check("no orphaned object", orphans, f"{len(objects)} managed objects"),
        check("every manifest object exists", missing, f"{len(owner_of)} manifest objects"),
        check("no object claimed twice", claimed_twice + wrong_owner + duplicated),
    ]


# -- the audit log -------------------------------------------------------------------------


def check_single_writes(
    audit_log: Path, namespaces: Iterable[str], since: datetime.datetime
) -> tuple[list[Check], JSON]:
    """From the API server's audit log: every release Secret was created once (a second
    writer of the same revision must get 409 AlreadyExists, never a second 201)."""
    wanted = set(namespaces)
    creates: Counter[tuple[str, str]] = Counter()
    conflicts = 0
    for request in audit.requests(audit_log, user=audit.RUDDER_USER, since=since):
        if request.verb != "create" or request.resource != "secrets" or request.dry_run:
            continue
        if request.namespace not in wanted:
            continue
        name = request.name or ""
        if request.code == 409:
            conflicts += 1
        elif 200 <= request.code < 300 and name.startswith("sh.helm.release.v1."):
            creates[(request.namespace, name)] += 1
    twice = [f"{ns}/{name} x{n}" for (ns, name), n in sorted(creates.items()) if n > 1]
    facts = {"release_secret_creates": sum(creates.values()), "create_conflicts_409": conflicts}
    return [
        check(
            "each release Secret created once (audit log)",
            twice,
            f"{sum(creates.values())} creates, {conflicts} refused with 409",
        )
    ], facts
