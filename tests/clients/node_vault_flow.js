// node-vault, unmodified, against Lessor: status, mounts, credentials (one of them wrapped and
// unwrapped), renew, revoke, revoke-prefix, token create / create-orphan / revoke.
// Prints one JSON object for tests/clients.rs, which checks every login on the real database.
'use strict';
const vault = require('node-vault')({
  apiVersion: 'v1',
  endpoint: process.env.LESSOR_ADDR,
  token: process.env.LESSOR_TOKEN,
});
const role = process.env.ROLE;

async function main() {
  const out = {};
  const status = await vault.status();
  out.sealed = status.sealed;
  const mounts = await vault.mounts();
  out.database_mount = mounts['database/'] ? mounts['database/'].type : null;

  const creds = await vault.generateDatabaseCredentials({ databasePath: 'database', name: role });
  out.renewed_and_revoked = { lease_id: creds.lease_id, ...creds.data };
  const renewed = await vault.renew({ lease_id: creds.lease_id, increment: 1800 });
  out.renewed_duration = renewed.lease_duration;
  await vault.revoke({ lease_id: creds.lease_id });

  out.prefix_revoked = [];
  for (let i = 0; i < 3; i++) {
    const more = await vault.generateDatabaseCredentials({ databasePath: 'database', name: role });
    out.prefix_revoked.push(more.data);
  }
  await vault.revokePrefix({ path_prefix: `database/creds/${role}` });

  // A wrapped credential: the answer carries no password, the unwrap does.
  const wrapped = await vault.generateDatabaseCredentials({
    databasePath: 'database',
    name: role,
    requestOptions: { headers: { 'X-Vault-Wrap-TTL': '60s' } },
  });
  out.wrapped_answer_has_data = wrapped.data !== null && wrapped.data !== undefined;
  const unwrapped = await vault.unwrap({ token: wrapped.wrap_info.token });
  out.unwrapped = { lease_id: unwrapped.lease_id, ...unwrapped.data };

  // node-vault makes a token it creates its own token (`tokenSource`); go back to ours each time.
  const child = await vault.tokenCreate({ policies: ['default'] });
  vault.token = process.env.LESSOR_TOKEN;
  const orphan = await vault.tokenCreateOrphan({ policies: ['default'] });
  vault.token = process.env.LESSOR_TOKEN;
  out.orphan_is_orphan = orphan.auth.orphan;
  await vault.tokenRevoke({ token: child.auth.client_token });
  out.revoked_token = child.auth.client_token;
  out.orphan_token = orphan.auth.client_token;
  process.stdout.write(JSON.stringify(out));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n${JSON.stringify(error.response && error.response.body)}\n`);
  process.exit(1);
});
