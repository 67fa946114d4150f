//! Every strategy under `examples/` (the README's provider settings) loads as `keel` loads a
//! strategies folder, names only tools the repository's `tools/` defines, and picks the
//! provider the file says.

#![allow(clippy::unwrap_used)]

mod common;

use keel_runtime::StrategySet;
use keel_runtime::strategy::ProviderKind;
use keel_tools::registry::Registry;

#[test]
fn every_example_strategy_loads_with_the_repositorys_tools() {
    let dir = common::repo().join("examples/strategies");
    let files = std::fs::read_dir(&dir).unwrap().count();
    let set = StrategySet::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.iter().count(), files, "every file is a strategy");
    let tools = Registry::load_dir(&common::repo().join("tools"), None).unwrap();
    for s in set.iter() {
        for t in &s.tools {
            assert!(tools.get(t).is_some(), "{}: no contract for {t}", s.name);
        }
    }
    let kind = |name: &str| set.get(name).unwrap().provider.clone();
    assert!(
        matches!(kind("support-openai"), ProviderKind::OpenAi { base_url, api_key_env: Some(k), .. }
            if base_url == "https://api.openai.com/v1" && k == "OPENAI_API_KEY")
    );
    assert!(
        matches!(kind("support-anthropic"), ProviderKind::Anthropic { api_key_env, .. }
            if api_key_env == "ANTHROPIC_API_KEY")
    );
    match kind("support-local") {
        ProviderKind::OpenAi {
            base_url,
            api_key_env: None,
            tool_choice: Some(_),
        } => assert!(base_url.starts_with("http://127.0.0.1")),
        other => panic!("{other:?}"),
    }
    // Without a key variable a local server's provider builds as is.
    set.get("support-local").unwrap().provider().unwrap();
}

#[test]
fn a_tool_choice_the_strategy_cannot_honour_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = common::repo().join("prompts/support-v1.md");
    let write = |model: &str| {
        let yaml = format!(
            "name: s\nprompt: {{ file: {}, version: v1 }}\nmodel: {model}\n\
             tools: [lookup_order]\nmax_steps: 2\nsuccess: [{{ tool: lookup_order }}]\n",
            prompt.display()
        );
        std::fs::write(dir.path().join("s.yaml"), yaml).unwrap();
        StrategySet::load_dir(dir.path())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = write("{ provider: openai, name: m, tool_choice: refund_everything }");
    assert!(
        e.contains("model.tool_choice") && e.contains("refund_everything"),
        "{e}"
    );
    let e = write("{ provider: anthropic, name: m, tool_choice: required }");
    assert!(e.contains("only the openai provider"), "{e}");
}
