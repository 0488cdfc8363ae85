//! The console's views and actions. Each one is a few API calls made as the signed-in token
//! ([`Console::call`]); a call the token's policies refuse shows as a refusal on the page
//! (a part of a view) or as the whole answer (an action), never as data.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use serde_json::{json, Value};

use super::schedule;
use super::session::csrf_field;
use super::{Answer, Console};
use crate::names::{ConnectionName, LeaseId, RoleName, StaticRoleName};

/// Leases per page of the lease list.
const PAGE: usize = 25;
/// Most leases looked up one by one for a view (expiring soon, a state filter, a confirmation):
/// past it the view says it stopped counting details.
const LOOKUP_CAP: usize = 300;
/// "Expiring soon" on the overview.
const SOON_SECS: i64 = 3600;

// ---------------------------------------------------------------- layout

fn page(title: &str, console: Option<&Console>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Lessor" }
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    a class="brand" href="/ui/" { "Lessor" }
                    @if let Some(console) = console {
                        nav aria-label="Main" {
                            a href="/ui/" { "Overview" }
                            a href="/ui/leases" { "Leases" }
                            a href="/ui/roles" { "Roles" }
                            a href="/ui/static-roles" { "Static roles" }
                            a href="/ui/connections" { "Connections" }
                            a href="/ui/alerts" { "Alerts" }
                            a href="/ui/audit" { "Audit devices" }
                        }
                        form method="post" action="/ui/logout" class="logout" {
                            (csrf_field(&console.session))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
                footer {
                    "Times in UTC; your browser adds your own zone. "
                    @if let Some(console) = console {
                        "Session ends " (time_of(DateTime::from_timestamp(console.session.expires(), 0).unwrap_or_default())) "."
                    }
                }
            }
        }
    }
}

fn respond(title: &str, console: &Console, body: Markup) -> Response {
    axum::response::Html(page(title, Some(console), body).into_string()).into_response()
}

pub fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = html! { p class="error" role="alert" { (detail) } p { a href="/ui/" { "Back to the overview" } } };
    (
        status,
        axum::response::Html(page(title, None, body).into_string()),
    )
        .into_response()
}

pub async fn not_found() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no console page here.",
    )
}

/// The page for an API call that failed: its status and message, with what a refusal means.
fn api_failure(console: &Console, what: &str, answer: &Answer) -> Response {
    let detail = refusal_text(answer);
    let mut response = respond(
        what,
        console,
        html! { p class="error" role="alert" { (detail) } p { a href="/ui/" { "Back to the overview" } } },
    );
    *response.status_mut() = answer.status;
    response
}

fn refusal_text(answer: &Answer) -> String {
    if answer.status == StatusCode::FORBIDDEN {
        "Refused: your token's policies do not allow this (the same decision the API makes).".into()
    } else {
        answer.error_text()
    }
}

/// A part of a view the token may not see.
fn refused_part(answer: &Answer) -> Markup {
    html! { p class="refused" { (refusal_text(answer)) } }
}

/// An RFC 3339 time shown in UTC; the script adds the viewer's zone.
fn time_text(text: &str) -> Markup {
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => time_of(t.with_timezone(&Utc)),
        Err(_) => html! { (text) },
    }
}

fn time_of(t: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) }
    }
}

/// Confirmation banners after an action redirected here (fixed texts, chosen by a code).
fn notice(done: Option<&str>) -> Markup {
    let text = match done {
        Some("revoked") => "The lease was revoked and its database user dropped.",
        Some("role-revoked") => "Every lease of the role was revoked.",
        Some("rotated") => "The password was rotated.",
        Some("saved") => "The static role was saved.",
        Some("root-rotated") => "The connection's admin password was rotated.",
        Some("reconnected") => {
            "The connection's pool was closed and reopened with its stored settings."
        }
        Some("connection-revoked") => "Every lease on the connection was revoked.",
        _ => return html! {},
    };
    html! { p class="notice" role="status" { (text) } }
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

/// A duration as a form field holds it, in the API's own syntax (`1d`, `2h30m`, `90s`), so a
/// form saved unchanged sends back what it showed. (humantime's "1day" is not that syntax.)
fn duration_field(secs: u64) -> String {
    let mut text = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= size {
            text.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if text.is_empty() {
        text.push_str("0s");
    }
    text
}

fn duration_words(secs: i64) -> String {
    if secs <= 0 {
        return "none".into();
    }
    humantime::format_duration(std::time::Duration::from_secs(secs as u64)).to_string()
}

// ---------------------------------------------------------------- shared reads

/// A query string value, percent-encoded.
fn query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Live lease ids per dynamic role, from `LIST sys/leases/lookup/database/creds/` (which needs
/// list and sudo). `only` limits it to one role; `owner_name` to the leases of the owner with
/// that display name (the listing's `owner_display_name`, so the store does the filtering).
async fn live_leases(
    console: &Console,
    only: Option<&str>,
    owner_name: Option<&str>,
) -> Result<BTreeMap<String, Vec<String>>, Answer> {
    let filter = owner_name
        .map(|name| format!("?owner_display_name={}", query_value(name)))
        .unwrap_or_default();
    let roles: Vec<String> = match only {
        Some(role) => vec![role.to_owned()],
        None => {
            let answer = console
                .call(
                    "LIST",
                    &format!("sys/leases/lookup/database/creds/{filter}"),
                    None,
                )
                .await;
            answer
                .keys()
                .ok_or(answer)?
                .into_iter()
                .filter_map(|k| k.strip_suffix('/').map(str::to_owned))
                .collect()
        }
    };
    let mut leases = BTreeMap::new();
    for role in roles {
        let answer = console
            .call(
                "LIST",
                &format!("sys/leases/lookup/database/creds/{role}/{filter}"),
                None,
            )
            .await;
        let ids: Vec<String> = answer
            .keys()
            .ok_or(answer)?
            .into_iter()
            .filter(|k| !k.ends_with('/'))
            .map(|k| format!("database/creds/{role}/{k}"))
            .collect();
        if !ids.is_empty() || only.is_some() {
            leases.insert(role, ids);
        }
    }
    Ok(leases)
}

/// The connection each dynamic role issues on, where the token may read the role.
async fn role_connections(console: &Console, roles: &[String]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for role in roles {
        let answer = console
            .call("GET", &format!("database/roles/{role}"), None)
            .await;
        if answer.ok() {
            map.insert(
                role.clone(),
                str_of(&answer.body["data"], "db_name").to_owned(),
            );
        }
    }
    map
}

/// `sys/leases/lookup` for one lease: its data, or `None` if it is gone or hidden.
async fn lookup(console: &Console, lease_id: &str) -> Option<Value> {
    let answer = console
        .call(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    answer.ok().then(|| answer.body["data"].clone())
}

/// Whether `value` passes a filter: absent, or equal to it.
fn passes(filter: Option<&str>, value: &str) -> bool {
    filter.map_or(true, |wanted| wanted == value)
}

fn role_of_lease(id: &str) -> &str {
    id.strip_prefix("database/creds/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- overview

#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// `GET /ui/`: live leases per connection and role, expiring soon, alerts of 24 h, rotations
/// due next.
pub async fn overview(console: Console, Query(done): Query<Done>) -> Response {
    let leases = live_leases(&console, None, None).await;
    let leases_part = match &leases {
        Err(answer) => refused_part(answer),
        Ok(map) if map.is_empty() => html! {
            p class="empty" { "No live leases. Services get one with "
                code { "GET /v1/database/creds/<role>" } "; define roles under "
                a href="/ui/roles" { "Roles" } "." }
        },
        Ok(map) => {
            let roles: Vec<String> = map.keys().cloned().collect();
            let connections = role_connections(&console, &roles).await;
            let mut per_connection: BTreeMap<&str, usize> = BTreeMap::new();
            for (role, ids) in map {
                let connection = connections.get(role).map_or("(hidden)", String::as_str);
                *per_connection.entry(connection).or_default() += ids.len();
            }
            html! {
                div class="cards" {
                    section aria-labelledby="by-connection" {
                        h3 id="by-connection" { "By connection" }
                        table { thead { tr { th scope="col" { "Connection" } th scope="col" class="num" { "Live leases" } } }
                            tbody { @for (connection, count) in &per_connection {
                                tr { td data-label="Connection" { (connection) } td class="num" data-label="Live leases" { (count) } }
                            } } }
                    }
                    section aria-labelledby="by-role" {
                        h3 id="by-role" { "By role" }
                        table { thead { tr { th scope="col" { "Role" } th scope="col" { "Connection" } th scope="col" class="num" { "Live leases" } } }
                            tbody { @for (role, ids) in map {
                                tr {
                                    td data-label="Role" { a href={ "/ui/leases?role=" (role) } { (role) } }
                                    td data-label="Connection" { (connections.get(role).map_or("(hidden)", String::as_str)) }
                                    td class="num" data-label="Live leases" { (ids.len()) }
                                }
                            } } }
                    }
                }
            }
        }
    };
    // Expiring soon: the live leases looked up, up to the cap.
    let soon_part = match &leases {
        Err(_) => html! {},
        Ok(map) => {
            let mut soon = vec![];
            for id in map.values().flatten().take(LOOKUP_CAP) {
                if let Some(data) = lookup(&console, id).await {
                    let ttl = data["ttl"].as_i64().unwrap_or(i64::MAX);
                    if ttl <= SOON_SECS {
                        soon.push((ttl, id.clone(), data));
                    }
                }
            }
            soon.sort_by_key(|(ttl, _, _)| *ttl);
            html! {
                @if soon.is_empty() {
                    p class="empty" { "No lease expires within the hour." }
                } @else {
                    table { thead { tr { th scope="col" { "Lease" } th scope="col" { "User" } th scope="col" { "Expires" } } }
                        tbody { @for (_, id, data) in soon.iter().take(10) {
                            tr { td data-label="Lease" { code { (id) } } td data-label="User" { (str_of(data, "username")) } td data-label="Expires" { (time_text(str_of(data, "expire_time"))) } }
                        } } }
                }
            }
        }
    };
    let alerts = console.call("GET", "sys/alerts?limit=200", None).await;
    let alerts_part = if alerts.ok() {
        let day_ago = Utc::now() - chrono::Duration::hours(24);
        let recent: Vec<&Value> = alerts.body["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| {
                DateTime::parse_from_rfc3339(str_of(a, "last_seen"))
                    .is_ok_and(|t| t.with_timezone(&Utc) >= day_ago)
            })
            .collect();
        html! {
            @if recent.is_empty() { p class="empty" { "No alerts in the last 24 hours." } }
            @else { (alert_table(&recent)) }
        }
    } else {
        refused_part(&alerts)
    };
    let due = static_role_rows(&console).await;
    let due_part = match &due {
        Err(answer) => refused_part(answer),
        Ok(rows) if rows.is_empty() => html! {
            p class="empty" { "No static roles. " a href="/ui/static-roles/new" { "Create one" } " to have Lessor rotate a database user's password." }
        },
        Ok(rows) => {
            let mut rows: Vec<&(String, Value)> = rows.iter().collect();
            rows.sort_by(|a, b| {
                str_of(&a.1, "next_vault_rotation").cmp(str_of(&b.1, "next_vault_rotation"))
            });
            html! {
                table { thead { tr { th scope="col" { "Static role" } th scope="col" { "Next rotation" } } }
                    tbody { @for (name, data) in rows.iter().take(10) {
                        tr { td data-label="Static role" { a href={ "/ui/static-roles/" (name) } { (name) } } td data-label="Next rotation" { (time_text(str_of(data, "next_vault_rotation"))) } }
                    } } }
            }
        }
    };
    respond(
        "Overview",
        &console,
        html! {
            (notice(done.done.as_deref()))
            section aria-labelledby="live" { h2 id="live" { "Live leases" } (leases_part) }
            section aria-labelledby="soon" { h2 id="soon" { "Expiring within the hour" } (soon_part) }
            section aria-labelledby="alerts24" { h2 id="alerts24" { "Alerts, last 24 hours" } (alerts_part) }
            section aria-labelledby="due" { h2 id="due" { "Rotations due next" } (due_part) }
        },
    )
}

fn alert_table(alerts: &[&Value]) -> Markup {
    html! {
        table { thead { tr {
            th scope="col" { "Rule" } th scope="col" { "Who" } th scope="col" { "From" } th scope="col" { "Role" }
            th scope="col" class="num" { "Count" } th scope="col" { "Last seen" } th scope="col" { "Detail" }
        } }
        tbody { @for a in alerts { tr {
            td data-label="Rule" { (str_of(a, "rule")) } td data-label="Who" { (str_of(a, "display_name")) } td data-label="From" { (str_of(a, "address")) }
            td data-label="Role" { (str_of(a, "role")) } td class="num" data-label="Count" { (a["count"]) } td data-label="Last seen" { (time_text(str_of(a, "last_seen"))) }
            td data-label="Detail" { (str_of(a, "detail")) }
        } } } }
    }
}

// ---------------------------------------------------------------- leases

#[derive(Deserialize)]
pub struct LeaseFilter {
    role: Option<String>,
    connection: Option<String>,
    state: Option<String>,
    owner: Option<String>,
    owner_name: Option<String>,
    page: Option<usize>,
    done: Option<String>,
}

/// Longest owner display name the filter takes (as the API's `owner_display_name`).
const MAX_OWNER_NAME: usize = 128;

/// `GET /ui/leases`: paged, filtered by role, connection, owner (its display name, or its
/// entity id or token accessor) and state (including leases whose revocation keeps failing:
/// `sys/leases?type=irrevocable`).
pub async fn leases(console: Console, Query(filter): Query<LeaseFilter>) -> Response {
    let role = filter.role.as_deref().filter(|r| !r.is_empty());
    let connection = filter.connection.as_deref().filter(|c| !c.is_empty());
    let state = filter.state.as_deref().filter(|s| !s.is_empty());
    let owner = filter
        .owner
        .as_deref()
        .map(str::trim)
        .filter(|o| !o.is_empty());
    let owner_name = filter
        .owner_name
        .as_deref()
        .map(str::trim)
        .filter(|o| !o.is_empty());
    if let Some(role) = role {
        if let Err(e) = RoleName::parse(role) {
            return error_page(StatusCode::BAD_REQUEST, "Bad filter", &e.to_string());
        }
    }
    if let Some(connection) = connection {
        if let Err(e) = ConnectionName::parse(connection) {
            return error_page(StatusCode::BAD_REQUEST, "Bad filter", &e.to_string());
        }
    }
    if !matches!(
        state,
        None | Some("active" | "revoking" | "creating" | "irrevocable")
    ) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Bad filter",
            "state: one of active, revoking, creating, irrevocable",
        );
    }
    if owner.is_some_and(|o| {
        o.len() > 128
            || !o
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    }) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Bad filter",
            "owner: an entity id or token accessor (letters, digits, - _ . :)",
        );
    }
    if owner_name
        .is_some_and(|o| o.chars().count() > MAX_OWNER_NAME || o.chars().any(char::is_control))
    {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Bad filter",
            &format!("owner_name: at most {MAX_OWNER_NAME} characters, no control characters"),
        );
    }
    if (owner.is_some() || owner_name.is_some()) && state == Some("irrevocable") {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Bad filter",
            "owner: cannot be combined with state irrevocable, whose listing does not name owners",
        );
    }
    let page_number = filter.page.unwrap_or(0);
    // Rows: (lease id, details).
    let mut rows: Vec<(String, Value)> = vec![];
    let mut more = false;
    let mut all_roles: Vec<String> = vec![];
    let mut connections = BTreeMap::new();
    if state == Some("irrevocable") {
        let answer = console
            .call("GET", "sys/leases?type=irrevocable", None)
            .await;
        if !answer.ok() {
            return api_failure(&console, "Leases", &answer);
        }
        for lease in answer.body["data"]["leases"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let id = str_of(lease, "lease_id").to_owned();
            if role.is_some_and(|r| r != role_of_lease(&id))
                || connection.is_some_and(|c| c != str_of(lease, "connection"))
            {
                continue;
            }
            let details = json!({
                "username": lease["username"], "state": "revoking (keeps failing)",
                "expire_time": lease["expire_time"], "revocation_attempts": lease["attempts"],
                "last_error": lease["error"],
            });
            rows.push((id, details));
        }
        more = rows.len() > (page_number + 1) * PAGE;
        rows = rows
            .into_iter()
            .skip(page_number * PAGE)
            .take(PAGE)
            .collect();
    } else {
        let live = match live_leases(&console, role, owner_name).await {
            Ok(live) => live,
            Err(answer) => return api_failure(&console, "Leases", &answer),
        };
        all_roles = live.keys().cloned().collect();
        connections = role_connections(&console, &all_roles).await;
        let candidates: Vec<&String> = live
            .iter()
            .filter(|(r, _)| {
                connection.map_or(true, |c| connections.get(*r).map(String::as_str) == Some(c))
            })
            .flat_map(|(_, ids)| ids)
            .collect();
        match (state, owner) {
            (None, None) => {
                more = candidates.len() > (page_number + 1) * PAGE;
                for id in candidates.iter().skip(page_number * PAGE).take(PAGE) {
                    if let Some(data) = lookup(&console, id).await {
                        rows.push(((*id).clone(), data));
                    }
                }
            }
            // The state and the owner are in each lease's lookup: look up until a page is full.
            (state, owner) => {
                let mut matched = 0;
                for id in candidates.iter().take(LOOKUP_CAP) {
                    if let Some(data) = lookup(&console, id).await {
                        if passes(state, str_of(&data, "state"))
                            && passes(owner, str_of(&data, "owner"))
                        {
                            matched += 1;
                            if matched > page_number * PAGE && rows.len() < PAGE {
                                rows.push(((*id).clone(), data));
                            } else if rows.len() == PAGE {
                                more = true;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    let query = |page: usize| {
        let mut q = format!("?page={page}");
        for (k, v) in [
            ("role", role),
            ("connection", connection),
            ("state", state),
            ("owner", owner),
            ("owner_name", owner_name),
        ] {
            if let Some(v) = v {
                q.push_str(&format!("&{k}={}", query_value(v)));
            }
        }
        q
    };
    let mut connection_names: Vec<&String> = connections.values().collect();
    connection_names.sort();
    connection_names.dedup();
    respond(
        "Leases",
        &console,
        html! {
            (notice(filter.done.as_deref()))
            form method="get" action="/ui/leases" class="filters" {
                label { "Role " input type="text" name="role" value=(role.unwrap_or_default()) list="role-names" pattern="[A-Za-z0-9_.-]*"; }
                datalist id="role-names" { @for r in &all_roles { option value=(r) {} } }
                label { "Connection " input type="text" name="connection" value=(connection.unwrap_or_default()) list="connection-names"; }
                datalist id="connection-names" { @for c in &connection_names { option value=(c) {} } }
                label { "Owner name " input type="text" name="owner_name" value=(owner_name.unwrap_or_default()) placeholder="token-ci"; }
                label { "Owner id " input type="text" name="owner" value=(owner.unwrap_or_default()) placeholder="entity id or accessor"; }
                label { "State "
                    select name="state" {
                        @for (value, label) in [("", "any live"), ("active", "active"), ("creating", "creating"), ("revoking", "revoking"), ("irrevocable", "revocation keeps failing")] {
                            option value=(value) selected[state.unwrap_or_default() == value] { (label) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            @if rows.is_empty() {
                p class="empty" { "No lease matches. "
                    @if role.is_some() || connection.is_some() || state.is_some() || owner.is_some() || owner_name.is_some() { a href="/ui/leases" { "Clear the filters" } " to see every live lease, or " }
                    "issue one with " code { "GET /v1/database/creds/<role>" } "." }
            } @else {
                table class="leases" {
                    thead { tr {
                        th scope="col" { "Lease" } th scope="col" { "Role" } th scope="col" { "Connection" } th scope="col" { "User" }
                        th scope="col" { "Owner" } th scope="col" { "State" } th scope="col" { "Expires" } th scope="col" { "Revocation" } th scope="col" { span class="sr" { "Actions" } }
                    } }
                    tbody { @for (id, data) in &rows {
                        @let lease_role = role_of_lease(id);
                        tr {
                            td data-label="Lease" { code { (id) } }
                            td data-label="Role" { (lease_role) }
                            td data-label="Connection" { (data["connection"].as_str().or(connections.get(lease_role).map(String::as_str)).unwrap_or_default()) }
                            td data-label="User" { (str_of(data, "username")) }
                            td data-label="Owner" class="owner" {
                                @if !str_of(data, "owner_display_name").is_empty() {
                                    span class="owner-name" { (str_of(data, "owner_display_name")) } " "
                                }
                                code class="owner-id" { (str_of(data, "owner")) }
                            }
                            td data-label="State" { (str_of(data, "state")) }
                            td data-label="Expires" { (time_text(str_of(data, "expire_time"))) }
                            td data-label="Revocation" { @if data["revocation_attempts"].as_i64().unwrap_or(0) > 0 {
                                (data["revocation_attempts"]) " attempts: " (str_of(data, "last_error"))
                            } }
                            td class="row-actions" { form method="post" action="/ui/leases/revoke" {
                                (csrf_field(&console.session))
                                input type="hidden" name="lease_id" value=(id);
                                button type="submit" class="danger" aria-label={ "Revoke lease " (id) } { "Revoke" }
                            } }
                        }
                    } }
                }
            }
            nav class="pages" aria-label="Pages" {
                @if page_number > 0 { a href={ "/ui/leases" (query(page_number - 1)) } rel="prev" { "← Previous" } }
                span { "Page " (page_number + 1) }
                @if more { a href={ "/ui/leases" (query(page_number + 1)) } rel="next" { "Next →" } }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct LeaseForm {
    csrf: Option<String>,
    lease_id: Option<String>,
}

/// `POST /ui/leases/revoke`: `PUT sys/leases/revoke`.
pub async fn revoke_lease(console: Console, Form(form): Form<LeaseForm>) -> Response {
    if let Some(refused) = console.csrf_refusal(form.csrf.as_deref()) {
        return refused;
    }
    let id = match LeaseId::parse(form.lease_id.unwrap_or_default()) {
        Ok(id) => id,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad lease id", &e.to_string()),
    };
    let answer = console
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": id.as_str() })),
        )
        .await;
    if !answer.ok() {
        return api_failure(&console, "Revoking the lease failed", &answer);
    }
    Redirect::to("/ui/leases?done=revoked").into_response()
}

// ---------------------------------------------------------------- roles

/// `GET /ui/roles`: dynamic roles with their connection, TTLs and live leases.
pub async fn roles(console: Console, Query(done): Query<Done>) -> Response {
    let list = console.call("LIST", "database/roles", None).await;
    let Some(names) = list.keys() else {
        return api_failure(&console, "Roles", &list);
    };
    let live = live_leases(&console, None, None).await.ok();
    let mut rows = vec![];
    for name in &names {
        let answer = console
            .call("GET", &format!("database/roles/{name}"), None)
            .await;
        rows.push((name, answer));
    }
    respond(
        "Roles",
        &console,
        html! {
            (notice(done.done.as_deref()))
            @if rows.is_empty() {
                p class="empty" { "No dynamic roles yet. Write one with "
                    code { "lessor write database/roles/<name> db_name=<connection> creation_statements=…" }
                    " (see the README), then services ask " code { "GET /v1/database/creds/<name>" } "." }
            } @else {
                table { thead { tr {
                    th scope="col" { "Role" } th scope="col" { "Connection" } th scope="col" { "Default TTL" }
                    th scope="col" { "Max TTL" } th scope="col" class="num" { "Live leases" } th scope="col" { span class="sr" { "Actions" } }
                } }
                tbody { @for (name, answer) in &rows {
                    @let count = live.as_ref().map(|l| l.get(name.as_str()).map_or(0, Vec::len));
                    tr {
                        td data-label="Role" { a href={ "/ui/leases?role=" (name) } { (name) } }
                        @if answer.ok() {
                            @let data = &answer.body["data"];
                            td data-label="Connection" { (str_of(data, "db_name")) }
                            td data-label="Default TTL" { (duration_words(data["default_ttl"].as_i64().unwrap_or(0))) }
                            td data-label="Max TTL" { (duration_words(data["max_ttl"].as_i64().unwrap_or(0))) }
                        } @else {
                            td colspan="3" { (refused_part(answer)) }
                        }
                        td class="num" data-label="Live leases" { @match count { Some(n) => (n), None => "?" } }
                        td class="row-actions" { a class="button danger" href={ "/ui/roles/" (name) "/revoke" } { "Revoke all leases…" } }
                    }
                } } }
            }
        },
    )
}

/// `GET /ui/roles/:name/revoke`: what revoking the role's leases would drop, before it does.
pub async fn confirm_revoke_role(console: Console, Path(name): Path<String>) -> Response {
    let name = match RoleName::parse(name) {
        Ok(name) => name,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad role name", &e.to_string()),
    };
    let live = match live_leases(&console, Some(&name), None).await {
        Ok(live) => live,
        Err(answer) => return api_failure(&console, "Revoke a role's leases", &answer),
    };
    let ids = live.get(name.as_str()).cloned().unwrap_or_default();
    let mut users = vec![];
    for id in ids.iter().take(LOOKUP_CAP) {
        if let Some(data) = lookup(&console, id).await {
            users.push(str_of(&data, "username").to_owned());
        }
    }
    let count = ids.len();
    respond(
        &format!("Revoke every lease of role {name}?"),
        &console,
        html! {
            @if count == 0 {
                p class="empty" { "Role " strong { (name) } " has no live leases: there is nothing to revoke." }
                p { a href="/ui/roles" { "Back to roles" } }
            } @else {
                p class="warning" role="alert" {
                    "This revokes " strong id="lease-count" { (count) " lease" @if count != 1 { "s" } }
                    " and drops " strong id="user-count" { (users.len()) " database user" @if users.len() != 1 { "s" } }
                    " now. Services using them lose their logins at once."
                }
                @if !users.is_empty() {
                    details { summary { "Users that will be dropped" }
                        ul { @for user in &users { li { code { (user) } } } } }
                }
                form method="post" action={ "/ui/roles/" (name) "/revoke" } {
                    (csrf_field(&console.session))
                    button type="submit" class="danger" { "Revoke " (count) " lease" @if count != 1 { "s" } " of " (name) }
                    " "
                    a href="/ui/roles" { "Cancel" }
                }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

/// `POST /ui/roles/:name/revoke`: `PUT sys/leases/revoke-prefix/database/creds/:name` (sudo).
pub async fn revoke_role(
    console: Console,
    Path(name): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Some(refused) = console.csrf_refusal(form.csrf.as_deref()) {
        return refused;
    }
    let name = match RoleName::parse(name) {
        Ok(name) => name,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad role name", &e.to_string()),
    };
    let answer = console
        .call(
            "PUT",
            &format!("sys/leases/revoke-prefix/database/creds/{name}"),
            None,
        )
        .await;
    if !answer.ok() {
        return api_failure(&console, "Revoking the role's leases failed", &answer);
    }
    Redirect::to("/ui/roles?done=role-revoked").into_response()
}

// ---------------------------------------------------------------- static roles

/// Every static role the token may read: (name, data).
async fn static_role_rows(console: &Console) -> Result<Vec<(String, Value)>, Answer> {
    let list = console.call("LIST", "database/static-roles", None).await;
    let names = list.keys().ok_or(list)?;
    let mut rows = vec![];
    for name in names {
        let answer = console
            .call("GET", &format!("database/static-roles/{name}"), None)
            .await;
        if answer.ok() {
            rows.push((name, answer.body["data"].clone()));
        }
    }
    Ok(rows)
}

fn schedule_words(data: &Value) -> String {
    match (
        data["rotation_schedule"].as_str(),
        data["rotation_period"].as_i64(),
    ) {
        (Some(cron), _) => schedule::describe(
            cron,
            data["rotation_window"]
                .as_u64()
                .filter(|w| *w > 0)
                .map(std::time::Duration::from_secs),
        ),
        (None, Some(period)) => format!("every {}", duration_words(period)),
        (None, None) => "no schedule".into(),
    }
}

/// `GET /ui/static-roles`.
pub async fn static_roles(console: Console, Query(done): Query<Done>) -> Response {
    let rows = match static_role_rows(&console).await {
        Ok(rows) => rows,
        Err(answer) => return api_failure(&console, "Static roles", &answer),
    };
    respond(
        "Static roles",
        &console,
        html! {
            (notice(done.done.as_deref()))
            p { a class="button" href="/ui/static-roles/new" { "New static role" } }
            @if rows.is_empty() {
                p class="empty" { "No static roles yet. Create one to have Lessor own and rotate an existing database user's password." }
            } @else {
                table { thead { tr {
                    th scope="col" { "Static role" } th scope="col" { "Connection" } th scope="col" { "User" }
                    th scope="col" { "Schedule" } th scope="col" { "Last rotation" } th scope="col" { "Next rotation" } th scope="col" { "Status" }
                } }
                tbody { @for (name, data) in &rows { tr {
                    td data-label="Static role" { a href={ "/ui/static-roles/" (name) } { (name) } }
                    td data-label="Connection" { (str_of(data, "db_name")) }
                    td data-label="User" { (str_of(data, "username")) }
                    td data-label="Schedule" { (schedule_words(data)) }
                    td data-label="Last rotation" { @match data["last_vault_rotation"].as_str() { Some(t) => (time_text(t)), None => "never" } }
                    td data-label="Next rotation" { (time_text(str_of(data, "next_vault_rotation"))) }
                    td data-label="Status" { @match data["last_error"].as_str() { Some(e) => span class="error" { "failing: " (e) }, None => "ok" } }
                } } } }
            }
        },
    )
}

/// `GET /ui/static-roles/:name`: schedule in words, next five times, history timeline.
pub async fn static_role(
    console: Console,
    Path(name): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let name = match StaticRoleName::parse(name) {
        Ok(name) => name,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Bad static role name",
                &e.to_string(),
            )
        }
    };
    let answer = console
        .call("GET", &format!("database/static-roles/{name}"), None)
        .await;
    if !answer.ok() {
        return api_failure(&console, &format!("Static role {name}"), &answer);
    }
    let data = &answer.body["data"];
    let window = data["rotation_window"]
        .as_u64()
        .filter(|w| *w > 0)
        .map(std::time::Duration::from_secs);
    let next: Vec<DateTime<Utc>> = data["rotation_schedule"]
        .as_str()
        .and_then(|cron| schedule::preview(cron, window, Utc::now(), 5).ok())
        .map(|p| p.next)
        .unwrap_or_default();
    let history: Vec<&Value> = data["rotation_history"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    respond(
        &format!("Static role {name}"),
        &console,
        html! {
            (notice(done.done.as_deref()))
            dl class="facts" {
                dt { "Connection" } dd { (str_of(data, "db_name")) }
                dt { "User" } dd { (str_of(data, "username")) @if let Some(alt) = data["alternate_username"].as_str() { " and " (alt) " (alternating; current: " (str_of(data, "current_username")) ")" } }
                dt { "Schedule" } dd id="schedule-words" { (schedule_words(data)) }
                dt { "Last rotation" } dd { @match data["last_vault_rotation"].as_str() { Some(t) => (time_text(t)), None => "never" } }
                dt { "Next rotation" } dd { (time_text(str_of(data, "next_vault_rotation"))) }
                @if let Some(error) = data["last_error"].as_str() {
                    dt { "Failing" } dd class="error" { (data["rotation_attempts"]) " attempts: " (error) }
                }
            }
            @if !next.is_empty() {
                section aria-labelledby="next-five" {
                    h2 id="next-five" { "Next five scheduled times" }
                    ol id="next-times" { @for t in &next { li { (time_of(*t)) } } }
                }
            }
            div class="actions" {
                form method="post" action={ "/ui/static-roles/" (name) "/rotate" } {
                    (csrf_field(&console.session))
                    button type="submit" { "Rotate now" }
                }
                a class="button" href={ "/ui/static-roles/" (name) "/edit" } { "Edit" }
            }
            section aria-labelledby="history" {
                h2 id="history" { "Rotation history" }
                @if history.is_empty() {
                    p class="empty" { "No rotation yet. Use Rotate now, or wait for the next scheduled time." }
                } @else {
                    ol class="timeline" id="rotation-history" {
                        @for entry in &history {
                            @let outcome = str_of(entry, "outcome");
                            li class={ "outcome-" (outcome) } {
                                (time_text(str_of(entry, "time"))) " · "
                                strong { (outcome) } " · " (str_of(entry, "trigger")) " · user " (str_of(entry, "username"))
                                @if let Some(error) = entry["error"].as_str() { div class="error" { (error) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `POST /ui/static-roles/:name/rotate`: `POST database/rotate-role/:name`.
pub async fn rotate_static_role(
    console: Console,
    Path(name): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Some(refused) = console.csrf_refusal(form.csrf.as_deref()) {
        return refused;
    }
    let name = match StaticRoleName::parse(name) {
        Ok(name) => name,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Bad static role name",
                &e.to_string(),
            )
        }
    };
    let answer = console
        .call("POST", &format!("database/rotate-role/{name}"), None)
        .await;
    if !answer.ok() {
        return api_failure(&console, "Rotation failed", &answer);
    }
    Redirect::to(&format!("/ui/static-roles/{name}?done=rotated")).into_response()
}

/// What the static-role form holds (also to show it again after a refusal).
#[derive(Deserialize, Default)]
pub struct StaticRoleForm {
    csrf: Option<String>,
    name: Option<String>,
    db_name: Option<String>,
    username: Option<String>,
    rotation_schedule: Option<String>,
    rotation_window: Option<String>,
    rotation_period: Option<String>,
    skip_import_rotation: Option<String>,
    /// Set by the edit form, so a refused edit is shown again as an edit.
    editing: Option<String>,
}

fn static_role_form_page(
    console: &Console,
    form: &StaticRoleForm,
    connections: &[String],
    editing: bool,
    error: Option<&str>,
) -> Response {
    let v = |f: &Option<String>| f.clone().unwrap_or_default();
    let title = if editing {
        "Edit static role"
    } else {
        "New static role"
    };
    respond(
        title,
        console,
        html! {
            @if let Some(error) = error { p class="error" role="alert" id="form-error" { (error) } }
            form method="post" action="/ui/static-roles/new" class="stacked" id="static-role-form" {
                (csrf_field(&console.session))
                @if editing { input type="hidden" name="editing" value="true"; }
                label for="name" { "Name" }
                input id="name" name="name" type="text" required pattern="[A-Za-z0-9_.-]+" value=(v(&form.name)) readonly[editing] autocomplete="off";
                label for="db_name" { "Connection" }
                @if connections.is_empty() {
                    input id="db_name" name="db_name" type="text" required value=(v(&form.db_name));
                } @else {
                    select id="db_name" name="db_name" required {
                        @for c in connections { option value=(c) selected[form.db_name.as_deref() == Some(c.as_str())] { (c) } }
                    }
                }
                label for="username" { "Database user (must exist)" }
                input id="username" name="username" type="text" required value=(v(&form.username)) autocomplete="off";
                fieldset {
                    legend { "Schedule: a cron pattern (UTC), or a period" }
                    label for="rotation_schedule" { "Cron schedule, e.g. " code { "0 3 * * SUN" } }
                    input id="rotation_schedule" name="rotation_schedule" type="text" value=(v(&form.rotation_schedule)) aria-describedby="schedule-preview" autocomplete="off";
                    label for="rotation_window" { "Window after each time, e.g. " code { "2h" } " (optional, at least 1h)" }
                    input id="rotation_window" name="rotation_window" type="text" value=(v(&form.rotation_window)) autocomplete="off";
                    output id="schedule-preview" for="rotation_schedule rotation_window" aria-live="polite" {}
                    label for="rotation_period" { "Or a period, e.g. " code { "24h" } }
                    input id="rotation_period" name="rotation_period" type="text" value=(v(&form.rotation_period)) autocomplete="off";
                }
                @if !editing {
                    label class="check" {
                        input type="checkbox" name="skip_import_rotation" value="true" checked[form.skip_import_rotation.is_some()];
                        " Do not rotate when saving (the first rotation happens at the first scheduled time)"
                    }
                }
                button type="submit" { "Save" }
            }
        },
    )
}

async fn connection_names(console: &Console) -> Vec<String> {
    console
        .call("LIST", "database/config", None)
        .await
        .keys()
        .unwrap_or_default()
}

/// `GET /ui/static-roles/new`.
pub async fn static_role_form(console: Console) -> Response {
    let connections = connection_names(&console).await;
    static_role_form_page(
        &console,
        &StaticRoleForm::default(),
        &connections,
        false,
        None,
    )
}

/// `GET /ui/static-roles/:name/edit`: the form filled from the role.
pub async fn static_role_form_edit(console: Console, Path(name): Path<String>) -> Response {
    let name = match StaticRoleName::parse(name) {
        Ok(name) => name,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Bad static role name",
                &e.to_string(),
            )
        }
    };
    let answer = console
        .call("GET", &format!("database/static-roles/{name}"), None)
        .await;
    if !answer.ok() {
        return api_failure(&console, &format!("Static role {name}"), &answer);
    }
    let data = &answer.body["data"];
    let secs = |key: &str| data[key].as_u64().filter(|s| *s > 0).map(duration_field);
    let form = StaticRoleForm {
        name: Some(name.to_string()),
        db_name: data["db_name"].as_str().map(str::to_owned),
        username: data["username"].as_str().map(str::to_owned),
        rotation_schedule: data["rotation_schedule"].as_str().map(str::to_owned),
        rotation_window: secs("rotation_window"),
        rotation_period: secs("rotation_period"),
        ..Default::default()
    };
    let connections = connection_names(&console).await;
    static_role_form_page(&console, &form, &connections, true, None)
}

/// `POST /ui/static-roles/new`: `POST database/static-roles/:name` with the fields given.
pub async fn write_static_role(console: Console, Form(form): Form<StaticRoleForm>) -> Response {
    if let Some(refused) = console.csrf_refusal(form.csrf.as_deref()) {
        return refused;
    }
    let editing = form.editing.as_deref() == Some("true");
    let refuse = |console: &Console, form: &StaticRoleForm, connections: &[String], error: &str| {
        let mut page = static_role_form_page(console, form, connections, editing, Some(error));
        *page.status_mut() = StatusCode::BAD_REQUEST;
        page
    };
    let connections = connection_names(&console).await;
    let name = match StaticRoleName::parse(form.name.clone().unwrap_or_default()) {
        Ok(name) => name,
        Err(e) => return refuse(&console, &form, &connections, &e.to_string()),
    };
    let mut body = serde_json::Map::new();
    for (key, value) in [
        ("db_name", &form.db_name),
        ("username", &form.username),
        ("rotation_schedule", &form.rotation_schedule),
        ("rotation_window", &form.rotation_window),
        ("rotation_period", &form.rotation_period),
    ] {
        if let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            body.insert(key.into(), json!(value));
        }
    }
    // An emptied window field removes the window: the API keeps a stored window when a cron
    // schedule comes without one, which would silently ignore what the form shows.
    let given = |field: &Option<String>| field.as_deref().is_some_and(|v| !v.trim().is_empty());
    if given(&form.rotation_schedule) && !given(&form.rotation_window) {
        body.insert("rotation_window".into(), json!(0));
    }
    if form.skip_import_rotation.is_some() {
        body.insert("skip_import_rotation".into(), json!(true));
    }
    let answer = console
        .call(
            "POST",
            &format!("database/static-roles/{name}"),
            Some(Value::Object(body)),
        )
        .await;
    if !answer.ok() {
        if answer.status == StatusCode::BAD_REQUEST {
            return refuse(&console, &form, &connections, &answer.error_text());
        }
        return api_failure(&console, "Saving the static role failed", &answer);
    }
    Redirect::to(&format!("/ui/static-roles/{name}?done=saved")).into_response()
}

#[derive(Deserialize)]
pub struct PreviewQuery {
    schedule: Option<String>,
    window: Option<String>,
}

/// `GET /ui/schedule-preview?schedule=..&window=..`: the words and next five times of a cron
/// schedule as the rotator computes them, or a 400 naming the problem (the form then refuses
/// to submit). Signed-in users only; it reads nothing from the store.
pub async fn schedule_preview(_console: Console, Query(query): Query<PreviewQuery>) -> Response {
    let refuse = |message: String| {
        (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
    };
    let cron = query.schedule.unwrap_or_default();
    let window = match query
        .window
        .as_deref()
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        None => None,
        Some(w) => match crate::ttl::parse_duration_str("rotation_window", w) {
            Ok(window) => Some(window),
            Err(e) => return refuse(e.to_string()),
        },
    };
    match schedule::preview(&cron, window, Utc::now(), 5) {
        Ok(preview) => Json(json!({
            "words": preview.words,
            "next": preview.next.iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => refuse(e.to_string()),
    }
}

// ---------------------------------------------------------------- connections, alerts, audit

/// How long the connections view waits for its reachability checks. A check still running then
/// goes on in the background (bounded by the connect and operation deadlines, and audited like
/// any call) and the view says it had no answer yet: one stalled database costs the page this
/// wait, never a hang.
pub const REACHABILITY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// Most reachability checks one view runs at once, so a page of many connections does not open
/// a connection to each of them in the same instant.
const REACHABILITY_CONCURRENCY: usize = 8;

/// What the view learned of one connection's reachability.
enum Reachability {
    /// The API answered (the check's outcome, or a refusal).
    Answered(Answer),
    /// No answer within [`REACHABILITY_WAIT`].
    Pending,
    /// Never started: no slot freed within the wait.
    NotChecked,
}

/// `GET database/config/:name?verify=true` for every connection at once (at most
/// [`REACHABILITY_CONCURRENCY`] in flight), waiting at most [`REACHABILITY_WAIT`] in all.
async fn check_reachability(console: &Console, names: &[String]) -> Vec<Reachability> {
    let deadline = tokio::time::Instant::now() + REACHABILITY_WAIT;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(REACHABILITY_CONCURRENCY));
    let checks: Vec<_> = names
        .iter()
        .map(|name| {
            console.spawn_read(
                slots.clone(),
                deadline,
                format!("database/config/{name}?verify=true"),
            )
        })
        .collect();
    let mut outcomes = Vec::with_capacity(checks.len());
    for check in checks {
        outcomes.push(match tokio::time::timeout_at(deadline, check).await {
            Ok(Ok(Some(answer))) => Reachability::Answered(answer),
            Ok(Ok(None)) => Reachability::NotChecked,
            // The task failed (a panic in a handler): as good as no answer.
            Ok(Err(_)) | Err(_) => Reachability::Pending,
        });
    }
    outcomes
}

fn reachability_cell(name: &str, check: &Reachability) -> Markup {
    let wait = REACHABILITY_WAIT.as_secs();
    html! {
        td class="reachability" data-label="Reachable" data-connection=(name) {
            @match check {
                Reachability::Answered(answer) if answer.ok() => {
                    @let status = &answer.body["data"]["reachability"];
                    @if status["reachable"].as_bool() == Some(true) {
                        span class="status status-reachable" { "Reachable" }
                        " " span class="hint" { "answered in " (status["elapsed_ms"]) " ms" }
                    } @else {
                        span class="status status-unreachable" { "Unreachable" }
                        " " span class="reason" { (str_of(status, "error")) }
                    }
                }
                Reachability::Answered(answer) => (refused_part(answer)),
                Reachability::Pending => {
                    span class="status status-pending" { "No answer within " (wait) " s" }
                    " " span class="hint" { "The check goes on until the connect and operation deadlines; reload to see its outcome." }
                }
                Reachability::NotChecked => {
                    span class="status status-pending" { "Not checked" }
                    " " span class="hint" { "Too many checks were running; reload to check again." }
                }
            }
        }
    }
}

/// `GET /ui/connections`: engine, whether each database answers now (checked on every view,
/// concurrently and bounded, see [`check_reachability`]), admin user, allowed roles, live
/// leases; reconnect; revoke every lease on it; rotate the admin password.
pub async fn connections(console: Console, Query(done): Query<Done>) -> Response {
    let list = console.call("LIST", "database/config", None).await;
    let Some(names) = list.keys() else {
        return api_failure(&console, "Connections", &list);
    };
    // Started first, so the checks run while the rest of the view is read.
    let reachability = check_reachability(&console, &names);
    let rest = async {
        let live = live_leases(&console, None, None).await.ok();
        let per_connection: Option<BTreeMap<String, usize>> = match &live {
            Some(live) => {
                let roles: Vec<String> = live.keys().cloned().collect();
                let map = role_connections(&console, &roles).await;
                let mut counts = BTreeMap::new();
                for (role, ids) in live {
                    if let Some(c) = map.get(role) {
                        *counts.entry(c.clone()).or_default() += ids.len();
                    }
                }
                Some(counts)
            }
            None => None,
        };
        let mut configs = vec![];
        for name in &names {
            configs.push(
                console
                    .call("GET", &format!("database/config/{name}"), None)
                    .await,
            );
        }
        (per_connection, configs)
    };
    let (checks, (per_connection, configs)) = tokio::join!(reachability, rest);
    let rows: Vec<(&String, &Answer, &Reachability)> = names
        .iter()
        .zip(configs.iter())
        .zip(checks.iter())
        .map(|((name, config), check)| (name, config, check))
        .collect();
    respond(
        "Connections",
        &console,
        html! {
            (notice(done.done.as_deref()))
            @if rows.is_empty() {
                p class="empty" { "No connections yet. Register a database with "
                    code { "lessor write database/config/<name> plugin_name=postgresql-database-plugin connection_url=… allowed_roles=…" } "." }
            } @else {
                p class="hint" { "Each database was asked just now whether it answers (at most " (REACHABILITY_WAIT.as_secs()) " s of waiting). "
                    a href="/ui/connections" { "Check again" } }
                table { thead { tr {
                    th scope="col" { "Connection" } th scope="col" { "Reachable" } th scope="col" { "Engine" } th scope="col" { "Admin user" }
                    th scope="col" { "Allowed roles" } th scope="col" class="num" { "Live leases" } th scope="col" { span class="sr" { "Actions" } }
                } }
                tbody { @for (name, answer, check) in &rows { tr {
                    td data-label="Connection" { (name) }
                    (reachability_cell(name, check))
                    @if answer.ok() {
                        @let data = &answer.body["data"];
                        td data-label="Engine" { (str_of(data, "plugin_name")) }
                        td data-label="Admin user" { (str_of(&data["connection_details"], "username")) }
                        td data-label="Allowed roles" { (data["allowed_roles"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                    } @else {
                        td colspan="3" { (refused_part(answer)) }
                    }
                    td class="num" data-label="Live leases" { @match per_connection.as_ref() { Some(c) => (c.get(name.as_str()).copied().unwrap_or(0)), None => "?" } }
                    td class="row-actions" {
                        form method="post" action={ "/ui/connections/" (name) "/reset" } {
                            (csrf_field(&console.session))
                            button type="submit" aria-label={ "Reconnect " (name) } { "Reconnect" }
                        }
                        a class="button danger" href={ "/ui/connections/" (name) "/revoke" } { "Revoke all leases…" }
                        a class="button danger" href={ "/ui/connections/" (name) "/rotate-root" } { "Rotate admin password…" }
                    }
                } } } }
            }
        },
    )
}

/// `POST /ui/connections/:name/reset`: `POST database/reset/:name`, which closes the
/// connection's pool and opens a new one with the stored settings (after the database's
/// address or the admin's password changed outside Lessor).
pub async fn reset_connection(
    console: Console,
    Path(name): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    connection_action(
        console,
        name,
        form,
        "reset",
        "reconnected",
        "The connection could not be reopened",
    )
    .await
}

/// `GET /ui/connections/:name/rotate-root`: what rotating the admin password means, before it
/// happens.
pub async fn confirm_rotate_root(console: Console, Path(name): Path<String>) -> Response {
    let name = match ConnectionName::parse(name) {
        Ok(name) => name,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Bad connection name",
                &e.to_string(),
            )
        }
    };
    respond(
        &format!("Rotate the admin password of {name}?"),
        &console,
        html! {
            p class="warning" role="alert" {
                "Lessor sets a new random password for the admin user of " strong { (name) }
                " and keeps it sealed. After this, nobody else knows that password: use a dedicated admin user for Lessor, not one people log in with."
            }
            form method="post" action={ "/ui/connections/" (name) "/rotate-root" } {
                (csrf_field(&console.session))
                button type="submit" class="danger" { "Rotate the admin password of " (name) }
                " "
                a href="/ui/connections" { "Cancel" }
            }
        },
    )
}

/// `POST /ui/connections/:name/rotate-root`: `POST database/rotate-root/:name` (sudo).
pub async fn rotate_root(
    console: Console,
    Path(name): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    connection_action(
        console,
        name,
        form,
        "rotate-root",
        "root-rotated",
        "Rotating the admin password failed",
    )
    .await
}

async fn connection_action(
    console: Console,
    name: String,
    form: CsrfOnly,
    endpoint: &str,
    done: &str,
    failed: &str,
) -> Response {
    if let Some(refused) = console.csrf_refusal(form.csrf.as_deref()) {
        return refused;
    }
    let name = match ConnectionName::parse(name) {
        Ok(name) => name,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Bad connection name",
                &e.to_string(),
            )
        }
    };
    let answer = console
        .call("POST", &format!("database/{endpoint}/{name}"), None)
        .await;
    if !answer.ok() {
        return api_failure(&console, failed, &answer);
    }
    Redirect::to(&format!("/ui/connections?done={done}")).into_response()
}

/// `GET /ui/alerts`.
pub async fn alerts(console: Console) -> Response {
    let answer = console.call("GET", "sys/alerts?limit=500", None).await;
    if !answer.ok() {
        return api_failure(&console, "Alerts", &answer);
    }
    let alerts: Vec<&Value> = answer.body["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    respond(
        "Alerts",
        &console,
        html! {
            @if alerts.is_empty() {
                p class="empty" { "No alerts. The anomaly rules (bursts of reads, new addresses, reads outside allowed hours, repeated denials) are set with "
                    code { "sys/monitor/rules" } "." }
            } @else { (alert_table(&alerts)) }
        },
    )
}

/// `GET /ui/audit`: the audit devices (`GET sys/audit`, sudo).
pub async fn audit_devices(console: Console) -> Response {
    let answer = console.call("GET", "sys/audit", None).await;
    if !answer.ok() {
        return api_failure(&console, "Audit devices", &answer);
    }
    let devices: Vec<(&String, &Value)> = answer.body["data"]
        .as_object()
        .into_iter()
        .flatten()
        .collect();
    respond(
        "Audit devices",
        &console,
        html! {
            @if devices.is_empty() {
                p class="empty" { "No audit device is enabled: requests are not recorded. Enable one with "
                    code { "lessor write sys/audit/file type=file options.file_path=/var/log/lessor/audit.log" } "." }
            } @else {
                table { thead { tr { th scope="col" { "Path" } th scope="col" { "Type" } th scope="col" { "Description" } th scope="col" { "Options" } } }
                tbody { @for (path, device) in &devices { tr {
                    td data-label="Path" { (path) } td data-label="Type" { (str_of(device, "type")) } td data-label="Description" { (str_of(device, "description")) }
                    td data-label="Options" { code { (device["options"]) } }
                } } } }
            }
        },
    )
}

/// The sign-in page (token, or JWT login with a role).
pub fn login_page(csrf: &str, error: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            @if let Some(error) = error { p class="error" role="alert" id="login-error" { (error) } }
            form method="post" action="/ui/login" class="stacked" id="token-login" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="method" value="token";
                label for="token" { "Token" }
                input id="token" name="token" type="password" required autocomplete="off" autofocus;
                button type="submit" { "Sign in" }
            }
            details {
                summary { "Sign in with a JWT (workload identity)" }
                form method="post" action="/ui/login" class="stacked" id="jwt-login" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="method" value="jwt";
                    label for="jwt-role" { "JWT role" }
                    input id="jwt-role" name="role" type="text" required autocomplete="off";
                    label for="jwt" { "JWT" }
                    textarea id="jwt" name="jwt" required rows="4" {}
                    button type="submit" { "Sign in with JWT" }
                }
            }
            p class="hint" { (PreEscaped("The token is kept only in an encrypted, HTTP-only cookie of this browser; the session ends with the token.")) }
        },
    )
}

/// The live leases on connection `name` with their users (each looked up: the connection is
/// recorded on the lease, whatever its role points at now).
async fn leases_on_connection(
    console: &Console,
    name: &str,
) -> Result<(Vec<(String, String)>, bool), Answer> {
    let live = live_leases(console, None, None).await?;
    let ids: Vec<&String> = live.values().flatten().collect();
    let complete = ids.len() <= LOOKUP_CAP;
    let mut found = vec![];
    for id in ids.into_iter().take(LOOKUP_CAP) {
        if let Some(data) = lookup(console, id).await {
            if str_of(&data, "connection") == name {
                found.push((id.clone(), str_of(&data, "username").to_owned()));
            }
        }
    }
    Ok((found, complete))
}

/// `GET /ui/connections/:name/revoke`: how many leases and users revoking everything on the
/// connection drops, before it does.
pub async fn confirm_revoke_connection(console: Console, Path(name): Path<String>) -> Response {
    let name = match ConnectionName::parse(name) {
        Ok(name) => name,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Bad connection name",
                &e.to_string(),
            )
        }
    };
    let (leases, complete) = match leases_on_connection(&console, &name).await {
        Ok(found) => found,
        Err(answer) => return api_failure(&console, "Revoke a connection's leases", &answer),
    };
    let count = leases.len();
    respond(
        &format!("Revoke every lease on connection {name}?"),
        &console,
        html! {
            @if !complete {
                p class="warning" { "More than " (LOOKUP_CAP) " live leases: only the first " (LOOKUP_CAP) " were examined; revoke again afterwards." }
            }
            @if count == 0 {
                p class="empty" { "Connection " strong { (name) } " has no live leases: there is nothing to revoke." }
                p { a href="/ui/connections" { "Back to connections" } }
            } @else {
                p class="warning" role="alert" {
                    "This revokes " strong id="lease-count" { (count) " lease" @if count != 1 { "s" } }
                    " and drops " strong id="user-count" { (count) " database user" @if count != 1 { "s" } }
                    " on " (name) " now. Services using them lose their logins at once."
                }
                details { summary { "Users that will be dropped" }
                    ul { @for (_, user) in &leases { li { code { (user) } } } } }
                form method="post" action={ "/ui/connections/" (name) "/revoke" } {
                    (csrf_field(&console.session))
                    button type="submit" class="danger" { "Revoke " (count) " lease" @if count != 1 { "s" } " on " (name) }
                    " "
                    a href="/ui/connections" { "Cancel" }
                }
            }
        },
    )
}

/// `POST /ui/connections/:name/revoke`: `PUT sys/leases/revoke` for each live lease on the
/// connection (the API has no revoke-by-connection; each revocation is decided and audited
/// on its own).
pub async fn revoke_connection(
    console: Console,
    Path(name): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Some(refused) = console.csrf_refusal(form.csrf.as_deref()) {
        return refused;
    }
    let name = match ConnectionName::parse(name) {
        Ok(name) => name,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Bad connection name",
                &e.to_string(),
            )
        }
    };
    let (leases, _) = match leases_on_connection(&console, &name).await {
        Ok(found) => found,
        Err(answer) => return api_failure(&console, "Revoke a connection's leases", &answer),
    };
    let mut failures = vec![];
    for (id, _) in &leases {
        let answer = console
            .call("PUT", "sys/leases/revoke", Some(json!({ "lease_id": id })))
            .await;
        if !answer.ok() {
            failures.push((id.clone(), refusal_text(&answer), answer.status));
        }
    }
    if failures.is_empty() {
        return Redirect::to("/ui/connections?done=connection-revoked").into_response();
    }
    let mut response = respond(
        "Some leases were not revoked",
        &console,
        html! {
            p class="error" role="alert" { (leases.len() - failures.len()) " of " (leases.len()) " leases were revoked; these were not:" }
            ul { @for (id, why, _) in &failures { li { code { (id) } ": " (why) } } }
            p { a href="/ui/leases?state=irrevocable" { "Leases whose revocation keeps failing" } }
        },
    );
    // The first failure's status: a refusal by policy stays a 403.
    *response.status_mut() = failures[0].2;
    response
}

#[cfg(test)]
mod tests {
    use super::duration_field;

    /// What the edit form shows is read back by the API as the same duration.
    #[test]
    fn form_durations_round_trip_through_the_api_s_parser() {
        for secs in [1, 59, 60, 90, 3600, 5400, 86_400, 90_061, 604_800] {
            let text = duration_field(secs);
            let parsed = crate::ttl::parse_duration_str("rotation_period", &text).unwrap();
            assert_eq!(parsed.as_secs(), secs, "{text}");
        }
        assert_eq!(duration_field(86_400), "1d");
        assert_eq!(duration_field(5400), "1h30m");
    }
}
