"""The HTTP API by endpoint family: each module holds its request model, handler and response builder."""
