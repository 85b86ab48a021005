//! What each command does, over [`receptor_client::Client`].

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use receptor_client::{
    Client, Error as ClientError, Progress, ServiceStream, SubmitOptions, Target, TlsOptions,
    UnitState, go_duration, parse_go_duration,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

use crate::output::{self, print_error, print_warning, python_json};
use crate::{Cli, Command, EXIT_ERROR, GraphFormat, SubmitArgs, WorkCommand};

const EXIT_PING: u8 = 2;
const EXIT_SUBMIT: u8 = 101;
/// Longest classic-protocol reply line read from a remote control service.
const MAX_CLASSIC_LINE: u64 = 64 * 1024 * 1024;

/// Runs the command and returns the exit code; every failure is printed as `ERROR: ...`.
pub(crate) async fn run(cli: Cli) -> u8 {
    match run_inner(cli).await {
        Ok(code) => code,
        Err(e) => {
            print_error(&format!("{e:#}"));
            EXIT_ERROR
        }
    }
}

fn target(cli: &Cli) -> Result<Target> {
    let Some(socket) = cli.socket.as_deref() else {
        bail!("Missing option '--socket'.");
    };
    let mut target = Target::parse(socket)?;
    if cli.config.is_some() && (cli.rootcas.is_some() || cli.key.is_some() || cli.cert.is_some()) {
        bail!("Cannot specify both config and rootcas, key, cert");
    }
    let mut tls = TlsOptions::new();
    let mut skip = cli.insecureskipverify;
    match (&cli.config, &cli.tls_client) {
        (Some(_), None) => bail!("Must specify both config and tlsclient"),
        (Some(config), Some(name)) => {
            let found = crate::config::tls_client(config, name)?;
            if let Some(ca) = found.rootcas {
                tls = tls.root_cas(ca);
            }
            if let (Some(cert), Some(key)) = (found.cert, found.key) {
                tls = tls.client_cert(cert, key);
            }
            skip |= found.insecureskipverify;
        }
        _ => {
            if let Some(ca) = &cli.rootcas {
                tls = tls.root_cas(ca);
            }
            // Like receptorctl: a client certificate only with both files.
            if let (Some(cert), Some(key)) = (&cli.cert, &cli.key) {
                tls = tls.client_cert(cert, key);
            }
        }
    }
    if target.is_tls() {
        target = target.with_tls(tls.insecure_skip_verify(skip));
    }
    Ok(target)
}

async fn run_inner(cli: Cli) -> Result<u8> {
    let target = target(&cli)?;
    let client = Client::connect(target).await?;
    // Like receptorctl: every invocation first learns the daemon's version.
    let info = client.version().await?;
    let ours = env!("CARGO_PKG_VERSION");
    if info.version != ours {
        print_warning(
            "receptorctl and receptor are different versions, they may not be compatible",
        );
    }
    let json = cli.json;
    match cli.command {
        Command::Status { graph } => status(&client, json, graph).await,
        Command::Ping { node, count, delay } => ping(&client, json, &node, count, delay).await,
        Command::Reload => reload(&client, json).await,
        Command::Traceroute { node } => traceroute(&client, json, &node).await,
        Command::Connect {
            node,
            service,
            raw,
            tls_client,
        } => connect(&client, &node, &service, raw, &tls_client).await,
        Command::Version => {
            if json {
                print_json(&json!({
                    "receptorctl": ours,
                    "receptor": info.version,
                    "NodeID": info.node_id,
                }));
            } else {
                println!("receptorctl  {ours}");
                println!("receptor     {}", info.version);
            }
            Ok(0)
        }
        Command::Work(work) => match work {
            WorkCommand::List {
                quiet,
                node,
                unit_id,
                tls_client,
            } => work_list(&client, quiet, node.as_deref(), &unit_id, &tls_client).await,
            WorkCommand::Submit(args) => submit(&client, json, args).await,
            WorkCommand::Results { unit_id } => results(&client, json, &unit_id).await,
            WorkCommand::Cancel { unit_ids } => {
                if unit_ids.is_empty() {
                    print_warning("No unit IDs supplied: Not doing anything");
                    return Ok(0);
                }
                on_units(&client, json, Op::Cancel, "Cancelled:", &unit_ids).await
            }
            WorkCommand::Release {
                force,
                all,
                unit_ids,
            } => {
                if unit_ids.is_empty() && !all {
                    print_warning("No unit IDs supplied: Not doing anything");
                    return Ok(0);
                }
                let ids = if all {
                    client.list().await?.into_iter().map(|u| u.id).collect()
                } else {
                    unit_ids
                };
                on_units(&client, json, Op::Release { force }, "Released:", &ids).await
            }
            WorkCommand::Watch {
                unit_id,
                no_existing,
            } => watch(&client, json, unit_id.as_deref(), !no_existing).await,
        },
    }
}

fn print_json(value: &Value) {
    println!("{}", python_json(value));
}

async fn status(client: &Client, json: bool, graph: Option<GraphFormat>) -> Result<u8> {
    let status = client.status().await?;
    match (graph, json) {
        (Some(_), true) => print_json(&output::graph_json(&status)),
        (Some(GraphFormat::Dot), false) => print!("{}", output::graph_dot(&status)),
        (Some(GraphFormat::Text), false) => print!("{}", output::graph_text(&status)),
        (None, true) => print_json(&output::status_json(&status)),
        (None, false) => print!("{}", output::status_text(&status)),
    }
    Ok(0)
}

async fn ping(client: &Client, json: bool, node: &str, count: u32, delay: f64) -> Result<u8> {
    let interval = Duration::try_from_secs_f64(delay.max(0.0))
        .map_err(|_| anyhow!("invalid --delay {delay}"))?;
    let mut failed = false;
    let mut replies = match client.ping(node, count.max(1), Some(interval)).await {
        Ok(replies) => replies,
        Err(e) => {
            print_error(&e.message());
            return Ok(EXIT_PING);
        }
    };
    while let Some(reply) = replies.next().await {
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                print_error(&e.message());
                return Ok(EXIT_PING);
            }
        };
        match (&reply.error, json) {
            (None, true) => {
                let rtt = reply.rtt.unwrap_or_default();
                println!(
                    "{}",
                    json!({
                        "From": reply.from.as_deref().unwrap_or(""),
                        "Success": true,
                        "Time": u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX),
                        "TimeStr": go_duration(rtt),
                    })
                );
            }
            (Some(error), true) => {
                failed = true;
                println!("{}", json!({"Error": error, "Success": false}));
            }
            (None, false) => println!(
                "Reply from {} in {}",
                reply.from.as_deref().unwrap_or(""),
                go_duration(reply.rtt.unwrap_or_default())
            ),
            (Some(error), false) => {
                failed = true;
                print_error(error);
            }
        }
        let _ = std::io::stdout().flush();
    }
    Ok(if failed { EXIT_PING } else { 0 })
}

async fn reload(client: &Client, json: bool) -> Result<u8> {
    match client.reload().await {
        Ok(()) => {
            if json {
                print_json(&json!({"Success": true}));
            } else {
                println!("Reload successful");
            }
            Ok(0)
        }
        Err(e) => {
            let message = e.message();
            if json {
                print_json(&json!({"Success": false, "Error": message}));
            } else {
                print_error(&message);
            }
            Ok(if message.contains("ERRORCODE 3") {
                3
            } else if message.contains("ERRORCODE 4") {
                4
            } else {
                5
            })
        }
    }
}

async fn traceroute(client: &Client, json: bool, node: &str) -> Result<u8> {
    let mut hops: Vec<receptor_client::Hop> = Vec::new();
    let mut stream = client.traceroute(node).await?;
    while let Some(hop) = stream.next().await {
        hops.push(hop?);
    }
    hops.sort_by_key(|h| h.hop);
    if json {
        let map: serde_json::Map<String, Value> = hops
            .iter()
            .map(|h| {
                let rtt = h.rtt.unwrap_or_default();
                let mut v = json!({
                    "From": h.from.as_deref().unwrap_or(""),
                    "Time": u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX),
                    "TimeStr": go_duration(rtt),
                });
                if let (Some(e), Some(obj)) = (&h.error, v.as_object_mut()) {
                    obj.insert("Error".into(), json!(e));
                }
                (h.hop.to_string(), v)
            })
            .collect();
        print_json(&Value::Object(map));
        return Ok(0);
    }
    for h in hops {
        let from = h.from.as_deref().unwrap_or("");
        let time = go_duration(h.rtt.unwrap_or_default());
        match &h.error {
            Some(e) => print_error(&format!("{}: Error {e} from {from} in {time}", h.hop)),
            None => println!("{}: {from} in {time}", h.hop),
        }
    }
    Ok(0)
}

/// Restores the terminal mode saved by `stty -g` when dropped.
struct RawMode(Option<String>);

impl RawMode {
    fn enter(raw: bool) -> Self {
        if !raw || !std::io::stdin().is_terminal() {
            return Self(None);
        }
        // `stty` on the inherited stdin: no terminal library needed for two mode switches.
        let saved = std::process::Command::new("stty")
            .arg("-g")
            .stdin(std::process::Stdio::inherit())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if saved.is_some() {
            let _ = std::process::Command::new("stty")
                .args(["raw", "-echo", "-isig"])
                .stdin(std::process::Stdio::inherit())
                .status();
        }
        Self(saved)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = std::process::Command::new("stty")
                .arg(saved)
                .stdin(std::process::Stdio::inherit())
                .status();
        }
    }
}

async fn connect(
    client: &Client,
    node: &str,
    service: &str,
    raw: bool,
    tls_client: &str,
) -> Result<u8> {
    let tls = (!tls_client.is_empty()).then_some(tls_client);
    let stream = client.connect_service(node, service, tls).await?;
    let _mode = RawMode::enter(raw);
    let (mut from_remote, mut to_remote) = tokio::io::split(stream);
    let mut stdout = tokio::io::stdout();
    let download = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut from_remote, &mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            stdout.write_all(&buf[..n]).await?;
            stdout.flush().await?;
        }
    };
    let upload = async {
        let mut stdin = tokio::io::stdin();
        tokio::io::copy(&mut stdin, &mut to_remote).await?;
        // Unlike the Python receptorctl (which stops at stdin EOF), half-close and keep
        // printing the answer, so `echo cmd | receptorctl connect ...` works.
        to_remote.shutdown().await?;
        std::future::pending::<std::io::Result<()>>().await
    };
    tokio::pin!(download, upload);
    let result = tokio::select! {
        r = &mut download => r,
        r = &mut upload => r,
    };
    drop(_mode);
    println!();
    result.context("connection")?;
    Ok(0)
}

/// Speaks the classic text protocol to a node's `control` service through the mesh (what
/// `receptorctl work list --node` does), so it works with Go nodes too.
async fn classic_command(stream: ServiceStream, command: &str) -> Result<Value> {
    let mut stream = BufReader::new(stream);
    let mut greeting = String::new();
    (&mut stream)
        .take(4096)
        .read_line(&mut greeting)
        .await
        .context("reading the remote greeting")?;
    if !greeting.trim().starts_with("Receptor Control, node ") {
        bail!("Failed to connect to Receptor socket");
    }
    stream
        .get_mut()
        .write_all(format!("{command}\n").as_bytes())
        .await?;
    let mut line = String::new();
    (&mut stream)
        .take(MAX_CLASSIC_LINE)
        .read_line(&mut line)
        .await
        .context("reading the remote reply")?;
    let line = line.trim();
    if let Some(error) = line.strip_prefix("ERROR:") {
        bail!("{}", error.trim_start());
    }
    serde_json::from_str(line).context("the remote reply is not JSON")
}

use tokio::io::AsyncReadExt as _;

async fn work_list(
    client: &Client,
    quiet: bool,
    node: Option<&str>,
    unit_id: &str,
    tls_client: &str,
) -> Result<u8> {
    let units: Value = match node.filter(|n| !n.is_empty()) {
        Some(node) => {
            let tls = (!tls_client.is_empty()).then_some(tls_client);
            let stream = client.connect_service(node, "control", tls).await?;
            let command = if unit_id.is_empty() {
                "work list".to_owned()
            } else {
                format!("work list {unit_id}")
            };
            classic_command(stream, &command).await?
        }
        None if !unit_id.is_empty() => {
            let unit = client
                .get(unit_id)
                .await
                .map_err(|e| anyhow!(e.message()))?;
            json!({ unit.id.clone(): output::unit_json(&unit) })
        }
        None => {
            let units = client.list().await?;
            Value::Object(
                units
                    .iter()
                    .map(|u| (u.id.clone(), output::unit_json(u)))
                    .collect(),
            )
        }
    };
    if quiet {
        if let Value::Object(map) = &units {
            let mut ids: Vec<&String> = map.keys().collect();
            ids.sort();
            for id in ids {
                println!("{id}");
            }
        }
    } else {
        print_json(&units);
    }
    Ok(0)
}

/// A terminal progress bar on stderr, or nothing when stderr is not a terminal.
fn progress_bar(total: Option<u64>, what: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
            )
            .ok()?
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {binary_bytes} {binary_bytes_per_sec}")
                .ok()?,
        ),
    };
    bar.set_message(what.to_owned());
    Some(bar)
}

/// Builds the submission like receptorctl's `submit_work`: reserved keys, `@file` values.
fn submit_options(args: &SubmitArgs) -> Result<SubmitOptions> {
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for p in &args.param {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("parameter {p:?} is not in key=value format"))?;
        params.insert(k.to_owned(), v.to_owned());
    }
    if !args.cmdparams.is_empty() {
        let mut all: Vec<String> = params.get("params").cloned().into_iter().collect();
        all.extend(args.cmdparams.iter().cloned());
        params.insert("params".to_owned(), all.join(" "));
    }
    let mut options = SubmitOptions::new(&args.worktype);
    if let Some(node) = args.node.as_deref().filter(|n| !n.is_empty()) {
        options = options.node(node);
    }
    let mut reserved = vec!["command", "subcommand", "node", "worktype"];
    let mut ttl_text = args.ttl.clone();
    if !args.tls_client.is_empty() {
        options = options.tls_client(&args.tls_client);
        reserved.push("tlsclient");
    }
    if !args.ttl.is_empty() {
        reserved.push("ttl");
    }
    if args.signwork {
        options = options.sign_work(true);
        reserved.push("signwork");
    }
    for (k, v) in params {
        if reserved.contains(&k.as_str()) {
            bail!("Duplicate or illegal parameter {k}");
        }
        let value = match v.strip_prefix('@') {
            Some(file) if !v.starts_with("@@") => {
                if !std::path::Path::new(file).exists() {
                    bail!("{file} does not exist");
                }
                std::fs::read_to_string(file)
                    .map_err(|_| anyhow!("could not read from file {file}"))?
            }
            _ => v,
        };
        // The classic JSON carries these as plain keys; the gRPC header has fields.
        match k.as_str() {
            "tlsclient" => options = options.tls_client(value),
            "ttl" => ttl_text = value,
            "signwork" => options = options.sign_work(value == "true"),
            _ => options = options.param(k, value),
        }
    }
    if !ttl_text.is_empty() {
        let ttl = parse_go_duration(&ttl_text)
            .ok_or_else(|| anyhow!("invalid ttl {ttl_text:?} (e.g. 1h20m30s)"))?;
        options = options.ttl(ttl);
    }
    Ok(options)
}

async fn submit(client: &Client, json: bool, args: SubmitArgs) -> Result<u8> {
    let chosen = [
        args.payload.is_some(),
        args.no_payload,
        args.payload_literal.is_some(),
    ]
    .into_iter()
    .filter(|b| *b)
    .count();
    if chosen < 1 {
        print_error("Must provide one of --payload, --no-payload or --payload-literal.");
        return Ok(EXIT_ERROR);
    }
    if chosen > 1 {
        print_error(
            "Cannot provide more than one of --payload, --no-payload and --payload-literal.",
        );
        return Ok(EXIT_ERROR);
    }
    if args.rm && !args.follow {
        print_warning("using --rm without --follow. Unit results will never be seen.");
    }
    let (payload, size): (Box<dyn AsyncRead + Send + Unpin>, Option<u64>) =
        if let Some(text) = &args.payload_literal {
            let bytes = format!("{text}\n").into_bytes();
            let len = bytes.len() as u64;
            (Box::new(std::io::Cursor::new(bytes)), Some(len))
        } else if args.no_payload {
            (Box::new(tokio::io::empty()), Some(0))
        } else if args.payload.as_deref() == Some("-") {
            (Box::new(tokio::io::stdin()), None)
        } else {
            let path = args.payload.clone().unwrap_or_default();
            match tokio::fs::File::open(&path).await {
                Ok(file) => {
                    let len = file.metadata().await.ok().map(|m| m.len());
                    (Box::new(file), len)
                }
                Err(e) => {
                    print_error(&format!("Failed to load payload file: {e}"));
                    return Ok(EXIT_ERROR);
                }
            }
        };
    let mut unit_id = None;
    let code = match submit_and_follow(client, json, &args, payload, size, &mut unit_id).await {
        Ok(code) => code,
        Err(e) => {
            print_error(&format!("{e:#}"));
            EXIT_SUBMIT
        }
    };
    if args.rm
        && let Some(id) = unit_id
    {
        let released = on_units(client, json, Op::Release { force: false }, "", &[id]).await?;
        if released != 0 {
            return Ok(released);
        }
    }
    Ok(code)
}

async fn submit_and_follow(
    client: &Client,
    json: bool,
    args: &SubmitArgs,
    payload: Box<dyn AsyncRead + Send + Unpin>,
    size: Option<u64>,
    unit_id: &mut Option<String>,
) -> Result<u8> {
    let mut options = submit_options(args)?;
    if let Some(size) = size {
        options = options.payload_size(size);
    }
    // Only bother the user with a bar for payloads worth watching.
    let bar = if size.is_none_or(|s| s > 1024 * 1024) {
        progress_bar(size, "upload")
    } else {
        None
    };
    let progress: Option<Progress> = bar.clone().map(|bar| {
        let f: Progress = Box::new(move |sent| bar.set_position(sent));
        f
    });
    let submitted = client.submit(options, payload, progress).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let submitted = submitted.map_err(|e| anyhow!("Failed to start work unit: {}", e.message()))?;
    *unit_id = Some(submitted.unit.id.clone());
    if args.follow {
        return results(client, json, &submitted.unit.id).await;
    }
    if json {
        print_json(&json!({"result": submitted.result, "unitid": submitted.unit.id}));
    } else {
        println!("Result: {}", submitted.result);
        println!("Unit ID: {}", submitted.unit.id);
    }
    Ok(0)
}

async fn results(client: &Client, json: bool, unit_id: &str) -> Result<u8> {
    let mut results = client
        .results(unit_id, 0, true)
        .await
        .map_err(|e| anyhow!("Failed to get results: {}", e.message()))?;
    let bar = progress_bar(None, "results");
    let mut stdout = tokio::io::stdout();
    let mut collected = Vec::new();
    let mut received = 0u64;
    while let Some(chunk) = results.next().await {
        let chunk = chunk?;
        received += chunk.len() as u64;
        if let Some(bar) = &bar {
            bar.set_position(received);
        }
        if json {
            collected.extend_from_slice(&chunk);
        } else {
            stdout.write_all(&chunk).await?;
            stdout.flush().await?;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let end = results
        .end()
        .ok_or_else(|| anyhow!("the results stream ended without its end"))?;
    let failed = end.unit.state == Some(UnitState::Failed);
    if json {
        let mut v = output::unit_json(&end.unit);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("UnitID".into(), json!(unit_id));
            obj.insert("Output".into(), json!(String::from_utf8_lossy(&collected)));
            obj.insert("EndOffset".into(), json!(end.end_offset));
        }
        print_json(&v);
    }
    if failed {
        print_error(&format!("Remote unit failed: {}\n", end.unit.detail));
        return Ok(EXIT_ERROR);
    }
    Ok(0)
}

#[derive(Clone, Copy)]
enum Op {
    Cancel,
    Release { force: bool },
}

async fn on_units(client: &Client, json: bool, op: Op, header: &str, ids: &[String]) -> Result<u8> {
    if !header.is_empty() && !json {
        println!("{header}");
    }
    let mut done = serde_json::Map::new();
    for id in ids {
        let (result, word): (Result<bool, ClientError>, &str) = match op {
            Op::Cancel => (client.cancel(id).await, "cancelled"),
            Op::Release { force } => (client.release(id, force).await, "released"),
        };
        match result {
            Ok(_) => {
                if json {
                    done.insert(id.clone(), json!(word));
                } else {
                    println!("({id}, {word})");
                }
            }
            Err(e) => {
                if json && !done.is_empty() {
                    print_json(&Value::Object(done));
                }
                print_error(&format!("{id}: ERROR: {}", e.message()));
                return Ok(EXIT_ERROR);
            }
        }
    }
    if json {
        print_json(&Value::Object(done));
    }
    Ok(0)
}

async fn watch(client: &Client, json: bool, unit_id: Option<&str>, existing: bool) -> Result<u8> {
    let mut events = client.watch_work(unit_id, existing).await?;
    while let Some(event) = events.next().await {
        let event = event?;
        if json {
            let mut v = output::unit_json(&event.unit);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("UnitID".into(), json!(event.unit.id));
                obj.insert("Released".into(), json!(event.released));
                obj.insert("Resync".into(), json!(event.resync));
            }
            println!("{v}");
        } else {
            if event.resync {
                println!("-- fell behind: current state follows --");
            }
            if event.released {
                println!("{} released", event.unit.id);
            } else {
                println!(
                    "{} {} {} {}",
                    event.unit.id,
                    event.unit.state_name(),
                    event.unit.stdout_size,
                    event.unit.detail
                );
            }
        }
        let _ = std::io::stdout().flush();
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn submit_args(argv: &[&str]) -> SubmitArgs {
        let mut full = vec!["receptorctl", "--socket", "/x", "work", "submit"];
        full.extend_from_slice(argv);
        match crate::Cli::try_parse_from(full).unwrap().command {
            Command::Work(WorkCommand::Submit(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn submit_parameters_follow_receptorctl() {
        let args = submit_args(&["cat", "-n", "-a", "params=-x", "--ttl", "1m", "a", "b"]);
        let options = format!("{:?}", submit_options(&args).unwrap());
        assert!(options.contains("\"params\": \"-x a b\""), "{options}");
        assert!(options.contains("seconds: 60"), "{options}");
        let args = submit_args(&["cat", "-n", "-a", "node=x"]);
        assert_eq!(
            submit_options(&args).unwrap_err().to_string(),
            "Duplicate or illegal parameter node"
        );
        let args = submit_args(&["cat", "-n", "-a", "secret=@/does/not/exist"]);
        assert_eq!(
            submit_options(&args).unwrap_err().to_string(),
            "/does/not/exist does not exist"
        );
        let args = submit_args(&["cat", "-n", "-a", "x=@@literal"]);
        assert!(format!("{:?}", submit_options(&args).unwrap()).contains("@@literal"));
    }

    #[test]
    fn global_options_and_json_anywhere() {
        let cli = crate::Cli::try_parse_from(["receptorctl", "--socket", "/s", "status", "--json"])
            .unwrap();
        assert!(cli.json);
        let cli = crate::Cli::try_parse_from([
            "receptorctl",
            "--socket",
            "/s",
            "--insecureskipverify",
            "true",
            "--json",
            "status",
            "--graph",
        ])
        .unwrap();
        assert!(cli.json && cli.insecureskipverify);
        assert!(matches!(
            cli.command,
            Command::Status {
                graph: Some(GraphFormat::Text)
            }
        ));
    }
}
