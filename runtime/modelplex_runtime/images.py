"""Turn OpenAI ``image_url`` content parts into PIL images: data: URLs always, http(s) only when allowed."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from modelplex_runtime.errors import bad_request

MAX_IMAGE_BYTES = 20 * 1024 * 1024


def image_url_of(part: dict[str, Any]) -> str:
    url = part.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str) or not url:
        raise bad_request("an image_url content part needs image_url.url", param="messages")
    return url


def decode_data_url(url: str) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URL."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:") or ";base64" not in head:
        raise bad_request("image data URLs must look like data:image/<type>;base64,<data>", param="messages")
    if not head[5:].startswith("image/"):
        raise bad_request(f"unsupported data URL media type {head[5:].split(';')[0]!r}; expected image/*", param="messages")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"the image data URL is not valid base64: {exc}", param="messages") from exc


def fetch_image_bytes(url: str, allow_remote: bool, timeout: float = 10.0) -> bytes:
    if url.startswith("data:"):
        return decode_data_url(url)
    if url.startswith(("http://", "https://")):
        if not allow_remote:
            raise bad_request(
                "remote image URLs are disabled on this runtime (start it with --allow-remote-images); "
                "send the image as a data: URL",
                param="messages",
            )
        from modelplex_runtime.remote_fetch import FetchRefused, fetch

        try:
            return fetch(url, MAX_IMAGE_BYTES, timeout)
        except FetchRefused as exc:
            raise bad_request(str(exc), param="messages") from None
    raise bad_request("image_url must be a data: URL (or http(s) when remote images are enabled)", param="messages")


def load_image(data: bytes, max_edge: int | None = None) -> Any:
    """Decode to RGB, shrinking (aspect kept) so no edge exceeds ``max_edge``."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise bad_request(f"the image could not be decoded: {exc}", param="messages") from exc
    img = img.convert("RGB")
    if max_edge is not None and max(img.size) > max_edge:
        img.thumbnail((max_edge, max_edge))
    return img
