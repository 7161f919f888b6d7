"""Launchers of a real local Flower federation, driven through Flower's own CLIs.

* :class:`~launcher.deployment.LocalDeployment`: a ``flower-superlink`` and N ``flower-supernode``
  processes (Flower's deployment runtime), what the README's "Running on a real deployment" does by hand;
* :class:`~launcher.simulation.LocalSimulation`: ``flwr run`` with Flower's local simulation runtime.

Both live in a private ``FLWR_HOME``, listen on free 127.0.0.1 ports, submit runs with ``flwr run``,
read a run's final status with ``flwr ls`` and stop exactly the processes they started. The tests,
``bench/`` and ``scripts/`` use them; ``python -m launcher`` is the command line (``fedssl-launch``).
Nothing here imports Flower or torch: the launcher only starts processes.
"""
