//! `memento`: look after a memento cache from the shell.
//!
//! ```text
//! memento ls [LOCATION] [--json]      functions, entries, size, hits, time saved, last access
//! memento show FUNCTION [KEY]         a function's record and entries, or one entry
//! memento why FUNCTION [--json]       the function's recent misses, and why each missed
//! memento clear [FUNCTION]            remove all results, or one function's
//! memento gc --bytes 10GB --items N --age 30d
//! memento verify [--remove]           check every checksum
//! memento du                          disk usage per function (blocks and content)
//! ```
//!
//! The cache is `--location`, else `MEMENTO_DIR`, else `.memento`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytesize::ByteSize;
use clap::{Parser, Subcommand};
use memento::entry::{rfc3339, Metadata};
use memento::{FunctionRecord, FunctionStats, Limits, Memory, Stats, StoredEntry};
use serde::Serialize;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  verify found damaged results (and did not remove them: use --remove)
  2  error: bad arguments, no cache at the location, or a file that cannot be read or removed";

#[derive(Parser)]
#[command(
    name = "memento",
    version,
    about = "Look after a memento cache: list, show, why, clear, gc, verify, du.",
    after_help = EXIT_CODES
)]
struct Cli {
    /// The cache folder, or bucket (s3://bucket/prefix, in a build with the
    /// s3 feature) [default: $MEMENTO_DIR, else .memento]
    #[arg(
        long,
        short = 'C',
        global = true,
        env = "MEMENTO_DIR",
        value_name = "LOCATION"
    )]
    location: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the cached functions: entries, size, hits, time saved, last access
    Ls {
        /// The cache folder (same as --location)
        #[arg(value_name = "LOCATION")]
        folder: Option<PathBuf>,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Show a function's record and results, or one result's metadata
    Show {
        /// The function: its full name (crate::module::f), a unique last part (f), or its folder
        function: String,
        /// A result's key, or a unique prefix of it
        key: Option<String>,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// List a function's recent misses, newest first, and why each missed
    Why {
        /// The function (as for show)
        function: String,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Remove every result, or those of one function
    Clear {
        /// The function (as for show); all functions if left out
        function: Option<String>,
    },
    /// Remove least recently used results until every given limit holds
    Gc {
        /// Keep at most this many bytes, such as 10GB or 500MiB
        #[arg(long)]
        bytes: Option<String>,
        /// Keep at most this many results
        #[arg(long)]
        items: Option<u64>,
        /// Remove results not used for this long, such as 30d or 12h
        #[arg(long)]
        age: Option<String>,
    },
    /// Check the checksum of every stored result
    Verify {
        /// Remove the damaged results found
        #[arg(long)]
        remove: bool,
    },
    /// Disk usage, per function, largest first
    Du,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("memento: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let location = match &cli.command {
        Command::Ls {
            folder: Some(folder),
            ..
        } => folder.clone(),
        _ => cli
            .location
            .clone()
            .unwrap_or_else(|| PathBuf::from(memento::DEFAULT_DIR)),
    };
    let location = memento::Location::from(location);
    if let Some(folder) = location.path() {
        if !folder.is_dir() {
            bail!(
                "no cache at {}: run a program that uses memento first, or point --location (or \
                 MEMENTO_DIR) at the cache folder",
                folder.display()
            );
        }
    }
    // A bucket is read directly: a listing tool needs no near copy.
    let mut memory = Memory::new(location).no_near_cache();
    // Signed caches are checked with MEMENTO_KEY, as programs sign them.
    if let Some(secret) = std::env::var_os("MEMENTO_KEY").filter(|k| !k.is_empty()) {
        memory = memory.signing_key(secret.as_encoded_bytes());
    }
    match cli.command {
        Command::Ls { json, .. } => ls(&memory, json),
        Command::Show {
            function,
            key,
            json,
        } => show(&memory, &function, key.as_deref(), json),
        Command::Why { function, json } => why(&memory, &function, json),
        Command::Clear { function } => clear(&memory, function.as_deref()),
        Command::Gc { bytes, items, age } => gc(&memory, bytes, items, age),
        Command::Verify { remove } => verify(&memory, remove),
        Command::Du => du(&memory),
    }
}

fn time(t: Option<SystemTime>) -> String {
    match t {
        Some(t) if t > UNIX_EPOCH => {
            let mut s = rfc3339(t);
            // Seconds are enough in a table.
            if let Some(dot) = s.find('.') {
                s.replace_range(dot..s.len() - 1, "");
            }
            s
        }
        _ => "-".into(),
    }
}

fn size(bytes: u64) -> String {
    ByteSize::b(bytes).to_string()
}

/// How a column's cells and header line up.
#[derive(Clone, Copy, PartialEq)]
enum Align {
    /// Text (names, times, arguments): starts where its header starts.
    Left,
    /// Numbers (counts, sizes, durations): ends where its header ends.
    Right,
}

use Align::{Left, Right};

/// Prints rows (the first is the header) as a table whose columns fit their
/// widest cell, each aligned as `align` says, header included.
///
/// Hand-written rather than comfy-table or tabled: these plain,
/// borderless tables need nothing more, and each dependency lengthens the
/// build of the command.
fn table(align: &[Align], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..align.len())
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(align)
            .zip(&widths)
            .map(|((cell, align), &w)| match align {
                Left => format!("{cell:<w$}"),
                Right => format!("{cell:>w$}"),
            })
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

#[derive(Serialize)]
struct FunctionRow {
    function: String,
    folder: String,
    entries: u64,
    /// On the disk (allocated blocks).
    bytes: u64,
    /// The content's length.
    content_bytes: u64,
    hits: u64,
    /// The mean time a stored result took to compute, in seconds.
    mean_duration: Option<f64>,
    /// Computation time saved: hits × mean duration, in seconds.
    saved: f64,
    last_access: Option<String>,
}

fn row_of(f: &FunctionStats) -> FunctionRow {
    FunctionRow {
        function: f.name.clone(),
        folder: f.folder.clone(),
        entries: f.entries,
        bytes: f.bytes,
        content_bytes: f.content_bytes,
        hits: f.hits,
        mean_duration: f.mean_duration.map(|d| d.as_secs_f64()),
        saved: f.saved.as_secs_f64(),
        last_access: f.last_access.map(rfc3339),
    }
}

fn ls(memory: &Memory, json: bool) -> Result<ExitCode> {
    let stats = memory.stats().context("cannot list the cache")?;
    if json {
        #[derive(Serialize)]
        struct Listing {
            location: String,
            entries: u64,
            bytes: u64,
            content_bytes: u64,
            /// Computation time saved, all functions, in seconds.
            saved: f64,
            functions: Vec<FunctionRow>,
        }
        let listing = Listing {
            location: memory.location(),
            entries: stats.entries,
            bytes: stats.bytes,
            content_bytes: stats.content_bytes,
            saved: stats.saved.as_secs_f64(),
            functions: stats.functions.iter().map(row_of).collect(),
        };
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("cache: {}", memory.location());
    let mut rows = vec![vec![
        "FUNCTION".to_string(),
        "ENTRIES".into(),
        "DISK".into(),
        "HITS".into(),
        "SAVED".into(),
        "LAST ACCESS".into(),
    ]];
    for f in &stats.functions {
        rows.push(vec![
            f.name.clone(),
            f.entries.to_string(),
            size(f.bytes),
            f.hits.to_string(),
            if f.mean_duration.is_some() {
                seconds(f.saved)
            } else {
                "-".into()
            },
            time(f.last_access),
        ]);
    }
    rows.push(vec![
        "total".into(),
        stats.entries.to_string(),
        size(stats.bytes),
        stats
            .functions
            .iter()
            .map(|f| f.hits)
            .sum::<u64>()
            .to_string(),
        seconds(stats.saved),
        String::new(),
    ]);
    table(&[Left, Right, Right, Right, Right, Left], &rows);
    println!("saved {} of computation in all", seconds(stats.saved));
    Ok(ExitCode::SUCCESS)
}

/// A duration as people read it: `850ms`, `12.4s`, `3m 20s`, `2h 5m`,
/// `3d 4h`.
fn seconds(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    let whole = d.as_secs();
    if s < 1.0 {
        format!("{}ms", d.as_millis())
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else if whole < 3600 {
        format!("{}m {}s", whole / 60, whole % 60)
    } else if whole < 86400 {
        format!("{}h {}m", whole / 3600, whole % 3600 / 60)
    } else {
        format!("{}d {}h", whole / 86400, whole % 86400 / 3600)
    }
}

fn why(memory: &Memory, function: &str, json: bool) -> Result<ExitCode> {
    let stats = memory.stats().context("cannot list the cache")?;
    let f = find_function(&stats, function)?;
    let misses = memory
        .recent_misses(f)
        .with_context(|| format!("cannot read the misses of {}", f.name))?;
    if json {
        #[derive(Serialize)]
        struct Shown<'a> {
            time: String,
            key: &'a str,
            /// The reason as one line.
            reason: String,
            why: &'a memento::Why,
        }
        let shown: Vec<Shown<'_>> = misses
            .iter()
            .map(|m| Shown {
                time: rfc3339(m.time()),
                key: &m.key,
                reason: m.why.to_string(),
                why: &m.why,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(ExitCode::SUCCESS);
    }
    if misses.is_empty() {
        println!("{}: no miss recorded", f.name);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: {} recent miss(es), newest first", f.name, misses.len());
    let mut rows = vec![vec!["TIME".to_string(), "KEY".into(), "WHY".into()]];
    for m in &misses {
        rows.push(vec![
            time(Some(m.time())),
            m.key.chars().take(16).collect(),
            m.why.to_string(),
        ]);
    }
    table(&[Left, Left, Left], &rows);
    Ok(ExitCode::SUCCESS)
}

/// Finds a function by full name, unique last part, or folder.
fn find_function<'a>(stats: &'a Stats, wanted: &str) -> Result<&'a FunctionStats> {
    let wanted = wanted.trim_end_matches('/');
    if let Some(f) = stats
        .functions
        .iter()
        .find(|f| f.name == wanted || f.folder == wanted)
    {
        return Ok(f);
    }
    let suffix = format!("::{wanted}");
    let matches: Vec<&FunctionStats> = stats
        .functions
        .iter()
        .filter(|f| f.name.ends_with(&suffix))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "no function {wanted:?} in this cache; `memento ls` lists them ({} in all)",
            stats.functions.len()
        ),
        many => bail!(
            "{wanted:?} names several functions: {}; give the full name",
            many.iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn show(memory: &Memory, function: &str, key: Option<&str>, json: bool) -> Result<ExitCode> {
    let stats = memory.stats().context("cannot list the cache")?;
    let f = find_function(&stats, function)?;
    let entries = memory
        .entries(f)
        .with_context(|| format!("cannot list the results of {}", f.name))?;
    if let Some(prefix) = key {
        let found: Vec<&StoredEntry> = entries
            .iter()
            .filter(|e| e.key.starts_with(&prefix.to_ascii_lowercase()))
            .collect();
        let entry = match found.as_slice() {
            [one] => *one,
            [] => bail!("{} has no result with a key starting {prefix:?}", f.name),
            _ => bail!(
                "{prefix:?} starts {} keys of {}; give more digits",
                found.len(),
                f.name
            ),
        };
        #[derive(Serialize)]
        struct Shown<'a> {
            path: String,
            last_access: String,
            complete: bool,
            metadata: &'a Option<Metadata>,
        }
        let shown = Shown {
            path: format!("{}/{}", memory.location(), entry.name),
            last_access: rfc3339(entry.last_access),
            complete: entry.complete,
            metadata: &entry.metadata,
        };
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(ExitCode::SUCCESS);
    }
    let record: Option<FunctionRecord> = memory.function_record(f);
    if json {
        #[derive(Serialize)]
        struct Shown<'a> {
            function: FunctionRow,
            record: Option<FunctionRecord>,
            entries: Vec<&'a Option<Metadata>>,
        }
        let shown = Shown {
            function: row_of(f),
            record,
            entries: entries.iter().map(|e| &e.metadata).collect(),
        };
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("function:  {}", f.name);
    println!("folder:    {}/{}", memory.location(), f.folder);
    if let Some(r) = &record {
        println!("signature: {}", r.signature);
        println!("output:    {}", r.output_type);
        if !r.version.is_empty() {
            println!("version:   {}", r.version);
        }
        println!("fingerprint: {}", r.fingerprint);
    }
    println!(
        "results:   {} ({} on the disk, {} of content)",
        f.entries,
        size(f.bytes),
        size(f.content_bytes)
    );
    println!();
    let mut rows = vec![vec![
        "KEY".to_string(),
        "CREATED".into(),
        "TOOK".into(),
        "SIZE".into(),
        "LAST ACCESS".into(),
        "ARGUMENTS".into(),
    ]];
    for e in &entries {
        let (created, took, args) = match &e.metadata {
            Some(m) => (
                time(Some(
                    UNIX_EPOCH + std::time::Duration::from_secs_f64(m.created_unix),
                )),
                format!("{:.3}s", m.duration),
                cut(&m.args, 48),
            ),
            None if !e.complete => (
                "-".into(),
                "-".into(),
                "(left by memento 0.1's first layout)".into(),
            ),
            None => ("-".into(), "-".into(), "(no readable info)".into()),
        };
        rows.push(vec![
            e.key[..16].to_string(),
            created,
            took,
            size(e.content_bytes),
            time(Some(e.last_access)),
            args,
        ]);
    }
    table(&[Left, Left, Right, Right, Left, Left], &rows);
    Ok(ExitCode::SUCCESS)
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max - 1).collect();
    s.push('…');
    s
}

fn clear(memory: &Memory, function: Option<&str>) -> Result<ExitCode> {
    match function {
        None => {
            let stats = memory.stats()?;
            memory.clear().context("cannot clear the cache")?;
            println!(
                "removed {} result(s) of {} function(s), {}",
                stats.entries,
                stats.functions.len(),
                size(stats.bytes)
            );
        }
        Some(name) => {
            let stats = memory.stats()?;
            let f = find_function(&stats, name)?;
            // Exactly this function: one nested in its folder
            // (`outer::inner` under `outer`) keeps its results.
            let removed = memory
                .clear_listed(f)
                .with_context(|| format!("cannot clear {}", f.name))?;
            println!(
                "removed {removed} result(s) of {}, {}",
                f.name,
                size(f.bytes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
    // Hidden when stderr is not a terminal, and for short runs.
    if !std::io::stderr().is_terminal() || len < 1000 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

fn gc(
    memory: &Memory,
    bytes: Option<String>,
    items: Option<u64>,
    age: Option<String>,
) -> Result<ExitCode> {
    let limits = Limits::parse(bytes.as_deref(), items, age.as_deref())?;
    if !limits.any() {
        bail!("give at least one limit: --bytes 10GB, --items 10000 or --age 30d");
    }
    let bar = std::sync::OnceLock::new();
    let done = memory
        .gc(&limits, &|n, total| {
            bar.get_or_init(|| progress(total as usize, "removing"))
                .set_position(n);
        })
        .context("cannot remove every result chosen")?;
    if let Some(bar) = bar.get() {
        bar.finish_and_clear();
    }
    println!(
        "removed {} result(s), {}; {} result(s), {} left{}",
        done.removed,
        size(done.freed_bytes),
        done.left,
        size(done.left_bytes),
        if done.swept > 0 {
            format!(
                "; {} leftover file(s) of interrupted writes removed",
                done.swept
            )
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(memory: &Memory, remove: bool) -> Result<ExitCode> {
    let bar = std::sync::OnceLock::new();
    let found = memory
        .verify(remove, &|n, total| {
            bar.get_or_init(|| progress(total as usize, "verifying"))
                .set_position(n);
        })
        .context("cannot verify the cache")?;
    if let Some(bar) = bar.get() {
        bar.finish_and_clear();
    }
    for damaged in &found.damaged {
        println!(
            "damaged: {}/{}: {}",
            memory.location(),
            damaged.name,
            damaged.problem
        );
    }
    let checked = found.checked;
    match (found.damaged.len(), remove) {
        (0, _) => {
            println!("verified {checked} result(s): all whole");
            Ok(ExitCode::SUCCESS)
        }
        (n, true) => {
            println!("verified {checked} result(s): {n} damaged, removed");
            Ok(ExitCode::SUCCESS)
        }
        (n, false) => {
            println!(
                "verified {checked} result(s): {n} damaged; `memento verify --remove` removes them"
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn du(memory: &Memory) -> Result<ExitCode> {
    let stats = memory.stats().context("cannot list the cache")?;
    let mut functions: Vec<&FunctionStats> = stats.functions.iter().collect();
    functions.sort_by_key(|f| std::cmp::Reverse(f.bytes));
    // DISK: the blocks the files take, which limits count; CONTENT: their
    // length (a 200-byte result takes a 4 KiB block on most disks).
    let mut rows = vec![vec![
        "DISK".to_string(),
        "CONTENT".into(),
        "ENTRIES".into(),
        "FUNCTION".into(),
    ]];
    for f in functions {
        rows.push(vec![
            size(f.bytes),
            size(f.content_bytes),
            f.entries.to_string(),
            f.name.clone(),
        ]);
    }
    let listed: u64 = stats.functions.iter().map(|f| f.bytes).sum();
    let listed_content: u64 = stats.functions.iter().map(|f| f.content_bytes).sum();
    if stats.bytes > listed {
        rows.push(vec![
            size(stats.bytes - listed),
            size(stats.content_bytes.saturating_sub(listed_content)),
            String::new(),
            "(other files)".into(),
        ]);
    }
    rows.push(vec![
        size(stats.bytes),
        size(stats.content_bytes),
        stats.entries.to_string(),
        format!("total: {}", memory.location()),
    ]);
    // Sizes first, like du.
    table(&[Right, Right, Right, Left], &rows);
    Ok(ExitCode::SUCCESS)
}
