"""Drives Lessor's response wrapping with the unmodified hvac 2.x client, as a Vault user would.

Called by tests/hvac_wrapping.rs with LESSOR_ADDR, LESSOR_TOKEN and ROLE in the environment (the
connection and role exist already). Prints one JSON object on stdout with the unwrapped
credentials, for the Rust side to check against the real database and revoke.
"""
import json
import os

import hvac
import hvac.exceptions

addr = os.environ["LESSOR_ADDR"]
role = os.environ["ROLE"]
client = hvac.Client(url=addr, token=os.environ["LESSOR_TOKEN"])
INVALID = "wrapping token is not valid or does not exist"


def wrapped_creds():
    """Reads the role's credentials wrapped (hvac sends X-Vault-Wrap-TTL) and checks no secret came back."""
    answer = client.read(f"database/creds/{role}", wrap_ttl="2m")
    assert answer["data"] is None, answer
    assert "password" not in json.dumps(answer), answer
    info = answer["wrap_info"]
    assert info["ttl"] == 120, info
    assert info["creation_path"] == f"database/creds/{role}", info
    return info["token"]


# The usual hvac form: the client's own token in the header, the wrapping token in the body.
token = wrapped_creds()
first = client.sys.unwrap(token)
assert first["data"]["username"] and first["data"]["password"], first
try:
    client.sys.unwrap(token)
    raise AssertionError("a second unwrap succeeded")
except hvac.exceptions.InvalidRequest as error:
    assert INVALID in str(error), error

# The wrapping token as the client's only token (what `vault unwrap` does without VAULT_TOKEN).
token = wrapped_creds()
second = hvac.Client(url=addr, token=token).sys.unwrap()
assert second["data"]["password"] != first["data"]["password"], "two distinct credentials"

# An arbitrary object, wrapped by hvac and unwrapped by a client holding no token at all.
wrapped = client.sys.wrap(payload={"api_key": "wrapped-by-hvac", "n": 3}, ttl=60)
assert wrapped["wrap_info"]["ttl"] == 60, wrapped
unwrapped = hvac.Client(url=addr).sys.unwrap(wrapped["wrap_info"]["token"])
assert unwrapped["data"] == {"api_key": "wrapped-by-hvac", "n": 3}, unwrapped

print(json.dumps({
    "first": {"lease_id": first["lease_id"], **first["data"]},
    "second": {"lease_id": second["lease_id"], **second["data"]},
}))
