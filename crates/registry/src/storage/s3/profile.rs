//! The AWS shared credentials file (`~/.aws/credentials`): the step of the AWS default chain
//! after the environment, where `aws configure` and most tooling leave a key.

use std::path::PathBuf;

use super::config::Credentials;

/// The credentials file's path: `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
pub fn path() -> Option<PathBuf> {
    match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE").filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".aws/credentials")),
    }
}

/// The profile to read: `AWS_PROFILE`, else `default`.
pub fn name() -> String {
    std::env::var("AWS_PROFILE")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// The key of `profile` in a credentials file's text: `None` when the profile is absent or
/// lacks either half of the key.
pub fn credentials(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let (mut key_id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            continue;
        }
        let Some((key, value)) = line.split_once('=').filter(|_| in_profile) else {
            continue;
        };
        let value = Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        match key.trim() {
            "aws_access_key_id" => key_id = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            _ => {}
        }
    }
    Some(Credentials {
        key_id: key_id?,
        secret: secret?,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# written by aws configure
[default]
aws_access_key_id = AKIDEFAULT
aws_secret_access_key = secret-default

[ci]
aws_access_key_id=AKICI
aws_secret_access_key=secret-ci
aws_session_token = token-ci
; a profile with half a key
[broken]
aws_access_key_id = AKIBROKEN
";

    #[test]
    fn a_profile_gives_its_own_key() {
        let default = credentials(FILE, "default").unwrap();
        assert_eq!(
            (default.key_id.as_str(), default.secret.as_str()),
            ("AKIDEFAULT", "secret-default")
        );
        assert_eq!(default.token, None);
        let ci = credentials(FILE, "ci").unwrap();
        assert_eq!((ci.key_id.as_str(), ci.secret.as_str()), ("AKICI", "secret-ci"));
        assert_eq!(ci.token.as_deref(), Some("token-ci"));
    }

    #[test]
    fn a_missing_or_half_profile_gives_none() {
        assert!(credentials(FILE, "absent").is_none());
        assert!(credentials(FILE, "broken").is_none());
        assert!(credentials("", "default").is_none());
    }
}
