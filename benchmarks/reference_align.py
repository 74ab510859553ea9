"""The reference implementation's correlation alignment, run from its checkout: timed beside ours.

What it runs (NeuronAlignment at 5b82b60, ``alignment/align_models.py`` for TinyTen): the
reference's own ``utils.alignment.compute_model_alignment`` (per layer, both networks' activations
stored for the whole alignment set, warm-started from the previous layer's, z-scored and
multiplied in NumPy, then ``linear_sum_assignment``) and ``align_models`` (b's weights permuted),
on the reference's own ``TinyTen``, fed as its CIFAR-10 loader feeds it: each item a PIL image
made from the dataset's uint8 array (as torchvision's ``CIFAR10`` does) and put through the
reference's own TinyTen test transform (``ToTensor``, ``Normalize``), batches of 128, in the
main process (no loader workers: one core is timed).

The checkout is the one ``fetch`` brings (``github:IBM/NeuronAlignment``), unchanged. What its
imports need and the repository lacks is supplied at import level only: ``models/__init__.py``
and ``utils/utils.py`` import modules that are not in the repository (``tiny_six``, ``vgg``,
``utils.attack_ensemble``) or not installed (``tqdm``), so the ``models`` package is entered
without its ``__init__`` and those modules are stand-ins (:data:`STAND_INS`); it was written
for a NumPy that still had ``np.int`` and ``np.float``, the builtins' aliases, which are put
back. Nothing the alignment runs
is replaced.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
import types
from pathlib import Path
from typing import Any

import numpy
import torch
from PIL import Image
from torch import nn

BATCH = 128  # align_models.py's --batch_size default

# what the reference's imports name that cannot be imported here, and why; the alignment calls
# none of it, so each is a stand-in whose every name raises if called
STAND_INS = {"utils.attack_ensemble": "not in the repository", "tqdm": "not installed"}
# NumPy's aliases of the builtins, which the reference uses (np.int, np.float) and NumPy 1.24
# removed: restored as the aliases they were
NUMPY_ALIASES = {"int": int, "float": float}


def load(checkout: Path) -> types.SimpleNamespace:
    """The reference's TinyTen and alignment functions from ``checkout``."""
    root = checkout.resolve()
    if not (root / "utils" / "alignment.py").is_file():
        raise SystemExit(f"--reference {checkout}: not a NeuronAlignment checkout "
                         "(no utils/alignment.py); fetch github:IBM/NeuronAlignment")
    sys.path.insert(0, str(root))
    for alias, builtin in NUMPY_ALIASES.items():
        if not hasattr(numpy, alias):
            setattr(numpy, alias, builtin)
    package = types.ModuleType("models")  # the package, without its __init__'s missing imports
    package.__path__ = [str(root / "models")]
    sys.modules["models"] = package
    for name, why in STAND_INS.items():
        if name == "tqdm" and importlib.util.find_spec("tqdm") is not None:
            continue  # installed: the real one
        sys.modules[name] = _stand_in(name, why)
    tiny_ten = importlib.import_module("models.tiny_ten")
    alignment = importlib.import_module("utils.alignment")
    transform = importlib.import_module("utils.data").Transforms.CIFAR10.TinyTen.test
    return types.SimpleNamespace(TinyTen=tiny_ten.TinyTen, alignment=alignment,
                                 transform=transform)


class ReferenceImages(torch.utils.data.Dataset):
    """uint8 (N, 3, H, W) images served as torchvision's CIFAR10 serves its arrays: a PIL image
    per item, then ``transform``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any) -> None:
        self.arrays = images.permute(0, 2, 3, 1).contiguous().numpy()  # CIFAR10.data: NHWC
        self.labels, self.transform = labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.arrays[i])), self.labels[i]


def _stand_in(name: str, why: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def attribute(attr: str) -> Any:
        def unavailable(*_: Any, **__: Any) -> Any:
            raise RuntimeError(f"{name}.{attr} is a stand-in in this benchmark ({why})")
        return unavailable

    module.__getattr__ = attribute  # type: ignore[method-assign]
    return module


def reference_model(reference: types.SimpleNamespace, ours: nn.Module) -> nn.Module:
    """The reference's TinyTen computing what ``ours`` (robust-mc's, normalization aside)
    computes: each convolution, batch norm and linear layer's tensors copied in order, the
    reference's convolution biases (robust-mc's have none) zero."""
    model = reference.TinyTen.base(num_classes=10, device=torch.device("cpu"))
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
    pairs = zip([m for m in model.modules() if isinstance(m, kinds)],
                [m for m in ours.modules() if isinstance(m, kinds)], strict=True)
    with torch.no_grad():
        for theirs, mine in pairs:
            for name, tensor in theirs.state_dict().items():
                source = mine.state_dict().get(name)
                tensor.copy_(source if source is not None else torch.zeros_like(tensor))
    return model.eval()


def align(reference: types.SimpleNamespace, model_a: nn.Module, model_b: nn.Module,
          images: torch.Tensor, labels: torch.Tensor) -> Any:
    """One alignment as ``align_models.py`` makes it: the matching on the alignment set, then
    b permuted. ``images``: uint8 (N, 3, 32, 32)."""
    loader = torch.utils.data.DataLoader(ReferenceImages(images, labels, reference.transform),
                                         batch_size=BATCH, shuffle=False)
    with contextlib.redirect_stdout(io.StringIO()):  # its per-layer progress lines
        hard_match, _, _, _ = reference.alignment.compute_model_alignment(
            model_a, model_b, loader, quad_assignment=False)
    return reference.alignment.align_models(model_b, [m[:, 1] for m in hard_match])
