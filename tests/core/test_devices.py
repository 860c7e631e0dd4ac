"""Device profiles: every shipped one validates, bad ones fail naming key, file and line, and devices that
cannot run here say which device and why."""

from __future__ import annotations

import platform
import socket
import textwrap

import pytest

from deploykit import runtimes
from deploykit.core.config import ConfigError
from deploykit.core.devices import COMPUTE_UNITS, PRECISIONS, Device, device_names, devices_dir, load_device
from deploykit.core.errors import DeployKitError
from deploykit.pipeline.runners import reach_device

SHIPPED = {"host-cpu-ort", "host-cpu-openvino", "iphone12-coreml", "mac-m1-coreml", "jetson-orin-nano-trt",
           "raspberry-pi5-ort", "host-cpu-litert", "host-cpu-executorch", "pixel6-litert", "pixel6-executorch"}


def write(tmp_path, text: str, name: str = "dev.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_shipped_devices_are_there():
    assert SHIPPED <= set(device_names())
    assert devices_dir().name == "devices" and (devices_dir().parent / "deploykit").is_dir()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_device_validates(name):
    device = load_device(name)
    assert device.name == name
    assert device.precision in PRECISIONS[device.runtime] and device.compute_units in COMPUTE_UNITS[device.runtime]
    assert device.batches and min(device.batches) >= 1
    assert device.is_local or device.agent is not None or device.adb is not None, \
        "a shipped remote device names its agent (or, a phone, its adb tool)"


def test_host_devices_are_local_with_explicit_threads():
    for name in ("host-cpu-ort", "host-cpu-openvino"):
        device = load_device(name)
        assert device.is_local and device.threads == 2
    assert load_device("host-cpu-openvino").precision == "fp32"  # never OpenVINO's silent bf16


def test_load_by_path_and_defaults(tmp_path):
    path = write(tmp_path, """\
        runtime: openvino
        location: local
        """, "my-box.yaml")
    device = load_device(str(path))
    assert (device.name, device.precision, device.compute_units, device.batches) == ("my-box", "fp32", "cpu", [1])


def test_unknown_name_suggests_close_ones():
    with pytest.raises(DeployKitError) as err:
        load_device("host-cpu-onnx")
    assert "unknown device 'host-cpu-onnx'" in err.value.message and "host-cpu-ort" in err.value.fix


@pytest.mark.parametrize("body, where, message", [
    ("runtime: onnxruntime\nlocation: local\nthreds: 2\n", ":3:", "unknown key 'threds'"),
    ("runtime: onnxruntime\nlocation: local\nprecision: fp16\n", ":1:", "precision 'fp16' is not one onnxruntime takes"),
    ("runtime: coreml\nlocation: local\ncompute_units: gpu\n", ":1:", "compute_units 'gpu'"),
    ("runtime: tflite\nlocation: local\n", ":1:", "'tflite' is not one of"),
    ("runtime: onnxruntime\nlocation: local\nbatches: [1, 0]\n", ":1:", "distinct positive"),
    ("runtime: onnxruntime\nlocation: moon\n", ":2:", "'moon' is not one of local, remote"),
    ("runtime: onnxruntime\nlocation: remote\nagent: {url: iphone:8765}\n", ":3:", "http://"),
    ("location: local\n", ":1:", "missing required key 'runtime'"),
])
def test_bad_profiles_name_key_file_and_line(tmp_path, body, where, message):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_device(path)
    assert str(path) + where in err.value.message and message in err.value.message


def test_name_must_match_the_file(tmp_path):
    path = write(tmp_path, "runtime: onnxruntime\nlocation: local\nname: other\n", "mine.yaml")
    with pytest.raises(DeployKitError, match="differs from the file name"):
        load_device(path)


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML runs on macOS")
def test_coreml_device_on_linux_names_the_device_and_why():
    with pytest.raises(DeployKitError) as err:
        runtimes.load("model.mlpackage", load_device("mac-m1-coreml"))
    assert "device mac-m1-coreml cannot run here" in err.value.message and "Apple" in err.value.message


def test_tensorrt_device_without_a_gpu_names_the_device(tmp_path):
    if runtimes.unavailable("tensorrt") is None:
        pytest.skip("TensorRT can run here")
    device = load_device(write(tmp_path, "runtime: tensorrt\nlocation: local\n", "gpu-box.yaml"))
    with pytest.raises(DeployKitError, match="device gpu-box cannot run here: "):
        runtimes.load("model.engine", device)


def test_remote_device_without_an_agent(tmp_path):
    device = load_device(write(tmp_path, "runtime: onnxruntime\nlocation: remote\n", "pi.yaml"))
    with pytest.raises(DeployKitError) as err:
        reach_device(device)
    assert "device pi is remote and has no agent configured" in err.value.message
    assert "deploykit agent serve" in err.value.fix


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_remote_device_whose_agent_is_not_running(tmp_path, monkeypatch):
    pytest.importorskip("httpx")
    from deploykit.agent import client

    monkeypatch.setattr(client, "BACKOFF_S", 0.01)
    url = f"http://127.0.0.1:{_free_port()}"
    device = load_device(write(tmp_path, f"runtime: coreml\nlocation: remote\nagent: {{url: '{url}'}}\n",
                               "phone.yaml"))
    with pytest.raises(DeployKitError) as err:
        reach_device(device)
    assert err.value.message.startswith(f"cannot reach device phone's agent at {url}")
    assert "start `deploykit agent serve` on the device" in err.value.fix


def test_remote_device_whose_listener_is_not_an_agent_is_not_silently_run_here(tmp_path, monkeypatch):
    """(Profiling through a real agent: tests/agent.)"""
    pytest.importorskip("httpx")
    from deploykit.agent import client

    monkeypatch.setattr(client, "HEALTH_TIMEOUT_S", 0.5)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        device = Device(runtime="onnxruntime", location="remote", name="pi",
                        agent=load_device(write(tmp_path, f"runtime: onnxruntime\nlocation: remote\n"
                                                          f"agent: {{url: '{url}'}}\n")).agent)
        with pytest.raises(DeployKitError, match="device pi's agent at .* did not answer in time") as err:
            reach_device(device)
        assert "deploykit agent serve" in err.value.fix


def test_local_device_is_reached():
    reach_device(load_device("host-cpu-ort"))


def test_a_local_device_that_names_an_agent_is_refused(tmp_path):
    """It was profiled on this host, silently, and a wrong token still exited 0 (issue 15, item 2)."""
    path = write(tmp_path, "runtime: onnxruntime\nlocation: local\nagent: {url: 'http://127.0.0.1:9'}\n",
                 "pi.yaml")
    with pytest.raises(ConfigError) as err:
        load_device(path)
    assert f"{path}:1:" in err.value.message and "location: local" in err.value.message
    assert "location: remote" in err.value.fix
