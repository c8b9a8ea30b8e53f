"""Secrets in what databases and SQLAlchemy print: SQLAlchemy's insertmanyvalues statements, a
constraint error naming a column and its value, and the SQL that sets a password."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.sql.util import _long_statement, _repr_params

from tests.support import RedisHandle, run_python_process, wait_for
from tracestream.otel_setup.sql_parameters import ENGINE_LOGGER, BoundParameters
from tracestream.schema import normalized_message
from tracestream.scrubbing import KeyPolicy, Scrubber
from tracestream.sql_text import secret_placeholders

SCRUBBER = Scrubber()

# SQLAlchemy 2's insertmanyvalues for an ORM `add_all()` of two rows into SQLAlchemy's Quick Start
# table (name, password, api_token) where the rows' order must be kept (the primary key is the
# server's): they go through a derived table, whose columns the SELECT list puts back in the
# INSERT's order. asyncpg's is what the probe captured; the others are SQLAlchemy 2.1.9's for
# psycopg (numeric style), pg8000 and pyodbc on SQL Server.
_DERIVED = "AS imp_sen(p0, p1, p2, sen_counter) ORDER BY sen_counter"
INSERTMANYVALUES = {
    "asyncpg": "INSERT INTO user_account (name, password, api_token) SELECT p0::VARCHAR, p1::VARCHAR, "
    "p2::VARCHAR FROM (VALUES ($1::VARCHAR, $2::VARCHAR, $3::VARCHAR, 0), ($4::VARCHAR, $5::VARCHAR, "
    f"$6::VARCHAR, 1)) {_DERIVED} RETURNING user_account.id, user_account.id AS id__1",
    "psycopg numeric": "INSERT INTO user_account (name, password, api_token) SELECT p0::VARCHAR, "
    "p1::VARCHAR, p2::VARCHAR FROM (VALUES (:1::VARCHAR, :2::VARCHAR, :3::VARCHAR, 0), (:4::VARCHAR, "
    f":5::VARCHAR, :6::VARCHAR, 1)) {_DERIVED} RETURNING user_account.id, user_account.id AS id__1",
    "pg8000": "INSERT INTO user_account (name, password, api_token) SELECT p0::VARCHAR, p1::VARCHAR, "
    "p2::VARCHAR FROM (VALUES (%s::VARCHAR, %s::VARCHAR, %s::VARCHAR, 0), (%s::VARCHAR, %s::VARCHAR, "
    f"%s::VARCHAR, 1)) {_DERIVED} RETURNING user_account.id, user_account.id AS id__1",
    "pyodbc": "INSERT INTO user_account (name, password, api_token) OUTPUT inserted.id, inserted.id AS "
    f"id__1 SELECT p0, p1, p2 FROM (VALUES (?, ?, ?, 0), (?, ?, ?, 1)) {_DERIVED}",
}
# SQLAlchemy 2.1.9's for a primary key from a Sequence: its column's item is `nextval(…)`, no
# parameter, and the derived table's columns are named by the INSERT's positions (p1, p2).
SEQUENCE_KEY = (
    "INSERT INTO t5 (id, name, password) SELECT nextval('s'), p1::VARCHAR, p2::VARCHAR FROM (VALUES "
    "($1::VARCHAR, $2::VARCHAR, 0), ($3::VARCHAR, $4::VARCHAR, 1)) AS imp_sen(p1, p2, sen_counter) "
    "ORDER BY sen_counter RETURNING t5.id, t5.id AS id__1"
)


@pytest.mark.parametrize("statement", INSERTMANYVALUES.values(), ids=INSERTMANYVALUES.keys())
def test_insertmanyvalues_rows_are_told_by_the_inserts_columns(statement: str) -> None:
    assert sorted(secret_placeholders(statement, KeyPolicy().secret)) == [1, 2, 4, 5]


def test_a_derived_tables_columns_are_found_by_name_in_the_select_list() -> None:
    assert sorted(secret_placeholders(SEQUENCE_KEY, KeyPolicy().secret)) == [1, 3]


@pytest.mark.parametrize(
    ("statement", "secret"),
    [
        # what follows the rows binds by its own column
        ("INSERT INTO users (email, password) VALUES (?, ?) ON CONFLICT (email) "
         "DO UPDATE SET token = ?, note = ?", [1, 2]),
        ("INSERT INTO users (email, password) VALUES (?, ?) ON DUPLICATE KEY UPDATE note = ?", [1]),
    ],
)  # fmt: skip
def test_placeholders_after_an_inserts_rows_are_told_by_their_comparison(
    statement: str, secret: list[int]
) -> None:
    assert sorted(secret_placeholders(statement, KeyPolicy().secret)) == secret


# The probe's IntegrityError on asyncpg, a duplicate e-mail in a two-row sign-up.
FAILED_INSERTMANYVALUES = (
    "(sqlalchemy.dialects.postgresql.asyncpg.AsyncAdapt_asyncpg_dbapi.UniqueViolationError) duplicate key "
    'value violates unique constraint "member_email_key"\n'
    "[SQL: INSERT INTO member (email, password) SELECT p0::VARCHAR, p1::VARCHAR FROM (VALUES ($1::VARCHAR, "
    "$2::VARCHAR, 0), ($3::VARCHAR, $4::VARCHAR, 1)) AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter "
    "RETURNING member.id, member.id AS id__1]\n"
    "[parameters: ('a@x.io', 'dup-Secret-2', 'a@x.io', 'dup-Secret-3')]\n"
    "(Background on this error at: https://sqlalche.me/e/21/gkpj)"
)


def test_a_failed_insertmanyvalues_statements_secret_parameters_are_redacted() -> None:
    assert SCRUBBER.scrub_text(FAILED_INSERTMANYVALUES) == FAILED_INSERTMANYVALUES.replace(
        "('a@x.io', 'dup-Secret-2', 'a@x.io', 'dup-Secret-3')",
        "('a@x.io', '[REDACTED]', 'a@x.io', '[REDACTED]')",
    )


def test_insertmanyvalues_echo_parameters_are_redacted() -> None:
    """`echo=True`: the batch's statement on one line, its parameters, one flat row, on the next."""
    parameters = BoundParameters(KeyPolicy().secret)

    def line(message: object, *args: object) -> logging.LogRecord:
        return logging.LogRecord(ENGINE_LOGGER, logging.INFO, __file__, 1, message, args, None)

    assert parameters.message(line(_long_statement(INSERTMANYVALUES["asyncpg"]))) is None
    shown = _repr_params(
        ("spongebob", "hunter2", "tok-1", "sandy", "s3cret", None), batches=10, ismulti=False
    )
    assert parameters.message(
        line("[%s] %r", "generated in 0.0001s (insertmanyvalues) 1/1 (ordered)", shown)
    ) == (
        "[generated in 0.0001s (insertmanyvalues) 1/1 (ordered)] "
        "('spongebob', '[REDACTED]', '[REDACTED]', 'sandy', '[REDACTED]', None)"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # PostgreSQL: unique and foreign key violations, a composite key, an expression index
        ('duplicate key value violates unique constraint "api_tokens_api_token_key"\n'
         "DETAIL:  Key (api_token)=(tok-Uniq-s3cret-5150) already exists.",
         'duplicate key value violates unique constraint "api_tokens_api_token_key"\n'
         "DETAIL:  Key (api_token)=([REDACTED]) already exists."),
        ("DETAIL:  Key (email, api_key)=(a@x.io, k3y-s3cret) already exists.",
         "DETAIL:  Key (email, api_key)=(a@x.io, [REDACTED]) already exists."),
        ('DETAIL:  Key (password_reset_token)=(prt-9f8e) is not present in table "password_resets".',
         'DETAIL:  Key (password_reset_token)=([REDACTED]) is not present in table "password_resets".'),
        ("DETAIL:  Key (session_key)=(sk-77aa) is still referenced from table \"django_session\".",
         "DETAIL:  Key (session_key)=([REDACTED]) is still referenced from table \"django_session\"."),
        ("DETAIL:  Key (lower(api_token::text))=(tok-lower-1) already exists.",
         "DETAIL:  Key (lower(api_token::text))=([REDACTED]) already exists."),
        # a value holding `, `: which part is whose is not known, so all of them go
        ("DETAIL:  Key (email, api_key)=(a, b@x.io, k3y-s3cret) already exists.",
         "DETAIL:  Key (email, api_key)=([REDACTED]) already exists."),
        # a value holding a line break: to the end of its line
        ("DETAIL:  Key (api_token)=(tok-first\nsecond) already exists.",
         "DETAIL:  Key (api_token)=([REDACTED]\nsecond) already exists."),
        # MySQL and MariaDB, the key (an index) named alone or after its table, a composite entry
        ('(1062, "Duplicate entry \'tok-Uniq-s3cret-my\' for key \'api_token\'")',
         '(1062, "Duplicate entry \'[REDACTED]\' for key \'api_token\'")'),
        ('(1062, "Duplicate entry \'tok-Uniq-s3cret-my\' for key \'users.api_token\'")',
         '(1062, "Duplicate entry \'[REDACTED]\' for key \'users.api_token\'")'),
        ('(1062, "Duplicate entry \'a@x.io-k3y-s3cret\' for key \'uq_email_api_key\'")',
         '(1062, "Duplicate entry \'[REDACTED]\' for key \'uq_email_api_key\'")'),
        ("(1062, 'Duplicate entry \\'tok\"q\\' for key \\'api_token\\'')",
         "(1062, 'Duplicate entry \\'[REDACTED]\\' for key \\'api_token\\'')"),
    ],
)  # fmt: skip
def test_a_databases_constraint_error_keeps_no_secret_columns_value(line: str, expected: str) -> None:
    assert SCRUBBER.scrub_text(line) == expected


def test_the_same_constraint_errors_group_as_one_message() -> None:
    """Issues group by the normalized message where no frame of the app's tells them apart."""
    texts = [f"DETAIL:  Key (api_token)=(tok-{n}) already exists." for n in ("a1", "b2")]
    assert len({normalized_message(SCRUBBER.scrub_text(text)) for text in texts}) == 1


# Every way the probe found a password set or compared in SQL, and the redacted text expected:
# never the marker beside a secret still there.
SQL_PASSWORDS = [
    ("SET PASSWORD = PASSWORD('Hunter-1')", "SET PASSWORD = PASSWORD('[REDACTED]')"),
    ("SET PASSWORD FOR 'bob'@'%.loc.gov' = PASSWORD('Hunter-2')",
     "SET PASSWORD FOR 'bob'@'%.loc.gov' = PASSWORD('[REDACTED]')"),
    ("SET PASSWORD FOR bob = OLD_PASSWORD('Hunter-3')", "SET PASSWORD FOR bob = OLD_PASSWORD('[REDACTED]')"),
    ("CREATE USER 'bob'@'localhost' IDENTIFIED VIA ed25519 USING PASSWORD('Hunter-4')",
     "CREATE USER 'bob'@'localhost' IDENTIFIED VIA ed25519 USING PASSWORD('[REDACTED]')"),
    ("ALTER USER bob IDENTIFIED VIA mysql_native_password USING PASSWORD('Hunter-5')",
     "ALTER USER bob IDENTIFIED VIA mysql_native_password USING PASSWORD('[REDACTED]')"),
    ("UPDATE users SET password = crypt('Hunter-6', gen_salt('bf')) WHERE id = 1",
     "UPDATE users SET password = crypt('[REDACTED]', gen_salt('bf')) WHERE id = 1"),
    ("SELECT id FROM users WHERE password = crypt('Hunter-7', password)",
     "SELECT id FROM users WHERE password = crypt('[REDACTED]', password)"),
    ("SELECT crypt('Hunter-8', gen_salt('md5'))", "SELECT crypt('[REDACTED]', gen_salt('md5'))"),
    ("ALTER USER \"bob\" WITH PASSWORD  E'Hunter-9\\\\x9'",
     "ALTER USER \"bob\" WITH PASSWORD  E'[REDACTED]'"),
    ("ALTER USER bob WITH PASSWORD $$Hunter-10$$", "ALTER USER bob WITH PASSWORD $$[REDACTED]$$"),
    ("ALTER ROLE bob PASSWORD $pw$Hunter-11$pw$ VALID UNTIL 'infinity'",
     "ALTER ROLE bob PASSWORD $pw$[REDACTED]$pw$ VALID UNTIL 'infinity'"),
    ("ALTER USER bob WITH PASSWORD U&'Hunter-12'", "ALTER USER bob WITH PASSWORD U&'[REDACTED]'"),
    ('ALTER USER bob IDENTIFIED BY "Hunter-13"', 'ALTER USER bob IDENTIFIED BY "[REDACTED]"'),
    ("SELECT id FROM users WHERE `password` = 'Hunter-14'",
     "SELECT id FROM users WHERE `password` = '[REDACTED]'"),
    ("SELECT id FROM users WHERE reset_token IN ('Hunter-15', 'Hunter-16')",
     "SELECT id FROM users WHERE reset_token IN ('[REDACTED]')"),
    # cut short, as a long statement may be: to the end
    ("ALTER USER bob WITH PASSWORD $$Hunter-17", "ALTER USER bob WITH PASSWORD $$[REDACTED]"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), SQL_PASSWORDS)
def test_every_sql_password_form_is_redacted_whole(line: str, expected: str) -> None:
    scrubbed = SCRUBBER.scrub_text(line)
    assert "Hunter-" not in scrubbed, scrubbed
    assert scrubbed == expected


def test_a_secret_passed_to_a_call_keeps_the_call() -> None:
    """`key=call('x')`: the literal the call is given is the value; the call's name stays."""
    assert (
        SCRUBBER.scrub_text('password = make_password("hunter2")') == 'password = make_password("[REDACTED]")'
    )


# A sign-up of two users on PostgreSQL failing on a duplicate API token, as SQLAlchemy raises it
# (its IntegrityError's text) around the driver's error (PostgreSQL's words), logged by the app.
FAILED_SIGNUP = f"""
import logging

import tracestream
from sqlalchemy.exc import IntegrityError

tracestream.configure()


class UniqueViolation(Exception):
    pass


driver_error = UniqueViolation(
    'duplicate key value violates unique constraint "user_account_api_token_key"\\n'
    "DETAIL:  Key (api_token)=(tok-Uniq-s3cret-5150) already exists."
)
try:
    raise IntegrityError(
        {INSERTMANYVALUES["asyncpg"]!r},
        ("spongebob", "hunter2-Pw", "tok-Sponge-1", "sandy", "s3cret-Sandy", "tok-Uniq-s3cret-5150"),
        driver_error,
    )
except IntegrityError:
    logging.getLogger("shop.signup").exception("sign-up failed")
"""
SIGNUP_SECRETS = ("hunter2-Pw", "tok-Sponge-1", "s3cret-Sandy", "tok-Uniq-s3cret-5150")


def test_a_failed_signups_secrets_reach_no_key(stream: RedisHandle) -> None:
    """The record, its error copy, the issue and the digest: each holds the error's text."""
    process = run_python_process(FAILED_SIGNUP, stream.env())
    assert process.returncode == 0, process.stderr
    assert all(secret in process.stderr for secret in SIGNUP_SECRETS)  # the app's own terminal
    (record,) = wait_for(stream.logs, what="the failed sign-up")
    assert "Key (api_token)=([REDACTED]) already exists." in record.exception_message
    assert "[parameters: ('spongebob', '[REDACTED]', '[REDACTED]', 'sandy', '[REDACTED]', '[REDACTED]')]" in (
        record.exception_message
    )
    keys = stream.keys
    with stream.client() as client:
        stored = [
            *client.xrange(keys.logs),
            *client.xrange(keys.errors),
            *client.xrange(keys.digest),
            *(client.hgetall(keys.issue(fingerprint)) for fingerprint in client.zrange(keys.issues, 0, -1)),
        ]
    assert len(stored) >= 4 and "[REDACTED]" in str(stored)
    assert [secret for secret in SIGNUP_SECRETS if secret in str(stored)] == []


# SQLAlchemy's tutorial writes `text("... WHERE y > :y")`: on a driver of the pyformat style
# (psycopg, PyMySQL, mysqlclient) the statement prints `%(name)s` and the parameters a dict keyed by
# the names the app chose, which say nothing of the columns.
NAMED_INSERT = "INSERT INTO tp_users (id, name, password, api_token) VALUES (%(i)s, %(n)s, %(p)s, %(t)s)"
FAILED_NAMED_INSERT = (
    "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
    '"tp_users_api_token_key"\n'
    f"[SQL: {NAMED_INSERT}]\n"
    "[parameters: {'i': 2, 'n': 'eve', 'p': 'Eve-TP-pass-99', 't': 'tok_TP_one_abcdef'}]"
)


def test_named_placeholders_are_told_by_their_columns() -> None:
    secret = KeyPolicy().secret
    assert secret_placeholders(NAMED_INSERT, secret) == {"p", "t"}
    assert secret_placeholders("SELECT id FROM u WHERE name = :n AND password = :p", secret) == {"p"}
    assert secret_placeholders("SELECT x::text FROM u WHERE u.api_token=%(k)s", secret) == {"k"}


def test_a_failed_statements_named_secret_parameters_are_redacted() -> None:
    """Named, only the statement says `p` is the password: the key/value rule read `'p'` and let it be."""
    assert SCRUBBER.scrub_text(FAILED_NAMED_INSERT) == FAILED_NAMED_INSERT.replace(
        "'p': 'Eve-TP-pass-99', 't': 'tok_TP_one_abcdef'", "'p': '[REDACTED]', 't': '[REDACTED]'"
    )


NAMED_ECHO = """
import logging, sys, tracestream
from sqlalchemy import create_engine, text
tracestream.configure()
engine = create_engine("sqlite://", echo=True, paramstyle="named")  # as a pyformat driver prints them
with engine.connect() as connection:
    connection.execute(text("CREATE TABLE tp_users (name VARCHAR, password VARCHAR)"))
    connection.execute(text("INSERT INTO tp_users (name, password) VALUES (:n, :p)"),
                       [{"n": "bob", "p": "Hunter2-TP-pass"}, {"n": "eve", "p": "Eve-TP-pass-99"}])
    rows = connection.execute(text("SELECT name FROM tp_users WHERE name = :n AND password = :p"),
                              {"n": "bob", "p": "Hunter2-TP-pass"}).all()
print(rows)
"""


def test_sqlalchemy_echo_of_named_parameters_keeps_no_secret(stream: RedisHandle) -> None:
    done = run_python_process(NAMED_ECHO, stream.env())
    assert done.returncode == 0 and done.stdout.endswith("[('bob',)]\n"), done.stderr
    assert (
        "Hunter2-TP-pass" in done.stdout
    )  # echo's lines in the app's own terminal, as SQLAlchemy wrote them
    lines = wait_for(lambda: [e.body for e in stream.logs() if "'n': " in e.body], what="the parameter lines")
    assert len(lines) == 2 and all("'p': '[REDACTED]'" in line for line in lines), lines
    assert "'n': 'bob'" in lines[0] and not [line for line in lines if "TP-pass" in line]
