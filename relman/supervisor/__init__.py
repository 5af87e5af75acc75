"""App servers: spawn, identity, health, drain, stop, restart policy."""

from relman.supervisor.server import ServerHandle, ServerSpec
from relman.supervisor.servers import Supervisor
from relman.supervisor.states import ServerState
from relman.supervisor.tracking import Tracker

__all__ = ["ServerHandle", "ServerSpec", "ServerState", "Supervisor", "Tracker"]
