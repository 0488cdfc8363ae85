//! Log set-up: tracing to standard error, as text or JSON lines. Secrets never reach a log line
//! because every secret travels as `lessor_plugin::Secret`, whose `Debug` and `Display` redact it,
//! and no span or event records a request body, header or rendered statement.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Log targets that must never go below INFO, because at DEBUG they print SQL statements.
const DRIVER_LOG_CEILINGS: &[&str] = &["tokio_postgres=info", "mysql_async=info", "sqlx=warn"];

/// Installs the global subscriber writing to standard error. `filter` is a tracing filter such as
/// `info`; `RUST_LOG`, when set, wins.
pub fn init(format: LogFormat, filter: &str) {
    init_with_writer(format, filter, std::io::stderr);
}

/// Installs the global subscriber with any writer (tests capture logs this way). A second call is
/// a no-op.
pub fn init_with_writer<W>(format: LogFormat, filter: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    // Database drivers log every statement at debug level, and a creation or rotation statement
    // holds a password; these ceilings hold whatever RUST_LOG or the config asks for.
    for ceiling in DRIVER_LOG_CEILINGS {
        if let Ok(directive) = ceiling.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
