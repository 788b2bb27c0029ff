"""YAML parsing that refuses duplicate keys (PyYAML keeps the last one silently, hiding a typo'd override)."""

from __future__ import annotations

from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


def safe_load(text: str) -> Any:
    """Like ``yaml.safe_load``, but a mapping that repeats a key is a ``yaml.YAMLError`` naming key and lines.

    The check runs on the composed node tree, before anything is constructed, so merge keys (``<<: *anchor``)
    and their overrides behave exactly as in PyYAML.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(node, set())
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
