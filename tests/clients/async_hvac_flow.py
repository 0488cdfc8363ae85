"""async-hvac, unmodified, against Lessor: credentials (one wrapped and unwrapped), renew and revoke
through Vault's older sys/renew and sys/revoke paths, revoke-prefix, token create and revoke.
Prints one JSON object for tests/clients.rs, which checks every login on the real database."""
import asyncio
import json
import os

import async_hvac


async def main():
    client = async_hvac.AsyncClient(url=os.environ["LESSOR_ADDR"], token=os.environ["LESSOR_TOKEN"])
    role = os.environ["ROLE"]
    out = {}
    try:
        creds = await client.read(f"database/creds/{role}")
        out["renewed_and_revoked"] = {"lease_id": creds["lease_id"], **creds["data"]}
        renewed = await client.renew_secret(creds["lease_id"], increment=1800)
        out["renewed_duration"] = renewed["lease_duration"]
        await client.revoke_secret(creds["lease_id"])

        out["prefix_revoked"] = []
        for _ in range(3):
            more = await client.read(f"database/creds/{role}")
            out["prefix_revoked"].append(more["data"])
        await client.revoke_secret_prefix(f"database/creds/{role}")

        wrapped = await client.read(f"database/creds/{role}", wrap_ttl="60s")
        out["wrapped_answer_has_data"] = wrapped.get("data") is not None
        unwrapped = await client.unwrap(wrapped["wrap_info"]["token"])
        out["unwrapped"] = {"lease_id": unwrapped["lease_id"], **unwrapped["data"]}

        token = await client.create_token(policies=["default"], ttl="10m")
        out["created_token"] = token["auth"]["client_token"]
        await client.revoke_token(token["auth"]["client_token"])
    finally:
        await client.close()
    print(json.dumps(out))


asyncio.run(main())
