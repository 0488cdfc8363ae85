//! The audit trail and the watch kept on it.
//!
//! - This module: audit devices (`file`, `stdout`) enabled at `sys/audit/:name`, each receiving
//!   one JSON line per request and one per response. Secrets in them (passwords, tokens, JWTs,
//!   connection URLs, anything not known to be harmless) appear only as `hmac-sha256:<hex>` under
//!   a per-install key, so an operator can still ask "was this token used?" through
//!   `sys/audit-hash/:name` without the log being a store of secrets.
//! - [`anomaly`]: rules over the same stream (bursts, new source addresses, reads outside hours,
//!   repeated denials) that raise alerts.
//! - [`housekeeping`]: removes expired tokens, stale source addresses and old alerts.
//!
//! Fail closed: with devices enabled, a request none of them can record is not performed. A file
//! device opens its file for every line, so a file that becomes unwritable (its directory removed,
//! the disk full) is noticed on the next request rather than written into an unlinked inode.
//!
//! A file device never writes into the server's own files: its `file_path` must be absolute,
//! resolve (symlinks followed, of the file and of its directory) outside the data directories
//! (the store's and the seal key's) and outside `/proc`, `/sys` and `/dev`, and name a regular
//! file if it exists. The file is opened append-only and created 0600.

pub mod anomaly;
pub mod housekeeping;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::Utc;
use hmac::{Hmac, Mac};
use lessor_plugin::Secret;
use rand::RngCore;
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::seal::Sealer;
use crate::store::{AuditDevice, AuditStore, MetaStore, Store};

/// Meta-table key of the sealed HMAC key.
const KEY_META: &str = "audit_hmac_key";
const KEY_CONTEXT: &str = "meta/audit_hmac_key";

/// Keys whose string values are not secret and stay readable in the audit log. Every other string
/// is HMAC'd, so a field added later is hidden until someone decides it is harmless.
const CLEAR_KEYS: &[&str] = &[
    "accessor",
    "allowed_roles",
    "bound_audiences",
    "bound_issuer",
    "bound_subject",
    "db_name",
    "default_ttl",
    "description",
    "display_name",
    "entity_id",
    "error",
    "errors",
    "expire_time",
    "file_path",
    "format",
    "increment",
    "issue_time",
    "jwks_url",
    "keys",
    "last_error",
    "last_renewal",
    "lease_duration",
    "lease_id",
    "list",
    "max_ttl",
    "mount_type",
    "name",
    "path",
    "plugin_name",
    "policies",
    "policy",
    "renewable",
    "request_id",
    "role",
    "role_type",
    "rule",
    "state",
    "token_policies",
    "token_ttl",
    "token_type",
    "ttl",
    "type",
    "user_claim",
    "username",
    "warnings",
];

/// Where an audit device writes.
#[derive(Debug, Clone)]
enum Sink {
    File(PathBuf),
    Stdout,
}

#[derive(Debug)]
struct Device {
    name: String,
    device_type: String,
    description: String,
    options: Map<String, Value>,
    sink: Sink,
    /// Keeps concurrent lines whole.
    lock: tokio::sync::Mutex<()>,
}

/// Opens `path` for appending (creating it 0600) and writes `line`.
fn append_line(path: &std::path::Path, line: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // Checked at enable time already; checked again on the open file in case the path was
    // replaced since by something that is not a log file.
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is no longer a regular file",
            path.display()
        )));
    }
    file.write_all(line)
}

/// Pseudo-filesystems whose "files" are process memory, kernel knobs or devices.
const PSEUDO_FILESYSTEMS: &[&str] = &["/proc", "/sys", "/dev"];

/// Where a file device may write: `requested` resolved to the file it would really open, refused
/// (a 400 naming `options.file_path`) when that is inside one of the `protected` directories
/// (canonical paths) or a pseudo-filesystem, or exists and is not a regular file.
fn resolve_file_path(requested: &Path, protected: &[PathBuf]) -> Result<PathBuf> {
    let refuse = |why: String| Error::invalid(format!("options.file_path: {why}"));
    if !requested.is_absolute() {
        return Err(refuse("must be an absolute path".into()));
    }
    let resolved = match std::fs::symlink_metadata(requested) {
        // It exists (perhaps as a symlink): what it finally names is what would be written.
        Ok(_) => {
            let target = std::fs::canonicalize(requested).map_err(|e| {
                refuse(format!(
                    "cannot resolve {} ({e}); a symlink must point to an existing file",
                    requested.display()
                ))
            })?;
            let metadata = std::fs::metadata(&target)
                .map_err(|e| refuse(format!("cannot inspect {}: {e}", target.display())))?;
            if !metadata.is_file() {
                return Err(refuse(format!(
                    "{} exists and is not a regular file",
                    requested.display()
                )));
            }
            target
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (Some(parent), Some(name)) = (requested.parent(), requested.file_name()) else {
                return Err(refuse("must name a file".into()));
            };
            let parent = std::fs::canonicalize(parent).map_err(|e| {
                refuse(format!(
                    "its directory {} cannot be resolved: {e}",
                    parent.display()
                ))
            })?;
            parent.join(name)
        }
        Err(e) => {
            return Err(refuse(format!(
                "cannot inspect {}: {e}",
                requested.display()
            )))
        }
    };
    if let Some(dir) = protected.iter().find(|dir| resolved.starts_with(dir)) {
        return Err(refuse(format!(
            "{} is inside the server's data directory {}; an audit log there could overwrite the store or the seal key",
            requested.display(),
            dir.display()
        )));
    }
    if PSEUDO_FILESYSTEMS
        .iter()
        .any(|pseudo| resolved.starts_with(pseudo))
    {
        return Err(refuse(format!(
            "{} is not a regular file on disk",
            requested.display()
        )));
    }
    Ok(resolved)
}

impl Device {
    fn from_stored(row: &AuditDevice, protected: &[PathBuf]) -> Result<Self> {
        let options = row.options.clone();
        let file_path = options
            .get("file_path")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let sink = match (row.device_type.as_str(), file_path) {
            ("stdout", _) | ("file", "stdout") => Sink::Stdout,
            ("file", "") => {
                return Err(Error::invalid(
                    "options.file_path: required for a file audit device",
                ))
            }
            // The resolved path is what gets written, so a symlink swapped later cannot redirect
            // the lines into a file that was never checked.
            ("file", path) => Sink::File(resolve_file_path(Path::new(path), protected)?),
            (other, _) => {
                return Err(Error::invalid(format!(
                    "type: unknown audit device type {other:?}; known are file and stdout"
                )))
            }
        };
        Ok(Self {
            name: row.name.clone(),
            device_type: row.device_type.clone(),
            description: row.description.clone(),
            options,
            sink,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    async fn write(&self, line: Arc<Vec<u8>>) -> std::io::Result<()> {
        let _guard = self.lock.lock().await;
        match &self.sink {
            Sink::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || append_line(&path, &line))
                    .await
                    .map_err(std::io::Error::other)?
            }
            Sink::Stdout => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                out.write_all(&line).and_then(|_| out.flush())
            }
        }
    }
}

/// Audit devices and the HMAC key. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    store: Store,
    /// The server's data directories (canonical), where no audit file may be written.
    protected: Arc<Vec<PathBuf>>,
    /// Keyed once at start; cloned per hash. The key itself is kept nowhere else in memory.
    mac: Hmac<Sha256>,
    devices: Arc<RwLock<Vec<Arc<Device>>>>,
    /// Test builds: make the next response line fail, to prove the response is withheld.
    #[cfg(feature = "fault-injection")]
    fail_next_response: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Which half of an exchange a line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Request,
    Response,
    /// Something Lessor did on its own (a reconciliation sweep's findings).
    Event,
}

/// The devices the store lists, reusing those of `open` with the same name and type.
async fn load_devices(
    store: &Store,
    protected: &[PathBuf],
    open: &[Arc<Device>],
) -> Result<Vec<Arc<Device>>> {
    let mut devices = Vec::new();
    for row in store.list_audit_devices().await? {
        if let Some(device) = open
            .iter()
            .find(|d| d.name == row.name && d.device_type == row.device_type)
        {
            devices.push(device.clone());
            continue;
        }
        match Device::from_stored(&row, protected) {
            Ok(device) => devices.push(Arc::new(device)),
            Err(e) => {
                tracing::error!(device = %row.name, error = %e, "stored audit device is unusable")
            }
        }
    }
    Ok(devices)
}

impl Audit {
    /// Loads (or at first start creates and seals) the HMAC key, and the enabled devices.
    /// `protected` are the server's data directories (the store's, the seal key's): no audit file
    /// may be written inside them.
    pub async fn open(store: Store, sealer: &Sealer, protected: &[PathBuf]) -> Result<Self> {
        let protected: Vec<PathBuf> = protected
            .iter()
            .map(|dir| std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()))
            .collect();
        // Replicas starting together on an empty store each offer a key; the first one stored
        // wins and every replica uses that one.
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let offered = sealer.seal(KEY_CONTEXT, &Secret::new(hex::encode(bytes)))?;
        let sealed = store.meta_init(KEY_META, &offered).await?;
        let key = sealer.open(KEY_CONTEXT, &sealed)?;
        let devices = load_devices(&store, &protected, &[]).await?;
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
            .map_err(|e| Error::Internal(format!("audit key: {e}")))?;
        Ok(Self {
            store,
            protected: Arc::new(protected),
            mac,
            devices: Arc::new(RwLock::new(devices)),
            #[cfg(feature = "fault-injection")]
            fail_next_response: Arc::default(),
        })
    }

    /// Makes the enabled devices those the store lists, keeping the ones already open: another
    /// replica enabled or disabled a device, and it must be in force here too.
    pub async fn reload(&self) -> Result<()> {
        let current = self.devices();
        let devices = load_devices(&self.store, &self.protected, &current).await?;
        *self.devices.write().unwrap_or_else(|p| p.into_inner()) = devices;
        Ok(())
    }

    fn devices(&self) -> Vec<Arc<Device>> {
        self.devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `hmac-sha256:<hex>` of `input` under the install's audit key.
    pub fn hash(&self, input: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(input.as_bytes());
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// A copy of `value` in which every string not under a [`CLEAR_KEYS`] key is HMAC'd.
    pub fn redact(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.hash(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.redact(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let clear = CLEAR_KEYS.contains(&k.as_str())
                            && match v {
                                Value::Object(_) => false,
                                Value::Array(items) => items.iter().all(|i| !i.is_object()),
                                _ => true,
                            };
                        (k.clone(), if clear { v.clone() } else { self.redact(v) })
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.devices().is_empty()
    }

    pub fn has_device(&self, name: &str) -> bool {
        self.devices().iter().any(|d| d.name == name)
    }

    /// Enables a device after proving it can write; the name must be free.
    pub async fn enable(
        &self,
        name: &str,
        device_type: &str,
        description: &str,
        options: Map<String, Value>,
    ) -> Result<()> {
        let name = name.trim_matches('/');
        crate::catalog::check_name("audit device name", name)?;
        let row = AuditDevice {
            name: name.to_owned(),
            device_type: device_type.to_owned(),
            description: description.to_owned(),
            options,
            created_at: Utc::now(),
        };
        let device = Device::from_stored(&row, &self.protected)?;
        if self.has_device(name) {
            return Err(Error::invalid(format!(
                "path already in use: audit device {name:?} is enabled"
            )));
        }
        if let Sink::File(path) = &device.sink {
            let path = path.clone();
            tokio::task::spawn_blocking(move || append_line(&path, b""))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(|e| {
                    Error::invalid(format!("options.file_path: cannot write there: {e}"))
                })?;
        }
        if !self.store.insert_audit_device(&row).await? {
            return Err(Error::invalid(format!(
                "path already in use: audit device {name:?} is enabled"
            )));
        }
        self.devices
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(device));
        tracing::info!(device = %name, device_type, "audit device enabled");
        Ok(())
    }

    /// Disables a device; disabling one that is not enabled succeeds, as in Vault.
    pub async fn disable(&self, name: &str) -> Result<()> {
        let name = name.trim_matches('/');
        self.store.delete_audit_device(name).await?;
        self.devices
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d| d.name != name);
        tracing::info!(device = %name, "audit device disabled");
        Ok(())
    }

    /// `sys/audit` as Vault answers it: `"name/" -> {type, description, options, path, local}`.
    pub fn describe(&self) -> BTreeMap<String, Value> {
        self.devices()
            .iter()
            .map(|d| {
                (
                    format!("{}/", d.name),
                    json!({
                        "type": d.device_type,
                        "description": d.description,
                        "options": d.options,
                        "path": format!("{}/", d.name),
                        "local": false,
                    }),
                )
            })
            .collect()
    }

    /// Arms a failure of the next response line (test builds only).
    #[cfg(feature = "fault-injection")]
    pub fn fail_next_response(&self) {
        self.fail_next_response
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Writes one entry to every device. Succeeds when no device is enabled or when at least one
    /// recorded it (Vault's rule: one durable record is enough); fails when all failed. `entry`
    /// builds the line only when a device is enabled, since its HMACs would otherwise cost time
    /// on every request.
    pub async fn write(&self, kind: EntryKind, entry: impl FnOnce() -> Value) -> Result<()> {
        let devices = self.devices();
        if devices.is_empty() {
            return Ok(());
        }
        #[cfg(feature = "fault-injection")]
        if kind == EntryKind::Response
            && self
                .fail_next_response
                .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            crate::metrics::audit_failed();
            return Err(Error::AuditFailed("injected fault".into()));
        }
        let _ = kind;
        let mut line = serde_json::to_vec(&entry()).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        let line = Arc::new(line);
        let results =
            futures::future::join_all(devices.iter().map(|d| d.write(line.clone()))).await;
        let mut errors = Vec::new();
        for (device, result) in devices.iter().zip(results) {
            if let Err(e) = result {
                tracing::error!(device = %device.name, error = %e, "audit device failed to write");
                errors.push(format!("{}: {e}", device.name));
            }
        }
        if errors.len() == devices.len() {
            crate::metrics::audit_failed();
            return Err(Error::AuditFailed(errors.join("; ")));
        }
        Ok(())
    }
}
