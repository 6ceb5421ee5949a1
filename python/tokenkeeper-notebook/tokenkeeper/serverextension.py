"""The Jupyter server extension that keeps token files fresh.

Installing the package enables it: the wheel puts
``etc/jupyter/jupyter_server_config.d/tokenkeeper.json`` into the
environment, which adds ``tokenkeeper.serverextension`` to the server's
``jpserver_extensions``. It does something only when the server's
environment holds ``TOKENKEEPER_TOKEN_FILES`` (the hub's pre-spawn hook
sets it): then a :class:`tokenkeeper.tokenfiles.Keeper` keeps the files
fresh in a thread of the server, and stops and removes them when the
server's process exits. The module imports nothing from Jupyter Server, so
importing the package never needs it.
"""

import atexit

from .tokenfiles import start_from_environment


def _jupyter_server_extension_points():
    return [{"module": "tokenkeeper.serverextension"}]


def _load_jupyter_server_extension(serverapp):
    """Start keeping the token files the environment configures, if any, until the server exits."""
    keeper = start_from_environment(log=serverapp.log)
    if keeper is not None:
        atexit.register(keeper.stop)
