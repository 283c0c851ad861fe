"""Importing open_clip where torchvision cannot be imported.

What fails here, exactly (open_clip_torch 3.3.0, timm 1.0.31, torch 2.13.0+cpu): ``import open_clip`` runs its
``__init__``, which imports ``open_clip.transform`` (``import torchvision.transforms.functional``, and nine transform
classes) and every model module, all of which import ``open_clip.utils``, whose first lines are
``from torchvision.ops.misc import FrozenBatchNorm2d``. The SigLIP-style configs build their image tower with timm,
whose ``timm.layers`` and ``timm.data`` import the same class, the same transforms and six torchvision dataset
classes at module level. So no open_clip or timm model module can be imported without something named torchvision;
and torchvision cannot be had beside this CPU torch: PyPI's torchvision 0.28.0 (the release for torch 2.13) is a CUDA
build, its ``_C.so`` needs ``libtorch_cuda.so`` and ``libc10_cuda.so``, and ``import torchvision`` then stops at
``RuntimeError: operator torchvision::nms does not exist`` (its fake-kernel registration for the missing op).

None of those names is *used* to build or run a model for inference: FrozenBatchNorm2d is for freezing a ResNet's
batch norm in training, the transforms make open_clip's and timm's data pipelines, the datasets are timm's dataset
factory. So, while ``import open_clip`` (and with it timm) runs, and only when the real torchvision cannot be
imported, ``sys.modules`` holds a stand-in that defines exactly those names: ``InterpolationMode`` as torchvision
defines it, every class a placeholder that raises when it is constructed, so nothing can silently compute with it.
The stand-in is removed again as soon as the import is done: nothing imported later sees a torchvision. open_clip's
and timm's own code is run unchanged. Their image transforms are reproduced by the client (``OpenClipImageProcessor``
in pipeline/query/preprocess.py) from the parameters open_clip records on the model (``visual.preprocess_cfg``).
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import importlib.machinery
import sys
import types

NAMES = {
    "torchvision.ops.misc": ("FrozenBatchNorm2d",),
    "torchvision.transforms": (
        "CenterCrop",
        "ColorJitter",
        "Compose",
        "Grayscale",
        "Normalize",
        "RandomResizedCrop",
        "Resize",
        "ToTensor",
    ),
    "torchvision.transforms.functional": (),
    "torchvision.datasets": ("CIFAR10", "CIFAR100", "FashionMNIST", "ImageFolder", "KMNIST", "MNIST"),
}
MODULES = ("torchvision", "torchvision.ops", *NAMES)


class InterpolationMode(enum.Enum):
    """As torchvision.transforms.InterpolationMode."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def _placeholder(module: str, name: str) -> type:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            f"{module}.{name} is not available: torchvision cannot be imported beside this CPU torch, and build-model "
            "imports open_clip with a stand-in that only lets its modules load (pipeline/model_build/families/"
            "torchvision_standin.py)."
        )

    return type(name, (), {"__init__": __init__, "__module__": module})


def torchvision_importable() -> bool:
    try:
        importlib.import_module("torchvision")
    except Exception:  # ImportError here; RuntimeError ("operator torchvision::nms does not exist") for a CUDA wheel
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return True


@contextlib.contextmanager
def torchvision_standin():
    """The stand-in in ``sys.modules`` for the duration of the block, if the real torchvision cannot be imported."""
    if torchvision_importable():
        yield False
        return
    made = {}
    for name in MODULES:
        module = types.ModuleType(name, "build-model's import-only stand-in for torchvision")
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []
        for attr in NAMES.get(name, ()):
            setattr(module, attr, _placeholder(name, attr))
        made[name] = module
    for name in ("torchvision.transforms", "torchvision.transforms.functional"):
        made[name].InterpolationMode = InterpolationMode
    for name, module in made.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(made[parent], child, module)
    sys.modules.update(made)
    try:
        yield True
    finally:
        for name in made:
            if sys.modules.get(name) is made[name]:
                del sys.modules[name]
