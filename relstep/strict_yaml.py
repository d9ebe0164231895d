"""Read relstep.yml strictly: YAML 1.2 core scalars, no duplicate keys, bounded aliases.

PyYAML's ``SafeLoader`` reads YAML 1.1, where ``010`` is 8, ``1:30`` is 90, ``0x1F`` is 31,
``yes`` is true and the last of two equal keys silently wins.  This loader keeps PyYAML (well
kept, already a dependency) and changes only its configuration:

- plain scalars resolve as YAML 1.2's core schema: ``true``/``false``, ``null``/``~``, decimal
  integers and floats; everything else is a string (``yes``, ``on``, ``2024-01-01``);
- a plain scalar that YAML 1.1 would read as a number but YAML 1.2 would not read the same way
  (leading zeros, ``0x``/``0o``/``0b``, ``1:30``, ``1_000``) is an error: whichever reading
  relstep picked, someone would be surprised, so the user is asked to write digits or quote it;
- a key given twice in one mapping is an error naming the key and both lines;
- aliases are bounded: a document that expands to more than ``MAX_NODES`` values (a "billion
  laughs" bomb) or that contains itself (a recursive alias) is refused before it is built.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

#: Far beyond any real relstep.yml; a bomb reaches it after a handful of aliases.
MAX_NODES = 10_000

_CORE_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")
_CORE_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_CORE_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
# What YAML 1.1 (or 1.2's other radixes) reads as a number and 1.2's core schema does not, or not
# as the same number.
_AMBIGUOUS_NUMBER = re.compile(
    r"^[-+]?(?:0[0-9_]+(?:\.[0-9_]*)?|0[xXoObB][0-9a-fA-F_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?"
    r"|[0-9]+_[0-9_]*(?:\.[0-9_]*)?)$"
)
_AMBIGUOUS_TAG = "tag:relstep,2026:ambiguous-number"
_DIGITS_AND_SIGNS = list("-+0123456789.")


class StrictYAMLError(ValueError):
    """A relstep.yml problem with the line it is on (1-based), for a one-line ConfigError."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core resolvers, duplicate-key and alias-expansion checks."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges; its keys may be overridden, as YAML intends
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: SafeLoader itself reports it
            line = key_node.start_mark.line + 1
            if first is not None:
                raise StrictYAMLError(line, f"key {key!r} is given twice (first on line {first}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_ambiguous_number(self, node: yaml.ScalarNode) -> Any:
        raise StrictYAMLError(
            node.start_mark.line + 1,
            f"{node.value} is not a plain decimal number; relstep reads YAML 1.2, where it would not "
            f"mean what YAML 1.1 makes of it: write decimal digits for a number, or quote it ('{node.value}') for text",
        )


def _core_resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    replaced = {"bool", "int", "float", "timestamp", "value"}
    kept: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items():
        kept[first] = [(tag, rx) for tag, rx in resolvers if tag.rsplit(":", 1)[-1] not in replaced]
    return kept


StrictLoader.yaml_implicit_resolvers = _core_resolvers()
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _CORE_BOOL, list("tTfF"))
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:int", _CORE_INT, _DIGITS_AND_SIGNS)
# Checked before the float resolver: `010` and `08` must not become 10.0 or 8.0.
StrictLoader.add_implicit_resolver(_AMBIGUOUS_TAG, _AMBIGUOUS_NUMBER, _DIGITS_AND_SIGNS)
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _CORE_FLOAT, _DIGITS_AND_SIGNS)
StrictLoader.add_constructor(_AMBIGUOUS_TAG, StrictLoader.construct_ambiguous_number)
# YAML 1.2 core ints are decimal: SafeLoader's int constructor would read `0o17` or `1:30`, but
# only decimal digits reach it now.


def _check_expansion(root: yaml.Node) -> None:
    """Count the values the document expands to, following aliases; refuse bombs and cycles.

    The composer shares one node per anchor, so this walk memoises sizes by node and stays linear
    in the file's size while computing the expanded size that a naive reader would build.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative post-order walk: a deeply nested file must not exhaust Python's stack here.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > MAX_NODES:
                raise StrictYAMLError(
                    node.start_mark.line + 1,
                    f"the aliases here expand to more than {MAX_NODES} values; write the values out "
                    "instead of nesting aliases",
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise StrictYAMLError(
                node.start_mark.line + 1, "an alias refers to the value that contains it (a recursive alias); remove it"
            )
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise StrictYAMLError(
                    child.start_mark.line + 1,
                    "an alias refers to the value that contains it (a recursive alias); remove it",
                )
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load(text: str) -> Any:
    """Parse one YAML document strictly; raises ``StrictYAMLError`` or ``yaml.YAMLError``."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
