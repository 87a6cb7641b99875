"""aiflows' module paths and signatures, as thin adapters over flowplex.

Code written for aiflows runs after replacing ``aiflows`` by ``flowplex.compat.aiflows`` in its
imports (and in the class paths of its YAML configs)::

    from flowplex.compat.aiflows.utils import serving, colink_utils
    from flowplex.compat.aiflows.workers import run_dispatch_worker_thread

    cl = colink_utils.start_colink_server()          # a fresh flowplex node and user
    run_dispatch_worker_thread(cl)
    serving.serve_flow(cl, "ReverseNumberFlowModule.ReverseNumberAtomicFlow", "reverse_number")

The modules mirror aiflows' layout: ``base_flows``, ``interfaces`` (and
``interfaces.key_interface``), ``messages``, ``workers``, ``logging`` and ``utils.serving``
(also as ``utils.serve_utils``), ``utils.colink_utils``, ``utils.coflows_utils``,
``utils.general_helpers``. What behaves differently, and why: ``docs/migrating.md``.
"""

from .utils import logging

__all__ = ["logging"]
