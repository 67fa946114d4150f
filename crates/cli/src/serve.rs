//! `keel serve`: the HTTP API, web UI, metrics and workers over one store.

use crate::agents::ConfigArgs;
use anyhow::Context;
use clap::Args;
use std::path::Path;

pub mod guardrails;
pub mod notify;

/// `keel serve` arguments.
#[derive(Args)]
pub struct ServeArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// The origin browsers use when the server sits behind a proxy or TLS terminator
    /// (`https://keel.example.com`): only it may post the web UI's forms, and an https
    /// origin makes the session cookie `Secure`.
    #[arg(long)]
    pub public_origin: Option<String>,
    /// Serve the API only and drive nothing: executions started here are left, unleased, to
    /// `keel worker` processes on the same spine.
    #[arg(long)]
    pub no_workers: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `keel serve`.
pub async fn serve(data: &Path, args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        addr,
        public_origin,
        no_workers,
        config: cfg,
    } = args;
    let addr = addr.as_str();
    if let Some(o) = &public_origin
        && !(o.starts_with("https://") || o.starts_with("http://"))
    {
        anyhow::bail!("--public-origin {o:?}: expected http://host[:port] or https://host[:port]");
    }
    // With no configuration of its own (no tools/ and strategies/ here), serve the demo's.
    let config = if cfg.tools.exists() || cfg.strategies.exists() {
        cfg.config()
    } else {
        let dir = data.join("config");
        let config = crate::demo::write_config(&dir)?;
        eprintln!(
            "keel serve: no {} or {} here; serving the demo's tools, shop and strategies from {}",
            cfg.tools.display(),
            cfg.strategies.display(),
            dir.display()
        );
        config
    };
    // The background workers drive under leases, like `keel worker` (starts through the API
    // take theirs before the first append).
    let mut backends = crate::config::current()
        .backends(data, &config.strategies)
        .await?;
    let leases = (!no_workers).then(|| {
        crate::agents::worker::lease(&mut backends, crate::config::current().workers_concurrency)
    });
    let env = crate::demo::open_wired(data, &config, backends)?;
    let _beat = leases
        .as_ref()
        .map(|l| crate::agents::worker::heartbeat(l, "keel serve"));
    notify::spawn(data, &cfg, &env, public_origin.as_deref(), "keel serve").await?;
    guardrails::spawn(
        data,
        &env,
        crate::config::current().experiments_check_secs,
        "keel serve",
    );
    let tokens = crate::config::current().tokens(data)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--addr {addr}: cannot listen"))?;
    let local = listener.local_addr()?;
    eprintln!(
        "keel serve: http://{local}/ui (API under /v1, /openapi.json, /metrics); store {}",
        data.display()
    );
    eprintln!(
        "  a token: keel --data {} tokens create --tenant acme --role approver --role operator",
        data.display()
    );
    let mut state = keel_server::App::new(&env, tokens);
    keel_server::web::configure(&mut state, keel_server::web::WebConfig { public_origin })?;
    // Beside a shared spine, gate notifications' deliveries are in its database (else the
    // server reads DIR/notify.db).
    let deliveries = match &crate::config::current().spine_postgres {
        Some(_) => Some(crate::config::current().deliveries(data).await?),
        None => None,
    };
    // The projections keel.toml (or KEEL_PROJECTIONS_URL) names.
    if let Some(app) = std::sync::Arc::get_mut(&mut state) {
        app.deliveries = deliveries;
        app.projections_url = crate::config::current().projections.clone();
        app.workers = if no_workers {
            0
        } else {
            crate::config::current().workers_concurrency
        };
    }
    // SIGINT/SIGTERM: stop serving and give the background workers' leases up, so the other
    // workers take their executions over at once.
    tokio::select! {
        served = keel_server::serve(listener, state) => served?,
        () = crate::agents::worker::shutdown() => {}
    }
    if let Some(l) = &leases {
        crate::agents::worker::release(l, "keel serve").await;
    }
    Ok(())
}
