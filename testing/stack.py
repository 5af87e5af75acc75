"""A private nginx in front of a relman-managed app: the production stack, on loopback."""

from __future__ import annotations

import grp
import os
import shutil
from pathlib import Path

from relman.nginxconf import render_server_block
from testing.daemon import RelmanDaemon
from testing.nginx import PrivateNginx


def nginx_user_and_group() -> tuple[str | None, str]:
    """nginx's worker user and the socket group that lets it connect: www-data when root
    (as on a real server), else our own user and group."""
    if os.geteuid() == 0:
        return "www-data", "www-data"
    return None, grp.getgrgid(os.getgid()).gr_name


def start_nginx(base: Path, *, name: str, root: Path, protocol: str) -> PrivateNginx:
    """A private nginx serving the relman server block of app *name* at *root*."""
    user, _group = nginx_user_and_group()
    nginx = PrivateNginx(
        base,
        lambda listen: render_server_block(name=name, root=root, protocol=protocol,
                                           listen=listen, server_name="_"),
        user=user,
    )
    nginx.start()
    return nginx


def tear_down(app: RelmanDaemon | None, nginx: PrivateNginx | None, base: Path) -> None:
    """Stop the daemon (it stops the app servers), then nginx, and remove *base*."""
    if app is not None:
        app.stop()
    if nginx is not None:
        nginx.stop()
    shutil.rmtree(base, ignore_errors=True)
