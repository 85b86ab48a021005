//! Every file in deploy/ is checked here (or, for examples/three-node, in mesh.rs): the
//! configs are started for real with their paths and ports rewritten to a temp dir, the AWX-like
//! example gets its certificates from its own make-certs.sh and runs signed work through the
//! hop, the systemd unit goes through `systemd-analyze verify`, and the Dockerfile is linted
//! (and built with RECEPTOR_TEST_DOCKER=1).
//!
//! The rewrites are explicit string substitutions that must each match, so an example that
//! changes a path or port fails here instead of silently escaping the rewrite.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail, ensure};
use tokio::process::Command;

use crate::harness::{
    Daemon, WAIT, receptor_bin, receptorctl, receptorctl_bin, rust_receptorctl, wait_for,
};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(rel: &str) -> Result<String> {
    let path = deploy_dir().join(rel);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Applies each `(from, to)` substitution; every `from` must occur in `text`.
fn rewrite(name: &str, text: &str, subs: &[(&str, String)]) -> Result<String> {
    let mut text = text.to_owned();
    for (from, to) in subs {
        ensure!(
            text.contains(from),
            "{name}: expected {from:?} in it (the test rewrites it)"
        );
        text = text.replace(from, to);
    }
    Ok(text)
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// Runs `argv` (program first) with a timeout; returns (exit code, stdout, stderr).
async fn run(argv: &[String], env: &[(&str, String)]) -> Result<(Option<i32>, String, String)> {
    let (program, args) = argv.split_first().context("empty command")?;
    let output = tokio::time::timeout(
        WAIT,
        Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{argv:?} hung"))?
    .with_context(|| format!("running {argv:?}"))?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// The examples' fixed listener ports; the test binds port 0 on 127.0.0.1 instead.
const PORT_2222: &str = "    port: 2222";
const PORT_27199: &str = "    port: 27199";

fn ephemeral(port_line: &'static str) -> (&'static str, String) {
    (port_line, "    bindaddr: 127.0.0.1\n    port: 0".into())
}

// ---- the AWX-like example ----------------------------------------------------------------

/// The example's nodes, in the order the test starts them (the hop listens, the rest dial it).
const AWX_NODES: [&str; 4] = ["hop", "exec1", "exec2", "control"];

struct AwxMesh {
    dir: tempfile::TempDir,
    daemons: Vec<Daemon>,
}

impl AwxMesh {
    fn socket(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.sock"))
    }

    fn logs(&self) -> String {
        AWX_NODES
            .iter()
            .zip(&self.daemons)
            .map(|(name, d)| format!("--- {name}\n{}\n", d.log()))
            .collect()
    }

    /// Makes the certificates with the example's make-certs.sh, then starts the hop and the
    /// three nodes that dial it.
    async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let tls = dir.path().join("tls");
        let script = deploy_dir().join("examples/awx-mesh/make-certs.sh");
        let (code, stdout, stderr) = run(
            &[path_str(&script), path_str(&tls)],
            &[
                ("RECEPTOR", path_str(&receptor_bin()?)),
                // The nodes dial 127.0.0.1 in the test, so the certificates name it too.
                ("EXTRA_NAMES", "ipaddress=127.0.0.1".into()),
                // Smaller keys than the production defaults keep the test quick.
                ("CA_BITS", "2048".into()),
                ("SIGN_BITS", "2048".into()),
            ],
        )
        .await?;
        ensure!(code == Some(0), "make-certs.sh failed:\n{stdout}\n{stderr}");
        for node in AWX_NODES {
            ensure!(tls.join(format!("{node}.crt")).exists(), "no {node}.crt");
        }

        let yaml = |node: &str, hop_addr: Option<&str>| -> Result<String> {
            let mut subs = vec![
                ("/etc/receptor/tls/", format!("{}/", tls.display())),
                (
                    "/var/lib/receptor",
                    path_str(&dir.path().join(format!("data-{node}"))),
                ),
                (
                    "/var/run/receptor/receptor.sock",
                    path_str(&dir.path().join(format!("{node}.sock"))),
                ),
            ];
            if let Some(addr) = hop_addr {
                subs.push(("hop.example.com:27199", addr.to_owned()));
            } else {
                subs.push(ephemeral(PORT_27199));
            }
            if node.starts_with("exec") {
                // The mesh is under test, not ansible: `cat` echoes the payload back.
                subs.push((
                    "command: ansible-runner\n    params: worker",
                    "command: cat".into(),
                ));
            }
            let file = format!("examples/awx-mesh/{node}.yaml");
            let text = rewrite(&file, &read(&file)?, &subs)?;
            crate::config::check_supported(&text, &file)?;
            Ok(text)
        };

        let hop = Daemon::start_yaml("hop", dir.path(), &yaml("hop", None)?).await?;
        let hop_addr = hop.tcp_listener_addr().await?;
        let mut daemons = vec![hop];
        for node in &AWX_NODES[1..] {
            daemons
                .push(Daemon::start_yaml(node, dir.path(), &yaml(node, Some(&hop_addr))?).await?);
        }
        Ok(Self { dir, daemons })
    }
}

#[tokio::test]
async fn awx_mesh_example_runs_signed_work_through_the_hop() -> Result<()> {
    receptorctl_bin()?;
    let mesh = AwxMesh::start().await?;
    let control = mesh.socket("control");

    // The control node routes to both execution nodes through the hop and sees their
    // signature-checked work types.
    wait_for(
        "control to route to exec1 and exec2 via hop and see their work types",
        WAIT,
        || {
            let socket = control.clone();
            async move {
                let status = crate::harness::status_json(&socket).await.ok()?;
                let routes_ok = ["exec1", "exec2"]
                    .iter()
                    .all(|n| status["RoutingTable"][n].as_str() == Some("hop"));
                let ads = status["Advertisements"].as_array()?;
                let secure_runner = |node: &str| {
                    ads.iter().any(|ad| {
                        ad["NodeID"] == node
                            && ad["WorkCommands"].as_array().is_some_and(|cmds| {
                                cmds.iter().any(|c| {
                                    c["WorkType"] == "ansible-runner" && c["Secure"] == true
                                })
                            })
                    })
                };
                (routes_ok && secure_runner("exec1") && secure_runner("exec2")).then_some(())
            }
        },
    )
    .await
    .with_context(|| mesh.logs())?;

    // The examples' `permissions: 0660` (octal, as Go reads it) lets the receptor group in.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&control)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "control socket mode {mode:o}");
    }

    for node in ["exec1", "exec2"] {
        let payload = format!("signed work for {node} through the hop");
        let submit = [
            "work",
            "submit",
            "--node",
            node,
            "--tls-client",
            "tls_client",
            "--payload-literal",
            &payload,
            "--follow",
            "--rm",
        ];
        let signed = receptorctl(
            &control,
            &[&submit[..], &["--signwork", "ansible-runner"]].concat(),
        )
        .await?;
        assert_eq!(signed.code, Some(0), "{signed:?}\n{}", mesh.logs());
        assert!(signed.stdout.contains(&payload), "{signed:?}");

        // The execution node checks the signature: unsigned work is refused.
        let unsigned = receptorctl(&control, &[&submit[..], &["ansible-runner"]].concat()).await?;
        assert_ne!(unsigned.code, Some(0), "{unsigned:?}");
        assert!(
            unsigned.stderr.contains("could not verify signature"),
            "{unsigned:?}"
        );
    }
    Ok(())
}

// ---- default.yaml and the packaged receptor.conf -----------------------------------------

#[tokio::test]
async fn default_yaml_starts_and_answers_on_both_sockets() -> Result<()> {
    receptorctl_bin()?;
    let dir = tempfile::tempdir()?;
    let yaml = rewrite(
        "default.yaml",
        &read("default.yaml")?,
        &[
            ("/tmp/", format!("{}/", dir.path().display())),
            ephemeral(PORT_2222),
        ],
    )?;
    let daemon = Daemon::start_yaml("default", dir.path(), &yaml).await?;
    daemon.tcp_listener_addr().await?;
    let socket = dir.path().join("receptor.sock");
    let status = wait_for("the control socket", WAIT, || {
        let socket = socket.clone();
        async move { crate::harness::status_json(&socket).await.ok() }
    })
    .await
    .with_context(|| daemon.log())?;
    assert!(status["NodeID"].as_str().is_some_and(|id| !id.is_empty()));

    // The gRPC socket answers the Rust receptorctl.
    let grpc = format!(
        "grpc+unix:{}",
        dir.path().join("receptor-grpc.sock").display()
    );
    let ctl = rust_receptorctl()?;
    let (code, stdout, stderr) = run(
        &[
            path_str(&ctl),
            "--socket".into(),
            grpc,
            "status".into(),
            "--json".into(),
        ],
        &[],
    )
    .await?;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}\n{}", daemon.log());
    assert!(
        stdout.contains(status["NodeID"].as_str().unwrap_or("?")),
        "{stdout}"
    );
    Ok(())
}

/// The packaged config, started as the container and the systemd unit start it; the image's
/// HEALTHCHECK and the unit's ExecReload are run against it exactly as written (binary and
/// socket paths rewritten).
#[tokio::test]
async fn packaged_config_serves_healthcheck_and_reload() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = path_str(&dir.path().join("receptor.sock"));
    let conf = rewrite(
        "receptor.conf",
        &read("receptor.conf")?,
        &[
            ("/var/lib/receptor", path_str(&dir.path().join("data"))),
            ("/var/run/receptor/receptor.sock", socket.clone()),
            ephemeral(PORT_2222),
        ],
    )?;
    let daemon = Daemon::start_yaml("receptor", dir.path(), &conf).await?;
    daemon.tcp_listener_addr().await?;
    let ctl = path_str(&rust_receptorctl()?);
    let localise = |argv: Vec<String>| -> Vec<String> {
        argv.into_iter()
            .map(|a| match a.as_str() {
                "/usr/bin/receptorctl" => ctl.clone(),
                "/var/run/receptor/receptor.sock" => socket.clone(),
                _ => a,
            })
            .collect()
    };

    let health = localise(dockerfile_healthcheck(&read("Dockerfile")?)?);
    let socket_path = PathBuf::from(&socket);
    wait_for("the control socket", WAIT, || {
        let exists = socket_path.exists();
        async move { exists.then_some(()) }
    })
    .await
    .with_context(|| daemon.log())?;
    let (code, stdout, stderr) = run(&health, &[]).await?;
    assert_eq!(
        code,
        Some(0),
        "{health:?}: {stdout}\n{stderr}\n{}",
        daemon.log()
    );

    let reload = localise(
        unit_value(&read("systemd/receptor.service")?, "ExecReload")?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    );
    let (code, stdout, stderr) = run(&reload, &[]).await?;
    assert_eq!(
        code,
        Some(0),
        "{reload:?}: {stdout}\n{stderr}\n{}",
        daemon.log()
    );

    // A stopped daemon is unhealthy.
    let status = daemon.terminate().await?;
    assert!(status.success(), "{status}");
    let (code, stdout, stderr) = run(&health, &[]).await?;
    assert_ne!(
        code,
        Some(0),
        "healthy without a daemon: {stdout}\n{stderr}"
    );
    Ok(())
}

// ---- the systemd unit ----------------------------------------------------------------------

/// The value of the last `key=` line (systemd's "last one wins" for single-valued keys).
fn unit_value(unit: &str, key: &str) -> Result<String> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .map(str::to_owned)
        .with_context(|| format!("no {key}= in the unit"))
}

#[tokio::test]
async fn systemd_unit_is_hardened_and_verifies() -> Result<()> {
    let unit = read("systemd/receptor.service")?;
    for (key, want) in [
        ("User", "receptor"),
        (
            "ExecStart",
            "/usr/bin/receptor --config /etc/receptor/receptor.conf",
        ),
        ("NoNewPrivileges", "true"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "true"),
        ("PrivateTmp", "true"),
        ("StateDirectory", "receptor"),
        ("RuntimeDirectory", "receptor"),
        ("CapabilityBoundingSet", ""),
        (
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(unit_value(&unit, key)?, want, "{key}");
    }
    assert!(
        unit.lines()
            .any(|l| l == "SystemCallFilter=@system-service"),
        "SystemCallFilter=@system-service"
    );
    assert!(unit_value(&unit, "LimitNOFILE")?.parse::<u32>()? >= 4096);
    // The daemon's shutdown grace is 5 s (server/src/main.rs); systemd must wait longer than
    // that before it kills, and not much longer.
    let stop: u32 = unit_value(&unit, "TimeoutStopSec")?.parse()?;
    assert!((6..=30).contains(&stop), "TimeoutStopSec={stop}");
    // The packaged config is where the unit and the sockets expect it.
    let conf = read("receptor.conf")?;
    assert!(
        conf.contains("datadir: /var/lib/receptor"),
        "StateDirectory=receptor"
    );
    assert!(unit_value(&unit, "ExecReload")?.contains("/var/run/receptor/receptor.sock"));
    assert!(conf.contains("filename: /var/run/receptor/receptor.sock"));
    // The sysusers entry creates the unit's user.
    let sysusers = read("systemd/receptor.sysusers.conf")?;
    assert!(
        sysusers.lines().any(|l| l.starts_with("u receptor ")),
        "{sysusers}"
    );

    let Some(analyze) = which("systemd-analyze") else {
        eprintln!("SKIP systemd-analyze verify: systemd-analyze is not installed here");
        return Ok(());
    };
    // verify checks that the Exec* binaries exist: point them at the built ones.
    let dir = tempfile::tempdir()?;
    let bin = receptor_bin()?;
    let unit = rewrite(
        "receptor.service",
        &unit,
        &[
            (
                "/usr/bin/receptorctl ",
                format!("{} ", rust_receptorctl()?.display()),
            ),
            ("/usr/bin/receptor ", format!("{} ", bin.display())),
        ],
    )?;
    let path = dir.path().join("receptor.service");
    std::fs::write(&path, unit)?;
    let (code, stdout, stderr) = run(
        &[
            path_str(&analyze),
            "verify".into(),
            "--man=no".into(),
            path_str(&path),
        ],
        &[],
    )
    .await?;
    assert_eq!(code, Some(0), "systemd-analyze verify:\n{stdout}\n{stderr}");
    assert!(
        !stderr.contains("receptor.service:"),
        "warnings about the unit:\n{stderr}"
    );
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

// ---- the container image -------------------------------------------------------------------

/// Dockerfile instructions as (INSTRUCTION, arguments), continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (op, rest) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((op.to_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    out
}

/// The HEALTHCHECK's exec-form command.
fn dockerfile_healthcheck(text: &str) -> Result<Vec<String>> {
    let (_, args) = instructions(text)
        .into_iter()
        .find(|(op, _)| op == "HEALTHCHECK")
        .context("no HEALTHCHECK")?;
    let json = args
        .split_once("CMD ")
        .map(|(_, cmd)| cmd.trim())
        .context("HEALTHCHECK without CMD")?;
    serde_json::from_str(json).with_context(|| format!("HEALTHCHECK CMD is not exec form: {json}"))
}

#[tokio::test]
async fn dockerfile_is_multi_stage_non_root_and_builds_on_request() -> Result<()> {
    let text = read("Dockerfile")?;
    let all = instructions(&text);
    let froms: Vec<&String> = all
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].ends_with(" AS build"), "{froms:?}");
    assert!(
        froms[froms.len() - 1].contains("slim"),
        "slim runtime: {froms:?}"
    );
    // Only the final stage matters for what the container runs.
    let last_from = all.iter().rposition(|(op, _)| op == "FROM").unwrap_or(0);
    let runtime = &all[last_from..];
    let get = |op: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let user = get("USER");
    let user = user.last().context("no USER in the runtime stage")?;
    assert!(
        !matches!(user.split(':').next(), Some("root" | "0")),
        "runs as root: {user}"
    );
    assert!(
        get("COPY").contains(&"deploy/receptor.conf /etc/receptor/receptor.conf"),
        "config at /etc/receptor/receptor.conf"
    );
    assert!(
        get("COPY").iter().any(|c| c.contains("receptorctl")),
        "the Rust receptorctl is in the image"
    );
    assert_eq!(
        get("CMD"),
        [r#"["/usr/bin/receptor", "--config", "/etc/receptor/receptor.conf"]"#]
    );
    assert!(
        get("ENTRYPOINT").iter().any(|e| e.contains("tini")),
        "an init"
    );
    // EXPOSE matches the packaged listener.
    assert!(read("receptor.conf")?.contains("port: 2222"));
    assert_eq!(get("EXPOSE"), ["2222"]);
    let health = dockerfile_healthcheck(&text)?;
    assert_eq!(health[0], "/usr/bin/receptorctl");
    assert!(health.contains(&"/var/run/receptor/receptor.sock".to_owned()));
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore"))?;
    for entry in ["target/", ".git"] {
        assert!(
            ignore.lines().any(|l| l == entry),
            ".dockerignore lacks {entry}"
        );
    }

    if std::env::var_os("RECEPTOR_TEST_DOCKER").is_none_or(|v| v != "1") {
        eprintln!("SKIP docker build: set RECEPTOR_TEST_DOCKER=1 to build and run the image");
        return Ok(());
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let tag = "receptor-rs-test:latest";
    let status = Command::new("docker")
        .args(["build", "-f", "deploy/Dockerfile", "-t", tag, "."])
        .current_dir(root)
        .kill_on_drop(true)
        .status()
        .await?;
    ensure!(status.success(), "docker build failed");
    let out = Command::new("docker")
        .args(["run", "--rm", tag, "/usr/bin/receptor", "--version"])
        .output()
        .await?;
    if !out.status.success() {
        bail!("receptor --version in the image: {out:?}");
    }
    Ok(())
}

// ---- coverage of deploy/ -------------------------------------------------------------------

fn files(dir: &Path, root: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(&path, root, out)?;
        } else {
            out.push(path.strip_prefix(root)?.display().to_string());
        }
    }
    Ok(())
}

/// A new file under deploy/ must get a test (and be listed here).
#[test]
fn every_file_in_deploy_is_checked() -> Result<()> {
    let root = deploy_dir();
    let mut found = Vec::new();
    files(&root, &root, &mut found)?;
    found.sort();
    let mut checked: Vec<String> = [
        "Dockerfile",
        "default.yaml",
        "receptor.conf",
        "systemd/receptor.service",
        "systemd/receptor.sysusers.conf",
        "examples/three-node/node-a.yaml",
        "examples/three-node/node-b.yaml",
        "examples/three-node/node-c.yaml",
        "examples/awx-mesh/README.md",
        "examples/awx-mesh/make-certs.sh",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(
        AWX_NODES
            .iter()
            .map(|n| format!("examples/awx-mesh/{n}.yaml")),
    )
    .collect();
    checked.sort();
    assert_eq!(found, checked);

    // The README documents what make-certs.sh runs.
    let readme = read("examples/awx-mesh/README.md")?;
    let script = read("examples/awx-mesh/make-certs.sh")?;
    for command in [
        "--cert-init",
        "--cert-makereq",
        "--cert-signreq",
        "openssl genrsa",
    ] {
        assert!(readme.contains(command), "README lacks {command}");
        assert!(script.contains(command), "make-certs.sh lacks {command}");
    }
    Ok(())
}
