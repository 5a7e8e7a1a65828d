//! The `fleetgate` command line: the engine over snapshot files, for scripts and support.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use fleetgate::generate::{generate, WorldSize};
use fleetgate::{Action, Engine, Error};

/// Check fleet permissions against a fleetgate snapshot.
#[derive(Parser)]
#[command(name = "fleetgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ActionArg {
    View,
    Control,
}

impl From<ActionArg> for Action {
    fn from(a: ActionArg) -> Self {
        match a {
            ActionArg::View => Action::View,
            ActionArg::Control => Action::Control,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Check a snapshot: exit 0 when valid, else print `CODE: message` and exit 1.
    Validate {
        /// Snapshot file, or `-` for stdin.
        file: String,
    },
    /// List the devices a user may view or control, one id per line.
    Visible {
        /// Snapshot file, or `-` for stdin.
        file: String,
        #[arg(long, allow_hyphen_values = true)]
        user: String,
        #[arg(long, value_enum, default_value = "view")]
        action: ActionArg,
        #[arg(long = "active-org", allow_hyphen_values = true)]
        active_org: Option<String>,
    },
    /// Explain a decision as one JSON line.
    Explain {
        /// Snapshot file, or `-` for stdin.
        file: String,
        #[arg(long, allow_hyphen_values = true)]
        user: String,
        #[arg(long, allow_hyphen_values = true)]
        device: String,
        #[arg(long, value_enum, default_value = "view")]
        action: ActionArg,
    },
    /// List the orgs a user may switch to, one id per line.
    Orgs {
        /// Snapshot file, or `-` for stdin.
        file: String,
        #[arg(long, allow_hyphen_values = true)]
        user: String,
    },
    /// Decide a command for an actor; print the decision as one JSON line.
    Decide {
        /// Snapshot file, or `-` for stdin.
        file: String,
        #[arg(long, allow_hyphen_values = true)]
        actor: String,
        /// The command as JSON, or `@FILE` to read it from a file.
        #[arg(long, allow_hyphen_values = true)]
        command: String,
    },
    /// Preview a command: its decision and who gains or loses access, as one JSON line.
    Preview {
        /// Snapshot file, or `-` for stdin.
        file: String,
        #[arg(long, allow_hyphen_values = true)]
        actor: String,
        /// The command as JSON, or `@FILE` to read it from a file.
        #[arg(long, allow_hyphen_values = true)]
        command: String,
    },
    /// Print the projection of the snapshot for a viewer.
    Project {
        /// Snapshot file, or `-` for stdin.
        file: String,
        #[arg(long, allow_hyphen_values = true)]
        viewer: String,
    },
    /// Print a generated world (the benchmark world by default).
    Generate {
        #[arg(long, default_value_t = 20_000)]
        users: usize,
        #[arg(long, default_value_t = 100_000)]
        devices: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Apply deltas in order and print the resulting snapshot.
    Apply {
        /// Snapshot file, or `-` for stdin.
        file: String,
        /// Delta files, applied in order.
        #[arg(required = true)]
        deltas: Vec<String>,
    },
}

fn read(path: &str) -> Result<String, Error> {
    let mut text = String::new();
    let res = if path == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    res.map_err(|e| Error::new(fleetgate::ErrorCode::InvalidJson, format!("cannot read `{path}`: {e}")))?;
    Ok(text)
}

fn parse_command(arg: &str) -> Result<fleetgate::Command, Error> {
    match arg.strip_prefix('@') {
        Some(path) => fleetgate::Command::parse(&read(path)?),
        None => fleetgate::Command::parse(arg),
    }
}

fn load(path: &str) -> Result<Engine, Error> {
    Engine::from_json(&read(path)?)
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Validate { file } => {
            load(&file)?;
        }
        Command::Visible { file, user, action, active_org } => {
            let engine = load(&file)?;
            for id in engine.visible_devices(&user, action.into(), active_org.as_deref())? {
                println!("{id}");
            }
        }
        Command::Explain { file, user, device, action } => {
            let engine = load(&file)?;
            let decision = engine.explain(&user, &device, action.into());
            println!("{}", serde_json::to_string(&decision).unwrap_or_default());
        }
        Command::Orgs { file, user } => {
            let engine = load(&file)?;
            for id in engine.switchable_orgs(&user) {
                println!("{id}");
            }
        }
        Command::Decide { file, actor, command } => {
            let engine = load(&file)?;
            let cmd = parse_command(&command)?;
            println!("{}", serde_json::to_string(&engine.decide(&actor, &cmd)).unwrap_or_default());
        }
        Command::Preview { file, actor, command } => {
            let mut engine = load(&file)?;
            let cmd = parse_command(&command)?;
            println!("{}", serde_json::to_string(&engine.preview(&actor, &cmd)).unwrap_or_default());
        }
        Command::Project { file, viewer } => {
            let engine = load(&file)?;
            println!("{}", serde_json::to_string(&engine.project(&viewer)).unwrap_or_default());
        }
        Command::Generate { users, devices, seed } => {
            let size = WorldSize { users, devices, seed, ..WorldSize::LARGE };
            println!("{}", serde_json::to_string(&generate(size)).unwrap_or_default());
        }
        Command::Apply { file, deltas } => {
            let mut engine = load(&file)?;
            for path in deltas {
                engine.apply_delta_json(&read(&path)?)?;
            }
            println!("{}", engine.to_json());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {}", e.code(), e.message());
            ExitCode::from(1)
        }
    }
}
