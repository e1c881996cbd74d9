"""Parameter and FLOP counts against hand-computed values; latency rows and the text table."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from segkd.commands import compare_report
from segkd.commands.benchmark import benchmark_models, format_rows, gflops, measure_latency
from segkd.models.base import count_parameters as count_params

LATENCY_KEYS = {
    "batch_size", "height", "width", "device", "amp",
    "latency_ms_median", "latency_ms_p90", "throughput_img_s", "process_peak_rss_mb",
}


class SharedLinear(nn.Module):
    """The same 4→5 linear layer reachable under two names."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 5)
        self.second = self.first


def test_count_params_by_hand() -> None:
    conv = nn.Conv2d(3, 8, 3)
    assert count_params(conv) == 3 * 8 * 9 + 8
    conv.bias.requires_grad_(False)
    assert count_params(conv, trainable_only=True) == 3 * 8 * 9
    assert count_params(SharedLinear()) == 4 * 5 + 5


@pytest.mark.parametrize(("stride", "out_h", "out_w"), [(1, 16, 20), (2, 8, 10)])
def test_gflops_of_a_conv_by_hand(stride: int, out_h: int, out_w: int) -> None:
    conv = nn.Conv2d(3, 8, 3, stride=stride, padding=1).train()
    expected = 2 * 3 * 8 * 3**2 * out_h * out_w / 1e9
    assert gflops(conv, (16, 20)) == pytest.approx(expected, rel=1e-12)
    assert conv.training, "train mode must be restored"


def test_gflops_counts_linear_layers_and_skips_elementwise_ops() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 10))
    expected = (2 * 3 * 4 * 2 * 2 + 2 * 16 * 10) / 1e9
    assert gflops(model, (2, 2)) == pytest.approx(expected, rel=1e-12)


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def test_measure_latency_row() -> None:
    model = _tiny_net().train()
    row = measure_latency(model, (16, 24), batch_size=2, warmup=1, iters=3)
    assert set(row) == LATENCY_KEYS
    assert (row["batch_size"], row["height"], row["width"], row["device"], row["amp"]) == (2, 16, 24, "cpu", None)
    assert 0 < row["latency_ms_median"] <= row["latency_ms_p90"]
    assert row["throughput_img_s"] == pytest.approx(2 / (row["latency_ms_median"] / 1e3))
    assert row["process_peak_rss_mb"] > 0
    assert model.training


def test_measure_latency_with_bf16_autocast() -> None:
    row = measure_latency(_tiny_net(), (8, 8), warmup=0, iters=1, amp="bf16")
    assert row["amp"] == "bf16" and row["latency_ms_median"] > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amp": "int8"}, "amp must be None or one of"),
        ({"iters": 0}, "iters >= 1"),
        ({"batch_size": 0}, "batch_size >= 1"),
    ],
)
def test_measure_latency_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        measure_latency(_tiny_net(), (8, 8), warmup=0, **kwargs)


def test_measure_latency_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match=r"input_size must be \(height, width\)"):
        measure_latency(_tiny_net(), (8,), warmup=0)  # type: ignore[arg-type]


def test_benchmark_models_rows() -> None:
    models = {"a": _tiny_net(), "b": nn.Conv2d(3, 1, 1)}
    rows = benchmark_models(models, [(8, 8), (8, 12)], [1, 2], warmup=0, iters=1)
    assert [(r["model"], r["height"], r["width"], r["batch_size"]) for r in rows] == [
        (name, 8, w, b) for name in ("a", "b") for w in (8, 12) for b in (1, 2)
    ]
    conv_rows = [r for r in rows if r["model"] == "b"]
    assert conv_rows[0]["params_m"] == pytest.approx(4 / 1e6)
    assert conv_rows[0]["gflops"] == pytest.approx(2 * 3 * 8 * 8 / 1e9)
    assert conv_rows[2]["gflops"] == pytest.approx(2 * 3 * 8 * 12 / 1e9)


def test_format_rows_aligns_columns() -> None:
    rows = [
        {"model": "pspnet18", "params_m": 12.3456, "batch_size": 1},
        {"model": "b", "params_m": 0.012345, "batch_size": 16, "amp": None},
    ]
    expected = "\n".join(
        [
            "model     params_m  batch_size  amp",
            "--------  --------  ----------  ---",
            "pspnet18     12.35           1    -",
            "b           0.0123          16    -",
        ]
    )
    assert format_rows(rows) == expected
    assert format_rows([]) == "(no rows)"


def test_distill_step_ratios_are_taken_inside_each_round_so_drift_cancels(monkeypatch) -> None:
    import importlib.util
    from pathlib import Path

    import torch

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "distill_step.py"
    spec = importlib.util.spec_from_file_location("distill_step", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    base = {"X": 30.0, "S": 10.0, "T": 5.0}
    slowdown = iter([1.0] * 3 + [4.0] * 3 + [1.5] * 3)  # the machine gets busy in the second round
    order = []

    def fake_clock(step, device):
        name = step()
        order.append(name)
        return base[name] * next(slowdown)

    monkeypatch.setattr(bench, "clock", fake_clock)
    rows = bench.interleaved({"x": lambda: "X"}, lambda: "S", lambda: "T", torch.device("cpu"), rounds=3, warmup=0)
    assert rows[0]["x_student"] == 3.0 and rows[0]["x_bound"] == 2.0 and rows[0]["x_teacher"] == 6.0
    assert [order[i] for i in (0, 3, 6)] == ["X", "S", "T"]  # the order rotates: nobody always runs first


def test_a_compare_report_times_each_model_on_one_thread_and_restores_the_count(monkeypatch) -> None:
    # a report written beside trainings timed the same network 190 to 2430 ms on all threads
    threads_seen = []

    def fake_latency(model, size, device, **kwargs):
        if device == "cpu":  # a CUDA timing, where there is a GPU, is not the CPU figure
            threads_seen.append(torch.get_num_threads())
        return {"latency_ms_median": 1.0}

    monkeypatch.setattr(compare_report, "measure_latency", fake_latency)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rows = [{"method": "a"}, {"method": "b"}]
        compare_report.add_cost(rows, {"a": _tiny_net(), "b": _tiny_net()}, 16)
        assert threads_seen == [1, 1]
        assert torch.get_num_threads() == 2
        assert [r["cpu_ms"] for r in rows] == [1.0, 1.0]
    finally:
        torch.set_num_threads(before)
