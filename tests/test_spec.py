"""The model-entry schema and config parsing (pure, no torch)."""

from __future__ import annotations

import json

import pytest

from modelplex_spec import ConfigError, ModelEntry, ModelKind, load_config_file, parse_config, resolve_quant
from modelplex_spec.quant import QuantScheme


def test_api_id_is_alias_else_pipeline_name() -> None:
    plain = ModelEntry.model_validate({"Plain": {"model_id": "org/m"}})
    aliased = ModelEntry.model_validate({"alias": "m", "Plain": {"model_id": "org/m"}})
    gguf = ModelEntry.model_validate(
        {"GGUF": {"quantized_model_id": "org/m-GGUF", "quantized_filename": "m.gguf", "tok_model_id": "org/m"}}
    )
    assert (plain.api_id, plain.pipeline_name) == ("org/m", "org/m")
    assert (aliased.api_id, aliased.pipeline_name) == ("m", "org/m")
    assert (gguf.api_id, gguf.kind) == ("org/m-GGUF", ModelKind.GGUF)


def test_multimodal_plain_is_vision_plain() -> None:
    entry = ModelEntry.model_validate({"MultimodalPlain": {"model_id": "google/gemma-3-4b-it"}})
    assert entry.kind is ModelKind.VISION_PLAIN


@pytest.mark.parametrize("kind", ["DiffusionPlain", "Speech", "XLora", "Lora"])
def test_unsupported_kinds_name_what_is_supported(kind: str) -> None:
    with pytest.raises(ValueError, match="supported kinds: Plain, VisionPlain"):
        ModelEntry.model_validate({kind: {"model_id": "x"}})


def test_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one kind"):
        ModelEntry.model_validate({"alias": "x"})
    with pytest.raises(ValueError, match="got Plain, Embedding"):
        ModelEntry.model_validate({"Plain": {"model_id": "a"}, "Embedding": {"model_id": "b"}})


def test_default_cannot_be_alias() -> None:
    with pytest.raises(ValueError, match="reserved"):
        ModelEntry.model_validate({"alias": "default", "Plain": {"model_id": "a"}})


def test_dtype_synonyms_and_ttl() -> None:
    entry = ModelEntry.model_validate({"Plain": {"model_id": "a", "dtype": "bfloat16"}, "ttl": 30})
    assert entry.dtype == "bf16"
    assert entry.idle_timeout == 30


def test_quant_names_map_to_real_schemes() -> None:
    assert resolve_quant("Q4K") is QuantScheme.INT4_WEIGHT_ONLY
    assert resolve_quant("q8_0") is QuantScheme.INT8_WEIGHT_ONLY
    assert resolve_quant("HQQ8") is QuantScheme.INT8_WEIGHT_ONLY
    assert resolve_quant("FP8") is QuantScheme.FP8_WEIGHT_ONLY
    with pytest.raises(ValueError, match="unknown in_situ_quant"):
        ModelEntry.model_validate({"Plain": {"model_id": "a"}, "in_situ_quant": "Q42"})


def test_config_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "a": {"Speech": {"model_id": "x"}},
                "b": {"Plain": {"model_id": "same"}},
                "c": {"Plain": {"model_id": "same"}},
                "d": {"Plain": {"model_id": "y", "bogus": 1}},
            }
        )
    text = "\n".join(info.value.problems)
    assert "'Speech' is not supported" in text
    assert "models 'b' and 'c' both use the API id 'same'" in text
    assert "bogus" in text
    assert len(info.value.problems) == 3


def test_same_model_twice_with_aliases() -> None:
    cfg = parse_config(
        {
            "q4": {"alias": "qwen-q4", "Plain": {"model_id": "Qwen/Qwen3-4B"}, "in_situ_quant": "Q4K"},
            "q8": {"alias": "qwen-q8", "Plain": {"model_id": "Qwen/Qwen3-4B"}, "in_situ_quant": "Q8_0"},
        }
    )
    assert [m.entry.api_id for m in cfg.models] == ["qwen-q4", "qwen-q8"]
    assert cfg.default_model_id == "qwen-q4"


def test_default_model_by_alias_or_pipeline_name() -> None:
    raw = {
        "a": {"Plain": {"model_id": "org/a"}},
        "b": {"alias": "bee", "Plain": {"model_id": "org/b"}},
    }
    assert parse_config(raw).default_model_id == "org/a"
    assert parse_config(raw, "bee").default_model_id == "bee"
    assert parse_config(raw, "org/b").default_model_id == "bee"
    with pytest.raises(ConfigError, match="default model 'nope'"):
        parse_config(raw, "nope")


def test_json_and_toml_files(tmp_path) -> None:
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"x": {"Plain": {"model_id": "org/x"}}}))
    assert load_config_file(j).default_model_id == "org/x"
    t = tmp_path / "c.toml"
    t.write_text(
        'command = "serve"\ndefault_model_id = "org/y"\n'
        '[[models]]\nkind = "text"\nmodel_id = "org/x"\n'
        '[[models]]\nkind = "text"\nmodel_id = "org/y"\n[models.quantization]\nin_situ_quant = "4"\n'
    )
    cfg = load_config_file(t)
    assert cfg.default_model_id == "org/y"
    assert cfg.models[1].entry.in_situ_quant == "Q4K"
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config_file(bad)


def test_engine_settings_in_json_and_toml(tmp_path) -> None:
    entry = ModelEntry.model_validate({"Plain": {"model_id": "org/x"}})
    assert (entry.engine, entry.engine_args, entry.tool_call_parser) == ("transformers", None, None)
    raw = {"x": {"Plain": {"model_id": "org/x"}, "engine": "vllm", "engine_args": ["--enforce-eager"],
                 "tool_call_parser": "hermes"}}
    parsed = parse_config(raw).models[0].entry
    assert (parsed.engine, parsed.engine_args, parsed.tool_call_parser) == ("vllm", ["--enforce-eager"], "hermes")
    with pytest.raises(ConfigError, match="engine"):
        parse_config({"x": {"Plain": {"model_id": "org/x"}, "engine": "llama.cpp"}})
    with pytest.raises(ConfigError, match="tool_call_parser"):
        parse_config({"x": {"Plain": {"model_id": "org/x"}, "tool_call_parser": "nope"}})
    t = tmp_path / "c.toml"
    t.write_text('[[models]]\nkind = "text"\nmodel_id = "org/x"\nengine = "vllm"\nengine_args = ["--seed", "1"]\n')
    assert load_config_file(t).models[0].entry.engine_args == ["--seed", "1"]
