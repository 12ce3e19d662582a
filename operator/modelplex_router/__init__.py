"""The modelplex router: one OpenAI-compatible endpoint in front of many models' runtimes."""
