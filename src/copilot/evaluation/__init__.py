"""Offline evaluation: task files (tasks), fit-and-predict runs (runs), per-chatbot tuning (tuning), metrics with
intervals (metrics) and docs/results.md (results)."""
