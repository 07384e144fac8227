"""Our models. Each is a RecBole recommender with defaults in ``properties/model/<Model>.yaml``."""

__all__: list[str] = []
