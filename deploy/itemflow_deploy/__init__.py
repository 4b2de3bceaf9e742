"""Pulumi program for itemflow on Google Cloud Run (see stack.py and docs/deploy.md)."""
