//! A real 3-node mesh from deploy/examples, driven by the PyPI receptorctl.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::harness::{Daemon, WAIT, receptorctl, status_json, wait_for};

fn example(name: &str) -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/examples/three-node")
        .join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Points an example at a temp dir: its own sockets and data dirs, ephemeral listener ports,
/// and peers at the given addresses.
fn localise(yaml: &str, dir: &Path, peer_addrs: &[(&str, &str)]) -> String {
    let mut text = yaml.replace("/tmp/", &format!("{}/", dir.display()));
    for port in ["27501", "27502"] {
        text = text.replace(&format!("port: {port}"), "port: 0");
    }
    for (from, to) in peer_addrs {
        text = text.replace(from, to);
    }
    text
}

struct ThreeNodes {
    dir: tempfile::TempDir,
    a: Daemon,
    b: Daemon,
    c: Daemon,
}

impl ThreeNodes {
    async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let a = Daemon::start_yaml(
            "node-a",
            dir.path(),
            &localise(&example("node-a.yaml")?, dir.path(), &[]),
        )
        .await?;
        let a_addr = a.tcp_listener_addr().await?;
        let b_yaml = localise(
            &example("node-b.yaml")?,
            dir.path(),
            &[("127.0.0.1:27501", &a_addr)],
        );
        let b = Daemon::start_yaml("node-b", dir.path(), &b_yaml).await?;
        let b_addr = b.tcp_listener_addr().await?;
        let c_yaml = localise(
            &example("node-c.yaml")?,
            dir.path(),
            &[("127.0.0.1:27502", &b_addr)],
        );
        let c = Daemon::start_yaml("node-c", dir.path(), &c_yaml).await?;
        Ok(Self { dir, a, b, c })
    }

    fn socket(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("receptor-{node}.sock"))
    }

    fn logs(&self) -> String {
        format!(
            "--- a\n{}\n--- b\n{}\n--- c\n{}",
            self.a.log(),
            self.b.log(),
            self.c.log()
        )
    }
}

fn route(status: &serde_json::Value, dest: &str) -> Option<String> {
    status["RoutingTable"][dest].as_str().map(str::to_owned)
}

#[tokio::test]
async fn three_node_example_converges_and_receptorctl_sees_it() -> Result<()> {
    crate::harness::receptorctl_bin()?;
    let mesh = ThreeNodes::start().await?;
    let socket_a = mesh.socket("node-a");
    let converged = wait_for(
        "node-a to route to node-c via node-b and see every control service",
        WAIT,
        || {
            let socket = socket_a.clone();
            async move {
                let status = status_json(&socket).await.ok()?;
                let ads = status["Advertisements"].as_array()?;
                let services: Vec<&str> =
                    ads.iter().filter_map(|ad| ad["NodeID"].as_str()).collect();
                let all_ads = ["node-a", "node-b", "node-c"]
                    .iter()
                    .all(|n| services.contains(n));
                (route(&status, "node-c").as_deref() == Some("node-b") && all_ads).then_some(status)
            }
        },
    )
    .await
    .with_context(|| mesh.logs())?;

    assert_eq!(converged["NodeID"], "node-a");
    assert_eq!(route(&converged, "node-b").as_deref(), Some("node-b"));
    assert_eq!(converged["Connections"][0]["NodeID"], "node-b");
    assert_eq!(converged["Connections"][0]["Cost"], 1);
    let costs = &converged["KnownConnectionCosts"];
    assert_eq!(costs["node-b"]["node-c"], 1, "{costs}");
    assert_eq!(costs["node-c"]["node-b"], 1, "{costs}");
    for ad in converged["Advertisements"].as_array().context("ads")? {
        assert_eq!(ad["Service"], "control");
        assert_eq!(ad["ConnType"], 1);
        assert_eq!(ad["Tags"]["type"], "Control Service");
        assert!(
            ad.get("WorkCommands").is_some(),
            "WorkCommands must always be present: {ad}"
        );
    }
    let keys: Vec<&String> = converged.as_object().context("object")?.keys().collect();
    assert_eq!(
        keys,
        [
            "Advertisements",
            "Connections",
            "KnownConnectionCosts",
            "NodeID",
            "RoutingTable",
            "SystemCPUCount",
            "SystemMemoryMiB",
            "Version"
        ]
    );

    // The human-readable form parses our output too.
    let human = receptorctl(&socket_a, &["status"]).await?;
    assert_eq!(human.code, Some(0), "{human:?}");
    assert!(human.stdout.contains("Node ID: node-a"), "{}", human.stdout);
    assert!(
        human.stdout.contains("node-c       node-b"),
        "route table row missing:\n{}",
        human.stdout
    );

    // Ping across two hops.
    let ping = receptorctl(
        &socket_a,
        &["ping", "node-c", "--count", "2", "--delay", "0.1"],
    )
    .await?;
    assert_eq!(ping.code, Some(0), "{ping:?}");
    assert_eq!(
        ping.stdout.matches("Reply from node-c in ").count(),
        2,
        "{}",
        ping.stdout
    );

    let trace = receptorctl(&socket_a, &["traceroute", "node-c"]).await?;
    assert_eq!(trace.code, Some(0), "{trace:?}");
    let hops: Vec<&str> = trace.stdout.lines().collect();
    assert_eq!(hops.len(), 3, "{}", trace.stdout);
    assert!(hops[0].starts_with("0: node-a in "), "{}", trace.stdout);
    assert!(hops[1].starts_with("1: node-b in "), "{}", trace.stdout);
    assert!(hops[2].starts_with("2: node-c in "), "{}", trace.stdout);

    let unknown = receptorctl(&socket_a, &["ping", "nosuch", "--count", "1"]).await?;
    assert_eq!(unknown.code, Some(2), "{unknown:?}");
    assert!(
        unknown.stderr.contains("ERROR: no route to node"),
        "{}",
        unknown.stderr
    );

    // Kill the middle node: node-a loses its route to node-c.
    let ThreeNodes { dir, a, b, c } = mesh;
    let status = b.terminate().await?;
    assert!(status.success(), "node-b exited with {status}");
    wait_for("node-a to drop its route to node-c", WAIT, || {
        let socket = socket_a.clone();
        async move {
            let status = status_json(&socket).await.ok()?;
            (route(&status, "node-c").is_none() && status["Connections"].as_array()?.is_empty())
                .then_some(())
        }
    })
    .await
    .with_context(|| format!("--- a\n{}\n--- c\n{}", a.log(), c.log()))?;
    let lost = receptorctl(&socket_a, &["ping", "node-c", "--count", "1"]).await?;
    assert_eq!(lost.code, Some(2), "{lost:?}");
    drop(dir);
    Ok(())
}

#[tokio::test]
async fn sigterm_stops_the_daemon_within_its_deadline() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let yaml = localise(&example("node-a.yaml")?, dir.path(), &[]);
    let daemon = Daemon::start_yaml("node-a", dir.path(), &yaml).await?;
    daemon.tcp_listener_addr().await?;
    // terminate() fails if the process is still running after its wait limit.
    let status = daemon.terminate().await?;
    if !status.success() {
        bail!("exit status {status}");
    }
    Ok(())
}

#[tokio::test]
async fn udp_and_websocket_backends_from_the_command_line() -> Result<()> {
    crate::harness::receptorctl_bin()?;
    let dir = tempfile::tempdir()?;
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    let arg = |n: &str| format!("filename={}", sock(n).display());
    let a = Daemon::start(
        "a",
        &[
            "--node",
            "id=a",
            "--udp-listener",
            "port=0",
            "bindaddr=127.0.0.1",
            "--control-service",
            &arg("a"),
        ],
    )
    .await?;
    let a_addr = a.wait_log(r"udp listener bound addr=(\S+)").await?;
    let b = Daemon::start(
        "b",
        &[
            "--node",
            "id=b",
            "--udp-peer",
            &format!("address={a_addr}"),
            "--ws-listener",
            "port=0",
            "bindaddr=127.0.0.1",
            "path=/mesh",
            "--control-service",
            &arg("b"),
        ],
    )
    .await?;
    let b_addr = b.wait_log(r"ws listener bound addr=(\S+)").await?;
    let c = Daemon::start(
        "c",
        &[
            "--node",
            "id=c",
            "--ws-peer",
            &format!("ws://{b_addr}/mesh"),
            "--control-service",
            &arg("c"),
        ],
    )
    .await?;
    let socket = sock("c");
    wait_for("c to route to a via b", WAIT, || {
        let socket = socket.clone();
        async move {
            (route(&status_json(&socket).await.ok()?, "a").as_deref() == Some("b")).then_some(())
        }
    })
    .await
    .with_context(|| format!("--- a\n{}\n--- b\n{}\n--- c\n{}", a.log(), b.log(), c.log()))?;
    let ping = receptorctl(&socket, &["ping", "a", "--count", "1"]).await?;
    assert_eq!(ping.code, Some(0), "{ping:?}");
    assert!(ping.stdout.contains("Reply from a in "), "{}", ping.stdout);
    Ok(())
}

/// Reads from `stream` until `want` appears in what was read, under a timeout.
pub(crate) async fn read_until(
    stream: &mut tokio::net::UnixStream,
    seen: &mut String,
    want: &str,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !seen.contains(want) {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                bail!("EOF before {want:?}; got {seen:?}");
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        Ok(())
    })
    .await
    .with_context(|| format!("waiting for {want:?}; got {seen:?}"))?
}

#[tokio::test]
async fn connect_reaches_a_remote_control_service_over_quic() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    crate::harness::receptorctl_bin()?;
    let mesh = ThreeNodes::start().await?;
    let socket_a = mesh.socket("node-a");
    wait_for("node-a to route to node-c", WAIT, || {
        let socket = socket_a.clone();
        async move { (route(&status_json(&socket).await.ok()?, "node-c").is_some()).then_some(()) }
    })
    .await
    .with_context(|| mesh.logs())?;

    // The raw protocol: a missing service is an ERROR and the session goes on; then a bridge
    // to node-c's control service, speaking the same protocol through the tunnel.
    let mut client = tokio::net::UnixStream::connect(&socket_a).await?;
    let mut seen = String::new();
    read_until(&mut client, &mut seen, "Receptor Control, node node-a\n").await?;
    client.write_all(b"connect node-c nosuch \n").await?;
    read_until(&mut client, &mut seen, "ERROR: service unknown").await?;
    client.write_all(b"connect node-c control \n").await?;
    read_until(&mut client, &mut seen, "Connecting\n").await?;
    read_until(&mut client, &mut seen, "Receptor Control, node node-c\n").await?;
    client
        .write_all(b"{\"command\":\"status\",\"requested_fields\":[\"NodeID\"]}\n")
        .await?;
    read_until(&mut client, &mut seen, "{\"NodeID\":\"node-c\"}\n").await?;
    drop(client);

    // receptorctl's remote form runs the same bridge.
    let list = receptorctl(&socket_a, &["work", "list", "--node", "node-c"]).await?;
    assert_eq!(list.code, Some(0), "{list:?}\n{}", mesh.logs());
    assert_eq!(list.stdout.trim(), "{}", "{list:?}");
    Ok(())
}
