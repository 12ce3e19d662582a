"""modelplex: the ``modelplex`` CLI and a client SDK for a modelplex server.

    from modelplex import Client
    with Client("http://127.0.0.1:1234") as client:
        print(client.list_models_with_status())

Importing this package stays light (httpx, no torch, no server frameworks): the CLI starts through it.
"""

from modelplex.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    InvalidResponseError,
    ModelLoadFailedError,
    ModelLoadingError,
    ModelNotFoundError,
    ModelplexError,
    RateLimitError,
    ServiceUnavailableError,
)
from modelplex.sdk.async_client import AsyncClient
from modelplex.sdk.client import Client
from modelplex.sdk.streams import chunk_text
from modelplex.sdk.types import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
    MessageRequest,
    ResponseRequest,
)

__all__ = [
    "APIConnectionError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "ChatCompletionRequest",
    "ChatMessage",
    "Client",
    "CompletionRequest",
    "EmbeddingRequest",
    "InternalServerError",
    "InvalidResponseError",
    "MessageRequest",
    "ModelLoadFailedError",
    "ModelLoadingError",
    "ModelNotFoundError",
    "ModelplexError",
    "RateLimitError",
    "ResponseRequest",
    "ServiceUnavailableError",
    "chunk_text",
]
