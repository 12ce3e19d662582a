"""The vLLM engine: vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``).

The entry maps onto vLLM's flags (vLLM 0.32; docs/engines.md has the table):

* ``model_id`` -> ``--model``; GGUF: ``--model <quantized_model_id>/<quantized_filename>`` and
  ``tok_model_id`` -> ``--tokenizer`` (vLLM reads GGUF through its ``vllm-gguf-plugin``);
* the API id -> ``--served-model-name``; ``revision`` -> ``--revision``; ``hf_cache_path`` ->
  ``--download-dir``; ``dtype`` bf16/f16/f32 -> ``--dtype bfloat16/float16/float32`` (``auto``: vLLM's
  own choice); ``max_seq_len`` -> ``--max-model-len``;
* ``jinja_explicit`` or else ``chat_template`` -> ``--chat-template`` (a file or the template itself);
* ``in_situ_quant`` FP8 -> ``--quantization fp8_per_tensor`` (vLLM's online quantization has no
  integer scheme for dense layers, so the 4- and 8-bit names are config errors);
* ``Embedding`` -> ``--runner pooling``; ``VisionPlain.max_num_images`` -> ``--limit-mm-per-prompt``;
* ``num_device_layers`` (N devices with equal layer counts) or the pod's GPU count -> ``--tensor-parallel-size``;
  device ordinals other than 0..N-1 -> ``CUDA_VISIBLE_DEVICES``;
* ``tool_call_parser`` -> ``--enable-auto-tool-choice --tool-call-parser <name>``;
* ``--disable-uvicorn-access-log`` always: the router writes one access line per request already;
* ``engine_args`` last, verbatim.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from modelplex_spec.engines.base import Engine, Flag
from modelplex_spec.quant import QuantScheme, resolve_quant

if TYPE_CHECKING:
    from modelplex_spec.entry import ModelEntry

_DTYPES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}
# vLLM's online (load-time) quantization schemes for our schemes; the others have no vLLM equivalent.
_QUANT = {QuantScheme.FP8_WEIGHT_ONLY: "fp8_per_tensor"}


def device_plan(items: list[str]) -> list[tuple[int, int]]:
    """num_device_layers as [(device ordinal, layer count)]; a bare "NUM" is device 0."""
    plan = []
    for item in items:
        parts = [p.strip() for p in item.split(":")]
        plan.append((0, int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1])))
    return plan


def _template_is_json_file(value: str) -> bool:
    return "{" not in value and value.strip().lower().endswith(".json")


class VllmEngine(Engine):
    name = "vllm"
    title = "vLLM"
    module = "vllm.entrypoints.openai.api_server"
    image_python = "python3"  # vLLM's images (vllm/vllm-openai) install it into the system python3
    # vLLM's HTTP server starts serving only once the engine is up, and /health then answers 200.
    ready_path = "/health"
    output_on_stdout = True
    flag_aliases = {"-tp": "--tensor-parallel-size", "-q": "--quantization"}  # noqa: RUF012
    reserved_flags = ("--uds",)

    def flags(self, entry: ModelEntry, *, host: str, port: int, served_model_name: str, gpus: int = 0) -> list[Flag]:
        from modelplex_spec.entry import ModelKind

        sel = entry.selector
        kind = entry.kind.value
        flags: list[Flag] = []
        if entry.kind is ModelKind.GGUF:
            directory = sel.quantized_model_id.rstrip("/")  # type: ignore[union-attr]
            flags.append(Flag("modelplex", ("--model", f"{directory}/{sel.quantized_filename}")))  # type: ignore[union-attr]
            if sel.tok_model_id:  # type: ignore[union-attr]
                flags.append(Flag("GGUF.tok_model_id", ("--tokenizer", sel.tok_model_id)))  # type: ignore[union-attr]
        else:
            flags.append(Flag("modelplex", ("--model", entry.pipeline_name)))
        flags += [
            Flag("modelplex", ("--served-model-name", served_model_name)),
            Flag("modelplex", ("--host", host)),
            Flag("modelplex", ("--port", str(port))),
        ]
        if sel.revision:
            flags.append(Flag(f"{kind}.revision", ("--revision", sel.revision)))
        if sel.hf_cache_path:
            flags.append(Flag(f"{kind}.hf_cache_path", ("--download-dir", sel.hf_cache_path)))
        if sel.dtype in _DTYPES:
            flags.append(Flag(f"{kind}.dtype", ("--dtype", _DTYPES[sel.dtype])))
        if sel.max_seq_len:
            flags.append(Flag(f"{kind}.max_seq_len", ("--max-model-len", str(sel.max_seq_len))))
        if entry.jinja_explicit:
            flags.append(Flag("jinja_explicit", ("--chat-template", entry.jinja_explicit)))
        elif entry.chat_template:
            flags.append(Flag("chat_template", ("--chat-template", entry.chat_template)))
        scheme = _QUANT.get(resolve_quant(entry.in_situ_quant)) if entry.in_situ_quant else None
        if scheme:
            flags.append(Flag("in_situ_quant", ("--quantization", scheme)))
        if entry.kind is ModelKind.EMBEDDING:
            flags.append(Flag("Embedding", ("--runner", "pooling")))
        images = getattr(sel, "max_num_images", None)
        if images:
            flags.append(Flag(f"{kind}.max_num_images", ("--limit-mm-per-prompt", json.dumps({"image": images}))))
        tp, source = self.tensor_parallel(entry, gpus)
        if tp > 1:
            flags.append(Flag(source, ("--tensor-parallel-size", str(tp))))
        if entry.tool_call_parser:
            flags.append(Flag("tool_call_parser", ("--enable-auto-tool-choice",)))
            flags.append(Flag("tool_call_parser", ("--tool-call-parser", entry.tool_call_parser)))
        flags.append(Flag("modelplex", ("--disable-uvicorn-access-log",)))
        return flags

    @staticmethod
    def tensor_parallel(entry: ModelEntry, gpus: int) -> tuple[int, str]:
        """GPUs to split the model over: num_device_layers' devices, else the pod's GPUs."""
        if entry.num_device_layers:
            return len(device_plan(entry.num_device_layers)), "num_device_layers"
        return max(gpus, 1), "kubernetes.resources.gpus"

    def env(self, entry: ModelEntry) -> dict[str, str]:
        # One line at a time: the router reads the output as it comes (readiness, failure reasons).
        env = {"PYTHONUNBUFFERED": "1"}
        if entry.num_device_layers:
            ordinals = [ordinal for ordinal, _ in device_plan(entry.num_device_layers)]
            if ordinals != list(range(len(ordinals))):
                env["CUDA_VISIBLE_DEVICES"] = ",".join(str(o) for o in ordinals)
        return env

    def writable_env(self, root: str) -> dict[str, str]:
        cache = f"{root}/.cache"
        return {
            **super().writable_env(root),
            "XDG_CONFIG_HOME": f"{root}/.config",
            # vLLM's own cache (torch.compile artifacts, model info) and config, and the compilers' caches.
            "VLLM_CACHE_ROOT": f"{cache}/vllm",
            "VLLM_CONFIG_ROOT": f"{root}/.config/vllm",
            "TRITON_CACHE_DIR": f"{cache}/triton",
            "TORCHINDUCTOR_CACHE_DIR": f"{cache}/torchinductor",
            "NUMBA_CACHE_DIR": f"{cache}/numba",
            "OUTLINES_CACHE_DIR": f"{cache}/outlines",
            # A user id without a passwd entry: libraries that ask for the user name get one.
            "USER": "modelplex",
            "LOGNAME": "modelplex",
            # vLLM reports usage statistics by default; a model server in a cluster should not phone home.
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }

    def unsupported(self, entry: ModelEntry) -> list[str]:
        sel = entry.selector
        kind = entry.kind.value
        problems: list[str] = []

        def refuse(what: str, why: str) -> None:
            problems.append(f"{what} has no equivalent in engine vllm ({why})")

        if getattr(sel, "max_edge", None):
            refuse(f"{kind}.max_edge", "vLLM does not resize images to a longest edge; leave it out or use engine transformers")
        if getattr(sel, "tokenizer_json", None):
            refuse(
                f"{kind}.tokenizer_json",
                'vLLM takes a tokenizer directory or repo id, not a tokenizer.json file: pass engine_args ["--tokenizer", DIR]',
            )
        if entry.in_situ_quant and resolve_quant(entry.in_situ_quant) not in _QUANT:
            refuse(
                f"in_situ_quant {entry.in_situ_quant}",
                "vLLM quantizes at load time to FP8 only (in_situ_quant FP8); use a pre-quantized checkpoint or "
                "engine transformers",
            )
        if not entry.jinja_explicit and entry.chat_template and _template_is_json_file(entry.chat_template):
            refuse(
                "a .json chat_template",
                "vLLM reads a Jinja file or the template itself, not a tokenizer_config-style JSON; point it at a .jinja file",
            )
        problems += self._device_problems(entry)
        return problems

    def _device_problems(self, entry: ModelEntry) -> list[str]:
        if not entry.num_device_layers:
            return []
        plan = device_plan(entry.num_device_layers)
        ordinals = [ordinal for ordinal, _ in plan]
        problems = []
        if len(set(ordinals)) != len(ordinals):
            problems.append("num_device_layers names a device twice; engine vllm uses each device once")
        if len({count for _, count in plan}) > 1:
            problems.append(
                "num_device_layers with unequal layer counts has no equivalent in engine vllm (vLLM splits every "
                "layer evenly over its GPUs, --tensor-parallel-size); give equal counts, or leave it out and pass "
                "--pipeline-parallel-size in engine_args"
            )
        gpus = self.entry_gpus(entry)
        if gpus and gpus != len(plan):
            problems.append(
                f"num_device_layers names {len(plan)} device(s) but kubernetes.resources.gpus is {gpus}; engine vllm "
                "needs one GPU per device"
            )
        return problems

    def output_reader(self) -> VllmFailureReader:
        return VllmFailureReader()


# "(EngineCore pid=12) ERROR 12-01 11:24:42 [core.py:1512] " and the like, in front of vLLM's log lines.
_LOG_PREFIX = re.compile(
    r"^(?:\([^()]*pid=\d+\)\s*)?(?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]*\]\s?)?"
)
# "ValueError: ...", "torch.OutOfMemoryError: ...", "pydantic_core._pydantic_core.ValidationError: ..."
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*(?P<name>[A-Za-z_]\w*(?:Error|Exception|Exit))(?::\s*(?P<message>.*))?$")
# argparse: "api_server.py: error: unrecognized arguments: --bogus"
_USAGE_ERROR = re.compile(r"^\S+: error: (?P<message>.+)$")
# Re-raised in another process with the real cause earlier in the output.
_WRAPPERS = re.compile(r"See root cause above|See stack trace \(above\)|EngineDeadError")
_BOILERPLATE = re.compile(r",? please check the stack trace above for the root cause\.?$")
_VALIDATION_HEADER = re.compile(r"^\d+ validation errors? for ")
# What vLLM logs when one of its processes vanished without an exception of its own (killed, OOM).
_DIED = re.compile(r"(?P<what>engine core|EngineCore\w*|worker|Worker\w*) (?:proc \S+ )?(?:exited|died) unexpectedly", re.I)


class VllmFailureReader:
    """The exception that stopped vLLM, read from its output (stdout and stderr, in order) as it comes.

    vLLM runs its API server, engine core and workers as separate processes; a failure deep inside is
    logged where it happened and then re-raised in each process above with "see root cause above". The
    reason is the last exception line that is not such a wrapper, with a pydantic validation error's
    detail line appended; an argument error gives argparse's message; else vLLM's note that one of its
    processes died unexpectedly (killed, out of memory); else the last wrapper.
    """

    def __init__(self) -> None:
        self._cause: str | None = None
        self._died: str | None = None
        self._wrapper: str | None = None
        self._validation: str | None = None  # a pydantic header waiting for its detail line

    def feed(self, line: str) -> None:
        text = _LOG_PREFIX.sub("", line.rstrip())
        if self._validation is not None and text.strip():
            self._cause, self._validation = f"{self._validation}: {text.strip()}", None
            return
        usage = _USAGE_ERROR.match(text)
        if usage:
            self._cause = usage["message"]
            return
        vanished = _DIED.search(text)
        if vanished:
            what = "engine core" if vanished["what"].lower().startswith("engine") else "worker"
            self._died = f"its {what} process ended unexpectedly (killed, or out of memory?)"
            return
        match = _EXCEPTION.match(text)
        if not match or match["message"] is None:
            return
        message = _BOILERPLATE.sub("", match["message"].strip())
        reason = f"{match['name']}: {message}" if message else match["name"]
        if _WRAPPERS.search(text):
            self._wrapper = reason
            return
        self._cause = reason
        if _VALIDATION_HEADER.match(message):
            self._validation = reason

    def reason(self) -> str | None:
        return self._cause or self._died or self._wrapper


def vllm_failure_reason(lines: Sequence[str]) -> str | None:
    """``VllmFailureReader`` over a whole output at once."""
    reader = VllmFailureReader()
    for line in lines:
        reader.feed(line)
    return reader.reason()
