"""The binding on NumPy arrays and PyTorch tensors: registry, zero-copy, dtypes, profiles, bad input."""
import json
import tracemalloc

import numpy as np
import pytest

import kvtrim

torch = pytest.importorskip("torch")

SHAPE = kvtrim.ModelShape(layers=2, q_heads=6, kv_heads=2, head_dim=16)


def rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_registry_lists_every_method():
    names = kvtrim.method_names()
    for n in ["full", "streaming", "snapkv", "pyramidkv", "adakv", "cake", "headkv", "compresskv"]:
        assert n in names
    assert [i.name for i in kvtrim.methods()] == names
    snap = kvtrim.method_info("snapkv")
    assert "2404.14469" in snap.paper and snap.token_scorer and snap.budget_allocator
    params = {p.key: p for p in snap.params}
    assert params["pooling"].default == "max" and params["pooling"].kind == kvtrim.ParamKind.choice
    assert params["kernel"].default == "7" and params["kernel"].odd
    assert kvtrim.method_info("compresskv").needs_profile and kvtrim.method_info("cake").cascades
    with pytest.raises(ValueError, match="accepted"):
        kvtrim.method_info("nope")


def test_method_params_from_the_registry():
    m = kvtrim.Method("pyramidkv", SHAPE, budget=32, params={"beta": 10, "pooling": "avg"})
    assert m.params["beta"] == "10" and m.params["pooling"] == "avg" and m.params["kernel"] == "7"
    assert m.info.name == "pyramidkv" and not m.cascades and m.window == 8
    assert kvtrim.Method("cake", SHAPE).cascades
    with pytest.raises(ValueError, match="kernel"):
        kvtrim.Method("snapkv", SHAPE, params={"kernel": 4})
    with pytest.raises(ValueError):
        kvtrim.Method("snapkv", SHAPE, params={"pooling": "median"})


@pytest.mark.parametrize("name, missing", [("criticalkv", "out_proj"), ("h2o", "attention_sums"),
                                           ("expected_attention", "prompt_queries")])
def test_methods_needing_layer_inputs_are_refused_by_name(name, missing):
    # the binding passes K, V and the window's queries only: scoring fails naming what is missing
    assert kvtrim.method_info(name).needs_layer_inputs
    assert not kvtrim.method_info("snapkv").needs_layer_inputs
    n = 64
    k, v, q = rand(2, n, 16), rand(2, n, 16, seed=1), rand(6, 8, 16, seed=2)
    seq = kvtrim.Method(name, SHAPE, budget=16).begin(n)
    with pytest.raises(kvtrim.Error, match=f"{name} needs layer_kv::{missing}"):
        seq.score(0, k, v, q)


def test_cascading_method_needs_a_store():
    n = 64
    k, v, q = rand(2, n, 16), rand(2, n, 16, seed=1), rand(6, 8, 16, seed=2)
    with pytest.raises(ValueError, match="store"):
        kvtrim.Method("cake", SHAPE, budget=16).begin(n).compress_layer(0, k, v, q)


def test_help_reads_well():
    assert "in place" in kvtrim.Sequence.compress_layer.__doc__
    assert "budget" in kvtrim.Method.__init__.__doc__


def test_compress_layer_numpy_in_place_no_copy():
    n, w, B = 1 << 15, 8, 64  # 8 MiB of keys
    k, v = rand(2, n, 16, seed=1), rand(2, n, 16, seed=2)
    q = rand(6, w, 16, seed=3)
    k0, v0 = k.copy(), v.copy()
    ptr = k.__array_interface__["data"][0]
    seq = kvtrim.Method("snapkv", SHAPE, budget=B).begin(n)
    sel = seq.select(0, seq.score(0, k, v, q))
    tracemalloc.start()
    lengths = seq.evict(sel, k, v, q)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 1024  # no second copy of the 8 MiB arrays
    assert k.__array_interface__["data"][0] == ptr
    assert list(lengths) == [B, B]
    for h in range(2):
        keep = sel.keep[h]
        assert len(keep) == B and keep[-w:].tolist() == list(range(n - w, n))
        np.testing.assert_array_equal(k[h, :B], k0[h, keep])  # the kept rows, moved in this memory
        np.testing.assert_array_equal(v[h, :B], v0[h, keep])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_torch_strided_in_place(dtype):
    n, w, B = 256, 8, 40
    g = torch.Generator().manual_seed(0)
    # an engine's [token, kv_head, dim] buffer, viewed as [kv_head, token, dim] without a copy
    kbuf = torch.randn(n, 2, 16, generator=g).to(dtype)
    vbuf = torch.randn(n, 2, 16, generator=g).to(dtype)
    q = torch.randn(6, w, 16, generator=g).to(dtype)
    k, v = kbuf.transpose(0, 1), vbuf.transpose(0, 1)
    assert not k.is_contiguous()
    k0, v0 = k.clone(), v.clone()
    ptr = kbuf.data_ptr()
    seq = kvtrim.Method("adakv", SHAPE, budget=B).begin(n)
    sel = seq.select(0, seq.score(0, k, v, q))
    lengths = seq.evict(sel, k, v, q)
    assert kbuf.data_ptr() == ptr
    assert int(lengths.sum()) == 2 * B
    for h in range(2):
        keep = torch.from_numpy(sel.keep[h])
        assert torch.equal(kbuf[: len(keep), h], k0[h, keep])
        assert torch.equal(vbuf[: len(keep), h], v0[h, keep])


def test_same_selection_across_layouts():
    n, w = 128, 8
    k, v, q = rand(2, n, 16, seed=4), rand(2, n, 16, seed=5), rand(6, w, 16, seed=6)
    m = kvtrim.Method("snapkv", SHAPE, budget=32)
    a = m.begin(n).select(0, m.begin(n).score(0, k, v, q))
    kt = np.ascontiguousarray(k.transpose(1, 0, 2)).transpose(1, 0, 2)  # token-major memory
    b = m.begin(n).select(0, m.begin(n).score(0, kt, v.copy(), q))
    for x, y in zip(a.keep, b.keep):
        np.testing.assert_array_equal(x, y)


def test_scores_are_a_view_and_accumulate():
    n, w = 64, 8
    k, v, q = rand(2, n, 16), rand(2, n, 16, seed=1), rand(6, w, 16, seed=2)
    seq = kvtrim.Method("snapkv", SHAPE, budget=16).begin(n)
    s = seq.score(0, k, v, q)
    assert s.values.shape == (2, n - w) and s.values.dtype == np.float32
    before = s.values.copy()
    s.accumulate(s)
    np.testing.assert_allclose(s.values, 2 * before)


def test_planned_budgets_hold_the_budget():
    for name in ["snapkv", "streaming", "pyramidkv", "adakv", "random"]:
        b = kvtrim.Method(name, SHAPE, budget=32).planned_budgets(512)
        assert b.shape == (2, 2) and b.dtype == np.int64
        assert int(b.sum()) == 32 * 2 * 2, name
    r = kvtrim.Method("snapkv", SHAPE, budget=0.25).planned_budgets(400)
    assert (r == 100).all()


def test_ragged_decode_matches_torch():
    g = torch.Generator().manual_seed(0)
    B, H, G, D = 2, 2, 3, 16
    lengths = torch.tensor([[5, 9], [0, 7]], dtype=torch.int64)
    offsets = torch.tensor([[0, 5], [14, 14]], dtype=torch.int64)
    keys, values = torch.randn(21, D, generator=g), torch.randn(21, D, generator=g)
    q = torch.randn(B, H * G, D, generator=g)
    out = torch.empty_like(q)
    kvtrim.ragged_decode_attention(q, keys, values, offsets, lengths, 0.25, out)
    for b in range(B):
        for j in range(H * G):
            h = j // G
            o, n = int(offsets[b, h]), int(lengths[b, h])
            if n == 0:
                assert torch.all(out[b, j] == 0)
                continue
            p = torch.softmax(keys[o:o + n] @ q[b, j] * 0.25, 0)
            torch.testing.assert_close(out[b, j], p @ values[o:o + n], rtol=1e-5, atol=1e-5)


def test_profiles_load_save_import(fixtures, tmp_path):
    p = kvtrim.load_profile(str(fixtures / "profile_tiny.json"))
    assert (p.layers, p.q_heads) == (3, 4)
    out = tmp_path / "p.json"
    kvtrim.save_profile(p, str(out))
    again = kvtrim.load_profile(str(out))
    assert again.semantic_retrieval == p.semantic_retrieval and again.layer_error == p.layer_error
    imp = kvtrim.import_profile(3, 4, p.kv_heads, compresskv_head_idx=str(fixtures / "tiny_head_idx.json"),
                                compresskv_layer_score=str(fixtures / "tiny_layer_score.jsonl"),
                                headkv_scores=str(fixtures / "tiny_retrieval_reasoning_heads.json"),
                                model=p.model)
    assert imp.semantic_retrieval == p.semantic_retrieval
    assert imp.retrieval_reasoning == p.retrieval_reasoning
    assert imp.layer_error == p.layer_error
    with pytest.raises(ValueError, match="head"):
        kvtrim.import_profile(3, 3, 1, compresskv_head_idx=str(fixtures / "tiny_head_idx.json"))
    with pytest.raises(ValueError, match="profile"):
        kvtrim.Method("compresskv", SHAPE, budget=16, profile=p)  # made for another model
    assert json.loads(p.to_json())["format"] == "kvtrim-profile"


def test_calibration_accumulators():
    s = kvtrim.SemanticRetrievalScore(2, 4)
    s.begin_trial([7, 8], 3)
    attn = np.zeros((4, 10), np.float32)
    attn[1, 3:5] = 0.5
    s.on_step(0, attn, 7)
    s.end_trial(True)
    sc = s.scores()
    assert sc[0][1] == pytest.approx(1.0) and sc[0][0] == 0
    r = kvtrim.RetrievalReasoningScore(2, 4)
    r.begin_trial(3, 5)
    r.on_step(1, attn)
    r.end_trial(True)
    assert len(r.scores()) == 2
    e = kvtrim.LayerEvictionError(2)
    e.begin_sample("x")
    e.on_step(0, np.ones(8, np.float32), np.ones(8, np.float32))
    e.on_step(1, np.ones(8, np.float32), np.zeros(8, np.float32))
    e.end_sample()
    w = e.weights()
    assert w[1] > w[0]
    with pytest.raises(TypeError):
        e.on_step(0, np.ones(8), np.ones(8))


def _bad_calls():
    n, w = 64, 8
    k, v, q = rand(2, n, 16), rand(2, n, 16, seed=1), rand(6, w, 16, seed=2)
    seq = kvtrim.Method("snapkv", SHAPE, budget=16).begin(n)
    ro = k.copy()
    ro.flags.writeable = False
    return {
        "float64": lambda: seq.compress_layer(0, k.astype(np.float64), v, q),
        "int32": lambda: seq.compress_layer(0, k.astype(np.int32), v, q),
        "mixed dtypes": lambda: seq.compress_layer(0, k, v, q.astype(np.float16)),
        "rank 2": lambda: seq.compress_layer(0, k[0], v, q),
        "values shape": lambda: seq.compress_layer(0, k, v[:, :32], q),
        "negative strides": lambda: seq.compress_layer(0, k[:, ::-1], v, q),
        "broadcast": lambda: seq.compress_layer(0, np.broadcast_to(k[:, :1], k.shape), v, q),
        "aliasing": lambda: seq.compress_layer(0, k, k, q),
        "GQA heads": lambda: seq.compress_layer(0, k, v, q[:5]),
        "queries dim": lambda: seq.compress_layer(0, k, v, q[:, :, :8]),
        "window > prompt": lambda: kvtrim.Method("snapkv", SHAPE, budget=16, window=65).begin(64),
        "layer": lambda: seq.compress_layer(5, k, v, q),
        "prompt length": lambda: seq.compress_layer(0, k[:, :32], v[:, :32], q),
        "read-only": lambda: seq.compress_layer(0, ro, v, q),
        "meta device": lambda: seq.compress_layer(0, torch.empty(2, n, 16, device="meta"), v, q),
        "list": lambda: seq.compress_layer(0, k.tolist(), v, q),
        "budget 0": lambda: kvtrim.Method("snapkv", SHAPE, budget=0),
        "budget -3": lambda: kvtrim.Method("snapkv", SHAPE, budget=-3),
        "ratio 1.5": lambda: kvtrim.Method("snapkv", SHAPE, budget=1.5),
        "ratio 0.0": lambda: kvtrim.Method("snapkv", SHAPE, budget=0.0),
        "unknown method": lambda: kvtrim.Method("nope", SHAPE),
        "unknown param": lambda: kvtrim.Method("snapkv", SHAPE, params={"bogus": 1}),
        "no profile": lambda: kvtrim.Method("compresskv", SHAPE),
        "shape": lambda: kvtrim.ModelShape(2, 5, 2, 16),
        "empty prompt": lambda: kvtrim.Method("snapkv", SHAPE).begin(0),
        "ragged dtype": lambda: kvtrim.ragged_decode_attention(np.zeros((1, 6, 16)), k[0], v[0], np.zeros((1, 2), np.int64),
                                                               np.zeros((1, 2), np.int64), 1.0, np.zeros((1, 6, 16), np.float32)),
        "ragged bounds": lambda: kvtrim.ragged_decode_attention(np.zeros((1, 6, 16), np.float32), k[0], v[0],
                                                                np.array([[0, 60]], np.int64), np.array([[4, 10]], np.int64),
                                                                1.0, np.zeros((1, 6, 16), np.float32)),
    }


@pytest.mark.parametrize("case", sorted(_bad_calls()))
def test_bad_input_raises(case):
    with pytest.raises((ValueError, TypeError)):
        _bad_calls()[case]()


def test_stubs_cover_the_module(root):
    import kvtrim._kvtrim as ext

    stub = (root / "python" / "kvtrim" / "_kvtrim.pyi").read_text()
    for name in dir(ext):
        if not name.startswith("_"):
            assert (f"class {name}" in stub or f"def {name}(" in stub), f"{name} missing from _kvtrim.pyi (regenerate: python -m nanobind.stubgen -m kvtrim._kvtrim -o python/kvtrim/_kvtrim.pyi)"
