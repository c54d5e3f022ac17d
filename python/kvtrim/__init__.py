"""kvtrim: KV-cache compression at the end of prefill, on NumPy arrays and PyTorch tensors.

Every array is used where it lies (no copy): keys and values of one layer are
``[kv_head, token, dim]`` views of any strides (a PyTorch ``k[b]`` of a ``[batch, kv_head,
token, dim]`` cache, a NumPy ``[token, kv_head, dim]`` buffer transposed, ...), float32,
float16 or bfloat16; the window queries are ``[q_head, window, dim]`` of the same dtype.
``compress_layer`` moves each KV head's kept rows to the front of its rows in that memory and
returns the new lengths.

    >>> import kvtrim, numpy as np
    >>> shape = kvtrim.ModelShape(layers=2, q_heads=6, kv_heads=2, head_dim=16)
    >>> m = kvtrim.Method("snapkv", shape, budget=32)
    >>> seq = m.begin(prompt_length=128)
    >>> k = np.random.randn(2, 128, 16).astype(np.float32); v = k.copy()
    >>> q = np.random.randn(6, 8, 16).astype(np.float32)
    >>> seq.compress_layer(0, k, v, q)          # k, v compacted in place
    array([32, 32])

``kvtrim.methods()`` lists the registry (names, papers, roles, parameters with defaults);
``kvtrim.transformers`` compresses a Hugging Face causal LM's cache at the end of prefill.
"""
from ._kvtrim import *  # noqa: F401,F403
from ._kvtrim import Error, Method, ModelShape, Profile, Selection, Sequence, TokenScores  # noqa: F401

__version__ = "0.1.0"
