//! Store queries for auditing: the enabled audit devices, the addresses each identity has read
//! from, and anomaly alerts (migration 0003).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::FromRow;

use super::codec;
use super::{from_millis, to_millis, Store};
use crate::error::{Error, Result};

/// One enabled audit device.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditDevice {
    pub name: String,
    pub device_type: String,
    pub description: String,
    /// The device's options (`file_path`).
    pub options: Map<String, Value>,
    pub created_at: DateTime<Utc>,
}

/// One anomaly alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Assigned by the store ([`AuditStore::insert_alert`] returns it; ignored when inserting).
    pub id: i64,
    pub rule: String,
    /// Empty when the rule has no such subject (a refused request carries no identity).
    pub identity: String,
    pub display_name: String,
    pub address: String,
    pub role: String,
    /// How many times the rule fired while the alert was open.
    pub count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub detail: String,
}

/// An `audit_devices` row as stored.
#[derive(FromRow)]
struct AuditDeviceRow {
    name: String,
    device_type: String,
    description: String,
    /// JSON object.
    options: String,
    created_at: i64,
}

impl TryFrom<AuditDeviceRow> for AuditDevice {
    type Error = Error;

    fn try_from(row: AuditDeviceRow) -> Result<Self> {
        Ok(Self {
            options: codec::decode("audit_devices", "options", &row.options)?,
            created_at: from_millis(row.created_at),
            name: row.name,
            device_type: row.device_type,
            description: row.description,
        })
    }
}

/// An `alerts` row as stored.
#[derive(FromRow)]
struct AlertRow {
    id: i64,
    rule: String,
    identity: String,
    display_name: String,
    address: String,
    role: String,
    count: i64,
    first_seen: i64,
    last_seen: i64,
    detail: String,
}

impl From<AlertRow> for Alert {
    fn from(row: AlertRow) -> Self {
        Self {
            id: row.id,
            rule: row.rule,
            identity: row.identity,
            display_name: row.display_name,
            address: row.address,
            role: row.role,
            count: row.count,
            first_seen: from_millis(row.first_seen),
            last_seen: from_millis(row.last_seen),
            detail: row.detail,
        }
    }
}

/// Auditing: audit devices, the source addresses of the new-address rule, and anomaly alerts.
// Only ever called on the concrete `Store`, so each future's `Send`-ness is known at the call.
#[allow(async_fn_in_trait)]
pub trait AuditStore {
    /// Stores a new device; false when the name is taken.
    async fn insert_audit_device(&self, device: &AuditDevice) -> Result<bool>;
    async fn list_audit_devices(&self) -> Result<Vec<AuditDevice>>;
    async fn delete_audit_device(&self, name: &str) -> Result<bool>;

    /// Records that `identity` read from `address` at `now`; returns whether the identity had read
    /// from any address since `since` and whether this address was among them.
    async fn touch_source_address(
        &self,
        identity: &str,
        address: &str,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<(bool, bool)>;
    /// Forgets source addresses not seen since `before`.
    async fn forget_source_addresses(&self, before: DateTime<Utc>) -> Result<u64>;

    /// The latest alert of the same rule and subject seen at or after `since`, which a repeat
    /// updates instead of raising a new one.
    async fn open_alert(
        &self,
        rule: &str,
        identity: &str,
        address: &str,
        role: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<Alert>>;
    /// Stores a new alert (its `id` is ignored) and returns its id.
    async fn insert_alert(&self, alert: &Alert) -> Result<i64>;
    async fn update_alert(&self, id: i64, count: i64, last_seen: DateTime<Utc>) -> Result<()>;
    /// The newest alerts first.
    async fn recent_alerts(&self, limit: i64) -> Result<Vec<Alert>>;
    /// Deletes alerts last seen before `before`.
    async fn delete_alerts_before(&self, before: DateTime<Utc>) -> Result<u64>;
}

impl AuditStore for Store {
    // ---- audit devices ----------------------------------------------------------------------

    async fn insert_audit_device(&self, device: &AuditDevice) -> Result<bool> {
        let options = codec::encode("audit_devices", "options", &device.options)?;
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO audit_devices (name, device_type, description, options, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&device.name)
        .bind(&device.device_type)
        .bind(&device.description)
        .bind(&options)
        .bind(to_millis(device.created_at))
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(done > 0)
    }

    async fn list_audit_devices(&self) -> Result<Vec<AuditDevice>> {
        let rows: Vec<AuditDeviceRow> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM audit_devices ORDER BY name"
        )
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(AuditDevice::try_from).collect()
    }

    async fn delete_audit_device(&self, name: &str) -> Result<bool> {
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

    async fn touch_source_address(
        &self,
        identity: &str,
        address: &str,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<(bool, bool)> {
        let (now, since) = (to_millis(now), to_millis(since));
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

    async fn open_alert(
        &self,
        rule: &str,
        identity: &str,
        address: &str,
        role: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<Alert>> {
        let row: Option<AlertRow> = with_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT * FROM alerts WHERE rule = $1 AND identity = $2 AND address = $3 AND role = $4 AND last_seen >= $5
             ORDER BY id DESC LIMIT 1",
        )
        .bind(rule)
        .bind(identity)
        .bind(address)
        .bind(role)
        .bind(to_millis(since))
        .fetch_optional(pool)
        .await?
        });
        Ok(row.map(Alert::from))
    }

    async fn insert_alert(&self, alert: &Alert) -> Result<i64> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
            "INSERT INTO alerts (rule, identity, display_name, address, role, count, first_seen, last_seen, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(&alert.rule)
        .bind(&alert.identity)
        .bind(&alert.display_name)
        .bind(&alert.address)
        .bind(&alert.role)
        .bind(alert.count)
        .bind(to_millis(alert.first_seen))
        .bind(to_millis(alert.last_seen))
        .bind(&alert.detail)
        .fetch_one(pool)
        .await?
        }))
    }

    async fn update_alert(&self, id: i64, count: i64, last_seen: DateTime<Utc>) -> Result<()> {
        with_pool!(self, |pool| sqlx::query(
            "UPDATE alerts SET count = $1, last_seen = $2 WHERE id = $3"
        )
        .bind(count)
        .bind(to_millis(last_seen))
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    async fn recent_alerts(&self, limit: i64) -> Result<Vec<Alert>> {
        let rows: Vec<AlertRow> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM alerts ORDER BY last_seen DESC, id DESC LIMIT $1"
        )
        .bind(limit)
        .fetch_all(pool)
        .await?);
        Ok(rows.into_iter().map(Alert::from).collect())
    }

    // ---- housekeeping -----------------------------------------------------------------------

    async fn forget_source_addresses(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM source_addresses WHERE last_seen < $1"
        )
        .bind(to_millis(before))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done)
    }

    async fn delete_alerts_before(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM alerts WHERE last_seen < $1"
        )
        .bind(to_millis(before))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done)
    }
}
