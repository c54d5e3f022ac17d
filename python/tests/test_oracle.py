"""Every method's selection through Python equals the C++ library's on the same arrays (oracle.cpp)."""
import subprocess

import numpy as np
import pytest

import kvtrim

L, HQ, HKV, D, N, W, B = 3, 4, 2, 16, 96, 8, 24  # the shape of tests/fixtures/profile_tiny.json


class Store:
    """Earlier layers' compacted rows for cascading methods (CAKE)."""

    def __init__(self, K, V, lengths):
        self.K, self.V, self.lengths = K, V, lengths

    def compacted(self, layer, kv_head):
        return self.K[layer][kv_head:kv_head + 1], self.V[layer][kv_head:kv_head + 1]

    def resized(self, layer, lengths):
        self.lengths[layer] = np.asarray(lengths).copy()


def run_oracle(oracle, tmp_path, name, K, V, Q, prof_path):
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    with open(inp, "wb") as f:
        f.write(np.array([L, HQ, HKV, D, N, W, B], np.int64).tobytes())
        for l in range(L):
            f.write(K[l].tobytes() + V[l].tobytes() + Q[l].tobytes())
    subprocess.run([str(oracle), name, str(inp), str(out), str(prof_path)], check=True)
    raw = out.read_bytes()
    pos = 0

    def take(count, dtype):
        nonlocal pos
        a = np.frombuffer(raw, dtype=dtype, count=count, offset=pos)
        pos += a.nbytes
        return a

    keeps = []
    for _ in range(L):
        layer = []
        for _ in range(HKV):
            c = int(take(1, np.int64)[0])
            layer.append(take(c, np.int64).copy())
        keeps.append(layer)
    final = []
    for _ in range(L):
        lengths = take(HKV, np.int64).copy()
        k = take(HKV * N * D, np.float32).reshape(HKV, N, D)
        v = take(HKV * N * D, np.float32).reshape(HKV, N, D)
        final.append((lengths, k, v))
    assert pos == len(raw)
    return keeps, final


# Methods that read layer inputs beyond K, V and the window (W_o, the attention's column sums, the
# pre-RoPE queries; docs/METHODS.md): the binding does not take those yet (docs/PYTHON.md).
NEEDS_LAYER_INPUTS = {i.name for i in kvtrim.methods() if i.needs_layer_inputs}


@pytest.mark.parametrize("name", [n for n in kvtrim.method_names() if n not in NEEDS_LAYER_INPUTS])
def test_python_equals_cpp(name, oracle, fixtures, tmp_path):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    K = [rng.standard_normal((HKV, N, D)).astype(np.float32) for _ in range(L)]
    V = [rng.standard_normal((HKV, N, D)).astype(np.float32) for _ in range(L)]
    Q = [rng.standard_normal((HQ, W, D)).astype(np.float32) for _ in range(L)]
    prof_path = fixtures / "profile_tiny.json"
    keeps, final = run_oracle(oracle, tmp_path, name, K, V, Q, prof_path)

    prof = kvtrim.load_profile(str(prof_path))
    m = kvtrim.Method(name, kvtrim.ModelShape(L, HQ, HKV, D), budget=B, window=W, profile=prof)
    # step by step (score / select / evict) on one copy ...
    seq = m.begin(N)
    K1, V1 = [k.copy() for k in K], [v.copy() for v in V]
    lengths1 = [None] * L
    store = Store(K1, V1, lengths1)
    for l in range(L):
        sel = seq.select(l, seq.score(l, K1[l], V1[l], Q[l]))
        for h in range(HKV):
            np.testing.assert_array_equal(sel.keep[h], keeps[l][h], err_msg=f"{name} layer {l} head {h}")
        lengths1[l] = seq.evict(sel, K1[l], V1[l], Q[l])
    # ... and in one call per layer on another (with the store for cascading methods)
    seq2 = m.begin(N)
    K2, V2 = [k.copy() for k in K], [v.copy() for v in V]
    lengths2 = [None] * L
    store2 = Store(K2, V2, lengths2)
    for l in range(L):
        lengths2[l] = seq2.compress_layer(l, K2[l], V2[l], Q[l], store=store2 if m.cascades else None)
    for l in range(L):
        want_len, want_k, want_v = final[l]
        np.testing.assert_array_equal(lengths2[l], want_len, err_msg=f"{name} layer {l}")
        for h in range(HKV):
            n = int(want_len[h])
            np.testing.assert_array_equal(K2[l][h, :n], want_k[h, :n])
            np.testing.assert_array_equal(V2[l][h, :n], want_v[h, :n])
    if not m.cascades:
        for l in range(L):
            np.testing.assert_array_equal(lengths1[l], final[l][0])
