"""Redis access: TLS with a CA and a client certificate, and a least-privilege producer ACL user."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.seeded_records import RecordWriter, tracer_provider
from tests.support import VENV_BIN, RedisHandle, run_python, wait_for
from tests.test_alerts import running
from tests.test_cli import ONE_RULE, run_all
from tests.test_console_acl import READER_ACL
from tests.test_console_live import ConsoleProcess
from tracestream.connection import Tls, connect
from tracestream.embedded_redis import EmbeddedRedis, free_port, redis_server_binary
from tracestream.error_issues import list_issues
from tracestream.exporters.redis_stream import RedisStreamSpanExporter
from tracestream.query import Query, search, trace_tree
from tracestream.redis_errors import advice
from tracestream.schema import StreamKeys
from tracestream.settings import ConfigError, Settings
from tracestream.summary import service_status

# The documented producer user (docs/security.md); `{stream}` is the configured stream name.
PRODUCER_ACL = (
    "ACL SETUSER producer on >{password} resetkeys ~{stream}* resetchannels -@all"
    " +evalsha +script|load +script|exists +xadd +rpush +expire +xtrim +hset +ping +select"
    " +incrby +decrby +lpush +lpop"
    " +zadd +zremrangebyscore +zremrangebyrank +hincrby"
)


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key_and_cert(
    folder: Path,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca_key_usage: bool = True,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    # Python 3.13 verifies strictly (VERIFY_X509_STRICT): a CA must say it signs certificates,
    # and every certificate it signs must name its key.
    if issuer:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False
        )
    elif ca_key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("tls")
    ca = _key_and_cert(folder, "ca", None)
    _key_and_cert(folder, "server", ca)
    _key_and_cert(folder, "client", ca)
    return Certificates(
        *(folder / name for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key"))
    )


@pytest.fixture(scope="module")
def tls_redis(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server that speaks only TLS and demands a client certificate; yields its rediss:// URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(certificates.server_cert),
            "--tls-key-file",
            str(certificates.server_key),
            "--tls-ca-cert-file",
            str(certificates.ca),
            "--tls-auth-clients",
            "yes",
            "--save",
            "",
            "--dir",
            str(tmp_path_factory.mktemp("tls-redis")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"rediss://127.0.0.1:{port}/0"
    tls = Tls(str(certificates.ca), str(certificates.client_cert), str(certificates.client_key))

    def ready() -> bool:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            with connect(url, 0.5, tls=tls) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_for(ready, 10, what="TLS redis-server")
        yield url
    finally:
        process.terminate()
        process.wait(5)


def _export_one_span(settings: Settings) -> bool:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

    exporter = RedisStreamSpanExporter(settings)
    results: list[SpanExportResult] = []

    class Recording(SimpleSpanProcessor):
        def on_end(self, span):  # type: ignore[no-untyped-def]
            results.append(exporter.export([span]))

    provider = TracerProvider(resource=Resource({"service.name": "tls"}), shutdown_on_exit=False)
    provider.add_span_processor(Recording(exporter))
    with provider.get_tracer("t").start_as_current_span("checkout"):
        pass
    exporter.shutdown()
    return results == [SpanExportResult.SUCCESS]


def test_exports_over_tls_with_ca_and_client_certificate(tls_redis: str, certificates: Certificates) -> None:
    stream = f"tls:{uuid.uuid4().hex[:8]}"
    settings = Settings.load(
        environ={
            "TRACESTREAM_REDIS_CA": str(certificates.ca),
            "TRACESTREAM_REDIS_CERT": str(certificates.client_cert),
            "TRACESTREAM_REDIS_KEY": str(certificates.client_key),
        },
        redis_url=tls_redis,
        stream=stream,
    )
    assert _export_one_span(settings)
    with connect(tls_redis, 2, decode=True, tls=Tls.of(settings)) as client:
        entries = client.xrange(StreamKeys(stream).spans)
    assert [fields["name"] for _, fields in entries] == ["checkout"]


def test_an_upper_case_rediss_scheme_keeps_its_tls_files(tls_redis: str, certificates: Certificates) -> None:
    """redis-py reads `REDISS://` as TLS, but ours compared the scheme as written: the CA and the
    client certificate were left out, and every write failed its certificate check."""
    settings = Settings.load(
        environ={},
        redis_url=tls_redis.replace("rediss://", "REDISS://"),
        redis_ca=str(certificates.ca),
        redis_cert=str(certificates.client_cert),
        redis_key=str(certificates.client_key),
        redis_timeout="1s",
        stream=f"tls:{uuid.uuid4().hex[:8]}",
    )
    assert _export_one_span(settings)


def test_alerts_run_over_tls_evaluates_its_rules(
    tls_redis: str, certificates: Certificates, tmp_path: Path
) -> None:
    """It opened its client without the TLS files: "cannot reach Redis … CERTIFICATE_VERIFY_FAILED;
    retrying", for ever, while every other reader connected."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(ONE_RULE)
    handle = RedisHandle(url=tls_redis, stream=f"tls:{uuid.uuid4().hex[:8]}")
    files = {
        "TRACESTREAM_REDIS_CA": str(certificates.ca),
        "TRACESTREAM_REDIS_CERT": str(certificates.client_cert),
        "TRACESTREAM_REDIS_KEY": str(certificates.client_key),
    }
    with running(handle, rules, "tls", **files) as runner:
        assert "evaluating 1 rule on 1 shard(s)" in runner.stderr()


def test_tls_without_the_client_certificate_or_ca_is_refused(
    tls_redis: str, certificates: Certificates
) -> None:
    no_client_cert = Settings.load(
        environ={}, redis_url=tls_redis, redis_ca=str(certificates.ca), redis_timeout="1s"
    )
    assert not _export_one_span(no_client_cert)  # refused by the server, reported as a failed export
    no_ca = Settings.load(
        environ={},
        redis_url=tls_redis,
        redis_cert=str(certificates.client_cert),
        redis_key=str(certificates.client_key),
        redis_timeout="1s",
    )
    assert not _export_one_span(no_ca)  # our self-made CA is not trusted by default


WARNING_APP = (
    "import logging, tracestream; tracestream.configure(); logging.getLogger('shop').warning('paid')"
)


def _told(url: str, spool: Path, **settings: str) -> list[str]:
    """What the app's failed-write line and `tracestream search` say of `url`."""
    env = {
        "PATH": "/usr/bin:/bin",
        "TRACESTREAM_REDIS_URL": url,
        "TRACESTREAM_SPOOL_DIR": str(spool),
        "TRACESTREAM_REDIS_TIMEOUT": "500ms",
        "TRACESTREAM_SHUTDOWN_TIMEOUT": "1s",
        **settings,
    }
    failed_writes = [line for line in run_python(WARNING_APP, env).splitlines() if "cannot write" in line]
    cli = subprocess.run(
        [str(VENV_BIN / "tracestream"), "search"], env=env, capture_output=True, text=True, timeout=60
    )
    assert cli.returncode == 1 and len(cli.stderr.splitlines()) == 1, cli.stderr
    return [*failed_writes, cli.stderr]


def _both_say(advice: str, url: str, spool: Path, **settings: str) -> None:
    """The app's failed-write line and `tracestream search` each give `advice`."""
    told = _told(url, spool, **settings)
    assert len(told) == 2 and all(advice in line for line in told), told


def test_a_redis_url_to_a_tls_port_says_to_use_rediss(tls_redis: str, tmp_path: Path) -> None:
    """The server drops the connection at once: redis-py says only `Connection reset by peer`."""
    closed = "the server closed the connection: it may be restarting, or, if it speaks TLS, use rediss://"
    _both_say(closed, tls_redis.replace("rediss://", "redis://"), tmp_path)


def test_a_rediss_url_to_a_plain_port_says_to_use_redis(acl_redis: EmbeddedRedis, tmp_path: Path) -> None:
    """A plain Redis waits for a command while the client waits for its TLS hello: a timeout."""
    handshake = "the TLS handshake got no answer: if the server does not speak TLS, use redis://"
    _both_say(handshake, f"rediss://127.0.0.1:{acl_redis.port}/0", tmp_path)


def test_a_missing_client_certificate_is_said_to_be_what_the_server_wants(
    tls_redis: str, certificates: Certificates, tmp_path: Path
) -> None:
    """The line said only "EOF occurred in violation of protocol"."""
    wanted = "if it asks for a client certificate, set TRACESTREAM_REDIS_CERT and TRACESTREAM_REDIS_KEY"
    _both_say(wanted, tls_redis, tmp_path, TRACESTREAM_REDIS_CA=str(certificates.ca))


def test_tls_files_beside_a_url_without_tls_are_said_to_be_unused(
    certificates: Certificates, acl_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """They were left out without a word, and doctor said "no TLS" beside them."""
    url = f"redis://127.0.0.1:{acl_redis.port}/0"
    env = {"PATH": "/usr/bin:/bin", "TRACESTREAM_REDIS_URL": url}
    env["TRACESTREAM_REDIS_CA"] = str(certificates.ca)
    lines = [line for line in run_python(WARNING_APP, env).splitlines() if line.startswith("tracestream:")]
    assert lines == [
        f"tracestream: WARNING TRACESTREAM_REDIS_CA set, but {url} does not use TLS: they are read with a "
        "rediss:// URL only"
    ]


def test_a_tls_connection_dropped_is_not_told_to_use_tls() -> None:
    """Only a plain connection a server drops at once is likely one to a TLS port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def drop_each_connection() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                connection.recv(1)
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.close()  # a reset, as a TLS port's

    threading.Thread(target=drop_each_connection, daemon=True).start()
    advice_by_scheme = {}
    try:
        for scheme in ("redis", "rediss"):
            with pytest.raises(redis.ConnectionError) as dropped:
                connect(f"{scheme}://127.0.0.1:{listener.getsockname()[1]}/0", 2).ping()
            advice_by_scheme[scheme] = advice(dropped.value)
    finally:
        listener.close()
    assert advice_by_scheme == {
        "redis": "the server closed the connection: it may be restarting, or, if it speaks TLS, use rediss://",
        "rediss": None,
    }


def test_a_tls_session_the_server_resets_after_the_handshake_is_said_to_want_a_certificate(
    certificates: Certificates,
) -> None:
    """A TLS 1.3 server that wants a client certificate ends the session after the handshake. On
    Python 3.13 the client then meets a reset where 3.11 met an EOF, and no advice was given."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certificates.server_cert, certificates.server_key)
    listener = socket.create_server(("127.0.0.1", 0))

    def reset_each_session() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                session = server.wrap_socket(connection, server_side=True)
                session.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                session.recv(1)
                session.close()  # a reset, once the handshake is done

    threading.Thread(target=reset_each_session, daemon=True).start()
    try:
        url = f"rediss://127.0.0.1:{listener.getsockname()[1]}/0"
        with pytest.raises(redis.ConnectionError) as reset:
            connect(url, 2, tls=Tls(ca=str(certificates.ca))).ping()
    finally:
        listener.close()
    assert advice(reset.value) == (
        "the server ended the TLS session: if it asks for a client certificate, set "
        "TRACESTREAM_REDIS_CERT and TRACESTREAM_REDIS_KEY"
    ), str(reset.value)


def test_a_chain_only_strict_verification_refuses_is_said_to_need_reissuing(tmp_path: Path) -> None:
    """A CA made as Redis's own gen-test-certs.sh makes one (no keyUsage) works on Python 3.11 and
    fails on 3.13, which verifies strictly by default: the line blamed TRACESTREAM_REDIS_CA. Here
    the client asks for the strict check, as 3.13 does, and redis-py's words are put around it."""
    ca = _key_and_cert(tmp_path, "ca", None, ca_key_usage=False)
    _key_and_cert(tmp_path, "server", ca)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))

    def handshake_once() -> None:
        connection, _ = listener.accept()
        with contextlib.suppress(OSError):
            server.wrap_socket(connection, server_side=True)

    threading.Thread(target=handshake_once, daemon=True).start()
    strict = ssl.create_default_context(cafile=tmp_path / "ca.crt")
    strict.verify_flags |= ssl.VERIFY_X509_STRICT
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(ssl.SSLCertVerificationError) as refused:
            strict.wrap_socket(socket.create_connection(listener.getsockname()), server_hostname="127.0.0.1")
    finally:
        listener.close()
    reason = refused.value.args
    error = redis.ConnectionError(f"Error {reason[0]} connecting to {address}. {reason[1]}.")
    assert advice(error) == (
        "Python 3.13 and later verify certificates strictly (VERIFY_X509_STRICT): reissue the CA with "
        "keyUsage keyCertSign and key identifiers (redis-cli and older Pythons take it as it is)"
    ), str(error)


def test_a_missing_certificate_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TRACESTREAM_REDIS_CA=.*no such file"):
        Settings.load(environ={"TRACESTREAM_REDIS_CA": str(tmp_path / "missing.pem")})


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


def test_producer_acl_user_can_export_but_not_read(acl_redis: EmbeddedRedis) -> None:
    stream = f"acl:{uuid.uuid4().hex[:8]}"
    admin = acl_redis.client()
    admin.execute_command(*PRODUCER_ACL.format(password="s3cret-producer", stream=stream).split())
    producer_url = f"redis://producer:s3cret-producer@127.0.0.1:{acl_redis.port}/0"

    settings = Settings.load(environ={}, redis_url=producer_url, stream=stream)
    assert _export_one_span(settings)
    assert [f["name"] for _, f in admin.xrange(StreamKeys(stream).spans)] == ["checkout"]
    records = RecordWriter(RedisHandle(url=producer_url, stream=stream))
    records.log("paid")  # the log script also appends and trims the digest
    records.close()
    assert [f["body"] for _, f in admin.xrange(stream)] == ["paid"]
    assert admin.xlen(StreamKeys(stream).digest) == 1
    trace_keys = [key for key in admin.keys(f"{stream}:trace:*") if key != f"{stream}:trace:order"]
    assert len(trace_keys) == 1 and admin.ttl(trace_keys[0]) > 0
    assert admin.lrange(f"{stream}:trace:order", 0, -1) == [trace_keys[0].rsplit(":", 1)[1]]

    producer = redis.Redis.from_url(producer_url, decode_responses=True)
    reads = [
        lambda: producer.xrange(StreamKeys(stream).spans),
        lambda: producer.xread({StreamKeys(stream).spans: "0"}),
        lambda: producer.lrange(trace_keys[0], 0, -1),
        lambda: producer.hgetall(f"{stream}:status:x"),
        lambda: producer.keys("*"),
        lambda: producer.set(f"{stream}:other", "x"),
    ]
    for read in reads:
        with pytest.raises(redis.exceptions.NoPermissionError):
            read()
    # It may load scripts (the exporter's own), but a script runs with the caller's rights.
    sneaky = producer.script_load("return redis.call('XRANGE', KEYS[1], '-', '+')")
    with pytest.raises(redis.exceptions.ResponseError, match=r"permission|can't run"):
        producer.evalsha(sneaky, 1, StreamKeys(stream).spans)
    with pytest.raises(redis.exceptions.NoPermissionError):
        producer.xadd("someone-else:stream", {"v": "1"})  # only its own keys
    producer.close()
    admin.close()


def _traced_error(handle: RedisHandle) -> str:
    """A request's span with an error record in it, as a service writes them; its trace id."""
    provider = tracer_provider(handle, "api")
    writer = RecordWriter(handle)
    with provider.get_tracer("t").start_as_current_span("GET /checkout") as span:
        ids = span.get_span_context()
        failure = ("ValueError", "declined", "Traceback:\nValueError: declined")
        ids_of = {"trace_id": ids.trace_id, "span_id": ids.span_id}
        writer.log("card declined", severity="ERROR", exception=failure, **ids_of)
    provider.shutdown()
    writer.close()
    return format(ids.trace_id, "032x")


def test_the_producer_user_hears_it_may_not_read_not_that_nothing_is_there(acl_redis: EmbeddedRedis) -> None:
    """`errors` and `trace` as the services' user say in one line which command it may not run, exit 1,
    instead of "no error issues" and "no records for trace"; the console answers 502 naming it."""
    stream = f"acl:{uuid.uuid4().hex[:8]}"
    trace_id = _traced_error(RedisHandle(acl_redis.url, stream))
    user = f"producer-{uuid.uuid4().hex[:8]}"
    with acl_redis.client() as admin:
        admin.execute_command(
            *PRODUCER_ACL.replace("producer", user, 1).format(password="pw", stream=stream).split()
        )
    producer = RedisHandle(f"redis://{user}:pw@127.0.0.1:{acl_redis.port}/0", stream)
    refused = {"ZRANGE": ["errors"], "LRANGE": ["trace", trace_id]}
    for command, done in zip(refused, run_all(producer, *refused.values()), strict=True):
        assert done.returncode == 1 and done.stdout == "", done
        assert done.stderr.count("\n") == 1 and f"{command} on {stream}:" in done.stderr, done
    console = ConsoleProcess(producer, token=None).start()
    try:
        for command, path in (("ZRANGE", "api/errors"), ("LRANGE", f"api/trace/{trace_id}")):
            response = httpx.get(console.url + path)
            assert response.status_code == 502, response.text
            assert f"{command} on {stream}:" in response.json()["error"], response.text
    finally:
        console.stop()


def test_readers_answer_at_once_while_redis_pauses_writes(acl_redis: EmbeddedRedis) -> None:
    """`CLIENT PAUSE WRITE` (a FAILOVER pauses writes so too) holds EVALSHA until it ends, never
    EVALSHA_RO: the documented reader searches, reads a trace, the issues and the services at once, its
    scripts not even loaded yet. Without `+evalsha_ro` it still reads, once the pause is over."""
    stream = f"acl:{uuid.uuid4().hex[:8]}"
    trace_id = _traced_error(RedisHandle(acl_redis.url, stream))
    user = f"reader-{uuid.uuid4().hex[:8]}"
    admin = acl_redis.client()
    admin.execute_command(*READER_ACL.replace("reader", user, 1).format(password="pw", stream=stream).split())
    admin.execute_command("ACL", "SETUSER", user, "+evalsha_ro")  # as docs/security.md's reader has it
    admin.script_flush()
    reader = RedisHandle(f"redis://{user}:pw@127.0.0.1:{acl_redis.port}/0", stream)
    reads: dict[str, Callable[[redis.Redis], list[str]]] = {
        "card declined": lambda client: [e.body for e in search(client, stream, Query()).records],
        "GET /checkout": lambda client: [
            node.span.name for _, node in trace_tree(client, stream, trace_id).walk()
        ],
        "ValueError": lambda client: [issue.type for issue in list_issues(client, stream)],
        "api": lambda client: [status.service for status in service_status(client, stream)],
    }
    try:
        admin.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        with connect(reader.url, 5, decode=True) as client:
            for found, read in reads.items():
                started = time.monotonic()
                assert read(client) == [found]
                assert time.monotonic() - started < 1, found
        # the CLI waits 2 s for an answer (TRACESTREAM_REDIS_TIMEOUT), well within the pause
        commands = (["search"], ["trace", trace_id], ["errors"], ["services"])
        for found, done in zip(reads, run_all(reader, *commands), strict=True):
            assert done.returncode == 0 and found in done.stdout, done
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.execute_command("ACL", "SETUSER", user, "-evalsha_ro")
        admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
        started = time.monotonic()
        with connect(reader.url, 5, decode=True) as client:
            assert reads["ValueError"](client) == ["ValueError"]
        assert time.monotonic() - started > 1
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()


def test_a_producer_that_may_not_write_its_status_is_told_doctor_cannot_see_it(
    acl_redis: EmbeddedRedis, capfd: pytest.CaptureFixture[str]
) -> None:
    """Without `+hset` every record is stored, and the process is missing from `tracestream
    doctor`, so its drops and failures could never show there: said once, naming the right."""
    stream = f"acl:{uuid.uuid4().hex[:8]}"
    admin = acl_redis.client()
    user = f"nohset{uuid.uuid4().hex[:6]}"
    acl = PRODUCER_ACL.replace("producer", user, 1).format(password="pw", stream=stream) + " -hset"
    admin.execute_command(*acl.split())
    url = f"redis://{user}:pw@127.0.0.1:{acl_redis.port}/0"
    records = RecordWriter(RedisHandle(url=url, stream=stream))
    records.log("paid")
    for _ in range(2):
        records.writer.publish_status("logs", {"exported": 1})
    records.close()
    told = [line for line in capfd.readouterr().err.splitlines() if "status" in line]
    assert [f["body"] for _, f in admin.xrange(stream)] == ["paid"]
    assert told == [
        f"tracestream: WARNING Redis at redis://{user}:***@127.0.0.1:{acl_redis.port}/0 refuses this "
        "process's status (the URL's user lacks +hset): `tracestream doctor` cannot show this "
        "process; docs/security.md lists the rights"
    ]
    admin.close()


@pytest.mark.parametrize("right", ["xadd", "xtrim", "expire", "incrby", "lpop"])
def test_a_producer_missing_a_right_the_store_needs_is_told_which(
    acl_redis: EmbeddedRedis, capfd: pytest.CaptureFixture[str], right: str
) -> None:
    """Redis names only the script's line (`on @user_script:215`): the operator diffed the
    user's ACL against docs/security.md by hand. Nothing is stored, and the line names the right."""
    stream = f"acl:{uuid.uuid4().hex[:8]}"
    admin = acl_redis.client()
    user = f"no{right}{uuid.uuid4().hex[:6]}"
    acl = PRODUCER_ACL.replace("producer", user, 1).format(password="pw", stream=stream) + f" -{right}"
    admin.execute_command(*acl.split())
    records = RecordWriter(RedisHandle(url=f"redis://{user}:pw@127.0.0.1:{acl_redis.port}/0", stream=stream))
    stored = records.writer.write_rows([records.row("paid")])
    records.close()
    told = [line for line in capfd.readouterr().err.splitlines() if "cannot write" in line]
    assert stored is False and admin.xlen(stream) == 0
    assert len(told) == 1 and f"; grant the URL's user +{right})" in told[0], told
    admin.close()
