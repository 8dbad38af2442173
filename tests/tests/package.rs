//! The Debian package `scripts/package` builds: what it holds and declares, and that
//! it installs, runs, and goes away again with `dpkg` in a fresh root. The fresh root
//! is an overlay whose lower layer is the host's / (its libraries satisfy the
//! package's Depends) and whose upper layer is a temporary directory, mounted in a
//! private mount namespace, so nothing reaches the host's own /.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use tests::{binary, TempDir};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Builds the package from this build's binaries into `dir`; returns its path.
fn build_package(dir: &Path) -> PathBuf {
    // binary() is target/<profile>/<name>; the script appends the profile itself.
    let tenetd = binary("tenetd");
    let target_dir = tenetd
        .parent()
        .and_then(Path::parent)
        .expect("binaries live in target/<profile>");
    let out = Command::new(format!("{REPO}/scripts/package"))
        .args(["--debug", "--out"])
        .arg(dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .expect("scripts/package runs");
    assert!(
        out.status.success(),
        "scripts/package --debug failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        deb.starts_with(dir) && deb.exists(),
        "no package at {deb:?}"
    );
    deb
}

/// Runs `program args`, which must succeed; returns its stdout.
fn ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_package_holds_the_programs_pages_completions_and_conffile() {
    let dir = TempDir::new("package-contents").unwrap();
    let deb = build_package(dir.path());
    let deb = deb.to_str().unwrap();
    let listing = ok("dpkg-deb", &["--contents", deb]);
    for path in [
        "./usr/bin/tenetd",
        "./usr/bin/tenetctl",
        "./usr/bin/tenet-docker",
        "./usr/lib/cni/tenet-cni",
        "./usr/lib/cni/tenet -> tenet-cni",
        "./lib/systemd/system/tenetd.service",
        "./lib/systemd/system/tenet-docker.service",
        "./etc/tenet/tenetd.toml",
        "./usr/share/man/man8/tenetd.8.gz",
        "./usr/share/man/man8/tenetctl.8.gz",
        "./usr/share/man/man8/tenetctl-tenant-add.8.gz",
        "./usr/share/man/man8/tenet-cni.8.gz",
        "./usr/share/man/man8/tenet-docker.8.gz",
        "./usr/share/bash-completion/completions/tenetctl",
        "./usr/share/zsh/vendor-completions/_tenetctl",
        "./usr/share/fish/vendor_completions.d/tenetctl.fish",
        "./usr/share/doc/tenet/copyright",
        "./usr/share/doc/tenet/changelog.Debian.gz",
        "./usr/share/doc/tenet/examples/dedicated.toml",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} is not in the package:\n{listing}"
        );
    }
    for line in listing.lines() {
        assert!(line.contains(" root/root "), "not root's: {line}");
    }
    // The hidden generators make no page of their own.
    assert!(!listing.contains("man-pages"), "{listing}");
    let conffiles = ok("dpkg-deb", &["--info", deb, "conffiles"]);
    assert_eq!(conffiles.trim(), "/etc/tenet/tenetd.toml");
    let depends = ok("dpkg-deb", &["--field", deb, "Depends"]);
    // What the binaries link, and a driver only a plugin directory names.
    for package in [
        "libc6",
        "librte-eal23",
        "librte-ethdev23",
        "librte-net-tap23",
    ] {
        assert!(
            depends.split(',').any(|d| d.trim().starts_with(package)),
            "Depends lacks {package}: {depends}"
        );
    }
}

/// The host's own install of tenet, if any: nothing here may change it.
fn host_install() -> (bool, String) {
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", "tenet"])
        .output()
        .expect("dpkg-query runs");
    (
        Path::new("/usr/bin/tenetd").exists(),
        String::from_utf8_lossy(&status.stdout).into_owned(),
    )
}

/// A root of its own over the host's: an overlay of a temporary upper layer over the
/// host's /, with /proc, /dev and /sys, mounted in a mount namespace that only a
/// holder process and the commands [`FreshRoot::run`] enters into it see. Dropping it
/// ends the holder: the namespace and every mount in it go with it, then the layer.
struct FreshRoot {
    holder: Child,
    merged: PathBuf,
    _layers: TempDir,
}

impl FreshRoot {
    fn new() -> anyhow::Result<Self> {
        let layers = TempDir::new("fresh-root")?;
        let [upper, work, merged] = ["upper", "work", "merged"].map(|d| layers.path().join(d));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d)?;
        }
        let m = merged.display();
        // The holder sleeps rather than waits forever: should this test be killed
        // before its guard drops, the mounts still go within ten minutes.
        let script = format!(
            "set -e
             mount -t overlay overlay -o lowerdir=/,upperdir={},workdir={} {m}
             mount -t proc proc {m}/proc
             mount --rbind /dev {m}/dev
             mount --rbind /sys {m}/sys
             echo ready
             exec sleep 600",
            upper.display(),
            work.display(),
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("piped"))
            .read_line(&mut line)
            .ok();
        if line.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            let mut said = String::new();
            if let Some(mut err) = holder.stderr.take() {
                let _ = err.read_to_string(&mut said);
            }
            anyhow::bail!("cannot mount an overlay over / in a mount namespace: {said}");
        }
        Ok(Self {
            holder,
            merged,
            _layers: layers,
        })
    }

    /// Runs `args` chrooted into the fresh root, with `env` added.
    fn run_with(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--target={}", self.holder.id()))
            .arg("--mount")
            .arg("chroot")
            .arg(&self.merged)
            .args(args)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("nsenter runs")
    }

    /// Runs `args` in the fresh root; it must succeed. Returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(&[], args)
    }

    fn ok_with(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let out = self.run_with(env, args);
        assert!(
            out.status.success(),
            "{args:?} in the fresh root: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether `path` exists in the fresh root.
    fn exists(&self, path: &str) -> bool {
        self.run_with(&[], &["test", "-e", path]).status.success()
    }
}

impl Drop for FreshRoot {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[test]
fn the_package_installs_runs_and_purges_in_a_fresh_root() {
    let host_before = host_install();
    let dir = TempDir::new("package-install").unwrap();
    let deb = build_package(dir.path());
    let deb = deb.to_str().unwrap();
    {
        let root = FreshRoot::new().unwrap();
        assert!(
            !root.exists("/usr/bin/tenetd"),
            "the fresh root has tenet already"
        );
        let said = root.ok(&["dpkg", "--install", deb]);
        assert!(said.contains("systemctl enable --now tenetd"), "{said}");
        assert_eq!(
            root.ok(&["dpkg-query", "-W", "-f=${Status}", "tenet"]),
            "install ok installed"
        );

        // tenetd reads /etc/tenet/tenetd.toml without --config, and the conffile passes.
        let checked = root.ok(&["/usr/bin/tenetd", "--check"]);
        assert!(
            checked.contains("config /etc/tenet/tenetd.toml is valid"),
            "{checked}"
        );
        let copyright = root.ok(&["cat", "/usr/share/doc/tenet/copyright"]);
        assert!(copyright.contains("License: Apache-2.0"), "{copyright}");
        let help = root.ok(&["tenetctl", "--help"]);
        assert!(help.contains("Control a running tenetd"), "{help}");
        // As a runtime runs it: by the config's type, in the plugin directory.
        let version = root.ok_with(&[("CNI_COMMAND", "VERSION")], &["/usr/lib/cni/tenet"]);
        assert!(version.contains("supportedVersions"), "{version}");

        // man finds the pages where the package put them.
        for (page, says) in [
            ("tenetd", "--check"),
            ("tenetctl-tenant-add", "--gateway-host"),
            ("tenet-cni", "CNI_COMMAND"),
            ("tenet-docker", "--tenetd"),
        ] {
            let text = root.ok_with(
                &[("MANPAGER", "cat"), ("MANWIDTH", "200")],
                &["man", "8", page],
            );
            assert!(text.contains(says), "man 8 {page} lacks {says}:\n{text}");
        }
        let complete = root.ok(&[
            "bash",
            "-c",
            ". /usr/share/bash-completion/completions/tenetctl && complete -p tenetctl",
        ]);
        assert!(complete.contains("tenetctl"), "{complete}");
        let script = root.ok(&["cat", "/usr/share/bash-completion/completions/tenetctl"]);
        assert!(
            script.contains("tenant") && !script.contains("man-pages"),
            "the completions offer packaging's hidden man-pages"
        );

        // The units run the packaged binaries, which systemd finds there.
        let unit = root.ok(&["cat", "/lib/systemd/system/tenetd.service"]);
        assert!(
            unit.contains("ExecStart=/usr/bin/tenetd --config /etc/tenet/tenetd.toml"),
            "{unit}"
        );
        root.ok(&[
            "systemd-analyze",
            "verify",
            "/lib/systemd/system/tenetd.service",
            "/lib/systemd/system/tenet-docker.service",
        ]);

        // Remove keeps a changed conffile; purge takes it.
        root.ok(&["sh", "-c", "echo '# this host' >> /etc/tenet/tenetd.toml"]);
        root.ok(&["dpkg", "--remove", "tenet"]);
        for gone in [
            "/usr/bin/tenetd",
            "/usr/lib/cni/tenet-cni",
            "/usr/share/man/man8/tenetd.8.gz",
        ] {
            assert!(!root.exists(gone), "{gone} is left after dpkg --remove");
        }
        assert!(
            root.exists("/etc/tenet/tenetd.toml"),
            "remove took the conffile"
        );
        root.ok(&["dpkg", "--purge", "tenet"]);
        assert!(
            !root.exists("/etc/tenet/tenetd.toml"),
            "purge left the conffile"
        );
        let status = root.run_with(&[], &["dpkg-query", "-W", "-f=${Status}", "tenet"]);
        let status = String::from_utf8_lossy(&status.stdout);
        assert!(
            status.is_empty() || status.ends_with("not-installed"),
            "after purge: {status}"
        );
    }
    assert_eq!(host_install(), host_before, "the host's / changed");
}
