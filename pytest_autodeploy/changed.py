"""Selection of the registry entries that changed since a git revision.

``--autodeploy-changed-since REF`` runs only the entries whose merged config or
effective world size differs from the registry at REF, plus new entries. The
registry at REF is read with git plumbing commands (``ls-tree``, ``cat-file``)
into a temporary folder and loaded with the normal loader, so the working tree
is never checked out or modified. Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Optional, Sequence, Tuple

from .merge import format_key_path
from .registry import CONFIGS_DIR, ModelEntry, Registry, load_registry
from .yamlio import KeyPath, YamlLoadError, parse_yaml

GIT_TIMEOUT_SECONDS = 60.0
CONFIG_SUFFIXES = (".yaml", ".yml")

# Long lists are cut in the printed lines only, while the report fields keep every item.
_MAX_SHOWN_KEYS = 8
_MAX_SHOWN_MODELS = 10
_MAX_SHOWN_ERRORS = 5

# The git ls-tree mode of a symbolic link and the object type of a submodule.
_SYMLINK_MODE = "120000"
_SUBMODULE_TYPE = "commit"

# An entry's identity across revisions: (name, config_id).
Identity = Tuple[str, Optional[str]]


class ChangedSinceError(ValueError):
    """Raised when the registry at REF cannot be read: no git, no repository or an unknown REF."""


@dataclass
class ChangeReport:
    """The entries selected by a comparison with the registry at a git revision."""

    ref: str
    commit: str
    total: int  # entries in the current registry
    selected_test_ids: list[str] = field(default_factory=list)  # in current registry order
    reasons: dict[str, list[str]] = field(default_factory=dict)  # test id -> why it is selected
    file_changes: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # test ids at REF
    # Entries whose models.yaml line changed without a change to their merged
    # config or world size, so they are not selected.
    notes: list[str] = field(default_factory=list)
    registry_at_ref: bool = True
    errors_at_ref: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Return the report as lines for the terminal, most important first."""
        lines = [
            f"changed since {self.ref} ({self.commit[:12]}): "
            f"{len(self.selected_test_ids)} of {self.total} entries selected"
        ]
        if not self.registry_at_ref:
            lines.append(f"  the registry did not exist at {self.ref}, so every entry is new")
        if self.errors_at_ref:
            count = len(self.errors_at_ref)
            lines.append(
                f"  the registry at {self.ref} has {count} error{'s' if count != 1 else ''}; "
                "compared only the entries that loaded:"
            )
            lines.extend(f"    {error}" for error in self.errors_at_ref[:_MAX_SHOWN_ERRORS])
            if count > _MAX_SHOWN_ERRORS:
                lines.append(f"    and {count - _MAX_SHOWN_ERRORS} more")
        lines.extend(f"  {line}" for line in self.file_changes)
        lines.extend(f"  selected {test_id}: {'; '.join(self.reasons[test_id])}" for test_id in self.selected_test_ids)
        lines.extend(f"  removed {test_id}: no longer in the registry, not run" for test_id in self.removed)
        lines.extend(f"  {note}" for note in self.notes)
        return lines


def select_changed(registry: Registry, ref: str, *, timeout: float = GIT_TIMEOUT_SECONDS) -> ChangeReport:
    """Compare ``registry`` with its version at git revision ``ref`` and select what changed.

    Raises :class:`ChangedSinceError` when git is missing, the registry is not
    in a git work tree, ``ref`` does not resolve to a commit, or a git command
    fails or runs longer than ``timeout`` seconds.
    """
    top_level, prefix = _locate_repository(registry.root, timeout)
    commit = _resolve_commit(ref, top_level, timeout)
    snapshot = _read_snapshot(top_level, prefix, commit, registry.models_path.name, timeout)
    current = _current_files(registry, snapshot)

    models_name = registry.models_path.name
    if models_name not in snapshot.files:
        base = _Base(entries={}, raw_identities=set(), errors=[], existed=False)
    else:
        with tempfile.TemporaryDirectory(prefix="autodeploy-changed-") as folder:
            base = _load_base(snapshot, Path(folder), prefix, models_name)
    return _compare(registry, ref, commit, base, snapshot, current)


# --- git ----------------------------------------------------------------------


def _git(args: Sequence[str], cwd: Path, timeout: float, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    # --literal-pathspecs: a registry path with '*' or '?' names itself, not a glob.
    command = ["git", "--literal-pathspecs", "-C", str(cwd), *args]
    try:
        return subprocess.run(command, input=stdin, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ChangedSinceError(
            "git is not installed or not on PATH; install git to compare the registry with a git revision"
        ) from None
    except subprocess.TimeoutExpired:
        raise ChangedSinceError(f"'git {args[0]}' timed out after {timeout:g} s in {cwd}") from None
    except OSError as error:
        raise ChangedSinceError(f"cannot run git: {error}") from None


def _stderr_text(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = [line.strip() for line in result.stderr.decode(errors="replace").splitlines()]
    return "; ".join(line for line in lines if line) or f"exit status {result.returncode}"


def _locate_repository(root: Path, timeout: float) -> tuple[Path, PurePosixPath]:
    """Return the work tree's top level and the registry folder's path inside it."""
    result = _git(["rev-parse", "--show-toplevel", "--show-prefix"], root, timeout)
    if result.returncode != 0:
        raise ChangedSinceError(
            f"the registry folder {root} is not inside a git work tree, so it has no earlier "
            f"version to compare with (git: {_stderr_text(result)})"
        )

    # Output: the top level on the first line, the prefix ("" or "a/b/") on the second.
    lines = os.fsdecode(result.stdout).split("\n")
    top_level = Path(lines[0])
    prefix = lines[1] if len(lines) > 1 else ""
    return top_level, PurePosixPath(prefix)


def _resolve_commit(ref: str, top_level: Path, timeout: float) -> str:
    # A leading '-' would make git read the revision as an option.
    if not ref.strip() or ref.startswith("-"):
        raise ChangedSinceError(f"invalid git revision {ref!r}; pass a branch, tag or commit such as origin/main")

    result = _git(["rev-parse", "--verify", f"{ref}^{{commit}}"], top_level, timeout)
    if result.returncode != 0:
        raise ChangedSinceError(
            f"git cannot resolve {ref!r}; fetch it first, e.g. git fetch origin main (git: {_stderr_text(result)})"
        )
    return result.stdout.decode().strip()


@dataclass
class _Snapshot:
    """The registry's files at REF: path relative to the registry folder -> content."""

    files: dict[str, bytes] = field(default_factory=dict)
    # Paths that are symbolic links. Their content is the link target, as git stores it.
    symlinks: set[str] = field(default_factory=set)


def _read_snapshot(top_level: Path, prefix: PurePosixPath, commit: str, models_name: str, timeout: float) -> _Snapshot:
    """Read models.yaml and every file under configs/ at ``commit``."""
    pathspecs = [prefix / models_name, prefix / CONFIGS_DIR]
    result = _git(["ls-tree", "-r", "-z", "--full-name", commit, "--", *map(str, pathspecs)], top_level, timeout)
    if result.returncode != 0:
        raise ChangedSinceError(f"git ls-tree failed for {commit} (git: {_stderr_text(result)})")

    # Each record: "<mode> <type> <object>\t<path>".
    objects: dict[str, tuple[str, str]] = {}
    for record in result.stdout.split(b"\0"):
        if not record:
            continue
        header, _, raw_path = record.partition(b"\t")
        mode, kind, oid = header.decode().split(" ")
        if kind == _SUBMODULE_TYPE:
            continue
        relative = PurePosixPath(os.fsdecode(raw_path)).relative_to(prefix)
        if str(relative) == models_name or relative.parts[0] == CONFIGS_DIR:
            objects[str(relative)] = (mode, oid)

    blobs = _read_blobs([oid for _, oid in objects.values()], top_level, timeout)
    snapshot = _Snapshot()
    for relative, (mode, oid) in objects.items():
        snapshot.files[relative] = blobs[oid]
        if mode == _SYMLINK_MODE:
            snapshot.symlinks.add(relative)
    return snapshot


def _read_blobs(oids: list[str], top_level: Path, timeout: float) -> dict[str, bytes]:
    """Read many blobs with one ``git cat-file --batch`` process."""
    unique = list(dict.fromkeys(oids))
    if not unique:
        return {}
    result = _git(["cat-file", "--batch"], top_level, timeout, stdin="".join(f"{oid}\n" for oid in unique).encode())
    if result.returncode != 0:
        raise ChangedSinceError(f"git cat-file failed (git: {_stderr_text(result)})")

    # Output per object: "<oid> <type> <size>\n<content>\n".
    output = result.stdout
    blobs: dict[str, bytes] = {}
    position = 0
    for oid in unique:
        header_end = output.index(b"\n", position)
        header = output[position:header_end].decode().split(" ")
        if len(header) != 3 or header[1] != "blob":
            raise ChangedSinceError(f"git cat-file returned {' '.join(header)!r} for blob {oid}")
        size = int(header[2])
        blobs[oid] = output[header_end + 1 : header_end + 1 + size]
        position = header_end + 1 + size + 1
    return blobs


# --- the registry at REF ------------------------------------------------------


@dataclass(frozen=True)
class _EntryState:
    """The parts of one model that the comparison uses, kept after the temporary folder is removed."""

    test_id: str
    entry: ModelEntry
    config: dict[str, Any] | None  # None when the entry has errors
    world_size: int | None

    @property
    def config_names(self) -> set[str]:
        # yaml_extra names rather than resolved paths, which stay empty for an
        # entry with errors.
        return _config_names(self.entry)


def _config_names(entry: ModelEntry) -> set[str]:
    """Return the yaml_extra files of an entry as paths relative to the registry folder.

    Names that leave configs/ are left out, because the loader rejects them.
    PurePosixPath drops a leading "./", so "./a.yaml" and "a.yaml" match.
    """
    names = set()
    for name in entry.yaml_extra:
        relative = PurePosixPath(name)
        if not relative.is_absolute() and ".." not in relative.parts:
            names.add(str(PurePosixPath(CONFIGS_DIR, relative)))
    return names


def _entry_states(registry: Registry) -> dict[Identity, _EntryState]:
    states = {}
    for model in registry.models:
        config = model.merged.data if model.merged is not None else None
        states[(model.name, model.config_id)] = _EntryState(model.test_id, model.entry, config, model.world_size)
    return states


@dataclass
class _Base:
    """The registry at REF."""

    entries: dict[Identity, _EntryState]
    # Identities written in models.yaml at REF, including entries that failed
    # to load. None when models.yaml itself did not parse.
    raw_identities: set[Identity] | None
    errors: list[str]
    existed: bool = True


def _load_base(snapshot: _Snapshot, folder: Path, prefix: PurePosixPath, models_name: str) -> _Base:
    """Write the snapshot into ``folder`` with the repository's layout and load it."""
    root = folder / prefix
    for relative, content in snapshot.files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative in snapshot.symlinks:
            # The loader rejects a link that resolves outside configs/.
            os.symlink(os.fsdecode(content), path)
        else:
            path.write_bytes(content)

    registry = load_registry(root / models_name)

    # Show paths as they are in the repository, not in the temporary folder.
    errors = []
    for diagnostic in registry.errors:
        shown = diagnostic
        if diagnostic.path is not None and diagnostic.path.is_relative_to(folder):
            shown = dataclasses.replace(diagnostic, path=diagnostic.path.relative_to(folder))
        errors.append(shown.format().replace(f"{folder}{os.sep}", ""))

    return _Base(
        entries=_entry_states(registry),
        raw_identities=_raw_identities(snapshot.files[models_name], Path(models_name)),
        errors=errors,
    )


def _raw_identities(content: bytes, path: Path) -> set[Identity] | None:
    """Return the (name, config_id) pairs written in models.yaml, valid or not."""
    try:
        data = parse_yaml(content.decode("utf-8", errors="replace"), path).data
    except YamlLoadError:
        return None
    models = data.get("models") if isinstance(data, Mapping) else None
    if not isinstance(models, list):
        return None
    return {
        (raw["name"], raw.get("config_id"))
        for raw in models
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str)
    }


# --- the comparison -----------------------------------------------------------


def _current_files(registry: Registry, snapshot: _Snapshot) -> dict[str, bytes]:
    """Read the current config files that the comparison looks at, keyed like the snapshot."""
    names = {path.relative_to(registry.root).as_posix() for path in registry.config_files()}
    names.update(name for name in snapshot.files if name.startswith(f"{CONFIGS_DIR}/"))
    for model in registry.models:
        names.update(_config_names(model.entry))
    names.add(registry.models_path.name)

    files = {}
    for name in names:
        path = registry.root / name
        try:
            # A symlink compares by its target, as git stores it.
            files[name] = os.fsencode(os.readlink(path)) if path.is_symlink() else path.read_bytes()
        except OSError:
            continue  # missing now: a removed file
    return files


def _is_config_file(name: str, used: set[str]) -> bool:
    return name.startswith(f"{CONFIGS_DIR}/") and (name.endswith(CONFIG_SUFFIXES) or name in used)


def _same(old: Any, new: Any) -> bool:
    """Compare two config values; unlike ==, 1, 1.0 and true differ, as they do in YAML."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return old.keys() == new.keys() and all(_same(old[key], new[key]) for key in old)
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(_same(a, b) for a, b in zip(old, new))
    if type(old) is not type(new):
        return False
    if isinstance(old, float) and math.isnan(old) and math.isnan(new):
        return True
    return bool(old == new)


def changed_key_paths(old: Mapping[str, Any], new: Mapping[str, Any], prefix: KeyPath = ()) -> list[KeyPath]:
    """Return the key paths whose value differs, descending into mappings on both sides."""
    paths: list[KeyPath] = []
    for key in sorted({*old, *new}, key=str):
        path = prefix + (key,)
        if key not in old or key not in new:
            paths.append(path)
        elif isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            paths.extend(changed_key_paths(old[key], new[key], path))
        elif not _same(old[key], new[key]):
            paths.append(path)
    return paths


def _join_limited(items: Sequence[str], limit: int) -> str:
    text = ", ".join(items[:limit])
    if len(items) > limit:
        text += f", and {len(items) - limit} more"
    return text


def _edited_fields(old: ModelEntry, new: ModelEntry) -> list[str]:
    return [name for name in ("yaml_extra", "xfail", "skip") if getattr(old, name) != getattr(new, name)]


def _compare_entry(old: _EntryState, new: _EntryState, changed_files: set[str], ref: str) -> tuple[bool, list[str]]:
    """Return whether an entry present at REF and now is selected, and why."""
    if new.config is None:
        if old.config is None:
            return False, []  # invalid then and now: the registry errors report it
        return True, ["merged config is invalid now"]
    if old.config is None:
        return True, [f"merged config was invalid at {ref}"]

    reasons = []
    if old.entry.yaml_extra != new.entry.yaml_extra:
        reasons.append("yaml_extra changed")
    if old.world_size != new.world_size:
        reasons.append(f"world size {old.world_size} -> {new.world_size}")
    keys = [format_key_path(path) for path in changed_key_paths(old.config, new.config)]
    if keys:
        reasons.append(f"merged config changed (keys: {_join_limited(keys, _MAX_SHOWN_KEYS)})")
    selected = old.world_size != new.world_size or bool(keys)

    files = sorted((old.config_names | new.config_names) & changed_files)
    if selected and files:
        reasons.append(f"changed files: {', '.join(files)}")
    return selected, reasons


def _new_entry_reason(identity: Identity, base: _Base, ref: str) -> str:
    if not base.errors:
        return "new entry"
    if base.raw_identities is None:
        return f"new entry, or not comparable because models.yaml did not load at {ref}"
    if identity in base.raw_identities:
        return f"entry was invalid at {ref}"
    return "new entry"


def _compare(
    registry: Registry,
    ref: str,
    commit: str,
    base: _Base,
    snapshot: _Snapshot,
    current_files: dict[str, bytes],
) -> ChangeReport:
    report = ChangeReport(
        ref=ref,
        commit=commit,
        total=len(registry.models),
        registry_at_ref=base.existed,
        errors_at_ref=base.errors,
    )
    current = _entry_states(registry)
    used = {name for state in [*current.values(), *base.entries.values()] for name in state.config_names}
    changed_files = {
        name
        for name in {*snapshot.files, *current_files}
        if _is_config_file(name, used) and snapshot.files.get(name) != current_files.get(name)
    }
    if not base.existed:
        # Every file would be reported as added, which repeats "every entry is new".
        changed_files = set()

    # Entries now, in registry order.
    edited = 0
    for identity, state in current.items():
        old = base.entries.get(identity)
        if old is None:
            selected, reasons = True, [_new_entry_reason(identity, base, ref)]
        else:
            selected, reasons = _compare_entry(old, state, changed_files, ref)
            fields = _edited_fields(old.entry, state.entry)
            edited += bool(fields)
            if fields and not selected:
                report.notes.append(
                    f"not selected {state.test_id}: {', '.join(fields)} changed in models.yaml, "
                    "but its merged config and world size did not"
                )
        if selected:
            report.selected_test_ids.append(state.test_id)
            report.reasons[state.test_id] = reasons

    removed = {identity: state for identity, state in base.entries.items() if identity not in current}
    report.removed = [state.test_id for state in removed.values()]

    # One line per changed file: models.yaml first, then config files by path.
    models_name = registry.models_path.name
    if base.existed and snapshot.files.get(models_name) != current_files.get(models_name):
        new_count = sum(identity not in base.entries for identity in current)
        report.file_changes.append(
            f"{models_name} changed: {new_count} new, {len(removed)} removed, {edited} edited entries"
        )
    for name in sorted(changed_files):
        report.file_changes.append(_describe_file_change(name, snapshot, current_files, current, base, report))
    return report


def _describe_file_change(
    name: str,
    snapshot: _Snapshot,
    current_files: dict[str, bytes],
    current: dict[Identity, _EntryState],
    base: _Base,
    report: ChangeReport,
) -> str:
    if name not in snapshot.files:
        verb = "added"
    elif name not in current_files:
        verb = "removed"
    else:
        verb = "changed"

    # A user is an entry that lists the file now or listed it at REF.
    users = []
    for identity, state in current.items():
        old = base.entries.get(identity)
        if name in state.config_names or (old is not None and name in old.config_names):
            users.append(state.test_id)
    selected_users = [test_id for test_id in report.selected_test_ids if test_id in users]
    removed_users = [
        state.test_id
        for identity, state in base.entries.items()
        if identity not in current and name in state.config_names
    ]

    if selected_users:
        count = len(selected_users)
        return f"{name} {verb}: {count} model{'s' if count != 1 else ''} ({_join_limited(selected_users, _MAX_SHOWN_MODELS)})"
    if users:
        count = len(users)
        return (
            f"{name} {verb}: used by {count} model{'s' if count != 1 else ''}, "
            "but none of their merged configs or world sizes changed"
        )
    if removed_users:
        return f"{name} {verb}: used only by removed entries ({_join_limited(removed_users, _MAX_SHOWN_MODELS)})"
    return f"{name} {verb}: no model uses it"
