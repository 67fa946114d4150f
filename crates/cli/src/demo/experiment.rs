//! The demo's experiment step: the two support strategies as a registered experiment
//! (`experiments/support-prompts.yaml`, compiled in, its window moved to start now), customers
//! of tenant `umbrella` sent without a strategy so the experiment assigns each one an arm (the
//! holdback keeps the production strategy), and the readout printed, verdict and all.

use keel_core::ExecStatus;
use keel_core::experiment::registry::Units;
use keel_runtime::embedded::Embedded;
use std::path::Path;

/// The experiment, as the repository ships it.
const EXPERIMENT: &str = include_str!("../../../../experiments/support-prompts.yaml");

/// Customers sent through the experiment.
const CUSTOMERS: usize = 40;

/// Registers the experiment, runs the customers' requests through assignment, prints the readout.
pub async fn demo_experiment(env: &Embedded, store: &Path) -> anyhow::Result<()> {
    let now = env.agent.clock.now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    // The shipped window, moved to begin now and end in two weeks; a small minimum sample, so
    // the readout reaches its pre-registered horizon rule rather than "not enough data".
    let text: String = EXPERIMENT
        .lines()
        .map(|l| {
            if l.starts_with("start:") {
                format!("start: {}", fmt(now - chrono::Duration::minutes(1)))
            } else if l.starts_with("end:") {
                format!("end: {}", fmt(now + chrono::Duration::days(14)))
            } else if l.starts_with("min_sample:") {
                "min_sample: 10".into()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let experiment = keel_runtime::experiment::parse(&text, "experiments/support-prompts.yaml")?;
    env.agent
        .control
        .register_experiment(&experiment, &env.strategies, now, "keel demo")
        .await?;
    println!();
    println!(
        "EXPERIMENT {} — {CUSTOMERS} customers of tenant umbrella, no strategy named: each is \
         assigned an arm by sha256(salt, customer) (sticky), the holdback keeps the production \
         strategy; the new arm runs at most tier {} alone until certified",
        experiment.name, experiment.tier_cap
    );
    for i in 0..CUSTOMERS {
        let subject = format!("umbrella-customer-{i}");
        let goal = format!("Where is my order A-{}?", 1001 + i % 40);
        let exec = keel_spine::clock::new_exec_id();
        let id = exec.to_string();
        let units = Units {
            exec_id: &id,
            subject: Some(&subject),
            tenant: "umbrella",
        };
        let s = keel_runtime::experiment::choose(
            &env.agent.control,
            &env.strategies,
            None,
            &units,
            env.agent.clock.now(),
        )
        .await?;
        let model = s.provider()?;
        env.agent
            .start_about_as(exec, &s, "umbrella", Some(&subject), &goal)
            .await?;
        let state = env.agent.drive(&s, &*model, exec).await?;
        if let ExecStatus::SuspendedAtGate { .. } = state.status {
            eprintln!("[experiment] {exec} waits at a gate (not counted until it finishes)");
        }
    }
    let (_log, projections) = crate::observe::refresh(store).await?;
    let Some(x) = env.agent.control.experiment(&experiment.name).await? else {
        anyhow::bail!("experiment {} was not registered", experiment.name);
    };
    let r = keel_observe::readout::readout(&*projections, &x, None, env.agent.clock.now()).await?;
    print!("{}", keel_observe::readout::render(&r));
    println!(
        "read it again any time: keel --data {} experiments readout {}",
        store.display(),
        experiment.name
    );
    Ok(())
}
