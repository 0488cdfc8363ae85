//! Canonical requests: the path is percent-decoded exactly once, before routing, and `LIST` becomes
//! a flag, so the router, the policy gate, the handlers, the audit log and the anomaly rules all see
//! one and the same request.
//!
//! Before this, the gate matched policies against the raw (encoded) path while the handler acted on
//! the decoded name, and `/v1/database/creds/%62` walked past a `deny` on `database/creds/b`.
//! Now the request is rewritten to its decoded form, and a decoded path may only hold the
//! characters names and lease ids are made of, so nothing downstream has anything left to decode.
//! Paths that would need a second interpretation (`//`, `.`, `..`, a control character, a `%`
//! that survives decoding) are refused with a 400 naming the problem.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Set on a request that asked for a listing (`LIST`, `GET ?list=true`); the route table decides
/// whether its route lists at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing(pub bool);

/// Set on a request that asked for its answer wrapped (`X-Vault-Wrap-TTL`): the gate stores a
/// successful answer that carries `data` or `auth` and answers with a wrapping token instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrapRequest {
    /// As asked; at least [`crate::wrapping::MIN_TTL`]. The server's max TTL caps it later.
    pub ttl: Duration,
}

/// The wrapping a request asks for, from Vault's headers; a malformed or unsupported value is a
/// 400 naming the header, since answering unwrapped would hand out the secret the client wanted
/// wrapped.
fn wrap_request(headers: &HeaderMap) -> Result<Option<WrapRequest>, ApiError> {
    let value = |name: &str| -> Result<Option<String>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map(|v| Some(v.trim().to_owned()).filter(|v| !v.is_empty()))
                .map_err(|_| ApiError::bad_request(format!("{name}: not valid text"))),
        }
    };
    if let Some(format) = value("x-vault-wrap-format")? {
        if !format.eq_ignore_ascii_case("json") {
            return Err(ApiError::bad_request(
                "x-vault-wrap-format: only \"json\" is supported (JWT wrapping tokens are not)",
            ));
        }
    }
    let Some(ttl) = value("x-vault-wrap-ttl")? else {
        return Ok(None);
    };
    let ttl = crate::ttl::parse_duration_str("x-vault-wrap-ttl", &ttl)?;
    if ttl < crate::wrapping::MIN_TTL {
        return Err(ApiError::bad_request(
            "x-vault-wrap-ttl: must be at least 1 second",
        ));
    }
    Ok(Some(WrapRequest { ttl }))
}

/// Request headers that would change a request's meaning and are not implemented, with why.
const UNSUPPORTED_HEADERS: &[(&str, &str)] = &[
    ("x-vault-namespace", "namespaces are not supported"),
    ("x-vault-mfa", "MFA is not supported"),
    (
        "x-vault-policy-override",
        "Sentinel policies are not supported",
    ),
];

/// Longest request path accepted, decoded.
const MAX_PATH_LEN: usize = 1024;

/// Characters a decoded API path may contain: those of names (`A-Z a-z 0-9 _ - .`), lease ids
/// and path separators. Everything a route serves is made of these.
fn allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b'/')
}

/// Decodes an `/v1/...` path once and checks its shape; the error says what is wrong.
pub fn canonical_path(raw: &str) -> Result<String, String> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "path: percent-encoding does not decode to UTF-8".to_owned())?;
    if decoded.len() > MAX_PATH_LEN {
        return Err(format!("path: longer than {MAX_PATH_LEN} characters"));
    }
    if let Some(bad) = decoded.bytes().find(|b| !allowed(*b)) {
        return Err(if bad.is_ascii_graphic() {
            format!(
                "path: character {:?} is not allowed (only letters, digits, '_', '-', '.' and '/')",
                bad as char
            )
        } else {
            "path: only letters, digits, '_', '-', '.' and '/' are allowed".to_owned()
        });
    }
    let inner = decoded.trim_start_matches('/');
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    for segment in inner.split('/') {
        match segment {
            "" => return Err("path: empty segment ('//')".to_owned()),
            "." | ".." => return Err(format!("path: segment {segment:?} is not allowed")),
            _ => {}
        }
    }
    if !decoded.starts_with('/') || decoded.starts_with("//") {
        return Err("path: must start with a single '/'".to_owned());
    }
    Ok(decoded.into_owned())
}

/// Whether a query asks for a listing, and the query without that parameter.
fn split_listing(query: Option<&str>) -> (bool, Option<String>) {
    let Some(query) = query else {
        return (false, None);
    };
    let mut listing = false;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let is_list = *pair == "list=true" || *pair == "list=1";
            listing |= is_list;
            !is_list && !pair.is_empty()
        })
        .collect();
    (listing, (!rest.is_empty()).then(|| rest.join("&")))
}

/// The canonical form of a request, or the 400 that refuses it. Paths outside `/v1/` are left
/// alone (they reach the 404 fallback).
pub fn canonicalize(mut request: Request) -> Result<Request, ApiError> {
    if !request.uri().path().starts_with("/v1/") {
        request.extensions_mut().insert(Listing(false));
        return Ok(request);
    }
    // Vault's request headers that change what a request means; Lessor does not implement them,
    // and answering as if they were absent would hand out, say, an unwrapped secret to a client
    // that asked for it wrapped.
    for (header, why) in UNSUPPORTED_HEADERS {
        if request
            .headers()
            .get(*header)
            .is_some_and(|value| !value.as_bytes().trim_ascii().is_empty())
        {
            return Err(ApiError::bad_request(format!("{header}: {why}")));
        }
    }
    if let Some(wrap) = wrap_request(request.headers())? {
        request.extensions_mut().insert(wrap);
    }
    let mut listing = false;
    if request.method().as_str() == "LIST" {
        *request.method_mut() = Method::GET;
        listing = true;
    }
    let (asked, query) = split_listing(request.uri().query());
    listing |= asked;
    let path = canonical_path(request.uri().path()).map_err(ApiError::bad_request)?;
    let rebuilt = match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    *request.uri_mut() = rebuilt
        .parse::<Uri>()
        .map_err(|_| ApiError::bad_request("path: cannot be parsed"))?;
    request.extensions_mut().insert(Listing(listing));
    Ok(request)
}

/// The middleware form of [`canonicalize`], wrapped around the whole router.
pub async fn layer(request: Request, next: Next) -> Response {
    match canonicalize(request) {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_once() {
        assert_eq!(
            canonical_path("/v1/database/creds/%62").unwrap(),
            "/v1/database/creds/b"
        );
        assert_eq!(
            canonical_path("/v1/database/creds/rt%2Db").unwrap(),
            "/v1/database/creds/rt-b"
        );
        assert_eq!(
            canonical_path("/v1/sys/leases/lookup/").unwrap(),
            "/v1/sys/leases/lookup/"
        );
        // A `%` left after decoding would be decoded again by someone: refused.
        assert!(canonical_path("/v1/database/creds/%2562").is_err());
        for bad in [
            "/v1//database/creds/b",
            "/v1/database/./creds/b",
            "/v1/database/creds/%2e%2e/x",
            "/v1/database/creds/b%00",
            "/v1/database/creds/b;x",
            "/v1/database/creds/%ff",
            "/v1/database/creds/b//",
        ] {
            assert!(canonical_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wrap_headers_are_parsed_or_refused_naming_the_header() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        assert_eq!(wrap_request(&headers(&[])).unwrap(), None);
        assert_eq!(
            wrap_request(&headers(&[("x-vault-wrap-ttl", "5m")])).unwrap(),
            Some(WrapRequest {
                ttl: Duration::from_secs(300)
            })
        );
        assert_eq!(
            wrap_request(&headers(&[
                ("x-vault-wrap-ttl", "60"),
                ("x-vault-wrap-format", "json")
            ]))
            .unwrap()
            .map(|w| w.ttl.as_secs()),
            Some(60)
        );
        for (pairs, field) in [
            (vec![("x-vault-wrap-ttl", "0")], "x-vault-wrap-ttl"),
            (vec![("x-vault-wrap-ttl", "soon")], "x-vault-wrap-ttl"),
            (vec![("x-vault-wrap-ttl", "-5s")], "x-vault-wrap-ttl"),
            (
                vec![("x-vault-wrap-ttl", "60"), ("x-vault-wrap-format", "jwt")],
                "x-vault-wrap-format",
            ),
        ] {
            let error = wrap_request(&headers(&pairs)).unwrap_err();
            assert!(error.errors[0].starts_with(field), "{pairs:?}: {error:?}");
        }
    }

    #[test]
    fn list_parameter_is_taken_out_of_the_query() {
        assert_eq!(split_listing(Some("list=true")), (true, None));
        assert_eq!(
            split_listing(Some("format=prometheus&list=1")),
            (true, Some("format=prometheus".into()))
        );
        assert_eq!(
            split_listing(Some("list=false")),
            (false, Some("list=false".into()))
        );
        assert_eq!(split_listing(None), (false, None));
    }
}
