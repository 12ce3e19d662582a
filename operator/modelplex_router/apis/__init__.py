"""The APIs the router translates to chat completions, so every model serves them whatever its engine:
OpenAI's Responses API (``responses*``, with its store) and Anthropic's Messages API (``messages*``).

Each has a request module (validation, translation to a chat completion), an object module (the
API's answer built from a chat completion), a stream module (chat-completion chunks to the API's
events) and a glue module (the pipeline's ``Api`` and ``Answer``); ``chat`` reads the runtime's
chat completions for both, ``sse`` parses and writes events, ``routes`` adds them to the app.
"""
