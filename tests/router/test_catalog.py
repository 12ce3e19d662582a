"""Model id resolution and the seed's config examples (pure, no processes)."""

from __future__ import annotations

import tomllib

import pytest

from modelplex_router.catalog import Catalog, diff_catalog
from modelplex_spec import ConfigError, parse_config

SEED_ALIASES = {
    "llama3-3b": {"alias": "llama3-3b", "Plain": {"model_id": "meta-llama/Llama-3.2-3B-Instruct"}},
    "qwen3-4b": {"alias": "qwen3-4b", "Plain": {"model_id": "Qwen/Qwen3-4B"}, "in_situ_quant": "Q4K"},
}
SEED_TEXT = {
    "llama3-3b": {"Plain": {"model_id": "meta-llama/Llama-3.2-3B-Instruct"}},
    "qwen3-4b": {"Plain": {"model_id": "Qwen/Qwen3-4B"}, "in_situ_quant": "Q4K"},
}
SEED_MIXED = {
    "text-model": {"Plain": {"model_id": "meta-llama/Llama-3.2-3B-Instruct"}},
    "vision-model": {"VisionPlain": {"model_id": "google/gemma-3-4b-it"}},
}
SEED_GGUF = {
    "llama-gguf": {
        "GGUF": {
            "tok_model_id": "meta-llama/Llama-3.2-3B-Instruct",
            "quantized_model_id": "bartowski/Llama-3.2-3B-Instruct-GGUF",
            "quantized_filename": "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
        }
    }
}


@pytest.mark.parametrize(
    ("config", "ids"),
    [
        (SEED_ALIASES, ["llama3-3b", "qwen3-4b"]),
        (SEED_TEXT, ["meta-llama/Llama-3.2-3B-Instruct", "Qwen/Qwen3-4B"]),
        (SEED_MIXED, ["meta-llama/Llama-3.2-3B-Instruct", "google/gemma-3-4b-it"]),
        (SEED_GGUF, ["bartowski/Llama-3.2-3B-Instruct-GGUF"]),
    ],
)
def test_every_seed_example_loads_verbatim(config: dict, ids: list[str]) -> None:
    parsed = parse_config(config)
    catalog = Catalog.from_config(parsed)
    assert catalog.ids == ids
    assert parsed.default_model_id == ids[0]


def test_alias_pipeline_name_default_and_omitted_model() -> None:
    catalog = Catalog.from_config(parse_config(SEED_ALIASES))
    assert catalog.resolve_request_model("llama3-3b", "qwen3-4b") == "llama3-3b"
    assert catalog.resolve_request_model("meta-llama/Llama-3.2-3B-Instruct", "qwen3-4b") == "llama3-3b"
    assert catalog.resolve_request_model("default", "qwen3-4b") == "qwen3-4b"
    assert catalog.resolve_request_model(None, "qwen3-4b") == "qwen3-4b"
    assert catalog.resolve_request_model("llama3-3b-typo", "qwen3-4b") is None
    assert catalog.resolve_request_model(42, "qwen3-4b") is None
    # The object key is only a label.
    assert catalog.resolve_request_model("text-model", "qwen3-4b") is None


def test_same_model_twice_under_two_aliases() -> None:
    config = {
        "q4": {"alias": "qwen-q4", "Plain": {"model_id": "Qwen/Qwen3-4B"}, "in_situ_quant": "Q4K"},
        "q8": {"alias": "qwen-q8", "Plain": {"model_id": "Qwen/Qwen3-4B"}, "in_situ_quant": "Q8_0"},
    }
    catalog = Catalog.from_config(parse_config(config))
    assert catalog.ids == ["qwen-q4", "qwen-q8"]
    assert catalog.resolve_request_model("qwen-q8", "qwen-q4") == "qwen-q8"
    # The shared pipeline name goes to the first entry in file order.
    assert catalog.resolve_request_model("Qwen/Qwen3-4B", "qwen-q8") == "qwen-q4"


def test_an_alias_wins_over_another_entrys_pipeline_name() -> None:
    config = {
        "a": {"Plain": {"model_id": "org/a"}},
        "b": {"alias": "org/a", "Plain": {"model_id": "org/b"}},
    }
    with pytest.raises(ConfigError) as err:
        parse_config(config)
    assert "'a'" in str(err.value) and "'b'" in str(err.value)


def test_default_is_not_an_alias_and_duplicates_name_both() -> None:
    with pytest.raises(ConfigError, match="reserved"):
        parse_config({"x": {"alias": "default", "Plain": {"model_id": "org/x"}}})
    with pytest.raises(ConfigError) as err:
        parse_config({"first": {"Plain": {"model_id": "org/x"}}, "second": {"Plain": {"model_id": "org/x"}}})
    assert "'first'" in str(err.value) and "'second'" in str(err.value)


def test_default_model_id_by_alias_or_pipeline_name() -> None:
    assert parse_config(SEED_ALIASES, "qwen3-4b").default_model_id == "qwen3-4b"
    assert parse_config(SEED_ALIASES, "Qwen/Qwen3-4B").default_model_id == "qwen3-4b"
    with pytest.raises(ConfigError, match="not among the models"):
        parse_config(SEED_ALIASES, "nope")


@pytest.mark.parametrize(
    "text",
    [
        # mistral.rs's "serve multiple models" guide.
        'command = "serve"\ndefault_model_id = "google/gemma-4-E4B-it"\n[server]\nhost = "0.0.0.0"\nport = 1234\n'
        '[[models]]\nkind = "text"\nmodel_id = "Qwen/Qwen3-4B"\n[models.quantization]\nin_situ_quant = "4"\n'
        '[[models]]\nkind = "multimodal"\nmodel_id = "google/gemma-4-E4B-it"\n[models.quantization]\nin_situ_quant = "4"\n',
        # The CLI TOML reference's minimal example (current field name: quant).
        'command = "serve"\n[server]\nhost = "0.0.0.0"\nport = 1234\n[[models]]\nmodel_id = "Qwen/Qwen3-4B"\n'
        '[models.quantization]\nquant = "4"\n',
    ],
)
def test_mistralrs_toml_examples(text: str) -> None:
    parsed = parse_config(tomllib.loads(text))
    assert parsed.models[0].entry.api_id == "Qwen/Qwen3-4B"
    assert parsed.models[0].entry.in_situ_quant == "Q4K"
    if len(parsed.models) == 2:
        assert parsed.models[1].entry.kind.value == "VisionPlain"
        assert parsed.default_model_id == "google/gemma-4-E4B-it"


def test_relative_model_paths_follow_the_config_file(tmp_path) -> None:
    from modelplex_router.config_paths import rebase_relative_paths

    config = parse_config(
        {
            "chat": {"alias": "chat", "Plain": {"model_id": "./models/tiny"}},
            "emb": {"Embedding": {"model_id": "../shared/minilm"}},
            "hub": {"Plain": {"model_id": "org/model"}},
        }
    )
    rebased = rebase_relative_paths(config, tmp_path / "conf" / "config.json")
    entries = [m.entry for m in rebased.models]
    assert entries[0].selector.model_id == str(tmp_path / "conf" / "models" / "tiny")
    assert entries[1].selector.model_id == str(tmp_path / "shared" / "minilm")
    assert entries[2].selector.model_id == "org/model"
    # API ids stay as written, wherever the router starts.
    assert [e.api_id for e in entries] == ["chat", "../shared/minilm", "org/model"]
    assert rebased.default_model_id == "chat"


def test_diff_catalog_names_added_removed_and_changed_models() -> None:
    old_config = parse_config(SEED_ALIASES)
    old = Catalog.from_config(old_config)
    new_config = parse_config(
        {
            "qwen3-4b": {"alias": "qwen3-4b", "Plain": {"model_id": "Qwen/Qwen3-4B"}, "idle_timeout": 60},
            "gemma": {"alias": "gemma", "VisionPlain": {"model_id": "google/gemma-3-4b-it"}},
        }
    )
    catalog, change = diff_catalog(old, "llama3-3b", new_config)
    assert list(change.added) == ["gemma"] and change.removed == ["llama3-3b"]
    assert list(change.changed) == ["qwen3-4b"] and change.changed["qwen3-4b"].idle_timeout == 60
    assert catalog.ids == ["qwen3-4b", "gemma"] and catalog.resolve_name("google/gemma-3-4b-it") == "gemma"
    # The default model was removed: the config's default (its first model) takes over.
    assert change.default_id == "qwen3-4b" and not change.empty

    same, nothing = diff_catalog(old, "llama3-3b", old_config)
    assert nothing.empty and nothing.default_id == "llama3-3b" and same.ids == old.ids


def test_diff_catalog_follows_the_configured_default_unless_set_at_run_time() -> None:
    old = Catalog.from_config(parse_config(SEED_ALIASES))
    moved = parse_config(SEED_ALIASES, default_model_id="qwen3-4b")
    _, follows = diff_catalog(old, "llama3-3b", moved)
    assert follows.empty and follows.default_id == "qwen3-4b"
    _, kept = diff_catalog(old, "llama3-3b", moved, keep_default=True)
    assert kept.default_id == "llama3-3b"
    # A default chosen at run time goes when its model goes.
    without = parse_config({"qwen3-4b": SEED_ALIASES["qwen3-4b"]})
    _, gone = diff_catalog(old, "llama3-3b", without, keep_default=True)
    assert gone.default_id == "qwen3-4b" and gone.removed == ["llama3-3b"]
