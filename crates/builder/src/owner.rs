//! `COPY --chown`: user and group names resolved through the stage's own `/etc/passwd` and
//! `/etc/group`, as BuildKit does (a name alone also takes the user's primary group; a
//! number alone is used for both).

use crate::error::{BuildError, OwnerKind, Result};
use crate::rootfs::RootfsView;

/// A resolved owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Owner {
    /// `root:root`, what COPY uses without `--chown`.
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

/// Finds `name` in a passwd- or group-format file: returns fields 2 and 3 (id and, for
/// passwd, the primary group).
fn lookup(file: &str, name: &str) -> Option<(u32, Option<u32>)> {
    file.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next();
        let id = fields.next()?.trim().parse().ok()?;
        let group = fields.next().and_then(|g| g.trim().parse().ok());
        Some((id, group))
    })
}

/// Resolves a `--chown` value (`user`, `user:group`, ids or names) in `rootfs`.
pub fn resolve(spec: &str, rootfs: &RootfsView) -> Result<Owner> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |path: &str| -> Result<Option<String>> {
        Ok(rootfs
            .read(path)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    };
    let mut owner = match user.parse::<u32>() {
        Ok(uid) => Owner { uid, gid: uid },
        Err(_) => {
            let passwd = read("/etc/passwd")?
                .ok_or_else(|| unknown(format!("--chown={spec}"), user, OwnerKind::User, true))?;
            match lookup(&passwd, user) {
                Some((uid, Some(gid))) => Owner { uid, gid },
                _ => {
                    return Err(unknown(format!("--chown={spec}"), user, OwnerKind::User, false));
                }
            }
        }
    };
    if let Some(group) = group {
        owner.gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = read("/etc/group")?
                    .ok_or_else(|| unknown(format!("--chown={spec}"), group, OwnerKind::Group, true))?;
                lookup(&groups, group)
                    .map(|(gid, _)| gid)
                    .ok_or_else(|| unknown(format!("--chown={spec}"), group, OwnerKind::Group, false))?
            }
        };
    }
    Ok(owner)
}

/// Who a RUN command runs as: `USER` resolved through the stage's files, as runc's user
/// lookup does (a name gives its primary group and every group listing it as a member; an id
/// unknown to /etc/passwd runs with group 0).
pub fn run_user(spec: &str, rootfs: &RootfsView) -> Result<(Owner, Vec<u32>)> {
    if spec.is_empty() {
        return Ok((Owner::ROOT, Vec::new()));
    }
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |path: &str| -> Result<String> {
        Ok(rootfs
            .read(path)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default())
    };
    let passwd = read("/etc/passwd")?;
    let entry = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let (name, uid, gid) = (
            *fields.first()?,
            fields.get(2)?.parse::<u32>().ok()?,
            fields.get(3)?.parse::<u32>().ok()?,
        );
        (name == user || uid.to_string() == user).then(|| (name.to_owned(), uid, gid))
    });
    let (name, mut owner) = match (entry, user.parse::<u32>()) {
        (Some((name, uid, gid)), _) => (Some(name), Owner { uid, gid }),
        (None, Ok(uid)) => (None, Owner { uid, gid: 0 }),
        (None, Err(_)) => {
            return Err(unknown(format!("USER {spec}"), user, OwnerKind::User, false));
        }
    };
    let groups = read("/etc/group")?;
    if let Some(group) = group {
        owner.gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup(&groups, group)
                .map(|(gid, _)| gid)
                .ok_or_else(|| unknown(format!("USER {spec}"), group, OwnerKind::Group, false))?,
        };
        return Ok((owner, Vec::new()));
    }
    let supplementary = match name {
        Some(name) => groups
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                let gid = fields.get(2)?.parse::<u32>().ok()?;
                let members = fields.get(3)?;
                members.split(',').any(|m| m.trim() == name).then_some(gid)
            })
            .filter(|gid| *gid != owner.gid)
            .collect(),
        None => Vec::new(),
    };
    Ok((owner, supplementary))
}

/// Whether a `--chown` value names its user (and group) by number only, so that resolving it
/// reads no file of the stage.
pub fn is_numeric(spec: &str) -> bool {
    spec.split(':').all(|part| part.parse::<u32>().is_ok())
}

/// A user or group the stage does not name.
fn unknown(spec: String, name: &str, kind: OwnerKind, no_database: bool) -> BuildError {
    BuildError::UnknownOwner {
        spec,
        name: name.to_owned(),
        kind,
        no_database,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn view() -> (tempfile::TempDir, RootfsView) {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("0/etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(etc.join("group"), "root:x:0:\nstaff:x:50:app\napp:x:1001:\n").unwrap();
        let view = RootfsView::new(vec![dir.path().join("0")]);
        (dir, view)
    }

    #[test]
    fn resolves_names_and_ids() {
        let (_dir, view) = view();
        let cases = [
            ("app", Owner { uid: 1000, gid: 1001 }),
            ("app:staff", Owner { uid: 1000, gid: 50 }),
            ("1234", Owner { uid: 1234, gid: 1234 }),
            ("1234:7", Owner { uid: 1234, gid: 7 }),
            ("app:7", Owner { uid: 1000, gid: 7 }),
            ("0:staff", Owner { uid: 0, gid: 50 }),
        ];
        for (spec, owner) in cases {
            assert_eq!(resolve(spec, &view).unwrap(), owner, "{spec}");
        }
    }

    #[test]
    fn run_users_get_supplementary_groups() {
        let (_dir, view) = view();
        assert_eq!(
            run_user("app", &view).unwrap(),
            (Owner { uid: 1000, gid: 1001 }, vec![50])
        );
        assert_eq!(
            run_user("1000", &view).unwrap(),
            (Owner { uid: 1000, gid: 1001 }, vec![50])
        );
        assert_eq!(
            run_user("4242", &view).unwrap(),
            (Owner { uid: 4242, gid: 0 }, vec![])
        );
        assert_eq!(
            run_user("app:staff", &view).unwrap(),
            (Owner { uid: 1000, gid: 50 }, vec![])
        );
        assert_eq!(run_user("", &view).unwrap(), (Owner::ROOT, vec![]));
        assert!(run_user("ghost", &view).is_err());
    }

    #[test]
    fn unknown_names_are_clear_errors() {
        let (_dir, view) = view();
        let err = resolve("nobody", &view).unwrap_err().to_string();
        assert!(err.contains("unable to find user nobody"), "{err}");
        let err = resolve("app:wheel", &view).unwrap_err().to_string();
        assert!(err.contains("unable to find group wheel"), "{err}");
        let err = resolve("app", &RootfsView::default()).unwrap_err().to_string();
        assert!(err.contains("no /etc/passwd"), "{err}");
    }
}
