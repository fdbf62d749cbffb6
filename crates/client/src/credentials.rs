//! Registry credentials, kept exactly where and how `docker login` keeps them.
//!
//! The docker config directory (`$DOCKER_CONFIG`, else `~/.docker`) holds `config.json`:
//!
//! ```json
//! {
//!   "auths": { "https://index.docker.io/v1/": { "auth": "dXNlcjpwYXNz" }, "ghcr.io": {} },
//!   "credsStore": "desktop",
//!   "credHelpers": { "123.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login" }
//! }
//! ```
//!
//! Reading follows docker's CLI: a `credHelpers` entry for the registry wins, else `credsStore`,
//! and either one means running `docker-credential-<name> get` with the server address on
//! stdin (the file's `auths` entry is then not used for secrets). Without a helper, the `auths`
//! entry is used: `auth` (base64 `user:password`), or `username`/`password`, plus
//! `identitytoken` (an OAuth2 refresh token). A helper's `Username` of `<token>` means its
//! `Secret` is an identity token.
//!
//! Docker Hub's server address is `https://index.docker.io/v1/`; every other registry's is its
//! `host[:port]`. Keys are matched after docker's normalisation (scheme and path dropped).
//!
//! [`store`] and [`erase`] write the file the way `docker login` and `docker logout` do, so
//! docker and rbuild share one login.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rbuild_oci::atomic::{WriteOptions, write_atomic_with};
use serde_json::{Map, Value};

/// Docker Hub's server address in `config.json` and for credential helpers.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// The username a credential helper returns when its secret is an identity token.
const TOKEN_USERNAME: &str = "<token>";

/// Where a client's credentials for a registry come from: errors name it and say how to
/// correct them there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialOrigin {
    /// docker's `config.json` (or the helper it names) in this directory, which `rbuild login`
    /// writes.
    DockerConfig(PathBuf),
    /// Given by the caller: `described` names them, `remedy` says how to correct them.
    Given {
        /// What they are (`the credentials given`).
        described: String,
        /// What to do when the registry rejects them.
        remedy: String,
    },
}

impl CredentialOrigin {
    /// What the credentials are, in an error message.
    pub fn describe(&self) -> String {
        match self {
            CredentialOrigin::DockerConfig(dir) => dir.join("config.json").display().to_string(),
            CredentialOrigin::Given { described, .. } => described.clone(),
        }
    }

    /// What to do when `registry` rejects them.
    pub fn remedy(&self, registry: &str) -> String {
        match self {
            CredentialOrigin::DockerConfig(_) => format!("run `rbuild login {registry}` again"),
            CredentialOrigin::Given { remedy, .. } => remedy.clone(),
        }
    }
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A username and password (or personal access token), sent as Basic auth.
    Password {
        /// The username.
        username: String,
        /// The password or access token.
        password: String,
    },
    /// An OAuth2 refresh token, exchanged at the registry's token endpoint.
    IdentityToken {
        /// The username, if one was recorded.
        username: Option<String>,
        /// The refresh token.
        token: String,
    },
}

impl std::fmt::Debug for Credential {
    /// Never prints secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Password { username, .. } => write!(f, "Password({username:?}, <redacted>)"),
            Credential::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username:?}, <redacted>)")
            }
        }
    }
}

/// Why credentials could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// `config.json` could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `config.json` is not what docker writes.
    #[error("{path}: not a valid docker config file: {reason}")]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A credential helper could not be run or failed.
    #[error(transparent)]
    Helper(Box<HelperError>),
}

/// A credential helper could not be run or failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "credential helper docker-credential-{helper} ({configured_by} in {config}) failed to {action} credentials for {server}: {reason}"
)]
pub struct HelperError {
    /// The helper's name (`desktop`, `ecr-login`, …).
    pub helper: String,
    /// `credsStore` or `credHelpers`.
    pub configured_by: &'static str,
    /// The config file that named it.
    pub config: PathBuf,
    /// `get`, `store` or `erase`.
    pub action: &'static str,
    /// The server address.
    pub server: String,
    /// What went wrong, with the fix where there is one.
    pub reason: String,
}

/// The docker config directory: `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn default_config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    home.join(".docker")
}

/// The server address docker files a registry's credentials under: Docker Hub's v1 URL for
/// `docker.io` (and its aliases), else the registry's `host[:port]`.
pub fn server_address(registry: &str) -> String {
    let host = hostname(registry);
    if is_docker_hub(&host) {
        DOCKER_HUB_SERVER.to_owned()
    } else {
        host
    }
}

/// Docker's `ConvertToHostname`: drops `http://`/`https://` and everything from the first `/`.
pub fn hostname(server: &str) -> String {
    let s = server.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.split('/').next().unwrap_or(s).to_owned()
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
    )
}

/// A docker config directory and how to find its credential helpers.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    dir: PathBuf,
    helper_path: Option<OsString>,
}

impl Default for DockerConfig {
    /// The directory docker uses: see [`default_config_dir`].
    fn default() -> DockerConfig {
        DockerConfig::new(default_config_dir())
    }
}

impl DockerConfig {
    /// The config directory `dir` (which need not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> DockerConfig {
        DockerConfig {
            dir: dir.into(),
            helper_path: None,
        }
    }

    /// Looks `docker-credential-*` helpers up in `path` (a `PATH`-style list) instead of `$PATH`.
    pub fn with_helper_path(mut self, path: impl Into<OsString>) -> DockerConfig {
        self.helper_path = Some(path.into());
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The credentials docker would use for `registry` (as in a reference: `docker.io`,
    /// `ghcr.io`, `localhost:5000`), or `None` for anonymous access.
    pub fn get(&self, registry: &str) -> Result<Option<Credential>, CredentialsError> {
        let config = ConfigFile::load(&self.dir)?;
        let server = server_address(registry);
        if let Some((helper, configured_by)) = config.helper_for(&server) {
            return self.helper(&config.path, helper, configured_by).get(&server);
        }
        Ok(config.file_entry(&server))
    }

    /// Saves credentials the way `docker login` does: through the configured credential
    /// helper (leaving an empty `auths` entry in the file, as docker does), or as a base64
    /// `auth` entry in `config.json` (mode 0600). A `username` of `<token>` stores `secret` as
    /// an identity token.
    pub fn store(&self, registry: &str, username: &str, secret: &str) -> Result<(), CredentialsError> {
        let mut config = ConfigFile::load(&self.dir)?;
        let server = server_address(registry);
        let mut entry = Map::new();
        match config.helper_for(&server) {
            Some((helper, configured_by)) => {
                let request =
                    serde_json::json!({"ServerURL": server, "Username": username, "Secret": secret});
                self.helper(&config.path, helper, configured_by).run(
                    "store",
                    &server,
                    &request.to_string(),
                )?;
            }
            None if username == TOKEN_USERNAME => {
                entry.insert("identitytoken".to_owned(), Value::String(secret.to_owned()));
            }
            None => {
                entry.insert(
                    "auth".to_owned(),
                    Value::String(BASE64.encode(format!("{username}:{secret}"))),
                );
            }
        }
        let auths = config.auths_mut()?;
        auths.retain(|key, _| hostname(key) != hostname(&server) || key == &server);
        auths.insert(server, Value::Object(entry));
        config.save()
    }

    /// Removes credentials the way `docker logout` does: from the helper if one is configured,
    /// and from `config.json`. Returns whether the file had an entry for the registry.
    pub fn erase(&self, registry: &str) -> Result<bool, CredentialsError> {
        let mut config = ConfigFile::load(&self.dir)?;
        let server = server_address(registry);
        if let Some((helper, configured_by)) = config.helper_for(&server) {
            self.helper(&config.path, helper, configured_by)
                .run("erase", &server, &server)?;
        }
        let auths = config.auths_mut()?;
        let before = auths.len();
        auths.retain(|key, _| hostname(key) != hostname(&server) && key != &server);
        let removed = auths.len() != before;
        if removed {
            config.save()?;
        }
        Ok(removed)
    }

    fn helper<'a>(&'a self, config: &'a Path, name: String, configured_by: &'static str) -> Helper<'a> {
        Helper {
            name,
            configured_by,
            config,
            path: self.helper_path.as_deref(),
        }
    }
}

/// The credentials docker would use for `registry`, from the config in `config_dir`.
pub fn lookup(config_dir: &Path, registry: &str) -> Result<Option<Credential>, CredentialsError> {
    DockerConfig::new(config_dir).get(registry)
}

/// `docker login`: see [`DockerConfig::store`].
pub fn store(
    config_dir: &Path,
    registry: &str,
    username: &str,
    secret: &str,
) -> Result<(), CredentialsError> {
    DockerConfig::new(config_dir).store(registry, username, secret)
}

/// `docker logout`: see [`DockerConfig::erase`].
pub fn erase(config_dir: &Path, registry: &str) -> Result<bool, CredentialsError> {
    DockerConfig::new(config_dir).erase(registry)
}

/// `config.json`, kept as JSON so that fields rbuild does not know survive a rewrite. Read
/// through [`rbuild_oci::json::from_slice`], so a `null` member (Go's empty map or string) is
/// absent, as docker reads it, and is left out when the file is written back.
struct ConfigFile {
    path: PathBuf,
    root: Map<String, Value>,
}

impl ConfigFile {
    fn load(config_dir: &Path) -> Result<ConfigFile, CredentialsError> {
        let path = config_dir.join("config.json");
        let root = match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match rbuild_oci::json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => map,
                Ok(Value::Null) => Map::new(),
                Ok(_) => {
                    return Err(CredentialsError::InvalidConfig {
                        path,
                        reason: "expected a JSON object".to_owned(),
                    });
                }
                Err(e) => {
                    return Err(CredentialsError::InvalidConfig {
                        path,
                        reason: e.to_string(),
                    });
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Map::new(),
            Err(source) => return Err(CredentialsError::Io { path, source }),
        };
        Ok(ConfigFile { path, root })
    }

    /// The helper for `server`: `credHelpers` (by hostname or by server address), else
    /// `credsStore`.
    fn helper_for(&self, server: &str) -> Option<(String, &'static str)> {
        let host = hostname(server);
        if let Some(Value::Object(helpers)) = self.root.get("credHelpers") {
            let mut candidates = vec![server.to_owned(), host.clone()];
            if server == DOCKER_HUB_SERVER {
                candidates
                    .extend(["docker.io", "index.docker.io", "registry-1.docker.io"].map(str::to_owned));
            }
            for key in candidates {
                if let Some(Value::String(helper)) = helpers.get(&key)
                    && !helper.is_empty()
                {
                    return Some((helper.clone(), "credHelpers"));
                }
            }
        }
        match self.root.get("credsStore") {
            Some(Value::String(store)) if !store.is_empty() => Some((store.clone(), "credsStore")),
            _ => None,
        }
    }

    /// The `auths` entry for `server`: an exact key first, then any key with the same hostname.
    fn file_entry(&self, server: &str) -> Option<Credential> {
        let Some(Value::Object(auths)) = self.root.get("auths") else {
            return None;
        };
        let entry = auths.get(server).or_else(|| {
            let host = hostname(server);
            auths
                .iter()
                .find(|(key, _)| hostname(key) == host)
                .map(|(_, value)| value)
        })?;
        entry_credential(entry)
    }

    fn auths_mut(&mut self) -> Result<&mut Map<String, Value>, CredentialsError> {
        let auths = self
            .root
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        match auths {
            Value::Object(map) => Ok(map),
            _ => Err(CredentialsError::InvalidConfig {
                path: self.path.clone(),
                reason: "\"auths\" is not an object".to_owned(),
            }),
        }
    }

    /// Writes the file atomically with mode 0600 (it holds secrets).
    fn save(&self) -> Result<(), CredentialsError> {
        let io_err = |source| CredentialsError::Io {
            path: self.path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(self.root.clone()))
            .map_err(|e| io_err(io::Error::other(e)))?;
        bytes.push(b'\n');
        let options = WriteOptions {
            mode: Some(0o600),
            create_dir: true,
            ..WriteOptions::FLUSHED
        };
        write_atomic_with(&self.path, &bytes, options).map_err(io_err)
    }
}

/// Reads one `auths` entry: `auth` wins over `username`/`password`; `identitytoken` makes it a
/// token credential.
fn entry_credential(entry: &Value) -> Option<Credential> {
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (mut username, mut password) = (field("username"), field("password"));
    if let Some(auth) = field("auth")
        && let Ok(decoded) = BASE64.decode(auth.trim())
        && let Ok(decoded) = String::from_utf8(decoded)
        && let Some((user, pass)) = decoded.split_once(':')
    {
        username = Some(user.to_owned());
        password = Some(pass.trim_end_matches('\n').to_owned());
    }
    if let Some(token) = field("identitytoken") {
        return Some(Credential::IdentityToken { username, token });
    }
    match (username, password) {
        (Some(username), Some(password)) => Some(Credential::Password { username, password }),
        _ => None,
    }
}

/// One `docker-credential-<name>` program.
struct Helper<'a> {
    name: String,
    configured_by: &'static str,
    config: &'a Path,
    path: Option<&'a OsStr>,
}

impl Helper<'_> {
    fn fail(&self, action: &'static str, server: &str, reason: String) -> CredentialsError {
        CredentialsError::Helper(Box::new(HelperError {
            helper: self.name.clone(),
            configured_by: self.configured_by,
            config: self.config.to_owned(),
            action,
            server: server.to_owned(),
            reason,
        }))
    }

    /// `get`: `{"Username","Secret"}` on stdout, or a "not found" message and a non-zero exit
    /// when it has nothing.
    fn get(&self, server: &str) -> Result<Option<Credential>, CredentialsError> {
        let Some(output) = self.run("get", server, server)? else {
            return Ok(None);
        };
        let reply: BTreeMap<String, Value> = rbuild_oci::json::from_slice(&output)
            .map_err(|e| self.fail("get", server, format!("its output is not JSON: {e}")))?;
        let text = |name: &str| {
            reply
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (username, secret) = (text("Username"), text("Secret"));
        if secret.is_empty() {
            return Ok(None);
        }
        if username == TOKEN_USERNAME {
            return Ok(Some(Credential::IdentityToken {
                username: None,
                token: secret,
            }));
        }
        Ok(Some(Credential::Password {
            username,
            password: secret,
        }))
    }

    /// Runs `action` with `input` on stdin. `Ok(None)` when it reports it has no credentials.
    fn run(
        &self,
        action: &'static str,
        server: &str,
        input: &str,
    ) -> Result<Option<Vec<u8>>, CredentialsError> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !self.name.starts_with('.');
        if !valid_name {
            return Err(self.fail(
                action,
                server,
                "the helper name is not a plain program name".to_owned(),
            ));
        }
        let program = format!("docker-credential-{}", self.name);
        let mut command = Command::new(&program);
        if let Some(path) = self.path {
            // On Unix, std looks the program up in the child's PATH when it is set.
            command.env("PATH", path);
        }
        let mut child = command
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                let reason = match e.kind() {
                    io::ErrorKind::NotFound => format!(
                        "{program} is not on PATH; install it, or remove {} from the config file",
                        self.configured_by
                    ),
                    _ => format!("cannot run {program}: {e}"),
                };
                self.fail(action, server, reason)
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading is reported through its exit status below.
            let _ = stdin.write_all(input.as_bytes());
        }
        let output = child
            .wait_with_output()
            .map_err(|e| self.fail(action, server, format!("waiting for {program}: {e}")))?;
        if output.status.success() {
            return Ok(Some(output.stdout));
        }
        let message = String::from_utf8_lossy(if output.stdout.is_empty() {
            &output.stderr
        } else {
            &output.stdout
        })
        .trim()
        .to_owned();
        if action != "store" && message.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        Err(self.fail(
            action,
            server,
            format!("{program} {action} exited with {}: {message}", output.status),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(dir: &Path, json: &str) {
        std::fs::write(dir.join("config.json"), json).unwrap();
    }

    #[test]
    fn normalises_server_addresses_like_docker() {
        assert_eq!(server_address("docker.io"), DOCKER_HUB_SERVER);
        assert_eq!(server_address("index.docker.io"), DOCKER_HUB_SERVER);
        assert_eq!(server_address("https://index.docker.io/v1/"), DOCKER_HUB_SERVER);
        assert_eq!(server_address("ghcr.io"), "ghcr.io");
        assert_eq!(server_address("https://localhost:5000/v2/"), "localhost:5000");
        assert_eq!(hostname("http://a.b:1/x/y"), "a.b:1");
    }

    #[test]
    fn reads_auth_username_password_and_identity_token() {
        let dir = tempfile::tempdir().unwrap();
        write_config(
            dir.path(),
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
                "https://ghcr.io/":{"username":"u","password":"p"},
                "quay.io":{"auth":"dTo=","identitytoken":"refresh"},
                "empty.example":{}
            }}"#,
        );
        let get = |r| lookup(dir.path(), r).unwrap();
        assert_eq!(
            get("docker.io"),
            Some(Credential::Password {
                username: "user".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(
            get("ghcr.io"),
            Some(Credential::Password {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(
            get("quay.io"),
            Some(Credential::IdentityToken {
                username: Some("u".into()),
                token: "refresh".into()
            })
        );
        assert_eq!(get("empty.example"), None);
        assert_eq!(get("other.example"), None);
    }

    #[test]
    fn missing_or_empty_config_means_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lookup(dir.path(), "ghcr.io").unwrap(), None);
        write_config(dir.path(), "  \n");
        assert_eq!(lookup(dir.path(), "ghcr.io").unwrap(), None);
        write_config(dir.path(), "[1]");
        assert!(lookup(dir.path(), "ghcr.io").is_err());
    }

    #[test]
    fn missing_helper_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), r#"{"credsStore":"rbuild-surely-missing"}"#);
        let err = lookup(dir.path(), "ghcr.io").unwrap_err().to_string();
        assert!(
            err.contains("docker-credential-rbuild-surely-missing is not on PATH"),
            "{err}"
        );
        write_config(dir.path(), r#"{"credHelpers":{"ghcr.io":"../evil"}}"#);
        assert!(lookup(dir.path(), "ghcr.io").is_err());
    }

    #[test]
    fn store_and_erase_like_docker_login_and_logout() {
        let dir = tempfile::tempdir().unwrap();
        write_config(
            dir.path(),
            r#"{"auths":{"https://ghcr.io":{"auth":"b2xkOm9sZA=="}},"psFormat":"table"}"#,
        );
        store(dir.path(), "ghcr.io", "me", "secret").unwrap();
        store(dir.path(), "docker.io", "hub", "pw").unwrap();
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["psFormat"], "table");
        assert_eq!(json["auths"]["ghcr.io"]["auth"], BASE64.encode("me:secret"));
        assert!(json["auths"].get("https://ghcr.io").is_none());
        assert_eq!(json["auths"][DOCKER_HUB_SERVER]["auth"], BASE64.encode("hub:pw"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("config.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            lookup(dir.path(), "ghcr.io").unwrap(),
            Some(Credential::Password {
                username: "me".into(),
                password: "secret".into()
            })
        );
        assert!(erase(dir.path(), "ghcr.io").unwrap());
        assert!(!erase(dir.path(), "ghcr.io").unwrap());
        assert_eq!(lookup(dir.path(), "ghcr.io").unwrap(), None);
        assert!(lookup(dir.path(), "docker.io").unwrap().is_some());
    }

    /// Go programs write empty fields as `null`; docker reads them as absent, and so does
    /// rbuild, for reading, `login` and `logout`. Unknown fields survive a rewrite; null ones
    /// are written back as absent, which every reader takes the same way.
    #[test]
    fn null_fields_are_absent() {
        let dir = tempfile::tempdir().unwrap();
        write_config(
            dir.path(),
            r#"{"auths":null,"credsStore":null,"credHelpers":null,"psFormat":"table","proxies":null}"#,
        );
        assert_eq!(lookup(dir.path(), "ghcr.io").unwrap(), None);
        store(dir.path(), "ghcr.io", "me", "secret").unwrap();
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"auths":{"ghcr.io":{"auth":BASE64.encode("me:secret")}},"psFormat":"table"})
        );

        write_config(
            dir.path(),
            r#"{"auths":{"ghcr.io":{"auth":null,"username":"u","password":"p","identitytoken":null,"email":null}},
                "credHelpers":{"ghcr.io":null}}"#,
        );
        let expected = Credential::Password {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(lookup(dir.path(), "ghcr.io").unwrap(), Some(expected));
        assert!(erase(dir.path(), "ghcr.io").unwrap());

        write_config(dir.path(), "null");
        assert_eq!(lookup(dir.path(), "ghcr.io").unwrap(), None);
        store(dir.path(), "ghcr.io", "me", "secret").unwrap();
        assert!(lookup(dir.path(), "ghcr.io").unwrap().is_some());
    }
}
