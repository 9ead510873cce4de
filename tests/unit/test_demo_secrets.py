"""The repository's demo secrets are refused on a public address (sipdial/demo_secrets.py),
and the container config takes its secrets from the environment (docker/entrypoint.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sipdial.config import ConfigError, load_config, parse_config
from sipdial.demo_secrets import DEMO_SECRETS, check_demo_secrets

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "sipdial.toml"
DOCKER_TEMPLATE = REPO / "docker" / "sipdial.toml"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"

LOOPBACK_SIP = 'listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]'
LOOPBACK_HTTP = 'listen = "127.0.0.1:8080"'

REAL_SECRETS = {
    "SIPDIAL_ADMIN_TOKEN": "3vQ8-admin-token-from-a-vault",
    "SIPDIAL_USER_201_TOKEN": "tok-0f1e2d3c",
    "SIPDIAL_USER_201_PASSWORD": 'pw with "quotes" \\ and ü',
    "SIPDIAL_USER_202_PASSWORD": "Z9x!q2#r",
}


def example(*, sip_listen: str | None = None, http_listen: str | None = None,
            **secrets: str) -> str:
    """config/sipdial.toml with other listen addresses and secrets (old=new)."""
    text = EXAMPLE.read_text()
    for old, new in [(LOOPBACK_SIP, sip_listen), (LOOPBACK_HTTP, http_listen)]:
        if new is not None:
            assert text.count(old) == 1, old
            text = text.replace(old, new)
    for old, new in secrets.items():
        assert text.count(f'"{old}"') == 1, old
        text = text.replace(f'"{old}"', f'"{new}"')
    return text


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        check_demo_secrets(parse_config(text))
    return str(caught.value)


# ------------------------------------------------------------------ the list itself

def test_every_secret_of_the_example_config_is_listed() -> None:
    config = load_config(EXAMPLE)
    secrets = {u.password for u in config.users.values()} | set(config.api.tokens)
    assert secrets <= DEMO_SECRETS, secrets - DEMO_SECRETS


def test_the_container_template_holds_no_secret() -> None:
    text = DOCKER_TEMPLATE.read_text()
    assert [s for s in DEMO_SECRETS if s in text] == []


# ------------------------------------------------------------------ the check

def test_demo_config_on_loopback_is_accepted() -> None:
    check_demo_secrets(load_config(EXAMPLE))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "[::1]", "localhost"])
def test_other_loopback_listeners_are_accepted(host: str) -> None:
    check_demo_secrets(parse_config(example(
        sip_listen=f'listen = ["udp:{host}:5060"]', http_listen=f'listen = "{host}:8080"')))


def test_wildcard_sip_listener_with_a_demo_password_is_refused_naming_the_key() -> None:
    text = example(sip_listen='listen = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]',
                   **{"admin-secret": "real-admin", "tok-201": "real-201",
                      "secret202": "real-202"})
    assert refusal(text) == (
        'users[0].password is a demo secret ("secret201") and sip.listen has the '
        "non-loopback address 0.0.0.0: change it")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "2001:db8::1", "sip.example.com"])
def test_public_http_listener_with_a_demo_token_is_refused(host: str) -> None:
    listen = f"[{host}]:8080" if ":" in host else f"{host}:8080"
    text = example(http_listen=f'listen = "{listen}"',
                   **{"secret201": "real-201", "secret202": "real-202", "tok-201": "real-tok"})
    assert refusal(text) == (
        f'api.tokens[0] is a demo secret ("admin-secret") and http.listen has the '
        f"non-loopback address {host}: change it")


def test_every_offending_key_is_named() -> None:
    text = example(sip_listen='listen = ["udp:127.0.0.1:5060", "tcp:[::]:5060"]')
    assert refusal(text) == (
        'users[0].password is a demo secret ("secret201") and sip.listen has the '
        "non-loopback address ::: change it (also users[1].password, api.tokens[0], "
        "api.tokens[1])")


def test_wildcard_with_real_secrets_is_accepted() -> None:
    text = example(sip_listen='listen = ["udp:0.0.0.0:5060"]', http_listen='listen = "0.0.0.0:80"',
                   **{"admin-secret": "real-admin", "tok-201": "real-201",
                      "secret201": "real-pw-201", "secret202": "real-pw-202"})
    check_demo_secrets(parse_config(text))


# ------------------------------------------------------------------ the container config

def render(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run docker/entrypoint.sh as the container would, with ``true`` as the command."""
    sh = shutil.which("sh")
    assert sh is not None
    # the entrypoint runs python3: this interpreter's directory first on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(
        [sh, str(ENTRYPOINT), "true"],
        env={"PATH": path, "SIPDIAL_CONFIG_TEMPLATE": str(DOCKER_TEMPLATE),
             "SIPDIAL_CONFIG": str(tmp_path / "run" / "sipdial.toml"), **env},
        capture_output=True, text=True, timeout=30, check=False)


def test_rendered_container_config_parses_and_passes(tmp_path: Path) -> None:
    result = render(tmp_path, REAL_SECRETS)
    assert result.returncode == 0, result.stderr
    rendered = tmp_path / "run" / "sipdial.toml"
    assert rendered.stat().st_mode & 0o077 == 0  # secrets: owner only
    config = load_config(rendered)
    assert config.sip.listen[0].host == "0.0.0.0"  # still public, which is the point
    assert dict(config.api.tokens) == {REAL_SECRETS["SIPDIAL_ADMIN_TOKEN"]: "*",
                                       REAL_SECRETS["SIPDIAL_USER_201_TOKEN"]: "201"}
    assert config.users["201"].password == REAL_SECRETS["SIPDIAL_USER_201_PASSWORD"]
    assert config.users["202"].password == REAL_SECRETS["SIPDIAL_USER_202_PASSWORD"]
    check_demo_secrets(config)


def test_container_with_demo_secrets_in_its_environment_is_refused(tmp_path: Path) -> None:
    result = render(tmp_path, {**REAL_SECRETS, "SIPDIAL_USER_202_PASSWORD": "secret202"})
    assert result.returncode == 0, result.stderr
    with pytest.raises(ConfigError, match=r'^users\[1\]\.password is a demo secret'):
        check_demo_secrets(load_config(tmp_path / "run" / "sipdial.toml"))


def test_container_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    env = dict(REAL_SECRETS)
    del env["SIPDIAL_USER_201_TOKEN"]
    env["SIPDIAL_USER_202_PASSWORD"] = ""
    result = render(tmp_path, env)
    assert result.returncode != 0
    assert "set SIPDIAL_USER_201_TOKEN, SIPDIAL_USER_202_PASSWORD " in result.stderr
    assert not (tmp_path / "run" / "sipdial.toml").exists()
