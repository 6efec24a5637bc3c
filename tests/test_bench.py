"""The benchmark harness runs end to end on a tiny size (its figures are not checked)."""

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
    text = bench.table(result)
    assert text.count("### tiny") == 2
    assert "| impl | fwd | train | train tokens/s | vs flax | train GFLOP/s |" in text
    assert "| rnncells |" in text and "| cudnn |" not in text


def test_flop_counts():
    fwd, train = bench.flops("lstm", 2, 3, 4, 5)
    assert fwd == 2 * 2 * 3 * (4 + 5) * 4 * 5 and train == 3 * fwd
    assert bench.flops("gru", 2, 3, 4, 5)[0] == pytest.approx(fwd * 3 / 4)
