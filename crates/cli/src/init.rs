//! `keel init DIR`: writes a new project that runs as it is — `keel.toml`, an HTTP and an MCP
//! tool contract, a strategy for an OpenAI-compatible model (its key named by variable), the same
//! strategy on a scripted model so it runs offline, a prompt and a price table. The files are
//! compiled in (`src/init/`), so `keel init` works from any directory and without a network.

use anyhow::{Context, bail};
use clap::Args;
use std::path::Path;

/// `keel init` arguments.
#[derive(Args)]
pub struct InitArgs {
    /// The project's directory: created if missing; an existing one must be empty.
    pub dir: std::path::PathBuf,
}

/// Every file of a new project, by path under its directory.
const FILES: &[(&str, &str)] = &[
    ("keel.toml", include_str!("init/keel.toml")),
    (".gitignore", include_str!("init/gitignore")),
    ("prices.toml", include_str!("init/prices.toml")),
    (
        "prompts/assistant-v1.md",
        include_str!("init/prompts/assistant-v1.md"),
    ),
    (
        "tools/post_update.yaml",
        include_str!("init/tools/post_update.yaml"),
    ),
    (
        "tools/get_current_time.yaml",
        include_str!("init/tools/get_current_time.yaml"),
    ),
    (
        "strategies/assistant.yaml",
        include_str!("init/strategies/assistant.yaml"),
    ),
    (
        "strategies/assistant-offline.yaml",
        include_str!("init/strategies/assistant-offline.yaml"),
    ),
    (
        "models/offline.yaml",
        include_str!("init/models/offline.yaml"),
    ),
];

/// `keel init DIR`.
pub fn run(args: &InitArgs) -> anyhow::Result<()> {
    let dir = args.dir.as_path();
    refuse_unless_empty(dir)?;
    for (file, text) in FILES {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("keel init: a new project in {}", dir.display());
    for (file, _) in FILES {
        eprintln!("  {file}");
    }
    crate::out::next(&[
        format!("cd {}", dir.display()),
        "keel config check                       # the configuration, every backend reached"
            .into(),
        "keel run \"Tell the team the release is out\"   # offline: the scripted model; stops at a gate"
            .into(),
        "keel serve                              # then decide the gate at http://127.0.0.1:8080/ui/gates"
            .into(),
        "export OPENAI_API_KEY=…; keel run --strategy assistant \"…\"   # the real model".into(),
    ]);
    Ok(())
}

/// A project is written only where nothing would be overwritten: a missing directory or an
/// empty one.
fn refuse_unless_empty(dir: &Path) -> anyhow::Result<()> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            bail!("{} is a file, not a directory", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    if entries.next().is_some() {
        bail!(
            "{} is not empty; keel init writes a project only into a new or empty directory, \
             so nothing of yours is overwritten",
            dir.display()
        );
    }
    Ok(())
}
