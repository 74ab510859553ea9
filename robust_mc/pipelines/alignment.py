"""Aligning two endpoints as `robust-mc align`, `connect` and `layers` do: trace b's units on
the first training images, find the permutation (and, where the map class allows and it is
exact, the orthogonal maps beyond it) with the configured method and inputs, and check that the
aligned b computes what b did."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch

from robust_mc.attacks import build_attack
from robust_mc.attacks.training import AttackConfig
from robust_mc.config import AlignConfig, AlignRunConfig, to_dict
from robust_mc.core.align import Alignment, align
from robust_mc.core.permutation import PermutationSpec, trace_permutation_spec
from robust_mc.core.rotatable import MapClass
from robust_mc.core.rotation_align import StreamMaps, map_state
from robust_mc.core.spec import load_weights
from robust_mc.data import Split, as_float, batches
from robust_mc.models import Classifier
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import Runtime
from robust_mc.store.checkpoint import Checkpoint
from robust_mc.store.meta import AlignmentRecord
from robust_mc.store.typed import read_record
from robust_mc.train.learned_maps import LearnSettings, learn_maps, with_learned_maps


@dataclass
class AlignedPair:
    alignment: Alignment
    spec: PermutationSpec
    model_b: Classifier  # b with its units permuted (and rotated) to match a
    function_error: float  # max |logits(b aligned) - logits(b)| on alignment images, eval mode
    maps: StreamMaps = field(default_factory=StreamMaps)  # what undoes the rotations


def align_models(model_a: Classifier, model_b: Classifier, train: Split, config: AlignConfig,
                 attack_config: AttackConfig, runtime: Runtime, maps: MapClass | None = None
                 ) -> AlignedPair:
    """Align ``model_b`` to ``model_a`` on the first ``config.samples`` training images, with
    the map class ``maps`` (default: the config's)."""
    subset = train.take(config.samples).to(runtime.device)
    example = as_float(subset.images[:2])
    spec = trace_permutation_spec(model_a, example, partial=config.partial)
    result = align(model_a, model_b, batches(subset, config.batch_size), method=config.method,
                   inputs=config.inputs, attack=build_attack(attack_config), spec=spec,
                   runtime=runtime, generator=torch.Generator().manual_seed(config.seed),
                   maps=maps or config.map_class(), tokens=config.tokens)
    aligned, stream_maps = mapped(model_a, model_b, spec, result)
    if config.learn_steps:
        settings = LearnSettings(config.learn_steps, config.learn_lr, config.learn_batch,
                                 config.inputs, config.seed)
        learned = learn_maps(model_a, aligned, spec, result.plan, train.to(runtime.device),
                             attack_config, settings, runtime)
        result = with_learned_maps(result, *learned)
        aligned, stream_maps = mapped(model_a, model_b, spec, result)
    probe = runtime.images(as_float(subset.images[: config.batch_size]))
    model_b.eval()
    aligned.eval()
    with torch.no_grad():
        error = float((aligned(probe) - model_b(probe)).abs().max())
    return AlignedPair(result, spec, aligned, error, stream_maps)


def mapped(model_a: Classifier, model_b: Classifier, spec: PermutationSpec,
           alignment: Alignment) -> tuple[Classifier, StreamMaps]:
    """A copy of b with the alignment's maps applied, and the record that undoes them."""
    state, stream_maps = map_state(model_b.state_dict(), model_a.state_dict(), spec,
                                   alignment.perm, alignment.rotations, alignment.plan)
    aligned = copy.deepcopy(model_b)
    load_weights(aligned, state)
    return aligned, stream_maps


def aligned_checkpoint(b: Checkpoint, result: AlignedPair, cfg: AlignRunConfig,
                       paths: tuple[str, str], argv: list[str] | None
                       ) -> tuple[Checkpoint, dict]:
    """``b`` with the aligned weights, recording the alignment (its settings, the
    permutation and maps, the report per space) in its meta; and that report as a mapping
    (``align --json`` prints it)."""
    summary = {**result.alignment.as_dict(), "function_error": result.function_error,
               "a": paths[0], "b": paths[1], "left_alone": result.spec.unsupported}
    meta = replace(b.meta, alignment=read_record(AlignmentRecord, {
        **summary, "config": to_dict(cfg), "record": run_record(argv),
        "permutation": {k: v.tolist() for k, v in result.alignment.perm.items()},
        "maps": result.maps.to_state() if result.maps else {}}))
    return b.with_weights(result.model_b, meta), summary
