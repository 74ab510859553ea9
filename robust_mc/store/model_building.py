"""Networks from checkpoints: the architecture instantiated (its code checked against the
checkpoint's trust first) and the weights loaded strictly, with one-line errors naming the first
bad key; an ensemble checkpoint as one :class:`~robust_mc.models.ensemble.Ensemble`."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from robust_mc.core.repair import BIAS_READY
from robust_mc.errors import UserError
from robust_mc.models import Classifier, create_model
from robust_mc.models.ensemble import Ensemble
from robust_mc.store.checkpoint import ARCH_STANDARD_KEYS, Checkpoint

READABLE_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def build_model(ckpt: Checkpoint) -> Classifier:
    """Instantiate the architecture and load the weights strictly, with one-line errors. The
    architecture is checked against ``ckpt.trust`` again, before anything is imported."""
    source = ckpt.path or "checkpoint"
    ckpt.trust.check(ckpt.arch, source)
    kwargs = dict(ckpt.arch_kwargs)
    standard = {k: kwargs.pop(k) for k in ARCH_STANDARD_KEYS if k in kwargs}
    kwargs.update(ckpt.model_kwargs)
    missing = [k for k in ("num_classes", "in_channels") if k not in standard]
    if missing:
        raise UserError(f"{source}: arch_kwargs lacks {missing[0]!r}; the file is incomplete")
    model = create_model(ckpt.arch, mean=ckpt.normalization.mean,
                         std=ckpt.normalization.std, kwargs=kwargs,
                         factory_ok=ckpt.trust.user_named(ckpt.arch), source=source, **standard)
    load_weights(model, ckpt.state_dict, source=source)
    return model


def build_network(ckpt: Checkpoint) -> nn.Module:
    """The model a checkpoint holds: one network, or an :class:`Ensemble` of its members."""
    if ckpt.members is None:
        return build_model(ckpt)
    members = [build_model(replace(ckpt, state_dict=state, members=None))
               for state in ckpt.members]
    return Ensemble(members, "probs" if ckpt.combine == "probs" else "logits")


def load_weights(model: Classifier, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load architecture-named weights into ``model.net``, naming the first bad key. A
    linear or convolution layer built without a bias takes one the file has: statistics repair
    gives such a layer a bias (:mod:`robust_mc.core.repair`)."""
    give_repair_biases(model.net, state_dict)
    expected = model.net.state_dict()
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise UserError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing); "
                        "is --arch/--width the architecture it was trained with?")
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        raise UserError(f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} "
                        "unexpected); is --arch the architecture it was trained with?")
    for key, ref in expected.items():
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{source}: {key!r} is not a tensor")
        if value.shape != ref.shape:
            raise UserError(f"{source}: shape mismatch at {key!r}: file {tuple(value.shape)}, "
                            f"model {tuple(ref.shape)}; check --arch and --width")
        if ref.is_floating_point() and value.dtype not in READABLE_FLOATS:
            raise UserError(f"{source}: {key!r} holds {str(value.dtype).removeprefix('torch.')} "
                            "values; robust-mc reads float16, bfloat16, float32 and float64 "
                            "weights: convert them to one of those")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise UserError(f"{source}: non-finite values in {key!r}; the checkpoint is corrupt "
                            "or its training diverged")
    model.net.load_state_dict(state_dict, strict=True)


def give_repair_biases(net: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Give each bias-less linear or convolution layer of ``net`` a (zero) bias where
    ``state_dict`` has one for it; its shape is checked like any other weight's."""
    for name, module in net.named_modules():
        if (isinstance(module, BIAS_READY) and module.bias is None
                and f"{name}.bias" in state_dict):
            module.bias = nn.Parameter(module.weight.new_zeros(module.weight.shape[0]))
