"""kvtrim.transformers on a tiny random Llama (GQA 6/2) and, when cached, the real SmolLM2 GGUF."""
import os
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import kvtrim  # noqa: E402
import kvtrim.transformers as kt  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=1024)
    return LlamaForCausalLM(cfg).eval()


def batch(lengths, seed=0, vocab=128):
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    ids = torch.randint(3, vocab, (len(lengths), n), generator=g)
    mask = torch.zeros_like(ids)
    for b, l in enumerate(lengths):
        mask[b, n - l:] = 1  # left padding, as generate uses for decoder-only models
        ids[b, : n - l] = 0
    return ids, mask


def generate(model, ids, mask, n=12, **kw):
    return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                          pad_token_id=0, **kw)[:, ids.shape[1]:]


@pytest.mark.parametrize("method,budget", [("full", 64), ("snapkv", 200), ("adakv", 200), ("streaming", 300)])
def test_no_eviction_equals_plain_transformers(model, method, budget):
    ids, mask = batch([57, 40, 23])
    ref = generate(model, ids, mask)
    with kt.compress(model, method=method, budget=budget) as caches:
        out = generate(model, ids, mask)
    assert torch.equal(out, ref)
    cache = caches[0]
    assert cache.compressed
    # every head holds its own prompt tokens (padding dropped) + the decoded ones
    lens = cache.lengths()
    assert lens.shape == (2, 3, 2)
    assert (lens[:, 0] == 57 + 11).all() and (lens[:, 1] == 40 + 11).all() and (lens[:, 2] == 23 + 11).all()
    assert cache.get_seq_length() == 57 + 11


def test_attention_restored(model):
    before = model.config._attn_implementation
    with kt.compress(model, method="snapkv", budget=16):
        assert model.config._attn_implementation == "kvtrim"
    assert model.config._attn_implementation == before
    assert "generate" not in model.__dict__


@pytest.mark.parametrize("method", ["snapkv", "pyramidkv", "adakv", "streaming", "cake"])
def test_compressed_bytes_are_the_budget(model, method):
    ids, mask = batch([300, 200])
    B = 32
    cache = kt.KVTrimCache(model, method=method, budget=B)
    with kt.attention(model), torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, **{kt.cache_kwarg(model): cache})
    shape = cache.shape
    lens = cache.lengths()
    want = B * shape.layers * shape.kv_heads * shape.head_dim * 2 * 4  # per sequence, float32
    assert cache.bytes_held() == 2 * want  # two sequences, nothing else held
    assert cache.bytes_used() == cache.bytes_held()
    assert int(lens.sum()) == 2 * B * shape.layers * shape.kv_heads
    # decode continues past the compressed prefix, positions from the prompt on
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    with kt.attention(model), torch.no_grad():
        model(input_ids=nxt, attention_mask=torch.cat([mask, torch.ones_like(nxt)], 1), **{kt.cache_kwarg(model): cache})
    assert cache.get_seq_length() == 301
    assert (cache.lengths() == lens + 1).all()


def test_headwise_budgets_really_release(model):
    """Ada-KV gives heads different lengths; the cache holds exactly their sum, not max x heads."""
    ids, mask = batch([400], seed=3)
    cache = kt.KVTrimCache(model, method="adakv", budget=24)
    with kt.attention(model), torch.no_grad():
        model(input_ids=ids, attention_mask=mask, **{kt.cache_kwarg(model): cache})
    lens = cache.lengths()
    assert int(lens.sum()) == 24 * 2 * 2
    assert cache.bytes_held() == int(lens.sum()) * 16 * 2 * 4


def test_compressed_decode_matches_reference_attention(model):
    """The ragged decode over the kept rows equals eager attention over the same rows."""
    ids, mask = batch([120, 90], seed=5)
    cache = kt.KVTrimCache(model, method="snapkv", budget=20)
    with kt.attention(model), torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, **{kt.cache_kwarg(model): cache})
    layer = cache.layers[0]
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 6, 1, 16, generator=g)
    layer._scale = 0.25
    got = layer._decode(q)
    for b in range(2):
        for j in range(6):
            h = j // 3
            o, n = int(layer.offsets[b, h]), int(layer.lengths[b, h])
            p = torch.softmax(layer.keys[o:o + n] @ q[b, j, 0] * 0.25, 0)
            torch.testing.assert_close(got[b, j], p @ layer.values[o:o + n], rtol=1e-5, atol=1e-5)
    assert out.logits.shape[0] == 2


def test_bf16_model(model):
    from transformers import LlamaForCausalLM

    m16 = LlamaForCausalLM(model.config).eval()
    m16.load_state_dict(model.state_dict())
    m16 = m16.to(torch.bfloat16)
    ids, mask = batch([50, 33], seed=7)
    with kt.compress(m16, method="snapkv", budget=16) as caches:
        out = generate(m16, ids, mask, n=4)
    assert out.shape == (2, 4)
    assert caches[0].bytes_held() > 0 and caches[0].layers[0].keys.dtype == torch.bfloat16


def test_bad_arguments(model):
    with pytest.raises(ValueError):
        kt.KVTrimCache(model, method="nope")
    with pytest.raises(ValueError):
        kt.KVTrimCache(model, method="snapkv", budget=0)
    with pytest.raises(TypeError):
        kt.KVTrimCache(model, method="snapkv", budget="64")
    with pytest.raises(ValueError):
        with kt.compress(model, method="compresskv", budget=16):
            pass
    for name in ("criticalkv", "h2o", "expected_attention"):  # their layer inputs are not passed yet
        with pytest.raises(NotImplementedError, match=name):
            with kt.compress(model, method=name, budget=16):
                pass
    ids, mask = batch([20])
    cache = kt.KVTrimCache(model, method="snapkv", budget=8)
    with pytest.raises(RuntimeError, match="attention"):  # without kvtrim's attention function
        generate(model, ids, mask, n=2, **{kt.cache_kwarg(model): cache})
    ids, mask = batch([5])
    with pytest.raises(ValueError, match="window"):
        with kt.compress(model, method="snapkv", budget=16):
            generate(model, ids, mask, n=2)


GGUF = pathlib.Path(os.environ.get("KVTRIM_MODEL", pathlib.Path.home() / ".cache/kvtrim/SmolLM2-135M-Instruct.Q4_1.gguf"))


@pytest.mark.skipif(not GGUF.exists() or os.environ.get("KVTRIM_SKIP_GGUF") == "1", reason="model not cached")
def test_real_gguf_full_equals_plain():
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name)
    model = AutoModelForCausalLM.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name, dtype=torch.float32).eval()
    text = ("The quick brown fox jumps over the lazy dog. " * 20) + "The secret word is 'saffron'. What is the secret word?"
    enc = tok([text, "Write one sentence about the sea, the sky and the colour of the sand at dawn."], return_tensors="pt", padding=True, padding_side="left")
    ref = model.generate(**enc, max_new_tokens=8, do_sample=False)
    with kt.compress(model, method="full") as caches:
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert torch.equal(out, ref)
    with kt.compress(model, method="snapkv", budget=64) as caches:
        model.generate(**enc, max_new_tokens=8, do_sample=False)
    s = caches[0].shape
    assert caches[0].layers[0].lengths.shape == (2, s.kv_heads)
