"""The benchmark still runs: its quick core measures every variant and writes results.json.

Timing is not asserted here (that is what `make bench` reports); only that the
bench code keeps working as the kit changes under it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from bench.core import CORE_VARIANTS
from bench.run import main


def test_quick_bench_core_measures_every_variant(tmp_path: Path) -> None:
    assert main(["--quick", "--only", "core", "--out", str(tmp_path)]) == 0

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["core"]["stats"]) == set(CORE_VARIANTS)
    for variant in CORE_VARIANTS:
        assert results["core"]["samples_ms"][variant], f"no samples for {variant}"
    statuses = {t["name"]: t["status"] for t in results["targets"]}
    assert statuses["onbehalf-warm ≤ 1.15 × agent-floor"] in {"PASS", "FAIL"}
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "latency.png").stat().st_size > 0
