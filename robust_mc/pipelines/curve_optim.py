"""How a curve between two endpoints is optimised: connect's settings, or, where neither the
config file nor the command line names the optimizer, the endpoints' own optimizer family with
settings suited to it.

Connect's defaults (SGD at 0.015, Garipov et al. and Tatro et al.) were measured on SGD-trained
CNNs; a transformer trained with AdamW keeps a curve at chance under them. The endpoints'
recipe (:class:`~robust_mc.store.meta.RecipeRecord`) says which family they were trained with,
and :func:`suited_to` gives the curve settings for that family. What the user sets wins: a
command-line value always, and a config file's values wherever that file names the optimizer
(values a file gives without naming the optimizer were written for connect's default family,
and do not apply to another).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from robust_mc.config import OptimConfig
from robust_mc.errors import UserError
from robust_mc.store.checkpoint import Checkpoint
from robust_mc.store.meta import RecipeRecord

# the settings a family brings
FOLLOWED = ("optimizer", "lr", "weight_decay", "warmup_epochs", "batch_size")
COMMAND_LINE = "the command line"


def suited_to(recipe: RecipeRecord) -> dict[str, Any]:
    """The curve settings suited to endpoints trained with ``recipe``: AdamW endpoints get an
    AdamW curve at their own peak learning rate, weight decay and batch size, after one warmup
    epoch (the bends start on the line, where an unaligned transformer is at chance, and Adam's
    first steps are its largest). On two digits ViTs (docs/alignment.md) the endpoints' batch
    of 32 took the curve's robust loss barrier to 0.72 where connect's 128 left it at 1.33.
    SGD endpoints keep connect's SGD settings, measured on SGD-trained CNNs."""
    if recipe.optimizer == "adamw":
        return {"optimizer": "adamw", "lr": recipe.lr, "weight_decay": recipe.weight_decay,
                "warmup_epochs": 1.0,
                **({"batch_size": recipe.batch_size} if recipe.batch_size > 0 else {})}
    return {"optimizer": recipe.optimizer}


@dataclass(frozen=True)
class CurveOptim:
    """The curve's optimisation settings and, per followed setting, where its value came from."""

    optim: OptimConfig
    sources: dict[str, str]

    def describe(self) -> str:
        o = self.optim
        values = {"optimizer": o.optimizer, "lr": f"lr {o.lr:g}",
                  "weight_decay": f"weight decay {o.weight_decay:g}",
                  "warmup_epochs": f"warmup {o.warmup_epochs:g} epoch"
                                   + ("" if o.warmup_epochs == 1 else "s"),
                  "batch_size": f"batch {o.batch_size}"}
        return "curve optimiser: " + ", ".join(f"{values[k]} ({self.sources[k]})"
                                               for k in FOLLOWED)


def endpoint_recipe(a: Checkpoint, b: Checkpoint) -> RecipeRecord | None:
    """The recipe both endpoints were trained with (a's, where they differ only in values),
    each checked: None when either records none or they used different optimizer families."""
    recipes = [checked_recipe(c) for c in (a, b)]
    first, second = recipes
    if first is None or second is None or first.optimizer != second.optimizer:
        return None
    return first


def checked_recipe(ckpt: Checkpoint) -> RecipeRecord | None:
    """``ckpt``'s recipe (None if it records none); one a curve cannot follow is refused."""
    recipe = ckpt.meta.training_recipe()
    if recipe is None:
        return None
    if recipe.optimizer not in ("sgd", "adamw"):
        raise UserError(f"{ckpt.path} records the optimizer {recipe.optimizer[:40]!r}, which "
                        "robust-mc does not know; pass --optimizer sgd or adamw")
    for name in ("lr", "weight_decay", "warmup_epochs"):
        value = getattr(recipe, name)
        if not (math.isfinite(value) and value >= 0) or (name == "lr" and value == 0):
            raise UserError(f"{ckpt.path} records a training {name} of {value}, which no curve "
                            "can follow; pass --optimizer and --lr")
    if not 0 <= recipe.batch_size <= 2**31:
        raise UserError(f"{ckpt.path} records a training batch of {recipe.batch_size} images; "
                        "pass --optimizer and --batch-size")
    return recipe


def follow_endpoints(optim: OptimConfig, given: dict[str, str], a: Checkpoint,
                     b: Checkpoint) -> CurveOptim:
    """``optim`` (connect's resolved settings), with the followed settings the user did not
    choose taken from the endpoints' recipe. ``given``: ``optim.*`` keys the config file or the
    command line set, with which one (:func:`robust_mc.settings.given_settings`)."""
    if "optim.optimizer" in given:  # the recipes are not even read
        return follow_recipe(optim, given, None)
    return follow_recipe(optim, given, endpoint_recipe(a, b))


def follow_recipe(optim: OptimConfig, given: dict[str, str], recipe: RecipeRecord | None
                  ) -> CurveOptim:
    """:func:`follow_endpoints` for endpoints trained with ``recipe`` (None: unknown)."""
    sources = {k: given.get(f"optim.{k}", "connect's default") for k in FOLLOWED}
    if "optim.optimizer" in given or recipe is None:
        return CurveOptim(optim, sources)
    origin = f"the endpoints' {recipe.optimizer}"
    sources["optimizer"] = origin
    if recipe.optimizer == optim.optimizer:  # connect's settings are already this family's
        return CurveOptim(optim, sources)
    changes: dict[str, Any] = {}
    for key, value in suited_to(recipe).items():
        if given.get(f"optim.{key}") == COMMAND_LINE:
            continue
        changes[key] = value
        if key != "optimizer":
            sources[key] = f"suited to {origin}"
    return CurveOptim(replace(optim, **changes), sources)
