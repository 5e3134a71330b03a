"""OCI registries: push, pull and promote baker artifacts (baker.registry.client talks HTTP)."""
