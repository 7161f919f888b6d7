"""Encoder checkpoint -> ONNX for devices (``export.cli``), and on-device retrieval (``export.retrieve``).

Keep this file free of imports: ``export.retrieve`` runs where torch is not installed.
"""
