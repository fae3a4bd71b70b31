"""torch.export frontend for transformers causal LMs with the KV cache as explicit graph inputs/outputs."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import re
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from transformers import AutoModelForCausalLM, DynamicCache, PretrainedConfig
from transformers.cache_utils import DummyLayer, DynamicLayer, LinearAttentionLayer

from t2ir.errors import T2IRError
from t2ir.frontend import moe
from t2ir.frontend import recurrent
from t2ir.frontend.cache_layout import (CacheEntry, ConvState, GrowingState, KvLayer, MetaProbeError, RecurrentState,
                                        cache_input_names, cache_output_names, cache_past_axes, empty_caches,
                                        probe_cache_layout)
from t2ir.frontend.deferred_asserts import UnprovenGuardError, check_deferred_asserts
from t2ir.frontend.layer_stamping import LayerPlan, StampingError, only_traced_layers, plan_layers, stamp_layers
from t2ir.frontend.scan import fresh_compile_caches


def cache_layout_of(model: torch.nn.Module) -> list[CacheEntry]:
    """The model's per-layer key/value cache shapes (see t2ir.frontend.cache_layout): probed on the
    meta device, or on CPU with weight stand-ins when the forward reads values."""
    with moe.experts_traced_by_t2ir(model):
        try:
            return probe_cache_layout(model)
        except MetaProbeError:
            with _meta_standins(model):
                return probe_cache_layout(model, device="cpu")


class _ExplicitLayer(DynamicLayer):
    """Full-length cache layer pre-filled from graph inputs.

    DynamicLayer.get_seq_length branches on `keys.numel() == 0`, which under export would guard P != 0 and
    forbid the empty-cache prefill; here the length is simply the symbolic size. Sliding-window layers use
    this class too: the cache stays full length and the window is enforced by the mask alone (masks are built
    from absolute positions), which gives the same attention as transformers' truncating sliding layer.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys, values
        self.device = keys.device
        self.is_initialized = True

    def get_seq_length(self) -> int:
        return self.keys.shape[-2]


class _ExplicitConvLayer(LinearAttentionLayer):
    """A convolution or recurrent layer's cache holding its states from graph inputs. It reports
    no previous state, so the model takes its sequence path (the one a prompt takes, for any
    number of new tokens, never the one-token branch that would guard S == 1) and asks
    `update_conv_state` for its left context: the past state before the new inputs, as
    transformers' own layer gives it once it has a past. The last `length` inputs are the updated
    state, a graph output. A recurrent state is where the layer's scan starts
    (t2ir.frontend.recurrent, through `_ExplicitCache.get_recurrent_state`); the state it hands to
    `update_recurrent_state` is the updated one."""

    def __init__(self, states: dict[int, torch.Tensor], recurrent: dict[int, torch.Tensor] | None = None):
        recurrent = recurrent or {}
        super().__init__(number_of_states=max([*states, *recurrent]) + 1)
        self.carried = recurrent
        # ("convolution" | "recurrent", slot) -> the updated state, a graph output
        self.updated: dict[tuple[str, int], torch.Tensor] = {}
        for slot, state in states.items():
            self.conv_states[slot] = state
            self.conv_kernel_size[slot] = state.shape[-1]
            self.is_conv_states_initialized[slot] = True
        any_state = next(iter([*states.values(), *recurrent.values()]))
        self.dtype, self.device = any_state.dtype, any_state.device

    def update_conv_state(self, conv_states: torch.Tensor, state_idx: int = 0, conv_kernel_size: int | None = None,
                          **kwargs: Any) -> torch.Tensor:
        past = self.conv_states[state_idx]
        full = torch.cat([past.to(conv_states.dtype), conv_states], dim=-1)
        # kept in the state's own dtype, as transformers' layer copies it into its buffer
        self.updated["convolution", state_idx] = full[..., -self.conv_kernel_size[state_idx]:].to(past.dtype)
        return full

    def update_recurrent_state(self, recurrent_states: torch.Tensor, state_idx: int = 0, **kwargs: Any):
        if state_idx not in self.carried:
            raise T2IRError("a recurrent state reached a layer whose cache carries none (a t2ir bug)")
        self.updated["recurrent", state_idx] = recurrent_states.to(self.carried[state_idx].dtype)
        return self.updated["recurrent", state_idx]


class _ExplicitCache(DynamicCache):
    """transformers' cache whose recurrent layers start their scans from the carried states: it
    answers the model's `get_recurrent_state` with None (no previous state: the sequence path)
    and hands the layer's carried state to t2ir's scan (t2ir.frontend.recurrent)."""

    def get_recurrent_state(self, layer_idx: int, state_idx: int = 0) -> torch.Tensor | None:
        layer = self.layers[layer_idx]
        recurrent.set_carried_state(getattr(layer, "carried", {}).get(state_idx))
        return None


def _with_growing_states(layer_class: type, keys: torch.Tensor, values: torch.Tensor,
                         states: dict[str, torch.Tensor]) -> _ExplicitLayer:
    """The model's own cache layer class (its methods append to the states it keeps besides keys
    and values, DSA's `update_indexer`), holding keys, values and those states from graph inputs;
    its lazy-initialisation flags (`is_..._initialized`) set, as after a first step."""
    explicit = type(f"Explicit{layer_class.__name__}", (_ExplicitLayer, layer_class), {})
    layer = explicit(keys, values)
    for name, tensor in states.items():
        setattr(layer, name, tensor)
    for flag, value in vars(layer).items():
        if flag.startswith("is_") and flag.endswith("initialized") and isinstance(value, bool):
            setattr(layer, flag, True)
    return layer


class _ExplicitHybridLayer(_ExplicitConvLayer, _ExplicitLayer):
    """A layer that keeps both (a short convolution before sliding-window attention, Inkling's):
    transformers' hybrid layer kinds are the two classes combined the same way."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, states: dict[int, torch.Tensor],
                 recurrent: dict[int, torch.Tensor] | None = None):
        _ExplicitConvLayer.__init__(self, states, recurrent)
        _ExplicitLayer.__init__(self, keys, values)


def generation_position_offset(model: torch.nn.Module) -> int:
    """What the model's `prepare_inputs_for_generation` adds to the positions generate computes
    (1 for PaliGemma, whose positions start at 1); 0 when it adds nothing or cannot be asked."""
    given = torch.arange(3)[None]
    try:
        got = model.prepare_inputs_for_generation(torch.zeros(1, 3, dtype=torch.long), position_ids=given.clone())
        shift = got["position_ids"] - given
        return int(shift[0, 0]) if bool((shift == shift[0, 0]).all()) else 0
    except Exception:  # a model whose preparation needs more than ids and positions: generate's own positions
        return 0


@contextlib.contextmanager
def _bidirectional_masks(config: PretrainedConfig) -> Iterator[None]:
    """A decoder whose attention modules are all non-causal attends both ways within the new
    tokens in transformers' eager run (no mask, sdpa's is_causal off); traced with symbolic sizes,
    its `create_causal_mask` would build a causal mask instead. `config.is_causal = False` is
    transformers' own switch to its bidirectional mask, which keeps the eager meaning."""
    had, before = hasattr(config, "is_causal"), getattr(config, "is_causal", None)
    config.is_causal = False
    try:
        yield
    finally:
        if had:
            config.is_causal = before
        else:
            del config.is_causal


class CausalLMWithExplicitCache(torch.nn.Module):
    """forward(input_ids [1,S], k_0, v_0, k_1, v_1, ...) -> (logits, k_0', v_0', ...).

    Past caches are [1, heads, P, dim] (P may be 0), updated ones [1, heads, P+S, dim], for the layers
    `layout` lists (by default probed from the model); layers without a cache take no IO. A layer
    with a short convolution takes and returns its state [1, channels, kernel] (ConvState).
    The wrapped model's children are registered directly on this module, so parameter names are the
    transformers state-dict names ("model.layers.0...", "lm_head.weight").
    """

    def __init__(self, model: torch.nn.Module, num_logits_to_keep: int | None = None,
                 layout: list[CacheEntry] | None = None):
        super().__init__()
        if any(True for _ in model.parameters(recurse=False)) or any(True for _ in model.buffers(recurse=False)):
            raise T2IRError(f"{type(model).__name__} holds tensors at top level; t2ir cannot keep its weight names")
        # Keep the model unregistered (its own name would prefix every parameter) and adopt its children instead.
        object.__setattr__(self, "lm", model)
        for name, child in model.named_children():
            self.add_module(name, child)
        self.num_logits_to_keep = num_logits_to_keep
        self.layout = layout if layout is not None else cache_layout_of(model)
        self._scans = any(isinstance(entry, RecurrentState) for entry in self.layout)
        model_params = inspect.signature(model.forward).parameters
        self._takes_logits_to_keep = "logits_to_keep" in model_params
        self._takes_position_ids = "position_ids" in model_params and not getattr(model.config, "is_encoder_decoder", False)
        self._position_offset = generation_position_offset(model)
        # a decoder configured to attend both ways (transformers' `use_bidirectional_attention`: Gemma
        # in PaliGemma) whose attention modules say so too; a vision tower's attention does not count,
        # and a flag alone does not either (BigBird-Pegasus' modules say non-causal, its masks are causal)
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
        if getattr(decoder, "config", None) is None:  # transformers' guess can miss (ModernBERT's decoder: a Linear)
            decoder = model
        causal_flags = [m.is_causal for m in decoder.modules() if isinstance(getattr(m, "is_causal", None), bool)]
        self._bidirectional = bool(getattr(decoder.config, "use_bidirectional_attention", False)) and \
            bool(causal_flags) and not any(causal_flags)
        self._decoder_config = decoder.config  # the one its mask functions read
        # transformers 5.x renamed past_key_values -> cache (the old name is a deprecated alias).
        self._cache_kwarg = "cache" if "cache" in model_params else "past_key_values"

        # torch.export names user inputs after forward's parameters; the count depends on the layer count,
        # so the signature is built per instance rather than written in the class.
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        names = ["input_ids", *cache_input_names(self.layout)]
        signature = inspect.Signature([inspect.Parameter(n, kind) for n in names])

        def forward(*args: torch.Tensor, **kwargs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self.run(*signature.bind(*args, **kwargs).args)

        forward.__signature__ = signature  # type: ignore[attr-defined]
        self.forward = forward

    def train(self, mode: bool = True) -> CausalLMWithExplicitCache:
        """Propagate to the wrapped model too: its own `training` flag is not reached through our children."""
        self.lm.train(mode)
        return super().train(mode)

    def _explicit_cache(self, past: tuple[torch.Tensor, ...]) -> DynamicCache:
        """transformers' own per-layer cache list (layers without a cache of their own stay
        DummyLayer), the layers that cache keys and values, convolution, recurrent or other growing
        states filled from the graph inputs."""
        cache = _ExplicitCache(config=self.lm.config)
        layers: list[Any] = list(cache.layers)
        layers += [DummyLayer() for _ in range(len(layers), max(entry.index for entry in self.layout) + 1)]
        states: dict[int, dict[int, torch.Tensor]] = {}
        carried: dict[int, dict[int, torch.Tensor]] = {}
        growing: dict[int, dict[str, torch.Tensor]] = {}
        kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        inputs = iter(past)
        for entry in self.layout:
            if isinstance(entry, ConvState):
                states.setdefault(entry.index, {})[entry.slot] = next(inputs)
            elif isinstance(entry, RecurrentState):
                carried.setdefault(entry.index, {})[entry.slot] = next(inputs)
            elif isinstance(entry, GrowingState):
                growing.setdefault(entry.index, {})[entry.name] = next(inputs)
            else:
                kv[entry.index] = (next(inputs), next(inputs))
        for index in sorted({*states, *carried, *kv}):
            if (index in states or index in carried) and index in kv:
                layers[index] = _ExplicitHybridLayer(*kv[index], states.get(index, {}), carried.get(index))
            elif index in states or index in carried:
                layers[index] = _ExplicitConvLayer(states.get(index, {}), carried.get(index))
            elif index in growing:
                layers[index] = _with_growing_states(type(layers[index]), *kv[index], growing[index])
            else:
                layers[index] = _ExplicitLayer(*kv[index])
        cache.layers = layers
        return cache

    def _positions(self, input_ids: torch.Tensor, past: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
        """P .. P + S - 1, the positions transformers' generate passes to a decoder
        (`_prepare_position_ids_for_generation` without padding), shifted as the model's
        `prepare_inputs_for_generation` shifts them (PaliGemma numbers from 1). Most models would
        derive the same from the cache; some start at 0 on every call when given none (Bamba), and
        RoBERTa-style ones offset them by the padding index where generate does not. None without
        a past length."""
        lengths = [t.shape[axis] for t, axis in zip(past, cache_past_axes(self.layout)) if axis is not None]
        if not lengths:
            return None
        return (torch.arange(input_ids.shape[1], device=input_ids.device) + lengths[0] + self._position_offset)[None]

    def run(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The computation; `forward` only gives it a named per-layer signature."""
        if len(past) != len(cache_past_axes(self.layout)):
            raise ValueError(f"expected {len(cache_past_axes(self.layout))} cache tensors, got {len(past)}")
        kwargs: dict[str, Any] = {"use_cache": bool(self.layout)}  # none: each step reads the whole sequence
        if self.layout:
            kwargs[self._cache_kwarg] = cache = self._explicit_cache(past)
            if self._takes_position_ids and (positions := self._positions(input_ids, past)) is not None:
                kwargs["position_ids"] = positions
        if self.num_logits_to_keep and self._takes_logits_to_keep:
            # transformers slices the hidden states before lm_head: the vocab projection runs on kept rows only.
            kwargs["logits_to_keep"] = self.num_logits_to_keep
        with recurrent.scans_from_state(self.lm) if self._scans else contextlib.nullcontext(), \
                _bidirectional_masks(self._decoder_config) if self._bidirectional else contextlib.nullcontext():
            logits = self.lm(input_ids=input_ids, **kwargs).logits
        if self.num_logits_to_keep and not self._takes_logits_to_keep:
            logits = logits[:, -self.num_logits_to_keep:, :]  # correct, but projects every position first
        updated: list[torch.Tensor] = []
        for entry in self.layout:
            layer = cache.layers[entry.index]
            if isinstance(entry, KvLayer):
                updated += [layer.keys, layer.values]
            elif isinstance(entry, GrowingState):
                updated.append(getattr(layer, entry.name))
            else:
                state = ("recurrent" if isinstance(entry, RecurrentState) else "convolution", entry.slot)
                if state not in layer.updated:
                    raise T2IRError(f"decoder layer {entry.index} did not update its {state[0]} state {entry.slot}")
                updated.append(layer.updated[state])
        return (logits, *updated)


def export_causal_lm(
    model: torch.nn.Module,
    *,
    num_logits_to_keep: int | None = None,
    example_seq: int = 3,
    example_past: int = 5,
    layout: list[CacheEntry] | None = None,
) -> torch.export.ExportedProgram:
    """Export with symbolic S (new tokens) and P (past length) so one graph serves prefill (P=0) and decode.

    A model whose parameters are on the meta device (see `build_meta_model`) is traced with zero-stride CPU
    stand-ins, giving the same graph as the real model; the returned ep.state_dict holds the original meta
    tensors, to be replaced by checkpoint weights by name.
    """
    if example_seq < 2 or example_past < 2:
        raise ValueError("example sizes must be >= 2: export specialises dimensions of size 0 and 1")
    model.eval()
    wrapper = CausalLMWithExplicitCache(model, num_logits_to_keep=num_logits_to_keep, layout=layout).eval()
    ids = torch.zeros(1, example_seq, dtype=torch.long)
    past = empty_caches(wrapper.layout, _float_dtype(model), example_past)
    with _meta_standins(wrapper) as originals, moe.experts_traced_by_t2ir(model), torch.no_grad():
        ep = _export_bounded(wrapper, ids, past)
        if _mutates(ep):  # torch.export keeps in-place ops (x /= s); torch's functionalization removes them
            ep = ep.run_decompositions({})
    for name, tensor in ep.state_dict.items():
        if id(tensor) in originals:
            ep.state_dict[name] = originals[id(tensor)]
    return ep


def _export_bounded(wrapper: CausalLMWithExplicitCache, ids: torch.Tensor,
                    past: list[torch.Tensor]) -> torch.export.ExportedProgram:
    """Export with S and P unbounded, then within the bounds torch suggests (learned position
    tables: S + P <= max positions). A guard torch cannot prove and suggests nothing for is
    deferred and checked on many sizes; one that fails only at the top of a bounded axis
    (GPT-1's S != 128 beside S <= 128) lowers that bound."""
    bounds: dict[str, int] = {}
    for _ in range(6):
        try:
            return _export(wrapper, ids, past, bounds)
        except torch._dynamo.exc.UserError as e:
            suggested = _suggested_maxima(str(e))
            if suggested and {**bounds, **suggested} != bounds:
                bounds = {**bounds, **suggested}
                continue
        ep = _export(wrapper, ids, past, bounds, defer_guards=True)
        try:
            check_deferred_asserts(ep, _axis_names(ep))
            return ep
        except UnprovenGuardError as e:
            edge = [axis for axis, size in e.sizes.items() if bounds.get(axis) == size]
            if len(e.sizes) != 1 or not edge:
                raise
            bounds[edge[0]] -= 1
    raise T2IRError(f"torch.export found no range of S and P it can trace {type(wrapper.lm).__name__} for")


def _export(wrapper: CausalLMWithExplicitCache, ids: torch.Tensor, past: list[torch.Tensor],
            maxima: dict[str, int], defer_guards: bool = False) -> torch.export.ExportedProgram:
    # S >= 1 (there is always a new token); P >= 0 (prefill starts from empty [1, heads, 0, dim] caches).
    seq = torch.export.Dim("S", min=1, **({"max": maxima["S"]} if "S" in maxima else {}))
    past_len = torch.export.Dim("P", min=0, **({"max": maxima["P"]} if "P" in maxima else {}))
    caches = zip(cache_input_names(wrapper.layout), cache_past_axes(wrapper.layout))
    dynamic_shapes = {"input_ids": {1: seq}, **{name: (None if axis is None else {axis: past_len})
                                                for name, axis in caches}}
    fresh_compile_caches()
    return torch.export.export(wrapper, (ids, *past), dynamic_shapes=dynamic_shapes, strict=False,
                               prefer_deferred_runtime_asserts_over_guards=defer_guards)


def _axis_names(ep: torch.export.ExportedProgram) -> dict[str, str]:
    """torch's symbols for S (input_ids' axis 1) and P (the caches' symbolic axis)."""
    names = {}
    users = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs]
    for i, node in enumerate(users):
        for dim in [node.meta["val"].shape[1]] if i == 0 else node.meta["val"].shape:
            if isinstance(dim, torch.SymInt):
                names[str(dim.node.expr)] = "S" if i == 0 else "P"
    return names


def _suggested_maxima(message: str) -> dict[str, int]:
    """Upper bounds for S and P from torch.export's "Suggested fixes: S = Dim('S', max=126)"."""
    fixes = message.partition("Suggested fixes:")[2]
    return {name: int(bound) for name, bound in re.findall(r"\b([SP]) = Dim\('\1'[^)]*\bmax=(\d+)", fixes)}


def _mutates(ep: torch.export.ExportedProgram) -> bool:
    return any(n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable
               for n in ep.graph.nodes)


def dim_symbols(ep: torch.export.ExportedProgram) -> dict[str, Any]:
    """{"S": sympy symbol, "P": sympy symbol}: the exported program keeps no Dim names, only symbols (s43, ...)."""
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    seq = placeholders["input_ids"].meta["val"].shape[1]
    past = next(d for name, n in placeholders.items() if name.startswith("in_cache_") for d in n.meta["val"].shape
                if isinstance(d, torch.SymInt))
    return {"S": seq.node.expr, "P": past.node.expr}


def _float_dtype(model: torch.nn.Module) -> torch.dtype:
    """Activation dtype (the caches use it): the first floating parameter's dtype."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.get_default_dtype()


@contextlib.contextmanager
def _meta_standins(module: torch.nn.Module) -> Iterator[dict[int, torch.Tensor]]:
    """Temporarily swap meta parameters/persistent buffers for zero-stride CPU tensors of the same shape.

    Meta weights would make every activation meta while inputs and recomputed buffers are CPU, and tracing
    fails on the device mix. A 0-dim zero expanded to the full shape costs one element of memory. Tied
    weights share one stand-in, so the tie stays visible in the exported state_dict. Yields stand-in id ->
    original tensor so the caller can put the meta tensors back into the exported state_dict.
    """
    swapped: list[tuple[dict[str, Any], str, torch.Tensor]] = []
    by_original: dict[int, torch.Tensor] = {}
    originals: dict[int, torch.Tensor] = {}
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for name, tensor in store.items():
                if tensor is None or not tensor.is_meta:
                    continue
                if store is sub._buffers and name in sub._non_persistent_buffers_set:
                    raise ValueError(
                        f"{type(sub).__name__}.{name} is a meta non-persistent buffer: its value is part of the"
                        " graph semantics; build the model with build_meta_model()"
                    )
                standin = by_original.get(id(tensor))
                if standin is None:
                    standin = torch.zeros((), dtype=tensor.dtype).expand(tensor.shape)
                    if isinstance(tensor, torch.nn.Parameter):
                        standin = torch.nn.Parameter(standin, requires_grad=False)
                    by_original[id(tensor)] = standin
                    originals[id(standin)] = tensor
                swapped.append((store, name, tensor))
                store[name] = standin
    try:
        yield originals
    finally:
        for store, name, tensor in swapped:
            store[name] = tensor


def build_meta_model(
    config: PretrainedConfig, dtype: torch.dtype = torch.float32, attn_implementation: str = "auto",
    auto_class: Any = AutoModelForCausalLM,
) -> torch.nn.Module:
    """Instantiate without allocating weights: parameters stay on meta, non-persistent buffers become real.

    Computed buffers (rotary inv_freq, Gemma's embed_scale, ...) are absent from checkpoints and their values
    end up in the exported program, so they must be real. transformers itself re-creates them with
    `_init_weights` after a meta-device load; reusing that hook (model-specific overrides included) covers
    every rotary variant without knowing their classes. Mixture-of-experts layers run through t2ir's
    experts implementation (`t2ir.frontend.moe`), the one that exports. `auto_class` is the
    transformers auto class that builds the model (AutoModelForImageTextToText for a vision-language
    model, t2ir.llm.vision_language).
    """
    with torch.device("meta"):
        # "auto" is transformers' own choice: sdpa where the class supports it, eager otherwise.
        chosen = None if attn_implementation == "auto" else attn_implementation
        model = auto_class.from_config(config, dtype=dtype, attn_implementation=chosen,
                                       experts_implementation=moe.register())
    from transformers import PreTrainedModel

    owners: list[tuple[str, torch.nn.Module]] = []
    models = {"": model}  # module name -> the PreTrainedModel (sub-model) it belongs to
    for path, module in model.named_modules():
        parent = models[path.rpartition(".")[0]] if path else model
        models[path] = module if isinstance(module, PreTrainedModel) else parent
        names = [n for n in module._non_persistent_buffers_set if module._buffers.get(n) is not None]
        for name in names:
            meta = module._buffers[name]
            # NaN-filled, so a buffer that _init_weights does not cover is caught below instead of used.
            fill = float("nan") if meta.is_floating_point() else 0
            module._buffers[name] = torch.full(meta.shape, fill, dtype=meta.dtype, device="cpu")
        if names:
            owners.append((path, module))
    with torch.no_grad():
        for path, module in owners:  # each sub-model's own _init_weights, as transformers dispatches it
            models[path]._init_weights(module)
        for path, module in owners:
            _init_from_ancestors(model, models, path, module)
    return model.eval()


def _unset_buffers(module: torch.nn.Module) -> list[str]:
    return [name for name in module._non_persistent_buffers_set if (buf := module._buffers.get(name)) is not None
            and buf.is_floating_point() and torch.isnan(buf).any()]


def _init_from_ancestors(model: torch.nn.Module, models: dict, path: str, module: torch.nn.Module) -> None:
    """A buffer its own module's _init_weights leaves unset may be set from an enclosing module's
    (FalconH1Model copies its MuP vector into every mixer): the ancestors' _init_weights, nearest
    first, until it is set."""
    ancestor = path
    while _unset_buffers(module) and ancestor:
        ancestor = ancestor.rpartition(".")[0]
        try:
            models[ancestor]._init_weights(model.get_submodule(ancestor))
        except Exception:  # an init that cannot run with meta weights: try the next one up
            continue
    if unset := _unset_buffers(module):
        raise T2IRError(
            f"{type(module).__name__}.{unset[0]}: a computed buffer that transformers' _init_weights does not "
            "rebuild on the meta device; export from a model loaded on CPU instead"
        )


def lift_causal_lm(model: torch.nn.Module, *, num_logits_to_keep: int | None = None,
                   weight_source=None, name: str = "main", layout: list[CacheEntry] | None = None,
                   every_layer: bool = False):
    """Export and lift a causal LM into the IR with torch_to_nnef's LLM signature:
    inputs `input_ids [1, S]`, `in_cache_{key,value}_{i} [1, heads, P, dim]`; outputs `outputs`
    (logits) and `out_cache_{key,value}_{i} [1, heads, P+S, dim]`, i being the decoder layer.

    Unless `every_layer`, decoder layers that trace alike are traced once and stamped (see
    t2ir.frontend.layer_stamping); when that does not fit the model, every layer is traced."""
    from t2ir.ops.builtins import ensure_registered

    ensure_registered()
    layout = layout if layout is not None else cache_layout_of(model)
    plan = None if every_layer else plan_layers(model, model.config.get_text_config(decoder=True))
    if plan is not None:
        try:
            return _lift_stamped(model, plan, layout, num_logits_to_keep, weight_source, name)
        except StampingError as e:
            warnings.warn(f"tracing every decoder layer of {type(model).__name__}: {e}", StampingWarning, stacklevel=2)
    return _lift(model, layout, num_logits_to_keep, weight_source, name)


class StampingWarning(UserWarning):
    """Layers could not be traced once and stamped; every layer was traced (slower, same result)."""


def _lift(model, layout: list[CacheEntry], num_logits_to_keep, weight_source, name: str):
    from t2ir.frontend.decompose import decompose_untranslated
    from t2ir.frontend.fx import lift_exported_program

    # ops without a translation (an activation built from expm1, ...) through torch's decompositions
    ep = decompose_untranslated(export_causal_lm(model, num_logits_to_keep=num_logits_to_keep, layout=layout))
    inputs = ["input_ids", *cache_input_names(layout)]
    dim_names = {(0, 1): "S", **{(i, axis): "P" for i, axis in enumerate(cache_past_axes(layout), 1)
                                 if axis is not None}}
    return lift_exported_program(ep, input_names=inputs, output_names=["outputs", *cache_output_names(layout)],
                                 dim_names=dim_names, weight_source=weight_source, name=name)


def _lift_stamped(model, plan: LayerPlan, layout: list[CacheEntry], num_logits_to_keep, weight_source, name: str):
    """Trace the plan's layers only, then stamp the others in the IR."""
    from t2ir.ir import InMemory
    from t2ir.types import DType

    cache: dict[int, list[CacheEntry]] = {}  # each layer's cache entries, wherever the layer is
    for entry in layout:
        cache.setdefault(entry.index, []).append(dataclasses.replace(entry, index=0))
    for copy, source in plan.copies.items():
        if cache.get(copy) != cache.get(source):
            raise StampingError(f"layers {copy} and {source} keep different caches")
    with only_traced_layers(model, plan):
        try:
            graph = _lift(model, [layer for layer in layout if layer.index in plan.traced], num_logits_to_keep,
                          weight_source, name)
        except StampingError:
            raise
        except Exception as e:  # tracing every layer tells the real story, if there is one
            raise StampingError(f"tracing layers {plan.traced} alone failed: {e}") from e
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))

    def new_tensor(label: str):
        if label not in tensors:
            raise StampingError(f"no weight named {label}")
        t = tensors[label]
        source = weight_source(label, t) if weight_source is not None else None
        if source is None:
            if t.is_meta:
                raise StampingError(f"weight {label} is on the meta device and no weight source provides it")
            source = InMemory(t.detach())
        return source, DType.from_torch(t.dtype), tuple(t.shape)

    stamp_layers(graph, plan, new_tensor, ["input_ids", *cache_input_names(layout)],
                 ["outputs", *cache_output_names(layout)])
    return graph
