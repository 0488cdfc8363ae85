"""Drives the fixtures of conftest.py; run by client/tests/pytest_fixture.rs, which then checks
on PostgreSQL that every user these tests got is gone.

Each test records the credentials it got (JSON lines in $LESSOR_FIXTURE_REPORT) for that check.
"""

import json
import os
import subprocess

import pytest


def record(creds):
    with open(os.environ["LESSOR_FIXTURE_REPORT"], "a") as report:
        report.write(json.dumps({"username": creds["username"], "password": creds["password"]}) + "\n")


def psql_as(creds, query):
    """Runs `query` logged in as the fixture's user, over TCP where PostgreSQL checks passwords."""
    return subprocess.run(
        ["psql", "-h", os.environ["PGHOST"], "-p", os.environ["PGPORT"], "-d", "postgres",
         "-U", creds["username"], "-w", "-AtXqc", query],
        env=dict(os.environ, PGPASSWORD=creds["password"]),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_fixture_user_logs_in(db_creds):
    record(db_creds)
    result = psql_as(db_creds, "SELECT current_user")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == db_creds["username"]


@pytest.mark.xfail(strict=True, reason="fails on purpose: the fixture must revoke after a failure too")
def test_a_failing_test_still_gets_its_user_revoked(db_creds):
    record(db_creds)
    assert psql_as(db_creds, "SELECT 1").returncode == 0
    assert False, "this test fails on purpose"
