//! The ACL commands this plugin sends, on one connection: what `create_user`, `update_user` and
//! `delete_user` do, and what `lessor bench` runs directly. Every value is its own protocol
//! argument (redis-rs sends them as RESP bulk strings), so no name, password or rule is ever
//! parsed as part of a command line.

use lessor_plugin::{PluginError, Secret};
use redis::aio::ConnectionLike;
use redis::{cmd, pipe, Value};

use crate::error::classify;

/// Whether an ACL user of that name exists (`ACL GETUSER` answers nil for none).
pub async fn user_exists(
    conn: &mut impl ConnectionLike,
    username: &str,
) -> Result<bool, PluginError> {
    let found: Value = cmd("ACL")
        .arg("GETUSER")
        .arg(username)
        .query_async(conn)
        .await
        .map_err(|e| classify(&e, "looking the user up", None))?;
    Ok(!matches!(found, Value::Nil))
}

/// Makes the user: `ACL SETUSER <name> reset on >password <rules...>`, one command, so a rule the
/// server refuses leaves nothing behind. A name that exists is refused first: Lessor never takes
/// over an account it did not make (and its rollback would delete it).
pub async fn create(
    conn: &mut impl ConnectionLike,
    username: &str,
    password: &Secret,
    rules: &[String],
) -> Result<(), PluginError> {
    if user_exists(conn, username).await? {
        return Err(PluginError::Rejected(format!(
            "user {username} already exists; refusing to take over an account Lessor did not create"
        )));
    }
    // Between the look-up and the creation another client could make the same name; names are
    // generated with 80 random bits, so only someone who read the name first could.
    cmd("ACL")
        .arg("SETUSER")
        .arg(username)
        .arg("reset")
        .arg("on")
        .arg(format!(">{}", password.expose()))
        .arg(rules)
        .query_async::<()>(conn)
        .await
        .map_err(|e| classify(&e, "creating the user", Some(password)))
}

/// Gives an existing user a new password, dropping every other (`resetpass`), and applies the
/// rotation's rules. A user that does not exist is an error, never made.
pub async fn set_password(
    conn: &mut impl ConnectionLike,
    username: &str,
    password: &Secret,
    rules: &[String],
) -> Result<(), PluginError> {
    if !user_exists(conn, username).await? {
        return Err(PluginError::Rejected(format!(
            "user {username} does not exist"
        )));
    }
    // Should the user be deleted between the look-up and this command, `ACL SETUSER` makes it
    // anew, but switched off and allowed nothing: no login comes of it.
    cmd("ACL")
        .arg("SETUSER")
        .arg(username)
        .arg("resetpass")
        .arg(format!(">{}", password.expose()))
        .arg(rules)
        .query_async::<()>(conn)
        .await
        .map_err(|e| classify(&e, "setting the password", Some(password)))
}

/// Removes the user and ends its sessions, in one transaction: switch it off (no new logins),
/// kill its connections (`CLIENT KILL USER`), delete it. Idempotent without a look-up: when the
/// user is already gone, `off` makes an empty, disabled user that no other client can see before
/// `ACL DELUSER` removes it again in the same transaction. Returns how many sessions were ended.
pub async fn delete(conn: &mut impl ConnectionLike, username: &str) -> Result<i64, PluginError> {
    let (_, killed, _): ((), i64, i64) = pipe()
        .atomic()
        .cmd("ACL")
        .arg("SETUSER")
        .arg(username)
        .arg("off")
        .cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg(username)
        .cmd("ACL")
        .arg("DELUSER")
        .arg(username)
        .query_async(conn)
        .await
        .map_err(|e| classify(&e, "deleting the user", None))?;
    Ok(killed)
}

/// Every ACL user whose name starts with `prefix` (an exact prefix: no pattern characters).
pub async fn users_with_prefix(
    conn: &mut impl ConnectionLike,
    prefix: &str,
) -> Result<Vec<String>, PluginError> {
    let mut users: Vec<String> = cmd("ACL")
        .arg("USERS")
        .query_async(conn)
        .await
        .map_err(|e| classify(&e, "listing users", None))?;
    users.retain(|user| user.starts_with(prefix));
    users.sort();
    Ok(users)
}
