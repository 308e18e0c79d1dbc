"""Fused CPU kernels of our own, compiled on first use with PyTorch's C++ extension builder.

:func:`gated_sum` is CGCNN's gated message sum, ``Σ_{j→i} σ(f) ⊙ softplus(c)`` with the gate ``[f | c] =
yc[i] + yn[j] + ye[j→i]``, in one pass over each atom's incoming edges instead of a dozen passes over
edge-sized tensors: nothing edge-sized is written in the forward pass (the backward pass recomputes the
gate), and the backward pass writes one edge-sized gradient. It needs edges sorted by their centre atom
(matgnn's graphs are: one sort by (centre, distance) per structure, kept by batching) and CPU tensors;
anything else takes the PyTorch path (:func:`matgnn.models.layers.gated_message`), the same function.

:func:`edge_gated` is the same for the edge-gated convolution of the ALIGNN-style models (on the bond graph,
the line graph and the nested line graph): the gates, the gated mean of the neighbours and its gradients in one
pass over each node's incoming edges instead of nine, with edges sorted by target (the line graphs are, by
construction); otherwise :class:`matgnn.models.alignn.EdgeGatedConv` runs it as PyTorch ops.

The kernel is built once per machine type and source version into PyTorch's extension folder
(``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``; about a minute; needs a C++ compiler).
Where it cannot be built (no compiler, a read-only folder) matgnn says so in one line, once, and uses the
PyTorch path. ``MATGNN_KERNELS=off`` never builds or uses it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

_SOURCE = Path(__file__).with_name("gated_conv.cpp")
#: compiler flags; -ffast-math lets GCC call glibc's vector exp/log1p (the kernel only takes exp(-|x|), so no
#: infinity arises); it is not passed to the linker, so the process's floating-point mode is untouched
_CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
#: a build lock older than this was left by a build that was interrupted (Ctrl-C, a killed job)
STALE_LOCK_S = 600
_state: dict[str, Any] = {}


def _machine_tag() -> str:
    """A short tag of this CPU's instruction sets: a kernel built with ``-march=native`` on one machine type
    is never loaded on another (a home folder shared by a cluster's different nodes)."""
    flags = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line
                break
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def _name() -> str:
    """The extension's name: one per machine type, source and flags (a changed kernel is a new build)."""
    text = _SOURCE.read_bytes() + " ".join(_CFLAGS).encode() + torch.__version__.encode()
    return f"matgnn_gated_conv_{_machine_tag()}_{hashlib.sha1(text).hexdigest()[:8]}"


def enabled() -> bool:
    """Whether fused kernels may be used (``MATGNN_KERNELS`` is not ``off``/``0``)."""
    return os.environ.get("MATGNN_KERNELS", "on").lower() not in ("off", "0", "no", "false")


def _say(text: str) -> None:
    print(f"matgnn: {text}", file=sys.stderr, flush=True)


def _import(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build() -> Any:
    """The kernel module: imported from its build folder when a finished build is there (its name fixes the
    source, flags, torch version and machine type), else built (by PyTorch's builder, under its lock)."""
    from torch.utils import cpp_extension

    name = _name()
    folder = Path(cpp_extension._get_build_directory(name, False))
    built, finished = folder / f"{name}.so", folder / "finished"
    if built.is_file() and finished.is_file():
        try:
            return _import(name, built)
        except ImportError as e:
            _say(f"{built} does not load ({' '.join(str(e).split())}); building it again")
            finished.unlink(missing_ok=True)
    if shutil.which("ninja") is None:  # the ninja wheel's binary, when its folder is not on PATH
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass
    lock = folder / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        _say(f"removing {lock}, left by an interrupted build of the fused CPU kernel")
        lock.unlink(missing_ok=True)
    _say(f"building the fused CPU kernel for this machine into {folder} (once, about a minute)")
    # compiled from a copy in the build folder: the same source from another checkout or environment (another
    # path) is the same build
    source = folder / _SOURCE.name
    if not source.is_file() or source.read_bytes() != _SOURCE.read_bytes():
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f".{_SOURCE.name}.{os.getpid()}"
        shutil.copyfile(_SOURCE, part)
        os.replace(part, source)  # whole or not at all, for a second process building at the same time
    with warnings.catch_warnings():  # the compiler checks' warnings: the build's own error says what failed
        warnings.simplefilter("ignore")
        module = cpp_extension.load(name=name, sources=[str(source)], extra_cflags=_CFLAGS,
                                    extra_ldflags=["-fopenmp"], build_directory=str(folder), verbose=False)
    finished.write_text(f"{_SOURCE.name} built for torch {torch.__version__}\n")
    return module


def extension() -> Any | None:
    """The compiled kernel module, built on first use; None where it is disabled or cannot be built (the
    reason is said once)."""
    if "module" not in _state:
        module = None
        if enabled():
            try:
                module = _build()
            except Exception as e:  # noqa: BLE001 — any build failure falls back to the PyTorch path
                reason = " ".join(str(e).split())
                _say(f"the fused CPU kernel could not be built ({type(e).__name__}: "
                     f"{reason[:200] + ' …' if len(reason) > 200 else reason}); using the PyTorch path (same "
                     "function, slower; MATGNN_KERNELS=off skips the attempt)")
        _state["module"] = module
    return _state["module"]


class _GatedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, yc, yn, ye, src, ptr):  # noqa: ANN001, ANN205
        ctx.save_for_backward(yc, yn, ye, src, ptr)
        return _state["module"].forward(yc, yn, ye, src, ptr)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        yc, yn, ye, src, ptr = ctx.saved_tensors
        dyc, dye = _state["module"].backward(grad, yc, yn, ye, src, ptr)
        dyn = torch.zeros_like(yn).index_add_(0, src, dye) if ctx.needs_input_grad[1] else None
        return dyc, dyn, dye, None, None


def centre_ptr(dst: torch.Tensor, n: int) -> torch.Tensor | None:
    """``ptr`` with atom ``i``'s edges at ``ptr[i]:ptr[i+1]`` when ``dst`` is sorted; None when it is not."""
    if dst.numel() > 1 and bool((dst[1:] < dst[:-1]).any()):
        return None
    ptr = torch.zeros(n + 1, dtype=torch.long, device=dst.device)
    torch.cumsum(torch.bincount(dst, minlength=n), 0, out=ptr[1:])
    return ptr


def offsets(dst: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor | bool:
    """The offsets of each of ``n`` targets' edges (:func:`centre_ptr`) where the fused kernels run on features like
    ``like`` (:func:`usable`, ``dst`` sorted); else ``False``, so that callers look once for several layers."""
    if not usable(like):
        return False
    ptr = centre_ptr(dst, n)
    return False if ptr is None else ptr


def usable(x: torch.Tensor) -> bool:
    """Whether :func:`gated_sum` can run on tensors like ``x`` (CPU, float32/64, the kernel built)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and enabled()
            and extension() is not None)


def gated_sum(yc: torch.Tensor, yn: torch.Tensor, ye: torch.Tensor, src: torch.Tensor,
              ptr: torch.Tensor) -> torch.Tensor:
    """``out[i] = Σ_{e ∈ ptr[i]:ptr[i+1]} σ(f_e) ⊙ softplus(c_e)``, ``[f_e | c_e] = yc[i] + yn[src[e]] + ye[e]``
    (``yc``, ``yn`` ``[N, 2C]``, ``ye`` ``[E, 2C]``, out ``[N, C]``) by the fused kernel (check :func:`usable`
    first)."""
    return _GatedSum.apply(yc.contiguous(), yn.contiguous(), ye.contiguous(), src.contiguous(), ptr)


class _EdgeGated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xw, ye, src, ptr, eps):  # noqa: ANN001, ANN205
        m, h, den, q = _state["module"].edge_gated_forward(xw, ye, src, ptr, eps)
        ctx.save_for_backward(xw, m, den, q, src, ptr)
        ctx.set_materialize_grads(False)  # m's gradient stays None where m is not read (a last layer)
        return m, h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gm, gh):  # noqa: ANN001, ANN205
        xw, m, den, q, src, ptr = ctx.saved_tensors
        c = den.shape[1]
        if gh is None:
            gh = torch.zeros_like(den)
        dm, dsrc, dxw = _state["module"].edge_gated_backward(gh, gm if gm is not None else m.new_empty(0), xw, m,
                                                              den, q, src, ptr)
        if ctx.needs_input_grad[0]:  # the gathered rows' gradients onto their sources: B x_j and V x_j columns
            by_source = torch.zeros(xw.shape[0], 2 * c, dtype=xw.dtype).index_add_(0, src, dsrc)
            dxw[:, c:2 * c] = by_source[:, :c]
            dxw[:, 3 * c:] = by_source[:, c:]
        return dxw if ctx.needs_input_grad[0] else None, dm, None, None, None


def edge_gated(xw: torch.Tensor, ye: torch.Tensor, src: torch.Tensor, ptr: torch.Tensor,
               eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The edge-gated convolution's sums by the fused kernel (check :func:`usable` first): with the node products
    ``xw = [A x | B x | U x | V x]`` (``[N, 4C]``) and the edge term ``ye = C y`` (``[E, C]``), edges sorted by
    target (``ptr``), returns ``m_e = A x_i + B x_j + ye_e`` (``[E, C]``) and ``h_i = U x_i + Σ_e σ(m_e) ⊙ V x_j /
    (Σ_e σ(m_e) + eps)`` (``[N, C]``)."""
    return _EdgeGated.apply(xw.contiguous(), ye.contiguous(), src.contiguous(), ptr, float(eps))
