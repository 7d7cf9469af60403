//! USER resolution against the step's own /etc/passwd and /etc/group, with BuildKit's rules
//! (which are runc's `GetExecUser`):
//!
//! | USER            | uid / gid                                    | supplementary groups           |
//! |-----------------|----------------------------------------------|--------------------------------|
//! | ""              | as "0"; when that fails, 0 / 0               | as for "0"                     |
//! | "a:b", both numeric or `root` | taken as written (no lookup)   | the gid                        |
//! | "name" / "uid"  | passwd entry by name or uid; a numeric uid without entry: uid / 0 | the gid and the groups listing the user |
//! | "user:group"    | user as above, group by name or gid; numeric gid without entry as written | the gid |
//!
//! The primary gid is always among the supplementary groups, as under BuildKit (measured with the
//! oracle: `USER 1234:5678` gives `groups=5678`, `USER app` gives `groups=50(staff),1000(app)`).
//! Unknown names are errors ("unable to find user ..."), as in BuildKit. HOME comes from the
//! passwd entry, else "/". The files are read as runc reads them ([`crate::oci::passwd`]).

use super::SandboxError;
use crate::oci::passwd::{group_entries, passwd_entries};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// A numeric id, or `root` (BuildKit's fast path accepts it as 0).
fn parse_fast_id(text: &str) -> Option<u32> {
    if text == "root" { Some(0) } else { text.parse().ok() }
}

/// Resolves `user` (as written in the Dockerfile) with the contents of the rootfs's /etc/passwd
/// and /etc/group (`None` when the file is missing).
pub(crate) fn resolve(user: &str, passwd: Option<&str>, group: Option<&str>) -> Result<Identity, SandboxError> {
    let is_default = user.is_empty();
    let user = if is_default { "0" } else { user };
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");
    let home_of = |uid: u32| {
        passwd_entries(passwd)
            .find(|entry| entry.uid == uid)
            .map(|entry| entry.home.to_string())
            .filter(|home| !home.is_empty())
            .unwrap_or_else(|| "/".to_string())
    };

    if let Some((user_part, group_part)) = user.split_once(':')
        && let (Some(uid), Some(gid)) = (parse_fast_id(user_part), parse_fast_id(group_part))
    {
        return Ok(Identity { uid, gid, additional_gids: vec![gid], home: home_of(uid) });
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((user_part, group_part)) => (user_part, Some(group_part)),
        None => (user, None),
    };
    if user_part.is_empty() || group_part.is_some_and(str::is_empty) {
        return Err(SandboxError::InvalidUser { user: user.to_string() });
    }

    let numeric_user: Option<u32> = user_part.parse().ok();
    let entry = passwd_entries(passwd).find(|entry| entry.name == user_part || numeric_user == Some(entry.uid));
    let (uid, mut gid, home, matched_name) = match (&entry, numeric_user) {
        (Some(entry), _) => (entry.uid, entry.gid, entry.home.to_string(), Some(entry.name)),
        (None, Some(uid)) => (uid, 0, "/".to_string(), None),
        (None, None) if is_default => (0, 0, "/".to_string(), None),
        (None, None) => {
            return Err(SandboxError::UserNotFound { name: user_part.to_string() });
        }
    };
    let home = if home.is_empty() { "/".to_string() } else { home };

    let mut additional_gids = Vec::new();
    match group_part {
        Some(group_part) => {
            let numeric_group: Option<u32> = group_part.parse().ok();
            let found = group_entries(group)
                .find(|entry| match numeric_group {
                    Some(number) => entry.gid == number,
                    None => entry.name == group_part,
                })
                .map(|entry| entry.gid);
            gid = match (found, numeric_group) {
                (Some(found), _) => found,
                (None, Some(number)) => number,
                (None, None) => {
                    return Err(SandboxError::GroupNotFound { name: group_part.to_string() });
                }
            };
        }
        None => {
            if let Some(name) = matched_name {
                additional_gids = group_entries(group).filter(|entry| entry.members.contains(&name)).map(|entry| entry.gid).collect();
            }
        }
    }
    if !additional_gids.contains(&gid) {
        additional_gids.push(gid);
    }
    additional_gids.sort_unstable();
    Ok(Identity { uid, gid, additional_gids, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nbin:x:1:1:bin:/bin:/sbin/nologin\nu1000:x:1000:1000::/home/u1000:/bin/sh\nnohome:x:1001:100::\n";
    const GROUP: &str = "root:x:0:root\nbin:x:1:root,bin\nwheel:x:10:root,u1000\nusers:x:100:\nu1000:x:1000:\n";

    fn identity(user: &str) -> Result<Identity, SandboxError> {
        resolve(user, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn default_user_is_root_with_its_groups() {
        let root = identity("").unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(root.additional_gids, [0, 1, 10]);
        let bare = resolve("", None, None).unwrap();
        assert_eq!(bare, Identity { uid: 0, gid: 0, additional_gids: vec![0], home: "/".into() });
    }

    #[test]
    fn name_resolves_from_passwd_with_member_groups() {
        let user = identity("u1000").unwrap();
        assert_eq!(user, Identity { uid: 1000, gid: 1000, additional_gids: vec![10, 1000], home: "/home/u1000".into() });
        assert_eq!(identity("1000").unwrap(), user);
    }

    #[test]
    fn unknown_numeric_uid_gets_gid_zero() {
        assert_eq!(identity("4242").unwrap(), Identity { uid: 4242, gid: 0, additional_gids: vec![0], home: "/".into() });
    }

    #[test]
    fn both_numeric_skips_lookup() {
        assert_eq!(identity("1000:33").unwrap(), Identity { uid: 1000, gid: 33, additional_gids: vec![33], home: "/home/u1000".into() });
        assert_eq!(identity("root:root").unwrap().gid, 0);
    }

    #[test]
    fn group_by_name_replaces_primary_and_is_the_only_supplementary() {
        assert_eq!(
            identity("u1000:wheel").unwrap(),
            Identity { uid: 1000, gid: 10, additional_gids: vec![10], home: "/home/u1000".into() }
        );
        assert_eq!(identity("u1000:77").unwrap().gid, 77);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(matches!(identity("nobody"), Err(SandboxError::UserNotFound { name }) if name == "nobody"));
        assert!(matches!(identity("u1000:staff"), Err(SandboxError::GroupNotFound { name }) if name == "staff"));
        assert!(matches!(identity("u1000:"), Err(SandboxError::InvalidUser { .. })));
        assert_eq!(
            SandboxError::UserNotFound { name: "nobody".into() }.to_string(),
            "unable to find user `nobody`: no matching entries in passwd file"
        );
    }

    #[test]
    fn empty_home_falls_back_to_root_dir() {
        assert_eq!(identity("nohome").unwrap().home, "/");
    }
}
