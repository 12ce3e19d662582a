"""A real runtime serving a tiny random Llava (VisionPlain) with data: URL images."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from helpers.runtime_process import RuntimeProcess, start_runtime

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vision_runtime(tiny_llava_dir: Path) -> Iterator[RuntimeProcess]:
    entry = {"MultimodalPlain": {"model_id": str(tiny_llava_dir), "max_num_images": 2, "max_edge": 64}, "alias": "vis"}
    with start_runtime(entry) as rt:
        yield rt


def _image_part(color: tuple[int, int, int] = (200, 30, 30)) -> dict:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (120, 80), color).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": url}}


def test_image_chat_with_openai_client(vision_runtime: RuntimeProcess) -> None:
    client = openai.OpenAI(base_url=vision_runtime.url + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, _image_part()]}]
    resp = client.chat.completions.create(model="vis", messages=messages, max_tokens=6, temperature=0,
                                          extra_body={"ignore_eos": True})
    assert resp.usage is not None and resp.usage.completion_tokens == 6
    assert resp.choices[0].finish_reason == "length"
    text_only = client.chat.completions.create(model="vis", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    # the image's placeholder tokens count as prompt tokens
    assert text_only.usage is not None and resp.usage.prompt_tokens > text_only.usage.prompt_tokens
    chunks = list(client.chat.completions.create(model="vis", messages=messages, max_tokens=6, temperature=0,
                                                 stream=True, extra_body={"ignore_eos": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == resp.choices[0].message.content
    assert httpx.get(vision_runtime.url + "/v1/models").json()["data"][0]["kind"] == "VisionPlain"


def test_image_refusals(vision_runtime: RuntimeProcess) -> None:
    chat = vision_runtime.url + "/v1/chat/completions"
    remote = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    r = httpx.post(chat, json={"messages": [{"role": "user", "content": [remote]}]})
    assert r.status_code == 400 and "--allow-remote-images" in r.json()["error"]["message"]
    three = [_image_part(), _image_part(), _image_part()]
    r = httpx.post(chat, json={"messages": [{"role": "user", "content": three}]})
    assert r.status_code == 400 and "at most 2" in r.json()["error"]["message"]
    broken = {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}
    r = httpx.post(chat, json={"messages": [{"role": "user", "content": [broken]}]})
    assert r.status_code == 400 and "decoded" in r.json()["error"]["message"]
    r = httpx.post(vision_runtime.url + "/v1/completions", json={"prompt": "hi"})
    assert r.status_code == 400 and "VisionPlain" in r.json()["error"]["message"]
