"""torchattacks attacks, built from spec strings for evaluation.

``autoattack`` here runs the attacks of the standard AutoAttack (Croce & Hein 2020), APGD-CE,
APGD-T (9 target classes), FAB-T and Square (5,000 queries), one after another on the examples
still robust, through torchattacks' implementations, with ``steps`` APGD iterations: 100 by default,
as the reference AutoAttack runs. torchattacks' own ``AutoAttack`` class runs only 10 APGD steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robust_mc.attacks.pgd import parameters_frozen
from robust_mc.attacks.spec import Param, register_attack


class TorchattacksAttack:
    """Build a torchattacks attack for each model it is called with; runs it in eval mode."""

    def __init__(self, factory: Any, **kwargs: Any) -> None:
        self.factory = factory
        self.kwargs = kwargs
        self._cache: tuple[int, Any] | None = None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._cache is None or self._cache[0] != id(model):
            self._cache = (id(model), self.factory(model, **self.kwargs))
        attack = self._cache[1]
        attack.set_device(x.device)
        was_training = model.training
        model.eval()
        try:
            with parameters_frozen(model):
                return attack(x.contiguous(), y).detach()  # torchattacks assumes NCHW memory
        finally:
            model.train(was_training)


def _ta_norm(norm: str) -> str:
    return "Linf" if norm == "linf" else "L2"


@register_attack("fgsm", "torchattacks FGSM (L-inf, one step of size eps)")
def _fgsm(eps: float, norm: str, num_classes: int) -> TorchattacksAttack:
    import torchattacks

    return TorchattacksAttack(torchattacks.FGSM, eps=eps)


@register_attack("ta-pgd", "torchattacks PGD (L-inf), for cross-checking robust-mc's own",
                 steps=Param("int", 20), alpha=Param("pixel", None, "default eps/4"),
                 eps=Param("pixel", None))
def _ta_pgd(eps: float, norm: str, num_classes: int, steps: int,
            alpha: float | None) -> TorchattacksAttack:
    import torchattacks

    return TorchattacksAttack(torchattacks.PGD, eps=eps, alpha=eps / 4 if alpha is None else alpha,
                              steps=steps, random_start=True)


def _apgd(loss: str):
    def build(eps: float, norm: str, num_classes: int, steps: int, restarts: int,
              seed: int) -> TorchattacksAttack:
        import torchattacks

        return TorchattacksAttack(torchattacks.APGD, norm=_ta_norm(norm), eps=eps, steps=steps,
                                  n_restarts=restarts, loss=loss, seed=seed)

    return build


for _loss in ("ce", "dlr"):
    register_attack(f"apgd-{_loss}", f"torchattacks APGD with the {_loss.upper()} loss",
                    steps=Param("int", 100), restarts=Param("int", 1), seed=Param("int", 0),
                    eps=Param("pixel", None))(_apgd(_loss))


@register_attack("apgd-t", "torchattacks APGD-T: targeted APGD with the DLR loss, against the "
                 "9 (or num_classes - 1) most likely other classes in turn",
                 steps=Param("int", 100), seed=Param("int", 0), eps=Param("pixel", None))
def _apgd_targeted(eps: float, norm: str, num_classes: int, steps: int,
                   seed: int) -> TorchattacksAttack:
    import torchattacks

    return TorchattacksAttack(torchattacks.APGDT, norm=_ta_norm(norm), eps=eps, steps=steps,
                              n_classes=num_classes, seed=seed)


@register_attack("autoattack", "standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square",
                 steps=Param("int", 100, "APGD iterations (reference: 100)"),
                 seed=Param("int", 0), eps=Param("pixel", None))
def _autoattack(eps: float, norm: str, num_classes: int, steps: int,
                seed: int) -> TorchattacksAttack:
    import torchattacks

    def factory(model: nn.Module, **_: Any) -> Any:
        n = _ta_norm(norm)
        return torchattacks.MultiAttack([
            torchattacks.APGD(model, norm=n, eps=eps, steps=steps, loss="ce", seed=seed),
            torchattacks.APGDT(model, norm=n, eps=eps, steps=steps, n_classes=num_classes,
                               seed=seed),
            torchattacks.FAB(model, norm=n, eps=eps, multi_targeted=True, n_classes=num_classes,
                             n_restarts=1, seed=seed),
            torchattacks.Square(model, norm=n, eps=eps, n_queries=5000, seed=seed),
        ])

    return TorchattacksAttack(factory)


@register_attack("square", "torchattacks Square: black-box random search, no gradients",
                 queries=Param("int", 5000, "model queries per image (reference: 5000)"),
                 seed=Param("int", 0), eps=Param("pixel", None))
def _square(eps: float, norm: str, num_classes: int, queries: int,
            seed: int) -> TorchattacksAttack:
    import torchattacks

    return TorchattacksAttack(torchattacks.Square, norm=_ta_norm(norm), eps=eps,
                              n_queries=queries, seed=seed)


@register_attack("cw", "torchattacks Carlini-Wagner L2 (not bounded by eps)",
                 c=Param("float", 1.0), kappa=Param("float", 0.0), steps=Param("int", 50),
                 lr=Param("float", 0.01))
def _cw(eps: float, norm: str, num_classes: int, c: float, kappa: float, steps: int,
        lr: float) -> TorchattacksAttack:
    import torchattacks

    return TorchattacksAttack(torchattacks.CW, c=c, kappa=kappa, steps=steps, lr=lr)
