"""Model families (one module each), the registry that picks one from config.json, and the zoo."""

from vlm.models.registry import FAMILIES, family_of, load_model, resolve_path

__all__ = ["FAMILIES", "family_of", "load_model", "resolve_path"]
