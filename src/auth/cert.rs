//! Certificate login for workloads: Vault's `cert` auth method as hvac drives it
//! (`auth/cert/certs/:name`, `auth/cert/login`).
//!
//! A role names a CA (`certificate`, PEM) and the names it accepts (`allowed_common_names`,
//! `allowed_dns_sans`, `*` globs as in Vault). A workload connects over TLS with its client
//! certificate; the listener checks the chain against `tls_client_ca_file` and hands the request a
//! [`ClientCertificates`]. `auth/cert/login` then looks for a role whose CA verifies that chain
//! *now* (a keep-alive connection may outlive its certificate) and whose names match, and answers
//! with a short-lived token carrying the role's policies. Nothing here is secret: the CA and the
//! client certificate are public, the key never leaves the workload; the TLS handshake proved the
//! client holds it.

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::policy::{check_policy_name, DEFAULT_POLICY};
use super::tokens::{IssuedToken, NewToken};
use super::Auth;
use crate::catalog::check_name;
use crate::error::{Error, Result};
use crate::store::{IdentityStore, Store};
use crate::tls::{
    certificates_from_pem, trust_anchors, verify_client_chain, ClientCertificates,
    RejectedClientCertificate,
};

/// `auth/cert/certs/:name`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct CertRole {
    /// The CA certificate(s), PEM, that a client chain must lead to.
    pub certificate: String,
    /// Globs one of which the certificate's Common Name must match; empty allows any.
    pub allowed_common_names: Vec<String>,
    /// Globs one of which some DNS SAN of the certificate must match; empty allows any.
    pub allowed_dns_sans: Vec<String>,
    /// Shown in the token's display name (`cert-<display_name>`); defaults to the role's name.
    pub display_name: String,
    pub token_policies: Vec<String>,
    pub token_ttl: u64,
    pub token_max_ttl: u64,
    pub token_explicit_max_ttl: u64,
    pub token_no_default_policy: bool,
}

impl CertRole {
    /// Checks a role before it is stored, so a login never meets a broken one.
    pub fn validate(&mut self) -> Result<()> {
        if self.certificate.trim().is_empty() {
            return Err(Error::invalid(
                "certificate: required (a PEM CA certificate)",
            ));
        }
        let cas = certificates_from_pem("certificate", &self.certificate)?;
        trust_anchors("certificate", &cas)?;
        for (field, globs) in [
            ("allowed_common_names", &self.allowed_common_names),
            ("allowed_dns_sans", &self.allowed_dns_sans),
        ] {
            if let Some(bad) = globs.iter().find(|g| g.chars().any(char::is_control)) {
                return Err(Error::invalid(format!(
                    "{field}: {bad:?} holds a control character"
                )));
            }
        }
        if self.display_name.chars().count() > 64 || self.display_name.chars().any(char::is_control)
        {
            return Err(Error::invalid(
                "display_name: at most 64 characters, no control characters",
            ));
        }
        self.token_policies = self
            .token_policies
            .iter()
            .map(|p| check_policy_name(p))
            .collect::<Result<_>>()?;
        if self.token_max_ttl > 0 && self.token_ttl > self.token_max_ttl {
            return Err(Error::invalid("token_ttl: must not exceed token_max_ttl"));
        }
        Ok(())
    }
}

/// Vault's glob: `*` stands for any run of characters (dots included); everything else is
/// literal and case-sensitive.
pub fn glob_matches(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if value.len() < first.len() + last.len() || !value.starts_with(first) || !value.ends_with(last)
    {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The names of a client certificate that roles constrain.
#[derive(Debug, Default)]
struct CertificateNames {
    common_name: String,
    dns_sans: Vec<String>,
    serial: String,
}

fn names_of(leaf: &[u8]) -> Result<CertificateNames> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|_| refused("the client certificate cannot be parsed"))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut dns_sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                dns_sans.push((*dns).to_owned());
            }
        }
    }
    Ok(CertificateNames {
        common_name,
        dns_sans,
        serial: cert.raw_serial_as_string(),
    })
}

/// Why `role` does not accept `names`, or `None` when it does. As in Vault, each constraint the
/// role sets must hold; an empty one holds for any certificate.
fn names_refusal(role: &CertRole, names: &CertificateNames) -> Option<String> {
    if !role.allowed_common_names.is_empty()
        && !role
            .allowed_common_names
            .iter()
            .any(|g| glob_matches(g, &names.common_name))
    {
        return Some(format!(
            "the common name {:?} is not among allowed_common_names",
            names.common_name
        ));
    }
    if !role.allowed_dns_sans.is_empty()
        && !names
            .dns_sans
            .iter()
            .any(|dns| role.allowed_dns_sans.iter().any(|g| glob_matches(g, dns)))
    {
        return Some(format!(
            "no DNS SAN of the certificate ({:?}) is among allowed_dns_sans",
            names.dns_sans
        ));
    }
    None
}

fn refused(reason: impl Into<String>) -> Error {
    Error::LoginRefused(reason.into())
}

/// What a request tells the certificate login of its connection's client certificate.
#[derive(Debug, Clone)]
pub enum PresentedCertificate {
    /// The listener verified this chain against `tls_client_ca_file`.
    Verified(ClientCertificates),
    /// The client sent a chain the listener did not accept.
    Rejected(RejectedClientCertificate),
    /// No certificate: plain HTTP, no `tls_client_ca_file`, or the client sent none.
    None,
}

/// The certificate auth method's roles and login.
#[derive(Clone)]
pub struct CertAuth {
    store: Store,
}

impl CertAuth {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn write_role(&self, name: &str, mut role: CertRole) -> Result<()> {
        check_name("role name", name)?;
        role.validate()?;
        self.store
            .upsert_cert_role(name, &role, chrono::Utc::now())
            .await
    }

    pub async fn role(&self, name: &str) -> Result<CertRole> {
        check_name("role name", name)?;
        self.store
            .get_cert_role(name)
            .await?
            .ok_or_else(|| Error::not_found("certificate role", name))
    }

    pub async fn list_roles(&self) -> Result<Vec<String>> {
        self.store.list_cert_roles().await
    }

    pub async fn delete_role(&self, name: &str) -> Result<()> {
        check_name("role name", name)?;
        self.store.delete_cert_role(name).await?;
        Ok(())
    }

    /// `auth/cert/login`: finds a role (the one named, or any, first by name) whose CA verifies
    /// the presented chain now and whose names match it, and issues a token for it. Every refusal
    /// is [`Error::LoginRefused`] with the reason.
    #[tracing::instrument(skip_all, fields(role = ?role_name), err(Debug, level = "info"))]
    pub async fn login(
        &self,
        auth: &Auth,
        role_name: Option<&str>,
        presented: &PresentedCertificate,
    ) -> Result<IssuedToken> {
        let chain = match presented {
            PresentedCertificate::Verified(chain) => chain,
            PresentedCertificate::Rejected(reason) => {
                return Err(refused(format!(
                    "the client certificate was not accepted by the listener: {}",
                    reason.0
                )))
            }
            PresentedCertificate::None => {
                return Err(refused(
                    "no client certificate was presented (connect over TLS with a client \
                     certificate; the server needs tls_client_ca_file)",
                ))
            }
        };
        let roles: Vec<(String, CertRole)> = match role_name {
            Some(name) => {
                check_name("role name", name)?;
                let role = self
                    .store
                    .get_cert_role(name)
                    .await?
                    .ok_or_else(|| refused(format!("no certificate role named {name:?}")))?;
                vec![(name.to_owned(), role)]
            }
            None => self.store.all_cert_roles().await?,
        };
        if roles.is_empty() {
            return Err(refused("no certificate role is configured"));
        }
        let der: Vec<CertificateDer<'_>> = chain
            .0
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let names = names_of(&der[0])?;
        let now = crate::tls::now();
        let mut reasons = Vec::new();
        let mut matched = None;
        for (name, role) in roles {
            let cas = certificates_from_pem("certificate", &role.certificate)?;
            let anchors = trust_anchors("certificate", &cas)?;
            if let Err(reason) = verify_client_chain(&der, &anchors, now) {
                reasons.push(format!("{name}: {reason}"));
                continue;
            }
            if let Some(reason) = names_refusal(&role, &names) {
                reasons.push(format!("{name}: {reason}"));
                continue;
            }
            matched = Some((name, role));
            break;
        }
        let Some((name, role)) = matched else {
            return Err(refused(format!(
                "no certificate role accepts this certificate ({})",
                reasons.join("; ")
            )));
        };

        let mut policies = role.token_policies.clone();
        if !role.token_no_default_policy && !policies.iter().any(|p| p == DEFAULT_POLICY) {
            policies.push(DEFAULT_POLICY.to_owned());
        }
        policies.sort();
        policies.dedup();
        let explicit_max = match (role.token_explicit_max_ttl, role.token_max_ttl) {
            (0, max) | (max, 0) => max,
            (a, b) => a.min(b),
        };
        let ttl = if role.token_ttl > 0 {
            Duration::from_secs(role.token_ttl)
        } else {
            auth.limits.default_ttl
        };
        let shown = if role.display_name.is_empty() {
            &name
        } else {
            &role.display_name
        };
        let mut meta = Map::new();
        meta.insert("cert_name".into(), Value::String(name.clone()));
        meta.insert(
            "common_name".into(),
            Value::String(names.common_name.clone()),
        );
        meta.insert("serial_number".into(), Value::String(names.serial.clone()));
        // Both come from the certificate: Debug formatting escapes control characters.
        tracing::info!(role = ?name, common_name = ?names.common_name, "certificate login accepted");
        auth.issue_token(NewToken {
            display_name: format!("cert-{shown}").chars().take(96).collect(),
            policies,
            ttl,
            explicit_max_ttl: Duration::from_secs(explicit_max),
            renewable: true,
            entity_id: Some(format!("cert:{name}:{}", names.common_name)),
            path: format!("auth/cert/login/{name}"),
            meta,
            parent_accessor: None,
            not_after: None,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_in_vault() {
        assert!(glob_matches("app.example.com", "app.example.com"));
        assert!(!glob_matches("app.example.com", "App.example.com"));
        assert!(glob_matches("*.example.com", "a.b.example.com"));
        assert!(!glob_matches("*.example.com", "example.com"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("svc-*-prod", "svc-billing-prod"));
        assert!(!glob_matches("svc-*-prod", "svc-billing-dev"));
        assert!(glob_matches("a*b*c", "abc"));
        assert!(!glob_matches("a*b*c", "acb"));
        assert!(
            !glob_matches("ab*ba", "aba"),
            "prefix and suffix may not overlap"
        );
    }

    #[test]
    fn roles_are_checked_when_written() {
        let mut role = CertRole::default();
        assert!(role
            .validate()
            .unwrap_err()
            .to_string()
            .contains("certificate"));
        let mut role = CertRole {
            certificate: "not a pem".into(),
            ..CertRole::default()
        };
        assert!(role
            .validate()
            .unwrap_err()
            .to_string()
            .contains("certificate"));
    }
}
