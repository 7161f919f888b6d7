"""Import torchvision on CPU-only torch when its compiled ops do not match.

PyPI only ships CUDA builds of torchvision; on a CPU build of torch its ``_C``
extension fails to load and ``import torchvision`` then dies because the
``nms``/``qnms`` operator schemas are missing. Declaring the two schemas lets
models and ``transforms.v2`` work (``ops.nms`` stays unavailable). Where the
matching build is installed (CUDA nodes, Jetson L4T images) this is a no-op.
"""

import sys

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _declare_missing_schemas() -> None:
    missing = [name for name in _SCHEMAS if not _has_schema(name)]
    if not missing:
        return
    lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901
    for name in missing:
        lib.define(_SCHEMAS[name])
    globals()["_LIBRARY"] = lib  # keep the registration alive


def _has_schema(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


try:
    import torchvision  # noqa: F401
except RuntimeError:
    for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[module]  # drop the half-imported package before retrying
    _declare_missing_schemas()
    import torchvision  # noqa: F401

from torchvision.transforms import v2 as transforms_v2  # noqa: E402

__all__ = ["torchvision", "transforms_v2"]
