//! The command line (spec `records.md` §3): clap definitions and one module
//! per command. Glue only: every command calls the library and formats what
//! it returns; errors get context here and map to exit statuses in [`main`].

mod compact;
mod demo;
mod error;
mod export;
mod import;
mod kinds;
mod output;
mod query;
mod repl;
mod retention;
mod stats;
mod tail;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use almanac::storage::log::LOG_DIR;
use almanac::storage::{StorageError, DB_FILE};
use almanac::{Error, Store};
use clap::{Parser, Subcommand};

use error::{CliResult, Failure};

/// Almanac: an embedded metadata engine for data platforms.
///
/// Exit status: 0 on success, 2 for bad usage, a bad query or invalid input
/// (nothing was written), 1 for any other failure (I/O, storage, a store held
/// by another process).
#[derive(Debug, Parser)]
#[command(name = "almanac", version, about, long_about)]
pub struct Cli {
    /// The store directory (created on first use).
    #[arg(
        long,
        global = true,
        env = "ALMANAC_DB",
        default_value = "./metadata",
        value_name = "DIR"
    )]
    db: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store JSONL records from a file or standard input (all or nothing by default).
    Import(import::ImportArgs),
    /// Run one query and print its rows.
    Query(query::QueryArgs),
    /// Interactive shell over the store (also reads a script from standard input).
    Repl,
    /// Print committed records as JSONL in id order, from the log files.
    Tail(tail::TailArgs),
    /// List the kind registry, or register and change kinds.
    Kinds(kinds::KindsArgs),
    /// Apply each kind's retention now: drop whole expired partitions.
    Retention(retention::RetentionArgs),
    /// Store size, and records, partitions and time span per kind.
    Stats(stats::StatsArgs),
    /// Write the records a query matches (every record without one) as JSONL.
    Export(export::ExportArgs),
    /// Fill an empty store with a realistic sample to try queries on.
    Demo(demo::DemoArgs),
    /// Rewrite almanac.redb without its free space (the store must be closed elsewhere).
    Compact(compact::CompactArgs),
}

/// Parses the command line, runs the command and maps the outcome to an exit status.
pub fn main() -> ExitCode {
    // An empty $ALMANAC_DB counts as unset (the default ./metadata), as an
    // empty variable does for most tools, rather than as an empty --db.
    // Done first, while the process has one thread.
    if std::env::var_os("ALMANAC_DB").is_some_and(|v| v.is_empty()) {
        std::env::remove_var("ALMANAC_DB");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors to stderr with 2.
            if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                // clap prints the help alone; spec §3 wants a first line
                // that says what is wrong.
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "error: a command is required; the commands are listed below\n"
                );
            }
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(error::EXIT_INVALID));
        }
    };
    match run_catching_panics(cli) {
        Ok(()) | Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Message { code, message }) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {message}");
            ExitCode::from(code)
        }
    }
}

/// The first panic's message and place, recorded by the hook that
/// replaces Rust's default one (which prints a backtrace hint).
static PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Runs the command; a panic (a bug, or a damaged store file that a
/// dependency reads with an `unwrap`: redb panics on some damaged pages) is
/// an error with status 1 naming what failed, not a crash with status 101.
/// Panics on other threads are recorded the same way; where they matter
/// the library reports them (a scan thread's as `StorageError::ScanThread`).
fn run_catching_panics(cli: Cli) -> CliResult {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let mut first = PANIC
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        first.get_or_insert(format!("{what}{place}"));
    }));
    let db = cli.db.clone();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(result) => result,
        Err(_) => {
            let what = PANIC
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .unwrap_or_else(|| "a panic".to_owned());
            Err(Failure::other(format!(
                "internal failure ({what}); if it persists, the store at {} may be damaged: \
                 `almanac tail` still reads its log, and importing that into a new store rebuilds it",
                db.display()
            )))
        }
    }
}

fn run(cli: Cli) -> CliResult {
    let db = cli.db.as_path();
    let before = Before::look(db);
    let result = run_command(cli.command, db);
    if result
        .as_ref()
        .is_err_and(|failure| failure.code() == error::EXIT_INVALID)
    {
        // Exit 2 says nothing was written: a store the command created
        // before it refused its input goes again.
        before.remove_what_open_created(db);
    }
    result
}

fn run_command(command: Command, db: &Path) -> CliResult {
    match command {
        Command::Import(args) => import::run(db, &args),
        Command::Query(args) => query::run(db, &args),
        Command::Repl => repl::run(db),
        Command::Tail(args) => tail::run(db, &args),
        Command::Kinds(args) => kinds::run(db, &args),
        Command::Retention(args) => retention::run(db, &args),
        Command::Stats(args) => stats::run(db, &args),
        Command::Export(args) => export::run(db, &args),
        Command::Demo(args) => demo::run(db, &args),
        Command::Compact(args) => compact::run(db, &args),
    }
}

/// What the store directory held before the command opened (and perhaps
/// created) the store.
struct Before {
    dir: bool,
    db_file: bool,
    log: bool,
    /// The outermost directory of `db`'s path that did not exist (the
    /// store's open creates every missing one): what goes if the store does.
    outermost_missing: PathBuf,
}

impl Before {
    fn look(db: &Path) -> Self {
        let mut outermost_missing = db.to_path_buf();
        while let Some(parent) = outermost_missing.parent() {
            if parent.as_os_str().is_empty() || parent.exists() {
                break;
            }
            outermost_missing = parent.to_path_buf();
        }
        Before {
            dir: db.exists(),
            db_file: db.join(DB_FILE).exists(),
            log: db.join(LOG_DIR).exists(),
            outermost_missing,
        }
    }

    /// Removes the store the command created, and nothing that was there
    /// before: the directory if it is new (with the parents the open made
    /// for it), else the database file and the
    /// log if they are. Only a store as new (no records, the standard kinds
    /// as registered), and while holding it open for writing, so no other
    /// process can be using it meanwhile: one another process opened and
    /// wrote to since stays. Best effort: a failure leaves an empty store.
    fn remove_what_open_created(&self, db: &Path) {
        if self.db_file || !db.join(DB_FILE).exists() {
            return;
        }
        let Ok(store) = Store::open(db) else {
            return;
        };
        let mut kinds = store.kinds();
        kinds.sort_by(|a, b| a.name.cmp(&b.name));
        let mut standard = almanac::kinds::standard_kinds();
        standard.sort_by(|a, b| a.name.cmp(&b.name));
        let as_new = kinds == standard && store.partitions().is_ok_and(|p| p.is_empty());
        if !as_new {
            return;
        }
        // Removed while still held (Unix lets open files be unlinked).
        if !self.dir {
            let _ = std::fs::remove_dir_all(&self.outermost_missing);
        } else {
            let _ = std::fs::remove_file(db.join(DB_FILE));
            if !self.log {
                let _ = std::fs::remove_dir_all(db.join(LOG_DIR));
            }
        }
        drop(store);
    }
}

/// Opens the store in `db`, creating it when missing; a store held by another
/// process fails at once (exit 1).
pub fn open_store(db: &Path) -> CliResult<Store> {
    let store = Store::open(db).map_err(|e| open_failure(db, e))?;
    remove_leftovers(db);
    Ok(store)
}

/// Removes what killed commands left in the store directory (import
/// spools, read commands' markers); run while holding the store for
/// writing, when none of them can be live.
fn remove_leftovers(db: &Path) {
    import::remove_stale_spools(db);
    remove_stale_markers(db);
}

/// Opens the store in `db` for commands that only read (`query`, `export`,
/// `stats`, `repl`, `kinds` and `kinds show`): read-only, so several of
/// them may run at once, while a writer (another process, or `import`)
/// excludes them and they exclude it (exit 1 at once). A store that does not
/// exist yet, or that a writer must open first (after a crash, or to
/// upgrade its format), is opened as [`open_store`] opens it.
pub fn open_store_for_reading(db: &Path) -> CliResult<Store> {
    let read_only = || Store::open_read_only(db, almanac::StoreOptions::default());
    let marker = db.join(format!("{RECOVERY_MARKER}{}", std::process::id()));
    let deadline = std::time::Instant::now() + FALLBACK_WAIT;
    let mut handed_over = false;
    loop {
        match read_only() {
            Ok(store) => return Ok(store),
            // A writer's work first (create, repair, replay, upgrade), then
            // the store is closed and opened read-only like any other: the
            // command does not keep other readers out while it runs.
            Err(Error::Storage(StorageError::NoStore(_) | StorageError::NeedsWriter { .. }))
                if !handed_over =>
            {
                handed_over = true;
                writer_work(db, &marker)?;
            }
            // Another read command doing that work right now (its marker
            // says so; a real writer leaves none): wait for it, briefly.
            Err(Error::Storage(StorageError::Locked(_)))
                if std::time::Instant::now() < deadline && another_at_work(db) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(open_failure(db, e)),
        }
    }
}

/// Opens the store for writing and closes it, doing what a read-only open
/// cannot (see [`open_store_for_reading`]), under a marker file that tells
/// other read commands to wait rather than fail. A store another process
/// holds is left to it.
fn writer_work(db: &Path, marker: &Path) -> CliResult {
    let _ = std::fs::create_dir_all(db);
    let _ = std::fs::write(marker, std::process::id().to_string());
    let opened = Store::open(db);
    let result = match opened {
        Ok(store) => {
            remove_leftovers(db);
            drop(store);
            Ok(())
        }
        Err(Error::Storage(StorageError::Locked(_))) => Ok(()),
        Err(e) => Err(open_failure(db, e)),
    };
    let _ = std::fs::remove_file(marker);
    result
}

/// Whether another read command's marker is in `db`, written in the last
/// seconds (one left by a killed process does not make readers wait).
fn another_at_work(db: &Path) -> bool {
    markers(db).any(|(_, fresh)| fresh)
}

/// Removes markers left by killed read commands (see [`another_at_work`]):
/// a writer's open holds the store, so no marker older than that is live.
fn remove_stale_markers(db: &Path) {
    for (path, fresh) in markers(db) {
        if !fresh {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The read commands' markers in `db`, each with whether it is fresh.
fn markers(db: &Path) -> impl Iterator<Item = (std::path::PathBuf, bool)> {
    std::fs::read_dir(db)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(RECOVERY_MARKER))
        })
        .map(|entry| {
            let fresh = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < MARKER_FRESH));
            (entry.path(), fresh)
        })
}

/// The marker (`.reader-recovery-<pid>`) a read command writes while it
/// holds the store for writing to do a writer's work.
const RECOVERY_MARKER: &str = ".reader-recovery-";

/// How long a marker counts as a read command at work.
const MARKER_FRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a read command waits for another doing a writer's work (then
/// it fails as any open of a store held for writing does).
const FALLBACK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn open_failure(db: &Path, e: Error) -> Failure {
    match e {
        Error::Storage(StorageError::Locked(_)) => Failure::other(e.to_string()),
        other => Failure::from(other).context(format!("cannot open the store at {}", db.display())),
    }
}
