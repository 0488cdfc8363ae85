//! Periodic tidying of what identity and auditing accumulate: expired tokens (every JWT login
//! leaves one), source addresses older than the new-address rule can use, and old alerts.
//! Runs on the shared runtime and stops with the server's cancellation token.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::anomaly::Monitor;
use crate::store::{to_millis, Store};

/// How often to tidy.
const INTERVAL: Duration = Duration::from_secs(600);
/// How long alerts are kept for `sys/alerts`.
const ALERT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Tidies once now and then every [`INTERVAL`] until `cancel` fires.
pub async fn run(store: Store, monitor: Monitor, cancel: CancellationToken) {
    loop {
        tidy(&store, &monitor).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

/// One round of tidying; failures are logged and retried next round.
pub async fn tidy(store: &Store, monitor: &Monitor) {
    let now = Utc::now();
    let ago = |d: Duration| to_millis(now - chrono::Duration::from_std(d).unwrap_or_default());
    // Addresses are kept a little past the lookback so a rule change that lengthens it still
    // finds recent history.
    let lookback = monitor
        .rules()
        .new_address
        .lookback
        .max(Duration::from_secs(30 * 24 * 3600));
    let outcome: crate::Result<(u64, u64, u64)> = async {
        let tokens = store.delete_expired_tokens(to_millis(now)).await?;
        let addresses = store.forget_source_addresses(ago(lookback)).await?;
        let alerts = store.delete_alerts_before(ago(ALERT_RETENTION)).await?;
        Ok((tokens, addresses, alerts))
    }
    .await;
    match outcome {
        Ok((0, 0, 0)) => {}
        Ok((tokens, addresses, alerts)) => {
            tracing::debug!(
                tokens,
                addresses,
                alerts,
                "tidied expired tokens, old addresses and alerts"
            )
        }
        Err(e) => tracing::warn!(error = %e, "tidying tokens and alerts failed; will retry"),
    }
}
