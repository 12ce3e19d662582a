"""The model engine: the only part of modelplex_runtime that imports torch and transformers.

Import submodules explicitly (``modelplex_runtime.engine.loader``); this package's own import is light.
"""
