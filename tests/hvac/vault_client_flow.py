"""Drives Lessor with the unmodified hvac 2.x client, as a Vault user would.

Called by tests/hvac.rs with LESSOR_ADDR, LESSOR_TOKEN, PG_URL and ROLE in the environment. Prints
one JSON object on stdout for the Rust side to check against the real database.
"""
import json
import os
import sys

import hvac
import hvac.exceptions

addr = os.environ["LESSOR_ADDR"]
token = os.environ["LESSOR_TOKEN"]
role = os.environ["ROLE"]

client = hvac.Client(url=addr, token=token)
assert client.is_authenticated(), "the root token is accepted"
assert not hvac.Client(url=addr, token="wrong-token").is_authenticated(), "a bad token is refused"
health = client.sys.read_health_status(method="GET")
assert health["initialized"] and not health["sealed"], health

db = client.secrets.database
db.configure(
    name="hvac-pg",
    plugin_name="postgresql-database-plugin",
    connection_url=os.environ["PG_URL"],
    allowed_roles=[role, "scratch", role + "-static"],
)
assert "hvac-pg" in db.list_connections()["data"]["keys"]
connection = db.read_connection("hvac-pg")["data"]
assert connection["plugin_name"] == "postgresql-database-plugin", connection
# No password in the read; the field names that merely contain the word are taken out first.
shown = json.dumps(connection).lower().replace("password_policy", "")
shown = shown.replace('"password_authentication": "password"', "")
assert "password" not in shown, connection
db.reset_connection("hvac-pg")

db.create_role(
    name=role,
    db_name="hvac-pg",
    creation_statements=[
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;"
    ],
    default_ttl="1h",
    max_ttl="2h",
)
db.create_role(name="scratch", db_name="hvac-pg", creation_statements=[], default_ttl=60)
assert set(db.list_roles()["data"]["keys"]) >= {role, "scratch"}
assert db.read_role(role)["data"]["default_ttl"] == 3600
db.delete_role("scratch")
try:
    db.read_role("scratch")
    raise AssertionError("a deleted role can still be read")
except hvac.exceptions.InvalidPath:
    pass

# A bad field is a 400 (InvalidRequest) naming it.
try:
    db.create_role(name=role + "-bad", db_name="hvac-pg", creation_statements=["CREATE ROLE \"{{nmae}}\""])
    raise AssertionError("an unknown placeholder was accepted")
except hvac.exceptions.InvalidRequest as error:
    assert "nmae" in str(error), error

first = db.generate_credentials(role)
lease_id = first["lease_id"]
assert first["renewable"] and first["lease_duration"] == 3600, first
lease = client.sys.read_lease(lease_id)["data"]
assert lease["id"] == lease_id and lease["ttl"] > 3500, lease
renewed = client.sys.renew_lease(lease_id, increment=1800)
assert renewed["lease_duration"] == 1800, renewed
client.sys.revoke_lease(lease_id)

second = db.generate_credentials(role)
keys = client.sys.list_leases(f"database/creds/{role}/")["data"]["keys"]
assert second["lease_id"].rsplit("/", 1)[1] in keys, keys

# Static roles: created, read, rotated on demand through hvac's own calls.
static = role + "-static"
db.create_static_role(
    name=static,
    db_name="hvac-pg",
    username=os.environ["STATIC_USER"],
    rotation_statements=["ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}';"],
    rotation_period=3600,
)
assert static in db.list_static_roles()["data"]["keys"]
assert db.read_static_role(static)["data"]["rotation_period"] == 3600
before = db.get_static_credentials(static)["data"]
assert before["username"] == os.environ["STATIC_USER"] and 0 < before["ttl"] <= 3600, before
db.rotate_static_role_credentials(static)
after = db.get_static_credentials(static)["data"]
assert after["password"] != before["password"], "rotation changed the password"

json.dump(
    {
        "static_before": before["password"],
        "static_after": after["password"],
        "revoked": first["data"],
        "live": second["data"],
        "live_lease_id": second["lease_id"],
    },
    sys.stdout,
)
