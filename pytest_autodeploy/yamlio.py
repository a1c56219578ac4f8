"""Safe YAML loading that keeps line numbers and rejects duplicate keys.

PyYAML keeps the last of two equal keys without a word, and its constructed
objects forget where they came from. This module composes the node tree with
the safe loader (the C one when PyYAML was built with libyaml), then builds
plain Python data from it while checking keys and recording the line of every
mapping key and sequence item.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import yaml

from .atomic import write_text_atomic
from .diagnostics import Diagnostic

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

KeyPath = Tuple[Union[str, int], ...]

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"

# Aliases nested in anchors multiply the data: a few hundred bytes can expand
# to billions of values. Values built again through aliases are counted, and a
# file may repeat at most this many, or as many as it has characters if more.
ALIAS_VALUE_LIMIT = 100_000
# Lists and mappings nested deeper than this are rejected before Python's
# recursion limit (1000 frames by default) is reached; configs nest a few levels.
MAX_NESTING_DEPTH = 100


@dataclass
class YamlDocument:
    """Data read from one YAML file, with the 1-based line of every key path."""

    path: Path
    data: Any
    lines: Dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, key_path: KeyPath) -> int | None:
        """Return the line of ``key_path``, or of its nearest recorded parent."""
        while key_path:
            if key_path in self.lines:
                return self.lines[key_path]
            key_path = key_path[:-1]
        return self.lines.get((), None)


class YamlLoadError(Exception):
    """Raised with every problem found in one YAML file.

    ``document`` is the data read despite the problems when they were only
    duplicate keys (the last value kept), else None. A caller may use it to
    find further problems.
    """

    def __init__(self, diagnostics: list[Diagnostic], document: YamlDocument | None = None) -> None:
        self.diagnostics = diagnostics
        self.document = document
        super().__init__("\n".join(diagnostic.format() for diagnostic in diagnostics))


def _mark_line(mark: Any) -> int | None:
    return None if mark is None else mark.line + 1


def _mark_column(mark: Any) -> int | None:
    return None if mark is None else mark.column + 1


class _Builder:
    """Turns a composed node tree into Python data, collecting problems on the way."""

    def __init__(self, path: Path, loader: Any, repeated_limit: int = ALIAS_VALUE_LIMIT) -> None:
        self.path = path
        self.loader = loader
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[Diagnostic] = []
        self.data_intact = True
        # Aliases point at nodes already seen. A recursive alias would loop forever.
        self._active: set[int] = set()
        # Ids of the collection nodes built at least once; building one again
        # means an alias reached it, and its children count as repeated values.
        self._built: set[int] = set()
        self.repeated_values = 0
        self.repeated_limit = repeated_limit

    def problem(self, message: str, node: Any, *, data_intact: bool = False) -> None:
        # Only a duplicate key leaves the data as the file reads (the last
        # value wins); any other problem replaced a value with a placeholder.
        if not data_intact:
            self.data_intact = False
        self.problems.append(
            Diagnostic(
                message,
                path=self.path,
                line=_mark_line(node.start_mark),
                column=_mark_column(node.start_mark),
            )
        )

    def build(self, node: Any, key_path: KeyPath) -> Any:
        if isinstance(node, yaml.ScalarNode):
            # Plain strings are most of a registry; skip the constructor for them.
            if node.tag == _STR_TAG:
                return node.value
            return self._build_scalar(node)

        if id(node) in self._active:
            self.problem("recursive YAML alias; expand the anchor by hand", node)
            return None
        # Each level costs a few Python stack frames; libyaml itself stops at 1000 levels.
        if len(self._active) >= MAX_NESTING_DEPTH:
            self.problem(f"YAML nesting is deeper than {MAX_NESTING_DEPTH} levels; flatten the data", node)
            return None

        if id(node) in self._built:
            self.count_repeated(node)
        else:
            self._built.add(id(node))

        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._build_mapping(node, key_path)
            if isinstance(node, yaml.SequenceNode):
                return self._build_sequence(node, key_path)
            return self._build_scalar(node)
        finally:
            self._active.discard(id(node))

    def count_repeated(self, node: Any) -> None:
        """Count the children of a collection node built again through an alias."""
        self.repeated_values += len(node.value)
        if self.repeated_values > self.repeated_limit:
            raise _AliasLimitError(node)

    def _build_scalar(self, node: Any) -> Any:
        # The safe constructor builds only plain types, and it raises for
        # tags such as !!python/object, so nothing from the file is executed.
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as error:
            self.problem(f"YAML tag {node.tag!r} is not allowed; use plain YAML values", node)
            del error
            return None

    def _build_sequence(self, node: Any, key_path: KeyPath) -> list[Any]:
        if node.tag != _SEQ_TAG:
            self.problem(f"YAML tag {node.tag!r} is not allowed; use a plain list", node)
            return []

        result = []
        # A plain value inside a one-line [a, b] list reports at the list's
        # line; skipping those saves time on big registries.
        in_flow_list = node.flow_style
        for index, child in enumerate(node.value):
            if in_flow_list and child.tag == _STR_TAG and isinstance(child, yaml.ScalarNode):
                result.append(child.value)
                continue
            child_path = key_path + (index,)
            if not (in_flow_list and isinstance(child, yaml.ScalarNode)):
                self.lines[child_path] = child.start_mark.line + 1
            result.append(self.build(child, child_path))
        return result

    def _build_mapping(self, node: Any, key_path: KeyPath) -> dict[Any, Any]:
        if node.tag != _MAP_TAG:
            self.problem(f"YAML tag {node.tag!r} is not allowed; use a plain mapping", node)
            return {}

        pairs = node.value
        result: dict[Any, Any] = {}
        # Merge keys (<<: *anchor) are legal YAML. Their pairs come first and
        # explicit keys override them, so only explicit keys count as duplicates.
        # A loop with break is cheaper than any(), and most mappings have no merge key.
        for key_node, _ in pairs:
            if key_node.tag == _MERGE_TAG:
                merged = self._build_merged(node, key_path)
                if merged is None:
                    return {}
                result.update(merged)
                pairs = [pair for pair in pairs if pair[0].tag != _MERGE_TAG]
                break

        first_lines: dict[Any, int | None] = {}
        for key_node, value_node in pairs:
            # Plain string keys are the common case; build() handles the rest.
            if key_node.tag == _STR_TAG and isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
            else:
                key = self.build(key_node, key_path)
                try:
                    hash(key)
                except TypeError:
                    self.problem("a mapping key must be a scalar, not a list or mapping", key_node)
                    continue

            line = key_node.start_mark.line + 1
            if key in first_lines:
                self.problem(
                    f"duplicate key {key!r} (first set on line {first_lines[key]}); "
                    "YAML keeps only the last value, so remove one of them",
                    key_node,
                    data_intact=True,
                )
            first_lines[key] = line

            child_path = key_path + (key,)
            self.lines[child_path] = line
            if value_node.tag == _STR_TAG and isinstance(value_node, yaml.ScalarNode):
                result[key] = value_node.value
            else:
                result[key] = self.build(value_node, child_path)
        return result

    def _build_merged(self, node: Any, key_path: KeyPath) -> dict[Any, Any] | None:
        """Return the pairs that the merge keys of a mapping node add, or None if one is invalid.

        A mapping earlier in ``<<: [*a, *b]`` overrides a later one, as in the
        examples of the merge key type (yaml.org/type/merge.html); PyYAML 6.0.3
        lets the later one win for most keys. Several merge keys act as one list.
        """
        sources = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            if isinstance(value_node, yaml.MappingNode):
                sources.append(value_node)
                continue
            if not isinstance(value_node, yaml.SequenceNode):
                self.problem(
                    f"invalid YAML merge key: expected a mapping or list of mappings for merging, but found {value_node.id}",
                    value_node,
                )
                return None

            # The list itself may be an alias too, so count it like build() would.
            if id(value_node) in self._built:
                self.count_repeated(value_node)
            else:
                self._built.add(id(value_node))
            for item in value_node.value:
                if not isinstance(item, yaml.MappingNode):
                    self.problem(f"invalid YAML merge key: expected a mapping for merging, but found {item.id}", item)
                    return None
                sources.append(item)

        # Build the last source first: the lines of earlier sources, which win,
        # then overwrite the lines that build() recorded for the same keys.
        merged: dict[Any, Any] = {}
        for source in reversed(sources):
            built = self.build(source, key_path)
            if built is None:
                return None  # a recursive alias, already reported
            merged.update(built)
        return merged


class _AliasLimitError(Exception):
    """Raised by the builder when aliases repeat more values than a file may."""

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.node = node


def _reader_error_diagnostic(error: yaml.reader.ReaderError, text: str, path: Path) -> Diagnostic:
    """Return the diagnostic for a character that YAML does not allow, with its line and column."""
    # The C reader counts ``position`` in UTF-8 bytes and the Python one in
    # characters. The reported character is the first disallowed one, so its
    # first occurrence in the text is where it is.
    position = text.find(chr(error.character)) if isinstance(error.character, int) else -1
    if position < 0:
        return Diagnostic(f"invalid YAML: {error.reason}; fix the file", path=path)

    line = text.count("\n", 0, position) + 1
    column = position - text.rfind("\n", 0, position)
    return Diagnostic(
        f"invalid YAML: character U+{error.character:04X} is not allowed in a YAML file; "
        f"remove it, or write it as the escape \"\\u{error.character:04X}\" inside a double-quoted string",
        path=path,
        line=line,
        column=column,
    )


def _error_diagnostic(error: yaml.YAMLError, text: str, path: Path) -> Diagnostic:
    """Return the diagnostic for a PyYAML error, without PyYAML's own position lines."""
    if isinstance(error, yaml.reader.ReaderError):
        return _reader_error_diagnostic(error, text, path)
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        reason = error.problem or error.context or "invalid YAML"
        return Diagnostic(
            f"invalid YAML: {reason}; fix the syntax",
            path=path,
            line=_mark_line(mark),
            column=_mark_column(mark),
        )
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    return Diagnostic(f"invalid YAML: {first_line}", path=path)


def parse_yaml(text: str, path: Path) -> YamlDocument:
    """Parse YAML text safely; raise :class:`YamlLoadError` listing every problem."""
    try:
        # The Python loader checks the characters while it is created, the C one later.
        loader = SafeLoader(text)
    except yaml.YAMLError as error:
        raise YamlLoadError([_error_diagnostic(error, text, path)]) from None

    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as error:
            raise YamlLoadError([_error_diagnostic(error, text, path)]) from None
        except RecursionError:
            # Only the Python composer recurses per level; libyaml reports its own limit.
            raise YamlLoadError(
                [Diagnostic("invalid YAML: lists or mappings are nested too deeply; flatten the data", path=path)]
            ) from None

        if node is None:
            return YamlDocument(path=path, data=None)

        builder = _Builder(path, loader, repeated_limit=max(ALIAS_VALUE_LIMIT, len(text)))
        try:
            data = builder.build(node, ())
        except _AliasLimitError as error:
            expanded = Diagnostic(
                f"YAML aliases expand to more than {builder.repeated_limit:,} values, because aliases "
                "inside anchored data multiply it; write the repeated data out or nest fewer aliases",
                path=path,
                line=_mark_line(error.node.start_mark),
                column=_mark_column(error.node.start_mark),
            )
            raise YamlLoadError([*builder.problems, expanded]) from None
        builder.lines[()] = _mark_line(node.start_mark) or 1
    finally:
        loader.dispose()

    document = YamlDocument(path=path, data=data, lines=builder.lines)
    if builder.problems:
        raise YamlLoadError(builder.problems, document if builder.data_intact else None)
    return document


def load_yaml(path: Path, cache_dir: Path | None = None) -> YamlDocument:
    """Read and parse one YAML file; raise :class:`YamlLoadError` for any problem.

    With ``cache_dir``, a large file that parsed without problems is stored
    there as JSON under the hash of its bytes, and later loads of the same
    bytes read that instead of parsing again.
    """
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise YamlLoadError(
            [Diagnostic(f"cannot read file: {error.strerror}", path=path)]
        ) from None

    use_cache = cache_dir is not None and len(raw) >= CACHE_MIN_BYTES
    if use_cache:
        cached = _read_cache(cache_dir, raw, path)
        if cached is not None:
            return cached

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise YamlLoadError(
            [Diagnostic(f"file is not valid UTF-8 (byte {error.start}); save it as UTF-8", path=path, line=line)]
        ) from None

    document = parse_yaml(text, path)
    if use_cache:
        _write_cache(cache_dir, raw, document)
    return document


# Smaller files parse faster than a cache entry can be found and read.
CACHE_MIN_BYTES = 64 * 1024
# Entries kept per cache folder: one per recent version of a large models.yaml.
_CACHE_ENTRIES = 8
# Part of the cache key, so that a change in how files are read invalidates old entries.
_CACHE_FORMAT = b"pytest-autodeploy-yaml-2"


def _cache_path(cache_dir: Path, raw: bytes) -> Path:
    digest = hashlib.sha256(_CACHE_FORMAT + raw).hexdigest()
    return cache_dir / f"{digest}.json"


def _read_cache(cache_dir: Path, raw: bytes, path: Path) -> YamlDocument | None:
    try:
        stored = json.loads(_cache_path(cache_dir, raw).read_text(encoding="utf-8"))
        lines = {tuple(key_path): line for key_path, line in stored["lines"]}
        return YamlDocument(path=path, data=stored["data"], lines=lines)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a missing or damaged entry only means parsing again


def _write_cache(cache_dir: Path, raw: bytes, document: YamlDocument) -> None:
    stored = {"data": document.data, "lines": [[list(key_path), line] for key_path, line in document.lines.items()]}
    try:
        text = json.dumps(stored)
        # JSON turns non-string keys into strings and has no dates: cache only
        # what comes back unchanged.
        if json.loads(text) != stored:
            return
    except (TypeError, ValueError):
        return

    try:
        write_text_atomic(_cache_path(cache_dir, raw), text)

        entries = sorted(cache_dir.glob("*.json"), key=lambda entry: entry.stat().st_mtime, reverse=True)
        for old in entries[_CACHE_ENTRIES:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass  # the cache only saves time; a read-only folder must not fail a run
