"""``nclt eval --gaussian-noise``: seeded noise on pixels in [0, 1]; sigma 0 = plain accuracy."""

from __future__ import annotations

import json
import math

from nclt.cli import main
from nclt.evaluate import NOISE_SPACE, evaluate_noise


def test_noise_accuracy(digits_run, tmp_path, capsys):
    run, results = digits_run
    ckpt = run / "last.pt"
    res = evaluate_noise(ckpt, [0.0, 0.3], seed=5)
    clean, noisy = res["results"]
    # sigma 0 is exactly the noiseless evaluation of the final model
    assert clean["top1"] == results["top1"] and clean["per_class"] == results["per_class"]
    for r in res["results"]:
        for k in ("top1", "many", "medium", "few"):
            assert r[k] is None or (math.isfinite(r[k]) and 0 <= r[k] <= 100)
    assert res["noise"] == {"space": NOISE_SPACE, "seed": 5, "clamped": False}
    # reproducible with the seed
    again = evaluate_noise(ckpt, [0.3], seed=5)["results"][0]
    assert again == noisy
    # the command prints the table and writes the JSON
    out = tmp_path / "noise.json"
    assert (
        main(
            [
                "eval",
                str(ckpt),
                "--gaussian-noise",
                "0,0.3",
                "--noise-seed",
                "5",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "pixels in [0, 1]" in printed and "0.3" in printed
    saved = json.loads(out.read_text())
    assert [r["sigma"] for r in saved["results"]] == [0.0, 0.3]
    assert saved["results"][1]["top1"] == noisy["top1"]
    assert main(["eval", str(ckpt), "--gaussian-noise", "0.1,-1"]) == 2
