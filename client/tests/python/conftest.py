"""pytest fixtures for tests that need a database login of their own from Lessor, through hvac.

The same fixtures are shown in docs/clients.md; client/tests/pytest_fixture.rs runs
test_lessor_fixture.py against a real Lessor and PostgreSQL to prove they work.
"""

import os

import hvac
import pytest


@pytest.fixture(scope="session")
def lessor():
    """An hvac client of Lessor, from the environment `lessor dev` prints."""
    client = hvac.Client(
        url=os.environ["LESSOR_ADDR"],
        token=os.environ["LESSOR_TOKEN"],
        verify=os.environ.get("LESSOR_CACERT", True),
    )
    assert client.is_authenticated(), "LESSOR_TOKEN is not accepted by Lessor"
    return client


@pytest.fixture
def db_creds(lessor):
    """A database user of this test's own: {"username", "password"}, revoked in teardown.

    pytest runs the code after `yield` whatever the test's outcome, so a failing test leaves no
    user behind; a test process killed outright leaves it to the lease's TTL.
    """
    role = os.environ.get("LESSOR_TEST_ROLE", "test")
    secret = lessor.secrets.database.generate_credentials(name=role)
    yield secret["data"]
    lessor.sys.revoke_lease(lease_id=secret["lease_id"])
