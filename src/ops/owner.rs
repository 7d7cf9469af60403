//! `--chown` for file ops: owners resolved in the destination's /etc/passwd and
//! /etc/group as BuildKit's file op does (`readUser`): a number is used as is, and a numeric
//! user without a group also gives the group; a name is looked up, and a name that is not found
//! (or a missing file) is no error: an unknown user is 0:0, an unknown group keeps the user's
//! gid (measured with the oracle: `COPY --chown=nosuchuser` and `--chown=:` give 0:0). The
//! files are read as runc reads them ([`crate::oci::passwd`]), as for `USER`.

use crate::graph::Owner;
use crate::oci::passwd::{group_entries, passwd_entries};
use crate::snapshot::view::LayeredView;

#[derive(Debug, thiserror::Error)]
pub(crate) enum OwnerError {
    #[error("failed to read `{path}` of the destination")]
    Read { path: String, source: std::io::Error },
}

/// Resolves `user[:group]` against the destination filesystem.
pub(super) fn resolve(view: &LayeredView, owner: &Owner) -> Result<(u32, u32), OwnerError> {
    let (uid, user_gid) = match owner.user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => {
            let passwd = read(view, "/etc/passwd")?;
            passwd_entries(&passwd).find(|entry| entry.name == owner.user).map_or((0, 0), |entry| (entry.uid, entry.gid))
        }
    };
    let gid = match &owner.group {
        None => user_gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = read(view, "/etc/group")?;
                group_entries(&groups).find(|entry| entry.name == *group).map_or(user_gid, |entry| entry.gid)
            }
        },
    };
    Ok((uid, gid))
}

fn read(view: &LayeredView, path: &str) -> Result<String, OwnerError> {
    let bytes = view.read_file(path).map_err(|source| OwnerError::Read { path: path.into(), source })?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn owners_resolve_in_the_destination() {
        let layer = tempfile::tempdir().unwrap();
        fs::create_dir(layer.path().join("etc")).unwrap();
        fs::write(layer.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n").unwrap();
        fs::write(layer.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let view = LayeredView::new([layer.path().to_path_buf()]);
        let owner = |user: &str, group: Option<&str>| Owner { user: user.into(), group: group.map(String::from) };
        assert_eq!(resolve(&view, &owner("app", None)).unwrap(), (1000, 1001));
        assert_eq!(resolve(&view, &owner("app", Some("staff"))).unwrap(), (1000, 50));
        assert_eq!(resolve(&view, &owner("42", None)).unwrap(), (42, 42));
        assert_eq!(resolve(&view, &owner("42", Some("7"))).unwrap(), (42, 7));
        assert_eq!(resolve(&view, &owner("nobody", None)).unwrap(), (0, 0));
        assert_eq!(resolve(&view, &owner("app", Some("wheel"))).unwrap(), (1000, 1001));
        assert_eq!(resolve(&view, &owner("", Some(""))).unwrap(), (0, 0));
    }
}
