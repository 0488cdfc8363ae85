//! Anomaly rules over the request stream, on by default:
//!
//! - **burst**: more than `threshold` credential reads by one identity within `window`;
//! - **new_address**: an identity reads credentials from an address it has not used within
//!   `lookback` (only once it has some history, so a workload's very first read is not an alert);
//! - **outside_hours**: a read of a role outside its allowed hours (UTC), where set;
//! - **denials**: more than `threshold` refused requests from one address within `window`.
//!
//! An alert is logged at WARN, counted in `lessor_alerts_total{rule}`, stored for
//! `GET sys/alerts`, and POSTed to the webhook if one is set (in the background, with bounded
//! retries). Repeats of an alert while it is still open (within its window) update its count and
//! last-seen time instead of raising another, so a sustained burst is one alert, not hundreds.
//!
//! Rules come from the config file's `[monitor]` table; `sys/monitor/rules` changes them at run
//! time and its changes are stored, winning over the file from then on. Sliding windows (burst,
//! denials) live in this process's memory: with several replicas each counts its own traffic.
//! Seen addresses and alerts are in the store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::store::{Alert, AuditStore, MetaStore, ReplicaStore, Store, StoreKind};

/// Meta-table key of rules written through the API.
pub const RULES_META: &str = "monitor_rules";
/// How long an outside-hours alert stays open for repeats.
const OUTSIDE_HOURS_REOPEN: Duration = Duration::from_secs(3600);
/// A known (identity, address) pair's `last_seen` is written at most this often by one process:
/// the new-address rule only needs it within the lookback, which is days.
const ADDRESS_REWRITE_AFTER: Duration = Duration::from_secs(60);
/// Pairs remembered as recently written before the memory is cleared (and rebuilt from the store).
const REMEMBERED_ADDRESSES: usize = 10_000;

/// How long repeats of an open alert are counted in memory before they are written (see
/// `OpenAlert`): the most its count and `last_seen` in the store lag behind.
const ALERT_REWRITE_AFTER: Duration = Duration::from_secs(1);

/// Open alerts remembered at most; past that, the ones already written are forgotten.
const REMEMBERED_ALERTS: usize = 10_000;

/// Durations in the rules: seconds, or strings such as `"60s"` and `"7d"`.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BurstRule {
    pub enabled: bool,
    pub threshold: u32,
    #[serde(with = "crate::ttl::duration_secs")]
    pub window: Duration,
}

impl Default for BurstRule {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 30,
            window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewAddressRule {
    pub enabled: bool,
    #[serde(with = "crate::ttl::duration_secs")]
    pub lookback: Duration,
}

impl Default for NewAddressRule {
    fn default() -> Self {
        Self {
            enabled: true,
            lookback: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutsideHoursRule {
    pub enabled: bool,
    /// Role name -> allowed hours in UTC, `"09:00-18:00"`; a window may wrap past midnight.
    pub roles: BTreeMap<String, String>,
}

impl Default for OutsideHoursRule {
    fn default() -> Self {
        Self {
            enabled: true,
            roles: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenialRule {
    pub enabled: bool,
    pub threshold: u32,
    #[serde(with = "crate::ttl::duration_secs")]
    pub window: Duration,
}

impl Default for DenialRule {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 10,
            window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Empty: no webhook.
    pub url: String,
    /// Tries per alert, 1 to 10.
    pub attempts: u32,
    #[serde(with = "crate::ttl::duration_secs")]
    pub timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            attempts: 3,
            timeout: Duration::from_secs(5),
        }
    }
}

/// All anomaly settings: the config file's `[monitor]` table and `sys/monitor/rules`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorRules {
    pub burst: BurstRule,
    pub new_address: NewAddressRule,
    pub outside_hours: OutsideHoursRule,
    pub denials: DenialRule,
    pub webhook: WebhookSettings,
}

impl MonitorRules {
    /// Checks values that parse but make no sense, naming the setting.
    pub fn validate(&self) -> Result<()> {
        if self.burst.threshold == 0 || self.burst.window.is_zero() {
            return Err(Error::invalid(
                "burst: threshold and window must be greater than zero",
            ));
        }
        if self.denials.threshold == 0 || self.denials.window.is_zero() {
            return Err(Error::invalid(
                "denials: threshold and window must be greater than zero",
            ));
        }
        if self.new_address.lookback.is_zero() {
            return Err(Error::invalid(
                "new_address: lookback must be greater than zero",
            ));
        }
        for (role, hours) in &self.outside_hours.roles {
            HourWindow::parse(hours)
                .map_err(|e| Error::invalid(format!("outside_hours.roles.{role}: {e}")))?;
        }
        if !self.webhook.url.is_empty() {
            let url = url::Url::parse(&self.webhook.url)
                .map_err(|e| Error::invalid(format!("webhook.url: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::invalid("webhook.url: must be an http or https URL"));
            }
        }
        if !(1..=10).contains(&self.webhook.attempts) {
            return Err(Error::invalid("webhook.attempts: 1 to 10"));
        }
        if self.webhook.timeout.is_zero() || self.webhook.timeout > Duration::from_secs(60) {
            return Err(Error::invalid(
                "webhook.timeout: more than 0 and at most 60 seconds",
            ));
        }
        Ok(())
    }

    /// These rules with `patch` merged in (objects key by key; `null` removes a key).
    pub fn merged(&self, patch: &Value) -> Result<Self> {
        let mut current = serde_json::to_value(self).map_err(|e| Error::Internal(e.to_string()))?;
        merge(&mut current, patch);
        let rules: Self = serde_json::from_value(current)
            .map_err(|e| Error::invalid(format!("monitor rules: {e}")))?;
        rules.validate()?;
        Ok(rules)
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// Allowed hours of a role: minutes after midnight UTC, end exclusive; wraps when end < start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourWindow {
    start: u32,
    end: u32,
}

impl HourWindow {
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let minutes = |part: &str| -> std::result::Result<u32, String> {
            let (h, m) = part.trim().split_once(':').ok_or("expected HH:MM-HH:MM")?;
            let h: u32 = h.parse().map_err(|_| "expected HH:MM-HH:MM")?;
            let m: u32 = m.parse().map_err(|_| "expected HH:MM-HH:MM")?;
            if h > 24 || m > 59 || (h == 24 && m != 0) {
                return Err("hours are 00:00 to 24:00".into());
            }
            Ok(h * 60 + m)
        };
        let (start, end) = text.split_once('-').ok_or("expected HH:MM-HH:MM")?;
        let window = Self {
            start: minutes(start)?,
            end: minutes(end)?,
        };
        if window.start == window.end {
            return Err("an empty window; omit the role to allow all hours".into());
        }
        Ok(window)
    }

    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let now = at.hour() * 60 + at.minute();
        if self.start < self.end {
            (self.start..self.end).contains(&now)
        } else {
            now >= self.start || now < self.end
        }
    }
}

/// Adds `now` to a sliding window and returns how many events it holds.
fn slide(events: &mut VecDeque<DateTime<Utc>>, now: DateTime<Utc>, window: Duration) -> usize {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    events.push_back(now);
    while events.front().is_some_and(|first| now - *first > window) {
        events.pop_front();
    }
    events.len()
}

/// An alert as `sys/alerts` and the webhook show it.
pub fn alert_json(row: &Alert) -> Value {
    let blank = |s: &str| {
        if s.is_empty() {
            Value::Null
        } else {
            Value::String(s.to_owned())
        }
    };
    json!({
        "id": row.id,
        "rule": row.rule,
        "identity": blank(&row.identity),
        "display_name": blank(&row.display_name),
        "address": blank(&row.address),
        "role": blank(&row.role),
        "count": row.count,
        "first_seen": row.first_seen.to_rfc3339(),
        "last_seen": row.last_seen.to_rfc3339(),
        "detail": row.detail,
    })
}

/// Who did something, for the rules.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// Entity id; empty when the request carried no valid token.
    pub identity: String,
    pub display_name: String,
    pub address: Option<IpAddr>,
}

/// Recent events per subject, for the sliding windows of one process.
#[derive(Default)]
struct Windows {
    reads: HashMap<String, VecDeque<DateTime<Utc>>>,
    denials: HashMap<String, VecDeque<DateTime<Utc>>>,
}

/// Which sliding window an event counts in.
#[derive(Debug, Clone, Copy)]
enum Window {
    /// Credential reads per identity (the burst rule).
    Reads,
    /// Refused requests per address (the denials rule).
    Denials,
}

impl Window {
    fn as_str(self) -> &'static str {
        match self {
            Self::Reads => "reads",
            Self::Denials => "denials",
        }
    }
}

/// When this process last wrote each (identity, address) pair's `last_seen`.
type RecordedAddresses = HashMap<(String, String), DateTime<Utc>>;

/// An open alert's rule, identity, address and role.
type AlertKey = (&'static str, String, String, String);

/// An open alert this process wrote lately. Repeats within [`ALERT_REWRITE_AFTER`] of that write
/// are counted here and written once, by the next [`Monitor::flush_alerts`]: an identity that
/// keeps reading past the burst threshold would otherwise make every one of its reads look the
/// alert up and write it (issue 10: a store write per credential, contending with the lease
/// writes).
struct OpenAlert {
    id: i64,
    count: i64,
    last_seen: DateTime<Utc>,
    written_at: DateTime<Utc>,
    /// Counted here since the last write.
    dirty: bool,
}

/// The anomaly monitor. Cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    store: Store,
    rules: Arc<RwLock<MonitorRules>>,
    windows: Arc<Mutex<Windows>>,
    /// When this process last wrote each (identity, address) pair's `last_seen` to the store: a
    /// repeat read within [`ADDRESS_REWRITE_AFTER`] is known without asking the store. The store
    /// stays the shared truth for first sight: a pair not remembered here goes to it.
    recorded_addresses: Arc<Mutex<RecordedAddresses>>,
    /// Open alerts written lately, with the repeats not yet written (see [`OpenAlert`]).
    open_alerts: Arc<Mutex<HashMap<AlertKey, OpenAlert>>>,
    /// A flush of `open_alerts` is on its way.
    flush_scheduled: Arc<std::sync::atomic::AtomicBool>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

/// What to raise.
struct Raise<'a> {
    rule: &'static str,
    actor: &'a Actor,
    address: String,
    role: &'a str,
    /// The count to record; `None` adds one to the open alert.
    count: Option<i64>,
    /// Repeats after this instant update the open alert; `None` always raises a new one.
    open_since: Option<DateTime<Utc>>,
    detail: String,
}

impl Monitor {
    /// Starts with the rules stored through the API if any, else `configured` (from the file).
    pub async fn open(store: Store, configured: MonitorRules) -> Result<Self> {
        configured
            .validate()
            .map_err(|e| Error::Config(format!("[monitor]: {e}")))?;
        let rules = match store.meta_get_json::<MonitorRules>(RULES_META).await {
            Ok(Some(stored)) => stored,
            Ok(None) => configured,
            // A value that does not decode; a store that cannot be read is an error here too.
            Err(Error::Internal(e)) => {
                tracing::error!(error = %e, "stored monitor rules are unreadable; using the config file's");
                configured
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            store,
            rules: Arc::new(RwLock::new(rules)),
            windows: Arc::default(),
            recorded_addresses: Arc::default(),
            open_alerts: Arc::default(),
            flush_scheduled: Arc::default(),
            http: reqwest::Client::new(),
        })
    }

    /// Reads the rules again from the store, where another replica changed them.
    pub async fn reload_rules(&self) -> Result<()> {
        if let Some(stored) = self.store.meta_get_json::<MonitorRules>(RULES_META).await? {
            *self.rules.write().unwrap_or_else(|p| p.into_inner()) = stored;
        }
        Ok(())
    }

    /// Records an event in `window` for `subject` at `now` and counts the events of the last
    /// `length`, this one included. Replicas sharing a store count together, in the store; a
    /// single process counts in memory, which is the same count without the writes.
    async fn count_in_window(
        &self,
        window: Window,
        subject: &str,
        now: DateTime<Utc>,
        length: Duration,
    ) -> Result<usize> {
        if self.store.kind() == StoreKind::Postgres {
            let since = now - chrono::Duration::from_std(length).unwrap_or(chrono::Duration::MAX);
            let count = self
                .store
                .count_anomaly_event(window.as_str(), subject, now, since)
                .await?;
            return Ok(count.max(0) as usize);
        }
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let events = match window {
            Window::Reads => windows.reads.entry(subject.to_owned()).or_default(),
            Window::Denials => windows.denials.entry(subject.to_owned()).or_default(),
        };
        Ok(slide(events, now, length))
    }

    pub fn rules(&self) -> MonitorRules {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies and stores a change (`sys/monitor/rules`), returning the new rules.
    pub async fn update_rules(&self, patch: &Value) -> Result<MonitorRules> {
        let rules = self.rules().merged(patch)?;
        self.store.meta_set_json(RULES_META, &rules).await?;
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules.clone();
        tracing::info!("anomaly rules updated");
        Ok(rules)
    }

    /// Newest first.
    pub async fn alerts(&self, limit: i64) -> Result<Vec<Value>> {
        // What this process counted and has not written yet is part of the answer.
        self.flush_alerts().await;
        Ok(self
            .store
            .recent_alerts(limit)
            .await?
            .iter()
            .map(alert_json)
            .collect())
    }

    /// A credential was issued to `actor` for `role`.
    pub async fn credential_read(&self, actor: &Actor, role: &str) -> Result<()> {
        let rules = self.rules();
        let now = Utc::now();
        let address = actor.address.map(|a| a.to_string()).unwrap_or_default();
        if rules.burst.enabled && !actor.identity.is_empty() {
            let count = self
                .count_in_window(Window::Reads, &actor.identity, now, rules.burst.window)
                .await?;
            if count > rules.burst.threshold as usize {
                self.raise(
                    &rules,
                    Raise {
                        rule: "burst",
                        actor,
                        address: String::new(),
                        role: "",
                        count: Some(count as i64),
                        open_since: Some(
                            now - chrono::Duration::from_std(rules.burst.window)
                                .unwrap_or_default(),
                        ),
                        detail: format!(
                            "{count} credential reads within {}s (threshold {})",
                            rules.burst.window.as_secs(),
                            rules.burst.threshold
                        ),
                    },
                )
                .await?;
            }
        }
        if rules.new_address.enabled && !actor.identity.is_empty() && !address.is_empty() {
            let since =
                now - chrono::Duration::from_std(rules.new_address.lookback).unwrap_or_default();
            let (has_history, known) = self
                .touch_source_address(&actor.identity, &address, now, since)
                .await?;
            if has_history && !known {
                self.raise(
                    &rules,
                    Raise {
                        rule: "new_address",
                        actor,
                        address: address.clone(),
                        role,
                        count: Some(1),
                        open_since: None,
                        detail: format!(
                            "first read from this address within {} days",
                            rules.new_address.lookback.as_secs() / 86400
                        ),
                    },
                )
                .await?;
            }
        }
        if rules.outside_hours.enabled {
            if let Some(hours) = rules.outside_hours.roles.get(role) {
                if let Ok(window) = HourWindow::parse(hours) {
                    if !window.contains(now) {
                        self.raise(
                            &rules,
                            Raise {
                                rule: "outside_hours",
                                actor,
                                address: String::new(),
                                role,
                                count: None,
                                open_since: Some(
                                    now - chrono::Duration::from_std(OUTSIDE_HOURS_REOPEN)
                                        .unwrap_or_default(),
                                ),
                                detail: format!(
                                    "read at {} UTC, allowed {hours}",
                                    now.format("%H:%M")
                                ),
                            },
                        )
                        .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Records that `identity` read from `address` at `now`, answering as
    /// [`AuditStore::touch_source_address`] does: whether the identity had read from any address
    /// since `since`, and from this one. A pair this process wrote less than
    /// [`ADDRESS_REWRITE_AFTER`] ago, and within the lookback, is in the store with a `last_seen`
    /// at least that recent (housekeeping only forgets pairs older than the lookback), so the
    /// store's answer is known to be (true, true) and is not asked for.
    async fn touch_source_address(
        &self,
        identity: &str,
        address: &str,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<(bool, bool)> {
        let key = (identity.to_owned(), address.to_owned());
        let fresh_after =
            since.max(now - chrono::Duration::from_std(ADDRESS_REWRITE_AFTER).unwrap_or_default());
        let recent = self
            .recorded_addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .is_some_and(|written| *written > fresh_after);
        if recent {
            return Ok((true, true));
        }
        let answer = self
            .store
            .touch_source_address(identity, address, now, since)
            .await?;
        let mut recorded = self
            .recorded_addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if recorded.len() >= REMEMBERED_ADDRESSES && !recorded.contains_key(&key) {
            recorded.clear();
        }
        let written = recorded.entry(key).or_insert(now);
        *written = (*written).max(now);
        Ok(answer)
    }

    /// A request from `actor` was refused (403).
    pub async fn denied(&self, actor: &Actor) -> Result<()> {
        let rules = self.rules();
        let Some(address) = actor.address.filter(|_| rules.denials.enabled) else {
            return Ok(());
        };
        let now = Utc::now();
        let count = self
            .count_in_window(
                Window::Denials,
                &address.to_string(),
                now,
                rules.denials.window,
            )
            .await?;
        if count > rules.denials.threshold as usize {
            // The address is the subject: whoever presented tokens from it.
            let anonymous = Actor {
                address: actor.address,
                ..Actor::default()
            };
            self.raise(
                &rules,
                Raise {
                    rule: "denials",
                    actor: &anonymous,
                    address: address.to_string(),
                    role: "",
                    count: Some(count as i64),
                    open_since: Some(
                        now - chrono::Duration::from_std(rules.denials.window).unwrap_or_default(),
                    ),
                    detail: format!(
                        "{count} refused requests within {}s (threshold {})",
                        rules.denials.window.as_secs(),
                        rules.denials.threshold
                    ),
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Notes that the open alert `key` (row `id`) was written with `count` at `now`.
    fn remember_alert(&self, key: AlertKey, id: i64, count: i64, now: DateTime<Utc>) {
        let mut open_alerts = self.open_alerts.lock().unwrap_or_else(|p| p.into_inner());
        if open_alerts.len() >= REMEMBERED_ALERTS && !open_alerts.contains_key(&key) {
            // Forgetting a written alert costs one lookup later; a dirty one is kept until flushed.
            open_alerts.retain(|_, open| open.dirty);
        }
        open_alerts.insert(
            key,
            OpenAlert {
                id,
                count,
                last_seen: now,
                written_at: now,
                dirty: false,
            },
        );
    }

    /// Writes the repeats counted in memory within [`ALERT_REWRITE_AFTER`], unless a write is
    /// already on its way.
    fn schedule_alert_flush(&self) {
        if self
            .flush_scheduled
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let monitor = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ALERT_REWRITE_AFTER).await;
            monitor.flush_alerts().await;
        });
    }

    /// Writes every open alert's repeats counted in memory since its last write.
    pub async fn flush_alerts(&self) {
        self.flush_scheduled
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let now = Utc::now();
        let due: Vec<(i64, i64, DateTime<Utc>)> = self
            .open_alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
            .filter(|open| open.dirty)
            .map(|open| {
                open.dirty = false;
                open.written_at = now;
                (open.id, open.count, open.last_seen)
            })
            .collect();
        for (id, count, last_seen) in due {
            if let Err(error) = self.store.update_alert(id, count, last_seen).await {
                tracing::warn!(%error, alert = id, count, "cannot record an open alert's repeats; its count lags until its next repeat");
            }
        }
    }

    async fn raise(&self, rules: &MonitorRules, raise: Raise<'_>) -> Result<()> {
        let now = Utc::now();
        let key: AlertKey = (
            raise.rule,
            raise.actor.identity.clone(),
            raise.address.clone(),
            raise.role.to_owned(),
        );
        if let Some(since) = raise.open_since {
            let written_after =
                now - chrono::Duration::from_std(ALERT_REWRITE_AFTER).unwrap_or_default();
            let counted_here = {
                let mut open_alerts = self.open_alerts.lock().unwrap_or_else(|p| p.into_inner());
                match open_alerts.get_mut(&key) {
                    // Still open (seen within the window as the store judges it), and either
                    // written lately or holding repeats a scheduled flush will write: count it
                    // here. Otherwise the store is asked, as another replica may have counted too.
                    Some(open)
                        if open.last_seen >= since
                            && (open.dirty || open.written_at > written_after) =>
                    {
                        open.count = raise.count.unwrap_or(open.count + 1).max(open.count);
                        open.last_seen = now;
                        open.dirty = true;
                        true
                    }
                    _ => false,
                }
            };
            if counted_here {
                self.schedule_alert_flush();
                return Ok(());
            }
            if let Some(open) = self
                .store
                .open_alert(
                    raise.rule,
                    &raise.actor.identity,
                    &raise.address,
                    raise.role,
                    since,
                )
                .await?
            {
                let count = raise.count.unwrap_or(open.count + 1).max(open.count);
                self.store.update_alert(open.id, count, now).await?;
                self.remember_alert(key, open.id, count, now);
                return Ok(());
            }
        }
        let mut row = Alert {
            id: 0,
            rule: raise.rule.to_owned(),
            identity: raise.actor.identity.clone(),
            display_name: raise.actor.display_name.clone(),
            address: raise.address,
            role: raise.role.to_owned(),
            count: raise.count.unwrap_or(1),
            first_seen: now,
            last_seen: now,
            detail: raise.detail,
        };
        row.id = self.store.insert_alert(&row).await?;
        if raise.open_since.is_some() {
            self.remember_alert(key, row.id, row.count, now);
        }
        tracing::warn!(
            rule = %row.rule,
            identity = %row.identity,
            display_name = %row.display_name,
            address = %row.address,
            role = %row.role,
            count = row.count,
            detail = %row.detail,
            "anomaly alert"
        );
        crate::metrics::alert_raised(&row.rule);
        if !rules.webhook.url.is_empty() {
            tokio::spawn(send_webhook(
                self.http.clone(),
                rules.webhook.clone(),
                alert_json(&row),
            ));
        }
        Ok(())
    }
}

/// POSTs one alert, retrying failures (connection errors, non-2xx) with doubling pauses; gives
/// up after the configured attempts and says so at ERROR.
async fn send_webhook(http: reqwest::Client, settings: WebhookSettings, alert: Value) {
    let mut pause = Duration::from_millis(200);
    for attempt in 1..=settings.attempts {
        let outcome = http
            .post(&settings.url)
            .timeout(settings.timeout)
            .json(&alert)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        match outcome {
            Ok(_) => return,
            Err(e) if attempt < settings.attempts => {
                tracing::warn!(attempt, error = %e, "alert webhook failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                tracing::error!(attempts = attempt, error = %e, "alert webhook failed; giving up on this alert")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// An identity reading on and on past the burst threshold costs the store one alert write
    /// per second, not a lookup and a write per read, and the alert still shows every read.
    #[tokio::test]
    async fn repeats_of_an_open_alert_are_written_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("lessor.db").display().to_string())
            .await
            .unwrap();
        let monitor = Monitor::open(store.clone(), MonitorRules::default())
            .await
            .unwrap();
        let actor = Actor {
            identity: "entity-1".into(),
            display_name: "svc".into(),
            address: None,
        };
        let threshold = MonitorRules::default().burst.threshold as usize;
        for _ in 0..=threshold {
            monitor.credential_read(&actor, "app").await.unwrap();
        }
        let before = store.operations_run();
        for _ in 0..50 {
            monitor.credential_read(&actor, "app").await.unwrap();
        }
        let spent = store.operations_run() - before;
        assert!(
            spent <= 2,
            "50 reads into an open burst alert took {spent} store operations"
        );
        let alerts = monitor.alerts(10).await.unwrap();
        let bursts: Vec<&Value> = alerts.iter().filter(|a| a["rule"] == "burst").collect();
        assert_eq!(bursts.len(), 1, "{alerts:?}");
        assert_eq!(bursts[0]["count"], json!(threshold + 51));

        // Past the scheduled flush, repeats go on into the same alert.
        for _ in 0..5 {
            monitor.credential_read(&actor, "app").await.unwrap();
        }
        tokio::time::sleep(ALERT_REWRITE_AFTER + Duration::from_millis(300)).await;
        let stored = store.recent_alerts(10).await.unwrap();
        let bursts: Vec<&Alert> = stored.iter().filter(|a| a.rule == "burst").collect();
        assert_eq!(bursts.len(), 1);
        assert_eq!(
            bursts[0].count,
            threshold as i64 + 56,
            "the flush wrote the repeats to the store without a read of the alerts"
        );
        store.close().await;
    }

    #[test]
    fn defaults_follow_the_issue() {
        let rules = MonitorRules::default();
        assert_eq!(rules.burst.threshold, 30);
        assert_eq!(rules.burst.window, Duration::from_secs(60));
        assert_eq!(rules.denials.threshold, 10);
        assert_eq!(rules.new_address.lookback, Duration::from_secs(7 * 86400));
        assert!(
            rules.burst.enabled
                && rules.new_address.enabled
                && rules.outside_hours.enabled
                && rules.denials.enabled
        );
        rules.validate().unwrap();
    }

    #[test]
    fn default_burst_fires_on_the_31st_read_within_60s_only() {
        let rules = MonitorRules::default();
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let mut events = VecDeque::new();
        // 30 reads one second apart: not a burst.
        for i in 0..30 {
            let n = slide(
                &mut events,
                start + chrono::Duration::seconds(i),
                rules.burst.window,
            );
            assert!(n <= rules.burst.threshold as usize);
        }
        // The 31st within the minute is.
        let n = slide(
            &mut events,
            start + chrono::Duration::seconds(30),
            rules.burst.window,
        );
        assert!(n > rules.burst.threshold as usize);
        // Two minutes later the window has emptied.
        let n = slide(
            &mut events,
            start + chrono::Duration::seconds(200),
            rules.burst.window,
        );
        assert_eq!(n, 1);
    }

    #[test]
    fn default_denials_fire_on_the_11th_refusal() {
        let rules = MonitorRules::default();
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let mut events = VecDeque::new();
        let counts: Vec<usize> = (0..11)
            .map(|i| {
                slide(
                    &mut events,
                    start + chrono::Duration::seconds(i * 5),
                    rules.denials.window,
                )
            })
            .collect();
        assert!(counts[..10].iter().all(|n| *n <= 10));
        assert!(counts[10] > 10);
    }

    #[test]
    fn hour_windows_and_midnight_wrap() {
        let at = |h, m| Utc.with_ymd_and_hms(2025, 1, 1, h, m, 0).unwrap();
        let office = HourWindow::parse("09:00-18:00").unwrap();
        assert!(office.contains(at(9, 0)) && office.contains(at(17, 59)));
        assert!(!office.contains(at(18, 0)) && !office.contains(at(3, 0)));
        let night = HourWindow::parse("22:00-06:00").unwrap();
        assert!(night.contains(at(23, 0)) && night.contains(at(5, 59)));
        assert!(!night.contains(at(12, 0)));
        for bad in ["9-18", "25:00-26:00", "09:00-09:00", "ab:cd-ef:gh"] {
            assert!(HourWindow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patches_merge_and_are_validated() {
        let rules = MonitorRules::default();
        let patched = rules
            .merged(&json!({"burst": {"threshold": 3, "window": "10s"}, "outside_hours": {"roles": {"app": "09:00-18:00"}}}))
            .unwrap();
        assert_eq!(patched.burst.threshold, 3);
        assert_eq!(patched.burst.window, Duration::from_secs(10));
        assert!(patched.burst.enabled, "untouched fields keep their value");
        let removed = patched
            .merged(&json!({"outside_hours": {"roles": {"app": null}}}))
            .unwrap();
        assert!(removed.outside_hours.roles.is_empty());
        assert!(rules.merged(&json!({"burst": {"threshold": 0}})).is_err());
        assert!(rules
            .merged(&json!({"outside_hours": {"roles": {"app": "late"}}}))
            .is_err());
        assert!(rules
            .merged(&json!({"brust": {}}))
            .unwrap_err()
            .to_string()
            .contains("brust"));
    }
}
