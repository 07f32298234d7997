"""Rendered templates in and out of post-renderers, as Helm 4 does it (pure).

Helm 4 post-renders the rendered files before sorting them into hooks and manifests: every
document is annotated with the file it came from (`postrenderer.helm.sh/postrender-filename`),
the documents go through the post-renderer as one YAML stream, and the output is grouped
back into files by that annotation (documents without it become
`generated-by-postrender[-<group>]-<i>.yaml`), the annotation removed. The strategy says
which documents go: `combined` all in one run, `separate` hooks and the others in two runs,
`nohooks` only the others. NOTES.txt and partials never go.

Documents are read with go-yaml's rules (release.manifest's loader, so `on`, `yes` or `0x10`
mean what they mean to Helm) and written back with PyYAML, which quotes any scalar that
could be read otherwise.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from rudder.release.manifest import (
    HOOK_ANNOTATION,
    NOTES_SUFFIX,
    parse_document,
    reads_as_string,
    split_manifests,
)

FILENAME_ANNOTATION: Final = "postrenderer.helm.sh/postrender-filename"

JSONObject = dict[str, Any]

_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """PyYAML's safe dumper, quoting every string go-yaml v2 would read as something else
    (`y`, `08`, `1e3`, ... are strings to YAML 1.1 writers, not to Helm's reader)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = None if reads_as_string(value) else '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


@dataclass(frozen=True)
class Group:
    """Documents that go through the post-renderers in one run (or, `post_render` False,
    pass by them). `name` prefixes the generated file names of its new documents."""

    name: str
    documents: tuple[tuple[str, str], ...]  # (template path, document text)
    post_render: bool


def groups(rendered: Mapping[str, str], strategy: str) -> list[Group]:
    """The rendered templates (NOTES.txt and partials left out) split by `strategy`."""
    documents: list[tuple[str, str, bool]] = []  # path, text, is a hook; in file order
    for path in sorted(rendered):
        if path.endswith(NOTES_SUFFIX) or path.rsplit("/", 1)[-1].startswith("_"):
            continue
        for document in split_manifests(rendered[path]):
            manifest = parse_document(document, path)
            if manifest.resource is not None:  # comments only: nothing to render or apply
                documents.append((path, document, HOOK_ANNOTATION in manifest.annotations))
    if strategy == "combined":
        return [Group("", tuple((p, d) for p, d, _ in documents), True)]
    hooks = tuple((p, d) for p, d, hook in documents if hook)
    others = tuple((p, d) for p, d, hook in documents if not hook)
    return [Group("hooks", hooks, strategy == "separate"), Group("manifests", others, True)]


def annotated(group: Group) -> list[JSONObject]:
    """Each document of the group as an object carrying the file it came from."""
    objects = []
    for path, document in group.documents:
        resource = parse_document(document, path).resource
        assert isinstance(resource, dict)  # parse_document refuses other documents
        obj = copy.deepcopy(resource)
        metadata = obj.setdefault("metadata", {})
        if not isinstance(metadata.get("annotations"), dict):
            metadata["annotations"] = {}
        metadata["annotations"][FILENAME_ANNOTATION] = path
        objects.append(obj)
    return objects


def as_files(objects: Iterable[JSONObject], group_name: str) -> dict[str, str]:
    """Post-rendered objects back into files by their filename annotation, which is removed."""
    documents: list[tuple[str, str]] = []
    for index, obj in enumerate(objects):
        obj = copy.deepcopy(obj)
        metadata = obj.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        path = annotations.pop(FILENAME_ANNOTATION, None)
        if not annotations:
            metadata.pop("annotations", None)
        if not path:
            infix = f"-{group_name}" if group_name else ""
            path = f"generated-by-postrender{infix}-{index}.yaml"
        documents.append((str(path), dump(obj)))
    return merge_files({path: text} for path, text in documents)


def passed_by(group: Group) -> dict[str, str]:
    """A group left alone (hooks under `nohooks`): its documents, file by file."""
    return merge_files({path: document} for path, document in group.documents)


def dump(obj: JSONObject) -> str:
    text: str = yaml.dump(
        obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return text


def dump_stream(objects: Iterable[JSONObject]) -> str:
    return "".join(f"---\n{dump(obj)}" for obj in objects)


def parse_stream(text: str, where: str) -> list[JSONObject]:
    """The objects of a post-renderer's output; a document that is not a mapping, or YAML
    that does not parse, is a ManifestError naming `where`."""
    objects = []
    for document in split_manifests(text):
        resource = parse_document(document, where, aliases=False).resource
        if resource is not None:
            assert isinstance(resource, dict)
            objects.append(resource)
    return objects


def merge_files(parts: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Files of several runs together; a file in two runs keeps both (Helm's join)."""
    merged: dict[str, str] = {}
    for files in parts:
        for path, text in files.items():
            merged[path] = f"{merged[path]}\n---\n{text}" if path in merged else text
    return merged
