"""Loading and validation of a v2.0 model registry (``models.yaml`` + ``configs/``).

The loader never stops at the first problem: it returns a :class:`Registry`
whose ``diagnostics`` list every error and warning, so a user fixes them all in
one pass. Nothing here imports pytest.
"""

from __future__ import annotations

import difflib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .diagnostics import Diagnostic, RegistryError, errors_only, warnings_only
from .merge import MergeConflictError, MergedConfig, merge_documents
from .worldsize import WorldSizeError, effective_world_size
from .yamlio import YamlDocument, YamlLoadError, load_yaml

SUPPORTED_VERSION = "2.0"
MODELS_FILE = "models.yaml"
CONFIGS_DIR = "configs"
CONFIG_SCHEMA_FILE = "config.schema.json"

TOP_LEVEL_KEYS = ("version", "description", "models")
REQUIRED_ENTRY_KEYS = ("name", "yaml_extra")
_MISSING_KEY_FIXES = {
    "name": "add name: org/model with the model's Hugging Face id",
    "yaml_extra": "add yaml_extra: with the list of config files to merge",
}
# xfail and skip are this project's extension of the v2.0 format.
ENTRY_KEYS = ("name", "yaml_extra", "config_id", "xfail", "skip")

# Characters that pytest's -k and -m expressions accept inside one identifier.
# A name with anything else (a space, a quote, a control character) could not
# be selected with -k, so the loader rejects it.
# Use fullmatch with these: a "$" anchor would also accept a trailing newline.
_SELECTABLE_NAME = re.compile(r"[\w.+\-/:]+")
_CONFIG_ID = re.compile(r"[\w.+\-]+")
# Hugging Face ids are far shorter; file names built from a test id must stay
# within the 255-byte name limit of common file systems.
MAX_NAME_LENGTH = 200
# All merged configs together. A registry of 10,000 entries over 50 distinct
# config lists contains a few thousand values, so this only stops runaway input.
MAX_MERGED_VALUES = 2_000_000


@dataclass(frozen=True)
class ModelEntry:
    """One entry of ``models:`` as written in the file."""

    index: int
    line: int
    name: str
    config_id: str | None
    yaml_extra: tuple[str, ...]
    xfail: str | None = None
    skip: str | None = None
    yaml_extra_line: int | None = None


@dataclass
class Model:
    """An entry with its merged config and effective world size."""

    entry: ModelEntry
    test_id: str
    config_files: tuple[Path, ...] = ()
    merged: MergedConfig | None = None
    world_size: int | None = None
    world_size_source: str = ""
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def config_id(self) -> str | None:
        return self.entry.config_id

    @property
    def config(self) -> dict[str, Any]:
        """The merged config, shared between models with the same files: do not mutate."""
        return self.merged.data if self.merged is not None else {}

    @property
    def is_valid(self) -> bool:
        return self.merged is not None and not errors_only(self.diagnostics)


@dataclass
class Registry:
    """A loaded registry: its models in file order and every diagnostic found."""

    root: Path
    models_path: Path
    configs_dir: Path
    models: list[Model] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    config_documents: dict[Path, YamlDocument] = field(default_factory=dict)
    _config_files: list[Path] | None = field(default=None, repr=False)
    # The yaml_extra names of every entry read, valid or not; None when
    # models.yaml gave no list of entries (unreadable, invalid YAML, no models:).
    config_names: set[str] | None = None

    @property
    def errors(self) -> list[Diagnostic]:
        return errors_only(self.diagnostics)

    @property
    def warnings(self) -> list[Diagnostic]:
        return warnings_only(self.diagnostics)

    @property
    def schema_path(self) -> Path | None:
        path = self.root / CONFIG_SCHEMA_FILE
        return path if path.is_file() else None

    def raise_for_errors(self) -> None:
        if self.errors:
            raise RegistryError(self.errors)

    def config_files(self) -> list[Path]:
        """Return every YAML file under ``configs/``, sorted.

        Files in folders that cannot be read are left out, because the list
        only serves suggestions and lints.
        """
        # Suggestions for each missing file and the lints all read this list,
        # so the folder is walked once per registry.
        if self._config_files is None:
            self._config_files = self._list_config_files()
        return list(self._config_files)

    def _list_config_files(self) -> list[Path]:
        try:
            if not self.configs_dir.is_dir():
                return []
            found = [*self.configs_dir.rglob("*.yaml"), *self.configs_dir.rglob("*.yml")]
            return sorted(path for path in found if path.is_file())
        except OSError:
            return []

    def find(self, name: str, config_id: str | None = None) -> list[Model]:
        return [
            model
            for model in self.models
            if model.name == name and (config_id is None or model.config_id == config_id)
        ]


def bundled_registry_path() -> Path | None:
    """Return the registry shipped with the plugin, or None when this install lacks it.

    A wheel carries it inside the package; a source checkout keeps it beside
    the package.
    """
    package = Path(__file__).parent
    for candidate in (package / "model_registry", package.parent / "model_registry"):
        if (candidate / MODELS_FILE).is_file():
            return candidate
    return None


def resolve_registry_path(path: Path) -> tuple[Path, Path]:
    """Return ``(root, models_path)`` for a registry folder or its ``models.yaml``.

    Raises :class:`RegistryError` when neither exists or it cannot be accessed.
    """
    path = path.expanduser()
    try:
        return _resolve_registry_path(path)
    except OSError as error:
        raise RegistryError(
            [Diagnostic(f"cannot access the registry: {error.strerror}", path=Path(error.filename or path))]
        ) from None


def _resolve_registry_path(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        models_path = path / MODELS_FILE
        if models_path.is_dir():
            raise RegistryError(
                [Diagnostic(f"{MODELS_FILE} is a folder, not a file; it must be the registry's YAML file", path=models_path)]
            )
        if not models_path.is_file():
            if path.suffix in (".yaml", ".yml"):
                message = "is a folder, not a YAML file; pass a registry folder or its models.yaml"
            else:
                message = f"no {MODELS_FILE} in registry folder; pass the folder that contains {MODELS_FILE}"
            raise RegistryError([Diagnostic(message, path=path)])
        return path.resolve(), models_path.resolve()

    if path.is_file():
        if path.suffix not in (".yaml", ".yml"):
            raise RegistryError(
                [Diagnostic(f"not a {MODELS_FILE} file; pass a registry folder or its {MODELS_FILE}", path=path)]
            )
        return path.parent.resolve(), path.resolve()

    raise RegistryError(
        [Diagnostic("registry not found; pass a registry folder or its models.yaml", path=path)]
    )


def _suggest(value: str, choices: Iterable[str]) -> str:
    matches = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


class _Loader:
    """One pass over a registry; collects diagnostics instead of raising."""

    def __init__(self, root: Path, models_path: Path) -> None:
        self.registry = Registry(
            root=root, models_path=models_path, configs_dir=root / CONFIGS_DIR
        )
        self.diagnostics = self.registry.diagnostics
        # Each config file is parsed once however many entries use it, and each
        # distinct list of files is merged once.
        self._config_cache: dict[Path, YamlDocument | None] = {}
        self._path_cache: dict[str, Path | None] = {}
        self._merged_values = 0
        # The real path of each config path, to find one file listed under two names.
        self._real_paths: dict[Path, Path] = {}
        self._resolved: dict[tuple[str, ...], tuple[tuple[Path, ...], MergedConfig, Any]] = {}
        self._merge_cache: dict[tuple[Path, ...], tuple[MergedConfig | None, Any, list[Diagnostic]]] = {}

    def error(self, message: str, line: int | None, path: Path | None = None, entry: str | None = None) -> Diagnostic:
        diagnostic = Diagnostic(message, path=path or self.registry.models_path, line=line, entry=entry)
        self.diagnostics.append(diagnostic)
        return diagnostic

    def warning(self, message: str, line: int | None, path: Path | None = None, entry: str | None = None) -> None:
        self.diagnostics.append(
            Diagnostic(message, path=path or self.registry.models_path, line=line, severity="warning", entry=entry)
        )

    # --- models.yaml --------------------------------------------------------

    def load(self, cache_dir: Path | None = None) -> Registry:
        try:
            document = load_yaml(self.registry.models_path, cache_dir)
        except YamlLoadError as error:
            self.diagnostics.extend(error.diagnostics)
            if error.document is None:
                return self.registry
            # Keep going with what was read, so entry errors show up in this run too.
            document = error.document

        entries = self._read_top_level(document)
        self._build_models(entries)
        return self.registry

    def _read_top_level(self, document: YamlDocument) -> list[ModelEntry]:
        data = document.data
        if not isinstance(data, Mapping):
            kind = "empty" if data is None else f"a {type(data).__name__}"
            self.error(
                f"{MODELS_FILE} is {kind}; it must be a mapping with version: '{SUPPORTED_VERSION}' and a models: list",
                document.line_of(()) or 1,
            )
            return []

        for key in data:
            if key not in TOP_LEVEL_KEYS:
                self.warning(
                    f"unknown top-level key {key!r} is ignored{_suggest(str(key), TOP_LEVEL_KEYS)}",
                    document.line_of((key,)),
                )

        version = data.get("version")
        if "version" not in data:
            self.error(f"missing 'version'; add version: '{SUPPORTED_VERSION}' at the top", 1)
        elif not isinstance(version, str):
            self.error(
                f"version must be the string '{SUPPORTED_VERSION}', got {version!r} "
                f"({type(version).__name__}); quote it: version: '{SUPPORTED_VERSION}'",
                document.line_of(("version",)),
            )
        elif version != SUPPORTED_VERSION:
            self.error(
                f"unsupported registry version {version!r}; this plugin reads version '{SUPPORTED_VERSION}'",
                document.line_of(("version",)),
            )

        if "models" not in data:
            self.error("missing 'models' list; add models: with one entry per model", 1)
            return []
        models = data["models"]
        if models is None or models == []:
            self.error("'models' is empty; add at least one entry", document.line_of(("models",)))
            return []
        if not isinstance(models, list):
            self.error(
                f"'models' must be a list of entries, got a {type(models).__name__}",
                document.line_of(("models",)),
            )
            return []

        self.registry.config_names = set()
        entries = []
        for index, raw in enumerate(models):
            entry = self._read_entry(index, raw, document)
            if entry is not None:
                entries.append(entry)
        return entries

    def _read_entry(self, index: int, raw: Any, document: YamlDocument) -> ModelEntry | None:
        line = document.line_of(("models", index))
        if not isinstance(raw, Mapping):
            self.error(
                f"entry {index + 1} must be a mapping with name and yaml_extra, got {raw!r}",
                line,
            )
            return None

        def key_line(key: str) -> int | None:
            return document.line_of(("models", index, key))

        name = raw.get("name")
        label = name if isinstance(name, str) else f"entry {index + 1}"
        problems_before = len(self.diagnostics)

        for key in raw:
            if key not in ENTRY_KEYS:
                self.error(
                    f"unknown key {key!r} in {label}{_suggest(str(key), ENTRY_KEYS)} "
                    f"(allowed keys: {', '.join(ENTRY_KEYS)})",
                    key_line(key),
                )
        for key in REQUIRED_ENTRY_KEYS:
            if key not in raw:
                self.error(f"{label} is missing '{key}'; {_MISSING_KEY_FIXES[key]}", line)

        if "name" in raw:
            self._check_name(name, key_line("name"))

        config_id = raw.get("config_id")
        if isinstance(config_id, str) and config_id.startswith("-"):
            self.error(
                f"config_id {config_id!r} of {label} starts with '-', so a command would read it as an "
                "option; start it with a letter or digit",
                key_line("config_id"),
            )
        elif config_id is not None and not (isinstance(config_id, str) and _CONFIG_ID.fullmatch(config_id)):
            self.error(
                f"config_id of {label} must be a string of letters, digits, '_', '.', '+' or '-', got {config_id!r}",
                key_line("config_id"),
            )

        yaml_extra = self._check_yaml_extra(raw.get("yaml_extra"), label, key_line("yaml_extra")) if "yaml_extra" in raw else None
        if yaml_extra is not None:
            # Also from entries with errors, so the unused-file lint skips their files.
            self.registry.config_names.update(yaml_extra)

        reasons = {}
        for key in ("xfail", "skip"):
            if key in raw:
                value = raw[key]
                if not isinstance(value, str) or not value.strip():
                    self.error(
                        f"{key} of {label} must be a non-empty reason string, got {value!r}; "
                        f'write e.g. {key}: "fails with CUDA OOM"',
                        key_line(key),
                    )
                else:
                    reasons[key] = value.strip()
        if "xfail" in reasons and "skip" in reasons:
            self.error(f"{label} sets both xfail and skip; keep one", key_line("skip"))

        if len(self.diagnostics) > problems_before or yaml_extra is None:
            return None
        return ModelEntry(
            index=index,
            line=line or 0,
            name=name,
            config_id=config_id,
            yaml_extra=yaml_extra,
            xfail=reasons.get("xfail"),
            skip=reasons.get("skip"),
            yaml_extra_line=key_line("yaml_extra"),
        )

    def _check_name(self, name: Any, line: int | None) -> None:
        if not isinstance(name, str) or not name:
            self.error(f"name must be a non-empty string such as org/model, got {name!r}", line)
        elif len(name) > MAX_NAME_LENGTH:
            self.error(
                f"name {name[:40]!r}... is {len(name)} characters long; use at most {MAX_NAME_LENGTH}, "
                "because file names built from it must fit the file system's limit",
                line,
            )
        elif name.startswith("-"):
            self.error(
                f"name {name!r} starts with '-', so a command would read it as an option; "
                "start it with a letter or digit",
                line,
            )
        elif "::" in name:
            self.error(
                f"name {name!r} contains '::', which pytest reads as a node id separator; "
                "use a single ':' or '/'",
                line,
            )
        elif not _SELECTABLE_NAME.fullmatch(name):
            bad = sorted({repr(char) for char in name if not _SELECTABLE_NAME.fullmatch(char)})
            self.error(
                f"name {name!r} contains {', '.join(bad)}, which pytest -k cannot select; "
                "use only letters, digits and . _ - + / :",
                line,
            )

    def _check_yaml_extra(self, value: Any, label: str, line: int | None) -> tuple[str, ...] | None:
        if isinstance(value, str):
            self.error(
                f"yaml_extra of {label} must be a list, got the string {value!r}; write yaml_extra: [{value!r}]",
                line,
            )
            return None
        if not isinstance(value, list):
            self.error(f"yaml_extra of {label} must be a list of config file names, got {value!r}", line)
            return None
        names = []
        for item in value:
            if not isinstance(item, str) or not item.strip():
                self.error(f"yaml_extra of {label} has {item!r}; every item must be a config file name", line)
                return None
            names.append(item)
        return tuple(names)

    # --- entries to models --------------------------------------------------

    def _build_models(self, entries: list[ModelEntry]) -> None:
        name_counts = Counter(entry.name for entry in entries)
        first_seen: dict[tuple[str, str | None], ModelEntry] = {}

        for entry in entries:
            key = (entry.name, entry.config_id)
            if key in first_seen:
                shown = entry.name if entry.config_id is None else f"{entry.name} with config_id {entry.config_id!r}"
                self.error(
                    f"duplicate entry {shown}: lines {first_seen[key].line} and {entry.line}; "
                    "remove one or give them different config_id values",
                    entry.line,
                )
                continue
            first_seen[key] = entry

            test_id = entry.name
            if name_counts[entry.name] > 1 and entry.config_id is not None:
                test_id = f"{entry.name}[{entry.config_id}]"
            model = Model(entry=entry, test_id=test_id)
            self._resolve(model)
            self.registry.models.append(model)

    def _resolve(self, model: Model) -> None:
        entry = model.entry
        # Most entries repeat a list of files seen before; reuse its result.
        resolved = self._resolved.get(entry.yaml_extra)
        if resolved is not None:
            model.config_files, model.merged, world_size = resolved
            model.world_size = world_size.value
            model.world_size_source = world_size.source
            return

        paths: list[Path] = []
        seen: dict[Path, str] = {}  # by real path
        ok = True

        for name in entry.yaml_extra:
            path = self._cached_config_path(name, model)
            if path is None:
                ok = False
                continue
            # Two names may reach one file: "sub/../a.yaml", or a symlink in configs/.
            real = self._real_paths.get(path, path)
            if real in seen:
                self._entry_error(model, f"{model.test_id} lists {name!r} twice in yaml_extra; remove one")
                ok = False
                continue
            seen[real] = name
            paths.append(path)
        if not ok:
            return

        documents = [self._config_document(path) for path in paths]
        if any(document is None for document in documents):
            # The file's own errors are already reported once, against the file.
            model.diagnostics.append(Diagnostic("a config file has errors", entry=model.test_id))
            return

        model.config_files = tuple(paths)
        key = tuple(paths)
        if key not in self._merge_cache:
            self._merge_cache[key] = self._merge(documents)
        merged, world_size, problems = self._merge_cache[key]

        for problem in problems:
            shown = Diagnostic(
                f"{problem.message} (in {model.test_id}, {self.registry.models_path.name} line {entry.line})",
                path=problem.path,
                line=problem.line,
                entry=model.test_id,
            )
            model.diagnostics.append(shown)
            self.diagnostics.append(shown)
        if problems:
            return

        model.merged = merged
        model.world_size = world_size.value
        model.world_size_source = world_size.source
        self._resolved[entry.yaml_extra] = (model.config_files, merged, world_size)

    def _merge(self, documents: list[YamlDocument]) -> tuple[MergedConfig | None, Any, list[Diagnostic]]:
        if self._merged_values > MAX_MERGED_VALUES:
            return None, None, [self._too_large(documents)]
        try:
            merged = merge_documents(documents)
        except MergeConflictError as error:
            return None, None, error.diagnostics

        # Each distinct file list is a deep copy. Aliases that expand within
        # one file's limit could still fill memory over many such lists.
        self._merged_values += _count_values(merged.data)
        if self._merged_values > MAX_MERGED_VALUES:
            return None, None, [self._too_large(documents)]
        try:
            world_size = effective_world_size(merged)
        except WorldSizeError as error:
            return None, None, error.diagnostics
        return merged, world_size, []

    def _too_large(self, documents: list[YamlDocument]) -> Diagnostic:
        return Diagnostic(
            f"the merged configs of this registry hold more than {MAX_MERGED_VALUES:,} values; "
            "large YAML aliases repeated across config lists cause this, so write the data out once",
            path=documents[-1].path if documents else self.registry.models_path,
            line=1,
        )

    def _entry_error(self, model: Model, message: str) -> None:
        # Problems with config paths point at the entry's yaml_extra line.
        line = model.entry.yaml_extra_line or model.entry.line
        model.diagnostics.append(self.error(message, line, entry=model.test_id))

    def _cached_config_path(self, name: str, model: Model) -> Path | None:
        # Resolving paths touches the file system; a registry names few files many times.
        if name in self._path_cache:
            path = self._path_cache[name]
            if path is None:
                self._config_path(name, model)  # report the problem for this entry too
            return path
        path = self._path_cache[name] = self._config_path(name, model)
        return path

    def _config_path(self, name: str, model: Model) -> Path | None:
        configs_dir = self.registry.configs_dir
        # "sub/../a.yaml" stays inside configs/, which only the normalised path shows.
        relative = os.path.normpath(name)
        if os.path.isabs(relative) or relative == os.pardir or relative.startswith(os.pardir + os.sep):
            self._entry_error(
                model,
                f"config path {name!r} in {model.test_id} leaves {CONFIGS_DIR}/; "
                f"use a file name relative to {configs_dir}",
            )
            return None

        path = configs_dir / relative
        try:
            # A symlink could still point outside configs/, so compare real
            # paths, and configs/ itself must not lead out of the registry.
            real = path.resolve()
            configs_real = configs_dir.resolve()
            inside = real.is_relative_to(configs_real) and configs_real.is_relative_to(self.registry.root.resolve())
            is_file = path.is_file()
            is_folder = not is_file and path.is_dir()
        except OSError as error:
            self._entry_error(model, f"cannot access config file {name!r} of {model.test_id}: {error.strerror}")
            return None
        except RuntimeError:
            # Python before 3.13 raises this for a symlink loop.
            self._entry_error(model, f"config path {name!r} of {model.test_id} is a symlink loop; fix the link")
            return None
        except ValueError:
            # A NUL character, which no file name may contain.
            self._entry_error(model, f"config path {name!r} of {model.test_id} is not a valid file name")
            return None

        if not inside:
            self._entry_error(
                model,
                f"config path {name!r} in {model.test_id} resolves outside {CONFIGS_DIR}/; "
                "config files must live in the registry's configs folder",
            )
            return None
        if is_folder:
            self._entry_error(
                model, f"config path {name!r} of {model.test_id} is a folder, not a file; name a YAML file"
            )
            return None
        if not is_file:
            self._entry_error(model, f"config file {name!r} of {model.test_id} not found in {configs_dir}{self._near_match(name)}")
            return None

        self._real_paths[path] = real
        return path

    def _near_match(self, name: str) -> str:
        available = [str(path.relative_to(self.registry.configs_dir)) for path in self.registry.config_files()]
        stem, dot, suffix = name.rpartition(".")
        if dot and suffix in ("yml", "yaml"):
            swapped = f"{stem}.{'yaml' if suffix == 'yml' else 'yml'}"
            if swapped in available:
                return f"; did you mean {swapped!r}?"
        return _suggest(name, available)

    def _config_document(self, path: Path) -> YamlDocument | None:
        if path in self._config_cache:
            return self._config_cache[path]

        document: YamlDocument | None
        try:
            document = load_yaml(path)
        except YamlLoadError as error:
            self.diagnostics.extend(error.diagnostics)
            document = None
        else:
            if document.data is None:
                self.error(
                    "config file is empty or only comments; add settings, or write {} "
                    "if it deliberately sets nothing",
                    1,
                    path=path,
                )
                document = None
            elif not isinstance(document.data, Mapping):
                self.error(
                    f"config file must be a mapping of settings, got a {type(document.data).__name__}; "
                    "write key: value lines at the top level",
                    document.line_of(()),
                    path=path,
                )
                document = None

        self._config_cache[path] = document
        if document is not None:
            self.registry.config_documents[path] = document
        return document


def load_registry(path: Path, cache_dir: Path | None = None) -> Registry:
    """Load and validate a registry; problems are in ``Registry.diagnostics``.

    ``cache_dir`` is an optional folder for parsed copies of a large
    ``models.yaml`` (see ``yamlio.load_yaml``). Raises :class:`RegistryError`
    only when the registry itself cannot be found.
    """
    from .lints import lint_registry  # lints read a loaded registry

    root, models_path = resolve_registry_path(Path(path))
    registry = _Loader(root, models_path).load(cache_dir)
    registry.diagnostics.extend(lint_registry(registry))
    return registry


def _count_values(data: Any) -> int:
    """Return the number of mappings, lists and scalars in ``data``."""
    count = 0
    stack = [data]
    while stack:
        value = stack.pop()
        count += 1
        if isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count
