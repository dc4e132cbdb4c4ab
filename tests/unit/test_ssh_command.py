"""infra/ssh.py without a server: parsing user@host[:port], and the fixed ssh command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import ssh
from infra.ssh import Endpoint, SshOptions, argv


@pytest.mark.parametrize("text, expected", [
    ("cassandra@10.0.0.11", Endpoint("cassandra", "10.0.0.11", 22)),
    ("cassandra@node1.db.example:2222", Endpoint("cassandra", "node1.db.example", 2222)),
    ("root@[::1]:2200", Endpoint("root", "::1", 2200)),
    ("root@[fe80::1]", Endpoint("root", "fe80::1", 22)),
])
def test_destinations_parse(text, expected):
    assert Endpoint.parse(text) == expected


@pytest.mark.parametrize("text, says", [
    ("10.0.0.11", "user name is required"),
    ("@10.0.0.11", "user name is required"),
    ("-oProxyCommand=x@host", "user name is required"),
    ("cassandra@-oProxyCommand=evil", "not a host name"),
    ("cassandra@host:0", "not 1-65535"),
    ("cassandra@host:70000", "not 1-65535"),
    ("cassandra@host:ssh", "not 1-65535"),
    ("cassandra@[::1", "IPv6"),
    ("cassandra@host name", "not a host name"),
])
def test_bad_destinations_are_refused_naming_the_fault(text, says):
    with pytest.raises(ValueError, match=says):
        Endpoint.parse(text)


def test_the_command_line_is_the_fixed_option_set_and_the_destination_after_double_dash():
    options = SshOptions(known_hosts=Path("/ops/known_hosts"), identity=Path("/ops/id_ed25519"))
    command = argv(Endpoint("cassandra", "10.0.0.11", 2222), options, Path("/tmp/x/ssh.log"), "true")
    settings = dict(command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "-o")
    assert command[:6] == ["ssh", "-F", "/dev/null", "-v", "-E", "/tmp/x/ssh.log"]
    assert settings["BatchMode"] == "yes" and settings["StrictHostKeyChecking"] == "yes"
    assert settings["UserKnownHostsFile"] == "/ops/known_hosts" and settings["GlobalKnownHostsFile"] == "/dev/null"
    assert settings["IdentitiesOnly"] == "yes" and settings["PasswordAuthentication"] == "no"
    assert settings["ForwardAgent"] == "no" and settings["ControlPath"] == "none"
    assert command[-9:] == ["-i", "/ops/id_ed25519", "-l", "cassandra", "-p", "2222", "--", "10.0.0.11", "true"]


def test_trust_on_first_use_and_the_agent_only_when_asked():
    options = SshOptions(known_hosts=Path("kh"), identity=None, accept_new_host_key=True)
    command = argv(Endpoint("u", "h"), options, Path("log"), "true")
    settings = dict(command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "-o")
    assert settings["StrictHostKeyChecking"] == "accept-new"
    assert settings["IdentitiesOnly"] == "no" and "-i" not in command  # any key the agent holds


@pytest.mark.parametrize("path", ["/opt/csm/../../etc/passwd", "/opt/csm/./keystore.jks", "/opt//csm/keystore.jks",
                                  "/opt/csm/..", "relative/keystore.jks", "/opt/csm/\nkeystore.jks"])
def test_a_recorded_path_that_is_not_plain_is_refused_before_anything_runs_on_the_node(path):
    """Inspect and rollback act on the paths the store recorded: one that is not a normalised absolute path (a
    '..' climbing out of the remote directory, say) is refused before any connection (endpoint None here)."""
    with pytest.raises(ValueError, match="not an absolute path"):
        ssh.inspect(None, None, [path])
    with pytest.raises(ValueError, match="not an absolute path"):
        ssh.restore_generation(None, None, [(path, None, "")], 1)


def test_a_remote_directory_that_is_not_normalised_is_refused_by_the_deploy_as_well():
    with pytest.raises(ValueError, match="not an absolute path"):
        ssh.stage(None, None, "/opt/csm/../etc", [("keystore.jks", b"x")])
    with pytest.raises(ValueError, match="not an absolute path"):
        ssh.stage(None, None, "/opt//csm", [("keystore.jks", b"x")])
