"""Governance: the registry with lineage, gated promotion, version cards and personal-data hygiene
(notebooks/09_operate.ipynb; docs/governance.md)."""

from labkit.registry.lineage import lineage
from labkit.registry.promote import PromotionRefused, gate_evidence, promote
from labkit.registry.store import (
    RegistryError,
    find,
    production_config,
    production_record,
    record_deployment,
    record_evaluation,
    record_finetune,
    record_version,
)

__all__ = [
    "PromotionRefused",
    "RegistryError",
    "find",
    "gate_evidence",
    "lineage",
    "production_config",
    "production_record",
    "promote",
    "record_deployment",
    "record_evaluation",
    "record_finetune",
    "record_version",
]
