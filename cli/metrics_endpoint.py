"""``--metrics-port`` / ``--metrics-host`` for `csm projector` and `csm worker`: their own /metrics
(infra/metrics_server.py), protected by the API's scrape token when ``CSM_METRICS_TOKEN_FILE`` names one."""

from __future__ import annotations

import ipaddress

import click

from cli.common import EXIT_USAGE, CliError
from infra.config import Settings, read_metrics_token
from infra.metrics_server import Collector, MetricsServer


def metrics_endpoint_options(command):
    command = click.option("--metrics-host", envvar="CSM_METRICS_HOST", default="127.0.0.1", show_default=True,
                           help="Address /metrics listens on (CSM_METRICS_HOST).")(command)
    return click.option("--metrics-port", envvar="CSM_METRICS_PORT", type=click.IntRange(0, 65535), default=None,
                        help="Serve Prometheus metrics at http://HOST:PORT/metrics (CSM_METRICS_PORT; 0: any free "
                        "port, printed). With CSM_METRICS_TOKEN_FILE, scrapes present that token. Default: "
                        "none.")(command)


def start_metrics(settings: Settings, host: str, port: int | None,
                  collectors: list[Collector] | None = None) -> MetricsServer | None:
    """The started server (None without a port); says where it listens on stderr. CliError (exit 2) for a token
    file that is not one or a port that cannot be bound."""
    if port is None:
        return None
    try:
        token = read_metrics_token(settings)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    try:
        server = MetricsServer(host, port, token=token, collectors=collectors).start()
    except OSError as exc:
        raise CliError(f"--metrics-port: cannot listen on {host}:{port} ({exc.strerror or exc})", EXIT_USAGE) from None
    bound_host, bound_port = server.address
    if token is None and not _loopback(host):
        click.echo(f"warning: /metrics on {host} without a scrape token: anyone who reaches the port reads it "
                   "(set CSM_METRICS_TOKEN_FILE)", err=True)
    click.echo(f"metrics: http://{bound_host}:{bound_port}/metrics" + (" (bearer token)" if token else ""), err=True)
    return server


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
