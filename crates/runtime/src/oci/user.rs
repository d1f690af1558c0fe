//! Which uid and gid a container runs as: `runAsUser`/`runAsGroup`, else the image's `User`
//! (`uid`, `uid:gid`, `name`, `name:group`), names resolved through the root filesystem's
//! `/etc/passwd` and `/etc/group`. Pure: the files come in as text.

/// The identity a container process gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// A line of `/etc/passwd` or `/etc/group`: name, then the numeric id in field 3, then the
/// primary group id in field 4 (passwd only).
fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
}

fn passwd_by_name(passwd: &str, name: &str) -> Option<(u32, u32)> {
    entries(passwd)
        .find(|f| f[0] == name)
        .and_then(|f| Some((f[2].parse().ok()?, f.get(3)?.parse().ok()?)))
}

fn passwd_gid_of(passwd: &str, uid: u32) -> Option<u32> {
    entries(passwd)
        .find(|f| f[2].parse::<u32>().ok() == Some(uid))
        .and_then(|f| f.get(3)?.parse().ok())
}

fn group_by_name(group: &str, name: &str) -> Option<u32> {
    entries(group)
        .find(|f| f[0] == name)
        .and_then(|f| f[2].parse().ok())
}

/// Resolves the identity. `run_as_*` come from the security contexts (container over pod),
/// `image_user` from the image config; `passwd`/`group` are the rootfs's files, if any.
///
/// As containerd does: a uid without a gid takes its primary group from `/etc/passwd`, else 0.
pub fn resolve(
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    image_user: Option<&str>,
    passwd: &str,
    group: &str,
) -> Result<Identity, String> {
    let id = |v: i64, what: &str| u32::try_from(v).map_err(|_| format!("invalid {what} {v}"));
    let (uid, mut gid) = match run_as_user {
        Some(u) => {
            let uid = id(u, "runAsUser")?;
            (uid, passwd_gid_of(passwd, uid))
        }
        None => {
            let spec = image_user.map(str::trim).unwrap_or_default();
            let (user, grp) = match spec.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (spec, None),
            };
            let (uid, primary) = if user.is_empty() {
                (0, passwd_gid_of(passwd, 0))
            } else if let Ok(uid) = user.parse::<u32>() {
                (uid, passwd_gid_of(passwd, uid))
            } else {
                let (uid, gid) = passwd_by_name(passwd, user).ok_or_else(|| {
                    format!("unable to find user {user}: no matching entries in passwd file")
                })?;
                (uid, Some(gid))
            };
            let gid = match grp.filter(|g| !g.is_empty()) {
                None => primary,
                Some(g) => Some(match g.parse::<u32>() {
                    Ok(gid) => gid,
                    Err(_) => group_by_name(group, g).ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?,
                }),
            };
            (uid, gid)
        }
    };
    if let Some(g) = run_as_group {
        gid = Some(id(g, "runAsGroup")?);
    }
    Ok(Identity {
        uid,
        gid: gid.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n# comment\nweb:x:1000:1001::/home/web:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nstaff:x:50:web\n";

    fn check(
        user: Option<i64>,
        group: Option<i64>,
        image: Option<&str>,
        expected: Result<(u32, u32), &str>,
    ) {
        let got = resolve(user, group, image, PASSWD, GROUP).map(|i| (i.uid, i.gid));
        assert_eq!(
            got,
            expected.map_err(str::to_string),
            "{user:?} {group:?} {image:?}"
        );
    }

    #[test]
    fn identities() {
        check(None, None, None, Ok((0, 0)));
        check(None, None, Some(""), Ok((0, 0)));
        check(None, None, Some("web"), Ok((1000, 1001)));
        check(None, None, Some("web:staff"), Ok((1000, 50)));
        check(None, None, Some("1000"), Ok((1000, 1001)));
        check(None, None, Some("4242"), Ok((4242, 0)));
        check(None, None, Some("4242:7"), Ok((4242, 7)));
        check(None, None, Some("nobody:nogroup"), Ok((65534, 65534)));
        // The security context wins over the image.
        check(Some(1000), None, Some("nobody"), Ok((1000, 1001)));
        check(Some(5), Some(6), Some("web"), Ok((5, 6)));
        check(None, Some(6), Some("web"), Ok((1000, 6)));
        check(
            None,
            None,
            Some("ghost"),
            Err("unable to find user ghost: no matching entries in passwd file"),
        );
        check(
            None,
            None,
            Some("web:ghosts"),
            Err("unable to find group ghosts: no matching entries in group file"),
        );
        check(Some(-1), None, None, Err("invalid runAsUser -1"));
    }
}
