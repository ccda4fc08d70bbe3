"""``python -m fileflow.server.worker``.

The entry point lives in ``__main__`` on purpose: multiprocessing does not import a
``__main__`` module of a package again in the worker's child processes, so a new warm child
starts in milliseconds instead of importing Prefect first.
"""

from fileflow.server.worker import main

main()
