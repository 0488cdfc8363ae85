"""Drives `lessor dev --tls` with the unmodified hvac 2.x client over HTTPS, as a Vault user would
after `vault server -dev-tls`: the printed CA verifies the server, and a workload logs in with its
TLS client certificate (`client.auth.cert.login`).

Called by tests/cert_auth.rs with LESSOR_ADDR, LESSOR_TOKEN, VAULT_CACERT, CLIENT_CA, CLIENT_CERT,
CLIENT_KEY, EXPIRED_CERT and EXPIRED_KEY in the environment. Prints one JSON object on stdout for
the Rust side to check against the real database.
"""
import json
import os

import hvac
import hvac.exceptions
import requests

addr = os.environ["LESSOR_ADDR"]
cacert = os.environ["VAULT_CACERT"]

# Checked against the system's CAs only, the server's certificate is refused; with the printed CA
# (hvac also reads VAULT_CACERT by itself, as the vault CLI does) everything works.
try:
    hvac.Client(url=addr, token=os.environ["LESSOR_TOKEN"], verify=True).sys.read_health_status(
        method="GET"
    )
    raise AssertionError("an HTTPS server with a throwaway CA was trusted without VAULT_CACERT")
except requests.exceptions.SSLError:
    pass
assert hvac.Client(url=addr, token=os.environ["LESSOR_TOKEN"]).is_authenticated(), "VAULT_CACERT"
root = hvac.Client(url=addr, token=os.environ["LESSOR_TOKEN"], verify=cacert)
assert root.is_authenticated(), "the root token is accepted over HTTPS"
root_creds = root.secrets.database.generate_credentials("readonly")["data"]

root.sys.create_or_update_policy(
    name="cert-reader",
    policy='path "database/creds/readonly" { capabilities = ["read"] }',
)
with open(os.environ["CLIENT_CA"]) as f:
    client_ca = f.read()
root.auth.cert.create_ca_certificate_role(
    name="workload",
    certificate=client_ca,
    allowed_common_names=["billing.prod"],
    token_policies=["cert-reader"],
    token_ttl="10m",
)
role = root.auth.cert.read_ca_certificate_role("workload")["data"]
assert role["allowed_common_names"] == ["billing.prod"], role
assert "workload" in root.auth.cert.list_certificate_roles()["data"]["keys"]

workload = hvac.Client(url=addr, verify=cacert)
answer = workload.auth.cert.login(
    name="workload", cert_pem=os.environ["CLIENT_CERT"], key_pem=os.environ["CLIENT_KEY"]
)
assert "cert-reader" in answer["auth"]["policies"], answer
assert answer["auth"]["lease_duration"] == 600, answer
assert workload.is_authenticated(), "the token from the certificate login is in use"
cert_creds = workload.secrets.database.generate_credentials("readonly")["data"]
try:
    workload.secrets.database.read_role("readonly")
    raise AssertionError("the certificate's token reads more than its policy grants")
except hvac.exceptions.Forbidden:
    pass

expired = hvac.Client(url=addr, verify=cacert)
try:
    expired.auth.cert.login(cert_pem=os.environ["EXPIRED_CERT"], key_pem=os.environ["EXPIRED_KEY"])
    raise AssertionError("an expired client certificate logged in")
except hvac.exceptions.Forbidden as error:
    expired_error = str(error)

print(
    json.dumps(
        {
            "root_creds": {"username": root_creds["username"], "password": root_creds["password"]},
            "cert_creds": {"username": cert_creds["username"], "password": cert_creds["password"]},
            "expired_error": expired_error,
        }
    )
)
