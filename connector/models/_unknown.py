"""Finding the fields of a validated body that the model does not know (forwarded, but reported)."""

from __future__ import annotations

from pydantic import BaseModel


def unknown_fields(model: BaseModel, prefix: str = "order") -> list[str]:
    """Paths of every extra field in ``model`` and its nested models; list indices written ``[]``."""
    found = [f"{prefix}.{name}" for name in (model.model_extra or {})]
    for name in type(model).model_fields:
        found.extend(_walk(getattr(model, name), f"{prefix}.{name}"))
    return found


def _walk(value: object, path: str) -> list[str]:
    if isinstance(value, BaseModel):
        return unknown_fields(value, path)
    if isinstance(value, list):
        seen: list[str] = []
        for item in value:
            for p in _walk(item, f"{path}[]"):
                if p not in seen:
                    seen.append(p)
        return seen
    return []
