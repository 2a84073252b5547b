"""The machine record benchmark results carry."""

from pathlib import Path

from benchmarks.machine import cpu_flags, describe


def test_cpu_flags_lists_the_vector_extensions_int8_speed_depends_on(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni\n")
    assert cpu_flags(cpuinfo=info) == ["avx2", "fma", "avx512f", "avx512_vnni"]
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx\n")
    assert cpu_flags(cpuinfo=info) == []
    assert cpu_flags(cpuinfo=tmp_path / "missing") == []


def test_report_line_names_the_cpu_features():
    machine = {"cpu": "AMD EPYC", "cpu_flags": ["avx2", "fma"], "logical_cores": 2, "ram_gb": 23.5, "gpus": [],
               "os": "Linux", "python": "3.11"}
    assert describe(machine).startswith("AMD EPYC (avx2/fma), 2 logical cores")
    assert describe({**machine, "cpu_flags": []}).startswith("AMD EPYC (no AVX2), 2")
    assert describe({k: v for k, v in machine.items() if k != "cpu_flags"}).startswith("AMD EPYC, 2")  # older results
