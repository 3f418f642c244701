"""Operating the server: TLS, the configuration file, the admin token file, several processes,
health and metrics, structured logs.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from suture.cli.main import main
from suture.errors import UsageError
from suture.repo import create
from suture.server import Server, open_server
from suture.server import config as cfg
from suture.server.config import ServerConfig
from tests.support.metrics import parse_exposition

ADMIN = "sat_ops-test-admin-token-0123456789abcdef"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ops") / "repo"
    create.init(root)
    return root


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_server(repo: Path, tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    cert, key = self_signed(tmp_path)
    config = ServerConfig(
        repo=repo,
        listen="127.0.0.1:0",
        db=f"sqlite:///{tmp_path}/s.db",
        tls_cert=cert,
        tls_key=key,
    ).check()
    srv = open_server(config=config, admin_token=ADMIN, log=[].append)
    srv.start()
    yield srv, cert
    srv.stop()


def test_tls_serves_https_with_hsts_and_secure_cookies(tls_server: tuple[Server, Path]) -> None:
    """security-repro 03: the session cookie had no Secure flag (there was no TLS at all)."""
    srv, cert = tls_server
    assert srv.url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection(
        srv.url.removeprefix("https://"), context=context, timeout=10
    )
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    assert resp.getheader("Strict-Transport-Security") == "max-age=31536000"
    conn.request(
        "POST",
        "/login",
        body=f"token={ADMIN}&next=/",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 303
    cookie = {p.strip() for p in (resp.getheader("Set-Cookie") or "").split(";")}
    assert {"HttpOnly", "SameSite=Strict", "Secure"} <= cookie
    conn.close()


def test_plain_http_has_no_hsts(repo: Path, tmp_path: Path) -> None:
    srv = open_server(repo, listen="127.0.0.1:0", db=f"sqlite:///{tmp_path}/s.db", log=[].append)
    srv.start()
    try:
        conn = http.client.HTTPConnection(srv.url.removeprefix("http://"), timeout=10)
        conn.request("GET", "/healthz", headers={"X-Request-Id": "abc-123"})
        resp = conn.getresponse()
        resp.read()
        assert resp.getheader("Strict-Transport-Security") is None
        assert resp.getheader("X-Request-Id") == "abc-123"  # a sane one is kept
        conn.request("GET", "/healthz", headers={"X-Request-Id": "bad id\t"})
        resp = conn.getresponse()
        resp.read()
        assert resp.getheader("X-Request-Id") not in ("", "bad id\t", None)
        conn.close()
    finally:
        srv.stop()


# --- configuration ------------------------------------------------------------------------


def test_the_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        'format = 1\n[server]\nrepo = "repo"\nlisten = "127.0.0.1:9000"\nworkers = 2\n'
        'trusted_proxies = ["127.0.0.1"]\n[log]\nformat = "json"\n'
        "[limits]\ncheckin_burst = 50\ncheckin_per_s = 2\n[retention]\nevents_per_host = 20\n"
    )
    config = cfg.load(path, workers=3, listen=None)
    assert config.repo == tmp_path / "repo"  # relative to the file
    assert (config.listen, config.workers, config.log_format) == ("127.0.0.1:9000", 3, "json")
    assert config.trusted_proxies == ("127.0.0.1",)
    assert (config.limits.checkin_burst, config.limits.checkin_per_s) == (50, 2)
    assert config.retention.events_per_host == 20
    for bad in (
        "[server]\nrepo = 'r'\nlisen = 'x'\n",  # a misspelt key
        "[nope]\n",
        "[server]\nrepo = 'r'\nworkers = '2'\n",
        "[limits]\ncheckin_burst = 1.5\n",
        "[server]\nrepo = 'r'\n[tls]\ncert = 'c'\n",  # a certificate without its key
        "not toml [",
    ):
        path.write_text(bad)
        with pytest.raises(UsageError):
            cfg.load(path)


def test_the_admin_token_file_must_be_private_and_long(tmp_path: Path) -> None:
    """A 16-character, world-readable admin token was accepted without a warning."""
    made = tmp_path / "new-token"
    token, new = cfg.read_admin_token(made)
    assert new and token.startswith("sat_") and len(token) >= 32
    assert made.stat().st_mode & 0o777 == 0o600
    assert cfg.read_admin_token(made) == (token, False)
    short = tmp_path / "short"
    short.write_text("sat_0123456789ab\n")
    short.chmod(0o600)
    with pytest.raises(UsageError, match="shorter"):
        cfg.read_admin_token(short)
    shared = tmp_path / "shared"
    shared.write_text(ADMIN + "\n")
    shared.chmod(0o644)
    with pytest.raises(UsageError, match="read by other users"):
        cfg.read_admin_token(shared)


def test_serve_refuses_a_shared_token_with_exit_64(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "token"
    shared.write_text(ADMIN + "\n")
    shared.chmod(0o644)
    argv = ["serve", "--repo", str(repo), "--listen", "127.0.0.1:0"]
    argv += ["--db", f"sqlite:///{tmp_path}/s.db", "--admin-token-file", str(shared)]
    assert main(argv) == 64
    assert "chmod 600" in capsys.readouterr().err
    assert main([*argv[:-2], "--workers", "0"]) == 64


# --- health and metrics ------------------------------------------------------------------------


def get(srv: Server, path: str, token: str = ADMIN) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(srv.url.removeprefix("http://"), timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_health_says_when_the_metadata_expired(repo: Path, tmp_path: Path) -> None:
    offset = [0.0]
    srv = open_server(
        repo,
        listen="127.0.0.1:0",
        db=f"sqlite:///{tmp_path}/s.db",
        log=[].append,
        clock=lambda: time.time() + offset[0],
    )
    srv.start()
    try:
        assert get(srv, "/healthz")[0] == 200
        offset[0] = 3 * 86400  # timestamp.json lives one day
        status, body = get(srv, "/healthz")
        health = json.loads(body)
        assert (status, health["ok"]) == (503, False)
        assert health["checks"]["database"]["ok"] is True
        assert "suture repo refresh" in health["checks"]["repository"]["error"]
    finally:
        srv.stop()


def test_metrics_say_expiry_halts_and_build(repo: Path, tmp_path: Path) -> None:
    srv = open_server(
        repo,
        listen="127.0.0.1:0",
        db=f"sqlite:///{tmp_path}/s.db",
        log=[].append,
        admin_token=ADMIN,
    )
    srv.start()
    try:
        conn = http.client.HTTPConnection(srv.url.removeprefix("http://"), timeout=10)
        body = json.dumps({"level": 3, "reason": "x"})
        headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
        conn.request("POST", "/api/v1/rollouts/testing/halt", body=body, headers=headers)
        assert conn.getresponse().read() and True
        conn.close()
        samples = parse_exposition(get(srv, "/metrics")[1].decode())
    finally:
        srv.stop()
    assert samples['suture_rollouts_halted{channel="testing"}'] == 1
    assert 0 < samples['suture_repository_metadata_expires_seconds{role="timestamp"}'] <= 86400
    assert samples["suture_repository_metadata_ok"] == 1
    assert any(k.startswith("suture_build_info{") for k in samples)
    assert samples["suture_server_processes"] == 1


def test_json_logs_carry_the_request_id(repo: Path, tmp_path: Path) -> None:
    log: list[str] = []
    config = replace(
        ServerConfig(repo=repo, listen="127.0.0.1:0", db=f"sqlite:///{tmp_path}/s.db"),
        log_format="json",
    )
    srv = open_server(config=config, log=log.append)
    srv.start()
    try:
        conn = http.client.HTTPConnection(srv.url.removeprefix("http://"), timeout=10)
        conn.request("GET", "/healthz", headers={"X-Request-Id": "trace-7"})
        conn.getresponse().read()
        conn.close()
    finally:
        srv.stop()
    records = [json.loads(line) for line in log]
    access = [r for r in records if r.get("request_id") == "trace-7"]
    assert access and access[0]["level"] == "info" and '"GET /healthz' in access[0]["message"]


# --- several processes on one socket --------------------------------------------------------------


def test_workers_share_one_socket_and_stop_together(repo: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(ADMIN + "\n")
    token.chmod(0o600)
    argv = [sys.executable, "-m", "suture.cli.main", "serve", "--repo", str(repo), "--json"]
    argv += ["--listen", "127.0.0.1:0", "--db", f"sqlite:///{tmp_path}/s.db", "--workers", "2"]
    argv += ["--admin-token-file", str(token), "--no-access-log"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving" in line, line
        url = line.split(" on ")[-1].strip()
        deadline = time.monotonic() + 30
        processes = 0.0
        while time.monotonic() < deadline and processes < 2:
            time.sleep(1)
            conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
            try:
                conn.request("GET", "/metrics")
                samples = parse_exposition(conn.getresponse().read().decode())
                processes = samples.get("suture_server_processes", 0)
            except OSError:
                pass
            finally:
                conn.close()
        assert processes == 2  # both reported their metrics to the database
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["stopped"] is True
