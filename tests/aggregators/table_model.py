"""Conformance-table rows of the model-based rules (FLTrust, FLAME, ...)."""

TABLE = []
