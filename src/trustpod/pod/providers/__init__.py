"""Pod VM providers behind CAA's interface (``trustpod.pod.provider.Provider``)."""

__all__: list[str] = []
