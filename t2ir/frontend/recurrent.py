"""Recurrent layers whose scan starts from the carried state.

transformers' state-space and linear-attention layers (Mamba, gated delta nets) have two paths: a
sequence path that starts from a zero state (a prompt) and a one-token step that reads the cached
state. One graph for prefill and decode needs the sequence path to start from the state the graph
takes as input, for any number of new tokens. The models call their recurrences through
transformers' kernel hooks (`use_kernel_func_from_hub_with_fallback("selective_scan_fn", ...)`),
whose names are shared interfaces across models; t2ir puts its own implementations behind those
names while it runs the model: the same computation as transformers' PyTorch reference, written as
one `torch._higher_order_ops.scan` over the sequence (a tract scan once exported, see
t2ir.frontend.scan), starting from the state of the layer being run.

The explicit cache (t2ir.frontend.causal_lm) reports no previous state to the model, so it takes
the sequence path, and sets the state the kernel starts from (`set_carried_state`) as the model
asks for it (`get_recurrent_state`).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Callable, Iterator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch._higher_order_ops.scan import scan

# the state the running layer's scan starts from (None outside t2ir's explicit cache: zeros)
_CARRIED: contextvars.ContextVar[Optional[torch.Tensor]] = contextvars.ContextVar("t2ir_carried_state", default=None)


def set_carried_state(state: Optional[torch.Tensor]) -> None:
    _CARRIED.set(state)


def _start(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    state = _CARRIED.get()
    if state is None:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    if tuple(state.shape) != tuple(shape):
        raise ValueError(f"the carried recurrent state is {tuple(state.shape)}, the layer's scan needs {tuple(shape)}")
    return state.to(like.dtype)


def _seq_first(*tensors: torch.Tensor, axis: int) -> list[torch.Tensor]:
    return [t.movedim(axis, 0) for t in tensors]


def selective_scan(hidden_states: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                   delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                   return_last_state: bool = False, **_: Any):
    """Mamba's selective scan (`selective_scan_fn`): hidden_states, dt [B, D, S], A [D, N],
    B, C [B, N, S]; h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t . h_t, in f32."""
    dtype = hidden_states.dtype
    if delta_bias is not None:
        dt = dt + delta_bias.to(dt.dtype)[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    dt, x = dt.float(), hidden_states.float()
    decay = torch.exp(A.float()[None, :, None, :] * dt[..., None])                # [B, D, S, N]
    drive = dt[..., None] * B.float().transpose(1, 2)[:, None] * x[..., None]     # [B, D, S, N]
    state = _start((x.shape[0], x.shape[1], A.shape[-1]), decay)

    def step(h, xs):
        a, u, c = xs
        h = a * h + u
        # a product and a sum, not a matmul: tract 0.23.9 hangs loading a batched matmul in a scan body
        return h, (h * c.unsqueeze(1)).sum(dim=-1)

    last, ys = scan(step, state, _seq_first(decay, drive, axis=2) + _seq_first(C.float(), axis=2))
    y = ys.movedim(0, 2).to(dtype)                                                 # [B, D, S]
    if D is not None:
        y = y + hidden_states * D[None, :, None]
    if z is not None:
        y = y * F.silu(z)
    return (y, last) if return_last_state else y


def chunk_scan(hidden_states: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
               chunk_size: int = 0, D: Optional[torch.Tensor] = None, dt_bias: Optional[torch.Tensor] = None,
               initial_states: Optional[torch.Tensor] = None, dt_softplus: bool = False,
               dt_limit: tuple[float, float] = (0.0, float("inf")), return_final_states: bool = False, **_: Any):
    """Mamba-2's state-space scan (`mamba_chunk_scan_combined`; transformers computes it by
    chunks, the same recurrence): x [B, S, H, P], dt [B, S, H], A [H], B, C [B, S, G, N]; per head
    the state [B, H, P, N] decays by exp(dt A) and takes dt x B^T, read along C; in f32."""
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    dt = torch.clamp(dt, min=dt_limit[0], max=dt_limit[1]).float()
    x = hidden_states.float()
    heads = x.shape[2]
    B, C = (t.float().repeat_interleave(heads // t.shape[2], dim=2) for t in (B, C))
    shape = (x.shape[0], heads, x.shape[3], B.shape[-1])
    state = initial_states.float() if initial_states is not None else _start(shape, x)

    def step(h, xs):
        x_t, dt_t, b_t, c_t = xs
        h = torch.exp(dt_t * A.float())[..., None, None] * h + (dt_t[..., None] * x_t).unsqueeze(-1) * b_t.unsqueeze(2)
        return h, (h * c_t.unsqueeze(2)).sum(dim=-1)

    last, ys = scan(step, state, _seq_first(x, dt, B, C, axis=1))
    y = ys.movedim(0, 1)
    if D is not None:
        y = y + D[..., None] * x
    return (y, last) if return_final_states else y


def _l2norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + 1e-6)


def gated_delta_rule(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, g: torch.Tensor,
                     beta: torch.Tensor, chunk_size: int = 64, initial_state: Optional[torch.Tensor] = None,
                     output_final_state: bool = False, use_qk_l2norm_in_kernel: bool = False, **_: Any):
    """The gated delta rule (`chunk_gated_delta_rule` and `fused_recurrent_gated_delta_rule`, one
    computation): q, k [B, S, Hk, dk], v [B, S, Hv, dv], beta [B, S, Hv], g [B, S, Hv] (a decay per
    head) or [B, S, Hv, dk] (per key channel: Kimi delta attention, `chunk_kda`); per step the
    state [B, Hv, dk, dv] decays by exp(g), moves towards v along k by beta, and is read along q."""
    dtype = query.dtype
    heads = value.shape[-2]
    if key.shape[-2] != heads:  # each query/key head serves consecutive value heads
        query = query.repeat_interleave(heads // key.shape[-2], dim=2)
        key = key.repeat_interleave(heads // key.shape[-2], dim=2)
    query, key, value, g, beta = (t.float() for t in (query, key, value, g, beta))
    if use_qk_l2norm_in_kernel:
        query, key = _l2norm(query), _l2norm(key)
    query = query / (query.shape[-1] ** 0.5)
    shape = (value.shape[0], heads, key.shape[-1], value.shape[-1])
    state = initial_state.float() if initial_state is not None else _start(shape, value)

    def step(s, xs):
        q, k, v, decay, b = xs
        s = s * (decay.exp()[..., None] if decay.dim() == s.dim() - 1 else decay.exp()[..., None, None])
        delta = (v - (s * k.unsqueeze(-1)).sum(dim=-2)) * b.unsqueeze(-1)
        s = s + k.unsqueeze(-1) * delta.unsqueeze(-2)
        return s, (s * q.unsqueeze(-1)).sum(dim=-2)

    last, out = scan(step, state, _seq_first(query, key, value, g, beta, axis=1))
    return out.movedim(0, 1).to(dtype), (last if output_final_state else None)


# transformers' kernel interface names -> the scans t2ir runs in their place
SCANS: dict[str, Callable[..., Any]] = {
    "selective_scan_fn": selective_scan,
    "chunk_gated_delta_rule": gated_delta_rule,
    "fused_recurrent_gated_delta_rule": gated_delta_rule,
    "mamba_chunk_scan_combined": chunk_scan,
    "chunk_kda": gated_delta_rule,
    "fused_recurrent_kda": gated_delta_rule,
}
# the one-token steps that go with them: never reached (the explicit cache reports no previous
# state), listed so that a model using them is still one t2ir can scan
# (and the fused training paths, `mamba_inner_fn` and `mamba_split_conv1d_scan_combined`, taken
# only in training mode without a cache)
STEPS = {"selective_state_update", "causal_conv1d_fn", "causal_conv1d_update", "mamba_inner_fn",
         "mamba_split_conv1d_scan_combined"}


def _kernel_name(fn: Any) -> Optional[str]:
    """The kernel interface a transformers hook wraps (`func_name` in the wrapper's closure)."""
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is None or not cells:
        return None
    names = dict(zip(code.co_freevars, cells))
    cell = names.get("func_name")
    return cell.cell_contents if cell is not None and isinstance(cell.cell_contents, str) else None


def _kernel_hooks(model: torch.nn.Module) -> list[tuple[Any, str, str]]:
    """(module, global name, kernel name) for every kernel hook in the modules defining the model's classes."""
    modules = {sys.modules.get(type(m).__module__) for m in model.modules()} - {None}
    return [(mod, name, kernel) for mod in modules for name, fn in vars(mod).items()
            if callable(fn) and (kernel := _kernel_name(fn)) is not None]


def scans_from_carried_states(model: torch.nn.Module) -> bool:
    """Whether every kernel hook the model's code calls is a scan t2ir replaces (or its one-token step)."""
    kernels = {kernel for _, _, kernel in _kernel_hooks(model)}
    return bool(kernels & set(SCANS)) and kernels <= set(SCANS) | STEPS


@contextlib.contextmanager
def scans_from_state(model: torch.nn.Module) -> Iterator[None]:
    """While the model runs: its kernel hooks named in SCANS call t2ir's scans."""
    patched = [(mod, name, kernel, getattr(mod, name)) for mod, name, kernel in _kernel_hooks(model)
               if kernel in SCANS]
    for mod, name, kernel, _ in patched:
        setattr(mod, name, SCANS[kernel])
    _CARRIED.set(None)
    try:
        yield
    finally:
        _CARRIED.set(None)
        for mod, name, _, fn in patched:
            setattr(mod, name, fn)
