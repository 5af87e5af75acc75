"""The two route checks of a swap (DESIGN section 5): the candidate previewed through nginx
on run/next.sock before the switch, and the live route after it."""

from __future__ import annotations

from pathlib import Path

from relman.config import HealthConfig
from relman.errors import LiveCheckFailed, PreviewFailed
from relman.supervisor.health import in_range, probe_socket, probe_url


async def check_preview(health: HealthConfig) -> int | None:
    """GET health.nginx_url with X-Relman-Target: next: its status, None without nginx_url,
    or PreviewFailed."""
    url = health.nginx_url
    if not url:
        return None
    probe = await probe_url(url, host=health.nginx_host,
                            headers={"X-Relman-Target": "next"}, timeout=10)
    if not in_range(probe.status, health.expect):
        raise PreviewFailed(
            f"preview through nginx failed: GET {url} with X-Relman-Target: next gave "
            f"{probe.status or probe.detail}",
            hint="a 502 here means nginx cannot reach run/next.sock: check "
                 "server.socket_group and the nginx server block (relman nginx-config)")
    return probe.status


async def check_live(health: HealthConfig, app_sock: Path, protocol: str) -> None:
    """GET the live route through nginx (else health.path on run/app.sock), or
    LiveCheckFailed."""
    if health.nginx_url:
        probe = await probe_url(health.nginx_url, host=health.nginx_host, timeout=10)
        where = f"GET {health.nginx_url}"
    else:
        probe = await probe_socket(app_sock, protocol=protocol, path=health.path, timeout=10)
        where = f"GET {health.path} via run/app.sock"
    if not in_range(probe.status, health.expect):
        raise LiveCheckFailed(f"live check failed: {where}: {probe.status or probe.detail}")
