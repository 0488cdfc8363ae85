//! ACL policies in Vault's syntax (HCL or JSON) and the check every request goes through.
//!
//! A policy grants capabilities on path patterns: an exact path, a trailing `*` glob
//! (`database/creds/app-*`) and `+` for one whole segment (`sys/leases/lookup/database/creds/+/*`).
//! A token's policies are merged into one [`Acl`]: rules with the same pattern add up, and `deny`
//! anywhere wins. For a request path the exact rule applies if there is one, otherwise the matching
//! pattern of highest priority in Vault's order; with no matching rule the answer is no.
//!
//! `root` allows everything and cannot be written; `default` (self-service on one's own token and
//! leases) is stored at first start and attached to new tokens unless asked otherwise.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::Value;

use super::hcl;
use crate::error::{Error, Result};
use crate::store::{IdentityStore, Store};

/// The policy that allows everything.
pub const ROOT_POLICY: &str = "root";
/// The policy every token gets unless created with `no_default_policy`.
pub const DEFAULT_POLICY: &str = "default";

/// What `default` holds at first start: a token may look itself up, renew and revoke itself, and
/// look up and renew leases, which the ownership check limits to the leases it owns.
pub const DEFAULT_POLICY_TEXT: &str = r#"# Allow a token to look up, renew and revoke itself.
path "auth/token/lookup-self" {
  capabilities = ["read", "update"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
# Look up and renew leases; only the caller's own leases, unless it has sudo on the path.
path "sys/leases/lookup" {
  capabilities = ["update"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}
# The older path of the same, for older clients.
path "sys/renew" {
  capabilities = ["update"]
}
# Wrap a value of one's own (unwrap and lookup need only the wrapping token).
path "sys/wrapping/wrap" {
  capabilities = ["update"]
}
path "sys/leases/renew/*" {
  capabilities = ["update"]
}
"#;

/// One capability bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Capability {
    Create = 1,
    Read = 2,
    Update = 4,
    Delete = 8,
    List = 16,
    Sudo = 32,
    Deny = 64,
    Patch = 128,
}

impl Capability {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "create" => Self::Create,
            "read" => Self::Read,
            "update" => Self::Update,
            "delete" => Self::Delete,
            "list" => Self::List,
            "sudo" => Self::Sudo,
            "deny" => Self::Deny,
            "patch" => Self::Patch,
            _ => return None,
        })
    }

    const ALL: [(Capability, &'static str); 8] = [
        (Self::Create, "create"),
        (Self::Read, "read"),
        (Self::Update, "update"),
        (Self::Delete, "delete"),
        (Self::List, "list"),
        (Self::Sudo, "sudo"),
        (Self::Deny, "deny"),
        (Self::Patch, "patch"),
    ];
}

/// A set of capabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities(u8);

impl Capabilities {
    pub fn contains(self, capability: Capability) -> bool {
        self.0 & capability as u8 != 0
    }

    fn add(&mut self, other: Capabilities) {
        self.0 |= other.0;
    }

    /// Names, as `sys/capabilities` would show them; `deny` alone when denied.
    pub fn names(self) -> Vec<&'static str> {
        if self.contains(Capability::Deny) {
            return vec!["deny"];
        }
        Capability::ALL
            .iter()
            .filter(|(c, _)| self.contains(*c))
            .map(|(_, n)| *n)
            .collect()
    }
}

/// What a request does, from its method: Vault's logical operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    List,
    /// POST or PUT: Vault checks `create` for a new object and `update` for an existing one; our
    /// paths accept either capability.
    Write,
    Delete,
    Patch,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::List => "list",
            Self::Write => "update",
            Self::Delete => "delete",
            Self::Patch => "patch",
        }
    }

    fn allowed_by(self, caps: Capabilities) -> bool {
        match self {
            Self::Read => caps.contains(Capability::Read),
            Self::List => caps.contains(Capability::List),
            Self::Write => caps.contains(Capability::Create) || caps.contains(Capability::Update),
            Self::Delete => caps.contains(Capability::Delete),
            Self::Patch => caps.contains(Capability::Patch) || caps.contains(Capability::Update),
        }
    }
}

/// One path rule of a policy.
#[derive(Debug, Clone)]
pub struct PathRule {
    pub pattern: String,
    pub capabilities: Capabilities,
}

/// A parsed policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub rules: Vec<PathRule>,
}

/// Checks a policy name: Vault lower-cases names; we accept what a path segment safely holds.
pub fn check_policy_name(name: &str) -> Result<String> {
    let name = name.trim().to_lowercase();
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::invalid(
            "policy name: 1 to 128 letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(name)
}

/// How deeply `{` and `[` nest in a JSON text, outside strings; counted without recursion.
fn json_nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Parses a policy written in HCL or JSON (a text starting with `{` is tried as JSON first).
/// Both syntaxes share one size limit and one nesting limit ([`hcl::MAX_POLICY_BYTES`],
/// [`hcl::MAX_DEPTH`]): serde_json's own limit (128) is looser, and the value is walked after.
pub fn parse_policy(name: &str, text: &str) -> Result<Policy> {
    if text.len() > hcl::MAX_POLICY_BYTES {
        return Err(hcl::too_long());
    }
    let trimmed = text.trim_start();
    let value = if trimmed.starts_with('{') {
        if json_nesting(text) > hcl::MAX_DEPTH {
            return Err(hcl::too_deep());
        }
        match serde_json::from_str::<Value>(text) {
            Ok(value) => value,
            Err(_) => hcl::parse(text)?,
        }
    } else {
        hcl::parse(text)?
    };
    let mut rules: BTreeMap<String, Capabilities> = BTreeMap::new();
    let paths = match value.get("path") {
        None => Vec::new(),
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        // Vault's JSON also allows a list of one-key objects.
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect(),
        Some(_) => {
            return Err(Error::invalid(
                "policy: \"path\" must be an object of path rules",
            ))
        }
    };
    for (pattern, body) in paths {
        check_pattern(&pattern)?;
        let caps = rule_capabilities(&pattern, &body)?;
        rules.entry(pattern).or_default().add(caps);
    }
    if let Value::Object(map) = &value {
        for key in map.keys() {
            if key != "path" && key != "name" {
                return Err(Error::invalid(format!(
                    "policy: unknown top-level key {key:?}"
                )));
            }
        }
    }
    Ok(Policy {
        name: name.to_owned(),
        rules: rules
            .into_iter()
            .map(|(pattern, capabilities)| PathRule {
                pattern,
                capabilities,
            })
            .collect(),
    })
}

fn check_pattern(pattern: &str) -> Result<()> {
    let star = pattern.find('*');
    if star.is_some_and(|at| at != pattern.len() - 1) {
        return Err(Error::invalid(format!(
            "policy: path {pattern:?}: '*' is only allowed at the end"
        )));
    }
    if pattern.starts_with('/') {
        return Err(Error::invalid(format!(
            "policy: path {pattern:?} must not start with '/'"
        )));
    }
    for segment in pattern.split('/') {
        if segment.contains('+') && segment != "+" {
            return Err(Error::invalid(format!(
                "policy: path {pattern:?}: '+' must stand for a whole segment"
            )));
        }
    }
    Ok(())
}

fn rule_capabilities(pattern: &str, body: &Value) -> Result<Capabilities> {
    let mut caps = Capabilities::default();
    let Some(body) = body.as_object() else {
        return Err(Error::invalid(format!(
            "policy: path {pattern:?}: expected a block"
        )));
    };
    let list = match body.get("capabilities") {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        Some(_) => {
            return Err(Error::invalid(format!(
                "policy: path {pattern:?}: capabilities must be a list of strings"
            )))
        }
        None => Vec::new(),
    };
    for item in list {
        let name = item.as_str().unwrap_or_default();
        let capability = Capability::parse(name).ok_or_else(|| {
            Error::invalid(format!(
                "policy: path {pattern:?}: unknown capability {item}; known are create, read, update, delete, list, patch, sudo, deny"
            ))
        })?;
        caps.0 |= capability as u8;
    }
    // Vault's older shorthand: policy = "read" | "write" | "deny" | "sudo".
    if let Some(shorthand) = body.get("policy") {
        let extra: &[Capability] = match shorthand.as_str() {
            Some("deny") => &[Capability::Deny],
            Some("read") => &[Capability::Read, Capability::List],
            Some("write") => &[
                Capability::Read,
                Capability::List,
                Capability::Create,
                Capability::Update,
                Capability::Delete,
            ],
            Some("sudo") => &[
                Capability::Read,
                Capability::List,
                Capability::Create,
                Capability::Update,
                Capability::Delete,
                Capability::Sudo,
            ],
            _ => {
                return Err(Error::invalid(format!(
                    "policy: path {pattern:?}: policy must be read, write, deny or sudo"
                )))
            }
        };
        for c in extra {
            caps.0 |= *c as u8;
        }
    }
    if body.get("capabilities").is_none() && body.get("policy").is_none() {
        return Err(Error::invalid(format!(
            "policy: path {pattern:?}: no capabilities given"
        )));
    }
    Ok(caps)
}

/// The merged rules of a token's policies.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    root: bool,
    exact: BTreeMap<String, Capabilities>,
    patterns: Vec<(String, Capabilities)>,
}

impl Acl {
    /// Everything allowed.
    pub fn root() -> Self {
        Self {
            root: true,
            ..Self::default()
        }
    }

    pub fn from_policies(policies: &[Policy]) -> Self {
        let mut merged: BTreeMap<String, Capabilities> = BTreeMap::new();
        for policy in policies {
            for rule in &policy.rules {
                merged
                    .entry(rule.pattern.clone())
                    .or_default()
                    .add(rule.capabilities);
            }
        }
        let mut acl = Self::default();
        for (pattern, caps) in merged {
            if pattern.ends_with('*') || pattern.split('/').any(|s| s == "+") {
                acl.patterns.push((pattern, caps));
            } else {
                acl.exact.insert(pattern, caps);
            }
        }
        acl.patterns.sort_by(|a, b| compare_priority(&b.0, &a.0));
        acl
    }

    pub fn is_root(&self) -> bool {
        self.root
    }

    /// The capabilities the rule that governs `path` grants.
    pub fn capabilities(&self, path: &str) -> Capabilities {
        if self.root {
            return Capabilities(!(Capability::Deny as u8));
        }
        if let Some(caps) = self.exact.get(path) {
            return *caps;
        }
        // Sorted highest priority first.
        self.patterns
            .iter()
            .find(|(pattern, _)| pattern_matches(pattern, path))
            .map(|(_, caps)| *caps)
            .unwrap_or_default()
    }

    /// Whether `operation` on `path` is allowed. Whether the path needs `sudo` too is the route's
    /// declaration (`api::routes`), checked by the gate with [`Acl::has_sudo`].
    pub fn allows(&self, path: &str, operation: Operation) -> bool {
        if self.root {
            return true;
        }
        let caps = self.capabilities(path);
        !caps.contains(Capability::Deny) && operation.allowed_by(caps)
    }

    pub fn has_sudo(&self, path: &str) -> bool {
        if self.root {
            return true;
        }
        let caps = self.capabilities(path);
        caps.contains(Capability::Sudo) && !caps.contains(Capability::Deny)
    }
}

/// Whether `pattern` (with `+` segments and an optional trailing `*`) matches `path`.
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    let (body, glob) = match pattern.strip_suffix('*') {
        Some(body) => (body, true),
        None => (pattern, false),
    };
    if !body.contains('+') {
        return if glob {
            path.starts_with(body)
        } else {
            path == body
        };
    }
    let pattern_segments: Vec<&str> = body.split('/').collect();
    let path_segments: Vec<&str> = path.split('/').collect();
    let last = pattern_segments.len() - 1;
    if path_segments.len() < pattern_segments.len()
        || (!glob && path_segments.len() != pattern_segments.len())
    {
        return false;
    }
    for (i, segment) in pattern_segments.iter().enumerate() {
        let actual = path_segments[i];
        if *segment == "+" {
            // `+` is one segment; in the last position under a glob it may be partial.
            continue;
        }
        let matches = if i == last && glob {
            actual.starts_with(segment)
        } else {
            actual == *segment
        };
        if !matches {
            return false;
        }
    }
    true
}

/// Vault's priority between two wildcard patterns matching the same path: `Greater` when `a`
/// wins. The first wildcard later wins; not ending in `*` wins; fewer `+` wins; longer wins;
/// lexicographically larger wins.
fn compare_priority(a: &str, b: &str) -> Ordering {
    let first_wildcard = |p: &str| p.find(['+', '*']).unwrap_or(p.len());
    let plus_count = |p: &str| p.split('/').filter(|s| *s == "+").count();
    first_wildcard(a)
        .cmp(&first_wildcard(b))
        .then_with(|| b.ends_with('*').cmp(&a.ends_with('*')))
        .then_with(|| plus_count(b).cmp(&plus_count(a)))
        .then_with(|| a.len().cmp(&b.len()))
        .then_with(|| a.cmp(b))
}

/// How many distinct lists of policy names keep their compiled [`Acl`]; past it the memo starts
/// over (a deployment has a handful of such lists, one per kind of client).
const COMPILED_ACLS_KEPT: usize = 1024;

/// An [`Acl`] and the policy texts it was compiled from (`None` for a name with no policy).
#[derive(Debug)]
struct CompiledAcl {
    texts: Vec<Option<String>>,
    acl: Arc<Acl>,
}

/// Policy storage and ACL building.
#[derive(Clone, Debug)]
pub struct Policies {
    store: Store,
    /// Every request with a token other than root needs its policies' ACL; parsing and merging
    /// them each time cost about 30 µs a request (`lookup-self` in `lessor bench --warm-pool`).
    /// An entry is used only while the texts the store gives for its names are the ones it was
    /// compiled from, so the store stays the one place that knows what a policy says (its read
    /// cache is invalidated by writes on this replica and, through the change feed, on others).
    compiled: Arc<Mutex<HashMap<Vec<String>, CompiledAcl>>>,
}

impl Policies {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            compiled: Arc::default(),
        }
    }

    /// Stores the built-in `default` policy if it is not there yet.
    pub async fn ensure_default(&self) -> Result<()> {
        self.store
            .insert_policy_if_absent(DEFAULT_POLICY, DEFAULT_POLICY_TEXT, Utc::now())
            .await
    }

    /// Validates and stores a policy; `root` cannot be written.
    pub async fn write(&self, name: &str, text: &str) -> Result<()> {
        let name = check_policy_name(name)?;
        if name == ROOT_POLICY {
            return Err(Error::invalid("cannot update the root policy"));
        }
        parse_policy(&name, text)?;
        self.store.upsert_policy(&name, text, Utc::now()).await
    }

    pub async fn read(&self, name: &str) -> Result<String> {
        let name = check_policy_name(name)?;
        if name == ROOT_POLICY {
            return Ok(String::new());
        }
        self.store
            .get_policy(&name)
            .await?
            .map(|row| row.text)
            .ok_or_else(|| Error::not_found("policy", name))
    }

    pub async fn list(&self) -> Result<Vec<String>> {
        let mut names = self.store.list_policies().await?;
        names.push(ROOT_POLICY.to_owned());
        names.sort();
        Ok(names)
    }

    /// Deletes a policy; `root` and `default` cannot be deleted. Deleting a missing policy is fine.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let name = check_policy_name(name)?;
        if name == ROOT_POLICY || name == DEFAULT_POLICY {
            return Err(Error::invalid(format!("cannot delete the {name} policy")));
        }
        self.store.delete_policy(&name).await?;
        Ok(())
    }

    /// The merged ACL of `names`. A name without a stored policy grants nothing (Vault keeps such
    /// names on tokens too, so a policy written later takes effect).
    pub async fn acl(&self, names: &[String]) -> Result<Arc<Acl>> {
        if names.iter().any(|n| n == ROOT_POLICY) {
            return Ok(Arc::new(Acl::root()));
        }
        let mut texts = Vec::with_capacity(names.len());
        for name in names {
            texts.push(self.store.get_policy(name).await?.map(|row| row.text));
        }
        if let Some(compiled) = self.lock_compiled().get(names) {
            if compiled.texts == texts {
                return Ok(Arc::clone(&compiled.acl));
            }
        }
        let mut policies = Vec::with_capacity(names.len());
        for (name, text) in names.iter().zip(&texts) {
            let Some(text) = text else { continue };
            match parse_policy(name, text) {
                Ok(policy) => policies.push(policy),
                Err(e) => {
                    tracing::error!(policy = ?name, error = %e, "stored policy no longer parses; it grants nothing")
                }
            }
        }
        let acl = Arc::new(Acl::from_policies(&policies));
        let mut compiled = self.lock_compiled();
        if compiled.len() >= COMPILED_ACLS_KEPT {
            compiled.clear();
        }
        compiled.insert(
            names.to_vec(),
            CompiledAcl {
                texts,
                acl: Arc::clone(&acl),
            },
        );
        Ok(acl)
    }

    /// The memo of compiled ACLs. Never held across an `.await`; a panic while it was held
    /// leaves at worst a missing entry, so a poisoned lock is taken over.
    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<String>, CompiledAcl>> {
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(texts: &[&str]) -> Acl {
        let policies: Vec<Policy> = texts
            .iter()
            .map(|t| parse_policy("p", t).unwrap())
            .collect();
        Acl::from_policies(&policies)
    }

    /// A token's ACL is compiled once per set of policy texts: the same names give the same
    /// compiled ACL while the policies stay as they are, and a policy written or deleted takes
    /// effect on the next request.
    #[tokio::test]
    async fn compiled_acls_follow_every_policy_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("lessor.db").display().to_string())
            .await
            .unwrap();
        let policies = Policies::new(store.clone());
        let names = vec!["app".to_owned(), "missing".to_owned()];
        policies
            .write(
                "app",
                r#"path "database/creds/app" { capabilities = ["read"] }"#,
            )
            .await
            .unwrap();
        let first = policies.acl(&names).await.unwrap();
        assert!(first.allows("database/creds/app", Operation::Read));
        let again = policies.acl(&names).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "compiled again for the same texts"
        );

        policies
            .write(
                "app",
                r#"path "database/creds/other" { capabilities = ["read"] }"#,
            )
            .await
            .unwrap();
        let rewritten = policies.acl(&names).await.unwrap();
        assert!(!rewritten.allows("database/creds/app", Operation::Read));
        assert!(rewritten.allows("database/creds/other", Operation::Read));

        policies
            .write(
                "missing",
                r#"path "sys/leases/lookup" { capabilities = ["update"] }"#,
            )
            .await
            .unwrap();
        let grown = policies.acl(&names).await.unwrap();
        assert!(grown.allows("sys/leases/lookup", Operation::Write));

        policies.delete("app").await.unwrap();
        let shrunk = policies.acl(&names).await.unwrap();
        assert!(!shrunk.allows("database/creds/other", Operation::Read));
        assert!(shrunk.allows("sys/leases/lookup", Operation::Write));
        store.close().await;
    }

    #[test]
    fn globs_segments_and_deny_by_default() {
        let acl = acl(&[r#"
            path "database/creds/app-*" { capabilities = ["read"] }
            path "sys/leases/lookup/database/creds/+/*" { capabilities = ["list", "sudo"] }
            path "database/roles" { capabilities = ["list"] }
        "#]);
        assert!(acl.allows("database/creds/app-ro", Operation::Read));
        assert!(acl.allows("database/creds/app-", Operation::Read));
        assert!(
            !acl.allows("database/creds/admin", Operation::Read),
            "deny by default"
        );
        assert!(!acl.allows("database/creds/app-ro", Operation::Delete));
        assert!(acl.allows("sys/leases/lookup/database/creds/app/x", Operation::List));
        assert!(
            !acl.allows("sys/leases/lookup/database/creds/", Operation::List),
            "+ needs a segment"
        );
        assert!(acl.allows("database/roles", Operation::List));
        assert!(
            !acl.allows("database/roles/x", Operation::List),
            "exact is exact"
        );
    }

    #[test]
    fn deny_wins_and_rules_merge_across_policies() {
        let acl = acl(&[
            r#"path "database/creds/*" { capabilities = ["read"] }"#,
            r#"path "database/creds/*" { capabilities = ["update"] }
               path "database/creds/admin" { capabilities = ["deny"] }"#,
        ]);
        assert!(acl.allows("database/creds/app", Operation::Read));
        assert!(
            acl.allows("database/creds/app", Operation::Write),
            "capabilities of one pattern add up"
        );
        assert!(!acl.allows("database/creds/admin", Operation::Read));
        let denied = self::acl(&[
            r#"path "database/*" { capabilities = ["read"] }"#,
            r#"path "database/*" { capabilities = ["deny"] }"#,
        ]);
        assert!(
            !denied.allows("database/creds/app", Operation::Read),
            "deny in any policy wins"
        );
    }

    #[test]
    fn most_specific_pattern_governs() {
        let acl = acl(&[r#"
            path "database/*" { capabilities = ["read"] }
            path "database/creds/*" { capabilities = ["deny"] }
            path "database/+/special" { capabilities = ["read", "update"] }
        "#]);
        assert!(acl.allows("database/roles/x", Operation::Read));
        assert!(
            !acl.allows("database/creds/x", Operation::Read),
            "the longer glob governs"
        );
        assert!(
            !acl.allows("database/creds/special", Operation::Read),
            "the later first wildcard governs"
        );
        assert!(
            acl.allows("database/roles/special", Operation::Write),
            "no trailing glob beats one"
        );
        assert_eq!(compare_priority("a/b/*", "a/*"), Ordering::Greater);
        assert_eq!(compare_priority("a/+/c", "a/+/*"), Ordering::Greater);
        assert_eq!(compare_priority("a/+/+", "a/+/c"), Ordering::Less);
    }

    #[test]
    fn sudo_is_a_capability_of_its_own() {
        // Which paths need sudo is the route table's declaration; here only the capability.
        let plain = acl(&[r#"path "sys/leases/*" { capabilities = ["update", "list"] }"#]);
        assert!(plain.allows("sys/leases/revoke-prefix/x", Operation::Write));
        assert!(!plain.has_sudo("sys/leases/revoke-prefix/x"));
        let sudo = acl(&[r#"path "sys/leases/*" { capabilities = ["update", "list", "sudo"] }"#]);
        assert!(sudo.has_sudo("sys/leases/revoke-force/database/creds/x"));
        let denied = acl(&[
            r#"path "sys/*" { capabilities = ["sudo", "update"] }"#,
            r#"path "sys/audit" { capabilities = ["deny"] }"#,
        ]);
        assert!(!denied.has_sudo("sys/audit"));
        assert!(Acl::root().has_sudo("sys/audit/file"));
    }

    #[test]
    fn json_syntax_and_bad_policies() {
        let acl = acl(&[r#"{"path": {"database/creds/app": {"capabilities": ["read"]}}}"#]);
        assert!(acl.allows("database/creds/app", Operation::Read));
        let old = self::acl(&[r#"path "secret/*" { policy = "write" }"#]);
        assert!(old.allows("secret/a", Operation::Delete));
        for (bad, expected) in [
            (
                r#"path "a" { capabilities = ["fly"] }"#,
                "unknown capability",
            ),
            (
                r#"path "a*b" { capabilities = ["read"] }"#,
                "only allowed at the end",
            ),
            (
                r#"path "a/b+/c" { capabilities = ["read"] }"#,
                "whole segment",
            ),
            (r#"path "a" { }"#, "no capabilities"),
            (
                r#"paths "a" { capabilities = ["read"] }"#,
                "unknown top-level key",
            ),
        ] {
            let err = parse_policy("p", bad).unwrap_err().to_string();
            assert!(err.contains(expected), "{bad}: {err}");
        }
        assert!(parse_policy("default", DEFAULT_POLICY_TEXT).is_ok());
    }

    #[test]
    fn json_policies_share_the_nesting_and_size_limits() {
        // {"path": {"a": {"capabilities": ["read"], "x": [[...]]}}}: 4 levels before the lists.
        let json = |lists: usize| {
            format!(
                r#"{{"path": {{"a": {{"capabilities": ["read"], "x": {}1{}}}}}}}"#,
                "[".repeat(lists),
                "]".repeat(lists)
            )
        };
        assert!(parse_policy("p", &json(hcl::MAX_DEPTH - 3)).is_ok());
        for lists in [hcl::MAX_DEPTH - 2, 3_000, 100_000] {
            let err = parse_policy("p", &json(lists)).unwrap_err().to_string();
            assert_eq!(err, "policy: nesting deeper than 32 levels", "{lists}");
        }
        // Brackets inside strings are not nesting.
        let quoted = format!(
            r#"{{"path": {{"a{}": {{"capabilities": ["read"]}}}}}}"#,
            "[".repeat(100)
        );
        assert_eq!(json_nesting(&quoted), 4);
        let long = format!(
            "{{\"path\": {{}}, \"name\": \"{}\"}}",
            "x".repeat(hcl::MAX_POLICY_BYTES)
        );
        assert!(parse_policy("p", &long)
            .unwrap_err()
            .to_string()
            .contains("longer than"));
    }
}
