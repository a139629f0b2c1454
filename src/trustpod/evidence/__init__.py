"""Pure parsers for TEE evidence (bytes in, frozen dataclasses out)."""
