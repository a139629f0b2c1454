"""trustpod command line (thin adapters over library calls)."""

__all__: list[str] = []
