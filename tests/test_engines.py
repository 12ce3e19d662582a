"""The engine mappings (pure): an entry -> each engine's command line, what an engine cannot honour, and
how vLLM's failure reason is read from its output."""

from __future__ import annotations

import json

import pytest

from modelplex_spec import ConfigError, ModelEntry, parse_config
from modelplex_spec.engines import TRANSFORMERS, VLLM, engine_for, runtime_entry_json, vllm_failure_reason


def _entry(**data: object) -> ModelEntry:
    return ModelEntry.model_validate(data)


def _vllm_args(entry: ModelEntry, gpus: int = 0) -> list[str]:
    return VLLM.launch(entry, host="127.0.0.1", port=8000, served_model_name=entry.api_id, gpus=gpus).args


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_transformers_is_the_default_and_runs_the_runtime_as_before() -> None:
    entry = _entry(Plain={"model_id": "/m"}, alias="m", kubernetes={"resources": {"gpus": 1}})
    assert engine_for(entry) is TRANSFORMERS
    launch = TRANSFORMERS.launch(entry, host="0.0.0.0", port=8000, served_model_name="m")
    assert launch.module == "modelplex_runtime"
    assert launch.args == [
        "--host", "0.0.0.0", "--port", "8000", "--model-json", runtime_entry_json(entry), "--served-model-name", "m",
    ]  # fmt: skip
    # The runtime reads the entry without the Kubernetes-only settings.
    assert json.loads(runtime_entry_json(entry)) == {"Plain": {"model_id": "/m"}, "alias": "m"}


def test_transformers_engine_args_are_runtime_flags_appended_last() -> None:
    entry = _entry(Plain={"model_id": "/m"}, engine_args=["--max-batch-size", "8", "--cpu-threads=2"])
    args = TRANSFORMERS.launch(entry, host="h", port=1, served_model_name="m").args
    assert args[-3:] == ["--max-batch-size", "8", "--cpu-threads=2"]
    assert "engine_args" not in json.loads(_value(args, "--model-json"))


@pytest.mark.parametrize("flag", ["--port", "--model-json=x", "--served_model_name", "--spare", "--model-file"])
def test_transformers_refuses_engine_args_that_modelplex_sets(flag: str) -> None:
    with pytest.raises(ValueError, match="is reserved: modelplex sets it for engine transformers"):
        _entry(Plain={"model_id": "/m"}, engine_args=[flag, "1"])


def test_vllm_maps_a_plain_entry() -> None:
    entry = _entry(
        Plain={"model_id": "org/m", "dtype": "bf16", "max_seq_len": 4096, "revision": "v2", "hf_cache_path": "/c"},
        alias="chat",
        engine="vllm",
        chat_template="/t/chat.jinja",
        in_situ_quant="FP8",
        tool_call_parser="hermes",
        engine_args=["--gpu-memory-utilization", "0.5"],
    )
    launch = VLLM.launch(entry, host="0.0.0.0", port=8000, served_model_name="chat")
    assert launch.module == "vllm.entrypoints.openai.api_server"
    assert launch.args == [
        "--model", "org/m", "--served-model-name", "chat", "--host", "0.0.0.0", "--port", "8000",
        "--revision", "v2", "--download-dir", "/c", "--dtype", "bfloat16", "--max-model-len", "4096",
        "--chat-template", "/t/chat.jinja", "--quantization", "fp8_per_tensor",
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--disable-uvicorn-access-log",
        "--gpu-memory-utilization", "0.5",
    ]  # fmt: skip
    assert launch.env == {"PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize(("dtype", "flag"), [("auto", None), ("f16", "float16"), ("float32", "float32")])
def test_vllm_dtype(dtype: str, flag: str | None) -> None:
    args = _vllm_args(_entry(Plain={"model_id": "m", "dtype": dtype}, engine="vllm"))
    assert (_value(args, "--dtype") if "--dtype" in args else None) == flag


def test_vllm_template_a_literal_or_jinja_explicit_first() -> None:
    literal = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    assert _value(_vllm_args(_entry(Plain={"model_id": "m"}, engine="vllm", chat_template=literal)), "--chat-template") == literal
    both = _entry(Plain={"model_id": "m"}, engine="vllm", chat_template=literal, jinja_explicit="/x.jinja")
    assert _value(_vllm_args(both), "--chat-template") == "/x.jinja"


def test_vllm_gguf_file_and_tokenizer() -> None:
    entry = _entry(
        GGUF={"quantized_model_id": "/models/q/", "quantized_filename": "m-Q4_K_M.gguf", "tok_model_id": "org/m"},
        engine="vllm",
    )
    args = _vllm_args(entry)
    assert _value(args, "--model") == "/models/q/m-Q4_K_M.gguf"
    assert _value(args, "--tokenizer") == "org/m"
    assert _value(args, "--served-model-name") == "/models/q/"


def test_vllm_embedding_and_vision() -> None:
    assert _value(_vllm_args(_entry(Embedding={"model_id": "e"}, engine="vllm")), "--runner") == "pooling"
    vision = _vllm_args(_entry(VisionPlain={"model_id": "v", "max_num_images": 3}, engine="vllm"))
    assert json.loads(_value(vision, "--limit-mm-per-prompt")) == {"image": 3}
    assert "--runner" not in vision


def test_vllm_tensor_parallel_from_devices_or_the_pods_gpus() -> None:
    devices = _entry(Plain={"model_id": "m"}, engine="vllm", num_device_layers=["0:16", "1:16"])
    assert _value(_vllm_args(devices), "--tensor-parallel-size") == "2"
    assert "CUDA_VISIBLE_DEVICES" not in VLLM.env(devices)
    pod = _entry(Plain={"model_id": "m"}, engine="vllm", kubernetes={"resources": {"gpus": 4}})
    assert _value(_vllm_args(pod, gpus=4), "--tensor-parallel-size") == "4"
    assert "--tensor-parallel-size" not in _vllm_args(pod, gpus=0)  # the local backend has no pod GPUs
    assert "--tensor-parallel-size" not in _vllm_args(_entry(Plain={"model_id": "m"}, engine="vllm", num_device_layers=["32"]))
    other = _entry(Plain={"model_id": "m"}, engine="vllm", num_device_layers=["2:8", "3:8"])
    assert VLLM.env(other)["CUDA_VISIBLE_DEVICES"] == "2,3"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"VisionPlain": {"model_id": "v", "max_edge": 512}}, "VisionPlain.max_edge has no equivalent in engine vllm"),
        ({"Plain": {"model_id": "m", "tokenizer_json": "/t/tokenizer.json"}}, "Plain.tokenizer_json has no equivalent"),
        ({"Plain": {"model_id": "m"}, "in_situ_quant": "Q4K"}, "in_situ_quant Q4K has no equivalent in engine vllm"),
        ({"Plain": {"model_id": "m"}, "in_situ_quant": "Q8_0"}, "vLLM quantizes at load time to FP8 only"),
        ({"Plain": {"model_id": "m"}, "chat_template": "/t/tokenizer_config.json"}, "a .json chat_template"),
        ({"Plain": {"model_id": "m"}, "num_device_layers": ["0:20", "1:12"]}, "unequal layer counts"),
        ({"Plain": {"model_id": "m"}, "num_device_layers": ["0:8", "0:8"]}, "names a device twice"),
        (
            {"Plain": {"model_id": "m"}, "num_device_layers": ["0:8", "1:8"], "kubernetes": {"resources": {"gpus": 4}}},
            "names 2 device(s) but kubernetes.resources.gpus is 4",
        ),
        ({"Plain": {"model_id": "m", "max_seq_len": 8}, "engine_args": ["--max_model_len=16"]}, "--max-model-len is also set from Plain.max_seq_len"),
        ({"Plain": {"model_id": "m"}, "num_device_layers": ["0:8", "1:8"], "engine_args": ["-tp", "2"]}, "--tensor-parallel-size is also set from num_device_layers"),
        ({"Plain": {"model_id": "m"}, "engine_args": ["--port", "9"]}, "--port is reserved: modelplex sets it for engine vllm"),
        ({"Plain": {"model_id": "m"}, "engine_args": ["--served-model-name", "x"]}, "--served-model-name is reserved"),
    ],
)
def test_vllm_refuses_what_it_cannot_honour(entry: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"m": {**entry, "engine": "vllm"}})
    assert any(problem in p and p.startswith("model 'm'") for p in info.value.problems), info.value.problems


def test_the_same_entry_is_fine_on_the_engine_that_honours_it() -> None:
    entry = {"VisionPlain": {"model_id": "v", "max_edge": 512}, "in_situ_quant": "Q4K"}
    assert parse_config({"m": entry}).models[0].entry.engine == "transformers"


def test_engine_args_may_set_what_no_field_sets() -> None:
    entry = _entry(Plain={"model_id": "m"}, engine="vllm", engine_args=["--max-model-len", "512", "-tp", "2"])
    assert _vllm_args(entry)[-4:] == ["--max-model-len", "512", "-tp", "2"]


def test_engine_settings_parse_from_toml() -> None:
    config = parse_config(
        {"models": [{"kind": "text", "model_id": "m", "engine": "vllm", "engine_args": ["--enforce-eager"]}]}
    )
    entry = config.models[0].entry
    assert (entry.engine, _vllm_args(entry)[-1]) == ("vllm", "--enforce-eager")


# -- vLLM failure reasons, from vLLM 0.32's own output (shortened) ------------------------------------------

_BAD_CONFIG = """\
(APIServer pid=11898) INFO 12-01 11:13:26 [api_utils.py:286] non-default args: {'port': 18233, 'model': '/tmp/bad'}
(APIServer pid=11898) WARNING 12-01 11:13:26 [system_utils.py:255] Found ulimit of 20000 and failed to automatically increase with error current limit exceeds maximum limit. This can cause fd limit errors like `OSError: [Errno 24] Too many open files`. Consider increasing with ulimit -n
Traceback (most recent call last):
  File "/v/lib/python3.11/site-packages/transformers/configuration_utils.py", line 886, in _get_config_dict
    raise OSError(f"It looks like the config file at '{resolved_config_file}' is not a valid JSON file.")
OSError: It looks like the config file at '/tmp/bad/config.json' is not a valid JSON file.
"""

_WORKER_FAILED = """\
(Worker pid=17405) ERROR 12-01 11:26:16 [multiproc_executor.py:1063]     raise ValueError(
(Worker pid=17405) ERROR 12-01 11:26:16 [multiproc_executor.py:1063] ValueError: Available memory on node 0 (16.21/18.71 GiB) on kv cache allocation is less than requested memory for kv (500.0 GiB).
(EngineCore pid=17358) ERROR 12-01 11:26:16 [core.py:1510] RuntimeError: Worker failed with error 'Available memory on node 0 (16.21/18.71 GiB) on kv cache allocation is less than requested memory for kv (500.0 GiB).', please check the stack trace above for the root cause
Traceback (most recent call last):
    raise RuntimeError(
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
/usr/lib/python3.11/multiprocessing/resource_tracker.py:254: UserWarning: resource_tracker: There appear to be 1 leaked shared_memory objects to clean up at shutdown
  warnings.warn('resource_tracker: There appear to be %d '
"""

_VALIDATION = """\
    raise ValidationError(...)
pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig
  Value error, User-specified max_model_len (99999) is greater than the derived max_model_len (max_position_embeddings=2048.0 or model_max_length=None in model's config.json). [type=value_error, input_value=ArgsKwargs((), {}), input_type=ArgsKwargs]
    For further information visit https://errors.pydantic.dev/2.14/v/value_error
"""

_DIED_SERVING = """\
(EngineCore pid=12281) ERROR 12-01 11:24:42 [core.py:1512] RuntimeError: Worker failed with error 'Unsupported CPU attention configuration: head_dim=16 isa=2 kv_cache_idx=0', please check the stack trace above for the root cause
(APIServer pid=12091) ERROR 12-01 11:24:42 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.
INFO:     127.0.0.1:51336 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error
"""

_CORE_KILLED = """\
(APIServer pid=28362) WARNING 12-01 11:48:03 [core_client.py:817] [shutdown] MPClient: engine core exited unexpectedly; starting cleanup
(APIServer pid=28362) ERROR 12-01 11:48:03 [async_llm.py:906] AsyncLLM output_handler failed.
(APIServer pid=28362) ERROR 12-01 11:48:03 [async_llm.py:906] Traceback (most recent call last):
(APIServer pid=28362) ERROR 12-01 11:48:03 [async_llm.py:906]     raise self._format_exception(outputs) from None
(APIServer pid=28362) ERROR 12-01 11:48:03 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.
INFO:     Finished server process [28362]
"""


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (_BAD_CONFIG, "OSError: It looks like the config file at '/tmp/bad/config.json' is not a valid JSON file."),
        (_WORKER_FAILED, "RuntimeError: Worker failed with error 'Available memory on node 0 (16.21/18.71 GiB) on kv cache allocation is less than requested memory for kv (500.0 GiB).'"),
        (_VALIDATION, "ValidationError: 1 validation error for ModelConfig: Value error, User-specified max_model_len (99999) is greater than"),
        (_DIED_SERVING, "RuntimeError: Worker failed with error 'Unsupported CPU attention configuration: head_dim=16"),
        ("usage: api_server.py [-h] [--model MODEL]\napi_server.py: error: unrecognized arguments: --bogus 3\n", "unrecognized arguments: --bogus 3"),
        (_CORE_KILLED, "its engine core process ended unexpectedly (killed, or out of memory?)"),
    ],
)
def test_vllm_failure_reason_is_its_exception(output: str, reason: str) -> None:
    assert (vllm_failure_reason(output.splitlines()) or "").startswith(reason)


def test_only_vllm_reads_its_own_output() -> None:
    # The reader sees lines as they come: the reason is there before vLLM's exit chatter, and stays.
    reader = VLLM.output_reader()
    for line in [*_WORKER_FAILED.splitlines(), "INFO:     Finished server process [1]", "nanobind: leaked 4 instances!"]:
        reader.feed(line)
    assert (reader.reason() or "").startswith("RuntimeError: Worker failed with error 'Available memory")
    assert vllm_failure_reason(["INFO: starting", "Killed"]) is None  # nothing of vLLM's own: the router's reading
    assert TRANSFORMERS.output_reader() is None  # the runtime reports its own failure (modelplex_spec.failure)
