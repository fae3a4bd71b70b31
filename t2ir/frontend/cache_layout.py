"""Which layers of a causal LM keep a key/value cache (or a convolution state), and its shapes,
read from the model itself.

Config fields cannot say it in general: multi-query models cache one head whatever
`num_key_value_heads` says, MLA caches a latent whose width is no head size, Gemma-4 mixes head
sizes per layer, KV-sharing layers cache nothing, and some models broadcast their keys to every
attention head before caching them. So the model runs a short forward on the meta device (no
memory, no compute) and the cache it fills is inspected layer by layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from t2ir.errors import T2IRError

PROBE_TOKENS = 2  # short enough for any sliding window, long enough that no size is 1


class StateCacheError(T2IRError):
    """The model keeps a state other than keys and values (convolution, recurrent, indexer states)."""


@dataclass(frozen=True)
class KvLayer:
    """One decoder layer's cache: keys [1, key_heads, P, key_dim], values [1, value_heads, P, value_dim]."""

    index: int  # the decoder layer (the cache IO is named after it)
    key_heads: int
    key_dim: int
    value_heads: int
    value_dim: int


@dataclass(frozen=True)
class ConvState:
    """One decoder layer's convolution state [1, channels, length]: the last `length` inputs of a
    short causal convolution (LFM2's), which it reads before the new tokens. Its size does not
    follow the sequence; an empty past is zeros, as transformers pads a first prompt."""

    index: int  # the decoder layer
    channels: int
    length: int
    slot: int = 0  # transformers' state_idx, for layers that keep several

    @property
    def kind(self) -> str:
        return "conv" if self.slot == 0 else f"conv{self.slot}"


@dataclass(frozen=True)
class RecurrentState:
    """One decoder layer's recurrent state (a state-space or linear-attention layer's, any fixed
    shape): the layer's whole summary of the past. An empty past is zeros, the state
    transformers starts a prompt from; the layer's scan starts from it (t2ir.frontend.recurrent)."""

    index: int  # the decoder layer
    shape: tuple[int, ...]
    slot: int = 0  # transformers' state_idx

    @property
    def kind(self) -> str:
        return "recurrent" if self.slot == 0 else f"recurrent{self.slot}"


@dataclass(frozen=True)
class GrowingState:
    """A tensor a layer keeps besides keys and values that also grows by one position per token
    (the indexer keys [1, P, dim] of DeepSeek-V3.2-style sparse attention). Carried as graph IO
    like keys; the layer's own cache class appends to it, so no model code needs to be known."""

    index: int  # the decoder layer
    name: str   # the attribute of transformers' cache layer that holds it
    shape: tuple[int, ...]  # its shape with an empty past (0 on `axis`)
    axis: int   # the axis that grows

    @property
    def kind(self) -> str:
        return self.name


CacheEntry = KvLayer | ConvState | RecurrentState | GrowingState


def _kinds(entry: CacheEntry) -> tuple[str, ...]:
    return ("key", "value") if isinstance(entry, KvLayer) else (entry.kind,)


def cache_input_names(layout: list[CacheEntry]) -> list[str]:
    """The names, in the order forward() takes them, layer by layer: torch_to_nnef's key then
    value, `in_cache_conv_{i}` for a convolution state and `in_cache_{attribute}_{i}` for another
    growing state (the layer index last, like theirs)."""
    return [f"in_cache_{kind}_{entry.index}" for entry in layout for kind in _kinds(entry)]


def cache_output_names(layout: list[CacheEntry]) -> list[str]:
    return [name.replace("in_cache_", "out_cache_") for name in cache_input_names(layout)]


def cache_past_axes(layout: list[CacheEntry]) -> list[int | None]:
    """Per cache input, its axis of the past length P (keys and values: 2), None for a state of
    fixed size."""
    axes: list[int | None] = []
    for entry in layout:
        if isinstance(entry, KvLayer):
            axes += [2, 2]
        else:
            axes.append(entry.axis if isinstance(entry, GrowingState) else None)
    return axes


def empty_caches(layout: list[CacheEntry], dtype: torch.dtype, length: int = 0) -> list[torch.Tensor]:
    """Caches of a past of `length` positions (0: the prefill's), zeros, in input order."""
    out = []
    for entry in layout:
        if isinstance(entry, ConvState):
            out.append(torch.zeros(1, entry.channels, entry.length, dtype=dtype))
        elif isinstance(entry, RecurrentState):
            out.append(torch.zeros(entry.shape, dtype=dtype))
        elif isinstance(entry, GrowingState):
            shape = list(entry.shape)
            shape[entry.axis] = length
            out.append(torch.zeros(shape, dtype=dtype))
        else:
            out.append(torch.zeros(1, entry.key_heads, length, entry.key_dim, dtype=dtype))
            out.append(torch.zeros(1, entry.value_heads, length, entry.value_dim, dtype=dtype))
    return out


class RecurrentStateError(StateCacheError):
    """The model keeps a fixed-size recurrent state that t2ir cannot carry: its recurrence does not
    run through a transformers kernel t2ir replaces by a scan from the carried state
    (t2ir.frontend.recurrent), or the state is not in a transformers Cache."""


class MetaProbeError(T2IRError):
    """The model's forward does not run on the meta device (it reads a tensor's value)."""


def probe_cache_layout(model: torch.nn.Module, device: str = "meta") -> list[CacheEntry]:
    """Run PROBE_TOKENS tokens through the model and read the cache it returns (and PROBE_TOKENS + 1
    to tell states that grow with the sequence from fixed-size ones). On the meta device nothing
    is computed; "cpu" is for models whose forward reads a value (`.item()`)."""
    from t2ir.frontend.recurrent import scans_from_carried_states

    caches = [_forward_cache(model, n, device) for n in (PROBE_TOKENS, PROBE_TOKENS + 1)]
    return layout_of(*caches, type(model).__name__, scans=scans_from_carried_states(model))


def _forward_cache(model: torch.nn.Module, tokens: int, device: str):
    ids = torch.zeros(1, tokens, dtype=torch.long, device=device)
    with _on_meta(model) if device == "meta" else contextlib.nullcontext(), torch.no_grad():
        try:
            out = model(input_ids=ids, use_cache=True)
        except Exception as e:
            error = MetaProbeError if device == "meta" else T2IRError
            raise error(f"{type(model).__name__} cannot run on the {device} device to find its cache layout: "
                        f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    for key in ("cache", "past_key_values"):
        found = out.get(key) if hasattr(out, "get") else getattr(out, key, None)
        if found is not None:
            return found
    others = [k for k, v in out.items() if k != "logits" and v is not None] if hasattr(out, "items") else []
    if others:
        raise RecurrentStateError(f"{type(model).__name__} returns its state as {', '.join(others)}, not a "
                                  "transformers Cache: a recurrent state t2ir's LLM export does not carry yet")
    return None  # a model without a cache (GPT-1, XLM): each step reads the whole sequence


def layout_of(cache, longer, model_name: str, scans: bool = False) -> list[CacheEntry]:
    """The KvLayers, ConvStates and GrowingStates of a filled transformers Cache (`longer`: the
    same after one more token), and RecurrentStates when `scans` (the model's recurrent kernels can
    start from them); any other state is an error naming it, recurrent when its size does not
    follow the sequence."""
    if cache is None:
        return []  # no cache at all: the graph takes the whole sequence, input_ids only
    if getattr(cache, "self_attention_cache", None) is not None:  # an encoder-decoder cache, used decoder-only:
        cache, longer = cache.self_attention_cache, longer.self_attention_cache  # its cross part stays empty
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise StateCacheError(f"{model_name} returns its cache as {type(cache).__name__}, not a transformers Cache "
                              "of key/value layers: t2ir's LLM export only carries key/value caches")
    _check_state(cache, longer, {"layers"}, f"{model_name}'s {type(cache).__name__}")
    layout: list[CacheEntry] = []
    for i, (layer, grown) in enumerate(zip(layers, longer.layers)):
        where = f"layer {i} of {model_name} ({type(layer).__name__})"
        states = _conv_states(layer, grown, i, where)
        recurrent = _recurrent_states(layer, grown, i, where) if scans else []
        extras = _growing_states(layer, grown, i)
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        carried = {"keys", "values", *(["conv_states"] if states else []), *(["recurrent_states"] if recurrent else []),
                   *(e.name for e in extras)}
        _check_state(layer, grown, carried, where)
        layout += states + recurrent
        if keys is None and values is None:
            continue  # no key/value cache in this layer (convolution, recurrent, or shared)
        if not (isinstance(keys, torch.Tensor) and isinstance(values, torch.Tensor) and keys.dim() == values.dim() == 4):
            raise StateCacheError(f"layer {i} of {model_name} caches {type(layer).__name__} tensors that are not "
                                  "[batch, heads, positions, features] keys and values")
        if keys.shape[2] != PROBE_TOKENS or values.shape[2] != PROBE_TOKENS:
            raise StateCacheError(f"layer {i} of {model_name} kept {keys.shape[2]} of {PROBE_TOKENS} positions in "
                                  "its cache: only caches that grow by one position per token can be exported")
        layout.append(KvLayer(i, int(keys.shape[1]), int(keys.shape[3]), int(values.shape[1]), int(values.shape[3])))
        layout += extras
    if not any(isinstance(entry, (KvLayer, RecurrentState)) for entry in layout):
        raise StateCacheError(f"{model_name} keeps no key/value cache in any layer")
    return layout


def _fixed_slots(layer, grown, attribute: str, what: str, where: str,
                 rank: int | None = None) -> dict[int, torch.Tensor]:
    """transformers' linear-attention layers keep `conv_states` and `recurrent_states` per
    state_idx: the tensors of one of them (slot -> tensor), each the same size after one more
    token (and of `rank` dimensions when given)."""
    now, longer = getattr(layer, attribute, None), getattr(grown, attribute, None)
    if not isinstance(now, dict) or not isinstance(longer, dict):
        return {}
    found = {}
    for slot, state in sorted(now.items()):
        if not isinstance(state, torch.Tensor):
            continue
        other = longer.get(slot)
        if not isinstance(other, torch.Tensor) or other.shape != state.shape or rank not in (None, state.dim()):
            expected = "of a fixed size" if rank is None else "[batch, channels, length] of a fixed length"
            raise StateCacheError(f"{where} keeps a {what} state {tuple(state.shape)} that is not {expected}")
        found[int(slot)] = state
    return found


def _conv_states(layer, grown, index: int, where: str) -> list[ConvState]:
    """Convolution states of a fixed size, carried."""
    slots = _fixed_slots(layer, grown, "conv_states", "convolution", where, rank=3)
    return [ConvState(index, int(s.shape[1]), int(s.shape[2]), slot) for slot, s in slots.items()]


def _recurrent_states(layer, grown, index: int, where: str) -> list[RecurrentState]:
    """The recurrent states of Mamba and gated delta nets: carried when the model's recurrent
    kernels all have a t2ir scan that starts from them (see t2ir.frontend.recurrent); otherwise
    `_check_state` refuses them."""
    slots = _fixed_slots(layer, grown, "recurrent_states", "recurrent", where)
    return [RecurrentState(index, tuple(int(d) for d in s.shape), slot) for slot, s in slots.items()]


def _growing_states(layer, grown, index: int) -> list[GrowingState]:
    """The layer's other tensors (held directly, not in lists) that grow by one position per
    token along one axis, as keys do: PROBE_TOKENS positions there, one more after one more token."""
    found = []
    for name in _tensor_attributes(layer, {"keys", "values"}):
        now, later = getattr(layer, name), getattr(grown, name, None)
        if not (isinstance(now, torch.Tensor) and isinstance(later, torch.Tensor) and now.dim() == later.dim()):
            continue
        differ = [a for a, (x, y) in enumerate(zip(now.shape, later.shape)) if x != y]
        if len(differ) == 1 and now.shape[differ[0]] == PROBE_TOKENS and later.shape[differ[0]] == PROBE_TOKENS + 1:
            shape = tuple(0 if a == differ[0] else int(d) for a, d in enumerate(now.shape))
            found.append(GrowingState(index, name, shape, differ[0]))
    return found


def _check_state(obj, grown, skip: set[str], where: str) -> None:
    """Refuse state besides keys and values, saying whether it is recurrent (fixed size)."""
    names = _tensor_attributes(obj, skip)
    if not names:
        return
    fixed = all(_shapes(getattr(obj, n)) == _shapes(getattr(grown, n, None)) for n in names)
    if fixed:
        from t2ir.frontend.recurrent import SCANS

        raise RecurrentStateError(f"{where} keeps a recurrent state ({', '.join(names)}, fixed size) that t2ir "
                                  "cannot scan from: t2ir carries recurrent states of layers whose recurrence runs "
                                  f"through transformers' kernels {', '.join(sorted(SCANS))}, and this model's "
                                  "does not (see docs/architectures.md)")
    raise StateCacheError(f"{where} keeps {', '.join(names)} besides keys and values, growing with the sequence "
                          "but not by one position per token along one axis: t2ir's LLM export carries key/value "
                          "caches, convolution states and states that grow as keys do")


def _shapes(value) -> list:
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
    return [tuple(x.shape) for x in items if isinstance(x, torch.Tensor)]


def _tensor_attributes(obj, skip: set[str]) -> list[str]:
    """Attributes holding per-sequence tensors (batch and feature axes at least: not the scalars a
    layer keeps, like its window size), directly or in lists/dicts, except `skip`."""
    found = []
    for name, value in vars(obj).items():
        if name in skip:
            continue
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(x, torch.Tensor) and x.dim() >= 2 for x in items):
            found.append(name)
    return found


@contextlib.contextmanager
def _on_meta(module: torch.nn.Module) -> Iterator[None]:
    """Temporarily move the real tensors (computed buffers) to meta, so the forward is all meta."""
    swapped = []
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for name, tensor in store.items():
                if tensor is not None and not tensor.is_meta:
                    swapped.append((store, name, tensor))
                    store[name] = tensor.to("meta")
    try:
        yield
    finally:
        for store, name, tensor in swapped:
            store[name] = tensor
