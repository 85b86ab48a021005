//! A lab of network namespaces joined by veth pairs, for fault injection on real links: one
//! namespace per node, links that can be cut (`ip link set down`) and impaired (loss, delay,
//! reordering). Everything is created by the test and removed by [`Lab`]'s `Drop`, even when
//! the test panics; namespaces left by a test process that died are removed by the next lab.
//!
//! Impairment uses `tc netem` where the kernel has it (`sch_netem`). Kernels without it
//! (some CI VMs) get an equivalent built from what is there: random loss from an nftables
//! `numgen random` drop rule on the receiving side, and delay with reordering from an HTB
//! "slow lane" that a random share of the packets is steered into (`meta priority`), so
//! those packets queue behind a low rate while the rest overtake them. Without either, the
//! impairment is skipped with a printed `SKIP:` line and the rest of the test still runs.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// iproute2's `ip` (Debian puts it in /usr/sbin, which is not always on PATH).
pub(crate) const IP: &str = "/usr/sbin/ip";
const TC: &str = "/usr/sbin/tc";
const NFT: &str = "/usr/sbin/nft";
/// Every namespace this harness creates starts with this, then `<pid>-<lab>-`.
const PREFIX: &str = "rrs";

static LABS: AtomicU32 = AtomicU32::new(0);

/// Runs a command, failing with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why namespaces cannot be used here, or `None` when they can (root, iproute2, and a probe
/// namespace could be created).
pub(crate) fn unavailable() -> Option<String> {
    let euid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if euid.as_deref() != Some("0") {
        return Some("network namespace tests need root".to_owned());
    }
    if !std::path::Path::new(IP).exists() {
        return Some(format!("{IP} (iproute2) is not installed"));
    }
    let probe = format!("{PREFIX}-{}-probe", std::process::id());
    if let Err(error) = run(IP, &["netns", "add", &probe]) {
        return Some(format!("cannot create a network namespace: {error}"));
    }
    let _ = run(IP, &["netns", "del", &probe]);
    None
}

/// Prints the skip line and returns true when namespaces cannot be used.
pub(crate) fn skip(test: &str) -> bool {
    match unavailable() {
        Some(why) => {
            println!("SKIP: {test}: {why}");
            true
        }
        None => false,
    }
}

/// How a link is impaired, in both directions.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Impairment {
    /// Packets dropped at random, in percent.
    pub(crate) loss_percent: u32,
    /// Base one-way delay (netem only; the fallback delays the slow lane instead).
    pub(crate) delay_ms: u32,
    /// Packets delayed and so reordered, in percent.
    pub(crate) reorder_percent: u32,
}

/// How [`Lab::impair`] applied an impairment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// `tc netem`.
    Netem,
    /// nftables drops plus an HTB slow lane (no `sch_netem` in this kernel).
    Emulated,
    /// Neither is available: nothing was applied (a `SKIP:` line was printed).
    Skipped,
}

/// One veth link between two namespaces.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    ends: [(String, String); 2],
    addrs: [String; 2],
}

impl Link {
    /// The address of the end in `node`'s namespace.
    pub(crate) fn addr_of(&self, lab: &Lab, node: &str) -> Result<&str> {
        let ns = lab.ns(node)?;
        self.ends
            .iter()
            .zip(&self.addrs)
            .find(|((n, _), _)| *n == ns)
            .map(|(_, a)| a.as_str())
            .with_context(|| format!("{node} is not on this link"))
    }
}

/// Namespaces and links of one test; all removed on drop.
#[derive(Debug)]
pub(crate) struct Lab {
    prefix: String,
    nodes: Vec<(String, String)>,
    links: Vec<Link>,
}

impl Lab {
    /// A new, empty lab. Call [`skip`] first.
    pub(crate) fn new() -> Result<Self> {
        remove_stale();
        let prefix = format!(
            "{PREFIX}-{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Self {
            prefix,
            nodes: Vec::new(),
            links: Vec::new(),
        })
    }

    /// Adds a namespace for `node` (with its loopback up); returns the namespace name.
    pub(crate) fn add_node(&mut self, node: &str) -> Result<String> {
        let ns = format!("{}-{node}", self.prefix);
        run(IP, &["netns", "add", &ns])?;
        self.nodes.push((node.to_owned(), ns.clone()));
        run(IP, &["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace of `node`.
    pub(crate) fn ns(&self, node: &str) -> Result<&str> {
        self.nodes
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, ns)| ns.as_str())
            .with_context(|| format!("no node {node} in the lab"))
    }

    /// Joins `a` and `b` with a veth pair (`to-b` in a's namespace, `to-a` in b's), each end
    /// with an address of its own /24; returns the link's index.
    pub(crate) fn link(&mut self, a: &str, b: &str) -> Result<usize> {
        let index = self.links.len();
        let (ns_a, ns_b) = (self.ns(a)?.to_owned(), self.ns(b)?.to_owned());
        let (dev_a, dev_b) = (format!("to-{b}"), format!("to-{a}"));
        run(
            IP,
            &[
                "link", "add", &dev_a, "netns", &ns_a, "type", "veth", "peer", "name", &dev_b,
                "netns", &ns_b,
            ],
        )?;
        let addrs = [format!("10.77.{index}.1"), format!("10.77.{index}.2")];
        for ((ns, dev), addr) in [(&ns_a, &dev_a), (&ns_b, &dev_b)].iter().zip(&addrs) {
            run(
                IP,
                &["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev],
            )?;
            run(IP, &["-n", ns, "link", "set", dev, "up"])?;
        }
        self.links.push(Link {
            ends: [(ns_a, dev_a), (ns_b, dev_b)],
            addrs,
        });
        Ok(index)
    }

    /// Link `index`.
    pub(crate) fn get(&self, index: usize) -> Result<&Link> {
        self.links.get(index).context("no such link")
    }

    /// Cuts (`up = false`) or restores link `index`: both ends go down or up, so neither
    /// side can send and nothing tells either side (no RST, no ICMP), as with a pulled cable.
    pub(crate) fn set_up(&self, index: usize, up: bool) -> Result<()> {
        let link = self.get(index)?;
        for (ns, dev) in &link.ends {
            run(
                IP,
                &["-n", ns, "link", "set", dev, if up { "up" } else { "down" }],
            )?;
        }
        Ok(())
    }

    /// Impairs link `index` in both directions; see the module doc for how.
    pub(crate) fn impair(&self, index: usize, how: Impairment) -> Result<Applied> {
        let link = self.get(index)?.clone();
        if netem_available(&link.ends[0].0, &link.ends[0].1) {
            for (ns, dev) in &link.ends {
                let mut args: Vec<String> = ["-n", ns, "qdisc", "replace", "dev", dev, "root"]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
                args.push("netem".into());
                let delay = how.delay_ms.max(1);
                args.extend([
                    "delay".into(),
                    format!("{delay}ms"),
                    format!("{}ms", delay / 2),
                ]);
                if how.loss_percent > 0 {
                    args.extend(["loss".into(), format!("{}%", how.loss_percent)]);
                }
                if how.reorder_percent > 0 {
                    args.extend([
                        "reorder".into(),
                        format!("{}%", 100 - how.reorder_percent),
                        "50%".into(),
                    ]);
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run(TC, &args)?;
            }
            return Ok(Applied::Netem);
        }
        if !std::path::Path::new(NFT).exists() {
            println!(
                "SKIP: link impairment (loss/delay/reorder): this kernel has no sch_netem and \
                 {NFT} (Debian nftables) is not installed; the link stays unimpaired"
            );
            return Ok(Applied::Skipped);
        }
        for (ns, dev) in &link.ends {
            emulate(ns, dev, how)?;
        }
        Ok(Applied::Emulated)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it (and so their peers).
        for (_, ns) in &self.nodes {
            if let Err(error) = run(IP, &["netns", "del", ns]) {
                eprintln!("cannot remove network namespace {ns}: {error}");
            }
        }
    }
}

/// Whether `tc netem` works here (probed on a real device, then remembered).
fn netem_available(ns: &str, dev: &str) -> bool {
    static NETEM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NETEM.get_or_init(|| {
        let ok = run(
            TC,
            &[
                "-n", ns, "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms",
            ],
        )
        .is_ok();
        if ok {
            let _ = run(TC, &["-n", ns, "qdisc", "del", "dev", dev, "root"]);
        } else {
            println!(
                "note: this kernel has no sch_netem (tc netem); loss, delay and reordering are \
                 emulated with nftables drops and an HTB slow lane"
            );
        }
        ok
    })
}

/// Loss: packets arriving on `dev` are dropped at random. Delay and reordering: a random
/// share of the packets leaving through `dev` go to an HTB class limited to 2 Mbit/s, where
/// they queue while the others pass at full speed.
fn emulate(ns: &str, dev: &str, how: Impairment) -> Result<()> {
    run(
        TC,
        &[
            "-n", ns, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default",
            "10", "r2q", "1000",
        ],
    )?;
    for (class, rate) in [("1:10", "10gbit"), ("1:20", "2mbit")] {
        run(
            TC,
            &[
                "-n", ns, "class", "add", "dev", dev, "parent", "1:", "classid", class, "htb",
                "rate", rate, "ceil", rate,
            ],
        )?;
    }
    let table = format!("faults_{}", dev.replace('-', "_"));
    let mut rules = format!("table inet {table} {{\n");
    rules.push_str("  chain in {\n    type filter hook input priority 0\n");
    if how.loss_percent > 0 {
        rules.push_str(&format!(
            "    iifname \"{dev}\" numgen random mod 100 < {} drop\n",
            how.loss_percent
        ));
    }
    rules.push_str("  }\n  chain out {\n    type filter hook postrouting priority 0\n");
    if how.reorder_percent > 0 {
        let slow = how.reorder_percent.min(99);
        rules.push_str(&format!(
            "    oifname \"{dev}\" meta priority set numgen random mod 100 map {{ 0-{} : 1:20, {}-99 : 1:10 }}\n",
            slow - 1,
            slow
        ));
    }
    rules.push_str("  }\n}\n");
    let mut child = Command::new(IP)
        .args(["netns", "exec", ns, NFT, "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("nft stdin")?;
        stdin.write_all(rules.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes namespaces of earlier test processes that died before their labs were dropped.
fn remove_stale() {
    let Ok(list) = run(IP, &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(IP, &["netns", "del", name]);
        }
    }
}
