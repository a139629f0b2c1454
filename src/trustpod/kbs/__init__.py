"""trustpod KBS: Trustee-compatible key broker service (RCAR, resources, admin, metrics)."""
