//! The store's read cache: the catalog and identity rows every credential request reads (its
//! token, the token's lineage, its ACL policies, the role, the connection, the password policy),
//! kept in memory so that a warm request asks the store only for what it writes (issue 10).
//!
//! The rules that keep it honest:
//! - every store write to a cached table invalidates the keys it touched *before it returns*, so a
//!   write on this process is in force on its very next read (a policy changed or a token revoked
//!   takes effect at once);
//! - a write by another replica on a shared (PostgreSQL) store reaches it through the change feed
//!   (migration 0016's triggers), and a lost feed clears it whole ([`Store::forget_cached`]);
//! - only rows that exist are kept (no negative caching): a name written later is found at once;
//! - each table's cache has a cap and is cleared when full;
//! - a read that raced with an invalidation does not put back what it read: each table counts its
//!   invalidations, and a value is kept only if none happened since its read began.
//!
//! Nothing here decides whether a value is still valid at a given time: a cached token's expiry
//! is checked against the clock by its reader, exactly as for a token read from the store.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Change, Policy, Role, Store, Token};
use crate::store::Connection;

/// Entries per table before that table's cache is cleared. Far more than the roles, connections
/// and policies of any installation; for tokens, the working set of a busy minute.
const ENTRIES_PER_TABLE: usize = 4096;

/// One table's cached rows by key, and how many invalidations it has seen.
pub(super) struct TableCache<V> {
    inner: Mutex<Entries<V>>,
}

struct Entries<V> {
    rows: HashMap<String, V>,
    /// Bumped by every invalidation; a read keeps its value only if this did not move meanwhile.
    generation: u64,
}

impl<V> Default for TableCache<V> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Entries {
                rows: HashMap::new(),
                generation: 0,
            }),
        }
    }
}

impl<V: Clone> TableCache<V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, key: &str) -> Option<V> {
        self.lock().rows.get(key).cloned()
    }

    /// Taken before the store is read; passed to [`Self::put`] with what the read found.
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps `value` under `key` unless an invalidation happened since `generation` was taken:
    /// then the read may have seen the row before a write that has since been forgotten.
    pub(super) fn put(&self, generation: u64, key: &str, value: V) {
        let mut entries = self.lock();
        if entries.generation != generation {
            return;
        }
        if entries.rows.len() >= ENTRIES_PER_TABLE && !entries.rows.contains_key(key) {
            entries.rows.clear();
        }
        entries.rows.insert(key.to_owned(), value);
    }

    pub(super) fn forget(&self, key: &str) {
        let mut entries = self.lock();
        entries.generation += 1;
        entries.rows.remove(key);
    }

    pub(super) fn clear(&self) {
        let mut entries = self.lock();
        entries.generation += 1;
        entries.rows.clear();
    }

    fn len(&self) -> usize {
        self.lock().rows.len()
    }
}

/// The cached tables. Tokens are kept by hash, lineages by the accessor their walk starts at;
/// both are cleared whole on any token write but an insert (a revocation deletes a subtree, and
/// a renewal moves an expiry that every descendant's lineage carries).
#[derive(Default)]
pub(super) struct ReadCache {
    pub(super) roles: TableCache<Role>,
    pub(super) connections: TableCache<Connection>,
    /// Password policy texts by name.
    pub(super) password_policies: TableCache<String>,
    /// ACL policies by name.
    pub(super) policies: TableCache<Policy>,
    pub(super) tokens: TableCache<Token>,
    /// `(parent_accessor, expires_at)` from a token up to its root, only for chains that reach
    /// one (a chain that ends at a missing parent is a negative answer, not kept).
    pub(super) lineages: TableCache<Vec<(Option<String>, Option<i64>)>>,
}

impl ReadCache {
    /// Forgets what a write to `table`'s row `key` made stale.
    pub(super) fn forget(&self, table: &str, key: &str) {
        match table {
            "roles" => self.roles.forget(key),
            "connections" => self.connections.forget(key),
            "password_policies" => self.password_policies.forget(key),
            "policies" => self.policies.forget(key),
            "tokens" => self.forget_tokens(),
            _ => {}
        }
    }

    pub(super) fn forget_tokens(&self) {
        self.tokens.clear();
        self.lineages.clear();
    }

    pub(super) fn clear(&self) {
        self.roles.clear();
        self.connections.clear();
        self.password_policies.clear();
        self.policies.clear();
        self.forget_tokens();
    }
}

/// Sizes only: the rows hold token hashes and sealed secrets.
impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("roles", &self.roles.len())
            .field("connections", &self.connections.len())
            .field("password_policies", &self.password_policies.len())
            .field("policies", &self.policies.len())
            .field("tokens", &self.tokens.len())
            .field("lineages", &self.lineages.len())
            .finish()
    }
}

impl Store {
    /// Drops what another replica's `change` made stale in this store's read cache; a
    /// [`Change::Resync`] (changes may have been missed) drops everything.
    pub fn forget_cached(&self, change: &Change) {
        match change {
            Change::Row { table, key } => self.cache.forget(table, key),
            Change::Resync => self.cache.clear(),
        }
    }

    /// How many store operations (each a query or a transaction) this store has run since it was
    /// opened, across all its clones: what a request costs is the difference around it.
    pub fn operations_run(&self) -> u64 {
        self.operations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one store operation (called by `with_pool!`).
    pub(super) fn count_operation(&self) {
        self.operations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
