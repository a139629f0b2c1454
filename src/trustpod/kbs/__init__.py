"""trustpod KBS: Trustee-compatible key broker service (RCAR, resources, admin, metrics)."""

__all__: list[str] = []
