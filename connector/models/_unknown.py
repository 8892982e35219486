"""Finding the fields of a validated body that the model does not know (forwarded, but reported)."""

from __future__ import annotations

from pydantic import BaseModel


def unknown_fields(model: BaseModel, prefix: str = "order") -> list[str]:
    """Paths of every extra field in ``model`` and its nested models; list indices written ``[]``."""
    extra = model.model_extra or {}
    found = [f"{prefix}.{name}" for name in extra]
    given = model.model_fields_set  # only what the body set: defaults hold no extras
    for name in type(model).model_fields:
        if name in given:
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
