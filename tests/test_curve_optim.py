"""The curve's optimiser follows the endpoints' recipe where the user chose none."""

import json
import math
from dataclasses import replace

import pytest
import torch

from robust_mc import cli
from robust_mc.config import ConnectRunConfig, OptimConfig, given_settings
from robust_mc.errors import UserError
from robust_mc.pipelines.curve_optim import follow_endpoints
from robust_mc.store.checkpoint import save_checkpoint
from robust_mc.store.meta import RecipeRecord

ADAMW = {"optim.optimizer": "adamw", "optim.lr": 0.002, "optim.weight_decay": 0.05,
         "optim.warmup_epochs": 0.5, "optim.batch_size": 64}


@pytest.fixture(scope="module")
def adamw_pair(tiny_endpoint):
    return [tiny_endpoint(**ADAMW, **{"optim.seed": seed}) for seed in (0, 1)]


def connect_optim() -> OptimConfig:
    return ConnectRunConfig().optim


def test_an_endpoint_records_how_it_was_optimised(adamw_pair, tiny_endpoint):
    recipe = adamw_pair[0].meta.training_recipe()
    assert recipe == RecipeRecord("adamw", 0.002, 0.05, 0.5, "piecewise", 1, 64, 0.9)
    assert tiny_endpoint().meta.training_recipe().optimizer == "sgd"


def test_a_file_written_before_recipes_were_recorded_reads_its_config(adamw_pair):
    older = replace(adamw_pair[0].meta, recipe=None)
    assert older.training_recipe() == adamw_pair[0].meta.training_recipe()
    assert replace(older, config={}).training_recipe() is None  # nothing says: unknown


def test_adamw_endpoints_give_an_adamw_curve_at_their_own_rate(adamw_pair):
    chosen = follow_endpoints(connect_optim(), {}, *adamw_pair)
    o = chosen.optim
    assert (o.optimizer, o.lr, o.weight_decay, o.warmup_epochs, o.batch_size) == (
        "adamw", 0.002, 0.05, 1.0, 64)
    assert o.epochs == connect_optim().epochs and o.schedule == connect_optim().schedule
    assert chosen.sources["optimizer"] == "the endpoints' adamw"
    assert "suited to the endpoints' adamw" in chosen.describe()


def test_sgd_endpoints_keep_connects_own_settings(tiny_endpoint):
    pair = [tiny_endpoint(**{"optim.seed": s, "optim.lr": 0.3}) for s in (0, 1)]
    chosen = follow_endpoints(connect_optim(), {}, *pair)
    assert chosen.optim == connect_optim()  # measured on SGD CNNs: not the endpoints' 0.3
    assert chosen.sources["lr"] == "connect's default"


def test_what_the_user_sets_wins(adamw_pair, tmp_path):
    flags = {"optim.lr": 0.01}
    chosen = follow_endpoints(replace(connect_optim(), lr=0.01),
                              given_settings(None, flags), *adamw_pair)
    assert (chosen.optim.optimizer, chosen.optim.lr) == ("adamw", 0.01)
    assert chosen.sources["lr"] == "the command line"
    # a config file that names the optimizer is followed as written
    named = tmp_path / "named.yaml"
    named.write_text("optim: {optimizer: sgd, lr: 0.05}\n")
    given = given_settings(str(named), {})
    chosen = follow_endpoints(replace(connect_optim(), lr=0.05), given, *adamw_pair)
    assert (chosen.optim.optimizer, chosen.optim.lr) == ("sgd", 0.05)
    assert chosen.sources["optimizer"] == "--config named"


def test_a_config_rate_written_for_sgd_does_not_apply_to_adamw_endpoints(adamw_pair):
    given = given_settings("digits-connect", {})  # lr 0.05, no optimizer named
    chosen = follow_endpoints(replace(connect_optim(), lr=0.05), given, *adamw_pair)
    assert (chosen.optim.optimizer, chosen.optim.lr) == ("adamw", 0.002)


def test_endpoints_of_two_families_or_without_a_recipe_follow_nothing(adamw_pair, tiny_endpoint):
    mixed = [adamw_pair[0], tiny_endpoint()]
    assert follow_endpoints(connect_optim(), {}, *mixed).optim == connect_optim()
    foreign = [replace(c, meta=replace(c.meta, recipe=None, config={})) for c in adamw_pair]
    assert follow_endpoints(connect_optim(), {}, *foreign).optim == connect_optim()


@pytest.mark.parametrize("field,value", [("lr", math.nan), ("lr", 0.0),
                                         ("weight_decay", -1.0), ("optimizer", "lbfgs")])
def test_a_recipe_no_curve_can_follow_is_refused_in_one_line(adamw_pair, field, value):
    bad = replace(adamw_pair[1].meta.training_recipe(), **{field: value})
    broken = replace(adamw_pair[1], meta=replace(adamw_pair[1].meta, recipe=bad))
    with pytest.raises(UserError, match="records"):
        follow_endpoints(connect_optim(), {}, adamw_pair[0], broken)


def test_connect_with_no_flags_trains_the_curve_as_the_endpoints_were(adamw_pair, tmp_path,
                                                                       capsys):
    paths = [str(save_checkpoint(c, tmp_path / f"e{i}.pt")) for i, c in enumerate(adamw_pair)]
    run = tmp_path / "run"
    assert cli.main(["connect", *paths, "--out", str(run), "--epochs", "1",
                     "--attack-steps", "1", "--points", "3", "--eval-attack", "none",
                     "--bn-images", "100", "--align-samples", "200", "--device", "cpu"]) == 0
    shown = "".join(capsys.readouterr())  # progress goes to stderr
    assert "curve optimiser: adamw (the endpoints' adamw), lr 0.002" in " ".join(shown.split())
    optim = json.loads((run / "summary.json").read_text())["config"]["optim"]
    assert (optim["optimizer"], optim["lr"], optim["warmup_epochs"]) == ("adamw", 0.002, 1.0)
    state = torch.load(run / "curve.pt", weights_only=True)
    assert "exp_avg" in str(state["optimizer"])  # the saved optimizer is AdamW's


def test_info_shows_the_recipe(adamw_pair, tmp_path, capsys):
    path = save_checkpoint(adamw_pair[0], tmp_path / "a.pt")
    assert cli.main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recipe"]["optimizer"] == "adamw"
    assert cli.main(["info", str(path)]) == 0
    assert "warmup_epochs 0.5" in capsys.readouterr().out
