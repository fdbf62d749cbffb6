//! Users from an htpasswd file of bcrypt entries, and password checks that cost the same
//! whether or not the user exists.
//!
//! bcrypt is slow on purpose, and docker sends Basic credentials with every request under
//! htpasswd auth. So a successful check is remembered for a few minutes, keyed by an HMAC (with
//! a per-process random key) of the user, the password and the entry's hash: the password is
//! never kept, a changed entry misses the cache, and the lookup reveals nothing an attacker
//! could use without the key. At most as many bcrypt computations run at once as there are
//! cores, on the blocking pool, so a flood of logins cannot starve the async workers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::hmac;
use ring::rand::SystemRandom;
use tokio::sync::Semaphore;

use super::AuthError;

/// How long a verified password is remembered.
const VERIFIED_FOR: Duration = Duration::from_secs(300);
/// The most remembered verifications.
const CACHE_ENTRIES: usize = 4096;
/// The cost `rbuild htpasswd` uses unless told otherwise.
pub const DEFAULT_COST: u32 = 10;
/// bcrypt's lowest cost.
pub const MIN_COST: u32 = 4;

/// The users of an htpasswd file.
#[derive(Debug)]
pub struct Htpasswd {
    path: PathBuf,
    entries: HashMap<String, String>,
    /// A hash of a random password, checked for unknown users so they take as long.
    decoy: String,
}

impl Htpasswd {
    /// Reads `path`. Every entry must be bcrypt (`$2a$`, `$2b$`, `$2y$`) with a cost of at most
    /// `max_cost`; anything else is refused with its line number.
    pub fn load(path: &Path, max_cost: u32) -> Result<Htpasswd, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_owned(),
            source,
        })?;
        Htpasswd::parse(&text, path, max_cost)
    }

    /// Parses htpasswd text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path, max_cost: u32) -> Result<Htpasswd, AuthError> {
        let mut entries = HashMap::new();
        let mut decoy_cost = DEFAULT_COST.min(max_cost);
        for (index, line) in text.lines().enumerate() {
            let fail = |reason: String| AuthError::Htpasswd {
                path: path.to_owned(),
                line: index + 1,
                reason,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| fail("expected user:hash".to_owned()))?;
            if user.is_empty() {
                return Err(fail("empty user name".to_owned()));
            }
            let cost = bcrypt_cost(hash).map_err(&fail)?;
            if cost > max_cost {
                return Err(fail(format!(
                    "bcrypt cost {cost} is above auth.max_bcrypt_cost ({max_cost}); rehash with `rbuild htpasswd`"
                )));
            }
            if entries.insert(user.to_owned(), hash.to_owned()).is_some() {
                return Err(fail(format!("user {user:?} appears twice")));
            }
            if entries.len() == 1 {
                decoy_cost = cost;
            }
        }
        let decoy = bcrypt::hash(random_secret(), decoy_cost).map_err(|e| AuthError::Htpasswd {
            path: path.to_owned(),
            line: 0,
            reason: e.to_string(),
        })?;
        Ok(Htpasswd {
            path: path.to_owned(),
            entries,
            decoy,
        })
    }

    /// The file the users came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The stored hash of `user`.
    pub fn entry(&self, user: &str) -> Option<&str> {
        self.entries.get(user).map(String::as_str)
    }
}

/// The cost of a bcrypt hash, or why it is not one.
fn bcrypt_cost(hash: &str) -> Result<u32, String> {
    let not_bcrypt = || {
        "only bcrypt entries are supported (`htpasswd -B` or `rbuild htpasswd`); found another scheme"
            .to_owned()
    };
    let rest = ["$2a$", "$2b$", "$2y$"]
        .iter()
        .find_map(|prefix| hash.strip_prefix(prefix))
        .ok_or_else(not_bcrypt)?;
    let (cost, body) = rest.split_once('$').ok_or_else(not_bcrypt)?;
    let cost: u32 = cost.parse().map_err(|_| not_bcrypt())?;
    if body.len() != 53 || cost < MIN_COST {
        return Err("malformed bcrypt hash".to_owned());
    }
    Ok(cost)
}

fn random_secret() -> String {
    let mut bytes = [0u8; 24];
    let _ = ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A bcrypt entry for `password` in the `$2y$` form htpasswd and distribution use.
pub fn hash_password(password: &str, cost: u32) -> Result<String, bcrypt::BcryptError> {
    Ok(bcrypt::hash_with_result(password, cost)?.format_for_version(bcrypt::Version::TwoY))
}

/// Why [`is_valid_user`] refuses a name.
pub const INVALID_USER: &str = "user names cannot be empty or contain ':' or line breaks";

/// Whether an htpasswd line can hold `user` (the name ends at the first ':').
pub fn is_valid_user(user: &str) -> bool {
    !user.is_empty() && !user.contains([':', '\n', '\r'])
}

/// What [`set_entry`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryChange {
    /// The user had no entry.
    Added,
    /// The user's entry was replaced.
    Updated,
}

/// Sets `user`'s password in the htpasswd file at `path` — what `rbuild htpasswd -f` does: the
/// user's line added or replaced, every other line kept, the file created if missing. The file
/// holds password hashes, so it is written readable by its owner only, and replaced atomically
/// and durably: a server reloading it on SIGHUP, or a crash, never sees half a file.
pub fn set_entry(path: &Path, user: &str, password: &str, cost: u32) -> Result<EntryChange, AuthError> {
    let fail = |reason: String| AuthError::Htpasswd {
        path: path.to_owned(),
        line: 0,
        reason,
    };
    if !is_valid_user(user) {
        return Err(fail(INVALID_USER.to_owned()));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(AuthError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let hash = hash_password(password, cost).map_err(|e| fail(format!("hashing the password: {e}")))?;
    let (updated, change) = with_entry(&text, user, &format!("{user}:{hash}"));
    let options = rbuild_oci::atomic::WriteOptions {
        mode: Some(0o600),
        ..rbuild_oci::atomic::WriteOptions::FLUSHED
    };
    rbuild_oci::atomic::write_atomic_with(path, updated.as_bytes(), options)
        .map_err(|e| fail(format!("writing the file: {e}")))?;
    Ok(change)
}

/// `text` with `user`'s line replaced by `entry` (or `entry` appended), blank lines dropped.
fn with_entry(text: &str, user: &str, entry: &str) -> (String, EntryChange) {
    let mut out = String::new();
    let mut change = EntryChange::Added;
    for line in text.lines() {
        if line.split_once(':').is_some_and(|(u, _)| u == user) {
            if change == EntryChange::Added {
                out.push_str(entry);
                out.push('\n');
                change = EntryChange::Updated;
            }
        } else if !line.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    if change == EntryChange::Added {
        out.push_str(entry);
        out.push('\n');
    }
    (out, change)
}

/// Checks passwords against an [`Htpasswd`], with the cache and concurrency bound above.
pub struct PasswordCheck {
    key: hmac::Key,
    verified: Mutex<HashMap<Vec<u8>, Instant>>,
    permits: Arc<Semaphore>,
}

impl Default for PasswordCheck {
    fn default() -> PasswordCheck {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, random_secret().as_bytes()));
        PasswordCheck {
            key,
            verified: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(cores)),
        }
    }
}

impl PasswordCheck {
    fn cache_key(&self, user: &str, password: &str, hash: &str) -> Vec<u8> {
        let mut context = hmac::Context::with_key(&self.key);
        for part in [user, password, hash] {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part.as_bytes());
        }
        context.sign().as_ref().to_vec()
    }

    /// Whether `password` is `user`'s. Unknown users cost one bcrypt computation too.
    pub async fn verify(&self, users: &Htpasswd, user: &str, password: &str) -> bool {
        let (hash, known) = match users.entry(user) {
            Some(hash) => (hash.to_owned(), true),
            None => (users.decoy.clone(), false),
        };
        let key = self.cache_key(user, password, &hash);
        if known
            && let Ok(verified) = self.verified.lock()
            && verified.get(&key).is_some_and(|at| at.elapsed() < VERIFIED_FOR)
        {
            return true;
        }
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if matches && known {
            if let Ok(mut verified) = self.verified.lock() {
                if verified.len() >= CACHE_ENTRIES {
                    verified.retain(|_, at| at.elapsed() < VERIFIED_FOR);
                    if verified.len() >= CACHE_ENTRIES {
                        verified.clear();
                    }
                }
                verified.insert(key, Instant::now());
            }
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn entries_are_replaced_or_appended_and_other_lines_kept() {
        let entry = |text, user| with_entry(text, user, &format!("{user}:x"));
        assert_eq!(entry("", "a"), ("a:x\n".to_owned(), EntryChange::Added));
        assert_eq!(
            entry("a:1\nb:2\n", "a"),
            ("a:x\nb:2\n".to_owned(), EntryChange::Updated)
        );
        assert_eq!(entry("b:2", "a"), ("b:2\na:x\n".to_owned(), EntryChange::Added));
        assert_eq!(
            entry("ab:1\n", "a"),
            ("ab:1\na:x\n".to_owned(), EntryChange::Added)
        );
        assert_eq!(
            entry("# users\na:1\n\nc:3\na:2\n", "a"),
            ("# users\na:x\nc:3\n".to_owned(), EntryChange::Updated)
        );
    }

    #[tokio::test]
    async fn set_entry_writes_a_private_file_the_server_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        assert_eq!(
            set_entry(&path, "alice", "one", MIN_COST).unwrap(),
            EntryChange::Added
        );
        assert_eq!(
            set_entry(&path, "bob", "two", MIN_COST).unwrap(),
            EntryChange::Added
        );
        assert_eq!(
            set_entry(&path, "alice", "three", MIN_COST).unwrap(),
            EntryChange::Updated
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let users = Htpasswd::load(&path, 10).unwrap();
        assert_eq!(users.len(), 2);
        let check = PasswordCheck::default();
        assert!(check.verify(&users, "alice", "three").await);
        assert!(!check.verify(&users, "alice", "one").await);
        assert!(check.verify(&users, "bob", "two").await);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left beside it");
    }

    #[test]
    fn set_entry_refuses_names_htpasswd_cannot_hold_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "alice:$2y$04$abc\n").unwrap();
        for user in ["", "a:b", "a\nb", "a\rb"] {
            assert!(set_entry(&path, user, "pw", MIN_COST).is_err(), "{user:?}");
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "alice:$2y$04$abc\n");
    }

    #[tokio::test]
    async fn verifies_bcrypt_entries() {
        let alice = hash_password("secret", MIN_COST).unwrap();
        assert!(alice.starts_with("$2y$04$"), "{alice}");
        let text = format!(
            "# users\n\nalice:{alice}\nbob:$2a$04$n4Uy0eSnMfvnESYL.bLwuuj0U/ETSsoTpRT9GVk5bektyVVa5xnIi\n"
        );
        let users = Htpasswd::parse(&text, Path::new("h"), 10).unwrap();
        assert_eq!(users.len(), 2);
        let check = PasswordCheck::default();
        assert!(check.verify(&users, "alice", "secret").await);
        assert!(check.verify(&users, "alice", "secret").await, "cached");
        assert!(!check.verify(&users, "alice", "Secret").await);
        assert!(!check.verify(&users, "carol", "secret").await);
        assert!(!check.verify(&users, "", "").await);
    }

    #[test]
    fn refuses_other_schemes_costly_and_duplicate_entries() {
        let cases = [
            ("alice:$apr1$abc$def", "only bcrypt"),
            ("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "only bcrypt"),
            ("alice:plain", "only bcrypt"),
            ("alice", "user:hash"),
            (
                ":$2y$04$n4Uy0eSnMfvnESYL.bLwuuj0U/ETSsoTpRT9GVk5bektyVVa5xnIi",
                "empty user",
            ),
            ("alice:$2y$04$short", "malformed"),
            (
                "alice:$2y$15$n4Uy0eSnMfvnESYL.bLwuuj0U/ETSsoTpRT9GVk5bektyVVa5xnIi",
                "above",
            ),
            (
                "a:$2y$04$n4Uy0eSnMfvnESYL.bLwuuj0U/ETSsoTpRT9GVk5bektyVVa5xnIi\na:$2y$04$n4Uy0eSnMfvnESYL.bLwuuj0U/ETSsoTpRT9GVk5bektyVVa5xnIi",
                "twice",
            ),
        ];
        for (text, expected) in cases {
            let err = Htpasswd::parse(text, Path::new("h"), 14).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
