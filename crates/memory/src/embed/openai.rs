//! An OpenAI-compatible `POST {base_url}/embeddings` embedder (OpenAI, vLLM, Ollama, LiteLLM,
//! text-embeddings-inference). The API key is taken once, at construction, from the secret
//! source the caller hands down (or given as is), and never appears in errors or logs (keel-models' `Secret`). Retries honour `Retry-After`.

use super::{Embedder, normalize};
use crate::error::MemoryError;
use crate::fact::EmbeddingModel;
use async_trait::async_trait;
use keel_core::secrets::SecretSource;
use keel_models::http::{self, RetryPolicy, Secret};
use serde_json::{Value, json};

const NAME: &str = "openai-embeddings";

/// An OpenAI-compatible embeddings endpoint.
pub struct OpenAiEmbedder {
    base_url: String,
    key: Option<Secret>,
    client: reqwest::Client,
    retry: RetryPolicy,
    id: EmbeddingModel,
}

fn err(detail: impl std::fmt::Display) -> MemoryError {
    MemoryError::Embedder {
        embedder: NAME.into(),
        detail: detail.to_string(),
    }
}

impl OpenAiEmbedder {
    /// `base_url` up to and including the version (`https://api.openai.com/v1`); `model` as the
    /// server names it, with the `version` and `dim` the store pins; `api_key_env` names the
    /// secret in `secrets` holding the key (`None` for local servers without auth).
    pub fn new(
        base_url: &str,
        model: EmbeddingModel,
        api_key_env: Option<&str>,
        secrets: &dyn SecretSource,
        retry: RetryPolicy,
    ) -> Result<Self, MemoryError> {
        let key = match api_key_env {
            Some(var) => Some(Secret::from_source(NAME, var, secrets).map_err(err)?),
            None => None,
        };
        Self::with_key(base_url, model, key, retry)
    }

    /// Like [`OpenAiEmbedder::new`], with the key itself (read by the caller's configuration,
    /// which names its variable); `None` for servers without auth.
    pub fn with_key(
        base_url: &str,
        model: EmbeddingModel,
        key: Option<Secret>,
        retry: RetryPolicy,
    ) -> Result<Self, MemoryError> {
        Ok(OpenAiEmbedder {
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            client: http::client().map_err(err)?,
            retry,
            id: model,
        })
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &EmbeddingModel {
        &self.id
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let body = json!({"model": self.id.name, "input": texts, "encoding_format": "float"});
        let auth = self.key.as_ref().map(|k| format!("Bearer {}", k.expose()));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let url = format!("{}/embeddings", self.base_url);
        let reply = http::post_json(
            NAME,
            &self.client,
            &url,
            &headers,
            &body.to_string(),
            &self.retry,
        )
        .await
        .map_err(err)?;
        let v: Value = serde_json::from_str(&reply.body)
            .map_err(|e| err(format!("reply is not JSON: {e}")))?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| err("reply has no data array"))?;
        if data.len() != texts.len() {
            return Err(err(format!(
                "asked for {} embeddings, got {}",
                texts.len(),
                data.len()
            )));
        }
        let mut out = vec![Vec::new(); texts.len()];
        for (i, item) in data.iter().enumerate() {
            let index = item
                .get("index")
                .and_then(Value::as_u64)
                .map_or(i, |x| x as usize);
            let slot = out
                .get_mut(index)
                .ok_or_else(|| err(format!("data[{i}].index {index} is out of range")))?;
            let mut v: Vec<f32> = item
                .get("embedding")
                .and_then(Value::as_array)
                .ok_or_else(|| err(format!("data[{i}].embedding is missing")))?
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<_>>()
                .ok_or_else(|| err(format!("data[{i}].embedding has a non-number")))?;
            if v.len() != self.id.dim {
                return Err(MemoryError::Dimensions {
                    model: self.id.key(),
                    want: self.id.dim,
                    got: v.len(),
                });
            }
            normalize(&mut v);
            *slot = v;
        }
        Ok(out)
    }
}
