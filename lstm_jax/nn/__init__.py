"""Networks: cells (one small class each), sequence layers over them, models, and torch interop."""
