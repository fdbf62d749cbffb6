//! The built-in token service (`auth.mode = "token"`): `GET /token` as docker, containerd and
//! skopeo call it (Basic credentials, `service`, one `scope` per scope, `offline_token`), and
//! the OAuth2 form `POST /token` (`grant_type=password` or `refresh_token`).
//!
//! The grant is the part of each requested scope the rules allow: asking for `pull,push` where
//! only `pull` is allowed gets a token for `pull`, not an error. Refresh tokens are JWTs too,
//! bound to the user's htpasswd entry, so changing a password or removing the user revokes
//! them.

use bytes::Bytes;
use http::header::WWW_AUTHENTICATE;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::token::{AccessEntry, Audience, Claims, Expect};
use super::{
    Auth, Identity, LoginFailure, Peer, Presented, Resource, State, action_name, now_secs, presented,
    too_many,
};
use crate::config::{Action, AuthMode};
use crate::error::{ErrorCode, RegistryError, Result};
use crate::http::{Body, RequestBody, json, query_pairs, query_value};

/// The largest `POST /token` form read.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A parsed `type:name:actions` scope.
#[derive(Debug, PartialEq, Eq)]
struct Scope {
    resource: Resource,
    actions: Vec<Action>,
}

/// Parses one scope. Unknown resource types and invalid names give `None` (nothing granted).
fn parse_scope(text: &str) -> Option<Scope> {
    let (kind, rest) = text.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<Action> = actions
        .split(',')
        .filter_map(|a| match a {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            "*" => Some(Action::All),
            _ => None,
        })
        .collect();
    // `repository(plugin)` and the like are classes of repository.
    let kind = kind.split('(').next().unwrap_or(kind);
    let resource = match (kind, name) {
        ("repository", name) => {
            name.parse::<rbuild_oci::RepositoryName>().ok()?;
            Resource::Repository(name.to_owned())
        }
        ("registry", "catalog") => Resource::Catalog,
        _ => return None,
    };
    Some(Scope { resource, actions })
}

/// `application/x-www-form-urlencoded` pairs (`+` is a space).
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body).replace('+', "%20");
    query_pairs(Some(&text))
}

/// What the token service hands out.
struct Issued {
    token: String,
    expires_in: u64,
    issued_at: String,
    scope: String,
    refresh_token: Option<String>,
}

#[derive(Serialize)]
struct TokenReply<'a> {
    token: &'a str,
    access_token: &'a str,
    expires_in: u64,
    issued_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

#[derive(Serialize)]
struct OAuthReply<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    issued_at: &'a str,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

/// An OAuth2 error reply (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "error": error, "error_description": description }),
        Vec::new(),
    )
}

impl Auth {
    /// `GET` or `POST /token`. Nothing here writes to storage.
    pub(crate) async fn token_endpoint(
        &self,
        parts: &http::request::Parts,
        body: RequestBody,
        peer: &Peer,
    ) -> Result<Response<Body>> {
        if self.config.mode != AuthMode::Token {
            return Err(RegistryError::new(ErrorCode::Unsupported, "no such endpoint")
                .with_status(StatusCode::NOT_FOUND));
        }
        match parts.method {
            Method::GET => self.token_get(parts, peer).await,
            Method::POST => Ok(self.token_post(body, peer).await),
            _ => Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!("method {} is not allowed on /token", parts.method),
            )),
        }
    }

    fn check_service(&self, service: Option<&str>) -> std::result::Result<(), String> {
        match service {
            Some(s) if !s.is_empty() && s != self.config.token.service => Err(format!(
                "service {s:?} is not this registry's ({:?})",
                self.config.token.service
            )),
            _ => Ok(()),
        }
    }

    pub(super) async fn token_get(
        &self,
        parts: &http::request::Parts,
        peer: &Peer,
    ) -> Result<Response<Body>> {
        let query = query_pairs(parts.uri.query().map(|q| q.replace('+', "%20")).as_deref());
        self.check_service(query_value(&query, "service")).map_err(|m| {
            RegistryError::new(ErrorCode::Unsupported, m).with_status(StatusCode::BAD_REQUEST)
        })?;
        let state = self.state();
        let unauthorized = |message: &str| {
            RegistryError::new(ErrorCode::Unauthorized, message).with_header(
                WWW_AUTHENTICATE,
                format!("Basic realm=\"{}\"", self.config.token.service),
            )
        };
        let who = match presented(parts) {
            Presented::None => Identity::Anonymous,
            Presented::Basic(user, password) => match self.login(&state, &user, &password, peer).await {
                Ok(who) => who,
                Err(LoginFailure::Limited(wait)) => return Err(too_many(wait)),
                Err(LoginFailure::Invalid) => return Err(unauthorized("invalid username or password")),
            },
            Presented::Bearer(_) | Presented::Unusable => {
                return Err(unauthorized("the token service takes Basic credentials"));
            }
        };
        if let (Some(account), Identity::User(user)) = (query_value(&query, "account"), &who)
            && !account.is_empty()
            && account != user
        {
            return Err(RegistryError::new(
                ErrorCode::Denied,
                format!("account {account:?} does not match the credentials' user"),
            )
            .with_status(StatusCode::BAD_REQUEST));
        }
        let scopes: Vec<&str> = query
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' '))
            .filter(|s| !s.is_empty())
            .collect();
        let offline = query_value(&query, "offline_token") == Some("true");
        let issued = self.issue(&state, &who, &scopes, offline)?;
        let reply = TokenReply {
            token: &issued.token,
            access_token: &issued.token,
            expires_in: issued.expires_in,
            issued_at: &issued.issued_at,
            refresh_token: issued.refresh_token.as_deref(),
        };
        Ok(json(StatusCode::OK, &reply, Vec::new()))
    }

    async fn token_post(&self, body: RequestBody, peer: &Peer) -> Response<Body> {
        let bytes: Bytes = match Limited::new(body, MAX_FORM_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the form is too large or was cut off",
                );
            }
        };
        let form = form_pairs(&bytes);
        let field = |name: &str| query_value(&form, name).unwrap_or("");
        if let Err(message) = self.check_service(Some(field("service"))) {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &message);
        }
        let state = self.state();
        let who = match field("grant_type") {
            "password" => match self
                .login(&state, field("username"), field("password"), peer)
                .await
            {
                Ok(who) => who,
                Err(LoginFailure::Limited(wait)) => {
                    let mut response = crate::http::error_response(&too_many(wait));
                    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                    return response;
                }
                Err(LoginFailure::Invalid) => {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_grant",
                        "invalid username or password",
                    );
                }
            },
            "refresh_token" => match self.refresh_identity(&state, field("refresh_token")) {
                Some(who) => who,
                None => {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_grant",
                        "the refresh token is invalid or expired; log in again",
                    );
                }
            },
            other => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    &format!("grant_type {other:?}: use password or refresh_token"),
                );
            }
        };
        let scopes: Vec<&str> = field("scope").split(' ').filter(|s| !s.is_empty()).collect();
        let offline = field("access_type") == "offline";
        match self.issue(&state, &who, &scopes, offline) {
            Ok(issued) => {
                let reply = OAuthReply {
                    access_token: &issued.token,
                    token_type: "Bearer",
                    expires_in: issued.expires_in,
                    issued_at: &issued.issued_at,
                    scope: &issued.scope,
                    refresh_token: issued.refresh_token.as_deref(),
                };
                json(StatusCode::OK, &reply, Vec::new())
            }
            Err(e) => crate::http::error_response(&e),
        }
    }

    /// The user a refresh token of ours stands for, if it is still good.
    pub(super) fn refresh_identity(&self, state: &State, token: &str) -> Option<Identity> {
        let settings = &self.config.token;
        let expect = Expect {
            issuer: &settings.issuer,
            audience: &settings.service,
            leeway: 0,
            now: now_secs(),
            refresh: true,
        };
        let claims = super::token::verify(token, &state.keys, &expect)
            .map_err(|e| tracing::info!("refused a refresh token: {e}"))
            .ok()?;
        let entry = state.users.as_ref()?.entry(&claims.sub)?;
        let presented = claims.rbuild_refresh?;
        let expected = fingerprint(&claims.sub, entry);
        bool::from(presented.as_bytes().ct_eq(expected.as_bytes())).then_some(Identity::User(claims.sub))
    }

    /// Signs an access token granting what `who` holds of `scopes` (and a refresh token when
    /// `offline` and there is a user to bind it to).
    fn issue(&self, state: &State, who: &Identity, scopes: &[&str], offline: bool) -> Result<Issued> {
        let signer = state
            .signer
            .as_ref()
            .ok_or_else(|| RegistryError::internal("token service", "no signing key"))?;
        let mut access: Vec<AccessEntry> = Vec::new();
        for scope in scopes.iter().filter_map(|s| parse_scope(s)) {
            let granted = state.policy.grant(who, &scope.resource, &scope.actions);
            if granted.is_empty() {
                continue;
            }
            let (kind, name) = match &scope.resource {
                Resource::Catalog => ("registry", "catalog".to_owned()),
                Resource::Repository(name) => ("repository", name.clone()),
            };
            let actions: Vec<String> = granted.iter().map(|a| action_name(*a).to_owned()).collect();
            match access.iter_mut().find(|e| e.kind == kind && e.name == name) {
                Some(entry) => {
                    for action in actions {
                        if !entry.actions.contains(&action) {
                            entry.actions.push(action);
                        }
                    }
                }
                None => access.push(AccessEntry {
                    kind: kind.to_owned(),
                    name,
                    actions,
                }),
            }
        }
        let settings = &self.config.token;
        let now = now_secs();
        let ttl = settings.ttl_secs.max(60);
        let subject = match who {
            Identity::Anonymous => String::new(),
            Identity::User(user) => user.clone(),
        };
        let scope = access
            .iter()
            .map(|e| format!("{}:{}:{}", e.kind, e.name, e.actions.join(",")))
            .collect::<Vec<_>>()
            .join(" ");
        let claims = Claims {
            iss: settings.issuer.clone(),
            sub: subject.clone(),
            aud: Audience::One(settings.service.clone()),
            exp: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
            nbf: Some(now),
            iat: Some(now),
            jti: signer.random_id(),
            access,
            rbuild_refresh: None,
        };
        let sign_failed = |e: super::TokenError| RegistryError::internal("signing a token", e);
        let token = signer.sign(&claims).map_err(sign_failed)?;
        let entry = state.users.as_ref().and_then(|u| u.entry(&subject));
        let refresh_token = match entry {
            Some(entry) if offline && settings.refresh_ttl_secs > 0 => {
                let refresh = Claims {
                    exp: now.saturating_add(i64::try_from(settings.refresh_ttl_secs).unwrap_or(i64::MAX)),
                    jti: signer.random_id(),
                    access: Vec::new(),
                    rbuild_refresh: Some(fingerprint(&subject, entry)),
                    ..claims
                };
                Some(signer.sign(&refresh).map_err(sign_failed)?)
            }
            _ => None,
        };
        tracing::debug!("issued a token for {subject:?}: {scope}");
        Ok(Issued {
            token,
            expires_in: ttl,
            issued_at: rbuild_oci::time::rfc3339(now),
            scope,
            refresh_token,
        })
    }
}

/// Binds a refresh token to the user's current htpasswd entry.
fn fingerprint(user: &str, entry: &str) -> String {
    use base64::Engine as _;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in ["rbuild-refresh", user, entry] {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&context.finish().as_ref()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scopes() {
        assert_eq!(
            parse_scope("repository:a/b:pull,push"),
            Some(Scope {
                resource: Resource::Repository("a/b".into()),
                actions: vec![Action::Pull, Action::Push],
            })
        );
        assert_eq!(
            parse_scope("repository(plugin):a:pull").map(|s| s.resource),
            Some(Resource::Repository("a".into()))
        );
        assert_eq!(
            parse_scope("registry:catalog:*").map(|s| s.actions),
            Some(vec![Action::All])
        );
        assert_eq!(
            parse_scope("repository:a:pull,fly").map(|s| s.actions),
            Some(vec![Action::Pull])
        );
        for bad in [
            "",
            "repository",
            "repository:A:pull",
            "repository:a",
            "registry:other:*",
            "x:a:pull",
        ] {
            assert_eq!(parse_scope(bad), None, "{bad}");
        }
    }

    #[test]
    fn decodes_forms() {
        let form = form_pairs(
            b"grant_type=password&scope=repository%3Aa%3Apull+registry%3Acatalog%3A*&password=a%2Bb+c",
        );
        assert_eq!(
            query_value(&form, "scope"),
            Some("repository:a:pull registry:catalog:*")
        );
        assert_eq!(query_value(&form, "password"), Some("a+b c"));
    }
}
