"""Split federated learning with momentum contrast (MocoSFL): stem on the device, trunk and queue on the server.

No Flower here: the ClientApp (``client_app/split.py``) and the ServerApp loop
(``server_app/split_loop.py``) move the tensors these modules compute.
"""
