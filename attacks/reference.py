"""Standard AutoAttack by its reference implementation (Croce & Hein 2020; the ``pyautoattack``
package, installed with ``pip install 'robust-mc[verify]'``): ``--eval-attack pyautoattack``.

The reference runs APGD-CE, APGD-T, FAB-T and Square with its own fixed settings
(``version='standard'``) and its own checks on the model; the warnings those checks log are
kept on the attack (``warnings``) so that a report can show them beside its own.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from robust_mc.attacks.pgd import parameters_frozen
from robust_mc.attacks.spec import Param, register_attack
from robust_mc.errors import UserError

INSTALL_HINT = "pip install 'robust-mc[verify]' (the pyautoattack package)"


def reference_autoattack_module() -> Any | None:
    """The installed ``pyautoattack`` module, or None."""
    try:
        return importlib.import_module("pyautoattack")
    except ImportError:
        return None


def reference_version() -> str | None:
    module = reference_autoattack_module()
    return None if module is None else f"pyautoattack {getattr(module, '__version__', '?')}"


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the first of each kind of message (restarts repeat them with other counts)."""
        message = record.getMessage().split(" See ")[0]
        kind = re.sub(r"[\d.]+", "#", message)
        if all(re.sub(r"[\d.]+", "#", seen) != kind for seen in self.sink):
            self.sink.append(message)


@contextmanager
def _warnings_into(sink: list[str]) -> Iterator[None]:
    logger = logging.getLogger("auto-attack")
    handler, propagate = _Collect(sink), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # kept for the report, not printed over the progress bars
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class ReferenceAutoAttack:
    """``attack(model, x, y)`` through ``pyautoattack.AutoAttack(version='standard')``."""

    def __init__(self, eps: float, norm: str, seed: int, batch_size: int) -> None:
        module = reference_autoattack_module()
        if module is None:
            raise UserError(f"the pyautoattack attack needs the reference AutoAttack: "
                            f"{INSTALL_HINT}")
        self.module = module
        self.eps, self.norm, self.seed, self.batch_size = eps, norm, seed, batch_size
        self.warnings: list[str] = []

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        norm = "Linf" if self.norm == "linf" else "L2"
        attack = self.module.AutoAttack(model, norm=norm, eps=self.eps, version="standard",
                                        device=x.device, seed=self.seed)
        try:
            with _warnings_into(self.warnings), parameters_frozen(model):
                # the reference reshapes with .view(): it needs the plain (NCHW) layout
                x_adv, _ = attack.run_standard_evaluation(x.contiguous(), y,
                                                          batch_size=self.batch_size)
        finally:
            model.train(was_training)
        return x_adv.detach()


@register_attack("pyautoattack", "standard AutoAttack by the reference implementation "
                 "(the pyautoattack package: pip install 'robust-mc[verify]')",
                 seed=Param("int", 0), batch=Param("int", 500, "images per reference batch"),
                 eps=Param("pixel", None))
def _reference(eps: float, norm: str, num_classes: int, seed: int,
               batch: int) -> ReferenceAutoAttack:
    return ReferenceAutoAttack(eps, norm, seed, max(batch, 1))
