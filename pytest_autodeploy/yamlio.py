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

    def __init__(self, path: Path, loader: Any) -> None:
        self.path = path
        self.loader = loader
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[Diagnostic] = []
        self.data_intact = True
        # Aliases point at nodes already seen. A recursive alias would loop forever.
        self._active: set[int] = set()
        # Number of pairs that merge keys added to each mapping node, by node id.
        self._merged_counts: dict[int, int] = {}

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

        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._build_mapping(node, key_path)
            if isinstance(node, yaml.SequenceNode):
                return self._build_sequence(node, key_path)
            return self._build_scalar(node)
        finally:
            self._active.discard(id(node))

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
        for index, child in enumerate(node.value):
            child_path = key_path + (index,)
            # A plain value inside a one-line [a, b] list reports at the
            # list's line; skipping those saves time on big registries.
            if not (node.flow_style and isinstance(child, yaml.ScalarNode)):
                self.lines[child_path] = _mark_line(child.start_mark) or 0
            result.append(self.build(child, child_path))
        return result

    def _build_mapping(self, node: Any, key_path: KeyPath) -> dict[Any, Any]:
        if node.tag != _MAP_TAG:
            self.problem(f"YAML tag {node.tag!r} is not allowed; use a plain mapping", node)
            return {}

        # Merge keys (<<: *anchor) are legal YAML. Their pairs come first and
        # explicit keys may override them, so only explicit keys count as duplicates.
        # flatten_mapping rewrites the node in place, so a node reached again
        # through an alias reuses the count taken before its first flattening.
        merged_count = self._merged_counts.get(id(node))
        if merged_count is None:
            explicit_count = sum(1 for key, _ in node.value if key.tag != _MERGE_TAG)
            # Most mappings have no merge key, and flattening costs time on big files.
            if explicit_count < len(node.value):
                try:
                    self.loader.flatten_mapping(node)
                except yaml.constructor.ConstructorError as error:
                    self.problem(f"invalid YAML merge key: {error.problem}", node)
                    return {}
            merged_count = len(node.value) - explicit_count
            self._merged_counts[id(node)] = merged_count

        result: dict[Any, Any] = {}
        first_lines: dict[Any, int | None] = {}
        for position, (key_node, value_node) in enumerate(node.value):
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
            is_explicit = position >= merged_count
            if is_explicit and key in first_lines:
                self.problem(
                    f"duplicate key {key!r} (first set on line {first_lines[key]}); "
                    "YAML keeps only the last value, so remove one of them",
                    key_node,
                    data_intact=True,
                )
            if is_explicit:
                first_lines[key] = line

            child_path = key_path + (key,)
            self.lines[child_path] = line
            if value_node.tag == _STR_TAG and isinstance(value_node, yaml.ScalarNode):
                result[key] = value_node.value
            else:
                result[key] = self.build(value_node, child_path)
        return result


def parse_yaml(text: str, path: Path) -> YamlDocument:
    """Parse YAML text safely; raise :class:`YamlLoadError` listing every problem."""
    loader = SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            reason = error.problem or error.context or "invalid YAML"
            raise YamlLoadError(
                [
                    Diagnostic(
                        f"invalid YAML: {reason}; fix the syntax",
                        path=path,
                        line=_mark_line(mark),
                        column=_mark_column(mark),
                    )
                ]
            ) from None
        except yaml.YAMLError as error:
            raise YamlLoadError([Diagnostic(f"invalid YAML: {error}", path=path)]) from None

        if node is None:
            return YamlDocument(path=path, data=None)

        builder = _Builder(path, loader)
        data = builder.build(node, ())
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
_CACHE_FORMAT = b"pytest-autodeploy-yaml-1"


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
