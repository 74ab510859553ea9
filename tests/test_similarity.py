"""Activations along a path: the matched-unit correlation of the network at t with each end."""

from __future__ import annotations

import json

import pytest

from robust_mc import cli


@pytest.mark.slow  # 7 s on a 2-core CPU: CI runs it in its slow step
def test_eval_similarity_is_one_against_the_path_s_own_end_in_every_layer(tiny_endpoint_files,
                                                                          tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["connect", str(tiny_endpoint_files["a"]), str(tiny_endpoint_files["b"]),
                     "--out", str(run), "--epochs", "1", "--attack-steps", "1", "--points",
                     "3", "--eval-attack", "pgd:steps=2", "--bn-images", "200",
                     "--align-samples", "200", "--device", "cpu"]) == 0
    out = tmp_path / "sim"
    assert cli.main(["eval", str(run), "--points", "3", "--compare-line", "--similarity",
                     "--similarity-images", "100", "--out", str(out)]) == 0
    capsys.readouterr()
    similarity = json.loads((out / "path.json").read_text())["similarity"]
    assert set(similarity) == {"bezier (aligned)", "line (aligned)", "line (unaligned)"}
    for label, rows in similarity.items():
        assert len(rows) == 3 * 2 * 2  # t x inputs x end
        for row in rows:
            if (row["t"], row["reference"]) in ((0.0, "a"), (1.0, "b")):
                for value in row["layers"].values():
                    assert value == pytest.approx(1.0, abs=1e-5), (label, row)
            assert all(v is None or -1 <= v <= 1 for v in row["layers"].values())
        assert (out / ("similarity-" + label.replace(" (", "-").replace(")", "")
                       + ".png")).is_file()
    variance = json.loads((out / "path.json").read_text())["variance"]
    assert set(variance) == set(similarity)
    for label, rows in variance.items():
        assert len(rows) == 3 * 2  # t x inputs
        for row in rows:
            assert row["layers"] and all(v > 0 for v in row["layers"].values())
            if row["t"] in (0.0, 1.0):  # the network's own statistics are the target there
                for value in row["layers"].values():
                    assert value == pytest.approx(1.0, abs=1e-4), (label, row)
        assert (out / ("variance-" + label.replace(" (", "-").replace(")", "")
                       + ".png")).is_file()


def test_connect_refuses_a_similarity_it_would_not_measure(tiny_endpoint_files, tmp_path,
                                                           capsys):
    config = tmp_path / "c.yaml"
    config.write_text("path: {similarity: true}\n")
    assert cli.main(["connect", str(tiny_endpoint_files["a"]), str(tiny_endpoint_files["b"]),
                     "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "robust-mc eval RUN --similarity" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
