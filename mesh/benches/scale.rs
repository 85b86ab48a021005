//! Mesh scale simulation: `cargo bench -p receptor-mesh --bench scale`.
//!
//! Starts N real node actors in this process, linked by counted in-memory pipes in a given
//! shape (`tests/sim/mod.rs`), on a current-thread runtime in paused (virtual) time, and
//! reports per run:
//! - convergence: virtual time until every node has a route to every other node, and the
//!   wall time and CPU time it took to simulate (one core; the convergence check itself, a
//!   status of every node every 100 ms of virtual time until it has converged, is included);
//! - routing traffic: routing-update messages and bytes written on all links until
//!   convergence, and until no message moved for 1 s (quiet);
//! - one periodic round: routing messages in the next 10 s of virtual time (`--steady`);
//! - memory per node: growth of the process's `RssAnon` from before the nodes started to
//!   quiet, divided by N. Each run is a fresh child process (this binary with `--run-one`),
//!   so no run reuses memory an earlier one freed. Next to it, the live heap per node (bytes
//!   allocated and not freed, counted by this binary's allocator): RssAnon also holds memory
//!   the allocator keeps after the floods, so the two tell retention from real growth.
//!
//! Options (after `--`): `--nodes 100,1000` (default 100,1000), `--shapes line,star,random,awx`
//! (default all), `--seed S` (random graph, default 1), `--steady` (also measure a periodic
//! round), `--limit-secs S` (virtual-time limit for convergence, default 120).

#[path = "../tests/sim/mod.rs"]
mod sim;

// The simulation runs in paused tokio time; the wall-clock figures need the real clock.
use std::time::Duration;
#[allow(clippy::disallowed_types)]
use std::time::Instant as WallClock;

use anyhow::{Context, Result};
use sim::{Mesh, Shape};

// Counts the bytes allocated and freed, for the live heap figure.
#[global_allocator]
static ALLOCATOR: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Bytes allocated and not freed so far.
fn live_heap() -> usize {
    // A realloc is counted in these two as well (by the size difference).
    let stats = ALLOCATOR.stats();
    stats
        .bytes_allocated
        .saturating_sub(stats.bytes_deallocated)
}

struct Options {
    nodes: Vec<usize>,
    shapes: Vec<String>,
    seed: u64,
    steady: bool,
    limit: Duration,
    /// `shape:nodes`: simulate only this, print its table row (the child side of a run).
    run_one: Option<(String, usize)>,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut options = Self {
            nodes: vec![100, 1000],
            shapes: sim::SHAPES.iter().map(|s| (*s).to_owned()).collect(),
            seed: 1,
            steady: false,
            limit: Duration::from_secs(120),
            run_one: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value =
                |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                // cargo bench passes --bench to every bench target.
                "--bench" => {}
                "--nodes" => {
                    options.nodes = value("--nodes")?
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()?;
                }
                "--shapes" => {
                    options.shapes = value("--shapes")?.split(',').map(str::to_owned).collect();
                }
                "--seed" => options.seed = value("--seed")?.parse()?,
                "--steady" => options.steady = true,
                "--run-one" => {
                    let spec = value("--run-one")?;
                    let (kind, n) = spec.split_once(':').context("--run-one SHAPE:NODES")?;
                    options.run_one = Some((kind.to_owned(), n.parse()?));
                }
                "--limit-secs" => {
                    options.limit = Duration::from_secs(value("--limit-secs")?.parse()?);
                }
                "-h" | "--help" => {
                    println!(
                        "usage: cargo bench -p receptor-mesh --bench scale -- [--nodes 100,1000] \
                         [--shapes line,star,random,awx] [--seed S] [--steady] [--limit-secs S]"
                    );
                    std::process::exit(0);
                }
                other if !other.starts_with('-') => {}
                other => anyhow::bail!("unknown option {other}"),
            }
        }
        Ok(options)
    }
}

struct Figures {
    links: usize,
    max_degree: usize,
    converged: Duration,
    wall_converged: Duration,
    routing_to_converge: u64,
    routing_to_quiet: u64,
    bytes_to_quiet: u64,
    wall_quiet: Duration,
    cpu_quiet: Duration,
    steady_round: Option<u64>,
    anon_kb_per_node: f64,
    heap_kb_per_node: f64,
}

// Wall time is measured with the real clock: tokio's is paused here.
#[allow(clippy::disallowed_types)]
async fn simulate(shape: &Shape, options: &Options) -> Result<Figures> {
    let (links, max_degree) = sim::degree_summary(shape);
    let anon_before = sim::rss_kb()?.1;
    let heap_before = live_heap();
    let cpu_before = cpu_time()?;
    let wall = WallClock::now();
    let mesh = Mesh::start(shape)?;
    let converged = mesh.converge(options.limit).await?;
    let wall_converged = wall.elapsed();
    let at_convergence = mesh.traffic.snapshot();
    let quiet = mesh
        .quiet(Duration::from_secs(1), options.limit)
        .await
        .context("waiting for quiet")?;
    let wall_quiet = wall.elapsed();
    let cpu_quiet = cpu_time()? - cpu_before;
    let anon_after = sim::rss_kb()?.1;
    let heap_after = live_heap();
    let steady_round = if options.steady {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Some(mesh.traffic.snapshot().since(&quiet).routing_messages())
    } else {
        None
    };
    mesh.shutdown().await;
    Ok(Figures {
        links,
        max_degree,
        converged,
        wall_converged,
        routing_to_converge: at_convergence.routing_messages(),
        routing_to_quiet: quiet.routing_messages(),
        bytes_to_quiet: quiet.routing_bytes(),
        wall_quiet,
        cpu_quiet,
        steady_round,
        anon_kb_per_node: anon_after.saturating_sub(anon_before) as f64 / shape.len() as f64,
        heap_kb_per_node: heap_after.saturating_sub(heap_before) as f64 / 1e3 / shape.len() as f64,
    })
}

/// CPU time this process has used (`/proc/self/schedstat`, nanoseconds on a CPU): on a
/// shared machine a steadier measure of the simulation's cost than wall time.
fn cpu_time() -> Result<Duration> {
    let schedstat = std::fs::read_to_string("/proc/self/schedstat")?;
    let nanos = schedstat
        .split_whitespace()
        .next()
        .context("empty /proc/self/schedstat")?
        .parse()?;
    Ok(Duration::from_nanos(nanos))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Simulates one shape and prints its table row.
fn run_one(kind: &str, n: usize, options: &Options) -> Result<()> {
    let shape = Shape::build(kind, n, options.seed)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let f = runtime.block_on(simulate(&shape, options))?;
    println!(
        "| {kind} | {n} | {} | {} | {:.1} s | {} | {} | {} | {:.1} | {} | {:.1} kB | {:.1} kB | {:.1} s | {:.1} s | {:.1} s |",
        f.links,
        f.max_degree,
        f.converged.as_secs_f64(),
        f.routing_to_converge,
        f.routing_to_quiet,
        f.routing_to_quiet / n as u64,
        f.bytes_to_quiet as f64 / 1e6,
        f.steady_round.map_or("-".to_owned(), |m| m.to_string()),
        f.anon_kb_per_node,
        f.heap_kb_per_node,
        f.wall_converged.as_secs_f64(),
        f.wall_quiet.as_secs_f64(),
        f.cpu_quiet.as_secs_f64(),
    );
    Ok(())
}

fn main() -> Result<()> {
    let options = Options::parse()?;
    if let Some((kind, n)) = &options.run_one {
        return run_one(kind, *n, &options);
    }
    println!("load average before: {}", load_average());
    println!(
        "| shape | nodes | links | max degree | converged (virtual) | routing msgs to converge | \
         routing msgs to quiet | per node | routing MB to quiet | 10 s round msgs | \
         RssAnon per node | live heap per node | wall to converge | wall to quiet | CPU to quiet |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let me = std::env::current_exe()?;
    for &n in &options.nodes {
        for kind in &options.shapes {
            let mut child = std::process::Command::new(&me);
            child.args(["--run-one", &format!("{kind}:{n}")]);
            child.args(["--seed", &options.seed.to_string()]);
            child.args(["--limit-secs", &options.limit.as_secs().to_string()]);
            if options.steady {
                child.arg("--steady");
            }
            // The child prints its row, or its error on stderr.
            let status = child.status()?;
            if !status.success() {
                println!("| {kind} | {n} | failed ({status}) |");
            }
        }
    }
    println!("load average after: {}", load_average());
    Ok(())
}
