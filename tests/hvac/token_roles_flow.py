"""Drives Lessor's token roles with the unmodified hvac 2.x client, as a Vault user would.

Called by tests/token_roles.rs with LESSOR_ADDR, LESSOR_TOKEN (root), ROLE and POLICY in the
environment; the ACL policy POLICY exists already. Writes, reads and lists a token role, creates a
token from it, checks the role's limits hold, deletes the role, and prints one JSON object on
stdout with the created token, for the Rust side to check what it may do.
"""
import json
import os

import hvac
import hvac.exceptions

addr = os.environ["LESSOR_ADDR"]
role = os.environ["ROLE"]
policy = os.environ["POLICY"]
client = hvac.Client(url=addr, token=os.environ["LESSOR_TOKEN"])
tokens = client.auth.token

tokens.create_or_update_role(
    role,
    allowed_policies=[policy],
    disallowed_policies=["forbidden"],
    orphan=True,
    renewable=False,
    token_explicit_max_ttl="20m",
)
read = tokens.read_role(role)["data"]
assert read["allowed_policies"] == [policy], read
assert read["disallowed_policies"] == ["forbidden"], read
assert read["orphan"] is True and read["renewable"] is False, read
assert read["token_explicit_max_ttl"] == 1200, read
assert role in tokens.list_roles()["data"]["keys"]

# No policies asked for: the token gets the role's allowed policies (and default).
created = tokens.create(role_name=role, ttl="1h")["auth"]
assert created["policies"] == sorted(["default", policy]), created
assert created["orphan"] is True, created
assert created["renewable"] is False, created
assert 0 < created["lease_duration"] <= 1200, created

# A policy outside the role's list is refused, however privileged the caller.
try:
    tokens.create(role_name=role, policies=["root-like"])
    raise AssertionError("a policy outside allowed_policies was granted")
except hvac.exceptions.InvalidRequest as error:
    assert "does not allow root-like" in str(error), error

# A field the role endpoint does not implement is refused by name, not ignored.
try:
    tokens.create_or_update_role(role + "-periodic", token_period="1h")
    raise AssertionError("token_period was accepted")
except hvac.exceptions.InvalidRequest as error:
    assert "token_period" in str(error), error

print(json.dumps({"token": created["client_token"], "accessor": created["accessor"]}))

tokens.delete_role(role)
try:
    tokens.read_role(role)
    raise AssertionError("the deleted role is still there")
except hvac.exceptions.InvalidPath:
    pass
