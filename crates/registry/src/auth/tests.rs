//! The decisions of [`Auth`], request by request.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::StatusCode;
use http_body_util::BodyExt as _;

use super::token::{Audience, Claims};
use super::*;
use crate::config::Rule;

const PEER: Peer = Peer {
    addr: None,
    tls: true,
};

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn parts(method: Method, path: &str, authorization: Option<&str>) -> http::request::Parts {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "registry.test:5000");
    if let Some(value) = authorization {
        builder = builder.header(AUTHORIZATION, value);
    }
    builder.body(()).unwrap().into_parts().0
}

/// Users alice (push on team/**), bob (pull everywhere); anonymous pulls public/*.
fn config(mode: AuthMode, dir: &Path) -> AuthConfig {
    let alice = hash_password("alice-pw", MIN_BCRYPT_COST).unwrap();
    let bob = hash_password("bob-pw", MIN_BCRYPT_COST).unwrap();
    let htpasswd = dir.join("htpasswd");
    std::fs::write(&htpasswd, format!("alice:{alice}\nbob:{bob}\n")).unwrap();
    let mut config = AuthConfig {
        mode,
        htpasswd: Some(htpasswd),
        ..AuthConfig::default()
    };
    config.rules = vec![
        Rule {
            repositories: vec!["team/**".into()],
            users: vec!["alice".into()],
            actions: vec![Action::Pull, Action::Push],
            catalog: true,
            ..Default::default()
        },
        Rule {
            repositories: vec!["**".into()],
            users: vec!["bob".into()],
            actions: vec![Action::Pull],
            ..Default::default()
        },
        Rule {
            repositories: vec!["public/*".into()],
            anonymous: true,
            actions: vec![Action::Pull],
            ..Default::default()
        },
    ];
    config
}

async fn decide(
    auth: &Auth,
    method: Method,
    path: &str,
    authorization: Option<&str>,
) -> Result<Permit, RegistryError> {
    let route = crate::route::parse(path).unwrap().unwrap();
    auth.authorize(&route, &parts(method, path, authorization), &PEER)
        .await
}

fn challenge(e: &RegistryError) -> &str {
    e.headers
        .iter()
        .find(|(name, _)| name == WWW_AUTHENTICATE)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

#[tokio::test]
async fn htpasswd_mode_answers_401_and_403_as_clients_expect() {
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::from_config(&config(AuthMode::Htpasswd, dir.path())).unwrap();
    let alice = basic("alice", "alice-pw");

    let e = decide(&auth, Method::GET, "/v2/", None).await.unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&e), "Basic realm=\"rbuild\"");
    assert!(decide(&auth, Method::GET, "/v2/", Some(&alice)).await.is_ok());

    let e = decide(&auth, Method::GET, "/v2/", Some(&basic("alice", "wrong")))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code),
        (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized)
    );
    let e = decide(&auth, Method::GET, "/v2/", Some(&basic("mallory", "alice-pw")))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    let e = decide(&auth, Method::GET, "/v2/", Some("Basic !!!"))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);

    let push = "/v2/team/app/blobs/uploads/";
    assert!(decide(&auth, Method::POST, push, Some(&alice)).await.is_ok());
    let e = decide(&auth, Method::POST, push, Some(&basic("bob", "bob-pw")))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, ErrorCode::Denied));
    let e = decide(&auth, Method::POST, push, None).await.unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);

    assert!(
        decide(&auth, Method::GET, "/v2/public/x/manifests/1", None)
            .await
            .is_ok()
    );
    let e = decide(&auth, Method::GET, "/v2/team/app/manifests/1", None)
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    let e = decide(&auth, Method::DELETE, "/v2/team/app/manifests/1", Some(&alice))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    assert!(
        decide(&auth, Method::GET, "/v2/_catalog", Some(&alice))
            .await
            .is_ok()
    );
    let e = decide(&auth, Method::GET, "/v2/_catalog", Some(&basic("bob", "bob-pw")))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    assert!(decide(&auth, Method::GET, "/healthz", None).await.is_ok());

    // A permit answers for other repositories too (a mount's source).
    let permit = decide(&auth, Method::POST, push, Some(&alice)).await.unwrap();
    assert!(permit.allows(&Resource::Repository("team/other".into()), Action::Pull));
    assert!(!permit.allows(&Resource::Repository("secret".into()), Action::Pull));
    assert!(!permit.is_everything());
}

#[tokio::test]
async fn failed_logins_are_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(AuthMode::Htpasswd, dir.path());
    config.login_limit = Some(crate::config::LoginLimit {
        max_failures: 2,
        window_secs: 60,
    });
    let auth = Auth::from_config(&config).unwrap();
    let wrong = basic("alice", "wrong");
    for _ in 0..2 {
        let e = decide(&auth, Method::GET, "/v2/", Some(&wrong))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    }
    let e = decide(&auth, Method::GET, "/v2/", Some(&basic("alice", "alice-pw")))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code),
        (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests)
    );
    assert!(e.headers.iter().any(|(name, _)| name == RETRY_AFTER));
}

/// Gets a token from the service as a client would.
async fn token_for(
    auth: &Auth,
    user: Option<(&str, &str)>,
    scopes: &[&str],
) -> Result<serde_json::Value, RegistryError> {
    let query: Vec<String> = std::iter::once("service=rbuild".to_owned())
        .chain(
            scopes
                .iter()
                .map(|s| format!("scope={}", crate::http::encode_component(s))),
        )
        .collect();
    let authorization = user.map(|(u, p)| basic(u, p));
    let request = parts(
        Method::GET,
        &format!("/token?{}", query.join("&")),
        authorization.as_deref(),
    );
    let response = auth.token_get(&request, &PEER).await?;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(serde_json::from_slice(&body).unwrap())
}

fn claims_of(token: &str) -> Claims {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn token_mode_grants_what_the_rules_allow_and_checks_every_token() {
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::from_config(&config(AuthMode::Token, dir.path())).unwrap();

    // No token: a Bearer challenge naming the scope the request needs.
    let e = decide(&auth, Method::POST, "/v2/team/app/blobs/uploads/", None)
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&e),
        "Bearer realm=\"https://registry.test:5000/token\",service=\"rbuild\",scope=\"repository:team/app:pull,push\""
    );
    let e = decide(&auth, Method::GET, "/v2/", Some(&basic("alice", "alice-pw")))
        .await
        .unwrap_err();
    assert!(
        challenge(&e).contains("error=\"invalid_request\""),
        "{}",
        challenge(&e)
    );

    // A partial grant is a token, not an error.
    let reply = token_for(&auth, Some(("bob", "bob-pw")), &["repository:team/app:pull,push"])
        .await
        .unwrap();
    assert_eq!(reply["expires_in"], 300);
    assert!(reply["issued_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(reply["token"], reply["access_token"]);
    let bob_token = reply["token"].as_str().unwrap().to_owned();
    let claims = claims_of(&bob_token);
    assert_eq!(claims.sub, "bob");
    assert_eq!(claims.access.len(), 1);
    assert_eq!(claims.access[0].actions, ["pull"]);
    let bearer = format!("Bearer {bob_token}");
    assert!(
        decide(&auth, Method::GET, "/v2/team/app/manifests/1", Some(&bearer))
            .await
            .is_ok()
    );
    assert!(decide(&auth, Method::GET, "/v2/", Some(&bearer)).await.is_ok());
    // Bob can never push there: 403. The token does not reach another repository: 401.
    let e = decide(&auth, Method::PUT, "/v2/team/app/manifests/1", Some(&bearer))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, ErrorCode::Denied));
    let e = decide(&auth, Method::GET, "/v2/other/manifests/1", Some(&bearer))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert!(challenge(&e).contains("error=\"insufficient_scope\""));

    // Alice's pull token for team/app, used to push: she could get a better token, so 401.
    let reply = token_for(&auth, Some(("alice", "alice-pw")), &["repository:team/app:pull"])
        .await
        .unwrap();
    let alice_pull = format!("Bearer {}", reply["token"].as_str().unwrap());
    let e = decide(&auth, Method::PUT, "/v2/team/app/manifests/1", Some(&alice_pull))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert!(challenge(&e).contains("insufficient_scope"));

    // Anonymous tokens carry only what anonymous clients may do.
    let reply = token_for(
        &auth,
        None,
        &["repository:public/x:pull,push", "repository:team/app:pull"],
    )
    .await
    .unwrap();
    let claims = claims_of(reply["token"].as_str().unwrap());
    assert_eq!(claims.sub, "");
    assert_eq!(claims.access.len(), 1);
    assert_eq!(
        (
            claims.access[0].name.as_str(),
            claims.access[0].actions.as_slice()
        ),
        ("public/x", &["pull".to_owned()][..])
    );
    let anonymous = format!("Bearer {}", reply["token"].as_str().unwrap());
    let e = decide(
        &auth,
        Method::POST,
        "/v2/public/x/blobs/uploads/",
        Some(&anonymous),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);

    // Wrong credentials, a wrong service, a mismatched account.
    let e = token_for(&auth, Some(("alice", "nope")), &[]).await.unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    let request = parts(Method::GET, "/token?service=other", None);
    assert_eq!(
        auth.token_get(&request, &PEER).await.unwrap_err().status,
        StatusCode::BAD_REQUEST
    );
    let request = parts(
        Method::GET,
        "/token?account=bob",
        Some(&basic("alice", "alice-pw")),
    );
    assert_eq!(
        auth.token_get(&request, &PEER).await.unwrap_err().status,
        StatusCode::BAD_REQUEST
    );

    // Catalog.
    let reply = token_for(&auth, Some(("alice", "alice-pw")), &["registry:catalog:*"])
        .await
        .unwrap();
    let catalog = format!("Bearer {}", reply["token"].as_str().unwrap());
    assert!(
        decide(&auth, Method::GET, "/v2/_catalog", Some(&catalog))
            .await
            .is_ok()
    );
    let e = decide(&auth, Method::GET, "/v2/_catalog", Some(&bearer))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_401() {
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::from_config(&config(AuthMode::Token, dir.path())).unwrap();
    let signer = auth.state().signer.clone().unwrap();
    let now = now_secs();
    let good = Claims {
        iss: "rbuild".into(),
        sub: "alice".into(),
        aud: Audience::One("rbuild".into()),
        exp: now + 300,
        nbf: Some(now),
        iat: Some(now),
        jti: "x".into(),
        access: vec![AccessEntry {
            kind: "repository".into(),
            name: "team/app".into(),
            actions: vec!["pull".into(), "push".into()],
        }],
        rbuild_refresh: None,
    };
    let path = "/v2/team/app/manifests/1";
    let ok = signer.sign(&good).unwrap();
    assert!(
        decide(&auth, Method::PUT, path, Some(&format!("Bearer {ok}")))
            .await
            .is_ok()
    );

    let expired = signer
        .sign(&Claims {
            exp: now - 3600,
            ..good.clone()
        })
        .unwrap();
    let audience = signer
        .sign(&Claims {
            aud: Audience::One("elsewhere".into()),
            ..good.clone()
        })
        .unwrap();
    let issuer = signer
        .sign(&Claims {
            iss: "mallory".into(),
            ..good.clone()
        })
        .unwrap();
    let forged = Signer::generate().unwrap().sign(&good).unwrap();
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap())
    );
    let refresh = signer
        .sign(&Claims {
            rbuild_refresh: Some("x".into()),
            ..good.clone()
        })
        .unwrap();
    for (what, token) in [
        ("expired", expired),
        ("audience", audience),
        ("issuer", issuer),
        ("forged", forged),
        ("alg=none", none),
        ("refresh token", refresh),
        ("garbage", "abc".to_owned()),
    ] {
        let e = decide(&auth, Method::PUT, path, Some(&format!("Bearer {token}")))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(
            challenge(&e).contains("error=\"invalid_token\""),
            "{what}: {}",
            challenge(&e)
        );
    }
    // The good token is useless on another repository.
    let e = decide(
        &auth,
        Method::GET,
        "/v2/team/other/manifests/1",
        Some(&format!("Bearer {ok}")),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_tokens_follow_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(AuthMode::Token, dir.path());
    let auth = Auth::from_config(&config).unwrap();
    let request = parts(
        Method::GET,
        "/token?service=rbuild&offline_token=true",
        Some(&basic("alice", "alice-pw")),
    );
    let response = auth.token_get(&request, &PEER).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let refresh = reply["refresh_token"].as_str().unwrap().to_owned();
    let state = auth.state();
    assert_eq!(
        auth.refresh_identity(&state, &refresh),
        Some(Identity::User("alice".into()))
    );
    assert_eq!(
        auth.refresh_identity(&state, reply["token"].as_str().unwrap()),
        None
    );
    // The refresh token is not an access token.
    let e = decide(&auth, Method::GET, "/v2/", Some(&format!("Bearer {refresh}")))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);

    // A new password (reloaded) revokes it; the signing key survives the reload.
    let htpasswd = config.htpasswd.clone().unwrap();
    let text = std::fs::read_to_string(&htpasswd).unwrap();
    let alice = hash_password("new-pw", MIN_BCRYPT_COST).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("alice:") {
                format!("alice:{alice}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&htpasswd, text).unwrap();
    auth.reload().unwrap();
    assert_eq!(auth.refresh_identity(&auth.state(), &refresh), None);
    let ok = format!("Bearer {}", reply["token"].as_str().unwrap());
    assert!(decide(&auth, Method::GET, "/v2/", Some(&ok)).await.is_ok());
}

#[test]
fn configuration_mistakes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(AuthMode::Htpasswd, dir.path());
    config.htpasswd = None;
    assert!(
        Auth::from_config(&config)
            .unwrap_err()
            .to_string()
            .contains("auth.htpasswd")
    );
    config.mode = AuthMode::External;
    let err = Auth::from_config(&config).unwrap_err().to_string();
    assert!(err.contains("realm"), "{err}");
    config.token.realm = Some("https://auth.example/token".into());
    let err = Auth::from_config(&config).unwrap_err().to_string();
    assert!(err.contains("public_keys"), "{err}");
    config.token.service = "a\",scope=\"x".into();
    let err = Auth::from_config(&config).unwrap_err().to_string();
    assert!(err.contains("auth.token.service"), "{err}");
}

#[tokio::test]
async fn external_tokens_are_checked_against_the_issuer_keys() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Signer::generate().unwrap();
    // The issuer's key as a JWKS file (EC P-256), and as a PEM public key.
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, token::tests_support::jwks(&issuer.verify_key())).unwrap();
    let pem = dir.path().join("issuer.pem");
    std::fs::write(&pem, token::tests_support::spki_pem(&issuer.verify_key())).unwrap();
    assert_eq!(
        VerifyKey::from_pem_file(&pem).unwrap()[0].kid_less(),
        issuer.verify_key().kid_less()
    );
    let mut config = AuthConfig {
        mode: AuthMode::External,
        ..AuthConfig::default()
    };
    config.token.realm = Some("https://auth.example/token".into());
    config.token.issuer = "auth.example".into();
    config.token.service = "registry.example".into();
    config.token.jwks = Some(jwks);
    let auth = Auth::from_config(&config).unwrap();
    let now = now_secs();
    let claims = Claims {
        iss: "auth.example".into(),
        sub: "ci".into(),
        aud: Audience::Many(vec!["registry.example".into()]),
        exp: now + 60,
        nbf: None,
        iat: None,
        jti: String::new(),
        access: vec![AccessEntry {
            kind: "repository".into(),
            name: "app".into(),
            actions: vec!["*".into()],
        }],
        rbuild_refresh: None,
    };
    let token = format!("Bearer {}", issuer.sign(&claims).unwrap());
    assert!(
        decide(&auth, Method::DELETE, "/v2/app/manifests/1", Some(&token))
            .await
            .is_ok()
    );
    let e = decide(&auth, Method::GET, "/v2/other/manifests/1", Some(&token))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge(&e).starts_with("Bearer realm=\"https://auth.example/token\",service=\"registry.example\"")
    );
    let other = format!("Bearer {}", Signer::generate().unwrap().sign(&claims).unwrap());
    assert_eq!(
        decide(&auth, Method::GET, "/v2/app/manifests/1", Some(&other))
            .await
            .unwrap_err()
            .status,
        StatusCode::UNAUTHORIZED
    );
}
