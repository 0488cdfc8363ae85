//! Lessor.
