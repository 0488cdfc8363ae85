//! SCRAM-SHA-256 password verifiers (RFC 5802 and RFC 7677) in PostgreSQL's stored form, computed
//! by Lessor for connections with `password_authentication = "scram-sha-256"`.
//!
//! PostgreSQL stores `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 fields)
//! and accepts that string in place of a password in `CREATE ROLE ... PASSWORD` and `ALTER ROLE`.
//! Given a verifier, the server only checks that it is not the empty password's (one PBKDF2 run at
//! the verifier's own iteration count); given the password, it runs PBKDF2 at its
//! `scram_iterations` (4,096) itself. So the verifier moves the hashing off the server, keeps the
//! password out of its statement log, and lets an unguessable generated password use fewer
//! iterations where stretching adds nothing.
//!
//! The arithmetic is ring's (PBKDF2-HMAC-SHA-256, HMAC-SHA-256, SHA-256), already linked for TLS.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use lessor_plugin::{check_password, PluginError, Secret};
use rand::rngs::OsRng;
use rand::RngCore;
use ring::{digest, hmac, pbkdf2};

/// The salt length PostgreSQL itself uses (`SCRAM_DEFAULT_SALT_LEN`).
const SALT_LEN: usize = 16;

/// From this many iterations on, the computation moves to a blocking thread rather than hold an
/// async worker: 4,096 iterations cost about a millisecond of CPU, one costs microseconds.
const BLOCKING_FROM_ITERATIONS: u32 = 256;

/// PostgreSQL's stored verifier for `password` with a fresh random salt.
///
/// The password must pass [`check_password`] (ASCII letters, digits, `- _ . ~`): for such a
/// password SASLprep, which the server applies before hashing, changes nothing, so this verifier
/// matches what a client sends at login.
pub fn verifier(password: &Secret, iterations: NonZeroU32) -> Result<Secret, PluginError> {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    verifier_with_salt(password, iterations, &salt)
}

/// [`verifier`], off the async workers when the iteration count makes it take a while.
pub async fn verifier_off_thread(
    password: &Secret,
    iterations: NonZeroU32,
) -> Result<Secret, PluginError> {
    if iterations.get() < BLOCKING_FROM_ITERATIONS {
        return verifier(password, iterations);
    }
    let password = password.clone();
    tokio::task::spawn_blocking(move || verifier(&password, iterations))
        .await
        .map_err(|err| PluginError::Unavailable(format!("the SCRAM computation stopped: {err}")))?
}

/// The verifier for a given salt: SaltedPassword = PBKDF2(password, salt, iterations),
/// StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key")),
/// ServerKey = HMAC(SaltedPassword, "Server Key"). Public for known-answer tests against the
/// verifiers PostgreSQL computes; Lessor itself always salts afresh ([`verifier`]).
pub fn verifier_with_salt(
    password: &Secret,
    iterations: NonZeroU32,
    salt: &[u8],
) -> Result<Secret, PluginError> {
    check_password(password)?;
    let mut salted = [0u8; digest::SHA256_OUTPUT_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.expose().as_bytes(),
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    Ok(Secret::new(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(salt),
        BASE64.encode(stored_key.as_ref()),
        BASE64.encode(server_key.as_ref()),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iterations(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    /// A verifier PostgreSQL 15 itself stored (`SET password_encryption = 'scram-sha-256';
    /// ALTER ROLE ... PASSWORD 'pencil-Lessor_42'`, then `pg_authid.rolpassword`): the same salt
    /// and password must give the same keys. The integration tests also log in with verifiers
    /// computed here, at 4,096 iterations and at 1.
    #[test]
    fn matches_a_verifier_postgresql_computed() {
        let stored = "SCRAM-SHA-256$4096:d8zOesjtniDbgPXIDxqIdw==$0/qFyRaJ01jE3bnQq76v7ux41WrYu01YWH96wBO2zFw=:l7cPy/tNCHt0tqMLxQndMeE6ENe05lygDrJ7SJ+dbII=";
        let salt = BASE64.decode("d8zOesjtniDbgPXIDxqIdw==").unwrap();
        let computed =
            verifier_with_salt(&Secret::new("pencil-Lessor_42"), iterations(4096), &salt).unwrap();
        assert_eq!(computed.expose(), stored);
    }

    #[test]
    fn has_postgresqls_shape_and_a_fresh_salt_each_time() {
        let password = Secret::new("Abcdefgh12345678-_xyzXYZ");
        let first = verifier(&password, iterations(1)).unwrap();
        let second = verifier(&password, iterations(1)).unwrap();
        assert_ne!(first.expose(), second.expose());
        let text = first.expose();
        let rest = text.strip_prefix("SCRAM-SHA-256$1:").expect(text);
        let (salt, keys) = rest.split_once('$').unwrap();
        assert_eq!(BASE64.decode(salt).unwrap().len(), SALT_LEN);
        let (stored_key, server_key) = keys.split_once(':').unwrap();
        assert_eq!(BASE64.decode(stored_key).unwrap().len(), 32);
        assert_eq!(BASE64.decode(server_key).unwrap().len(), 32);
        lessor_plugin::credentials::check_password_verifier(&first).unwrap();
        assert!(!text.contains(password.expose()));
    }

    #[test]
    fn refuses_a_password_outside_the_safe_alphabet() {
        let err = verifier(&Secret::new("quote'd"), iterations(1)).unwrap_err();
        assert!(matches!(
            err,
            PluginError::InvalidValue {
                field: "password",
                ..
            }
        ));
    }
}
