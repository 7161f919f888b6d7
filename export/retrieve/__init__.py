"""On-device retrieval with onnxruntime, numpy and Pillow only: no torch is imported anywhere below here."""
