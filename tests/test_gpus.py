from __future__ import annotations

import subprocess
import sys
import types

import pynvml
import pytest

from pytest_autodeploy import gpus
from pytest_autodeploy.gpus import (
    GpuInventory,
    GpuSpecError,
    discover_gpus,
    format_visible_devices,
    parse_gpu_spec,
    parse_visible_devices,
)

MIG_ID = "MIG-GPU-8d2f6c1e-1a2b-3c4d-5e6f-0123456789ab/1/2"
UUID = "GPU-8d2f6c1e-1a2b-3c4d-5e6f-0123456789ab"

NVIDIA_SMI_OUTPUT = """\
GPU 0: NVIDIA H200 (UUID: GPU-11111111-2222-3333-4444-555555555555)
GPU 1: NVIDIA H200 (UUID: GPU-66666666-7777-8888-9999-000000000000)
  MIG 1g.18gb     Device  0: (UUID: MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)
"""


@pytest.fixture
def no_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make NVML and nvidia-smi report nothing, as on a machine without GPUs."""

    def missing_nvml() -> list[tuple[str, str]]:
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(gpus, "query_nvml", missing_nvml)
    monkeypatch.setattr(gpus, "run_nvidia_smi", lambda: None)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0", ()),
        ("1", ("0",)),
        ("4", ("0", "1", "2", "3")),
        (" 8 ", ("0", "1", "2", "3", "4", "5", "6", "7")),
        ("0,1,2,3", ("0", "1", "2", "3")),
        ("4,5,6,7", ("4", "5", "6", "7")),
        (" 6 , 2 ", ("6", "2")),
        ("03,1", ("3", "1")),
        (f"{UUID},{MIG_ID}", (UUID, MIG_ID)),
        (UUID, (UUID,)),
    ],
)
def test_gpu_spec_valid(spec: str, expected: tuple[str, ...]) -> None:
    assert parse_gpu_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "0,,1",
            "invalid --autodeploy-gpus value '0,,1': it contains an empty item; "
            "write a count such as 8 or a comma-separated list such as 0,1,2,3",
        ),
        (
            "0,1,",
            "invalid --autodeploy-gpus value '0,1,': it contains an empty item; "
            "write a count such as 8 or a comma-separated list such as 0,1,2,3",
        ),
        (
            "0,1,1",
            "invalid --autodeploy-gpus value '0,1,1': GPU 1 is listed twice; list each GPU once",
        ),
        (
            "1,01",
            "invalid --autodeploy-gpus value '1,01': GPU 1 is listed twice; list each GPU once",
        ),
        (
            "-1",
            "invalid --autodeploy-gpus value '-1': GPU index -1 is negative; "
            "use indices 0 or greater",
        ),
        (
            "0,-2",
            "invalid --autodeploy-gpus value '0,-2': GPU index -2 is negative; "
            "use indices 0 or greater",
        ),
        (
            "0;1",
            "invalid --autodeploy-gpus value '0;1': '0;1' is neither a GPU index "
            "nor a GPU-/MIG- UUID; write a count such as 8 or a list such as 0,1,2,3",
        ),
        (
            "all",
            "invalid --autodeploy-gpus value 'all': 'all' is neither a GPU index "
            "nor a GPU-/MIG- UUID; write a count such as 8 or a list such as 0,1,2,3",
        ),
    ],
)
def test_gpu_spec_invalid(spec: str, message: str) -> None:
    with pytest.raises(GpuSpecError) as excinfo:
        parse_gpu_spec(spec)

    assert str(excinfo.value) == message


def test_gpu_spec_error_is_value_error() -> None:
    assert issubclass(GpuSpecError, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4", ("4",)),
        ("4,5,6,7", ("4", "5", "6", "7")),
        ("3,1", ("3", "1")),
        (" 2 , 0 ", ("2", "0")),
        (UUID, (UUID,)),
        (f"{UUID},1", (UUID, "1")),
        (MIG_ID, (MIG_ID,)),
        ("MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", ("MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",)),
        ("", ()),
        ("   ", ()),
        ("-1", ()),
        ("NoDevFiles", ()),
        ("0,1,-1,2", ("0", "1")),
        ("-1,0", ()),
        ("0,,1", ("0",)),
    ],
)
def test_visible_devices_parse(value: str, expected: tuple[str, ...]) -> None:
    assert parse_visible_devices(value) == expected


def test_visible_devices_duplicate_rejected() -> None:
    with pytest.raises(GpuSpecError) as excinfo:
        parse_visible_devices("0,1,0")

    assert str(excinfo.value) == (
        "invalid CUDA_VISIBLE_DEVICES value '0,1,0': GPU 0 is listed twice; list each GPU once"
    )


def test_discover_spec_wins(no_hardware: None) -> None:
    inventory = discover_gpus("2", environ={"CUDA_VISIBLE_DEVICES": "4,5,6,7"})

    assert inventory.ids == ("0", "1")
    assert inventory.source == "--autodeploy-gpus"


def test_discover_blank_spec_falls_through(no_hardware: None) -> None:
    inventory = discover_gpus("  ", environ={"CUDA_VISIBLE_DEVICES": "4,5"})

    assert inventory.ids == ("4", "5")
    assert inventory.source == "CUDA_VISIBLE_DEVICES"


def test_discover_invalid_spec_raises(no_hardware: None) -> None:
    with pytest.raises(GpuSpecError, match="'0,0'"):
        discover_gpus("0,0", environ={})


def test_discover_environment_before_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> list[tuple[str, str]]:
        raise AssertionError("NVML must not be queried when CUDA_VISIBLE_DEVICES is set")

    monkeypatch.setattr(gpus, "query_nvml", fail)

    inventory = discover_gpus(None, environ={"CUDA_VISIBLE_DEVICES": f"{UUID},{MIG_ID}"})

    assert inventory.ids == (UUID, MIG_ID)
    assert inventory.source == "CUDA_VISIBLE_DEVICES"


def test_discover_empty_environment_hides_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "query_nvml", lambda: [("NVIDIA H200", UUID)])

    inventory = discover_gpus(None, environ={"CUDA_VISIBLE_DEVICES": ""})

    assert inventory.ids == ()
    assert inventory.source == "CUDA_VISIBLE_DEVICES"


def test_discover_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [("NVIDIA H200", "GPU-a"), ("NVIDIA H200", "GPU-b")]
    monkeypatch.setattr(gpus, "query_nvml", lambda: devices)
    monkeypatch.setattr(gpus, "run_nvidia_smi", lambda: NVIDIA_SMI_OUTPUT)

    inventory = discover_gpus(None, environ={})

    assert inventory.ids == ("0", "1")
    assert inventory.source == "NVML"
    assert inventory.details == (
        "GPU 0: NVIDIA H200 (UUID: GPU-a)",
        "GPU 1: NVIDIA H200 (UUID: GPU-b)",
    )


@pytest.mark.parametrize(
    "error",
    [
        pynvml.NVMLError_LibraryNotFound(),
        pynvml.NVMLError_DriverNotLoaded(),
        ImportError("No module named 'pynvml'"),
    ],
)
def test_discover_nvml_failure_uses_nvidia_smi(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def failing_nvml() -> list[tuple[str, str]]:
        raise error

    monkeypatch.setattr(gpus, "query_nvml", failing_nvml)
    monkeypatch.setattr(gpus, "run_nvidia_smi", lambda: NVIDIA_SMI_OUTPUT)

    inventory = discover_gpus(None, environ={})

    assert inventory.ids == ("0", "1")
    assert inventory.source == "nvidia-smi"
    assert inventory.details == (
        "GPU 0: NVIDIA H200 (UUID: GPU-11111111-2222-3333-4444-555555555555)",
        "GPU 1: NVIDIA H200 (UUID: GPU-66666666-7777-8888-9999-000000000000)",
    )


def test_discover_nvml_without_gpus_uses_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "query_nvml", lambda: [])
    monkeypatch.setattr(gpus, "run_nvidia_smi", lambda: NVIDIA_SMI_OUTPUT)

    assert discover_gpus(None, environ={}).source == "nvidia-smi"


def test_discover_nvml_unexpected_error_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_nvml() -> list[tuple[str, str]]:
        raise KeyError("bug")

    monkeypatch.setattr(gpus, "query_nvml", broken_nvml)

    with pytest.raises(KeyError):
        discover_gpus(None, environ={})


def test_discover_nothing_found(no_hardware: None) -> None:
    inventory = discover_gpus(None, environ={})

    assert inventory.ids == ()
    assert inventory.count == 0
    assert inventory.source == (
        "none (no --autodeploy-gpus, CUDA_VISIBLE_DEVICES, NVML or nvidia-smi)"
    )


def test_discover_nvidia_smi_without_gpu_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "query_nvml", lambda: [])
    monkeypatch.setattr(gpus, "run_nvidia_smi", lambda: "No devices found.\n")

    assert discover_gpus(None, environ={}).source.startswith("none (")


def test_nvml_query_without_driver() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver is loaded on this machine")

    with pytest.raises(pynvml.NVMLError):
        gpus.query_nvml()


class FakeNvml(types.ModuleType):
    """A stand-in for pynvml with two GPUs, one of which reports bytes as old releases do."""

    NVMLError = pynvml.NVMLError

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        return b"NVIDIA H200" if handle == 0 else "NVIDIA H200"

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle}"


def test_nvml_query_reads_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)

    assert gpus.query_nvml() == [("NVIDIA H200", "GPU-0"), ("NVIDIA H200", "GPU-1")]
    assert fake.calls == ["init", "shutdown"]


def test_nvml_query_shuts_down_after_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml()

    def failing_count() -> int:
        raise pynvml.NVMLError_GpuIsLost()

    fake.nvmlDeviceGetCount = failing_count  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "pynvml", fake)

    with pytest.raises(pynvml.NVMLError):
        gpus.query_nvml()
    assert fake.calls == ["init", "shutdown"]


@pytest.mark.parametrize(
    ("side_effect", "returncode"),
    [
        (FileNotFoundError("nvidia-smi"), None),
        (subprocess.TimeoutExpired(["nvidia-smi", "-L"], 10), None),
        (None, 9),
    ],
)
def test_run_nvidia_smi_failures(
    monkeypatch: pytest.MonkeyPatch, side_effect: Exception | None, returncode: int | None
) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        if side_effect is not None:
            raise side_effect
        return subprocess.CompletedProcess(argv, returncode or 0, stdout="", stderr="failed")

    monkeypatch.setattr(gpus.subprocess, "run", fake_run)

    assert gpus.run_nvidia_smi() is None
    assert calls == [["nvidia-smi", "-L"]]


def test_run_nvidia_smi_success(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert kwargs["timeout"] == gpus.NVIDIA_SMI_TIMEOUT_S
        return subprocess.CompletedProcess(argv, 0, stdout=NVIDIA_SMI_OUTPUT, stderr="")

    monkeypatch.setattr(gpus.subprocess, "run", fake_run)

    assert gpus.run_nvidia_smi() == NVIDIA_SMI_OUTPUT


@pytest.mark.parametrize(
    ("inventory", "header"),
    [
        (
            GpuInventory(ids=tuple("01234567"), source="--autodeploy-gpus"),
            "8 GPUs [0,1,2,3,4,5,6,7] from --autodeploy-gpus",
        ),
        (
            GpuInventory(ids=("4",), source="CUDA_VISIBLE_DEVICES"),
            "1 GPU [4] from CUDA_VISIBLE_DEVICES",
        ),
        (GpuInventory(ids=(), source="CUDA_VISIBLE_DEVICES"), "0 GPUs from CUDA_VISIBLE_DEVICES"),
    ],
)
def test_inventory_describe(inventory: GpuInventory, header: str) -> None:
    assert inventory.describe() == header


def test_inventory_is_frozen() -> None:
    inventory = GpuInventory(ids=("0",), source="NVML")

    with pytest.raises(AttributeError):
        inventory.ids = ("1",)  # type: ignore[misc]


def test_format_visible_devices() -> None:
    assert format_visible_devices(["4", "5"]) == "4,5"
    assert format_visible_devices([UUID, MIG_ID]) == f"{UUID},{MIG_ID}"
    assert format_visible_devices([]) == ""


def test_format_visible_devices_rejects_comma() -> None:
    with pytest.raises(ValueError, match="'0,1'"):
        format_visible_devices(["0,1"])


@pytest.mark.parametrize("value", ["abc", "abc,0", "0,abc,1"])
def test_visible_devices_text_ends_list(value: str) -> None:
    expected = {"abc": (), "abc,0": (), "0,abc,1": ("0",)}[value]

    assert parse_visible_devices(value) == expected
