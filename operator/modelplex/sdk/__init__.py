"""The HTTP client SDK: ``Client`` and ``AsyncClient`` over the pure request/answer definitions in ``calls``.

Import the public names from ``modelplex``.
"""
