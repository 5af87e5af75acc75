"""App servers: spawn, identity, health, drain, stop, restart policy."""

from relman.supervisor.server import ServerHandle, ServerSpec
from relman.supervisor.servers import Supervisor
from relman.supervisor.states import ServerState

__all__ = ["ServerHandle", "ServerSpec", "ServerState", "Supervisor"]
