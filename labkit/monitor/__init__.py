"""Monitoring: dashboards, online evaluation, drift, alerts and span export (notebook 08)."""
