"""YAML parsing that refuses duplicate keys and applies merge keys by the YAML merge-key rule itself.

PyYAML keeps the last of two equal keys silently, hiding a typo'd override; and its merge-key results differ
between releases (6.0.3 and 6.0.4 disagree on a merged mapping that has its own overrides). Workflow YAML must mean
the same whichever PyYAML is installed, so merges are resolved here, on the composed node tree, before anything is
constructed (https://yaml.org/type/merge.html):

- a mapping's own keys override every merged key;
- with ``<<: [*a, *b]``, a key of ``*a`` overrides the same key of ``*b``;
- a merged mapping is taken with its own merges and overrides already applied.
"""

from __future__ import annotations

from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


def safe_load(text: str) -> Any:
    """Like ``yaml.safe_load``, but a mapping that repeats a key is a ``yaml.YAMLError`` naming key and lines.

    Merge keys (``<<: *anchor``) follow the YAML merge-key rule (see the module docstring), not the rule of the
    installed PyYAML release.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(node, set())
        _resolve_merges(node, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_duplicates(node: yaml.Node, seen: set[int]) -> None:
    if id(node) in seen:  # an alias: already checked where its anchor was defined
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG and isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in first_line:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key_node.value!r} (first given on line {first_line[key]})",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
            _check_duplicates(key_node, seen)
            _check_duplicates(value_node, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, seen)


def _key_identity(key_node: yaml.Node) -> Any:
    return (key_node.tag, key_node.value) if isinstance(key_node, yaml.ScalarNode) else id(key_node)


def _resolve_merges(node: yaml.Node, done: set[int]) -> None:
    """Replace every merge key of the tree by the pairs it stands for (the node tree is changed in place).

    An anchored mapping is resolved once, before any mapping that merges it, so it is merged with its overrides.
    """
    if id(node) in done:
        return
    done.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _resolve_merges(item, done)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    own: list[tuple[yaml.Node, yaml.Node]] = []
    sources: list[yaml.MappingNode] = []
    for key_node, value_node in node.value:
        _resolve_merges(key_node, done)
        _resolve_merges(value_node, done)
        if key_node.tag != _MERGE_TAG:
            own.append((key_node, value_node))
            continue
        merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in merged:
            if not isinstance(source, yaml.MappingNode):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"a merge key takes a mapping or a list of mappings, not {source.id}",
                    source.start_mark,
                )
            _resolve_merges(source, done)
            sources.append(source)
    if not sources:
        return
    taken = {_key_identity(key) for key, _ in own}
    inherited: list[tuple[yaml.Node, yaml.Node]] = []
    for source in sources:  # earlier sources win over later ones
        for key_node, value_node in source.value:
            identity = _key_identity(key_node)
            if identity not in taken:
                taken.add(identity)
                inherited.append((key_node, value_node))
    node.value = inherited + own
