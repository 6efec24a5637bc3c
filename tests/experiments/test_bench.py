"""The benchmark harness runs end to end on a tiny size (its figures are not checked)."""

import json
import subprocess
import sys

import pytest

from experiments import bench


def test_run_size_and_table_on_a_tiny_size(monkeypatch):
    monkeypatch.setitem(bench.SIZES, "tiny", (2, 3, 4, 5))
    result = bench.run_size("tiny", ["lstm", "gru"], ["rnncells", "cudnn", "flax"], reps=2)
    assert result["device"] and result["gemm_gflops"] > 0
    for cell in ("lstm", "gru"):
        rows = result["cells"][cell]
        assert sorted(rows) == ["flax", "rnncells"]  # cudnn: GPU only, so skipped on a CPU
        for row in rows.values():
            assert row["fwd_s"] > 0 and row["train_s"] > 0 and row["compile_s"] > 0
            faulted = row["train_faulted_MB"]
            assert faulted is None if bench.resource is None else faulted >= 0
    text = bench.table(result)
    assert text.count("### tiny") == 2
    assert "| impl | fwd | train | train tokens/s | vs flax | train GFLOP/s |" in text
    assert "| spread | faulted MB |" in text
    assert "| rnncells |" in text and "| cudnn |" not in text


def test_minor_faults_count_first_touched_memory():
    if bench.resource is None:
        pytest.skip("the OS does not count page faults")
    import mmap

    import numpy as np

    pages = 2048
    fresh = mmap.mmap(-1, pages * bench.PAGE_BYTES)  # anonymous memory, not yet touched
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # one fault per page even where THP is "always"
        fresh.madvise(mmap.MADV_NOHUGEPAGE)
    before = bench.minor_faults()
    np.frombuffer(fresh, np.uint8)[:: bench.PAGE_BYTES] = 1  # one byte in every page
    assert bench.minor_faults() - before >= pages


def test_flop_counts():
    fwd, train = bench.flops("lstm", 2, 3, 4, 5)
    assert fwd == 2 * 2 * 3 * (4 + 5) * 4 * 5 and train == 3 * fwd
    assert bench.flops("gru", 2, 3, 4, 5)[0] == pytest.approx(fwd * 3 / 4)


def test_profile_prints_the_kernels_of_a_step():
    out = subprocess.run(
        [sys.executable, "-m", "experiments.profile", "--size", "small", "--cell", "gru"]
        + ["--calls", "1", "--top", "12"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0] == "rnncells gru small train (B, T, D, H) = (16, 128, 32, 64)"
    assert lines[1].endswith("ms per call while traced")
    kernels = [line.split()[-1] for line in lines[3:]]
    assert any("fusion" in k for k in kernels), out  # XLA:CPU recorded its kernels
    assert not any(k.startswith("$") for k in kernels), out


def test_profile_refuses_bad_arguments():
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.profile", "--calls", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0 and "--calls must be at least 1, got 0" in proc.stderr


def _run(times, gemm=100.0):
    """A harness result with one size and cell, and the given training-step seconds."""
    rows = {
        impl: {"fwd_s": t / 3, "train_s": t, "train_spread": 0.1, "compile_s": 0.5}
        for impl, t in times.items()
    }
    size = {"size": "tiny", "B": 2, "T": 3, "D": 4, "H": 5, "gemm_gflops": gemm}
    return {"results": [dict(size, cells={"lstm": rows})]}


def test_combined_table_gives_median_ratios_and_their_range(tmp_path):
    runs = [
        _run({"rnncells": 1.0, "torch": 2.0, "flax": 1.5}),
        _run({"rnncells": 2.0, "torch": 2.0, "flax": 3.0}),
        _run({"rnncells": 1.0, "torch": 3.0, "flax": 1.2}),
    ]
    text = bench.combined_table(runs)
    header, rule, row = text.splitlines()
    assert (
        header == "| size | cell | rnncells train (median) | vs torch | vs flax | % GEMM | runs |"
    )
    train_flop = bench.flops("lstm", 2, 3, 4, 5)[1]
    gemm = f"{100 * train_flop / 1.0 / 1e9 / 100.0:.0f}%"
    assert (
        row == f"| tiny | LSTM | 1000.0 ms | 2.00x (1.00-3.00) | 1.50x (1.20-1.50) | {gemm} | 3 |"
    )
    paths = []
    for i, run in enumerate(runs):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(run))
    out = subprocess.run(
        [sys.executable, "-m", "experiments.bench", "--combine", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == text


def test_bench_cells_times_fused_scan_and_parallel_rows(tmp_path):
    """Every requested cell gets its rows (fused and scan, or parallel and sequential),
    the user's cell is registered from outside the package, and the table and JSON come
    out; the user's cell is unregistered afterwards."""
    from experiments import bench_cells, user_peephole
    from rnncells.cells._registry import _unregister

    try:
        out = tmp_path / "cells.json"
        bench_cells.main(
            ["--quick", "--ts=4", "--cells=lstm,mingru,user_peephole", f"--json={out}"]
        )
        rows = json.loads(out.read_text())["rows"]
        assert [r["name"] for r in rows] == [
            "lstm",
            "lstm_scan",
            "mingru_parallel",
            "mingru_sequential",
            "user_peephole",
            "user_peephole_scan",
        ]
        assert all(r["seconds"] > 0 and r["steps"] == 4 for r in rows)
        text = bench_cells.table([(r["steps"], r["name"], r["seconds"]) for r in rows])
        assert "| 4 | user_peephole |" in text and "| scan / fused |" in text
        # The minGRU rows as kernel=None's figures, in the form choice.py holds them.
        from rnncells._engine.choice import ParallelFigure

        times = {r["name"]: r["seconds"] * 1e3 for r in rows}
        (line,) = bench_cells.figures(str(out)).splitlines()
        figure = eval(line.strip().rstrip(","), {"ParallelFigure": ParallelFigure})
        assert figure[:6] == ("cpu", "cpu", "mingru", 2, 4, 8)  # --quick: B=2, H=8
        assert figure.parallel_ms == pytest.approx(times["mingru_parallel"], abs=0.01)
        assert figure.sequential_ms == pytest.approx(times["mingru_sequential"], abs=0.01)
    finally:
        _unregister(user_peephole.NAME)
