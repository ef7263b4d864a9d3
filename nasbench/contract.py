"""The run record's contract (README, "The run record"): the keys every complete summary.json
holds. Torch-free on purpose: analysis/ checks records with it on machines without torch."""

from __future__ import annotations

#: the README's minimum; readers (analysis/records.py) require these and nothing more
REQUIRED_SUMMARY_KEYS = (
    "method",
    "estimator",
    "space",
    "data",
    "seed",
    "status",
    "arch",
    "search_acc",
    "final_acc",
    "params",
    "flops",
    "phases",
    "total_device_hours",
    "peak_mem_bytes",
)
