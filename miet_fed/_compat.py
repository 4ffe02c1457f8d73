"""Import timm where PyPI's torchvision (a CUDA build) sits beside a CPU torch.

timm imports torchvision at `import timm`; that torchvision registers kernels for ops whose schemas
live in its compiled library, which fails to load beside the CPU torch ("operator torchvision::nms
does not exist"). Declaring the two schemas first makes it importable; ViTs need neither op.
Applied only where the plain import fails. Every process that needs timm (Ray actors, workers)
must call `import_timm()` instead of `import timm`.
"""

from __future__ import annotations

import sys
from types import ModuleType

_LIB = None  # keeps the schema library alive for the life of the process


def import_timm() -> ModuleType:
    global _LIB
    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        if _LIB is None:
            _LIB = torch.library.Library("torchvision", "DEF")
            _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401
    import timm

    return timm
