"""``nclt bench``: the document it writes and the methods it times (not the timings)."""

from __future__ import annotations

import json

import pytest

from nclt.bench import format_bench, run_bench
from nclt.cli import main
from nclt.errors import ConfigError


def test_quick_bench_times_a_method_with_and_without_batched_views(capsys):
    r = run_bench(None, quick=True, methods=["ce", "allnc:batch"], overheads=["ce+disa", "allnc"])
    r = json.loads(json.dumps(r))  # what --json writes
    assert r["data"].startswith("synthetic")  # no --data-root: random images, said so
    assert set(r["methods"]) == {"ce", "allnc:batch"}
    assert r["ceiling_images_per_second"] > 0 and all(v > 0 for v in r["methods"].values())
    assert r["method_details"]["ce"]["batch_augment"] is False
    d = r["method_details"]["allnc:batch"]
    assert d["batch_augment"] is True and d["views"] == 2
    assert set(r["overhead"]) == {"ce+disa", "allnc"}
    printed = format_bench(r)
    assert "allnc:batch" in printed and "batched views" in printed


def test_bench_refuses_an_unknown_method_suffix(capsys):
    with pytest.raises(ConfigError, match="only suffix is ':batch'"):
        run_bench(None, quick=True, methods=["allnc:fast"])
    assert main(["bench", "--quick", "--methods", "ce:fast"]) != 0  # the CLI: a clear error
    assert "only suffix is ':batch'" in capsys.readouterr().err
