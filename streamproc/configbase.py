"""The base of every config section (kept apart so section modules never import each other)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A frozen config section; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)
