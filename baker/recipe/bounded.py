"""Untrusted text read within bounds: a file by its size, a YAML document by its nesting, its
nodes and what its aliases expand to.

A recipe, a lock or an included file is input anyone may hand baker. PyYAML on its own
expands a "billion laughs" alias chain into gigabytes, and libyaml's composer recurses in C
(about 100,000 nested `[` overflow the stack and kill the process); so the document is
composed here, from libyaml's events, without recursion, counted as it goes, checked, and only
then made into data, from that same node tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import yaml

from baker.errors import InputError
from baker.recipe.messages import field_name, yaml_problem

MAX_NODES = 20_000  # a recipe's YAML nodes, an alias counting as all it stands for
MAX_DEPTH = 64  # nested collections: a recipe has about 5


def read_limited(path: Path, limit: int, what: str, remedy: str) -> bytes:
    """The bytes of `path`, reading at most `limit` + 1 of them, so that a huge file (or
    /dev/zero) is refused without being read."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read the {what}: {e.strerror}.") from None
    if len(data) > limit:
        raise InputError(f"{path}: the {what} is more than {limit >> 20} MiB; {remedy}.")
    return data


def decode(path: Path, raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputError(
            f"{path}:{line}: the {what} is not UTF-8 text (byte {e.start} is {raw[e.start]:#04x})."
        ) from None


class YamlError(InputError):
    """The YAML itself is at fault. `line` (None if unknown) and `problem` let a caller say
    it in its own words (the lock does); the message is the recipe's:
    `FILE:LINE: {prefix}{problem}[; {hint}].`"""

    def __init__(
        self, path: Path, line: int | None, problem: str, hint: str = "", prefix: str = ""
    ) -> None:
        self.line, self.problem = line, problem
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {prefix}{problem}{'; ' if hint else ''}{hint}.")


class Parsed(NamedTuple):
    data: Any
    node: yaml.Node | None  # the node tree `data` was made from
    lines: dict[str, int]  # dotted field path -> 1-based line (Spec.lines)


def parse_yaml(path: Path, text: str, max_nodes: int = MAX_NODES, what: str = "recipe") -> Parsed:
    """Parse one YAML document once: libyaml's parser (PyYAML's own without libyaml),
    composed here, bounded in nesting and in nodes; aliases counted as what they expand to;
    each key given once; then the data made from that same node tree."""
    loader = _Loader(text)
    try:
        node, uses = _compose(path, loader, max_nodes, what)
        if node is None:
            return Parsed(None, None, {})
        _check_expansion(path, node, uses, max_nodes, what)
        lines = _check_keys(path, node)
        return Parsed(loader.construct_document(node), node, lines)
    except yaml.MarkedYAMLError as e:
        line, problem = yaml_problem(_in_python_words(text, e))
        raise YamlError(path, line, problem, prefix="not valid YAML: ") from None
    except yaml.reader.ReaderError as e:  # a control character; its str() is two lines
        line = text.count("\n", 0, e.position) + 1
        char = f"{e.character:#04x}" if isinstance(e.character, int) else repr(e.character)
        raise YamlError(path, line, f"{e.reason} ({char})", prefix="not valid YAML: ") from None
    finally:
        loader.dispose()


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # A scalar Python cannot make (2023-13-01, an int of 5000 digits) is a YAML mistake
        # at a line, not a crash.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as e:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value ({e})", node.start_mark
            ) from None


def _in_python_words(text: str, error: yaml.MarkedYAMLError) -> yaml.MarkedYAMLError:
    """libyaml's syntax errors say less than PyYAML's ("did not find expected key" for a tab):
    on that rare path, ask PyYAML's own parser (a state machine: it does not recurse)."""
    if _BaseLoader is yaml.SafeLoader or not isinstance(
        error, yaml.scanner.ScannerError | yaml.parser.ParserError
    ):
        return error
    try:
        for _ in yaml.parse(text, Loader=yaml.SafeLoader):
            pass
    except yaml.MarkedYAMLError as e:
        return e
    return error


def _compose(
    path: Path, loader: Any, max_nodes: int, what: str
) -> tuple[yaml.Node | None, list[tuple[yaml.Node, Any]]]:
    """PyYAML's composer over the parser's events, with an explicit stack. Returns the root
    node and every alias use (the node it stands for, its own mark), in document order."""
    loader.get_event()  # StreamStart
    if loader.check_event(yaml.StreamEndEvent):
        return None, []
    loader.get_event()  # DocumentStart
    anchors: dict[str, tuple[yaml.Node, Any]] = {}
    uses: list[tuple[yaml.Node, Any]] = []
    stack: list[tuple[yaml.Node, list[yaml.Node]]] = []  # open collections, a pending key
    root: yaml.Node | None = None
    made = 0
    while not loader.check_event(yaml.DocumentEndEvent):
        event: Any = loader.get_event()
        if isinstance(event, yaml.CollectionEndEvent):
            stack.pop()[0].end_mark = event.end_mark
            continue
        mark: Any = event.start_mark  # libyaml's Mark or PyYAML's, alike but typed apart
        line = mark.line + 1
        made += 1  # an alias use counts too: it is at least one node of the expansion
        if made > max_nodes:
            raise YamlError(
                path, line, f"the {what} has more than {max_nodes} YAML nodes",
                f"a {what} is not that big",
            )  # fmt: skip
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise yaml.composer.ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", mark
                )
            node = anchors[event.anchor][0]
            if any(collection is node for collection, _ in stack):
                raise YamlError(
                    path, line, f"*{field_name((event.anchor,))} stands for a collection it is in",
                    f"a {what} cannot contain itself",
                )  # fmt: skip
            uses.append((node, mark))
        else:
            node = _node(loader, event)
            if event.anchor is not None:
                if event.anchor in anchors:
                    raise yaml.composer.ComposerError(
                        f"found duplicate anchor {event.anchor!r}; first occurrence",
                        anchors[event.anchor][1], "second occurrence", mark,
                    )  # fmt: skip
                anchors[event.anchor] = (node, mark)
        if not stack:
            root = node
        elif isinstance(stack[-1][0], yaml.SequenceNode):
            stack[-1][0].value.append(node)
        elif not stack[-1][1]:
            stack[-1][1].append(node)
        else:
            stack[-1][0].value.append((stack[-1][1].pop(), node))
        if isinstance(event, yaml.CollectionStartEvent):
            stack.append((node, []))
            if len(stack) > MAX_DEPTH:
                raise YamlError(
                    path, line, f"the {what} nests collections more than {MAX_DEPTH} deep",
                    f"a {what} is not that deep",
                )  # fmt: skip
    loader.get_event()  # DocumentEnd
    if not loader.check_event(yaml.StreamEndEvent):
        assert root is not None
        raise yaml.composer.ComposerError(
            "expected a single document in the stream", root.start_mark,
            "but found another document", loader.get_event().start_mark,
        )  # fmt: skip
    return root, uses


def _node(loader: Any, event: Any) -> yaml.Node:
    # A tag left to the resolver is None or "!", as in PyYAML's composer.
    start: Any = event.start_mark
    if isinstance(event, yaml.ScalarEvent):
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        end: Any = event.end_mark
        return yaml.ScalarNode(tag, event.value, start, end, event.style)
    kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(kind, None, event.implicit)
    return kind(tag, [], start, None, event.flow_style)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(
    path: Path, root: yaml.Node, uses: list[tuple[yaml.Node, Any]], max_nodes: int, what: str
) -> None:
    """Refuse a document whose aliases expand it past `max_nodes` ("billion laughs"): every
    node's expanded size, memoized and capped, bottom up without recursion. (An alias cannot
    stand for a collection it is in: _compose refused that, so there is no cycle.)"""
    if not uses:
        return
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        children = _children(node)
        if children_done:
            size[id(node)] = min(max_nodes + 1, 1 + sum(size[id(c)] for c in children))
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in size)
    if size[id(root)] > max_nodes:
        # Where it grows: the alias standing for the most (the first of equals).
        _, mark = max(uses, key=lambda use: size[id(use[0])])
        raise YamlError(
            path, mark.line + 1,
            f"the {what} expands to more than {max_nodes} nodes through its aliases (&/*)",
            "write the repeated part out once, or repeat it less",
        )  # fmt: skip


def _check_keys(path: Path, root: yaml.Node) -> dict[str, int]:
    """Each key said once, and where every field is written. YAML loaders keep the last of
    two equal keys without a word: a second `provisioners:` would silently drop the first.
    Walks what the aliases expand to (bounded above), in document order, without recursion;
    before construction, which flattens `<<` merges into the node tree."""
    lines: dict[str, int] = {}
    checked: set[int] = set()  # a mapping an alias repeats is checked where it is written
    # (node, its path, its line, the keys seen so far in its mapping when that is checked)
    stack: list[tuple[yaml.Node, tuple[Any, ...], int, dict[str, int] | None]] = [
        (root, (), 0, None)
    ]
    while stack:
        node, loc, line, seen = stack.pop()
        if seen is not None:
            if loc[-1] in seen:
                raise YamlError(
                    path,
                    line,
                    f"{field_name(loc)}: duplicate key (first given at line {seen[loc[-1]]})",
                )
            seen[loc[-1]] = line
        if loc:
            lines.setdefault(".".join(map(str, loc)), line)
        items: list[tuple[yaml.Node, tuple[Any, ...], int, dict[str, int] | None]] = []
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, int] | None = None if id(node) in checked else {}
            checked.add(id(node))
            items = [
                (value, (*loc, key.value), key.start_mark.line + 1, keys)
                for key, value in node.value
                if isinstance(key, yaml.ScalarNode)
            ]
        elif isinstance(node, yaml.SequenceNode):
            items = [(n, (*loc, i), n.start_mark.line + 1, None) for i, n in enumerate(node.value)]
        stack.extend(reversed(items))
    return lines
