"""Registered fused ops (``torch.ops.fastdarts.*``) with their autograd and fake impls.

One op (family) a file, its plain-PyTorch reference beside it:

    mixed_sum.py    + mixed_sum_ref.py     fastdarts::mixed_sum(_backward)
    state_sum.py    + state_sum_ref.py     fastdarts::state_mixed_sum(_backward)
    rnn_node.py     + rnn_node_ref.py      fastdarts::rnn_node(_backward)
    rnn_node_bn.py  + rnn_node_bn_ref.py   fastdarts::rnn_node_bn(_backward)
    flat_update.py  + flat_update_ref.py   fastdarts::virtual_step_ / perturb_ / sgd_step_

Importing this package registers mixed_sum and state_mixed_sum; the others register
when their module is imported (fastdarts.nn, fastdarts.architect do).  Each op picks
its backend at run time through :func:`fastdarts.backends.resolve`, which reads the
policy table ``fastdarts.backends.POLICY``; an op module only maps backend names to
implementations (Triton launchers in kernels/, C++/CUDA through torch.ops.fastdarts_C).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_triton_kernels(name: str) -> ModuleType:
    """Import ``fastdarts.kernels.<name>`` (the top-level ``kernels/`` directory).

    An installed wheel (or an editable install) maps ``kernels/`` to
    ``fastdarts.kernels`` through setup.py's ``package_dir``; a bare source
    checkout on ``sys.path`` has no such package, so it is mounted here from the
    directory beside ``fastdarts/``.  Importing a top-level ``kernels`` instead
    would risk picking up an unrelated package of that name.
    """
    try:
        return importlib.import_module(f"fastdarts.kernels.{name}")
    except ModuleNotFoundError as exc:
        path = os.path.join(_ROOT, "kernels")
        if "fastdarts.kernels" in sys.modules or not os.path.isfile(
                os.path.join(path, "__init__.py")):
            raise
        spec = importlib.util.spec_from_file_location(
            "fastdarts.kernels", os.path.join(path, "__init__.py"),
            submodule_search_locations=[path])
        if spec is None or spec.loader is None:
            raise exc
        module = importlib.util.module_from_spec(spec)
        sys.modules["fastdarts.kernels"] = module
        spec.loader.exec_module(module)
        return importlib.import_module(f"fastdarts.kernels.{name}")


# registers torch.ops.fastdarts.mixed_sum and state_mixed_sum
from . import mixed_sum, state_sum  # noqa: E402

__all__ = ["load_triton_kernels", "mixed_sum", "state_sum"]
