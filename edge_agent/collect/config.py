"""Configuration of the consented frame collector: the store (`collect:`) and each camera's part
(`cameras[].collect`). Re-exported by `edge_agent.config`, which holds them in the agent config; kept
here because they belong to this stage (and config.py stays under the module size limit)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectConfig(_Section):
    """Where the consented frame collector keeps its examples (docs/models.md); per camera it is off."""

    dir: Path | None = Field(None, description="Folder of the kept examples (default: `collect` beside storage.path).")
    quota_mb: float = Field(1024, gt=0, description="Disk the examples may take; beyond it the oldest of the "
                            "least valuable kind go first (low-confidence persons, then near misses, then false alarms).")
    licence: str = Field("", max_length=500, description="Licence of the collected frames, written into every export "
                         "(e.g. who owns them and that they may only train this deployment's models).")
    pending_alerts: int = Field(200, ge=0, le=10000, description="Clean frames of this many recent alerts are kept "
                                "so that an operator can mark one a false alarm (`collect_mark` command) later.")


class CameraCollectConfig(_Section):
    """Hard examples of one camera, for training a better model (off unless consented)."""

    enabled: bool = Field(False, description="Keep hard examples of this camera on disk (needs `consent`).")
    consent: str = Field("", max_length=500, description="Who consented to collecting this camera's frames, when "
                         "and under which agreement; written into every export.")
    low_score_persons: bool = Field(True, description="Keep frames with a person scored between `person_score_min` "
                                    "and the model's person threshold (what the detector nearly missed).")
    person_score_min: float = Field(0.15, ge=0.01, le=1.0, description="Lower bound of a low-confidence person.")
    near_misses: bool = Field(True, description="Keep frames where a rule almost fired: its condition held at least "
                              "`near_miss_persistence` of its persistence_s, or held with scores up to "
                              "`near_miss_score_margin` below its min_score.")
    near_miss_persistence: float = Field(0.5, gt=0, lt=1, description="Share of persistence_s a condition that "
                                         "then vanished must have held to count as a near miss.")
    near_miss_score_margin: float = Field(0.15, ge=0, le=1, description="How far below a rule's min_score a "
                                          "track's median score may be for a near miss.")
    false_alarms: bool = Field(True, description="Keep the frame of an alert an operator marks as a false alarm.")
    min_interval_s: float = Field(30.0, ge=0, description="At most one example of each kind per camera this often.")
    blur: Literal["none", "heads", "heads_and_faces"] = Field("heads", description="Obscure the heads of the "
                                                              "person boxes (and frontal faces found) before a "
                                                              "frame is written to disk.")

    @model_validator(mode="after")
    def _consented(self) -> CameraCollectConfig:
        if self.enabled and not self.consent.strip():
            raise ValueError("collect.enabled needs `consent`: who agreed to collecting this camera's frames")
        return self
