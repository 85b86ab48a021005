//! Crash safety (issue 8): SIGKILL a node at random points of work units' lives (while a
//! payload streams in, while units run, while results stream out, during release), restart
//! it on the same data directory, and check that nothing was lost, corrupted, stuck or leaked:
//!
//! - every unit whose submission was acknowledged is still listed and reaches a final state
//!   (running units carry on: their command runners survive the crash);
//! - every unit that succeeded has exactly its expected output;
//! - every status file parses, and no temporary or quarantined file is left anywhere;
//! - a release that was acknowledged is final (the unit and its directory are gone); one cut
//!   short by the crash can be repeated, and no half-deleted unit directory is left behind.
//!
//! The kill points come from a fixed-seed generator (`CRASH_SEED` overrides the seed,
//! `CRASH_ITERATIONS` the number of kills, for a longer soak), so a failure can be replayed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;

use crate::harness::{
    Daemon, control, wait_final, wait_for, work_list, work_results, work_status, work_submit,
};

/// How long a unit may take to become final after a restart (the runner's own work is
/// about a second).
const SETTLE: Duration = Duration::from_secs(30);

/// SplitMix64: a tiny deterministic generator, so kill points can be replayed from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a unit must look like after every restart.
#[derive(Debug, Clone)]
struct Expect {
    /// Its output if it succeeds.
    output: Vec<u8>,
    /// The submission was acknowledged (`Job Started`): it must succeed.
    acknowledged: bool,
    /// A release was acknowledged: it must be gone.
    released: bool,
}

/// `seq 1 n` in `chunks` pieces 50 ms apart: about `chunks / 20` seconds of running.
fn gen_params(n: u64, chunks: u64) -> String {
    let per = n / chunks;
    format!(
        "-c 'for i in $(seq 0 {last}); do seq $((i*{per}+1)) $(((i+1)*{per})); sleep 0.05; done'",
        last = chunks - 1
    )
}

fn seq_output(n: u64) -> Vec<u8> {
    (1..=n)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect()
}

/// Files and directories in a data dir that must never survive a restart.
fn leftovers(data_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_dir() || name.starts_with('.') {
            found.push(path);
            continue;
        }
        let Ok(files) = std::fs::read_dir(&path) else {
            continue;
        };
        for file in files.flatten() {
            let file_name = file.file_name().to_string_lossy().into_owned();
            if !["status", "status.lock", "stdin", "stdout", "traceparent"]
                .contains(&file_name.as_str())
            {
                found.push(file.path());
            }
        }
    }
    found
}

/// The daemon under test and everything known about its units.
struct Node {
    dir: tempfile::TempDir,
    daemon: Option<Daemon>,
    units: BTreeMap<String, Expect>,
}

impl Node {
    fn yaml(dir: &Path) -> String {
        let d = dir.display();
        format!(
            "- node:\n    id: crashy\n    datadir: {d}/data\n\
             - log-level: info\n\
             - local-only:\n\
             - control-service:\n    service: control\n    filename: {d}/crashy.sock\n\
             - work-command:\n    worktype: cat\n    command: cat\n\
             - work-command:\n    worktype: sh\n    command: bash\n    allowruntimeparams: true\n"
        )
    }

    async fn start() -> Result<Self> {
        let mut node = Self {
            dir: tempfile::tempdir()?,
            daemon: None,
            units: BTreeMap::new(),
        };
        node.boot().await?;
        Ok(node)
    }

    async fn boot(&mut self) -> Result<()> {
        let daemon =
            Daemon::start_yaml("crashy", self.dir.path(), &Self::yaml(self.dir.path())).await?;
        daemon.wait_log("control socket listening").await?;
        self.daemon = Some(daemon);
        Ok(())
    }

    async fn crash(&mut self) -> Result<()> {
        let daemon = self.daemon.take().context("not running")?;
        daemon.kill().await
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("crashy.sock")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data/crashy")
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// Every invariant of the module doc, after a restart.
    async fn check(&self, context: &str) -> Result<()> {
        check_units(
            &self.socket(),
            &self.data_dir(),
            &self.units,
            context,
            &self.log(),
        )
        .await
    }
}

/// Every invariant of the module doc, for the units `units` of the node at `socket` whose
/// data directory is `data_dir`.
async fn check_units(
    socket: &Path,
    data_dir: &Path,
    units: &BTreeMap<String, Expect>,
    context: &str,
    log: &str,
) -> Result<()> {
    for (id, expect) in units {
        let status = work_status(socket, id).await?;
        if expect.released {
            ensure!(
                status.is_none(),
                "{context}: released unit {id} is back: {status:?}"
            );
            ensure!(
                !data_dir.join(id).exists(),
                "{context}: released unit {id} left its directory"
            );
            continue;
        }
        let Some(_) = status else {
            if expect.acknowledged {
                bail!("{context}: acknowledged unit {id} was lost\n{}", log);
            }
            // Never acknowledged (the crash may have hit before its status was written),
            // or released just before the crash: either way nothing may remain of it.
            ensure!(
                !data_dir.join(id).exists(),
                "{context}: unit {id} is unknown but its directory remains"
            );
            continue;
        };
        let status = wait_final(socket, id, SETTLE)
            .await
            .with_context(|| format!("{context}: unit {id} stuck\n{}", log))?;
        if expect.acknowledged {
            ensure!(
                status["State"] == 2,
                "{context}: acknowledged unit {id} did not succeed: {status}\n{}",
                log
            );
        }
        if status["State"] == 2 {
            let got = work_results(socket, id, SETTLE).await?;
            ensure!(
                got == expect.output,
                "{context}: unit {id} succeeded with {} bytes of output instead of the {} expected",
                got.len(),
                expect.output.len()
            );
        }
    }
    // On disk: every unit directory has a status file that parses, and nothing else is
    // left over (temp files, quarantined status files, half-deleted directories).
    let listed = work_list(socket).await?;
    let listed = listed.as_object().context("work list is not an object")?;
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() || name.starts_with('.') {
                continue;
            }
            let status = entry.path().join("status");
            let text = std::fs::read(&status)
                .with_context(|| format!("{context}: {} has no status file", name))?;
            serde_json::from_slice::<serde_json::Value>(&text)
                .with_context(|| format!("{context}: corrupt status file of {name}"))?;
            ensure!(
                listed.contains_key(&name),
                "{context}: unit directory {name} is not listed"
            );
        }
    }
    // A runner's last status write may be under way (its temp file exists for a moment):
    // only a file that stays is a leak.
    wait_for(&format!("{context}: no leftover files"), SETTLE, || async {
        leftovers(data_dir).is_empty().then_some(())
    })
    .await
    .with_context(|| format!("{context}: files left behind: {:?}", leftovers(data_dir)))?;
    Ok(())
}

/// One crash of the loop: where the kill lands.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// While a 4 MB payload streams in.
    Submit,
    /// While a unit runs.
    Run,
    /// While its results stream out.
    Results,
    /// While a release is under way.
    Release,
}

#[tokio::test]
async fn local_units_survive_sigkill_at_random_points() -> Result<()> {
    let seed = env_u64("CRASH_SEED", 0x5eed_0008);
    let iterations = env_u64("CRASH_ITERATIONS", 24);
    println!("crash loop: seed {seed:#x}, {iterations} kills");
    let mut rng = Rng(seed);
    let mut node = Node::start().await?;
    let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    for iteration in 0..iterations {
        let point = match rng.below(4) {
            0 => Point::Submit,
            1 => Point::Run,
            2 => Point::Results,
            _ => Point::Release,
        };
        let delay = Duration::from_millis(rng.below(600));
        let context = format!("iteration {iteration} ({point:?} after {delay:?})");
        println!("{context}");
        let socket = node.socket();
        match point {
            Point::Submit => {
                let task = {
                    let socket = socket.clone();
                    let payload = payload.clone();
                    tokio::spawn(async move {
                        work_submit(
                            &socket,
                            json!({"node": "localhost", "worktype": "cat"}),
                            &payload,
                        )
                        .await
                    })
                };
                tokio::time::sleep(delay).await; // the kill point
                node.crash().await?;
                if let Ok(Ok((id, result))) = task.await {
                    node.units.insert(
                        id,
                        Expect {
                            output: payload.clone(),
                            acknowledged: result.contains("Job Started"),
                            released: false,
                        },
                    );
                }
            }
            Point::Run | Point::Results => {
                let n = 20 * (1_000 + rng.below(1_000));
                let (id, result) = work_submit(
                    &socket,
                    json!({"node": "localhost", "worktype": "sh", "params": gen_params(n, 20)}),
                    b"",
                )
                .await?;
                ensure!(result.contains("Job Started"), "{context}: {result}");
                let expected = seq_output(n);
                node.units.insert(
                    id.clone(),
                    Expect {
                        output: expected.clone(),
                        acknowledged: true,
                        released: false,
                    },
                );
                let reader = matches!(point, Point::Results).then(|| {
                    let socket = socket.clone();
                    tokio::spawn(async move { work_results(&socket, &id, SETTLE).await })
                });
                tokio::time::sleep(delay).await; // the kill point
                node.crash().await?;
                if let Some(reader) = reader {
                    // Cut short by the crash: whatever arrived must be a prefix.
                    let got = reader.await?.unwrap_or_default();
                    ensure!(
                        expected.starts_with(&got),
                        "{context}: a results stream cut by the crash was corrupt"
                    );
                }
            }
            Point::Release => {
                // Release a unit that is final by now (all are, after a check), or a fresh one.
                let candidate = node
                    .units
                    .iter()
                    .find(|(_, e)| !e.released)
                    .map(|(id, _)| id.clone());
                let id = match candidate {
                    Some(id) => id,
                    None => {
                        let (id, _) = work_submit(
                            &socket,
                            json!({"node": "localhost", "worktype": "cat"}),
                            b"x\n",
                        )
                        .await?;
                        node.units.insert(
                            id.clone(),
                            Expect {
                                output: b"x\n".to_vec(),
                                acknowledged: true,
                                released: false,
                            },
                        );
                        id
                    }
                };
                // From here on its fate is open: released, or still there.
                if let Some(expect) = node.units.get_mut(&id) {
                    expect.acknowledged = false;
                }
                let task = {
                    let socket = socket.clone();
                    let id = id.clone();
                    tokio::spawn(
                        async move { control(&socket, &format!("work release {id}")).await },
                    )
                };
                tokio::time::sleep(delay / 10).await; // the kill point
                node.crash().await?;
                if let Ok(Ok(reply)) = task.await
                    && reply.contains("\"released\"")
                    && let Some(expect) = node.units.get_mut(&id)
                {
                    expect.released = true;
                }
            }
        }
        node.boot().await?;
        node.check(&context).await?;
        // A release the crash cut short can be finished.
        let unfinished: Vec<String> = node
            .units
            .iter()
            .filter(|(_, e)| !e.released)
            .map(|(id, _)| id.clone())
            .collect();
        if matches!(point, Point::Release) {
            for id in &unfinished {
                if work_status(&node.socket(), id).await?.is_none() {
                    // Its release went through just before the crash (check() verified that
                    // nothing of it remains).
                    if let Some(expect) = node.units.get_mut(id) {
                        expect.released = true;
                    }
                    continue;
                }
                let reply = control(&node.socket(), &format!("work release {id}")).await?;
                ensure!(
                    reply.contains("\"released\""),
                    "{context}: release of {id} after restart: {reply}"
                );
                if let Some(expect) = node.units.get_mut(id) {
                    expect.released = true;
                }
                ensure!(!node.data_dir().join(id).exists());
                break;
            }
        }
    }
    // Everything can still be released (the units we know, and those whose IDs the crash
    // kept from us), leaving an empty data directory.
    let listed = work_list(&node.socket()).await?;
    for id in listed.as_object().context("work list")?.keys() {
        let reply = control(&node.socket(), &format!("work release {id}")).await?;
        ensure!(reply.contains("\"released\""), "release {id}: {reply}");
    }
    let socket = node.socket();
    wait_for("the data directory to be empty", SETTLE, || async {
        let listed = work_list(&socket).await.ok()?;
        let empty = listed.as_object()?.is_empty()
            && std::fs::read_dir(node.data_dir()).ok()?.next().is_none();
        empty.then_some(())
    })
    .await
    .with_context(|| format!("{:?}", leftovers(&node.data_dir())))?;
    Ok(())
}

/// The states a crash can leave at each file write, made on purpose (a random SIGKILL hits
/// these windows only rarely): a status temp file not yet renamed, a release interrupted
/// after its rename, a unit directory whose first status was never written, and a command
/// runner started just before the crash whose PID was never recorded. After a restart none of
/// them may leak, and the unit whose runner was running must finish normally.
#[tokio::test]
async fn leftovers_of_a_crash_at_each_write_are_recovered() -> Result<()> {
    let mut node = Node::start().await?;
    let socket = node.socket();
    let (done, _) = work_submit(
        &socket,
        json!({"node": "localhost", "worktype": "cat"}),
        b"kept\n",
    )
    .await?;
    wait_final(&socket, &done, SETTLE).await?;
    node.units.insert(
        done.clone(),
        Expect {
            output: b"kept\n".to_vec(),
            acknowledged: true,
            released: false,
        },
    );
    node.crash().await?;
    let data = node.data_dir();

    // 1. A status write cut between its temp file and the rename.
    std::fs::write(data.join(&done).join(".status.tmp"), "{\"State\":1,\"Det")?;
    // 2. A release cut after renaming the directory away.
    let trash = data.join(".released-Gone0001");
    std::fs::create_dir_all(&trash)?;
    std::fs::write(trash.join("stdout"), "old output")?;
    // 3. Unit directories whose first status was never written (or, with a delete that did
    //    not rename first, whose status went before the rest).
    std::fs::create_dir_all(data.join("Orphan01"))?;
    std::fs::create_dir_all(data.join("Orphan02"))?;
    std::fs::write(data.join("Orphan02/stdout"), "half deleted")?;
    // 4. A runner started just before the crash, its PID not yet in the status file.
    let n = 20 * 1_500;
    let params = gen_params(n, 20);
    let launched = data.join("Launch01");
    std::fs::create_dir_all(&launched)?;
    std::fs::write(launched.join("stdin"), "")?;
    let extra = json!({"Pid": 0, "Params": params}).to_string();
    std::fs::write(
        launched.join("status"),
        format!(
            "{{\"State\":0,\"Detail\":\"Launching command runner\",\"StdoutSize\":0,\"WorkType\":\"sh\",\"ExtraData\":{extra}}}\n"
        ),
    )?;
    let mut runner = tokio::process::Command::new(crate::harness::receptor_bin()?)
        .args([
            "--node",
            "id=worker",
            "--log-level",
            "info",
            "--command-runner",
        ])
        .arg("command=bash")
        .arg(format!("params={params}"))
        .arg(format!("unitdir={}", launched.display()))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    node.units.insert(
        "Launch01".to_owned(),
        Expect {
            output: seq_output(n),
            acknowledged: true,
            released: false,
        },
    );

    node.boot().await?;
    ensure!(!trash.exists(), "the interrupted release was not finished");
    for orphan in ["Orphan01", "Orphan02"] {
        ensure!(
            !data.join(orphan).exists(),
            "{orphan} (no status file) was left behind"
        );
    }
    let status = wait_final(&socket, "Launch01", SETTLE)
        .await
        .with_context(|| node.log())?;
    ensure!(
        status["State"] == 2,
        "the unit whose runner ran on was not followed: {status}\n{}",
        node.log()
    );
    tokio::time::timeout(SETTLE, runner.wait()).await??;
    node.check("after a crash at each write").await?;
    Ok(())
}

// === remote work ===

/// Which node of a remote-work pair the loop kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// The node the units were submitted to (`sub`), which mirrors them.
    Submitter,
    /// The node running them (`exe`).
    Executor,
}

/// Two nodes on loopback: `sub` submits remote work that runs on `exe`. The victim is the
/// dialer, so a restarted victim reconnects at once (the survivor's listener never moves).
struct Pair {
    dir: tempfile::TempDir,
    victim: Victim,
    survivor: Daemon,
    survivor_addr: String,
    killed: Option<Daemon>,
    /// Units of `sub`.
    units: BTreeMap<String, Expect>,
}

impl Pair {
    fn yaml(dir: &Path, id: &str, peer: Option<&str>) -> String {
        let d = dir.display();
        let mut yaml = format!(
            "- node:\n    id: {id}\n    datadir: {d}/data\n\
             - log-level: info\n\
             - control-service:\n    service: control\n    filename: {d}/{id}.sock\n\
             - work-command:\n    worktype: cat\n    command: cat\n\
             - work-command:\n    worktype: sh\n    command: bash\n    allowruntimeparams: true\n"
        );
        match peer {
            Some(addr) => yaml.push_str(&format!(
                "- tcp-peer:\n    address: {addr}\n    redial: true\n"
            )),
            None => yaml.push_str("- tcp-listener:\n    bindaddr: 127.0.0.1\n    port: 0\n"),
        }
        yaml
    }

    fn victim_id(&self) -> &'static str {
        match self.victim {
            Victim::Submitter => "sub",
            Victim::Executor => "exe",
        }
    }

    fn survivor_id(&self) -> &'static str {
        match self.victim {
            Victim::Submitter => "exe",
            Victim::Executor => "sub",
        }
    }

    async fn start(victim: Victim) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let id = match victim {
            Victim::Submitter => "exe",
            Victim::Executor => "sub",
        };
        let survivor =
            Daemon::start_yaml(id, dir.path(), &Self::yaml(dir.path(), id, None)).await?;
        let survivor_addr = survivor.tcp_listener_addr().await?;
        let mut pair = Self {
            dir,
            victim,
            survivor,
            survivor_addr,
            killed: None,
            units: BTreeMap::new(),
        };
        pair.boot().await?;
        Ok(pair)
    }

    async fn boot(&mut self) -> Result<()> {
        let id = self.victim_id();
        let yaml = Self::yaml(self.dir.path(), id, Some(&self.survivor_addr));
        let daemon = Daemon::start_yaml(id, self.dir.path(), &yaml).await?;
        daemon.wait_log("control socket listening").await?;
        self.killed = Some(daemon);
        // The submitter must route to the executor again before it can do anything remote.
        let socket = self.socket("sub");
        wait_for("sub to route to exe", SETTLE, || {
            let socket = socket.clone();
            async move {
                let status = crate::harness::status_json(&socket).await.ok()?;
                status["RoutingTable"].get("exe").map(drop)
            }
        })
        .await
        .with_context(|| self.logs())
    }

    async fn crash(&mut self) -> Result<()> {
        self.killed.take().context("not running")?.kill().await
    }

    fn socket(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.sock"))
    }

    fn data_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join("data").join(id)
    }

    fn logs(&self) -> String {
        format!(
            "--- {} (survivor)\n{}\n--- {} (killed)\n{}",
            self.survivor_id(),
            self.survivor.log(),
            self.victim_id(),
            self.killed.as_ref().map(Daemon::log).unwrap_or_default()
        )
    }

    async fn check(&self, context: &str) -> Result<()> {
        check_units(
            &self.socket("sub"),
            &self.data_dir("sub"),
            &self.units,
            context,
            &self.logs(),
        )
        .await?;
        // The executor: nothing stuck, nothing leaked.
        let exe = self.socket("exe");
        let listed = work_list(&exe).await?;
        for id in listed.as_object().context("work list")?.keys() {
            wait_final(&exe, id, SETTLE)
                .await
                .with_context(|| format!("{context}: exe's unit {id} stuck\n{}", self.logs()))?;
        }
        let exe_dir = self.data_dir("exe");
        wait_for(
            &format!("{context}: no leftover files on exe"),
            SETTLE,
            || async { leftovers(&exe_dir).is_empty().then_some(()) },
        )
        .await
        .with_context(|| {
            format!(
                "{context}: files left behind on exe: {:?}",
                leftovers(&exe_dir)
            )
        })?;
        Ok(())
    }
}

async fn remote_crash_loop(victim: Victim, seed: u64) -> Result<()> {
    let seed = env_u64("CRASH_SEED", seed);
    let iterations = env_u64("CRASH_ITERATIONS", 24) / 6;
    println!("remote crash loop ({victim:?} killed): seed {seed:#x}, {iterations} kills");
    let mut rng = Rng(seed);
    let mut pair = Pair::start(victim).await?;
    let payload: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
    for iteration in 0..iterations {
        let point = match rng.below(4) {
            0 => Point::Submit,
            1 => Point::Run,
            2 => Point::Results,
            _ => Point::Release,
        };
        let delay = Duration::from_millis(rng.below(1500));
        let context = format!("iteration {iteration} ({point:?} after {delay:?})");
        println!("{context}");
        let sub = pair.socket("sub");
        match point {
            Point::Submit => {
                let task = {
                    let sub = sub.clone();
                    let payload = payload.clone();
                    tokio::spawn(async move {
                        work_submit(&sub, json!({"node": "exe", "worktype": "cat"}), &payload).await
                    })
                };
                tokio::time::sleep(delay / 4).await; // the kill point
                pair.crash().await?;
                if let Ok(Ok((id, result))) = task.await {
                    pair.units.insert(
                        id,
                        Expect {
                            output: payload.clone(),
                            acknowledged: result.contains("Job Started"),
                            released: false,
                        },
                    );
                }
            }
            Point::Run | Point::Results | Point::Release => {
                let n = 20 * (2_000 + rng.below(2_000));
                let (id, result) = work_submit(
                    &sub,
                    json!({"node": "exe", "worktype": "sh", "params": gen_params(n, 20)}),
                    b"",
                )
                .await?;
                ensure!(result.contains("Job Started"), "{context}: {result}");
                let expected = seq_output(n);
                pair.units.insert(
                    id.clone(),
                    Expect {
                        output: expected.clone(),
                        acknowledged: !matches!(point, Point::Release),
                        released: false,
                    },
                );
                let task = match point {
                    Point::Results => {
                        let (sub, id) = (sub.clone(), id.clone());
                        Some(tokio::spawn(async move {
                            work_results(&sub, &id, SETTLE)
                                .await
                                .map(|got| (expected.starts_with(&got), String::new()))
                        }))
                    }
                    Point::Release => {
                        let (sub, id) = (sub.clone(), id.clone());
                        Some(tokio::spawn(async move {
                            control(&sub, &format!("work release {id}"))
                                .await
                                .map(|reply| (true, reply))
                        }))
                    }
                    _ => None,
                };
                tokio::time::sleep(delay).await; // the kill point
                pair.crash().await?;
                pair.boot().await?;
                // The request was cut (the submitter died) or carried on across the
                // executor's restart; either way it has ended by now.
                if let Some(task) = task {
                    let ended = tokio::time::timeout(SETTLE, task)
                        .await
                        .with_context(|| format!("{context}: a request hangs\n{}", pair.logs()))?;
                    if let Ok(Ok((prefix_ok, reply))) = ended {
                        ensure!(prefix_ok, "{context}: results stream corrupt");
                        if reply.contains("\"released\"")
                            && let Some(expect) = pair.units.get_mut(&id)
                        {
                            expect.released = true;
                        }
                    }
                }
                pair.check(&context).await?;
                continue;
            }
        }
        pair.boot().await?;
        pair.check(&context).await?;
    }
    // Everything can be released, on both nodes: the units we know, and those whose IDs the
    // crash kept from us.
    let sub = pair.socket("sub");
    let listed = work_list(&sub).await?;
    for id in listed.as_object().context("work list")?.keys() {
        let reply = control(&sub, &format!("work release {id}")).await?;
        ensure!(reply.contains("\"released\""), "release {id}: {reply}");
    }
    wait_for("sub's data directory to be empty", SETTLE, || async {
        let listed = work_list(&sub).await.ok()?;
        let empty = listed.as_object()?.is_empty()
            && std::fs::read_dir(pair.data_dir("sub"))
                .map(|mut d| d.next().is_none())
                .unwrap_or(true);
        empty.then_some(())
    })
    .await
    .with_context(|| format!("{:?}\n{}", leftovers(&pair.data_dir("sub")), pair.logs()))?;
    // What remains on the executor was never acknowledged to anyone (a submission the crash
    // cut short); it must be final, which check() verified. Report how many.
    let orphans = work_list(&pair.socket("exe")).await?;
    println!(
        "units left on exe by interrupted submissions: {}",
        orphans.as_object().map_or(0, |o| o.len())
    );
    Ok(())
}

#[tokio::test]
async fn remote_units_survive_sigkill_of_the_submitting_node() -> Result<()> {
    remote_crash_loop(Victim::Submitter, 0x5eed_0a0a).await
}

#[tokio::test]
async fn remote_units_survive_sigkill_of_the_executing_node() -> Result<()> {
    remote_crash_loop(Victim::Executor, 0x5eed_0c0c).await
}
