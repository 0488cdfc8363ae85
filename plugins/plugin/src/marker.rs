//! The mark a Lessor installation leaves on every user it creates, on engines that can keep a
//! note on a user (PostgreSQL's `COMMENT ON ROLE`), so that reconciliation can prove a user is
//! its own even when the store's record of it is gone, and can tell apart users of another
//! installation (or of Vault) that merely look alike. A name prefix proves nothing: Vault's
//! default username template starts with `v-` as Lessor's does.

use crate::PluginError;

/// What every marker's text starts with; the installation id follows.
const MARKER_PREFIX: &str = "lessor installation ";

/// Longest installation id a marker carries (a UUID is 36).
const MAX_INSTALLATION_ID_LEN: usize = 64;

/// One installation's marker: `lessor installation <id>`. The id is checked to be letters,
/// digits and `-` only, so the text is safe inside a quoted SQL literal and never needs escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMarker {
    installation_id: String,
}

impl UserMarker {
    /// The marker of installation `id` (the store's `installation_id`, shared by its replicas).
    pub fn for_installation(id: &str) -> Result<Self, PluginError> {
        let valid = !id.is_empty()
            && id.len() <= MAX_INSTALLATION_ID_LEN
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid {
            return Err(PluginError::invalid(
                "installation_id",
                format!("1 to {MAX_INSTALLATION_ID_LEN} letters, digits or '-'"),
            ));
        }
        Ok(Self {
            installation_id: id.to_owned(),
        })
    }

    pub fn installation_id(&self) -> &str {
        &self.installation_id
    }

    /// The note left on the user.
    pub fn text(&self) -> String {
        format!("{MARKER_PREFIX}{}", self.installation_id)
    }

    /// The installation a note on a user names, if it is a Lessor marker at all.
    pub fn installation_in(note: &str) -> Option<&str> {
        note.strip_prefix(MARKER_PREFIX)
            .filter(|id| Self::for_installation(id).is_ok())
    }

    /// The `LIKE` pattern that finds marked users' notes (the prefix has no `%` or `_`).
    pub fn like_pattern() -> String {
        format!("{MARKER_PREFIX}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_make_markers_and_notes_read_back() {
        let marker = UserMarker::for_installation("0b6d-4e2f-AA").unwrap();
        assert_eq!(marker.text(), "lessor installation 0b6d-4e2f-AA");
        assert_eq!(
            UserMarker::installation_in(&marker.text()),
            Some("0b6d-4e2f-AA")
        );
        for bad in ["", "a'b", "a b", "a;b", "é", &"a".repeat(65)] {
            assert!(UserMarker::for_installation(bad).is_err(), "{bad:?}");
        }
        for note in [
            "",
            "lessor installation ",
            "lessor installation x'; DROP",
            "vault",
        ] {
            assert_eq!(UserMarker::installation_in(note), None, "{note:?}");
        }
    }
}
