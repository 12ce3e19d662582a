"""Embeddings through sentence-transformers' own modules: max pooling with a Dense head and no
normalization, last-token pooling on a decoder, Matryoshka ``dimensions``; the runtime's vectors equal
sentence-transformers' own for the same model."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from modelplex_runtime.engine.loader import load_engine
from modelplex_runtime.engine_api import EngineOptions
from modelplex_spec import ModelEntry

TEXTS = ["A man is playing a guitar.", "The stock market fell sharply today.", "hi"]


def _embed(engine: Any, texts: list[str], dimensions: int | None = None) -> list[list[float]]:
    out: list[Any] = []
    done = threading.Event()

    def on_done(result: Any) -> None:
        out.append(result)
        done.set()

    engine.embed(texts, on_done, dimensions)
    assert done.wait(60)
    assert not isinstance(out[0], BaseException), out[0]
    return out[0]


def _load(path: Path) -> Any:
    return load_engine(ModelEntry.model_validate({"Embedding": {"model_id": str(path)}}), EngineOptions(device="cpu"))


@pytest.fixture(scope="module")
def max_dense_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A tiny random BERT (all-MiniLM's tokenizer) + max pooling + a Dense head, no Normalize, and a config
    that says it was trained for Matryoshka dimensions 8 and 16."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    base = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "matryoshka_dimensions": [8, 16]}))
    st = SentenceTransformer(modules=[Transformer(str(base), max_seq_length=64), Pooling(32, "max"),
                                      Dense(32, 16, activation_function=torch.nn.Tanh())], device="cpu")
    out = tmp_path_factory.mktemp("st-max-dense")
    st.save(str(out))
    return out


@pytest.fixture(scope="module")
def last_token_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """The tiny Llama as a decoder embedding model with last-token pooling and normalization
    (the shape of Qwen3-Embedding or e5-mistral)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    st = SentenceTransformer(modules=[Transformer(str(tiny_llama_dir), max_seq_length=128),
                                      Pooling(64, "lasttoken"), Normalize()], device="cpu")
    out = tmp_path_factory.mktemp("st-last-token")
    st.save(str(out))
    return out


@pytest.mark.parametrize("which", ["max_dense_dir", "last_token_dir"])
def test_vectors_equal_sentence_transformers_own(which: str, request: pytest.FixtureRequest) -> None:
    from sentence_transformers import SentenceTransformer

    path = request.getfixturevalue(which)
    engine = _load(path)
    try:
        ours = torch.tensor(_embed(engine, TEXTS))
        theirs = SentenceTransformer(str(path), device="cpu").encode(TEXTS, convert_to_tensor=True)
        assert torch.allclose(ours, theirs.float().cpu(), atol=1e-5)
        norms = ours.norm(dim=-1)
        if which == "max_dense_dir":
            assert engine.info.extra["pooling"] == "max+dense" and engine.info.extra["embedding_size"] == 16
            assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)  # the model does not normalize
            assert torch.all(ours.abs() <= 1.0)  # the Dense head's tanh ran
        else:
            assert engine.info.extra["pooling"] == "lasttoken+normalize"
            assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
            # a normalizing model's shortened vectors are normalized again
            assert engine._shorten(torch.tensor([[3.0, 4.0, 12.0]]), 2).tolist() == [[0.6000000238418579, 0.800000011920929]]
    finally:
        engine.shutdown()


def test_matryoshka_dimensions(max_dense_dir: Path, minilm_dir: Path) -> None:
    engine = _load(max_dense_dir)
    try:
        assert engine.info.embedding_dimensions == (8, 16)
        full = torch.tensor(_embed(engine, TEXTS))
        short = torch.tensor(_embed(engine, TEXTS, 8))
        assert short.shape == (3, 8) and torch.allclose(short, full[:, :8])  # no Normalize: just the first 8
    finally:
        engine.shutdown()
    minilm = _load(minilm_dir)
    try:
        assert minilm.info.embedding_dimensions is None and minilm.info.extra["pooling"] == "mean+normalize"
    finally:
        minilm.shutdown()
