"""The nginx server block: rendering, the shipped examples, and rejected inputs."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from string import Template

import pytest

from relman.errors import UsageError
from relman.nginxconf import HASHED_NAME, render_server_block

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "nginx"
DEMO = {
    "name": "shop",
    "root": Path("/srv/shop"),
    "listen": "80",
    "server_name": "shop.example.com",
}

# Every $word in the output must be one of these nginx variables: anything else is a
# placeholder string.Template did not substitute, or an nginx variable left unescaped.
NGINX_VARIABLES = {
    "http": {
        "remote_addr",
        "http_x_relman_target",
        "relman_shop_upstream",
        "host",
        "proxy_add_x_forwarded_for",
        "scheme",
    },
    "uwsgi": {"remote_addr", "http_x_relman_target", "relman_shop_upstream"},
}


@pytest.mark.parametrize("protocol", ["http", "uwsgi"])
def test_contrib_example_matches_the_template(protocol: str) -> None:
    """contrib/nginx/relman-<protocol>.conf is exactly what the template renders for the demo."""
    shipped = (CONTRIB / f"relman-{protocol}.conf").read_text(encoding="utf-8")
    assert shipped == render_server_block(protocol=protocol, **DEMO)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["http", "uwsgi"])
def test_template_uses_exactly_its_placeholders(protocol: str) -> None:
    """The template is valid string.Template text using name, root and server_name, and the
    block placeholders listens, redirect_map, server_settings and static_locations."""
    text = (files("relman") / "templates" / f"nginx-{protocol}.conf").read_text(encoding="utf-8")
    template = Template(text)
    assert template.is_valid()
    assert set(template.get_identifiers()) == {
        "name", "root", "server_name", "listens", "redirect_map", "server_settings",
        "static_locations"}


@pytest.mark.parametrize("protocol", ["http", "uwsgi"])
def test_rendering_leaves_only_nginx_variables(protocol: str) -> None:
    """Each placeholder is substituted and each escaped $$ becomes an nginx variable."""
    out = render_server_block(protocol=protocol, **DEMO)  # type: ignore[arg-type]
    directives = "\n".join(line.partition("#")[0] for line in out.splitlines())
    assert set(re.findall(r"\$(\w+)", directives)) == NGINX_VARIABLES[protocol]
    assert "$remote_addr" in out
    assert "server unix:/srv/shop/run/app.sock" in out
    assert "server unix:/srv/shop/run/next.sock" in out
    assert "listen 80;" in out
    assert "server_name shop.example.com;" in out
    assert "upstream relman_shop_live {" in out
    assert "upstream relman_shop_next {" in out
    assert '"127.0.0.1:next"    relman_shop_next;' in out
    assert '"::1:next"          relman_shop_next;' in out


@pytest.mark.parametrize("protocol", ["http", "uwsgi"])
def test_upstreams_have_no_keepalive(protocol: str) -> None:
    """No upstream keepalive: a kept connection would outlive a socket switch."""
    out = render_server_block(protocol=protocol, **DEMO)  # type: ignore[arg-type]
    assert not re.search(r"^\s*keepalive\b", out, re.MULTILINE)


def test_http_block_strips_the_preview_header() -> None:
    """The HTTP variant clears X-Relman-Target before proxying."""
    out = render_server_block(protocol="http", **DEMO)  # type: ignore[arg-type]
    assert 'proxy_set_header X-Relman-Target "";' in out
    assert "proxy_pass http://$relman_shop_upstream;" in out


def test_uwsgi_block_strips_the_preview_header() -> None:
    """The uwsgi variant clears HTTP_X_RELMAN_TARGET after including uwsgi_params."""
    out = render_server_block(protocol="uwsgi", **DEMO)  # type: ignore[arg-type]
    assert out.index("include uwsgi_params;") < out.index('uwsgi_param HTTP_X_RELMAN_TARGET "";')
    assert "uwsgi_pass $relman_shop_upstream;" in out


def test_hyphen_in_the_app_name_becomes_an_underscore() -> None:
    """relman.toml allows "my-shop"; nginx identifiers cannot hold "-", so they say my_shop."""
    out = render_server_block(**{**DEMO, "name": "my-shop"}, protocol="http")  # type: ignore[arg-type]
    assert "upstream relman_my_shop_live {" in out
    assert "proxy_pass http://$relman_my_shop_upstream;" in out
    assert "my-shop" not in out


def test_several_server_names_and_listen_options_are_allowed() -> None:
    """server_name takes space-separated names; listen takes options after the address."""
    out = render_server_block(
        name="shop",
        root=Path("/srv/shop"),
        protocol="http",
        listen="80 default_server",
        server_name="shop.example.com www.shop.example.com",
    )
    assert "listen 80 default_server;" in out
    assert "server_name shop.example.com www.shop.example.com;" in out


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("protocol", "fastcgi"),
        ("name", "my.shop"),
        ("name", ""),
        ("root", Path("srv/shop")),
        ("root", Path("/srv/my shop")),
        ("root", Path("/srv/shop;evil")),
        ("listen", "80; include /etc/passwd"),
        ("server_name", "shop.example.com}"),
        ("server_name", ""),
    ],
)
def test_values_nginx_would_misread_are_rejected(field: str, value: object) -> None:
    """An unusable name, protocol, root, listen or server_name is a usage error naming it."""
    kwargs: dict[str, object] = {**DEMO, "protocol": "http", field: value}
    with pytest.raises(UsageError, match=field):
        render_server_block(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "hashed"),
    [
        pytest.param("base.27e20196a850.css", True, id="django-manifest"),
        pytest.param("img/logo.27e20196a850.png", True, id="django-manifest-subdir"),
        pytest.param("main.4f3a2b1c9d8e7f6a5b4c.js", True, id="webpack-contenthash"),
        pytest.param("main.4f3a2b1c.js.map", True, id="webpack-source-map"),
        pytest.param("index-4f3a2b1c.js", True, id="vite-4-hex"),
        pytest.param("index-Bw9IXxrK.js", True, id="vite-5-base64"),
        # A quarter of 8-character base64 hashes have no digit: revalidated, never wrong.
        pytest.param("index-BwPIXxrK.js", False, id="vite-5-base64-without-a-digit-missed"),
        pytest.param("index-B_w9-xrK.css", True, id="vite-5-base64-punctuation"),
        pytest.param("app.css", False, id="plain"),
        pytest.param("jquery-3.7.1.min.js", False, id="version"),
        pytest.param("report-20241129.pdf", False, id="date-digits-only"),
        pytest.param("app-settings.js", False, id="word-of-eight"),
        pytest.param("MyWidget-Settings.js", False, id="camel-case-word"),
        pytest.param("deadbeefcafe.css", False, id="no-separator"),
        pytest.param("build-27e20196a850/app.css", False, id="hash-in-a-directory"),
        pytest.param("app.27e20196a850", False, id="no-extension"),
    ],
)
def test_hashed_names(name: str, hashed: bool) -> None:
    """Names carrying a content hash as Django, webpack and Vite write them get the long
    cache; words, versions and dates do not."""
    assert bool(re.fullmatch(f".+{HASHED_NAME}", name)) is hashed


def test_static_locations_alias_each_prefix() -> None:
    """Each [static] prefix gets a ^~ location aliased to static/<name>/, both ending in
    "/", and a nested regex location for hashed names whose alias uses its capture."""
    out = render_server_block(protocol="http", static=["/static/", "/assets/img/"], **DEMO)  # type: ignore[arg-type]
    assert "    location ^~ /static/ {\n        alias /srv/shop/static/static/;\n" in out
    assert "    location ^~ /assets/img/ {\n        alias /srv/shop/static/assets-img/;\n" in out
    assert "alias /srv/shop/static/assets-img/$relman_static_file;" in out
    assert out.index("location ^~ /static/") < out.index("location / {")
    assert out.count('add_header Cache-Control "public, max-age=31536000, immutable";') == 2


def test_no_static_renders_no_location() -> None:
    assert "static" not in render_server_block(protocol="http", **DEMO)  # type: ignore[arg-type]


def test_bad_static_prefix_is_rejected() -> None:
    with pytest.raises(UsageError, match="static prefix '/a b/'"):
        render_server_block(protocol="http", static=["/a b/"], **DEMO)  # type: ignore[arg-type]


@pytest.mark.parametrize("listen", ["-1", "0", "65536", "99999", "127.0.0.1:-1",
                                    "[::1]:70000 default_server", "+0"])
def test_a_listen_port_out_of_range_is_rejected(listen: str) -> None:
    """`nginx-config --listen -1` (or a port past 65535) is a usage error naming it, not a
    block that `nginx -t` refuses later."""
    with pytest.raises(UsageError, match="the port must be from 1 to 65535"):
        render_server_block(**{**DEMO, "protocol": "http", "listen": listen})  # type: ignore[arg-type]


@pytest.mark.parametrize("listen", ["80", "8080 default_server", "127.0.0.1:8080", "[::]:443",
                                    "unix:/run/nginx-shop.sock", "localhost", "65535"])
def test_listen_values_that_are_fine(listen: str) -> None:
    out = render_server_block(**{**DEMO, "protocol": "http", "listen": listen})  # type: ignore[arg-type]
    assert f"listen {listen};" in out
