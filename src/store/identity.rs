//! Store queries for identity and audit: tokens, ACL policies, JWT roles, audit devices,
//! the addresses each identity has read from, and anomaly alerts (migration 0003).

use sqlx::FromRow;

use super::Store;
use crate::error::Result;

/// A client token with everything its lifetime rules need; only its keyed hash is kept.
#[derive(Debug, Clone, FromRow)]
pub struct TokenRow {
    pub token_hash: String,
    pub accessor: String,
    pub display_name: String,
    /// JSON array of policy names.
    pub policies: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// The workload this token stands for; leases are owned by it, so a workload that logs in
    /// again keeps control of its leases. Empty means the accessor.
    pub entity_id: String,
    pub renewable: bool,
    /// The TTL the token was created with, reused by `renew-self` without an increment.
    pub ttl_secs: i64,
    pub explicit_max_ttl_secs: i64,
    /// No renewal moves `expires_at` past this.
    pub max_expires_at: Option<i64>,
    /// The auth path that made the token (`auth/token/create`, `auth/jwt/login/<role>`).
    pub path: String,
    /// JSON object of metadata (JWT role, claim mappings).
    pub meta: String,
    pub parent_accessor: Option<String>,
}

/// One ACL policy as written.
#[derive(Debug, Clone, FromRow)]
pub struct PolicyRow {
    pub name: String,
    pub text: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One enabled audit device.
#[derive(Debug, Clone, FromRow)]
pub struct AuditDeviceRow {
    pub name: String,
    pub device_type: String,
    pub description: String,
    /// JSON object of the device's options (`file_path`).
    pub options: String,
    pub created_at: i64,
}

/// One anomaly alert.
#[derive(Debug, Clone, FromRow)]
pub struct AlertRow {
    pub id: i64,
    pub rule: String,
    pub identity: String,
    pub display_name: String,
    pub address: String,
    pub role: String,
    pub count: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub detail: String,
}

impl Store {
    // ---- tokens -----------------------------------------------------------------------------

    /// Stores a token. Storing a token whose hash is already there changes nothing, so
    /// installing the same root token at every `lessor dev --root-token` start is harmless.
    pub async fn insert_token(&self, token: &TokenRow) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO tokens (token_hash, accessor, display_name, policies, created_at, expires_at, entity_id,
                 renewable, ttl_secs, explicit_max_ttl_secs, max_expires_at, path, meta, parent_accessor)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(&token.token_hash)
        .bind(&token.accessor)
        .bind(&token.display_name)
        .bind(&token.policies)
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(&token.entity_id)
        .bind(token.renewable)
        .bind(token.ttl_secs)
        .bind(token.explicit_max_ttl_secs)
        .bind(token.max_expires_at)
        .bind(&token.path)
        .bind(&token.meta)
        .bind(&token.parent_accessor)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    pub async fn get_token(&self, token_hash: &str) -> Result<Option<TokenRow>> {
        Ok(with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM tokens WHERE token_hash = $1"
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn get_token_by_accessor(&self, accessor: &str) -> Result<Option<TokenRow>> {
        Ok(with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM tokens WHERE accessor = $1"
        )
        .bind(accessor)
        .fetch_optional(pool)
        .await?))
    }

    /// Moves a token's expiry after a renewal.
    pub async fn renew_token(&self, accessor: &str, expires_at: i64) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "UPDATE tokens SET expires_at = $1 WHERE accessor = $2"
        )
        .bind(expires_at)
        .bind(accessor)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    /// Deletes the token with `accessor` and every token below it in one statement, so no child
    /// survives a crash halfway; returns the accessors deleted.
    pub async fn delete_token_tree(&self, accessor: &str) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "DELETE FROM tokens WHERE accessor IN (
                 WITH RECURSIVE tree(accessor) AS (
                     SELECT $1
                     UNION
                     SELECT t.accessor FROM tokens t JOIN tree ON t.parent_accessor = tree.accessor
                 )
                 SELECT accessor FROM tree
             ) RETURNING accessor",
        )
        .bind(accessor)
        .fetch_all(pool)
        .await?))
    }

    /// Deletes only the token with `accessor`; its children become orphans. One transaction whose
    /// first statement writes, so SQLite takes the write lock at once.
    pub async fn delete_token_orphaning_children(&self, accessor: &str) -> Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE tokens SET parent_accessor = NULL WHERE parent_accessor = $1")
                .bind(accessor)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query("DELETE FROM tokens WHERE accessor = $1")
                .bind(accessor)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Whether the token with `accessor` and all its ancestors exist and have not expired at
    /// `now`. The walk is bounded, as a tree deeper than that is not one Lessor made.
    pub async fn token_lineage_live(&self, accessor: &str, now: i64) -> Result<bool> {
        let chain: Vec<(Option<String>, Option<i64>)> = with_pool!(self, |pool| sqlx::query_as(
            "WITH RECURSIVE up(accessor, parent_accessor, expires_at, depth) AS (
                 SELECT accessor, parent_accessor, expires_at, 0 FROM tokens WHERE accessor = $1
                 UNION ALL
                 SELECT t.accessor, t.parent_accessor, t.expires_at, up.depth + 1
                 FROM tokens t JOIN up ON t.accessor = up.parent_accessor
                 WHERE up.depth < 1000
             )
             SELECT parent_accessor, expires_at FROM up ORDER BY depth",
        )
        .bind(accessor)
        .fetch_all(pool)
        .await?);
        // Live when the chain ends at a root (no parent) and nothing on it has expired; a chain
        // that ends at a parent that is gone is dead.
        let reaches_root = chain.last().is_some_and(|(parent, _)| parent.is_none());
        let unexpired = chain
            .iter()
            .all(|(_, expires)| expires.map_or(true, |at| at > now));
        Ok(reaches_root && unexpired)
    }

    /// Converts every stored token hash with `convert`, once per store: the first statement claims
    /// the conversion by recording `scheme` under `meta_key`, in the same transaction, so it runs
    /// at most once even if two processes start together. Returns `None` when it had already run,
    /// or the number of rows converted. Rows `convert` does not recognise are left alone.
    pub async fn convert_token_hashes(
        &self,
        meta_key: &str,
        scheme: &str,
        convert: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<u64>> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let claimed = sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(meta_key)
            .bind(scheme)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 0 {
                return Ok(None);
            }
            let hashes: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM tokens")
                .fetch_all(&mut *tx)
                .await?;
            let mut converted = 0;
            for old in hashes {
                if let Some(new) = convert(&old) {
                    sqlx::query("UPDATE tokens SET token_hash = $1 WHERE token_hash = $2")
                        .bind(new)
                        .bind(&old)
                        .execute(&mut *tx)
                        .await?;
                    converted += 1;
                }
            }
            tx.commit().await?;
            Ok(Some(converted))
        })
    }

    // ---- policies ---------------------------------------------------------------------------

    pub async fn upsert_policy(&self, name: &str, text: &str, now: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO policies (name, text, created_at, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET text = excluded.text, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(text)
        .bind(now)
        .bind(now)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    /// Stores a policy only if none of that name exists (the built-in `default` at first start).
    pub async fn insert_policy_if_absent(&self, name: &str, text: &str, now: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO policies (name, text, created_at, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(text)
        .bind(now)
        .bind(now)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    pub async fn get_policy(&self, name: &str) -> Result<Option<PolicyRow>> {
        Ok(with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM policies WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn list_policies(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM policies ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    pub async fn delete_policy(&self, name: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM policies WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    // ---- JWT roles --------------------------------------------------------------------------

    pub async fn upsert_jwt_role(&self, name: &str, config: &str, now: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO jwt_roles (name, config, created_at, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(config)
        .bind(now)
        .bind(now)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    pub async fn get_jwt_role(&self, name: &str) -> Result<Option<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT config FROM jwt_roles WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn list_jwt_roles(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM jwt_roles ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    pub async fn delete_jwt_role(&self, name: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM jwt_roles WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    // ---- audit devices ----------------------------------------------------------------------

    /// Stores a new device; false when the name is taken.
    pub async fn insert_audit_device(&self, row: &AuditDeviceRow) -> Result<bool> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO audit_devices (name, device_type, description, options, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&row.name)
        .bind(&row.device_type)
        .bind(&row.description)
        .bind(&row.options)
        .bind(row.created_at)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(done > 0)
    }

    pub async fn list_audit_devices(&self) -> Result<Vec<AuditDeviceRow>> {
        Ok(with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM audit_devices ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    pub async fn delete_audit_device(&self, name: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM audit_devices WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    // ---- source addresses -------------------------------------------------------------------

    /// Records that `identity` read from `address` at `now`; returns whether the identity had read
    /// from any address since `since` and whether this address was among them.
    pub async fn touch_source_address(
        &self,
        identity: &str,
        address: &str,
        now: i64,
        since: i64,
    ) -> Result<(bool, bool)> {
        // Separate autocommit statements, not one transaction: a deferred SQLite transaction that
        // reads and then writes fails with SQLITE_BUSY_SNAPSHOT whenever another request wrote in
        // between, which under load is most of the time. Two concurrent first reads from one new
        // address may then both see it as new; that costs at most a duplicate alert.
        let known: i64 = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM source_addresses WHERE identity = $1 AND last_seen >= $2",
        )
        .bind(identity)
        .bind(since)
        .fetch_one(pool)
        .await?);
        let this: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(
            "SELECT COUNT(*) FROM source_addresses WHERE identity = $1 AND address = $2 AND last_seen >= $3",
        )
        .bind(identity)
        .bind(address)
        .bind(since)
        .fetch_one(pool)
        .await?
        });
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO source_addresses (identity, address, first_seen, last_seen) VALUES ($1, $2, $3, $4)
             ON CONFLICT (identity, address) DO UPDATE SET last_seen = excluded.last_seen",
        )
        .bind(identity)
        .bind(address)
        .bind(now)
        .bind(now)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok((known > 0, this > 0))
    }

    // ---- alerts -----------------------------------------------------------------------------

    /// The latest alert of the same rule and subject seen at or after `since`, which a repeat
    /// updates instead of raising a new one.
    pub async fn open_alert(
        &self,
        rule: &str,
        identity: &str,
        address: &str,
        role: &str,
        since: i64,
    ) -> Result<Option<AlertRow>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT * FROM alerts WHERE rule = $1 AND identity = $2 AND address = $3 AND role = $4 AND last_seen >= $5
             ORDER BY id DESC LIMIT 1",
        )
        .bind(rule)
        .bind(identity)
        .bind(address)
        .bind(role)
        .bind(since)
        .fetch_optional(pool)
        .await?
        }))
    }

    pub async fn insert_alert(&self, row: &AlertRow) -> Result<i64> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
            "INSERT INTO alerts (rule, identity, display_name, address, role, count, first_seen, last_seen, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(&row.rule)
        .bind(&row.identity)
        .bind(&row.display_name)
        .bind(&row.address)
        .bind(&row.role)
        .bind(row.count)
        .bind(row.first_seen)
        .bind(row.last_seen)
        .bind(&row.detail)
        .fetch_one(pool)
        .await?
        }))
    }

    pub async fn update_alert(&self, id: i64, count: i64, last_seen: i64) -> Result<()> {
        with_pool!(self, |pool| sqlx::query(
            "UPDATE alerts SET count = $1, last_seen = $2 WHERE id = $3"
        )
        .bind(count)
        .bind(last_seen)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// The newest alerts first.
    pub async fn recent_alerts(&self, limit: i64) -> Result<Vec<AlertRow>> {
        Ok(with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM alerts ORDER BY last_seen DESC, id DESC LIMIT $1"
        )
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }
}

impl Store {
    // ---- housekeeping -----------------------------------------------------------------------

    /// The accessors of tokens that are dead at `now` (expired, or whose parent is gone) and of
    /// every token below them: what housekeeping removes. Every JWT login leaves one behind.
    pub async fn dead_token_trees(&self, now: i64) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
            "WITH RECURSIVE tree(accessor) AS (
                 SELECT t.accessor FROM tokens t
                 WHERE (t.expires_at IS NOT NULL AND t.expires_at <= $1)
                    OR (t.parent_accessor IS NOT NULL
                        AND NOT EXISTS (SELECT 1 FROM tokens p WHERE p.accessor = t.parent_accessor))
                 UNION
                 SELECT t.accessor FROM tokens t JOIN tree ON t.parent_accessor = tree.accessor
             )
             SELECT accessor FROM tree",
        )
        .bind(now)
        .fetch_all(pool)
        .await?
        }))
    }

    /// Deletes the tokens with these accessors; returns how many were still there. The list goes
    /// in chunks of bound parameters, well under either engine's limit on their number.
    pub async fn delete_tokens(&self, accessors: &[String]) -> Result<u64> {
        let mut deleted = 0;
        for chunk in accessors.chunks(500) {
            deleted += with_pool!(self, |pool| {
                let mut query = sqlx::QueryBuilder::new("DELETE FROM tokens WHERE accessor IN (");
                let mut list = query.separated(", ");
                for accessor in chunk {
                    list.push_bind(accessor);
                }
                query.push(")");
                query.build().execute(pool).await?.rows_affected()
            });
        }
        Ok(deleted)
    }

    /// Forgets source addresses not seen since `before`.
    pub async fn forget_source_addresses(&self, before: i64) -> Result<u64> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM source_addresses WHERE last_seen < $1"
        )
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done)
    }

    /// Deletes alerts last seen before `before`.
    pub async fn delete_alerts_before(&self, before: i64) -> Result<u64> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM alerts WHERE last_seen < $1"
        )
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done)
    }
}

// ---- certificate auth roles (migration 0007) ---------------------------------------------------

impl Store {
    pub async fn upsert_cert_role(&self, name: &str, config: &str, now: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO cert_roles (name, config, created_at, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(config)
        .bind(now)
        .bind(now)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    pub async fn get_cert_role(&self, name: &str) -> Result<Option<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT config FROM cert_roles WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn list_cert_roles(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM cert_roles ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    /// Every role with its body, by name: a login without a role name tries them all.
    pub async fn all_cert_roles(&self) -> Result<Vec<(String, String)>> {
        Ok(with_pool!(self, |pool| sqlx::query_as(
            "SELECT name, config FROM cert_roles ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    pub async fn delete_cert_role(&self, name: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM cert_roles WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }
}

// ---- password policies (migration 0009) ----------------------------------------------------

impl Store {
    pub async fn upsert_password_policy(&self, name: &str, text: &str, now: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO password_policies (name, text, created_at, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET text = excluded.text, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(text)
        .bind(now)
        .bind(now)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    pub async fn get_password_policy(&self, name: &str) -> Result<Option<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT text FROM password_policies WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn list_password_policies(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM password_policies ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    /// Names of the connections whose `password_policy` is `name`.
    pub async fn connections_using_password_policy(&self, name: &str) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM connections WHERE password_policy = $1 ORDER BY name",
        )
        .bind(name)
        .fetch_all(pool)
        .await?))
    }

    /// Deletes a policy. A connection naming it makes the foreign key refuse the delete, which
    /// comes back as a Conflict even if a connection took the policy up after the caller checked.
    pub async fn delete_password_policy(&self, name: &str) -> Result<()> {
        match with_pool!(self, |pool| sqlx::query("DELETE FROM password_policies WHERE name = $1")
            .bind(name)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Err(crate::error::Error::Conflict(format!(
                    "password policy {name} is in use by a connection; change its password_policy first"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The `(name, text)` of the password policy `connection` uses, if it names one.
    pub async fn connection_password_policy_text(
        &self,
        connection: &str,
    ) -> Result<Option<(String, String)>> {
        Ok(with_pool!(self, |pool| sqlx::query_as(
            "SELECT p.name, p.text FROM connections c
                 JOIN password_policies p ON p.name = c.password_policy
             WHERE c.name = $1",
        )
        .bind(connection)
        .fetch_optional(pool)
        .await?))
    }
}
