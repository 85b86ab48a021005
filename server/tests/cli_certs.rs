//! The built `receptor` binary: `--cert-init`, `--cert-makereq`, `--cert-signreq` as Go's
//! command line runs them, and the startup node-ID check as the user sees it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result};

fn receptor(dir: &Path, args: &[&str], stdin: &str) -> Result<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_receptor"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    Ok(child.wait_with_output()?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn cert_utilities_from_the_command_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let out = receptor(
        d,
        &[
            "--cert-init",
            "commonname=Receptor Test CA",
            "bits=2048",
            "outcert=ca.crt",
            "outkey=ca.key",
        ],
        "",
    )?;
    assert!(out.status.success(), "{}", stdout(&out));
    let out = receptor(
        d,
        &[
            "--cert-makereq",
            "bits=2048",
            "commonname=node1",
            "dnsname=localhost",
            "ipaddress=127.0.0.1",
            "nodeid=node1",
            "outreq=node1.csr",
            "outkey=node1.key",
        ],
        "",
    )?;
    assert!(out.status.success(), "{}", stdout(&out));
    let sign = [
        "--cert-signreq",
        "req=node1.csr",
        "cacert=ca.crt",
        "cakey=ca.key",
    ];

    let out = receptor(d, &[&sign[..], &["outcert=no.crt"]].concat(), "no\n")?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).ends_with("Sign certificate (yes/no)? Error: user declined\n"),
        "{}",
        stdout(&out)
    );
    assert!(!d.join("no.crt").exists());

    let out = receptor(d, &[&sign[..], &["outcert=node1.crt"]].concat(), "yes\n")?;
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("    Receptor Node ID: node1\n"));

    let out = receptor(
        d,
        &[&sign[..], &["outcert=quiet.crt", "verify=true"]].concat(),
        "",
    )?;
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(stdout(&out), "", "verify=true does not prompt");

    let cert = std::fs::read(d.join("node1.crt"))?;
    let der = receptor_server::certs::first_certificate(&cert)?;
    assert_eq!(receptor_mesh::tls::receptor_names(&der), ["node1"]);

    // The node refuses to start with a certificate for another node.
    let out = receptor(
        d,
        &[
            "--node",
            "id=node2",
            "--tls-server",
            "name=srv",
            "cert=node1.crt",
            "key=node1.key",
            "--tcp-listener",
            "port=0",
            "bindaddr=127.0.0.1",
            "tls=srv",
        ],
        "",
    )?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(
            "Error: error preparing tls server config: nodeID=node2 not found in certificate \
             name(s); names found=[node1]; cfg section=srv; server cert=node1.crt\n"
        ),
        "{}",
        stdout(&out)
    );
    Ok(())
}
