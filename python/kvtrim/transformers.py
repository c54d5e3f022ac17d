"""kvtrim for Hugging Face transformers: compress a causal LM's KV cache at the end of prefill.

    import kvtrim, kvtrim.transformers as kt
    with kt.compress(model, method="snapkv", budget=64):
        out = model.generate(**inputs, max_new_tokens=32)

or, with the cache in hand (to read what it holds):

    cache = kt.KVTrimCache(model, method="compresskv", budget=64, profile=kvtrim.load_profile(p))
    with kt.attention(model):
        out = model.generate(**inputs, cache=cache, max_new_tokens=32)
    cache.bytes_held()

How it works. The model runs with the attention implementation ``"kvtrim"`` (registered in
transformers' ``AttentionInterface``; masks as for ``"sdpa"``). In prefill each layer attends over
its full K/V with SDPA; then kvtrim compacts each sequence's K/V in place (left padding excluded)
and the cache keeps only the kept rows: per layer one flat ``[rows, head_dim]`` K and V storage
with per-(sequence, KV head) offsets and lengths, so the evicted memory is really returned and a
head-wise budget (Ada-KV, HeadKV) keeps exactly its rows, never inflated to query heads. Decode
steps append the new token to every head's rows and attend with kvtrim's C++ ragged decode kernel
(all G query heads of a KV head from one read of its rows). Positions continue from the prompt's
(the cache reports the logical length), so RoPE and generate's bookkeeping are unchanged.

Supported: Llama / Qwen2 / Mistral-family decoder layers whose attention calls
``cache.update(k, v, layer_idx)`` then the configured attention function, full attention (no
sliding window shorter than the sequence), left padding (what generate uses for decoder-only
models), CPU tensors of float32, float16 or bfloat16. A second multi-token forward after the
compression (chunked prefill, a continued prompt) raises NotImplementedError.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch

from . import _kvtrim as _k

try:  # transformers >= 5
    from transformers.cache_utils import Cache, CacheLayerMixin
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface
except ImportError as e:  # pragma: no cover
    raise ImportError("kvtrim.transformers needs transformers >= 5 and PyTorch") from e

ATTENTION_NAME = "kvtrim"

__all__ = ["KVTrimCache", "KVTrimLayer", "compress", "attention", "register", "model_shape", "cache_kwarg",
           "ATTENTION_NAME"]


def cache_kwarg(model: Any) -> str:
    """The name under which `model.forward` / `generate` take a cache: "cache" (transformers >= 5.3x)
    or "past_key_values" (earlier)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def model_shape(model_or_config: Any) -> _k.ModelShape:
    """The kvtrim.ModelShape of a transformers model or config (text config for multimodal ones)."""
    cfg = getattr(model_or_config, "config", model_or_config)
    if hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    q = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or q
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // q
    ctx = getattr(cfg, "max_position_embeddings", 0) or 0
    return _k.ModelShape(cfg.num_hidden_layers, q, kv, d, int(ctx))


def _as_method(model: Any, method: Union[str, _k.Method], budget: Union[int, float], window: int,
               profile: Optional[_k.Profile], params: Optional[dict]) -> _k.Method:
    info = method.info if isinstance(method, _k.Method) else None
    if isinstance(method, str):
        info = _k.method_info(method)
    if info is not None and info.needs_layer_inputs:
        raise NotImplementedError(f"kvtrim: {info.name} reads layer inputs beyond K, V and the window's "
                                  "queries (W_o, attention column sums or pre-RoPE queries); "
                                  "kvtrim.transformers does not pass them yet (docs/PYTHON.md)")
    if isinstance(method, _k.Method):
        return method
    if not isinstance(method, str):
        raise TypeError(f"kvtrim: method must be a name or a kvtrim.Method, got {type(method).__name__}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"kvtrim: budget must be an int (tokens) or a float ratio, got {budget!r}")
    return _k.Method(method, model_shape(model), budget=budget, window=window, profile=profile,
                     params=dict(params or {}))


class _Store:
    """Reaches layers compressed earlier (CAKE's cascade) for one sequence of the batch."""

    def __init__(self, cache: "KVTrimCache", b: int):
        self.cache, self.b = cache, b

    def compacted(self, layer: int, kv_head: int):
        lay = self.cache.layers[layer]
        o = int(lay.offsets[self.b, kv_head])
        n = int(lay.lengths[self.b, kv_head])
        return lay.keys[o:o + n].unsqueeze(0), lay.values[o:o + n].unsqueeze(0)

    def resized(self, layer: int, lengths: np.ndarray):
        self.cache.layers[layer]._resize(self.b, torch.from_numpy(np.asarray(lengths, dtype=np.int64)))


class KVTrimLayer(CacheLayerMixin):
    """One layer of a KVTrimCache: flat K/V storage [rows, head_dim] with per-(sequence, KV head)
    offsets, lengths and capacities (int64 tensors [batch, kv_head])."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, cache: "KVTrimCache", layer_idx: int):
        super().__init__()
        self._cache = cache
        self.layer_idx = layer_idx
        self.compressed = False
        self.seq_length = 0  # logical tokens seen (prompt incl. padding + generated)
        self.keys: Optional[torch.Tensor] = None
        self.values: Optional[torch.Tensor] = None
        self.offsets = self.lengths = self.capacity = None

    # ---- CacheLayerMixin ----
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if getattr(self, "_awaiting_attention", False):
            raise RuntimeError("kvtrim: KVTrimCache needs the model to run the 'kvtrim' attention function: "
                               "call generate / forward inside `with kvtrim.transformers.attention(model):` "
                               "(kvtrim.transformers.compress does it)")
        self._awaiting_attention = True
        n = key_states.shape[-2]
        if not self.compressed:
            if self.seq_length != 0:
                raise NotImplementedError("kvtrim: a second prefill chunk before compression is not supported")
        else:
            if n != 1:
                raise NotImplementedError(
                    f"kvtrim: {n} new tokens after the compressed prefill; only one token per decode step is supported")
            self._append(key_states, value_states)
        self.seq_length += n
        key_states._kvtrim_layer = self  # the attention function finds the cache through it
        return key_states, value_states

    def get_mask_sizes(self, query_length) -> tuple[int, int]:
        # transformers >= 5.3 passes the query length, earlier versions cache_position
        q = query_length if isinstance(query_length, int) else int(query_length.shape[0])
        return self.seq_length + q, 0

    def get_seq_length(self) -> int:
        return self.seq_length

    def get_max_length(self) -> int:
        return -1

    def get_max_cache_shape(self) -> int:  # transformers < 5.3
        return -1

    def reset(self) -> None:
        self._awaiting_attention = False
        self.compressed = False
        self.seq_length = 0
        self.keys = self.values = self.offsets = self.lengths = self.capacity = None
        self.is_initialized = False

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("kvtrim: beam search is not supported by KVTrimCache")

    # ---- storage ----
    def bytes_held(self) -> int:
        if self.keys is None:
            return 0
        return self.keys.untyped_storage().nbytes() + self.values.untyped_storage().nbytes()

    def bytes_used(self) -> int:
        if self.keys is None:
            return 0
        return 2 * int(self.lengths.sum()) * self.keys.shape[1] * self.keys.element_size()

    def _pack(self, segments_k, segments_v, lengths: torch.Tensor, reserve: int):
        """New flat storage from per-(b, h) row tensors, each with `reserve` spare rows."""
        B, H = lengths.shape
        cap = lengths + reserve
        offsets = torch.zeros(B * H, dtype=torch.int64)
        offsets[1:] = torch.cumsum(cap.reshape(-1), 0)[:-1]
        total = int(cap.sum())
        D = segments_k[0].shape[-1]
        k = torch.empty((total, D), dtype=segments_k[0].dtype, device=segments_k[0].device)
        v = torch.empty_like(k)
        for i, (sk, sv) in enumerate(zip(segments_k, segments_v)):
            o = int(offsets[i])
            k[o:o + sk.shape[0]] = sk
            v[o:o + sv.shape[0]] = sv
        self.keys, self.values = k, v
        self.offsets, self.lengths, self.capacity = offsets.reshape(B, H), lengths.clone(), cap

    def _segments(self):
        B, H = self.lengths.shape
        ks, vs = [], []
        for b in range(B):
            for h in range(H):
                o, n = int(self.offsets[b, h]), int(self.lengths[b, h])
                ks.append(self.keys[o:o + n])
                vs.append(self.values[o:o + n])
        return ks, vs

    def _append(self, key_states: torch.Tensor, value_states: torch.Tensor):
        B, H = self.lengths.shape
        if bool((self.lengths + 1 > self.capacity).any()):
            ks, vs = self._segments()
            self._pack(ks, vs, self.lengths, self._cache.reserve)
        pos = (self.offsets + self.lengths).reshape(-1)
        self.keys[pos] = key_states.reshape(B * H, -1).to(self.keys.dtype)
        self.values[pos] = value_states.reshape(B * H, -1).to(self.values.dtype)
        self.lengths += 1

    def _resize(self, b: int, lengths: torch.Tensor):
        """CAKE re-trimmed sequence b of this layer: keep rows [0, lengths[h]) and free the rest."""
        self.lengths[b] = lengths
        ks, vs = self._segments()
        self._pack([s.clone() for s in ks], [s.clone() for s in vs], self.lengths, 0)

    def _compress(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: Optional[torch.Tensor]) -> None:
        cache = self._cache
        B, H, n, D = key.shape
        if key.device.type != "cpu":
            raise ValueError(f"kvtrim: the KV cache is on {key.device}; the CPU backend needs CPU tensors")
        pads = cache._pads(attention_mask, B, n)
        w = cache.window
        lengths = torch.empty((B, H), dtype=torch.int64)
        segs_k, segs_v = [], []
        for b in range(B):
            p = pads[b]
            seq = cache._sequence(b, n - p)
            kb, vb = key[b, :, p:, :], value[b, :, p:, :]  # views of the engine's own memory
            qb = query[b, :, n - w:, :] if n >= w else query[b]  # the last w prompt queries
            store = _Store(cache, b) if cache.method.cascades else None
            lens = seq.compress_layer(self.layer_idx, kb, vb, qb, store=store)
            lengths[b] = torch.from_numpy(lens)
            for h in range(H):
                segs_k.append(kb[h, : int(lens[h])])
                segs_v.append(vb[h, : int(lens[h])])
        self._pack(segs_k, segs_v, lengths, 0)  # copies the kept rows; the full K/V is dropped
        self.compressed = True

    def _decode(self, query: torch.Tensor) -> torch.Tensor:
        B, Hq, _, D = query.shape
        q = query.reshape(B, Hq, D).to(torch.float32).contiguous()
        out = torch.empty_like(q)
        _k.ragged_decode_attention(q, self.keys, self.values, self.offsets, self.lengths,
                                   float(self._scale), out)
        return out


class KVTrimCache(Cache):
    """A transformers Cache that compresses each layer at the end of prefill with a kvtrim method
    and keeps per-KV-head lengths (ragged), releasing what was evicted.

    Args:
        model: the transformers model (or its config) the cache is for.
        method: a registry name (kvtrim.method_names()) or a kvtrim.Method.
        budget: int B (average tokens kept per KV head per layer, window included) or a ratio.
        window: observation window (the last `window` prompt queries score; always kept).
        profile: a kvtrim.Profile for methods that need one (compresskv, headkv, ...).
        params: the method's own parameters by key.
        reserve: spare rows per head added when a decode step outgrows a head's storage.
    """

    def __init__(self, model: Any, method: Union[str, _k.Method] = "snapkv", budget: Union[int, float] = 64,
                 window: int = 8, profile: Optional[_k.Profile] = None, params: Optional[dict] = None,
                 reserve: int = 64):
        self.method = _as_method(model, method, budget, window, profile, params)
        self.window = self.method.window
        if reserve < 1:
            raise ValueError(f"kvtrim: reserve = {reserve} must be >= 1")
        self.reserve = int(reserve)
        shape = self.method.shape
        self.shape = shape
        cfg = getattr(model, "config", model)
        if hasattr(cfg, "get_text_config"):
            cfg = cfg.get_text_config()
        sw = getattr(cfg, "sliding_window", None)
        self._sliding = sw if (sw and getattr(cfg, "use_sliding_window", True)) else None
        self.sequences: list = []
        super().__init__(layers=[KVTrimLayer(self, i) for i in range(shape.layers)])

    # per-sequence state, made at layer 0 of the prefill
    def _pads(self, attention_mask: Optional[torch.Tensor], B: int, n: int) -> list:
        if attention_mask is None:
            return [0] * B
        m = attention_mask
        if m.dim() == 4:
            last = m[:, 0, -1, :n]  # what the last prompt query may see
            ok = last if m.dtype == torch.bool else last == 0
        elif m.dim() == 2:
            ok = m[:, -n:].bool()
        else:
            raise ValueError(f"kvtrim: unexpected attention mask of shape {tuple(m.shape)}")
        pads = []
        for b in range(B):
            row = ok[b]
            k = int((~row).sum())
            if k and bool(row[:k].any()):
                raise ValueError("kvtrim: only left padding is supported (generate's default for decoder-only models)")
            pads.append(k)
        return pads

    def _sequence(self, b: int, n: int):
        while len(self.sequences) <= b:
            self.sequences.append(None)
        if self.sequences[b] is None:
            if self._sliding is not None and n > self._sliding:
                raise ValueError(f"kvtrim: the model attends over a sliding window of {self._sliding} tokens, "
                                 f"shorter than the {n}-token prompt; only full attention is supported")
            self.sequences[b] = self.method.begin(n)
        seq = self.sequences[b]
        if seq.prompt_length != n:
            raise ValueError(f"kvtrim: sequence {b} has {n} prompt tokens here, {seq.prompt_length} at layer 0")
        return seq

    @property
    def compressed(self) -> bool:
        return all(l.compressed for l in self.layers)

    def lengths(self) -> np.ndarray:
        """int64 [layer, batch, kv_head]: rows each head holds now."""
        return np.stack([l.lengths.numpy() for l in self.layers])

    def bytes_held(self) -> int:
        """Bytes of K/V storage the cache holds (allocated, spare decode rows included)."""
        return sum(l.bytes_held() for l in self.layers)

    def bytes_used(self) -> int:
        """Bytes of the rows in use (sum of lengths x head_dim x 2 x element size)."""
        return sum(l.bytes_used() for l in self.layers)

    def reset(self):
        super().reset()
        self.sequences = []


def _attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    layer: Optional[KVTrimLayer] = getattr(key, "_kvtrim_layer", None)
    if layer is None:  # not a KVTrimCache (or no cache): plain SDPA
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if kwargs.get("softcap") is not None:
        raise ValueError("kvtrim: attention softcapping is not supported")
    layer._awaiting_attention = False
    layer._scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if layer.compressed:
        out = layer._decode(query)  # [B, Hq, D] float32
        B, Hq, D = out.shape
        return out.to(query.dtype).reshape(B, Hq, 1, D).transpose(1, 2), None
    out, w = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                    scaling=scaling, **kwargs)
    layer._compress(query, key, value, attention_mask)
    return out, w


def register() -> None:
    """Registers the "kvtrim" attention function (masks as "sdpa") with transformers; idempotent."""
    if ATTENTION_NAME not in ALL_ATTENTION_FUNCTIONS.valid_keys():
        AttentionInterface.register(ATTENTION_NAME, _attention)
    from transformers.masking_utils import AttentionMaskInterface
    if ATTENTION_NAME not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


@contextlib.contextmanager
def attention(model: Any) -> Iterator[Any]:
    """Runs `model` with kvtrim's attention function inside the block (restores the previous one)."""
    register()
    before = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION_NAME)
    try:
        yield model
    finally:
        model.set_attn_implementation(before)


@contextlib.contextmanager
def compress(model: Any, method: Union[str, _k.Method] = "snapkv", budget: Union[int, float] = 64,
             window: int = 8, profile: Optional[_k.Profile] = None, params: Optional[dict] = None,
             reserve: int = 64) -> Iterator[list]:
    """Inside the block, every `model.generate(...)` without its own cache gets a fresh KVTrimCache
    (compressed at the end of prefill). Yields the list of caches made, newest last."""
    caches: list = []
    _as_method(model, method, budget, window, profile, params)  # bad arguments fail here, not later
    original = model.generate
    name = cache_kwarg(model)

    @functools.wraps(original)
    def generate(*args, **kwargs):
        if kwargs.get("cache") is None and kwargs.get("past_key_values") is None:
            kwargs.pop("cache", None)
            kwargs.pop("past_key_values", None)
            cache = KVTrimCache(model, method, budget, window, profile, params, reserve)
            kwargs[name] = cache
            caches.append(cache)
        return original(*args, **kwargs)

    with attention(model):
        model.generate = generate
        try:
            yield caches
        finally:
            del model.generate
