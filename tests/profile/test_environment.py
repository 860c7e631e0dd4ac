"""The machine facts a latency table is read against: CPU model and its int8/bf16 instructions."""

from __future__ import annotations

from deploykit.profile import environment as env_mod


def test_low_precision_isa_reads_x86_flags(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Some Xeon\nflags\t\t: fpu sse avx2 avx512f avx512_vnni amx_int8 amx_tile\n")
    monkeypatch.setattr(env_mod, "CPUINFO", cpuinfo)
    assert env_mod.cpu_model() == "Some Xeon"
    assert env_mod.low_precision_isa() == ["avx512_vnni", "amx_int8"]


def test_low_precision_isa_reads_arm_features_and_tolerates_absence(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("Features\t: fp asimd asimddp i8mm\nModel\t: Raspberry Pi 5\n")
    monkeypatch.setattr(env_mod, "CPUINFO", cpuinfo)
    assert env_mod.low_precision_isa() == ["asimddp", "i8mm"]
    monkeypatch.setattr(env_mod, "CPUINFO", tmp_path / "missing")
    assert env_mod.low_precision_isa() == []
