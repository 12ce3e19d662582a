"""``modelplex validate``: the table, the JSON output and the full problem list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelplex.cli import main

JSON_CONFIG = {
    "llama": {"alias": "llama3-3b", "Plain": {"model_id": "meta-llama/Llama-3.2-3B-Instruct"}},
    "qwen": {"Plain": {"model_id": "Qwen/Qwen3-4B"}, "in_situ_quant": "FP8", "engine": "vllm"},
    "gguf": {"GGUF": {"quantized_model_id": "bartowski/Llama-GGUF", "quantized_filename": "m.Q4_K_M.gguf"}},
}

TOML_CONFIG = """
default_model_id = "emb"

[[models]]
kind = "text"
model_id = "org/text-model"

[[models]]
kind = "embedding"
model_id = "sentence-transformers/all-MiniLM-L6-v2"
alias = "emb"
"""


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


def test_table_lists_api_id_canonical_name_kind_engine_label_and_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "models.json", json.dumps(JSON_CONFIG))
    assert main(["validate", "--file", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["API", "ID", "CANONICAL", "NAME", "KIND", "ENGINE", "LABEL"]
    assert lines[1].split() == [
        "llama3-3b",
        "meta-llama/Llama-3.2-3B-Instruct",
        "Plain",
        "transformers",
        "llama",
        "(default)",
    ]
    assert lines[2].split() == ["Qwen/Qwen3-4B", "Qwen/Qwen3-4B", "Plain", "vllm", "qwen"]
    assert lines[3].split() == ["bartowski/Llama-GGUF", "bartowski/Llama-GGUF", "GGUF", "transformers", "gguf"]


def test_default_by_pipeline_name_and_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "models.json", json.dumps(JSON_CONFIG))
    argv = ["validate", "-f", str(path), "--default-model-id", "meta-llama/Llama-3.2-3B-Instruct", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True
    assert out["default_model_id"] == "llama3-3b"
    assert out["models"][1] == {
        "api_id": "Qwen/Qwen3-4B",
        "canonical_name": "Qwen/Qwen3-4B",
        "kind": "Plain",
        "engine": "vllm",
        "label": "qwen",
        "default": False,
    }


def test_toml_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "models.toml", TOML_CONFIG)
    assert main(["validate", "--file", str(path), "--json"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert [(m["api_id"], m["kind"], m["default"]) for m in models] == [
        ("org/text-model", "Plain", False),
        ("emb", "Embedding", True),
    ]


def test_every_problem_is_listed_and_exit_is_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = {
        "a": {"Plain": {"model_id": "x"}, "in_situ_quant": "Q99"},
        "b": {"Speech": {"model_id": "s"}},
        "c": {"Plain": {"model_id": "dup"}},
        "d": {"Plain": {"model_id": "dup"}},
    }
    path = write(tmp_path, "bad.json", json.dumps(bad))
    assert main(["validate", "--file", str(path), "--default-model-id", "nope"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    problems = captured.err.splitlines()
    assert problems[0].endswith("4 problem(s):")
    assert "unknown in_situ_quant 'Q99'" in problems[1]
    assert "'Speech' is not supported" in problems[2]
    assert "both use the API id 'dup'" in problems[3]
    assert "default model 'nope'" in problems[4]


def test_what_the_engine_cannot_honour_is_a_problem_naming_field_and_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = {
        "v": {"VisionPlain": {"model_id": "v", "max_edge": 512}, "engine": "vllm"},
        "q": {"Plain": {"model_id": "q", "max_seq_len": 4096}, "engine": "vllm", "engine_args": ["--max-model-len", "8192"]},
        "t": {"Plain": {"model_id": "t"}, "engine_args": ["--port", "1"]},
    }
    path = write(tmp_path, "bad.json", json.dumps(bad))
    assert main(["validate", "--file", str(path)]) == 1
    problems = capsys.readouterr().err.splitlines()
    assert problems[0].endswith("3 problem(s):")
    assert "model 'v': VisionPlain.max_edge has no equivalent in engine vllm" in problems[1]
    assert "model 'q': engine_args: --max-model-len is also set from Plain.max_seq_len for engine vllm" in problems[2]
    assert "model 't': engine_args: --port is reserved: modelplex sets it for engine transformers" in problems[3]


def test_problems_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "bad.toml", "[[models]]\nkind = 'speech'\nmodel_id = 'x'\n")
    assert main(["validate", "--file", str(path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False
    assert "unknown kind 'speech'" in out["problems"][0]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.json", None, "cannot read config file"),
        ("broken.json", "{not json", "not valid JSON"),
        ("broken.toml", "[[models]\n", "not valid TOML"),
        ("empty.json", "{}", "the config defines no models"),
    ],
)
def test_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert main(["validate", "--file", str(path)]) == 1
    assert message in capsys.readouterr().err
