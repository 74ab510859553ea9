"""The tracer on Hugging Face ``transformers`` image classifiers (``python -m
benchmarks.trace_sweep --huggingface``): for each family below, its
``<Family>ForImageClassification`` built from a small config (random weights, offline) as
robust-mc builds ``hf:`` models, every parameter and buffer perturbed, in float64; traced,
permuted at random and compared, one row per family as in :mod:`benchmarks.timm_families`.

The configs are small versions of each family (two blocks, narrow widths) on 32x32 images,
except where the family's own code needs its default shapes (its default config, on its default
image size). A family the installed library lacks is listed as not tried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.timm_families import sweep_families

SIDE = 32
_VIT = dict(image_size=SIDE, patch_size=4, hidden_size=16, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=32)
_RESNET = dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
_PYRAMID = dict(hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1])
_SWIN = dict(image_size=SIDE, patch_size=2, embed_dim=8, depths=[1, 1], num_heads=[2, 2],
             window_size=4)
# family -> (config settings, image side)
FAMILIES: dict[str, tuple[dict[str, Any], int]] = {
    "ViT": (_VIT, SIDE),
    "DeiT": (_VIT, SIDE),
    "ViTMSN": (_VIT, SIDE),
    "Data2VecVision": (_VIT, SIDE),
    "Beit": ({**_VIT, "use_relative_position_bias": True}, SIDE),
    "Dinov2": ({**{k: v for k, v in _VIT.items() if k != "intermediate_size"}, "mlp_ratio": 2},
               SIDE),
    "ResNet": (_RESNET, SIDE),
    "RegNet": ({**_RESNET, "groups_width": 4}, SIDE),
    "Bit": ({**_RESNET, "num_groups": 2}, SIDE),
    "ConvNext": (dict(patch_size=2, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2), SIDE),
    "ConvNextV2": (dict(patch_size=2, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2), SIDE),
    "Swin": (_SWIN, SIDE),
    "Swinv2": (_SWIN, SIDE),
    "FocalNet": (dict(image_size=SIDE, patch_size=2, embed_dim=8, depths=[1, 1]), SIDE),
    "MobileNetV1": (dict(image_size=SIDE, depth_multiplier=0.25), SIDE),
    "MobileNetV2": (dict(image_size=SIDE, depth_multiplier=0.35), SIDE),
    "MobileViT": ({}, 256),
    "MobileViTV2": (dict(width_multiplier=0.5), 256),
    "EfficientNet": (dict(width_coefficient=1.0, depth_coefficient=1.0, hidden_dim=1280,
                          image_size=224), 224),  # B0
    "PoolFormer": (_PYRAMID, SIDE),
    "Segformer": ({**_PYRAMID, "num_attention_heads": [1, 2, 2, 2], "decoder_hidden_size": 16},
                  SIDE),
    "Pvt": ({**_PYRAMID, "image_size": SIDE, "num_attention_heads": [1, 2, 2, 2]}, SIDE),
    "PvtV2": ({**_PYRAMID, "image_size": SIDE, "num_attention_heads": [1, 2, 2, 2]}, SIDE),
    "Cvt": ({}, 224),
    "Levit": (dict(image_size=SIDE, hidden_sizes=[16, 32, 48], num_attention_heads=[2, 2, 2],
                   depths=[1, 1, 1], key_dim=[4, 4, 4]), SIDE),
    "Hiera": ({}, 224),
}


def sweep(families: list[str] | None, timeout: float, out: str | None) -> list[list[str]]:
    from robust_mc.errors import UserError
    from robust_mc.models.huggingface import huggingface_factory, import_transformers

    import_transformers()

    def pick(family: str) -> tuple[str, torch.nn.Module, tuple[int, ...]] | str:
        if family not in FAMILIES:
            return f"no small config here (families: {', '.join(FAMILIES)})"
        settings, side = FAMILIES[family]
        variant = f"{family}ForImageClassification"
        try:
            build = huggingface_factory(f"transformers:{variant}")
        except UserError as exc:
            return str(exc)[:160]
        return variant, build(config=settings, num_classes=10, in_channels=3), (3, side, side)

    return sweep_families("transformers image classifiers and the tracer",
                          families or list(FAMILIES), pick, timeout,
                          Path(out) / "hf_sweep.json" if out else None)
