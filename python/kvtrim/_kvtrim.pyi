"""
kvtrim: KV-cache compression at the end of prefill (C++ core of the kvtrim package)
"""

from collections.abc import Mapping, Sequence as _Sequence
import enum
from typing import Annotated

import numpy
from numpy.typing import NDArray


class Error(ValueError):
    pass

class ModelShape:
    """Layer and head counts of a model (GQA group = q_heads / kv_heads)."""

    def __init__(self, layers: int, q_heads: int, kv_heads: int, head_dim: int, context: int = 0) -> None:
        """
        Validated: layers, kv_heads, head_dim > 0 and q_heads a multiple of kv_heads; context 0 = unlimited.
        """

    @property
    def layers(self) -> int: ...

    @property
    def q_heads(self) -> int: ...

    @property
    def kv_heads(self) -> int: ...

    @property
    def head_dim(self) -> int: ...

    @property
    def context(self) -> int: ...

    @property
    def group(self) -> int:
        """Query heads per KV head."""

    def __eq__(self, arg: ModelShape, /) -> bool: ...

    def __repr__(self) -> str: ...

def kv_bytes(tokens_summed_over_heads: float, head_dim: int, bytes_per_value: int) -> float:
    """Bytes of K and V for this many (token, layer, KV head) rows."""

class TokenScores:
    """
    One score per (row, candidate token); a row is a KV head, or one shared set for the layer. Scores are sums over contributing query heads, so shards add up with accumulate().
    """

    @property
    def shared(self) -> bool: ...

    @property
    def kv_heads(self) -> int: ...

    @property
    def kv_head_offset(self) -> int: ...

    @property
    def candidates(self) -> int: ...

    @property
    def window(self) -> int: ...

    @property
    def entropy_sum(self) -> float: ...

    @entropy_sum.setter
    def entropy_sum(self, arg: float, /) -> None: ...

    @property
    def variance_sum(self) -> float: ...

    @variance_sum.setter
    def variance_sum(self, arg: float, /) -> None: ...

    @property
    def stat_heads(self) -> float: ...

    @stat_heads.setter
    def stat_heads(self, arg: float, /) -> None: ...

    @property
    def rows(self) -> int: ...

    @property
    def values(self) -> Annotated[NDArray[numpy.float32], dict(shape=(None, None))]:
        """float32 [rows, candidates], a writable view of the scores (no copy)."""

    def accumulate(self, other: TokenScores) -> None:
        """
        Adds another shard's partial scores of the same rows (a tensor-parallel all-reduce).
        """

class Selection:
    """What each KV head keeps: ascending token indices, window included."""

    def __init__(self, keep: _Sequence[_Sequence[int]]) -> None: ...

    @property
    def keep(self) -> list:
        """Per KV head, an int64 array of kept token indices (a copy)."""

    def lengths(self) -> Annotated[NDArray[numpy.int64], dict(shape=(None,))]: ...

    def total(self) -> int: ...

class Profile:
    """
    A model's offline artefacts: semantic-retrieval and retrieval-reasoning head scores [layer][q_head], layer eviction-error weights [layer], provenance.
    """

    def __init__(self) -> None: ...

    @property
    def model(self) -> str: ...

    @model.setter
    def model(self, arg: str, /) -> None: ...

    @property
    def model_sha256(self) -> str: ...

    @model_sha256.setter
    def model_sha256(self, arg: str, /) -> None: ...

    @property
    def layers(self) -> int: ...

    @layers.setter
    def layers(self, arg: int, /) -> None: ...

    @property
    def q_heads(self) -> int: ...

    @q_heads.setter
    def q_heads(self, arg: int, /) -> None: ...

    @property
    def kv_heads(self) -> int: ...

    @kv_heads.setter
    def kv_heads(self, arg: int, /) -> None: ...

    @property
    def semantic_retrieval(self) -> list[list[float]]: ...

    @semantic_retrieval.setter
    def semantic_retrieval(self, arg: _Sequence[_Sequence[float]], /) -> None: ...

    @property
    def retrieval_reasoning(self) -> list[list[float]]: ...

    @retrieval_reasoning.setter
    def retrieval_reasoning(self, arg: _Sequence[_Sequence[float]], /) -> None: ...

    @property
    def layer_error(self) -> list[float]: ...

    @layer_error.setter
    def layer_error(self, arg: _Sequence[float], /) -> None: ...

    @property
    def provenance(self) -> dict[str, str]: ...

    @provenance.setter
    def provenance(self, arg: Mapping[str, str], /) -> None: ...

    def has_semantic_retrieval(self) -> bool: ...

    def has_retrieval_reasoning(self) -> bool: ...

    def has_layer_error(self) -> bool: ...

    def validate(self) -> None:
        """Raises kvtrim.Error naming the bad field."""

    def check_matches(self, shape: ModelShape) -> None:
        """
        Raises kvtrim.Error if the profile was made for another model (layer or head counts).
        """

    def to_json(self) -> str:
        """The profile as JSON text (validated first)."""

    @staticmethod
    def from_json(text: str, source: str = 'profile') -> Profile: ...

    def __repr__(self) -> str: ...

def load_profile(path: str) -> Profile:
    """Reads and validates a kvtrim profile JSON file."""

def save_profile(profile: Profile, path: str) -> None:
    """Validates, then writes the whole file or nothing."""

def import_profile(layers: int, q_heads: int, kv_heads: int, *, compresskv_head_idx: str = '', compresskv_layer_score: str = '', headkv_scores: str = '', model: str = '') -> Profile:
    """
    A profile from the published artefacts: CompressKV <model>_head_idx.json (semantic retrieval), <model>_layer_score.jsonl (layer error), HeadKV <model>_retrieval_reasoning_heads.json (retrieval reasoning). Every id and size is checked.
    """

def layer_weights(rows: _Sequence[_Sequence[float]]) -> list[float]:
    """
    CompressKV's layer weights from per-dataset error totals (each row L1-normalised, averaged).
    """

class ParamKind(enum.Enum):
    """Kind of a method parameter."""

    integer = 0

    real = 1

    boolean = 2

    choice = 3

class ParamSpec:
    """One parameter of a method: key, kind, default (as text), range, help."""

    @property
    def key(self) -> str: ...

    @property
    def kind(self) -> ParamKind: ...

    @property
    def default(self) -> str: ...

    @property
    def min(self) -> float: ...

    @property
    def max(self) -> float: ...

    @property
    def choices(self) -> list[str]: ...

    @property
    def help(self) -> str: ...

    @property
    def odd(self) -> bool: ...

    def __repr__(self) -> str: ...

class MethodInfo:
    """
    One registry entry: name, paper, the four roles in words, its parameters and what it needs from a profile.
    """

    @property
    def name(self) -> str: ...

    @property
    def paper(self) -> str: ...

    @property
    def head_selector(self) -> str: ...

    @property
    def token_scorer(self) -> str: ...

    @property
    def budget_allocator(self) -> str: ...

    @property
    def params(self) -> list[ParamSpec]: ...

    @property
    def needs_semantic_retrieval(self) -> bool: ...

    @property
    def needs_retrieval_reasoning(self) -> bool: ...

    @property
    def needs_layer_error(self) -> bool: ...

    @property
    def cascades(self) -> bool: ...

    @property
    def needs_profile(self) -> bool: ...

    @property
    def needs_layer_inputs(self) -> bool: ...

    def __repr__(self) -> str: ...

def methods() -> list[MethodInfo]:
    """
    The method registry, in the docs' order (the one list every tool reads).
    """

def method_info(name: str) -> MethodInfo:
    """The registry entry of `name`; kvtrim.Error lists the accepted names."""

def method_names() -> list[str]:
    """Every method name, in the registry's order."""

class Method:
    """
    A configured method for one model shape: immutable, shareable. Build with Method(name, shape, budget=64, window=8, profile=None, **params); see methods().
    """

    def __init__(self, name: str, shape: ModelShape, budget: int | float = 64, window: int = 8, profile: Profile | None = None, params: Mapping[str, bool | int | float | str] = {}) -> None:
        """
        budget: an int is B, the average tokens kept per KV head per layer (window included);
        a float in (0, 1] is a ratio of the prompt. params: the method's own parameters by key
        (method_info(name).params). Raises kvtrim.Error for an unknown name, a bad parameter or a
        profile missing or made for another model.
        """

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> ModelShape: ...

    @property
    def params(self) -> dict[str, str]:
        """
        Every parameter's value as text, defaults included (what the method was built with).
        """

    @property
    def info(self) -> MethodInfo:
        """The method's registry entry."""

    @property
    def cascades(self) -> bool:
        """Whether compress_layer re-trims earlier layers (needs store=)."""

    @property
    def window(self) -> int:
        """Observation window w."""

    def planned_budgets(self, prompt_length: int) -> Annotated[NDArray[numpy.int64], dict(shape=(None, None))]:
        """
        int64 [layer, kv_head] tokens each head keeps for a prompt of this length, as planned before
        any data is seen (Ada-KV and CAKE depend on the data; this is their neutral shape).
        """

    def begin(self, prompt_length: int) -> Sequence:
        """One sequence's state; holds no global state."""

class Sequence:
    """
    One sequence's compression state (from Method.begin). Call per layer at the end of prefill; arrays are [kv_head, token, dim] keys/values (any strides, modified in place) and [q_head, window, dim] queries of the last `window` prompt positions.
    """

    @property
    def prompt_length(self) -> int: ...

    @property
    def budget_tokens(self) -> int:
        """B resolved for this prompt."""

    def score(self, layer: int, keys: NDArray, values: NDArray, queries: Annotated[NDArray, dict(writable=False)], *, length: int = 0, kv_head_offset: int = 0) -> TokenScores:
        """Token scores of one layer (reads queries and keys; writes nothing)."""

    def select(self, layer: int, scores: TokenScores) -> Selection:
        """Per-head budgets and top-k: what each KV head keeps."""

    def evict(self, selection: Selection, keys: NDArray, values: NDArray, queries: Annotated[NDArray, dict(writable=False)], *, length: int = 0, kv_head_offset: int = 0) -> Annotated[NDArray[numpy.int64], dict(shape=(None,))]:
        """
        Moves each head's kept rows to the front of its rows, in place; returns the new lengths.
        """

    def compress_layer(self, layer: int, keys: NDArray, values: NDArray, queries: Annotated[NDArray, dict(writable=False)], *, length: int = 0, kv_head_offset: int = 0, store: object | None = None) -> Annotated[NDArray[numpy.int64], dict(shape=(None,))]:
        """
        score -> select -> evict for one layer, in place: rows [0, lengths[h]) of head h of keys/values
        are the kept tokens in prompt order afterwards. Returns int64 lengths per KV head.
        Cascading methods (Method.info.cascades, CAKE) need `store`: an object with
          store.compacted(layer, kv_head) -> (keys, values) of an earlier layer's compacted rows
          store.resized(layer, lengths)    called when that layer was re-trimmed
        without it they raise kvtrim.Error.
        """

def ragged_decode_attention(q: Annotated[NDArray, dict(writable=False)], keys: Annotated[NDArray, dict(writable=False)], values: Annotated[NDArray, dict(writable=False)], offsets: Annotated[NDArray, dict(writable=False)], lengths: Annotated[NDArray, dict(writable=False)], scale: float, out: NDArray) -> None:
    """
    Decode attention of one new token per sequence over per-KV-head lengths.
    q, out: float32 [batch, q_head, dim] (C-contiguous; out may be q). keys, values: [rows, dim]
    (f32/f16/bf16, one row stride): head h of sequence b holds rows [offsets[b, h], offsets[b, h] +
    lengths[b, h]). Query head j uses KV head j // (q_heads // kv_heads). A length 0 gives zeros.
    """

class SemanticRetrievalScore:
    """
    CompressKV's semantic-retrieval head score, fed while decoding probe prompts: per trial, an answer span; per decode step and layer, the last query's attention rows [q_head, key].
    """

    def __init__(self, layers: int, q_heads: int) -> None: ...

    @property
    def layers(self) -> int: ...

    @property
    def q_heads(self) -> int: ...

    @property
    def trial_open(self) -> bool: ...

    @property
    def kept_trials(self) -> int: ...

    @property
    def discarded_trials(self) -> int: ...

    def begin_trial(self, span_tokens: _Sequence[int], span_begin: int) -> None: ...

    def on_step(self, layer: int, attn: Annotated[NDArray, dict(writable=False)], generated_token: int) -> None:
        """attn: float32 [q_head, key]."""

    def observe(self, layer: int, attn: Annotated[NDArray, dict(writable=False)]) -> None: ...

    def end_step(self, generated_token: int) -> None: ...

    def end_trial(self, keep: bool) -> None: ...

    def scores(self) -> list[list[float]]:
        """[layer][q_head] mean over kept trials."""

    def merge(self, other: SemanticRetrievalScore) -> None: ...

    def to_profile(self, profile: Profile) -> None: ...

class RetrievalReasoningScore:
    """
    HeadKV's retrieval-reasoning head score, fed like SemanticRetrievalScore.
    """

    def __init__(self, layers: int, q_heads: int) -> None: ...

    @property
    def layers(self) -> int: ...

    @property
    def q_heads(self) -> int: ...

    @property
    def trial_open(self) -> bool: ...

    @property
    def kept_trials(self) -> int: ...

    @property
    def discarded_trials(self) -> int: ...

    def begin_trial(self, span_begin: int, span_end: int, scale: float = 1.0) -> None: ...

    def on_step(self, layer: int, attn: Annotated[NDArray, dict(writable=False)]) -> None: ...

    def end_trial(self, keep: bool) -> None: ...

    def scores(self) -> list[list[float]]: ...

    def merge(self, other: RetrievalReasoningScore) -> None: ...

    def to_profile(self, profile: Profile) -> None: ...

class LayerEvictionError:
    """
    CompressKV's layer eviction error: per sample (dataset), per layer and step, the relative error between the attention output with the full and with the compressed cache.
    """

    def __init__(self, layers: int, eps: float = 1e-06) -> None: ...

    @property
    def layers(self) -> int: ...

    def begin_sample(self, dataset: str) -> None: ...

    def on_step(self, layer: int, out_full: Annotated[NDArray, dict(writable=False)], out_comp: Annotated[NDArray, dict(writable=False)]) -> None: ...

    def end_sample(self, keep: bool = True) -> None: ...

    def datasets(self) -> list[str]: ...

    def sums(self, dataset: str) -> list[float]: ...

    def weights(self) -> list[float]: ...

    def merge(self, other: LayerEvictionError) -> None: ...

    def to_profile(self, profile: Profile) -> None: ...
