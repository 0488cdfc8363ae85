//! The route table: every endpoint is declared once, with the operation it performs and who may
//! call it, and that declaration is both what axum routes and what the policy gate checks.
//!
//! A decision taken in two places drifts (a gate checking `list` while the handler issued a
//! credential); here the handler is registered *under* its operation, so the gate cannot check
//! anything but what the handler does. A request whose verb has no declared endpoint on the
//! matched route is a 405 before any handler runs; in particular `LIST` exists only on list
//! endpoints and `HEAD` only where it has no side effects.

use std::collections::HashMap;
use std::sync::Arc;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::auth::policy::Operation;
use crate::AppState;

/// What a request asks, from its method and whether it asked for a listing (`LIST` or
/// `?list=true`, see [`super::canonical`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Read,
    List,
    /// POST or PUT: Vault treats both as a write.
    Write,
    Delete,
    /// HEAD: served only by endpoints declared side-effect free.
    Head,
}

impl Verb {
    /// The verb of a canonical request; `None` for methods no endpoint serves (PATCH, OPTIONS..).
    pub fn of(method: &Method, listing: bool) -> Option<Self> {
        match *method {
            Method::GET if listing => Some(Self::List),
            Method::GET => Some(Self::Read),
            Method::HEAD => Some(Self::Head),
            Method::POST | Method::PUT => Some(Self::Write),
            Method::DELETE => Some(Self::Delete),
            _ => None,
        }
    }

    /// The policy operation an endpoint of this verb performs.
    pub fn operation(self) -> Operation {
        match self {
            Self::Read | Self::Head => Operation::Read,
            Self::List => Operation::List,
            Self::Write => Operation::Write,
            Self::Delete => Operation::Delete,
        }
    }
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, unaudited: `sys/health`, which load balancers poll every few seconds.
    Public,
    /// Anyone, audited: a login, where the request body is the credential.
    Login,
    /// A token whose policies grant the operation on the canonical path.
    Policy,
    /// As `Policy`, and `sudo` on the path too: the endpoint acts on everything at once or on
    /// the audit trail itself.
    Sudo,
    /// Possession of the wrapping token the endpoint acts on (`sys/wrapping/unwrap`, `lookup`):
    /// the body's `token`, else the request's token. A client token sent alongside a body token
    /// must be valid and is named in the audit line; no policy is checked, since whoever holds
    /// the wrapping token could present it as the request's token anyway (as Vault allows).
    WrappingToken,
}

/// How a handler reads a body field: which of [`super::Body`]'s methods takes it. The OpenAPI
/// document derives the field's schema from it, and [`super::Body`] refuses (500, a programming
/// error) a take whose field and kind the route did not declare, so the document cannot drift
/// from what the handler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// [`super::Body::string`]: a string (a number is taken as its text).
    String,
    /// [`super::Body::secret`]: a string never echoed in an error.
    Secret,
    /// [`super::Body::string_list`]: a list of strings, or one string (split on commas where
    /// the field allows it).
    StringList,
    /// [`super::Body::boolean`]: `true`/`false` (or `"true"`, `"1"`...).
    Boolean,
    /// [`super::Body::integer`]: a non-negative integer.
    Integer,
    /// [`super::Body::duration`]: seconds, or a duration string such as `"1h"`.
    Duration,
    /// [`super::Body::object`]: a JSON object.
    Object,
}

/// One field of a request body: its name and how the handler reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyField {
    pub name: &'static str,
    pub kind: FieldKind,
}

/// Shorthand for a [`BodyField`] in the declarations of each module.
pub const fn field(name: &'static str, kind: FieldKind) -> BodyField {
    BodyField { name, kind }
}

/// What a write endpoint's request body may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySpec {
    /// Exactly these fields; any other is refused by name (or, for Vault fields Lessor does not
    /// implement, refused unless it holds its "off" value).
    Fields(&'static [BodyField]),
    /// Any JSON object, described in words (`sys/wrapping/wrap` wraps whatever it is given).
    Free(&'static str),
}

/// The body declaration of the endpoint a request reached, put in the request's extensions by
/// the gate for [`super::Body`].
#[derive(Debug, Clone, Copy)]
pub struct DeclaredBody(pub Option<BodySpec>);

/// What the gate knows of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub verb: Verb,
    pub access: Access,
    /// Its successful answer hands out a credential: counted by the anomaly rules, and revoked
    /// when the audit log cannot record the answer.
    pub issues_credential: bool,
    /// Query parameters it reads; any other is refused with a 400 naming it.
    pub query: &'static [&'static str],
    /// One line on what it does, for the OpenAPI document ([`super::openapi`]); without one the
    /// document says the operation and the path.
    pub summary: Option<&'static str>,
    /// The request body it reads; every write endpoint declares one (checked by a test).
    pub body: Option<BodySpec>,
}

/// Every declared endpoint, by route template and verb.
#[derive(Debug, Default)]
pub struct RouteTable(HashMap<(String, Verb), Endpoint>);

impl RouteTable {
    pub fn endpoint(&self, template: &str, verb: Verb) -> Option<Endpoint> {
        self.0.get(&(template.to_owned(), verb)).copied()
    }

    /// Every declared (template, verb), for tests that walk the whole API.
    pub fn endpoints(&self) -> impl Iterator<Item = (&str, Endpoint)> {
        self.0.iter().map(|((t, _), e)| (t.as_str(), *e))
    }
}

/// Builds the router and the table together, so one cannot hold what the other lacks.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    table: RouteTable,
    last: Option<(String, Verb)>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(
        mut self,
        template: &str,
        verb: Verb,
        method_router: axum::routing::MethodRouter<AppState>,
    ) -> Self {
        let key = (template.to_owned(), verb);
        let reads_conflict = match verb {
            Verb::Read => Some(Verb::List),
            Verb::List => Some(Verb::Read),
            _ => None,
        };
        // Both a read and a list are GETs; one route cannot serve both.
        assert!(
            !reads_conflict.is_some_and(|other| self.table.0.contains_key(&(key.0.clone(), other))),
            "{template}: a route is either read or listed, not both"
        );
        let endpoint = Endpoint {
            verb,
            access: Access::Policy,
            issues_credential: false,
            query: &[],
            summary: None,
            body: None,
        };
        assert!(
            self.table.0.insert(key.clone(), endpoint).is_none(),
            "{template} {verb:?} declared twice"
        );
        self.router = self.router.route(template, method_router);
        self.last = Some(key);
        self
    }

    /// `GET`: reads what the path names.
    pub fn read<H, T>(self, template: &str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(template, Verb::Read, get(handler))
    }

    /// `LIST` or `GET ?list=true`: lists the keys under the path.
    pub fn list<H, T>(self, template: &str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(template, Verb::List, get(handler))
    }

    /// `POST` and `PUT`.
    pub fn write<H, T>(self, template: &str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(
            template,
            Verb::Write,
            post(handler.clone()).merge(put(handler)),
        )
    }

    /// `DELETE`.
    pub fn delete<H, T>(self, template: &str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(template, Verb::Delete, delete(handler))
    }

    /// `HEAD` on the endpoint declared last (a read without side effects).
    pub fn also_head(mut self) -> Self {
        let (template, verb) = self.last.clone().expect("also_head follows an endpoint");
        assert_eq!(verb, Verb::Read, "{template}: HEAD only on a read");
        let mut endpoint = self.table.0[&(template.clone(), verb)];
        endpoint.verb = Verb::Head;
        self.table.0.insert((template, Verb::Head), endpoint);
        self
    }

    fn set_last(mut self, change: impl Fn(&mut Endpoint)) -> Self {
        let key = self.last.clone().expect("a modifier follows an endpoint");
        change(self.table.0.get_mut(&key).expect("declared"));
        if let Some(head) = self.table.0.get_mut(&(key.0, Verb::Head)) {
            change(head);
        }
        self
    }

    /// The endpoint declared last needs no token and is not audited.
    pub fn public(self) -> Self {
        self.set_last(|e| e.access = Access::Public)
    }

    /// The endpoint declared last needs no token (a login) and is audited.
    pub fn login(self) -> Self {
        self.set_last(|e| e.access = Access::Login)
    }

    /// The endpoint declared last is authorized by the wrapping token it acts on.
    pub fn wrapping_token(self) -> Self {
        self.set_last(|e| e.access = Access::WrappingToken)
    }

    /// The endpoint declared last needs `sudo` on its path as well.
    pub fn sudo(self) -> Self {
        self.set_last(|e| e.access = Access::Sudo)
    }

    /// The endpoint declared last hands out a credential.
    pub fn issues_credential(self) -> Self {
        self.set_last(|e| e.issues_credential = true)
    }

    /// The endpoint declared last reads these query parameters.
    pub fn query(self, names: &'static [&'static str]) -> Self {
        self.set_last(|e| e.query = names)
    }

    /// The endpoint declared last reads exactly these body fields.
    pub fn body(self, fields: &'static [BodyField]) -> Self {
        self.set_last(|e| e.body = Some(BodySpec::Fields(fields)))
    }

    /// The endpoint declared last takes any JSON object as its body.
    pub fn free_body(self, description: &'static str) -> Self {
        self.set_last(|e| e.body = Some(BodySpec::Free(description)))
    }

    /// The endpoint declared last, in one line, for the OpenAPI document.
    pub fn summary(self, summary: &'static str) -> Self {
        self.set_last(|e| e.summary = Some(summary))
    }

    pub fn merge(mut self, other: Routes) -> Self {
        for (key, endpoint) in other.table.0 {
            assert!(
                self.table.0.insert(key.clone(), endpoint).is_none(),
                "{key:?} declared twice"
            );
        }
        self.router = self.router.merge(other.router);
        self.last = None;
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, Arc<RouteTable>) {
        (self.router, Arc::new(self.table))
    }
}
