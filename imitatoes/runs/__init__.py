"""Run folders: their format, the run log, report, provenance, replay and diff."""
