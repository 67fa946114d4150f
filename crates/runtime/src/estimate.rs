//! What a model call may cost, decided before it is made, so a cost budget is never overshot by
//! the call that crosses it; and the check, at start, that a budgeted strategy's model has a
//! price at all (an unpriced model's cost is unknown, so every budget check would refuse).
//!
//! The bound is conservative on purpose: every tokenizer in use (byte-level BPE) spends at least
//! one byte of text per token, so the request's serialised size in bytes (messages and tool
//! specs, which is more than the text the provider tokenizes) plus a fixed allowance per message
//! for the chat template is an upper bound on its input tokens; the output is bounded by the
//! request's `max_tokens`, which providers enforce. Input is priced at the full input price
//! (never the cached one). The estimate over-states a typical call several times over, which only
//! means the last call a budget admits is refused a little early.

use crate::error::RuntimeError;
use crate::strategy::Strategy;
use keel_core::{Cost, ExecutionState};
use keel_models::{ChatRequest, PriceTable, Usage};

/// Tokens a chat template may add around each message (role markers, separators), and once per
/// request; generous next to the 3–4 tokens providers document.
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 16;
const TEMPLATE_TOKENS_PER_REQUEST: u64 = 64;

/// An upper bound on the input tokens of `request`.
pub fn input_tokens_bound(request: &ChatRequest) -> u64 {
    // A request that cannot be measured is bounded by nothing: count it as too big to send.
    let size = |r: Result<Vec<u8>, serde_json::Error>| r.map_or(usize::MAX, |v| v.len());
    let bytes = size(serde_json::to_vec(&request.messages))
        .saturating_add(size(serde_json::to_vec(&request.tools)));
    let messages = u64::try_from(request.messages.len()).unwrap_or(u64::MAX);
    u64::try_from(bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(messages.saturating_mul(TEMPLATE_TOKENS_PER_MESSAGE))
        .saturating_add(TEMPLATE_TOKENS_PER_REQUEST)
}

/// The most `request` can cost under `prices` (priced by `model`, the strategy's name for it):
/// `Unknown` when the model has no price.
pub fn model_call_bound(prices: &PriceTable, model: &str, request: &ChatRequest) -> Cost {
    let usage = Usage {
        input: input_tokens_bound(request),
        output: u64::from(request.max_tokens),
        cached_input: 0,
    };
    prices.cost(model, &usage)
}

/// Why the model call `request` may not be made within the execution's cost budget, if so.
pub fn refuse_model_call(
    prices: &PriceTable,
    model: &str,
    state: &ExecutionState,
    request: &ChatRequest,
) -> Option<String> {
    let max = state.budget.max_cost_micros?;
    let bound = model_call_bound(prices, model, request);
    match (state.totals.cost, bound) {
        (Cost::Known(spent), Cost::Known(est)) if spent.saturating_add(est) <= max => None,
        (Cost::Known(spent), Cost::Known(est)) => Some(format!(
            "cost budget: the next model call ({model}) may cost up to {est} µUSD \
             ({} input tokens at most, {} output tokens at most); with {spent} µUSD spent that \
             could exceed the budget of {max} µUSD, so it was not made",
            input_tokens_bound(request),
            request.max_tokens
        )),
        (Cost::Unknown, _) => Some(format!(
            "cost budget: the cost so far is unknown, so the next model call could exceed the \
             budget of {max} µUSD; it was not made"
        )),
        (_, Cost::Unknown) => Some(format!(
            "cost budget: model {model} has no price in prices.toml, so its call cannot be \
             checked against the budget of {max} µUSD; it was not made"
        )),
    }
}

/// Refuses to start `strategy` if it has a cost budget and its model has no price.
pub fn check_priced(prices: &PriceTable, strategy: &Strategy) -> Result<(), RuntimeError> {
    match strategy.budget.max_cost_micros {
        Some(max) if prices.get(&strategy.model).is_none() => Err(RuntimeError::Unpriced {
            strategy: strategy.name.clone(),
            model: strategy.model.clone(),
            max_cost_micros: max,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_models::Message;

    #[test]
    fn the_input_bound_is_at_least_one_token_per_byte() {
        let text = "ü".repeat(500);
        let r = ChatRequest {
            model: "m".into(),
            messages: vec![Message::User {
                content: text.clone(),
            }],
            tools: vec![],
            max_tokens: 10,
        };
        assert!(input_tokens_bound(&r) >= text.len() as u64);
    }
}
