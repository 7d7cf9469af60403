//! `/etc/passwd` and `/etc/group` of an image, read as runc's `libcontainer/user` package reads
//! them: the reader BuildKit uses both for `USER` (runc's `GetExecUser`) and for `--chown` (its
//! file op's `readUser`), so RUN and COPY see the same users.
//!
//! Rules (runc's `parseLine`, measured with the oracle, conformance case `user-passwd-format`):
//! each line is trimmed of surrounding white space and skipped when empty; fields are split at
//! `:`, a missing field is empty, a number that does not parse is 0. There are no comments: a
//! line `# x` is an entry named `# x`, which no name matches.

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry<'a> {
    pub name: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub home: &'a str,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry<'a> {
    pub name: &'a str,
    pub gid: u32,
    pub members: Vec<&'a str>,
}

/// The entries of a passwd file, in order.
pub fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    lines(text).map(|fields| PasswdEntry {
        name: field(&fields, 0),
        uid: number(&fields, 2),
        gid: number(&fields, 3),
        home: field(&fields, 5),
    })
}

/// The entries of a group file, in order.
pub fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    lines(text).map(|fields| GroupEntry {
        name: field(&fields, 0),
        gid: number(&fields, 2),
        members: field(&fields, 3).split(',').map(str::trim).filter(|member| !member.is_empty()).collect(),
    })
}

fn lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines().map(str::trim).filter(|line| !line.is_empty()).map(|line| line.split(':').collect())
}

fn field<'a>(fields: &[&'a str], index: usize) -> &'a str {
    fields.get(index).copied().unwrap_or("")
}

/// Go's `strconv.Atoi` with its error dropped, as runc reads ids: what does not parse is 0.
fn number(fields: &[&str], index: usize) -> u32 {
    field(fields, index).parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_runc_reads_them() {
        let passwd = "# comment line\nroot:x:0:0:root:/root:/bin/sh\n  app:x:1000:1000::/home/app:/bin/sh\n\nbad:x:abc:5::/bad:/bin/sh\nshort:x:77\n";
        let entries: Vec<_> = passwd_entries(passwd).collect();
        assert_eq!(entries[0].name, "# comment line");
        assert_eq!(entries[2], PasswdEntry { name: "app", uid: 1000, gid: 1000, home: "/home/app" });
        assert_eq!(entries[3], PasswdEntry { name: "bad", uid: 0, gid: 5, home: "/bad" });
        assert_eq!(entries[4], PasswdEntry { name: "short", uid: 77, gid: 0, home: "" });
        assert_eq!(entries.len(), 5);
        let groups: Vec<_> = group_entries("staff:x:50:app, root\ng3:x:60\n").collect();
        assert_eq!(groups[0], GroupEntry { name: "staff", gid: 50, members: vec!["app", "root"] });
        assert_eq!(groups[1], GroupEntry { name: "g3", gid: 60, members: vec![] });
    }
}
