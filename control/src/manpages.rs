//! Manual pages made from the binaries' clap definitions (`clap_mangen`), so a page
//! says what `--help` says and cannot drift from it. Each binary writes its own pages
//! behind a hidden option (`tenetd --man-pages DIR`, `tenetctl man-pages DIR`);
//! `scripts/package` collects them into the Debian package.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Section 8: every tenet program needs root (tenetd's API socket is root's alone).
pub const SECTION: &str = "8";

/// The programs whose pages refer to each other under SEE ALSO.
const PROGRAMS: [&str; 4] = ["tenetd", "tenetctl", "tenet-cni", "tenet-docker"];

/// Writes the [`pages`] of `cmd` into `dir`; returns the files written.
pub fn write(cmd: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot make the man page directory {}", dir.display()))?;
    let mut written = Vec::new();
    for (name, page) in pages(cmd)? {
        let path = dir.join(name);
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// `cmd`'s page and one for each visible subcommand at any depth, as (file name, roff):
/// `tenetctl.8`, `tenetctl-tenant.8`, `tenetctl-tenant-add.8` (git's way, which
/// clap_mangen's SUBCOMMANDS sections point to).
pub fn pages(cmd: clap::Command) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    // Built once at the top, so each subcommand's display name carries its parents'.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    let see_also = see_also(cmd.get_name());
    render(&cmd, Some(&see_also), &mut pages)?;
    Ok(pages)
}

fn render(
    cmd: &clap::Command,
    see_also: Option<&str>,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(SECTION)
        .manual("tenet");
    let name = man.get_filename();
    let mut page = Vec::new();
    man.render(&mut page)
        .with_context(|| format!("cannot render the man page {name}"))?;
    if let Some(text) = see_also {
        page.extend_from_slice(text.as_bytes());
    }
    pages.push((name, page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render(sub, None, pages)?;
    }
    Ok(())
}

/// A SEE ALSO section naming the other programs, in roff.
fn see_also(program: &str) -> String {
    let others: Vec<String> = PROGRAMS
        .iter()
        .filter(|p| **p != program)
        // A bare `-` in roff may be typeset as a hyphen; `\-` is the minus a name needs.
        .map(|p| format!("\\fB{}\\fR({SECTION})", p.replace('-', "\\-")))
        .collect();
    format!(".SH \"SEE ALSO\"\n{}\n", others.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_for_the_command_and_each_visible_subcommand() {
        let cmd = clap::Command::new("tenetctl")
            .version("1.0")
            .subcommand(
                clap::Command::new("tenant")
                    .about("Tenants")
                    .subcommand(clap::Command::new("add").about("Add a tenant")),
            )
            .subcommand(clap::Command::new("secret").hide(true));
        let pages = pages(cmd).unwrap();
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        let text = |i: usize| String::from_utf8(pages[i].1.clone()).unwrap();
        assert_eq!(
            names,
            ["tenetctl.8", "tenetctl-tenant.8", "tenetctl-tenant-add.8"]
        );
        let top = text(0);
        assert!(top.contains("\n.TH tenetctl 8 "), "{top}");
        assert!(top.contains("tenetctl\\-tenant(8)"), "{top}");
        assert!(top.contains(".SH \"SEE ALSO\"\n\\fBtenetd\\fR(8)"), "{top}");
        assert!(!top.contains("secret"), "{top}");
        let add = text(2);
        assert!(add.contains("Add a tenant"), "{add}");
        assert!(!add.contains("SEE ALSO"), "{add}");
    }
}
