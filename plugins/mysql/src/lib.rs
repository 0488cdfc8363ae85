//! MySQL/MariaDB engine plugin (in progress).
