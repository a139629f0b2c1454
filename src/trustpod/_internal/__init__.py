"""Small shared helpers (strict base64, JCS, injected clock); not a public API."""

__all__: list[str] = []
