"""GPU discovery: which GPU ids this session may hand to tests.

`discover_gpus` takes the first source that is present:

1. the ``--autodeploy-gpus`` option (or the ``autodeploy_gpus`` ini value),
2. the ``CUDA_VISIBLE_DEVICES`` environment variable,
3. NVML through the ``pynvml`` module of the nvidia-ml-py package,
4. the output of ``nvidia-smi -L``,
5. otherwise no GPUs.

Every id is in the form that a child process accepts in its own ``CUDA_VISIBLE_DEVICES``:
an index such as ``4``, a GPU UUID such as ``GPU-8d2f...`` or a MIG id.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SPEC_SOURCE = "--autodeploy-gpus"
ENV_SOURCE = "CUDA_VISIBLE_DEVICES"
NVML_SOURCE = "NVML"
NVIDIA_SMI_SOURCE = "nvidia-smi"
NO_SOURCE = "none (no --autodeploy-gpus, CUDA_VISIBLE_DEVICES, NVML or nvidia-smi)"

# Values with which schedulers and container runtimes hide every GPU.
_HIDDEN_VALUES = frozenset({"-1", "NoDevFiles"})

# A slow driver can take several seconds to respond, but a hung one must not stall collection.
NVIDIA_SMI_TIMEOUT_S = 10.0

# One line of `nvidia-smi -L` per GPU, e.g. "GPU 0: NVIDIA H200 (UUID: GPU-8d2f...)".
# MIG devices follow as indented "MIG ..." lines, which this pattern skips.
_NVIDIA_SMI_GPU_LINE = re.compile(r"^GPU (\d+): (.+)$")

_INTEGER = re.compile(r"[+-]?\d+")


class GpuSpecError(ValueError):
    """Invalid GPU list in ``--autodeploy-gpus`` or ``CUDA_VISIBLE_DEVICES``."""


@dataclass(frozen=True)
class GpuInventory:
    """The GPU ids that this session may use, and where they came from."""

    ids: tuple[str, ...]
    # The source label, e.g. "--autodeploy-gpus" or "NVML".
    source: str
    # Optional per-GPU lines such as "GPU 0: NVIDIA H200 (UUID: GPU-...)", in the order of ids.
    details: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """The number of GPUs."""
        return len(self.ids)

    def describe(self) -> str:
        """Return a one-line header such as "8 GPUs [0,1,2,3,4,5,6,7] from NVML"."""
        noun = "GPU" if self.count == 1 else "GPUs"
        if not self.ids:
            return f"0 GPUs from {self.source}"
        return f"{self.count} {noun} [{','.join(self.ids)}] from {self.source}"


def discover_gpus(
    spec: str | None, environ: Mapping[str, str] = os.environ
) -> GpuInventory:
    """Return the GPUs from the first source that is present (see the module docstring).

    A blank `spec` counts as not given, so that an empty ini value falls through to the
    environment. Raises GpuSpecError for an invalid `spec` or ``CUDA_VISIBLE_DEVICES``.
    """
    if spec is not None and spec.strip():
        return GpuInventory(ids=parse_gpu_spec(spec), source=SPEC_SOURCE)

    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return GpuInventory(ids=parse_visible_devices(visible), source=ENV_SOURCE)

    inventory = _discover_with_nvml()
    if inventory is not None:
        return inventory

    inventory = _discover_with_nvidia_smi()
    if inventory is not None:
        return inventory

    logger.debug("no GPU source found; running without GPUs")
    return GpuInventory(ids=(), source=NO_SOURCE)


# Far above any node built today. Each GPU has its own lock file, and a lease
# request opens one per free GPU, so an absurd count would exhaust file handles.
MAX_GPUS = 1024


def parse_gpu_spec(spec: str) -> tuple[str, ...]:
    """Parse an ``--autodeploy-gpus`` value: a count N (ids 0..N-1) or a comma-separated id list.

    List items are non-negative indices, written back without leading zeros as CUDA reads
    them, or GPU and MIG UUIDs (``GPU-...``, ``MIG-...``). Because a bare number is a
    count, a single index other than 0 cannot be written here; set CUDA_VISIBLE_DEVICES
    to select one GPU by index.
    """
    text = spec.strip()
    if text.isdigit():
        if int(text) > MAX_GPUS:
            raise GpuSpecError(
                f"invalid --autodeploy-gpus value {spec!r}: more than {MAX_GPUS} GPUs on one node; "
                "give the node's real GPU count"
            )
        return tuple(str(index) for index in range(int(text)))

    ids: list[str] = []
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            raise GpuSpecError(
                f"invalid --autodeploy-gpus value {spec!r}: it contains an empty item; "
                f"write a count such as 8 or a comma-separated list such as 0,1,2,3"
            )

        if _INTEGER.fullmatch(item):
            if int(item) < 0:
                raise GpuSpecError(
                    f"invalid --autodeploy-gpus value {spec!r}: GPU index {item} is negative; "
                    f"use indices 0 or greater"
                )
            item = str(int(item))
        elif not item.startswith(("GPU-", "MIG-")):
            raise GpuSpecError(
                f"invalid --autodeploy-gpus value {spec!r}: {item!r} is neither a GPU index "
                f"nor a GPU-/MIG- UUID; write a count such as 8 or a list such as 0,1,2,3"
            )

        if item in ids:
            raise GpuSpecError(
                f"invalid --autodeploy-gpus value {spec!r}: GPU {item} is listed twice; "
                f"list each GPU once"
            )
        ids.append(item)

    return tuple(ids)


def parse_visible_devices(value: str) -> tuple[str, ...]:
    """Parse a ``CUDA_VISIBLE_DEVICES`` value into ids, keeping their order and form.

    An empty value, "-1" and "NoDevFiles" hide every GPU. The CUDA runtime ignores the
    list from the first invalid entry on, so an empty item, a negative index or text
    that is neither an index nor a GPU-/MIG- UUID ends the list here too. Raises GpuSpecError when a GPU is listed twice.
    """
    text = value.strip()
    if not text or text in _HIDDEN_VALUES:
        return ()

    ids: list[str] = []
    for raw_item in text.split(","):
        item = raw_item.strip()
        if _INTEGER.fullmatch(item):
            valid = int(item) >= 0
        else:
            valid = item.startswith(("GPU-", "MIG-"))
        if not valid:
            logger.debug(
                "CUDA_VISIBLE_DEVICES=%r: entry %r ends the list, as in the CUDA runtime",
                value,
                item,
            )
            break

        # NOTE: the CUDA runtime's handling of a repeated entry is not checked here. A
        # repeat would let two tests share one GPU, so it is rejected instead.
        if item in ids:
            raise GpuSpecError(
                f"invalid CUDA_VISIBLE_DEVICES value {value!r}: GPU {item} is listed twice; "
                f"list each GPU once"
            )
        ids.append(item)

    return tuple(ids)


def format_visible_devices(ids: Sequence[str]) -> str:
    """Join ids into a ``CUDA_VISIBLE_DEVICES`` value for a child process.

    The ids must already be in the form of the visible list they came from. An empty
    sequence gives "", which hides every GPU from the child.
    """
    for gpu_id in ids:
        if not gpu_id or "," in gpu_id:
            raise ValueError(f"GPU id {gpu_id!r} cannot be written into CUDA_VISIBLE_DEVICES")
    return ",".join(ids)


def query_nvml() -> list[tuple[str, str]]:
    """Return (name, UUID) for each GPU that NVML reports, in NVML index order.

    Raises ImportError when nvidia-ml-py is missing and pynvml.NVMLError when the
    library or driver fails. Tests replace this function.
    """
    import pynvml

    pynvml.nvmlInit()
    try:
        devices: list[tuple[str, str]] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
            devices.append((name, uuid))
        return devices
    finally:
        pynvml.nvmlShutdown()


def run_nvidia_smi() -> str | None:
    """Return the output of ``nvidia-smi -L``, or None when it is missing, fails or times out.

    Tests replace this function.
    """
    try:
        completed = subprocess.run(
            ["nvidia-smi", "-L"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        logger.debug("nvidia-smi not found on PATH")
        return None
    except subprocess.TimeoutExpired:
        logger.debug("nvidia-smi -L timed out after %s s", NVIDIA_SMI_TIMEOUT_S)
        return None
    except OSError as error:
        logger.debug("nvidia-smi -L could not be started: %s", error)
        return None

    if completed.returncode != 0:
        logger.debug(
            "nvidia-smi -L failed with exit code %d: %s",
            completed.returncode,
            completed.stderr.strip() or completed.stdout.strip(),
        )
        return None
    return completed.stdout


def parse_nvidia_smi(output: str) -> GpuInventory | None:
    """Parse ``nvidia-smi -L`` output, or return None when it lists no GPU."""
    ids: list[str] = []
    details: list[str] = []
    for line in output.splitlines():
        match = _NVIDIA_SMI_GPU_LINE.match(line.strip())
        if match is None:
            continue
        ids.append(match.group(1))
        details.append(match.group(0))

    if not ids:
        return None
    return GpuInventory(ids=tuple(ids), source=NVIDIA_SMI_SOURCE, details=tuple(details))


def _discover_with_nvml() -> GpuInventory | None:
    try:
        devices = query_nvml()
    except ImportError as error:
        logger.debug("NVML skipped: nvidia-ml-py is not importable (%s)", error)
        return None
    except Exception as error:
        if not _is_nvml_error(error):
            raise
        logger.debug("NVML skipped: %s: %s", type(error).__name__, error)
        return None

    if not devices:
        logger.debug("NVML reports no GPUs; trying nvidia-smi")
        return None

    # NOTE: NVML numbers GPUs by PCI bus, while CUDA numbers them fastest first unless
    # CUDA_DEVICE_ORDER=PCI_BUS_ID. The two orders agree on machines with one GPU model.
    ids = tuple(str(index) for index in range(len(devices)))
    details = tuple(
        f"GPU {index}: {name} (UUID: {uuid})" for index, (name, uuid) in enumerate(devices)
    )
    return GpuInventory(ids=ids, source=NVML_SOURCE, details=details)


def _discover_with_nvidia_smi() -> GpuInventory | None:
    output = run_nvidia_smi()
    if output is None:
        return None

    inventory = parse_nvidia_smi(output)
    if inventory is None:
        logger.debug("nvidia-smi -L listed no GPUs: %r", output)
    return inventory


def _is_nvml_error(error: Exception) -> bool:
    # pynvml raises subclasses of pynvml.NVMLError such as NVMLError_LibraryNotFound. The
    # check goes by class name because pynvml itself may be missing.
    return any(cls.__name__ == "NVMLError" for cls in type(error).__mro__)


def _text(value: str | bytes) -> str:
    # nvidia-ml-py 13.615 decodes these strings to str. Bytes are accepted too, in case a
    # release returns the raw C string.
    return value.decode() if isinstance(value, bytes) else value
