//! Who may do what: authentication and authorization, decided before any handler runs.
//!
//! [`Auth`] is built from `[auth]` in the configuration and asked once per request, with what
//! the request needs (nothing for `/healthz`, any identity for `/v2/`, an action on a
//! repository, or the catalog). It answers with a [`Permit`] the handlers may consult (a blob
//! mount reads another repository), or with the refusal the client gets, so a refused request
//! never reaches storage. The modes:
//!
//! - `none`: everything is allowed.
//! - `htpasswd`: HTTP Basic against bcrypt entries ([`Htpasswd`]).
//! - `token`: the Docker registry token flow. The registry answers `401` with
//!   `WWW-Authenticate: Bearer realm=…,service=…,scope=…`; the client gets a token from the
//!   built-in service (`GET /token` with Basic credentials, or the OAuth2 `POST /token`
//!   form), which grants the part of the requested scopes the rules allow, as an ES256 JWT.
//! - `external`: the same, with tokens from another issuer, checked against its keys.
//!
//! What clients get, as they expect it: no or bad credentials → `401 UNAUTHORIZED` with the
//! challenge (`error="invalid_token"` for a bad token); a token that lacks a scope its user
//! could get → `401` with `error="insufficient_scope"`; an authenticated user whom the rules do
//! not allow → `403 DENIED`; too many failed logins → `429 TOOMANYREQUESTS`.
//! [`rules`](Policy) describes authorization.
//!
//! Why one long file: it is the decision a request meets before any handler, in the order it
//! is made (what the route needs, who is asking, the permit or the challenge); the mechanisms
//! it calls live in `htpasswd`, [`token`], `rules` and `limit`.

mod der;
mod htpasswd;
mod limit;
mod rules;
mod service;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::Method;
use http::header::{AUTHORIZATION, HOST, RETRY_AFTER, WWW_AUTHENTICATE};

pub use htpasswd::{
    DEFAULT_COST as DEFAULT_BCRYPT_COST, EntryChange, Htpasswd, INVALID_USER, MIN_COST as MIN_BCRYPT_COST,
    hash_password, is_valid_user, set_entry,
};
pub use rules::Policy;

use crate::config::{Action, AuthConfig, AuthMode};
use crate::error::{ErrorCode, RegistryError};
use crate::route::Route;
use htpasswd::PasswordCheck;
use limit::LoginLimiter;
use token::{AccessEntry, Signer, TokenError, VerifyKey};

/// Why the auth configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An htpasswd line is not usable.
    #[error("{path}:{line}: {reason}")]
    Htpasswd {
        /// The file.
        path: PathBuf,
        /// The line (1-based; 0 for the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A key file is not usable.
    #[error("{path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The settings contradict each other or miss something.
    #[error("auth configuration: {0}")]
    Config(String),
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// No credentials.
    Anonymous,
    /// An authenticated user.
    User(String),
}

/// What an action applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A repository, by name.
    Repository(String),
    /// The repository list (`registry:catalog:*`).
    Catalog,
}

/// What a request needs before it may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health checks and the token endpoint.
    Nothing,
    /// Any valid identity: `/v2/`, which is how clients check their login, and `/metrics` on
    /// the main listener (a scraper logs in like any client; a separate listener needs none).
    Authenticated,
    /// An action on a resource.
    Access(Resource, Action),
}

impl Need {
    /// What a request for `route` with `method` needs. Uploads need push whatever the method;
    /// otherwise reads need pull, DELETE needs delete, and any other write needs push.
    pub fn of(route: &Route, method: &Method) -> Need {
        let repo = |name: &rbuild_oci::RepositoryName| Resource::Repository(name.to_string());
        let by_method = |name| {
            let action = match *method {
                Method::GET | Method::HEAD => Action::Pull,
                Method::DELETE => Action::Delete,
                _ => Action::Push,
            };
            Need::Access(repo(name), action)
        };
        match route {
            Route::Health | Route::Ready | Route::Token => Need::Nothing,
            Route::Base | Route::Metrics => Need::Authenticated,
            Route::Catalog => Need::Access(Resource::Catalog, Action::Pull),
            Route::UploadStart(name) | Route::Upload(name, _) => Need::Access(repo(name), Action::Push),
            Route::Tags(name)
            | Route::Manifest(name, _)
            | Route::Blob(name, _)
            | Route::Referrers(name, _) => by_method(name),
        }
    }

    /// The scope a token needs for this, as the challenge states it.
    fn scope(&self) -> Option<String> {
        match self {
            Need::Nothing | Need::Authenticated => None,
            Need::Access(Resource::Catalog, _) => Some("registry:catalog:*".to_owned()),
            Need::Access(Resource::Repository(name), action) => {
                let actions = match action {
                    Action::Pull => "pull",
                    // A client that pushes also reads what is there; ask for both at once.
                    Action::Push => "pull,push",
                    Action::Delete => "delete",
                    Action::All => "*",
                };
                Some(format!("repository:{name}:{actions}"))
            }
        }
    }
}

/// One request being decided: what it needs, its head, and where it came from.
struct Asked<'a> {
    need: &'a Need,
    parts: &'a http::request::Parts,
    peer: &'a Peer,
}

/// The connection a request came in on.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The client's address, when known.
    pub addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// What an authorized request may do besides what it was checked for (a mount reads a second
/// repository).
#[derive(Clone, Debug)]
pub struct Permit(PermitKind);

#[derive(Clone, Debug)]
enum PermitKind {
    Everything,
    Policy { who: Identity, policy: Arc<Policy> },
    Token { user: String, access: Vec<AccessEntry> },
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Pull => "pull",
        Action::Push => "push",
        Action::Delete => "delete",
        Action::All => "*",
    }
}

impl Permit {
    /// Allows everything (auth mode `none`).
    pub fn everything() -> Permit {
        Permit(PermitKind::Everything)
    }

    /// Whether auth is off, so nothing is ever refused.
    pub fn is_everything(&self) -> bool {
        matches!(self.0, PermitKind::Everything)
    }

    /// The authenticated user, if any (none without auth or for an anonymous client).
    pub fn user(&self) -> Option<&str> {
        match &self.0 {
            PermitKind::Policy {
                who: Identity::User(user),
                ..
            } => Some(user),
            PermitKind::Token { user, .. } if !user.is_empty() => Some(user),
            _ => None,
        }
    }

    /// Whether `action` on `resource` is allowed.
    pub fn allows(&self, resource: &Resource, action: Action) -> bool {
        match &self.0 {
            PermitKind::Everything => true,
            PermitKind::Policy { who, policy } => policy.allows(who, resource, action),
            PermitKind::Token { access, .. } => access.iter().any(|entry| {
                let (kind, name) = match resource {
                    Resource::Catalog => ("registry", "catalog"),
                    Resource::Repository(name) => ("repository", name.as_str()),
                };
                entry.kind == kind
                    && entry.name == name
                    && entry
                        .actions
                        .iter()
                        .any(|a| a == "*" || (*resource != Resource::Catalog && a == action_name(action)))
            }),
        }
    }
}

/// What auth reads from files, replaced as a whole on reload.
struct State {
    users: Option<Arc<Htpasswd>>,
    policy: Arc<Policy>,
    keys: Vec<VerifyKey>,
    signer: Option<Arc<Signer>>,
}

/// The registry's authentication and authorization.
pub struct Auth {
    config: AuthConfig,
    state: RwLock<Arc<State>>,
    passwords: PasswordCheck,
    limiter: Option<LoginLimiter>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mode", &self.config.mode)
            .finish_non_exhaustive()
    }
}

/// Credentials as presented in `Authorization`.
enum Presented {
    None,
    Basic(String, String),
    Bearer(String),
    Unusable,
}

fn presented(parts: &http::request::Parts) -> Presented {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Presented::None;
    };
    let Ok(value) = value.to_str() else {
        return Presented::Unusable;
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        basic_credentials(rest).map_or(Presented::Unusable, |(u, p)| Presented::Basic(u, p))
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        Presented::Bearer(rest.to_owned())
    } else {
        Presented::Unusable
    }
}

/// Decodes the `user:password` of a Basic credential.
pub(crate) fn basic_credentials(encoded: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Auth {
    /// No authentication: everything is allowed.
    pub fn none() -> Auth {
        Auth {
            config: AuthConfig::default(),
            state: RwLock::new(Arc::new(State {
                users: None,
                policy: Arc::new(Policy::default()),
                keys: Vec::new(),
                signer: None,
            })),
            passwords: PasswordCheck::default(),
            limiter: None,
        }
    }

    /// Auth as `config` describes it, with its files read.
    pub fn from_config(config: &AuthConfig) -> Result<Auth, AuthError> {
        if config.mode == AuthMode::None {
            return Ok(Auth::none());
        }
        let state = load(config, None)?;
        Ok(Auth {
            config: config.clone(),
            state: RwLock::new(Arc::new(state)),
            passwords: PasswordCheck::default(),
            limiter: config.login_limit.as_ref().map(LoginLimiter::new),
        })
    }

    /// Reads the htpasswd file and keys again (on SIGHUP). On error nothing changes.
    pub fn reload(&self) -> Result<(), AuthError> {
        if self.config.mode == AuthMode::None {
            return Ok(());
        }
        let state = load(&self.config, Some(&self.state()))?;
        match self.state.write() {
            Ok(mut current) => *current = Arc::new(state),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(state),
        }
        Ok(())
    }

    /// The mode in force.
    pub fn mode(&self) -> AuthMode {
        self.config.mode
    }

    /// A one-line description for the start-up log.
    pub fn describe(&self) -> String {
        let state = self.state();
        let users = state.users.as_ref().map_or(0, |u| u.len());
        match self.config.mode {
            AuthMode::None => "auth: none (every client may push, pull and delete)".to_owned(),
            AuthMode::Htpasswd => format!("auth: htpasswd (Basic), {users} users"),
            AuthMode::Token => format!(
                "auth: token service at /token (service {:?}), {users} users",
                self.config.token.service
            ),
            AuthMode::External => format!(
                "auth: tokens from {:?} (issuer {:?}), {} keys",
                self.config.token.realm.as_deref().unwrap_or_default(),
                self.config.token.issuer,
                state.keys.len()
            ),
        }
    }

    fn state(&self) -> Arc<State> {
        match self.state.read() {
            Ok(state) => state.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Decides whether a request for `route` with `parts` may do what it needs.
    pub async fn authorize(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        peer: &Peer,
    ) -> Result<Permit, RegistryError> {
        if self.config.mode == AuthMode::None {
            return Ok(Permit::everything());
        }
        let need = &Need::of(route, &parts.method);
        if *need == Need::Nothing {
            return Ok(Permit::everything());
        }
        let state = self.state();
        let asked = Asked { need, parts, peer };
        match self.config.mode {
            AuthMode::None => Ok(Permit::everything()),
            AuthMode::Htpasswd => self.authorize_basic(&state, &asked).await,
            AuthMode::Token | AuthMode::External => self.authorize_bearer(&state, &asked),
        }
    }

    async fn authorize_basic(&self, state: &State, asked: &Asked<'_>) -> Result<Permit, RegistryError> {
        let Asked { need, parts, peer } = *asked;
        let who = match presented(parts) {
            Presented::None => Identity::Anonymous,
            Presented::Basic(user, password) => match self.login(state, &user, &password, peer).await {
                Ok(who) => who,
                Err(LoginFailure::Limited(wait)) => return Err(too_many(wait)),
                Err(LoginFailure::Invalid) => {
                    return Err(self.challenge(asked, None, "invalid username or password"));
                }
            },
            Presented::Bearer(_) | Presented::Unusable => {
                return Err(self.challenge(asked, None, "use Basic authentication"));
            }
        };
        let permit = Permit(PermitKind::Policy {
            who: who.clone(),
            policy: state.policy.clone(),
        });
        match (need, &who) {
            (Need::Nothing, _) => Ok(permit),
            (Need::Authenticated, Identity::Anonymous) => {
                Err(self.challenge(asked, None, "authentication required"))
            }
            (Need::Authenticated, Identity::User(_)) => Ok(permit),
            (Need::Access(resource, action), _) if permit.allows(resource, *action) => Ok(permit),
            (Need::Access(..), Identity::Anonymous) => {
                Err(self.challenge(asked, None, "authentication required"))
            }
            (Need::Access(resource, action), Identity::User(user)) => Err(denied(user, resource, *action)),
        }
    }

    fn authorize_bearer(&self, state: &State, asked: &Asked<'_>) -> Result<Permit, RegistryError> {
        let Asked { need, parts, peer } = *asked;
        let token = match presented(parts) {
            Presented::Bearer(token) => token,
            Presented::None => {
                return Err(self.challenge(asked, None, "authentication required"));
            }
            Presented::Basic(..) | Presented::Unusable => {
                let message = "this registry takes Bearer tokens from its token service";
                return Err(self.challenge(asked, Some("invalid_request"), message));
            }
        };
        let claims = match self.verify_access_token(state, &token) {
            Ok(claims) => claims,
            Err(e) => {
                let from = peer.addr.map(|a| a.ip().to_string()).unwrap_or_default();
                tracing::info!("refused a token from {from}: {e}");
                let message = format!("invalid token: {e}");
                return Err(self.challenge(asked, Some("invalid_token"), &message));
            }
        };
        let permit = Permit(PermitKind::Token {
            user: claims.sub.clone(),
            access: claims.access,
        });
        match need {
            Need::Nothing | Need::Authenticated => Ok(permit),
            Need::Access(resource, action) if permit.allows(resource, *action) => Ok(permit),
            Need::Access(resource, action) => {
                // A known user whom no token could help is denied outright; otherwise the client
                // should fetch a token with the scope the challenge names.
                let who = Identity::User(claims.sub.clone());
                let known_user = self.config.mode == AuthMode::Token
                    && !claims.sub.is_empty()
                    && state
                        .users
                        .as_ref()
                        .is_some_and(|u| u.entry(&claims.sub).is_some());
                if known_user && !state.policy.allows(&who, resource, *action) {
                    Err(denied(&claims.sub, resource, *action))
                } else {
                    let message = "the token does not grant this access";
                    Err(self.challenge(asked, Some("insufficient_scope"), message))
                }
            }
        }
    }

    fn verify_access_token(&self, state: &State, token: &str) -> Result<token::Claims, TokenError> {
        let settings = &self.config.token;
        token::verify(
            token,
            &state.keys,
            &token::Expect {
                issuer: &settings.issuer,
                audience: &settings.service,
                leeway: i64::try_from(settings.leeway_secs).unwrap_or(0),
                now: now_secs(),
                refresh: false,
            },
        )
    }

    /// Checks a password, with the failed-login limit.
    async fn login(
        &self,
        state: &State,
        user: &str,
        password: &str,
        peer: &Peer,
    ) -> Result<Identity, LoginFailure> {
        let ip = peer.addr.map(|a| a.ip());
        if let Some(limiter) = &self.limiter
            && let Some(wait) = limiter.blocked(ip)
        {
            return Err(LoginFailure::Limited(wait));
        }
        let Some(users) = &state.users else {
            return Err(LoginFailure::Invalid);
        };
        if self.passwords.verify(users, user, password).await {
            if let Some(limiter) = &self.limiter {
                limiter.succeeded(ip);
            }
            Ok(Identity::User(user.to_owned()))
        } else {
            if let Some(limiter) = &self.limiter {
                limiter.failed(ip);
            }
            let from = ip.map(|ip| ip.to_string()).unwrap_or_default();
            tracing::warn!("failed login for user {user:?} from {from}");
            Err(LoginFailure::Invalid)
        }
    }

    /// The token endpoint clients are sent to.
    fn realm(&self, parts: &http::request::Parts, peer: &Peer) -> String {
        if let Some(realm) = &self.config.token.realm {
            return realm.clone();
        }
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            })
            .unwrap_or("localhost");
        let scheme = if peer.tls { "https" } else { "http" };
        format!("{scheme}://{host}/token")
    }

    /// A 401 with the challenge for this mode.
    fn challenge(&self, asked: &Asked<'_>, error: Option<&str>, message: &str) -> RegistryError {
        let Asked { need, parts, peer } = *asked;
        let header = match self.config.mode {
            AuthMode::Htpasswd | AuthMode::None => {
                format!("Basic realm=\"{}\"", self.config.token.service)
            }
            AuthMode::Token | AuthMode::External => {
                let mut header = format!(
                    "Bearer realm=\"{}\",service=\"{}\"",
                    self.realm(parts, peer),
                    self.config.token.service
                );
                if let Some(scope) = need.scope() {
                    header.push_str(&format!(",scope=\"{scope}\""));
                }
                if let Some(error) = error {
                    header.push_str(&format!(",error=\"{error}\""));
                }
                header
            }
        };
        let mut refusal =
            RegistryError::new(ErrorCode::Unauthorized, message).with_header(WWW_AUTHENTICATE, header);
        if let Need::Access(resource, action) = need {
            refusal = refusal.with_detail(access_detail(resource, *action));
        }
        refusal
    }
}

fn access_detail(resource: &Resource, action: Action) -> serde_json::Value {
    let (kind, name) = match resource {
        Resource::Catalog => ("registry", "catalog"),
        Resource::Repository(name) => ("repository", name.as_str()),
    };
    serde_json::json!([{ "Type": kind, "Name": name, "Action": action_name(action) }])
}

/// 403 DENIED: the user is known and the rules do not allow this.
fn denied(user: &str, resource: &Resource, action: Action) -> RegistryError {
    let what = match resource {
        Resource::Catalog => "read the catalog".to_owned(),
        Resource::Repository(name) => format!("{} {name}", action_name(action)),
    };
    RegistryError::new(
        ErrorCode::Denied,
        format!("requested access to the resource is denied: user {user:?} may not {what}"),
    )
    .with_detail(access_detail(resource, action))
}

/// Why a login failed.
enum LoginFailure {
    /// Too many failures from this address; wait this long.
    Limited(std::time::Duration),
    /// Wrong user or password.
    Invalid,
}

/// 429: too many failed logins from this address.
fn too_many(wait: std::time::Duration) -> RegistryError {
    let seconds = wait.as_secs() + 1;
    RegistryError::new(
        ErrorCode::TooManyRequests,
        format!("too many failed logins from this address; retry in {seconds}s"),
    )
    .with_header(RETRY_AFTER, seconds.to_string())
}

/// Reads what `config` names. A generated signing key survives reloads (`previous`).
fn load(config: &AuthConfig, previous: Option<&State>) -> Result<State, AuthError> {
    let token = &config.token;
    let quotable =
        |value: &str| !value.is_empty() && !value.chars().any(|c| c == '"' || c == '\\' || c.is_control());
    for (key, value) in [
        ("auth.token.service", Some(token.service.as_str())),
        ("auth.token.issuer", Some(token.issuer.as_str())),
        ("auth.token.realm", token.realm.as_deref()),
    ] {
        if let Some(value) = value
            && !quotable(value)
        {
            return Err(AuthError::Config(format!(
                "{key} = {value:?}: it goes into WWW-Authenticate, so it must be non-empty, without quotes, backslashes or control characters"
            )));
        }
    }
    let needs_users = matches!(config.mode, AuthMode::Htpasswd | AuthMode::Token);
    let users = match (&config.htpasswd, needs_users) {
        (Some(path), true) => Some(Arc::new(Htpasswd::load(path, config.max_bcrypt_cost)?)),
        (None, true) => {
            return Err(AuthError::Config(
                format!(
                    "auth.mode = {:?} needs users: set auth.htpasswd (or --htpasswd)",
                    config.mode
                )
                .to_lowercase(),
            ));
        }
        (_, false) => None,
    };
    let policy = Arc::new(Policy::from_config(config)?);
    let (signer, keys) = match config.mode {
        AuthMode::Token => {
            let signer = match (&token.key, previous.and_then(|p| p.signer.clone())) {
                (Some(path), _) => Arc::new(Signer::from_pem_file(path)?),
                (None, Some(generated)) => generated,
                (None, None) => {
                    tracing::warn!(
                        "auth.token.key is not set: signing tokens with a generated key; tokens will not survive a restart or work across replicas"
                    );
                    Arc::new(Signer::generate()?)
                }
            };
            let keys = vec![signer.verify_key()];
            (Some(signer), keys)
        }
        AuthMode::External => {
            if token.realm.is_none() {
                return Err(AuthError::Config(
                    "auth.mode = \"external\" needs auth.token.realm (the issuer's token endpoint)"
                        .to_owned(),
                ));
            }
            let mut keys = Vec::new();
            for path in &token.public_keys {
                keys.extend(VerifyKey::from_pem_file(path)?);
            }
            if let Some(path) = &token.jwks {
                keys.extend(VerifyKey::from_jwks(path)?);
            }
            if keys.is_empty() {
                return Err(AuthError::Config(
                    "auth.mode = \"external\" needs the issuer's keys: auth.token.public_keys or auth.token.jwks"
                        .to_owned(),
                ));
            }
            (None, keys)
        }
        AuthMode::None | AuthMode::Htpasswd => (None, Vec::new()),
    };
    Ok(State {
        users,
        policy,
        keys,
        signer,
    })
}

#[cfg(test)]
mod tests;
